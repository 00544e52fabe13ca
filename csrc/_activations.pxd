# cython: language_level=3
"""Elementwise activations and their derivatives, in place on contiguous blocks.

Design: where the derivative is a function of the activation's *output* ``h = f(z)``
(``σ' = h (1 - h)``, ``tanh' = 1 - h²``, ``relu' = [h > 0]``, ``softplus' = 1 - e^-h``,
``elu' = h + 1`` below 0), the backward pass reads ``h`` and needs no copy of ``z``.
GELU and SiLU are not invertible that way: their layers keep ``z`` (see
``NEEDS_Z``). Codes are shared with ``pybackprop/_layout.py``.
"""

from cython cimport floating
from libc.math cimport (exp, expf, expm1, expm1f, log, logf, log1p, log1pf, erf, erff,
                        sqrt, fabs)
from libc.string cimport memcpy

cdef enum:
    IDENTITY = 0
    LOGISTIC = 1
    TANH = 2
    RELU = 3
    EXP = 4        # output only: Poisson regression
    SOFTMAX = 5    # output only: multiclass classification
    LEAKY_RELU = 6
    ELU = 7
    GELU = 8
    SOFTPLUS = 9
    SILU = 10

cdef extern from "_vexp.h" nogil:
    double pb_exp(double x)     # branch-free, vectorisable exp and tanh (see _vexp.h)
    float pb_expf(float x)
    double pb_tanh(double x)
    float pb_tanhf(float x)
    void pb_sigmoid_inplace(double* z, Py_ssize_t n)
    void pb_sigmoid_inplacef(float* z, Py_ssize_t n)
    void pb_tanh_inplace(double* z, Py_ssize_t n)
    void pb_tanh_inplacef(float* z, Py_ssize_t n)
    void pb_exp_inplace(double* z, Py_ssize_t n)
    void pb_exp_inplacef(float* z, Py_ssize_t n)
    void pb_relu_inplace(double* z, Py_ssize_t n)
    void pb_relu_inplacef(float* z, Py_ssize_t n)
    void pb_relu_grad(const double* h, double* d, Py_ssize_t n)
    void pb_relu_gradf(const float* h, float* d, Py_ssize_t n)
    void pb_tanh_grad(const double* h, double* d, Py_ssize_t n)
    void pb_tanh_gradf(const float* h, float* d, Py_ssize_t n)
    void pb_sigmoid_grad(const double* h, double* d, Py_ssize_t n)
    void pb_sigmoid_gradf(const float* h, float* d, Py_ssize_t n)
    void pb_relu_grad_colsum(const double* h, double* d, Py_ssize_t rows, Py_ssize_t cols,
                             double* out)
    void pb_relu_grad_colsumf(const float* h, float* d, Py_ssize_t rows, Py_ssize_t cols,
                              float* out)
    void pb_tanh_grad_colsum(const double* h, double* d, Py_ssize_t rows, Py_ssize_t cols,
                             double* out)
    void pb_tanh_grad_colsumf(const float* h, float* d, Py_ssize_t rows, Py_ssize_t cols,
                              float* out)
    void pb_sigmoid_grad_colsum(const double* h, double* d, Py_ssize_t rows,
                                Py_ssize_t cols, double* out)
    void pb_sigmoid_grad_colsumf(const float* h, float* d, Py_ssize_t rows,
                                 Py_ssize_t cols, float* out)
    void pb_fill_rows(double* z, const double* b, Py_ssize_t rows, Py_ssize_t cols)
    void pb_fill_rowsf(float* z, const float* b, Py_ssize_t rows, Py_ssize_t cols)
    void pb_colsum_add(const double* a, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t ld,
                       double* out)
    void pb_colsum_addf(const float* a, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t ld,
                        float* out)
    void pb_add_inplace(double* out, const double* a, Py_ssize_t n)
    void pb_add_inplacef(float* out, const float* a, Py_ssize_t n)
    void pb_add_rows(double* z, const double* b, Py_ssize_t rows, Py_ssize_t cols)
    void pb_add_rowsf(float* z, const float* b, Py_ssize_t rows, Py_ssize_t cols)
    void pb_bias_relu(double* z, const double* b, Py_ssize_t rows, Py_ssize_t cols)
    void pb_bias_reluf(float* z, const float* b, Py_ssize_t rows, Py_ssize_t cols)
    void pb_bias_tanh(double* z, const double* b, Py_ssize_t rows, Py_ssize_t cols)
    void pb_bias_tanhf(float* z, const float* b, Py_ssize_t rows, Py_ssize_t cols)
    void pb_bias_sigmoid(double* z, const double* b, Py_ssize_t rows, Py_ssize_t cols)
    void pb_bias_sigmoidf(float* z, const float* b, Py_ssize_t rows, Py_ssize_t cols)
    Py_ssize_t pb_tile_rows(Py_ssize_t cols)

