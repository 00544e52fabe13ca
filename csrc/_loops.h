/* The optimizer's pass over the flat parameter buffer, fused with the end of the
 * gradient: for each parameter, g = (g + alpha w) / S (alpha = 0 for biases), then
 * the SGD or Adam update of w with that g. One sweep over the buffers instead of two.
 * Cloned for x86-64-v3 like the activations (see _vexp.h). */
#ifndef PYBACKPROP_LOOPS_H
#define PYBACKPROP_LOOPS_H

#include "_vexp.h"

#define PB_DEFINE_STEPS(T, SUFFIX, SQRT)                                              \
PB_CLONES static void pb_sgd_step##SUFFIX(T* p, T* g, T* vel, Py_ssize_t n, T alpha,  \
                                          T S, T lr, T mu, int nesterov)              \
{                                                                                     \
    for (Py_ssize_t i = 0; i < n; i++) {                                              \
        T grad = (g[i] + alpha * p[i]) / S;                                           \
        T upd = mu * vel[i] - lr * grad;                                              \
        vel[i] = upd;                                                                 \
        upd = nesterov ? mu * upd - lr * grad : upd;                                  \
        g[i] = grad;                                                                  \
        p[i] += upd;                                                                  \
    }                                                                                 \
}                                                                                     \
PB_CLONES static void pb_adam_step##SUFFIX(T* p, T* g, T* m, T* v, Py_ssize_t n,      \
                                           T alpha, T S, T lr_t, T b1, T b2, T eps)   \
{                                                                                     \
    const T c1 = (T)1 - b1, c2 = (T)1 - b2;                                           \
    for (Py_ssize_t i = 0; i < n; i++) {                                              \
        T grad = (g[i] + alpha * p[i]) / S;                                           \
        m[i] = b1 * m[i] + c1 * grad;                                                 \
        v[i] = b2 * v[i] + c2 * (grad * grad);                                        \
        g[i] = grad;                                                                  \
        p[i] += (-lr_t * m[i]) / (SQRT(v[i]) + eps);                                  \
    }                                                                                 \
}

PB_DEFINE_STEPS(double, , sqrt)
PB_DEFINE_STEPS(float, f, sqrtf)

#endif
