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

#endif
