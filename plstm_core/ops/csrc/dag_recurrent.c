/* pLSTM on a batch of DAGs (paper eq. 5-6) in its recurrent form, without autograd: the cell
 * states C[e] [K][V] of every edge, computed once each in a topological order of the edges,
 *
 *     C[e] = source[e] k[src(e)] v[src(e)]^T + Σ_{l = (e' -> e)} transition[l] C[e']
 *     h[n] = Σ_{e into n} mark[e] q[n]^T C[e] + direct[n] (q[n]^T k[n]) v[n]
 *
 * dag_plan orders the edges (Kahn's algorithm on the nodes, then every node's outgoing edges
 * in that order: an edge's incoming line edges all leave edges of earlier nodes) and groups
 * the line edges by their outgoing edge; O(N + E + L). dag_recurrent_* runs the recurrence
 * for every head, the heads shared by `threads` POSIX threads; O(H * (E + L) * K * V) time,
 * O(threads * E * K * V) memory for the states. Indices are int64; q, k, v are [N][H][K|V]
 * (k already scaled), source and mark [E][H], transition [L][H], direct [N][H], h [N][H][V]. */

#include <stdlib.h>
#include <string.h>

#include "threads.h"

enum { DAG_OK = 0, DAG_RANGE = 1, DAG_CYCLE = 2, DAG_MEMORY = 3 };

/* Fills order[E] and, per edge, lines[offsets[e] .. offsets[e + 1]) = the line edges into it.
 * Returns DAG_RANGE (bad[0] = the index), DAG_CYCLE (bad[0] = nodes left, bad[1] = one of
 * them) or DAG_MEMORY on failure. */
int dag_plan(long N, long E, long L, const long *src, const long *dst, const long *line_in,
             const long *line_out, long *order, long *offsets, long *lines, long *bad)
{
    for (long e = 0; e < E; ++e)
        if (src[e] < 0 || src[e] >= N || dst[e] < 0 || dst[e] >= N) {
            bad[0] = e;
            return DAG_RANGE;
        }
    for (long l = 0; l < L; ++l)
        if (line_in[l] < 0 || line_in[l] >= E || line_out[l] < 0 || line_out[l] >= E) {
            bad[0] = l;
            return DAG_RANGE;
        }
    long *indegree = calloc((size_t)N + 1, sizeof(long));
    long *out_start = calloc((size_t)N + 1, sizeof(long));
    long *out_edges = malloc(sizeof(long) * ((size_t)E + 1));
    long *queue = malloc(sizeof(long) * ((size_t)N + 1));
    if (!indegree || !out_start || !out_edges || !queue) {
        free(indegree), free(out_start), free(out_edges), free(queue);
        return DAG_MEMORY;
    }
    for (long e = 0; e < E; ++e) {
        indegree[dst[e]] += 1;
        out_start[src[e] + 1] += 1;
    }
    for (long n = 0; n < N; ++n)
        out_start[n + 1] += out_start[n];
    long *fill = queue; /* borrowed as a cursor per node, reset below */
    memcpy(fill, out_start, sizeof(long) * (size_t)N);
    for (long e = 0; e < E; ++e)
        out_edges[fill[src[e]]++] = e;
    long head = 0, tail = 0, placed = 0;
    for (long n = 0; n < N; ++n)
        if (indegree[n] == 0)
            queue[tail++] = n;
    while (head < tail) {
        const long n = queue[head++];
        for (long i = out_start[n]; i < out_start[n + 1]; ++i) {
            const long e = out_edges[i];
            order[placed++] = e;
            if (--indegree[dst[e]] == 0)
                queue[tail++] = dst[e];
        }
    }
    int status = DAG_OK;
    if (tail < N) {
        status = DAG_CYCLE;
        bad[0] = N - tail;
        for (long n = 0; n < N; ++n)
            if (indegree[n] > 0) {
                bad[1] = n;
                break;
            }
    }
    memset(offsets, 0, sizeof(long) * ((size_t)E + 1));
    for (long l = 0; l < L; ++l)
        offsets[line_out[l] + 1] += 1;
    for (long e = 0; e < E; ++e)
        offsets[e + 1] += offsets[e];
    memcpy(out_edges, offsets, sizeof(long) * (size_t)E); /* reused as the fill cursor */
    for (long l = 0; l < L; ++l)
        lines[out_edges[line_out[l]]++] = l;
    free(indegree), free(out_start), free(out_edges), free(queue);
    return status;
}

