/* Run `count` jobs of `size` bytes each (an array at `jobs`) through `worker`: jobs 1.. on
 * their own POSIX threads, job 0 on the calling thread; a job whose thread cannot be started
 * runs on the calling thread too. Returns when every job is done. count is at most
 * MAX_THREADS. */

#ifndef PLSTM_THREADS_H
#define PLSTM_THREADS_H

#include <pthread.h>
#include <stddef.h>

#define MAX_THREADS 64

static void run_threads(void *(*worker)(void *), void *jobs, size_t size, int count)
{
    pthread_t ids[MAX_THREADS];
    int started = 0;
    for (int w = 1; w < count; ++w) {
        if (pthread_create(&ids[w], NULL, worker, (char *)jobs + (size_t)w * size) != 0)
            break;
        started = w;
    }
    for (int w = started + 1; w < count; ++w)
        worker((char *)jobs + (size_t)w * size);
    worker(jobs);
    for (int w = 1; w <= started; ++w)
        pthread_join(ids[w], NULL);
}

#endif