cdef extern from *:
    """
    #define PB_LEAKY_SLOPE 0.01
    #define PB_INV_SQRT2 0.70710678118654752440
    #define PB_INV_SQRT_2PI 0.39894228040143267794
    """
    const double LEAKY_SLOPE "PB_LEAKY_SLOPE"      # leaky_relu's slope below 0
    const double INV_SQRT2 "PB_INV_SQRT2"          # 1 / √2
    const double INV_SQRT_2PI "PB_INV_SQRT_2PI"    # 1 / √(2π)


cdef inline bint needs_z(int kind) noexcept nogil:
    """The derivative of this activation needs z itself, not only h = f(z)."""
    return kind == GELU or kind == SILU


cdef inline floating _exp(floating x) noexcept nogil:
    if floating is float:
        return expf(x)
    else:
        return exp(x)


cdef inline floating _vexp(floating x) noexcept nogil:
    """exp for hot loops: a few ulps, but the loop around it vectorises."""
    if floating is float:
        return pb_expf(x)
    else:
        return pb_exp(x)


cdef inline floating _expm1(floating x) noexcept nogil:
    if floating is float:
        return expm1f(x)
    else:
        return expm1(x)


cdef inline floating _log1p(floating x) noexcept nogil:
    if floating is float:
        return log1pf(x)
    else:
        return log1p(x)


cdef inline floating _log(floating x) noexcept nogil:
    if floating is float:
        return logf(x)
    else:
        return log(x)


cdef inline floating _tanh(floating x) noexcept nogil:
    """tanh for hot loops: within a few ulps, and the loop around it vectorises."""
    if floating is float:
        return pb_tanhf(x)
    else:
        return pb_tanh(x)


cdef inline floating _erf(floating x) noexcept nogil:
    if floating is float:
        return erff(x)
    else:
        return erf(x)


cdef inline floating _sigmoid(floating x) noexcept nogil:
    # 1 / (1 + e^-x): e^-x overflows to inf for very negative x and gives 0, as wanted
    return 1 / (1 + _vexp(-x))


cdef inline void activate(int kind, floating* z, Py_ssize_t n) noexcept nogil:
    """z := f(z) elementwise over n contiguous values (not softmax)."""
    cdef Py_ssize_t i
    cdef floating x
    if kind == LOGISTIC:
        if floating is float:
            pb_sigmoid_inplacef(z, n)
        else:
            pb_sigmoid_inplace(z, n)
    elif kind == TANH:
        if floating is float:
            pb_tanh_inplacef(z, n)
        else:
            pb_tanh_inplace(z, n)
    elif kind == RELU:
        # branch-free select (vectorises; a branch mispredicts on half the units);
        # NaN stays NaN, as in np.maximum
        if floating is float:
            pb_relu_inplacef(z, n)
        else:
            pb_relu_inplace(z, n)
    elif kind == EXP:
        if floating is float:
            pb_exp_inplacef(z, n)
        else:
            pb_exp_inplace(z, n)
    elif kind == LEAKY_RELU:
        for i in range(n):
            z[i] = <floating> LEAKY_SLOPE * z[i] if z[i] < 0 else z[i]
    elif kind == ELU:
        for i in range(n):
            z[i] = _expm1(z[i]) if z[i] < 0 else z[i]
    elif kind == GELU:
        for i in range(n):
            # z Φ(z), with the exact normal CDF Φ(z) = (1 + erf(z / √2)) / 2
            x = z[i]
            z[i] = <floating> 0.5 * x * (1 + _erf(x * <floating> INV_SQRT2))
    elif kind == SOFTPLUS:
        for i in range(n):
            # log(1 + e^z) = max(z, 0) + log1p(e^-|z|): no overflow for large |z|
            x = z[i]
            z[i] = (x if x > 0 else 0) + _log1p(_exp(-fabs(x)))
    elif kind == SILU:
        for i in range(n):
            z[i] = z[i] * _sigmoid(z[i])


