/* The little of OpenMP that the data-parallel epoch uses, with serial stand-ins when
 * the extension is built without it (then every fit runs on one thread).
 *
 * pb_barrier() is an orphaned `omp barrier`: called from a function that runs inside
 * a parallel region, it binds to that region's team. */
#ifndef PYBACKPROP_OMP_H
#define PYBACKPROP_OMP_H

/* an int that OpenMP threads share as a flag, read and written whole */
static inline int pb_load_int(const int* p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void pb_store_int(int* p, int v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }

#ifdef _OPENMP
#include <omp.h>
#define PB_HAVE_OPENMP 1
#define pb_barrier() _Pragma("omp barrier")
static inline int pb_thread_num(void) { return omp_get_thread_num(); }
static inline int pb_num_threads(void) { return omp_get_num_threads(); }
static inline int pb_max_threads(void) { return omp_get_max_threads(); }
#else
#define PB_HAVE_OPENMP 0
#define pb_barrier() ((void)0)
static inline int pb_thread_num(void) { return 0; }
static inline int pb_num_threads(void) { return 1; }
static inline int pb_max_threads(void) { return 1; }
#endif

/* The barrier clock (_kernels.barrier_clock): while it is on, each barrier of the
 * epoch loops adds to its thread's row, for its site (0 an epoch's start, 1 and 2 a
 * batch's first and second, 3 an epoch's end), the seconds the thread worked since
 * it left its last barrier, the seconds it waited in this one, and one barrier. Each
 * thread writes its own row only, and Python reads them once the fit is over. Off,
 * a barrier costs a test more. */
#include <time.h>
#define PB_CLOCK_THREADS 64
#define PB_CLOCK_SITES 4
static int pb_clock_on = 0;
static double pb_clock[PB_CLOCK_THREADS][PB_CLOCK_SITES][3];
static double pb_clock_left[PB_CLOCK_THREADS];

static inline double pb_clock_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* every thread, as it starts its share of the epochs */
static inline void pb_clock_start(void)
{
    int t = pb_thread_num();
    if (pb_clock_on && t < PB_CLOCK_THREADS)
        pb_clock_left[t] = pb_clock_now();
}

static inline void pb_timed_barrier(int site)
{
    int t = pb_thread_num();
    double arrived, left;
    if (!pb_clock_on || t >= PB_CLOCK_THREADS) {
        pb_barrier();
        return;
    }
    arrived = pb_clock_now();
    pb_barrier();
    left = pb_clock_now();
    pb_clock[t][site][0] += arrived - pb_clock_left[t];
    pb_clock[t][site][1] += left - arrived;
    pb_clock[t][site][2] += 1;
    pb_clock_left[t] = left;
}

#endif
