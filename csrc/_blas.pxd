# cython: language_level=3
"""Row-major matrix products on top of ``scipy.linalg.cython_blas``.

Design: BLAS is column-major. A row-major ``C = op(A) @ op(B)`` is the
column-major ``C^T = op(B)^T @ op(A)^T``, so the operands are handed to ``?gemm``
swapped, with no copy and no transpose materialised.
"""

from cython cimport floating
from scipy.linalg.cython_blas cimport sgemm, dgemm, ddot, dsdot


cdef inline void gemm(bint trans_a, bint trans_b, int m, int n, int k,
                      floating alpha, const floating* A, int lda,
                      const floating* B, int ldb,
                      floating beta, floating* C, int ldc) noexcept nogil:
    """C := alpha * op(A) @ op(B) + beta * C, all row-major.

    C is (m, n), op(A) is (m, k), op(B) is (k, n); ``ld*`` are row strides.
    """
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if m == 0 or n == 0:
        return
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*> B, &ldb,
              <float*> A, &lda, &beta, C, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*> B, &ldb,
              <double*> A, &lda, &beta, C, &ldc)


cdef inline double sum_of_squares(const floating* x, int n) noexcept nogil:
    """x · x, accumulated in double (dsdot for float32)."""
    cdef int one = 1
    if n == 0:
        return 0.0
    if floating is float:
        return dsdot(&n, <float*> x, &one, <float*> x, &one)
    else:
        return ddot(&n, <double*> x, &one, <double*> x, &one)