cdef inline void softmax_rows(floating* z, Py_ssize_t rows, Py_ssize_t cols) noexcept nogil:
    """Each row of z := exp(z - max) / sum(exp(z - max)); the shift keeps exp finite.
    The exponentials go in one pass over the whole block, which vectorises."""
    cdef Py_ssize_t i, j
    cdef floating top, total
    cdef floating* row
    for i in range(rows):
        row = z + i * cols
        top = row[0]
        for j in range(1, cols):
            if row[j] > top:
                top = row[j]
        for j in range(cols):
            row[j] = row[j] - top
    if floating is float:
        pb_exp_inplacef(z, rows * cols)
    else:
        pb_exp_inplace(z, rows * cols)
    for i in range(rows):
        row = z + i * cols
        total = 0
        for j in range(cols):
            total = total + row[j]
        for j in range(cols):
            row[j] = row[j] / total


cdef inline void multiply_derivative_colsum(int kind, const floating* h,
                                            const floating* z, floating* d,
                                            Py_ssize_t rows, Py_ssize_t cols,
                                            floating* out) noexcept nogil:
    """multiply_derivative over a (rows, cols) block, then out += its column sums:
    one pass for the logistic, tanh and relu (the same sums, row after row)."""
    if kind == LOGISTIC:
        if floating is float:
            pb_sigmoid_grad_colsumf(h, d, rows, cols, out)
        else:
            pb_sigmoid_grad_colsum(h, d, rows, cols, out)
    elif kind == TANH:
        if floating is float:
            pb_tanh_grad_colsumf(h, d, rows, cols, out)
        else:
            pb_tanh_grad_colsum(h, d, rows, cols, out)
    elif kind == RELU:
        if floating is float:
            pb_relu_grad_colsumf(h, d, rows, cols, out)
        else:
            pb_relu_grad_colsum(h, d, rows, cols, out)
    else:
        multiply_derivative(kind, h, z, d, rows * cols)
        colsum_add(d, rows, cols, out)


cdef inline void multiply_derivative(int kind, const floating* h, const floating* z,
                                     floating* d, Py_ssize_t n) noexcept nogil:
    """d := d ⊙ f'(z), with f'(z) written through h = f(z) (or z for GELU / SiLU)."""
    cdef Py_ssize_t i
    cdef floating s, x
    if kind == LOGISTIC:
        # d h (1 - h)
        if floating is float:
            pb_sigmoid_gradf(h, d, n)
        else:
            pb_sigmoid_grad(h, d, n)
    elif kind == TANH:
        # d (1 - h²)
        if floating is float:
            pb_tanh_gradf(h, d, n)
        else:
            pb_tanh_grad(h, d, n)
    elif kind == RELU:
        if floating is float:
            pb_relu_gradf(h, d, n)
        else:
            pb_relu_grad(h, d, n)
    elif kind == LEAKY_RELU:
        for i in range(n):
            d[i] = d[i] if h[i] > 0 else <floating> LEAKY_SLOPE * d[i]
    elif kind == ELU:
        for i in range(n):
            d[i] = d[i] if h[i] > 0 else d[i] * (h[i] + 1)
    elif kind == SOFTPLUS:
        for i in range(n):
            # σ(z) = 1 - e^-h, since e^h = 1 + e^z
            d[i] = d[i] * -_expm1(-h[i])
    elif kind == GELU:
        for i in range(n):
            # Φ(z) + z φ(z)
            x = z[i]
            d[i] = d[i] * (<floating> 0.5 * (1 + _erf(x * <floating> INV_SQRT2))
                           + x * <floating> INV_SQRT_2PI * _exp(<floating> -0.5 * x * x))
    elif kind == SILU:
        for i in range(n):
            # σ(z) (1 + z (1 - σ(z)))
            x = z[i]
            s = _sigmoid(x)
            d[i] = d[i] * (s * (1 + x * (1 - s)))


