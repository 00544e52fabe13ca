# cython: language_level=3
"""Elementwise activations and their derivatives, in place on contiguous blocks.

Design: every derivative is written in terms of the activation's *output*
``h = f(z)`` (``σ' = h (1 - h)``, ``tanh' = 1 - h²``, ``relu' = [h > 0]``), so the
backward pass needs no copy of ``z``. Codes are shared with ``pybackprop/_layout.py``.
"""

from cython cimport floating
from libc.math cimport exp, expf, tanh, tanhf, log, logf

cdef enum:
    IDENTITY = 0
    LOGISTIC = 1
    TANH = 2
    RELU = 3
    EXP = 4        # output only: Poisson regression
    SOFTMAX = 5    # output only: multiclass classification


cdef inline floating _exp(floating x) noexcept nogil:
    if floating is float:
        return expf(x)
    else:
        return exp(x)


cdef inline floating _log(floating x) noexcept nogil:
    if floating is float:
        return logf(x)
    else:
        return log(x)


cdef inline floating _tanh(floating x) noexcept nogil:
    if floating is float:
        return tanhf(x)
    else:
        return tanh(x)


cdef inline void activate(int kind, floating* z, Py_ssize_t n) noexcept nogil:
    """z := f(z) elementwise over n contiguous values (not softmax)."""
    cdef Py_ssize_t i
    if kind == LOGISTIC:
        for i in range(n):
            # 1 / (1 + e^-z): e^-z overflows to inf for z < -745 and gives 0, as wanted
            z[i] = 1 / (1 + _exp(-z[i]))
    elif kind == TANH:
        for i in range(n):
            z[i] = _tanh(z[i])
    elif kind == RELU:
        for i in range(n):
            # branch-free select (vectorises; a branch mispredicts on half the units);
            # NaN stays NaN, as in np.maximum
            z[i] = 0 if z[i] < 0 else z[i]
    elif kind == EXP:
        for i in range(n):
            z[i] = _exp(z[i])


cdef inline void softmax_rows(floating* z, Py_ssize_t rows, Py_ssize_t cols) noexcept nogil:
    """Each row of z := exp(z - max) / sum(exp(z - max)); the shift keeps exp finite."""
    cdef Py_ssize_t i, j
    cdef floating top, total
    cdef floating* row
    for i in range(rows):
        row = z + i * cols
        top = row[0]
        for j in range(1, cols):
            if row[j] > top:
                top = row[j]
        total = 0
        for j in range(cols):
            row[j] = _exp(row[j] - top)
            total = total + row[j]
        for j in range(cols):
            row[j] = row[j] / total


cdef inline void multiply_derivative(int kind, const floating* h, floating* d,
                                     Py_ssize_t n) noexcept nogil:
    """d := d ⊙ f'(z), with f'(z) written through h = f(z)."""
    cdef Py_ssize_t i
    if kind == LOGISTIC:
        for i in range(n):
            d[i] = d[i] * h[i] * (1 - h[i])
    elif kind == TANH:
        for i in range(n):
            d[i] = d[i] * (1 - h[i] * h[i])
    elif kind == RELU:
        for i in range(n):
            d[i] = d[i] if h[i] > 0 else 0
