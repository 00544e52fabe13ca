# cython: language_level=3
"""Row-major matrix products on top of ``scipy.linalg.cython_blas``.

Design: BLAS is column-major. A row-major ``C = op(A) @ op(B)`` is the
column-major ``C^T = op(B)^T @ op(A)^T``, so the operands are handed to ``?gemm``
swapped, with no copy and no transpose materialised.
"""

from cython cimport floating
from scipy.linalg.cython_blas cimport (sgemm, dgemm, sgemv, dgemv, saxpy, daxpy, ddot,
                                       dsdot)


cdef inline void gemm(bint trans_a, bint trans_b, int m, int n, int k,
                      floating alpha, const floating* A, int lda,
                      const floating* B, int ldb,
                      floating beta, floating* C, int ldc) noexcept nogil:
    """C := alpha * op(A) @ op(B) + beta * C, all row-major.

    C is (m, n), op(A) is (m, k), op(B) is (k, n); ``ld*`` are row strides. Products
    with a dimension of 1 (a width-1 output layer, a one-row batch) go to ``?gemv`` or
    a plain outer-product loop, which ``?gemm`` runs several times slower.
    """
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    cdef char tv
    cdef int rows, cols, incx
    cdef int i, j
    cdef floating a_i
    if m == 0 or n == 0:
        return
    if k == 1:
        # outer product: C[i, j] = alpha a_i b_j (+ beta C[i, j])
        for i in range(m):
            a_i = alpha * (A[i] if trans_a else A[i * lda])
            for j in range(n):
                if beta == 0:
                    C[i * ldc + j] = a_i * (B[j * ldb] if trans_b else B[j])
                else:
                    C[i * ldc + j] = a_i * (B[j * ldb] if trans_b else B[j]) + beta * C[i * ldc + j]
        return
    if n == 1:
        # y := alpha op(A) x + beta y; row-major op(A) is, column-major, its transpose
        if trans_a:
            tv, rows, cols = b'N', m, k
        else:
            tv, rows, cols = b'T', k, m
        incx = 1 if trans_b else ldb
        if floating is float:
            sgemv(&tv, &rows, &cols, &alpha, <float*> A, &lda, <float*> B, &incx, &beta,
                  C, &ldc)
        else:
            dgemv(&tv, &rows, &cols, &alpha, <double*> A, &lda, <double*> B, &incx, &beta,
                  C, &ldc)
        return
    if m == 1:
        # C^T = op(B)^T @ op(A)^T: a product with one column (n > 1 here, so this
        # lands in the branch above)
        gemm(not trans_b, not trans_a, n, 1, k, alpha, B, ldb, A, lda, beta, C, 1)
        return
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*> B, &ldb,
              <float*> A, &lda, &beta, C, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*> B, &ldb,
              <double*> A, &lda, &beta, C, &ldc)


cdef inline void axpy(int n, floating alpha, const floating* x, floating* y) noexcept nogil:
    """y += alpha * x over n contiguous values."""
    cdef int one = 1
    if floating is float:
        saxpy(&n, &alpha, <float*> x, &one, y, &one)
    else:
        daxpy(&n, &alpha, <double*> x, &one, y, &one)


cdef inline double sum_of_squares(const floating* x, int n) noexcept nogil:
    """x · x, accumulated in double (dsdot for float32)."""
    cdef int one = 1
    if n == 0:
        return 0.0
    if floating is float:
        return dsdot(&n, <float*> x, &one, <float*> x, &one)
    else:
        return ddot(&n, <double*> x, &one, <double*> x, &one)
