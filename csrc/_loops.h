/* The optimizer's pass over the flat parameter buffer, fused with the end of the
 * gradient: for each parameter, g = (g + g2 + alpha w) / S (alpha = 0 for biases; g2,
 * a second block's gradient, or NULL), then the SGD or Adam update of w with that g.
 * One sweep over the buffers, and the finished gradient is not stored. Cloned for
 * x86-64-v3 and x86-64-v4 like the activations (see _vexp.h). */
#ifndef PYBACKPROP_LOOPS_H
#define PYBACKPROP_LOOPS_H

#include "_vexp.h"

/* the loop twice, with and without g2, so that neither carries a test per element */
#define PB_WITH_G2(T, BODY)                                                              \
    if (g2 != NULL) {                                                                 \
        for (Py_ssize_t i = 0; i < n; i++) { T gsum = g[i] + g2[i]; BODY }            \
    } else {                                                                          \
        for (Py_ssize_t i = 0; i < n; i++) { T gsum = g[i]; BODY }                    \
    }

#define PB_DEFINE_STEPS(T, SUFFIX, SQRT)                                              \
PB_CLONES static void pb_sgd_step##SUFFIX(T* p, const T* g, const T* g2, T* vel,      \
                                          Py_ssize_t n, T alpha, T S, T lr, T mu,     \
                                          int nesterov)                               \
{                                                                                     \
    PB_WITH_G2(T,                                                                     \
        T grad = (gsum + alpha * p[i]) / S;                                           \
        T upd = mu * vel[i] - lr * grad;                                              \
        vel[i] = upd;                                                                 \
        upd = nesterov ? mu * upd - lr * grad : upd;                                  \
        p[i] += upd;                                                                  \
    )                                                                                 \
}                                                                                     \
PB_CLONES static void pb_adam_step##SUFFIX(T* p, const T* g, const T* g2, T* m, T* v, \
                                           Py_ssize_t n, T alpha, T S, T lr_t, T b1,  \
                                           T b2, T eps)                               \
{                                                                                     \
    const T c1 = (T)1 - b1, c2 = (T)1 - b2;                                           \
    PB_WITH_G2(T,                                                                     \
        T grad = (gsum + alpha * p[i]) / S;                                           \
        T mi = b1 * m[i] + c1 * grad;                                                 \
        T vi = b2 * v[i] + c2 * (grad * grad);                                        \
        m[i] = mi;                                                                    \
        v[i] = vi;                                                                    \
        p[i] += (-lr_t * mi) / (SQRT(vi) + eps);                                      \
    )                                                                                 \
}

PB_DEFINE_STEPS(double, , sqrt)
PB_DEFINE_STEPS(float, f, sqrtf)

#endif