cdef inline void bias_activate(int kind, floating* z, const floating* b, Py_ssize_t rows,
                               Py_ssize_t cols, floating* keep_z) noexcept nogil:
    """z := f(z + b) over a (rows, cols) block, b broadcast over the rows, f any
    activation or softmax (row by row); keep_z (not NULL) gets z + b first. relu adds
    the bias in its own pass, and so do tanh and the logistic when rows hold a whole
    number of vectors (16 values) or are narrow rows that the loops take q rows at a
    time (pb_tile_rows in _vexp.h gives 1 or q): otherwise each row would end in a scalar tail of
    exp-costly values, and the bias pass then one flat pass over the block is faster.
    tanh over 200 rows of 50 doubles (C microbenchmark on the AMD EPYC of
    bench/run.py, x86-64-v4 clone): row by row 12.2 µs, the bias pass then the flat
    tanh 10.5 µs, 8 rows at a time 9.5 µs."""
    if keep_z == NULL and (kind == RELU
                           or (kind == TANH or kind == LOGISTIC) and pb_tile_rows(cols) > 0):
        if kind == RELU:
            if floating is float:
                pb_bias_reluf(z, b, rows, cols)
            else:
                pb_bias_relu(z, b, rows, cols)
        elif kind == TANH:
            if floating is float:
                pb_bias_tanhf(z, b, rows, cols)
            else:
                pb_bias_tanh(z, b, rows, cols)
        elif floating is float:
            pb_bias_sigmoidf(z, b, rows, cols)
        else:
            pb_bias_sigmoid(z, b, rows, cols)
        return
    add_rows(z, b, rows, cols)
    if keep_z != NULL:
        memcpy(keep_z, z, rows * cols * sizeof(floating))
    if kind == SOFTMAX:
        softmax_rows(z, rows, cols)
    else:
        activate(kind, z, rows * cols)


cdef inline void add_rows(floating* z, const floating* b, Py_ssize_t rows,
                          Py_ssize_t cols) noexcept nogil:
    """Every row of the (rows, cols) block z += b."""
    if floating is float:
        pb_add_rowsf(z, b, rows, cols)
    else:
        pb_add_rows(z, b, rows, cols)


cdef inline void fill_rows(floating* z, const floating* b, Py_ssize_t rows,
                           Py_ssize_t cols) noexcept nogil:
    """Every row of the (rows, cols) block z := b."""
    if floating is float:
        pb_fill_rowsf(z, b, rows, cols)
    else:
        pb_fill_rows(z, b, rows, cols)


cdef inline void colsum_add(const floating* a, Py_ssize_t rows, Py_ssize_t cols,
                            floating* out) noexcept nogil:
    """out += the column sums of the (rows, cols) block a, added row after row."""
    colsum_add_ld(a, rows, cols, cols, out)


cdef inline void colsum_add_ld(const floating* a, Py_ssize_t rows, Py_ssize_t cols,
                               Py_ssize_t ld, floating* out) noexcept nogil:
    """out += the column sums of ``cols`` columns of ``rows`` rows, ``ld`` apart,
    from a."""
    if floating is float:
        pb_colsum_addf(a, rows, cols, ld, out)
    else:
        pb_colsum_add(a, rows, cols, ld, out)


cdef inline void add_inplace(floating* out, const floating* a, Py_ssize_t n) noexcept nogil:
    """out += a over n values."""
    if floating is float:
        pb_add_inplacef(out, a, n)
    else:
        pb_add_inplace(out, a, n)
