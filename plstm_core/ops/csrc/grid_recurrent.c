/* The recurrent form of a pLSTM grid layer's four orientations (paper eq. 5-6 on the 2D DAG,
 * A.7), without autograd: every orientation of every grid sweeps its nodes once, in its frame
 * order, carrying the cell states C [K][V] on the edges.
 *
 * At node n with incoming states C_x (over its x edge, from the left in the frame) and C_y
 * (over its y edge, from below), gates in the orientation's frame:
 *
 *     h[n]   += mark(n) * q(n)^T (C_x + C_y)                           (readout)
 *     C_x'    = T(n)[0][0] C_x + T(n)[1][0] C_y + source(n) k(n) v(n)^T (outgoing x edge)
 *     C_y'    = T(n)[0][1] C_x + T(n)[1][1] C_y + source(n) k(n) v(n)^T (outgoing y edge)
 *
 * and, once for the four orientations, h[n] += direct(n) (q(n)^T k(n)) v(n) with direct summed
 * over them. k is scaled by key_scale. Node order n = x * Y + y (stored); orientation
 * o = fx + 2 * fy flips x if fx and y if fy. The states of one column (Y of them, C_x) and one
 * C_y are alive at a time and updated in place.
 *
 * Inputs: z [B][X*Y][F] (q of head h at columns q_off + h*K, k at k_off + h*K, v at
 * v_off + h*V), gates packed[6][P][2][2][X][Y] (entries t10, source, mark, t01, t00, t11 of
 * plstm_core.ops.grid_mix_gates.ENTRIES, stored order, P = B*H), direct[P][X][Y]. Output
 * out[4][B][X*Y][H][V], one slab per orientation (summed by the caller). The B*H*4 sweeps are
 * shared by `threads` POSIX threads.
 *
 * Cost: time O(B*H*4*X*Y*K*V) (about 10 flops per state entry and node), memory
 * O(threads*Y*K*V) beside the output: linear in the number of nodes. */

#include <stdlib.h>
#include <string.h>

#include "threads.h"

#define DEFINE_GRID_RECURRENT(NAME, T)                                                        \
    typedef struct {                                                                          \
        long B, X, Y, H, K, V, F, q_off, k_off, v_off;                                        \
        T key_scale;                                                                          \
        const T *z, *packed, *direct;                                                         \
        T *out;                                                                               \
        long first, step, units;                                                              \
        int failed;                                                                           \
    } NAME##_job;                                                                             \
                                                                                              \
    static void NAME##_sweep(const NAME##_job *job, long unit, T *states)                     \
    {                                                                                         \
        const long X = job->X, Y = job->Y, H = job->H, K = job->K, V = job->V, F = job->F;    \
        const long N = X * Y, P = job->B * H, KV = K * V;                                     \
        const long p = unit / 4, b = p / H, h = p % H;                                        \
        const int o = (int)(unit % 4), fx = o & 1, fy = o >> 1;                               \
        const size_t plane = (size_t)P * 4 * (size_t)N;                                       \
        const T *gate = job->packed + ((size_t)p * 4 + (size_t)(fx * 2 + fy)) * (size_t)N;    \
        const T *t10 = gate, *src = gate + plane, *mark = gate + 2 * plane;                   \
        const T *t01 = gate + 3 * plane, *t00 = gate + 4 * plane, *t11 = gate + 5 * plane;   \
        const T *direct = job->direct + (size_t)p * (size_t)N;                                \
        const T *zb = job->z + (size_t)b * (size_t)N * (size_t)F;                             \
        T *outb = job->out + (((size_t)o * (size_t)job->B + (size_t)b) * (size_t)N) * (size_t)(H * V); \
        T *const left = states, *const below = states + (size_t)Y * (size_t)KV;               \
        memset(left, 0, sizeof(T) * (size_t)Y * (size_t)KV);                                  \
        for (long xf = 0; xf < X; ++xf) {                                                     \
            const long xs = fx ? X - 1 - xf : xf;                                             \
            memset(below, 0, sizeof(T) * (size_t)KV);                                         \
            for (long yf = 0; yf < Y; ++yf) {                                                 \
                const long ys = fy ? Y - 1 - yf : yf;                                         \
                const long m = xs * Y + ys;                                                   \
                const T *zm = zb + (size_t)m * (size_t)F;                                     \
                const T *q = zm + job->q_off + h * K, *k = zm + job->k_off + h * K;           \
                const T *v = zm + job->v_off + h * V;                                         \
                T *restrict hm = outb + (size_t)m * (size_t)(H * V) + (size_t)(h * V);        \
                const T a00 = t00[m], a01 = t01[m], a10 = t10[m], a11 = t11[m];               \
                const T s = src[m], mk = mark[m];                                             \
                T *restrict cx = left + (size_t)ys * (size_t)KV;                              \
                T *restrict cy = below;                                                       \
                T qk = 0;                                                                     \
                for (long i = 0; i < K; ++i)                                                  \
                    qk += q[i] * k[i];                                                        \
                const T d = o == 0 ? direct[m] * qk * job->key_scale : 0;                     \
                for (long j = 0; j < V; ++j)                                                  \
                    hm[j] = d * v[j];                                                         \
                for (long i = 0; i < K; ++i) {                                                \
                    const T qi = mk * q[i], ski = s * k[i] * job->key_scale;                  \
                    T *restrict rx = cx + i * V, *restrict ry = cy + i * V;                   \
                    for (long j = 0; j < V; ++j) {                                            \
                        const T c0 = rx[j], c1 = ry[j], fresh = ski * v[j];                   \
                        hm[j] += qi * (c0 + c1);                                              \
                        rx[j] = a00 * c0 + a10 * c1 + fresh;                                  \
                        ry[j] = a01 * c0 + a11 * c1 + fresh;                                  \
                    }                                                                         \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
                                                                                              \
    static void *NAME##_worker(void *arg)                                                     \
    {                                                                                         \
        NAME##_job *job = arg;                                                                \
        T *states = malloc(sizeof(T) * (size_t)(job->Y + 1) * (size_t)(job->K * job->V));     \
        if (states == NULL) {                                                                 \
            job->failed = 1;                                                                  \
            return NULL;                                                                      \
        }                                                                                     \
        for (long unit = job->first; unit < job->units; unit += job->step)                    \
            NAME##_sweep(job, unit, states);                                                  \
        free(states);                                                                         \
        return NULL;                                                                          \
    }                                                                                         \
                                                                                              \
    int NAME(long B, long X, long Y, long H, long K, long V, const T *z, long F, long q_off,  \
             long k_off, long v_off, T key_scale, const T *packed, const T *direct, T *out,   \
             int threads)                                                                     \
    {                                                                                         \
        const long units = B * H * 4;                                                         \
        threads = threads < 1 ? 1 : (threads > units ? (int)units : threads);                 \
        threads = threads > MAX_THREADS ? MAX_THREADS : threads;                              \
        NAME##_job jobs[MAX_THREADS];                                                         \
        for (int w = 0; w < threads; ++w)                                                     \
            jobs[w] = (NAME##_job){B, X, Y, H, K, V, F, q_off, k_off, v_off, key_scale,       \
                                   z, packed, direct, out, w, threads, units, 0};             \
        run_threads(NAME##_worker, jobs, sizeof(NAME##_job), threads);                        \
        int failed = 0;                                                                       \
        for (int w = 0; w < threads; ++w)                                                     \
            failed |= jobs[w].failed;                                                         \
        return failed;                                                                        \
    }

DEFINE_GRID_RECURRENT(grid_recurrent_f32, float)
DEFINE_GRID_RECURRENT(grid_recurrent_f64, double)
