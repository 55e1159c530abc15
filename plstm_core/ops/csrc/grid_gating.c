/* The summed gating matrix of a pLSTM grid layer's four orientations (paper eq. 7, A.7
 * multi-directional form), built by one sweep per orientation over the grid in its frame order.
 *
 * G[p][n][n'] (target n, source n', stored node order n = x*Y + y) is the sum over the four
 * orientations o = fx + 2*fy of mark(n) * Σ_{paths n' → n} source(n') * Π T(m) over the nodes m
 * strictly inside the path (T(m)[in][out], edge direction 0 along x, 1 along y, in o's frame),
 * and direct(n) on the diagonal (already summed over the orientations by the caller).
 *
 * Per orientation the targets are visited in frame order (x outer, y inner). For every source
 * n' two arrays carry the weight of the paths that arrive at the current target over its
 * incoming x edge (left, one row per y) and over its incoming y edge (below); a target reads
 * both for the sources in its quadrant (frame x' <= x, y' <= y), adds mark * (left + below) to
 * its row of G and passes left * T[0][·] + below * T[1][·] on along its outgoing edges. Sources
 * are indexed in stored order, so every inner loop runs over contiguous memory.
 *
 * Cost per grid: time O(N^2) (about N^2 / 4 source-target pairs per orientation, 8 flops
 * each), memory O(Y * N) beside G. Gates: packed[6][P][2][2][X][Y] in the entry order
 * (t10, source, mark, t01, t00, t11) of plstm_core.ops.grid_mix_gates.ENTRIES, stored order. */

#include <stdlib.h>
#include <string.h>

#define DEFINE_SUMMED_GATING(NAME, T)                                                         \
    int NAME(long P, long X, long Y, const T *packed, const T *direct, T *G)                 \
    {                                                                                         \
        const long N = X * Y;                                                                 \
        const size_t plane = (size_t)P * 4 * (size_t)N;                                       \
        T *left = calloc((size_t)(Y + 1) * (size_t)N, sizeof(T));                             \
        if (left == NULL)                                                                     \
            return 1;                                                                         \
        T *const below = left + (size_t)Y * (size_t)N;                                        \
        memset(G, 0, sizeof(T) * (size_t)P * (size_t)N * (size_t)N);                          \
        for (long p = 0; p < P; ++p) {                                                        \
            T *const Gp = G + (size_t)p * (size_t)N * (size_t)N;                              \
            for (int o = 0; o < 4; ++o) {                                                     \
                const int fx = o & 1, fy = o >> 1;                                            \
                const T *gate = packed + ((size_t)p * 4 + (size_t)(fx * 2 + fy)) * (size_t)N; \
                const T *t10 = gate, *src = gate + plane, *mark = gate + 2 * plane;           \
                const T *t01 = gate + 3 * plane, *t00 = gate + 4 * plane;                     \
                const T *t11 = gate + 5 * plane;                                              \
                memset(left, 0, sizeof(T) * (size_t)Y * (size_t)N);                           \
                for (long xf = 0; xf < X; ++xf) {                                             \
                    const long xs = fx ? X - 1 - xf : xf;                                     \
                    const long x_lo = fx ? xs : 0, x_hi = fx ? X - 1 : xs;                    \
                    memset(below, 0, sizeof(T) * (size_t)N);                                  \
                    for (long yf = 0; yf < Y; ++yf) {                                         \
                        const long ys = fy ? Y - 1 - yf : yf;                                 \
                        const long y_lo = fy ? ys : 0, y_hi = fy ? Y - 1 : ys;                \
                        const long m = xs * Y + ys;                                           \
                        const T a00 = t00[m], a01 = t01[m], a10 = t10[m], a11 = t11[m];       \
                        const T mk = mark[m];                                                 \
                        T *restrict in_x = left + ys * N;                                     \
                        T *restrict in_y = below;                                             \
                        T *restrict row = Gp + m * N;                                         \
                        for (long xx = x_lo; xx <= x_hi; ++xx) {                              \
                            for (long j = xx * Y + y_lo; j <= xx * Y + y_hi; ++j) {           \
                                const T l = in_x[j], b = in_y[j];                             \
                                row[j] += mk * (l + b);                                       \
                                in_x[j] = l * a00 + b * a10;                                  \
                                in_y[j] = l * a01 + b * a11;                                  \
                            }                                                                 \
                        }                                                                     \
                        in_x[m] = src[m];                                                     \
                        in_y[m] = src[m];                                                     \
                    }                                                                         \
                }                                                                             \
            }                                                                                 \
            for (long n = 0; n < N; ++n)                                                      \
                Gp[n * N + n] = direct[(size_t)p * (size_t)N + (size_t)n];                    \
        }                                                                                     \
        free(left);                                                                           \
        return 0;                                                                             \
    }

DEFINE_SUMMED_GATING(summed_gating_f32, float)
DEFINE_SUMMED_GATING(summed_gating_f64, double)