#define DEFINE_DAG_RECURRENT(NAME, T)                                                         \
    typedef struct {                                                                          \
        long N, E, H, K, V;                                                                   \
        const long *src, *dst, *order, *offsets, *lines, *line_in;                            \
        const T *q, *k, *v, *s, *t, *m, *d;                                                   \
        T *h;                                                                                 \
        long first, step;                                                                     \
        int failed;                                                                           \
    } NAME##_job;                                                                             \
                                                                                              \
    static void NAME##_head(const NAME##_job *job, long hh, T *states)                        \
    {                                                                                         \
        const long H = job->H, K = job->K, V = job->V, KV = K * V;                            \
        for (long n = 0; n < job->N; ++n) {                                                   \
            const T *q = job->q + (n * H + hh) * K, *k = job->k + (n * H + hh) * K;           \
            const T *v = job->v + (n * H + hh) * V;                                           \
            T *restrict out = job->h + (n * H + hh) * V;                                      \
            T qk = 0;                                                                         \
            for (long i = 0; i < K; ++i)                                                      \
                qk += q[i] * k[i];                                                            \
            const T scale = job->d[n * H + hh] * qk;                                          \
            for (long j = 0; j < V; ++j)                                                      \
                out[j] = scale * v[j];                                                        \
        }                                                                                     \
        for (long idx = 0; idx < job->E; ++idx) {                                             \
            const long e = job->order[idx], a = job->src[e], b = job->dst[e];                 \
            T *restrict c = states + (size_t)e * (size_t)KV;                                  \
            const T *k = job->k + (a * H + hh) * K, *v = job->v + (a * H + hh) * V;           \
            const T se = job->s[e * H + hh];                                                  \
            for (long i = 0; i < K; ++i) {                                                    \
                const T ski = se * k[i];                                                      \
                for (long j = 0; j < V; ++j)                                                  \
                    c[i * V + j] = ski * v[j];                                                \
            }                                                                                 \
            for (long p = job->offsets[e]; p < job->offsets[e + 1]; ++p) {                    \
                const long l = job->lines[p];                                                 \
                const T tl = job->t[l * H + hh];                                              \
                const T *restrict from = states + (size_t)job->line_in[l] * (size_t)KV;       \
                for (long i = 0; i < KV; ++i)                                                 \
                    c[i] += tl * from[i];                                                     \
            }                                                                                 \
            const T *q = job->q + (b * H + hh) * K;                                           \
            const T me = job->m[e * H + hh];                                                  \
            T *restrict out = job->h + (b * H + hh) * V;                                      \
            for (long i = 0; i < K; ++i) {                                                    \
                const T mqi = me * q[i];                                                      \
                for (long j = 0; j < V; ++j)                                                  \
                    out[j] += mqi * c[i * V + j];                                             \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
                                                                                              \
    static void *NAME##_worker(void *arg)                                                     \
    {                                                                                         \
        NAME##_job *job = arg;                                                                \
        T *states = malloc(sizeof(T) * ((size_t)job->E * (size_t)(job->K * job->V) + 1));     \
        if (states == NULL) {                                                                 \
            job->failed = 1;                                                                  \
            return NULL;                                                                      \
        }                                                                                     \
        for (long hh = job->first; hh < job->H; hh += job->step)                              \
            NAME##_head(job, hh, states);                                                     \
        free(states);                                                                         \
        return NULL;                                                                          \
    }                                                                                         \
                                                                                              \
    int NAME(long N, long E, long H, long K, long V, const long *src, const long *dst,        \
             const long *order, const long *offsets, const long *lines, const long *line_in,  \
             const T *q, const T *k, const T *v, const T *s, const T *t, const T *m,          \
             const T *d, T *h, int threads)                                                   \
    {                                                                                         \
        threads = threads < 1 ? 1 : (threads > H ? (int)H : threads);                         \
        threads = threads > MAX_THREADS ? MAX_THREADS : threads;                              \
        NAME##_job jobs[MAX_THREADS];                                                         \
        for (int w = 0; w < threads; ++w)                                                     \
            jobs[w] = (NAME##_job){N, E, H, K, V, src, dst, order, offsets, lines, line_in,   \
                                   q, k, v, s, t, m, d, h, w, threads, 0};                    \
        run_threads(NAME##_worker, jobs, sizeof(NAME##_job), threads);                        \
        int failed = 0;                                                                       \
        for (int w = 0; w < threads; ++w)                                                     \
            failed |= jobs[w].failed;                                                         \
        return failed;                                                                        \
    }

DEFINE_DAG_RECURRENT(dag_recurrent_f32, float)
DEFINE_DAG_RECURRENT(dag_recurrent_f64, double)
