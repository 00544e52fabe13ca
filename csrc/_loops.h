/* The optimizer's pass over the flat parameter buffer, fused with the end of the
 * gradient: for each parameter, g = (g + g2 + alpha w) / S (alpha = 0 for biases; g2,
 * a second block's gradient, or NULL), then the SGD or Adam update of w with that g.
 * One sweep over the buffers, and the finished gradient is not stored. Cloned for
 * x86-64-v3 and x86-64-v4 like the activations (see _vexp.h). */
#ifndef PYBACKPROP_LOOPS_H
#define PYBACKPROP_LOOPS_H

#include "_vexp.h"

/* The loop four times, with and without g2, with and without the sum of squares of
 * the weights before the step (sq not NULL: the L2 term of the batch's loss, summed
 * here rather than in a pass of its own over the weights), so that none carries a
 * test per element. The sum is a SIMD reduction (partial sums per lane, added at the
 * end): its last bits depend on the vector width, like a BLAS dot's. */
#if defined(__GNUC__) || defined(__clang__)
#define PB_SIMD_SQ _Pragma("omp simd reduction(+:sq_acc)")
#else
#define PB_SIMD_SQ
#endif
#define PB_STEP_LOOPS(T, BODY)                                                           \
    double sq_acc = 0;                                                                \
    if (g2 != NULL && sq != NULL) {                                                   \
        PB_SIMD_SQ                                                                    \
        for (Py_ssize_t i = 0; i < n; i++) {                                          \
            T w = p[i]; sq_acc += (double)w * w; T gsum = g[i] + g2[i]; BODY }        \
    } else if (g2 != NULL) {                                                          \
        for (Py_ssize_t i = 0; i < n; i++) { T w = p[i]; T gsum = g[i] + g2[i]; BODY } \
    } else if (sq != NULL) {                                                          \
        PB_SIMD_SQ                                                                    \
        for (Py_ssize_t i = 0; i < n; i++) {                                          \
            T w = p[i]; sq_acc += (double)w * w; T gsum = g[i]; BODY }                \
    } else {                                                                          \
        for (Py_ssize_t i = 0; i < n; i++) { T w = p[i]; T gsum = g[i]; BODY }        \
    }                                                                                 \
    if (sq != NULL) *sq = sq_acc;

#define PB_DEFINE_STEPS(T, SUFFIX, SQRT)                                              \
PB_CLONES static void pb_sgd_step##SUFFIX(T* p, const T* g, const T* g2, T* vel,      \
                                          Py_ssize_t n, T alpha, T S, T lr, T mu,     \
                                          int nesterov, double* sq)                   \
{                                                                                     \
    const T inv_S = (T)1 / S;                                                         \
    PB_STEP_LOOPS(T,                                                                  \
        T grad = (gsum + alpha * w) * inv_S;                                          \
        T upd = mu * vel[i] - lr * grad;                                              \
        vel[i] = upd;                                                                 \
        upd = nesterov ? mu * upd - lr * grad : upd;                                  \
        p[i] = w + upd;                                                               \
    )                                                                                 \
}                                                                                     \
PB_CLONES static void pb_adam_step##SUFFIX(T* p, const T* g, const T* g2, T* m, T* v, \
                                           Py_ssize_t n, T alpha, T S, T lr_t, T b1,  \
                                           T b2, T eps, double* sq)                   \
{                                                                                     \
    const T c1 = (T)1 - b1, c2 = (T)1 - b2, inv_S = (T)1 / S;                         \
    PB_STEP_LOOPS(T,                                                                  \
        T grad = (gsum + alpha * w) * inv_S;                                          \
        T mi = b1 * m[i] + c1 * grad;                                                 \
        T vi = b2 * v[i] + c2 * (grad * grad);                                        \
        m[i] = mi;                                                                    \
        v[i] = vi;                                                                    \
        p[i] = w + (-lr_t * mi) / (SQRT(vi) + eps);                                   \
    )                                                                                 \
}

PB_DEFINE_STEPS(double, , sqrt)
PB_DEFINE_STEPS(float, f, sqrtf)

/* dst = src, n values; returns 1 when one of them is NaN or infinite (v - v is 0
 * exactly for finite v), else 0. The copy of a gathered row of X that also checks it,
 * in the same pass: X then needs no scan of its own before a fit. */
#define PB_DEFINE_COPY_FINITE(T, SUFFIX)                                              \
PB_CLONES static int pb_copy_finite##SUFFIX(const T* src, T* dst, Py_ssize_t n)       \
{                                                                                     \
    int bad = 0;                                                                      \
    for (Py_ssize_t i = 0; i < n; i++) {                                              \
        T v = src[i];                                                                 \
        dst[i] = v;                                                                   \
        bad |= (v - v) != 0;                                                          \
    }                                                                                 \
    return bad;                                                                       \
}

PB_DEFINE_COPY_FINITE(double, )
PB_DEFINE_COPY_FINITE(float, f)

#endif
