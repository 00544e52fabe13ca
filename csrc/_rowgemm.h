/* The first layer's two products over a batch whose rows are read where they lie in X.
 *
 *   forward:   Z = X_b W        (m x n)  = (m x d) (d x n)
 *   backward:  G = X_b^T dZ     (d x n)  = (d x m) (m x n)
 *
 * X_b is the batch: row i is X + rows[i] * d (rows: the epoch's shuffled order), or
 * X + i * d when rows is NULL. W, Z, dZ and G are row-major with row stride n.
 *
 * Through BLAS, the batch's rows are first gathered into a buffer (a copy of m x d
 * values), and ?gemm then copies both operands again into its packed panels, each
 * call. These loops read the rows of X and of W (or dZ) as they lie: a block of
 * MR x (16 NV) outputs (floats; 8 NV doubles) stays in registers while the sum runs
 * down k, each step one vector load per NV from the row of W (or dZ) and one
 * broadcast per output row from X. W's row slices are contiguous and X's rows are
 * read front to back, so the hardware prefetchers keep up without a packed copy.
 * The sum over k is cut into chunks of KC steps (W's chunk stays in L2 while the
 * batch's rows stream past), and each output adds its chunks in order.
 *
 * Every output is one FMA chain per chunk, k ascending, then the chunks added in
 * order: the same operations wherever the output sits in a block, so results do not
 * depend on how the columns are shared among threads.
 *
 * AVX-512F only (x86-64 with GCC or Clang); pb_rowgemm_available() says whether this
 * CPU runs them. Elsewhere the callers gather and call BLAS as before.
 *
 * Measured on the 2-core AMD EPYC (Zen 4) machine, one thread, the mnist-shape first
 * layer (784 inputs, 128 units a thread, 256-row batches from a 60000-row X in a
 * shuffled order): forward 97 GFLOP/s, backward 92, against OpenBLAS sgemm's 97 and 91
 * on a batch already gathered (the gather not counted).
 */
#ifndef PYBACKPROP_ROWGEMM_H
#define PYBACKPROP_ROWGEMM_H

#include <stddef.h>
#include <Python.h>   /* Py_ssize_t */

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define PB_HAVE_ROWGEMM 1
#include <immintrin.h>
#define PB_AVX512 __attribute__((target("avx512f")))
#else
#define PB_HAVE_ROWGEMM 0
#endif

/* chunks of the sum: forward over the d inputs, backward over the m rows */
#define PB_FWD_KC 256
#define PB_BWD_KC 128
/* the forward's rows at a time: their chunk of k (PB_FWD_KC values a row) stays in
 * L2 while each column tile runs over them */
#define PB_FWD_ROWS 256
#define PB_MR 6
/* pb_narrow_back: the widest layer it takes, and its activations */
#define PB_NARROW_K 12
#define PB_NARROW_IDENTITY 0
#define PB_NARROW_TANH 1
#define PB_NARROW_LOGISTIC 2
#define PB_NARROW_RELU 3

#if PB_HAVE_ROWGEMM

static int pb_rowgemm_available(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") ? 1 : 0;
}

/* One block: C[r][v] over rows r < PB_MR and vectors v < NV of a tile. Macro-made
 * for each type (V: vector, M: mask, L: lanes) and vector count. The column tile's
 * last vector is masked (mk); masked-out lanes load zeros and are not stored.
 *
 * Forward (FWD): a row r of X at xr_r + f, W's row f at b + f * ldb.
 * Backward:      X's row at rp[i] + f0 (output rows f0 .. f0+5), dZ's row i at
 *                b + i * ldb.
 * Rows past the tile's last (mr of PB_MR valid) repeat its first row: their sums are
 * made and dropped. */
#define PB_ROW_FMA(V, SET1, FMA, r, a_expr)                                             \
    { V a = SET1(a_expr);                                                              \
      if (NV >= 1) c##r##_0 = FMA(a, b0, c##r##_0);                                    \
      if (NV >= 2) c##r##_1 = FMA(a, b1, c##r##_1);                                    \
      if (NV >= 3) c##r##_2 = FMA(a, b2, c##r##_2);                                    \
      if (NV >= 4) c##r##_3 = FMA(a, b3, c##r##_3); }
#define PB_ROW_ZERO(V, ZERO, r)                                                        \
    V c##r##_0 = ZERO(), c##r##_1 = ZERO(), c##r##_2 = ZERO(), c##r##_3 = ZERO();
/* Vector v of a tile's row: only the tile's last vector (v = NV - 1) can be partial
 * (pb_tile_masks), so the others load and store unmasked. (GCC kept the four masks
 * on the stack and moved them back into mask registers at every step of the sum.) */
#define PB_LD(LOADU, LOADZ, v, mk, p) (NV > (v) + 1 ? LOADU(p) : LOADZ(mk, p))
#define PB_ST(STOREU, MSTORE, v, mk, p, x)                                             \
    { if (NV > (v) + 1) STOREU(p, x); else MSTORE(p, mk, x); }
/* vector v of row r of the block into C: stored (first chunk) or added to what is
 * there */
#define PB_ROW_STORE_V(LOADU, LOADZ, ADD, STOREU, MSTORE, r, v)                         \
    if (NV > (v)) PB_ST(STOREU, MSTORE, v, mk##v, out + (v) * L_,                      \
                        first ? c##r##_##v                                             \
                        : ADD(PB_LD(LOADU, LOADZ, v, mk##v, out + (v) * L_), c##r##_##v))
#define PB_ROW_STORE(LOADU, LOADZ, ADD, STOREU, MSTORE, r)                             \
    if (r < mr) {                                                                      \
        pb_t* out = C + r * ldc;                                                       \
        PB_ROW_STORE_V(LOADU, LOADZ, ADD, STOREU, MSTORE, r, 0)                         \
        PB_ROW_STORE_V(LOADU, LOADZ, ADD, STOREU, MSTORE, r, 1)                         \
        PB_ROW_STORE_V(LOADU, LOADZ, ADD, STOREU, MSTORE, r, 2)                         \
        PB_ROW_STORE_V(LOADU, LOADZ, ADD, STOREU, MSTORE, r, 3)                         \
    }
#define PB_BLOCK_BEGIN(V, ZERO)                                                        \
    const pb_m mk0 = mks[0], mk1 = mks[1], mk2 = mks[2], mk3 = mks[3];                \
    PB_ROW_ZERO(V, ZERO, 0) PB_ROW_ZERO(V, ZERO, 1) PB_ROW_ZERO(V, ZERO, 2)            \
    PB_ROW_ZERO(V, ZERO, 3) PB_ROW_ZERO(V, ZERO, 4) PB_ROW_ZERO(V, ZERO, 5)
#define PB_BLOCK_LOADS(V, ZERO, LOADU, LOADZ)                                          \
    V b0 = ZERO(), b1 = ZERO(), b2 = ZERO(), b3 = ZERO();                              \
    if (NV >= 1) b0 = PB_LD(LOADU, LOADZ, 0, mk0, b_row);                              \
    if (NV >= 2) b1 = PB_LD(LOADU, LOADZ, 1, mk1, b_row + L_);                         \
    if (NV >= 3) b2 = PB_LD(LOADU, LOADZ, 2, mk2, b_row + 2 * L_);                     \
    if (NV >= 4) b3 = PB_LD(LOADU, LOADZ, 3, mk3, b_row + 3 * L_);
#define PB_BLOCK_END(LOADU, LOADZ, ADD, STOREU, MSTORE)                                \
    PB_ROW_STORE(LOADU, LOADZ, ADD, STOREU, MSTORE, 0)                                 \
    PB_ROW_STORE(LOADU, LOADZ, ADD, STOREU, MSTORE, 1)                                 \
    PB_ROW_STORE(LOADU, LOADZ, ADD, STOREU, MSTORE, 2)                                 \
    PB_ROW_STORE(LOADU, LOADZ, ADD, STOREU, MSTORE, 3)                                 \
    PB_ROW_STORE(LOADU, LOADZ, ADD, STOREU, MSTORE, 4)                                 \
    PB_ROW_STORE(LOADU, LOADZ, ADD, STOREU, MSTORE, 5)

#define PB_DEFINE_ROWGEMM(T, V, M, L, SUF, ZERO, LOADZ, LOADU, SET1, FMA, ADD, MSTORE,  \
                          STOREU, NVV)    \
PB_AVX512 static void pb_fwd_tile##SUF##_##NVV(const T* const* xr, const T* b,         \
        Py_ssize_t ldb, Py_ssize_t kc, T* C, Py_ssize_t ldc, int mr, const M* mks,     \
        int first)                                                                     \
{                                                                                      \
    typedef T pb_t;                                                                    \
    typedef M pb_m;                                                                    \
    enum { NV = NVV, L_ = L };                                                         \
    PB_BLOCK_BEGIN(V, ZERO)                                                            \
    const T* x0 = xr[0]; const T* x1 = xr[1]; const T* x2 = xr[2];                    \
    const T* x3 = xr[3]; const T* x4 = xr[4]; const T* x5 = xr[5];                    \
    for (Py_ssize_t f = 0; f < kc; f++) {                                              \
        const T* b_row = b + f * ldb;                                                  \
        PB_BLOCK_LOADS(V, ZERO, LOADU, LOADZ)                                          \
        PB_ROW_FMA(V, SET1, FMA, 0, x0[f]) PB_ROW_FMA(V, SET1, FMA, 1, x1[f])          \
        PB_ROW_FMA(V, SET1, FMA, 2, x2[f]) PB_ROW_FMA(V, SET1, FMA, 3, x3[f])          \
        PB_ROW_FMA(V, SET1, FMA, 4, x4[f]) PB_ROW_FMA(V, SET1, FMA, 5, x5[f])          \
    }                                                                                  \
    PB_BLOCK_END(LOADU, LOADZ, ADD, STOREU, MSTORE)                                    \
}                                                                                      \
/* the forward block of a single row (mr = 1: a one-row predict, a batch's last row of \
 * 6 k + 1): the same FMA chain for each output as the block's row 0, without the     \
 * five rows a block would make and drop */                                           \
PB_AVX512 static void pb_fwd_row##SUF##_##NVV(const T* x0, const T* b, Py_ssize_t ldb,  \
        Py_ssize_t kc, T* C, const M* mks, int first)                                  \
{                                                                                      \
    typedef T pb_t;                                                                    \
    enum { NV = NVV, L_ = L };                                                         \
    const M mk0 = mks[0], mk1 = mks[1], mk2 = mks[2], mk3 = mks[3];                   \
    const int mr = 1;                                                                  \
    const Py_ssize_t ldc = 0;                                                          \
    PB_ROW_ZERO(V, ZERO, 0)                                                            \
    for (Py_ssize_t f = 0; f < kc; f++) {                                              \
        const T* b_row = b + f * ldb;                                                  \
        PB_BLOCK_LOADS(V, ZERO, LOADU, LOADZ)                                          \
        PB_ROW_FMA(V, SET1, FMA, 0, x0[f])                                             \
    }                                                                                  \
    PB_ROW_STORE(LOADU, LOADZ, ADD, STOREU, MSTORE, 0)                                 \
}                                                                                      \
PB_AVX512 static void pb_bwd_tile##SUF##_##NVV(const T* const* rp, const int* o,       \
        const T* b, Py_ssize_t ldb, Py_ssize_t kc, T* C, Py_ssize_t ldc, int mr,       \
        const M* mks, int first)                                                       \
{                                                                                      \
    typedef T pb_t;                                                                    \
    typedef M pb_m;                                                                    \
    enum { NV = NVV, L_ = L };                                                         \
    PB_BLOCK_BEGIN(V, ZERO)                                                            \
    const int o0 = o[0], o1 = o[1], o2 = o[2], o3 = o[3], o4 = o[4], o5 = o[5];       \
    for (Py_ssize_t i = 0; i < kc; i++) {                                              \
        const T* b_row = b + i * ldb;                                                  \
        const T* x = rp[i];                                                            \
        PB_BLOCK_LOADS(V, ZERO, LOADU, LOADZ)                                          \
        PB_ROW_FMA(V, SET1, FMA, 0, x[o0]) PB_ROW_FMA(V, SET1, FMA, 1, x[o1])          \
        PB_ROW_FMA(V, SET1, FMA, 2, x[o2]) PB_ROW_FMA(V, SET1, FMA, 3, x[o3])          \
        PB_ROW_FMA(V, SET1, FMA, 4, x[o4]) PB_ROW_FMA(V, SET1, FMA, 5, x[o5])          \
    }                                                                                  \
    PB_BLOCK_END(LOADU, LOADZ, ADD, STOREU, MSTORE)                                    \
}

#define PB_DEFINE_ROWGEMM_ALL(T, V, M, L, SUF, ZERO, LOADZ, LOADU, SET1, FMA, ADD, MSTORE, \
                              STOREU)     \
PB_DEFINE_ROWGEMM(T, V, M, L, SUF, ZERO, LOADZ, LOADU, SET1, FMA, ADD, MSTORE, STOREU, 1) \
PB_DEFINE_ROWGEMM(T, V, M, L, SUF, ZERO, LOADZ, LOADU, SET1, FMA, ADD, MSTORE, STOREU, 2) \
PB_DEFINE_ROWGEMM(T, V, M, L, SUF, ZERO, LOADZ, LOADU, SET1, FMA, ADD, MSTORE, STOREU, 3) \
PB_DEFINE_ROWGEMM(T, V, M, L, SUF, ZERO, LOADZ, LOADU, SET1, FMA, ADD, MSTORE, STOREU, 4) \
/* the masks of the column tile [j, j + w), w <= 4 L, and its vector count */          \
static inline int pb_tile_masks##SUF(Py_ssize_t w, M* mks)                             \
{                                                                                      \
    int nv = 0;                                                                        \
    for (int v = 0; v < 4; v++) {                                                      \
        Py_ssize_t left = w - (Py_ssize_t)v * L;                                       \
        mks[v] = left >= L ? (M)~(M)0 : left > 0 ? (M)(((M)1 << left) - 1) : (M)0;     \
        nv += left > 0;                                                                \
    }                                                                                  \
    return nv;                                                                         \
}                                                                                      \
/* Z (m x n) = X_b W, W (d x n); PB_FWD_ROWS rows at a time */                         \
static void pb_xw##SUF(const T* X, Py_ssize_t d, const Py_ssize_t* rows, Py_ssize_t m, \
                       const T* W, Py_ssize_t n, T* Z)                                 \
{                                                                                      \
    const T* xr[PB_MR];                                                                \
    M mks[4];                                                                          \
    if (d == 0) {                                                                      \
        for (Py_ssize_t i = 0; i < m * n; i++) Z[i] = 0;                               \
        return;                                                                        \
    }                                                                                  \
    for (Py_ssize_t i0 = 0; i0 < m; i0 += PB_FWD_ROWS) {                               \
    Py_ssize_t i1 = m - i0 < PB_FWD_ROWS ? m : i0 + PB_FWD_ROWS;                       \
    for (Py_ssize_t k0 = 0; k0 < d; k0 += PB_FWD_KC) {                                 \
        Py_ssize_t kc = d - k0 < PB_FWD_KC ? d - k0 : PB_FWD_KC;                       \
        for (Py_ssize_t j = 0; j < n; j += 4 * L) {                                    \
            int nv = pb_tile_masks##SUF(n - j, mks);                                   \
            for (Py_ssize_t i = i0; i < i1; i += PB_MR) {                              \
                int mr = i1 - i < PB_MR ? (int)(i1 - i) : PB_MR;                       \
                for (int r = 0; r < PB_MR; r++) {                                      \
                    Py_ssize_t row = i + (r < mr ? r : 0);                             \
                    xr[r] = X + (rows != NULL ? rows[row] : row) * d + k0;             \
                }                                                                      \
                const T* b = W + k0 * n + j;                                           \
                T* C = Z + i * n + j;                                                  \
                if (mr == 1) {                                                         \
                    if (nv == 4) pb_fwd_row##SUF##_4(xr[0], b, n, kc, C, mks, k0 == 0); \
                    else if (nv == 3) pb_fwd_row##SUF##_3(xr[0], b, n, kc, C, mks, k0 == 0); \
                    else if (nv == 2) pb_fwd_row##SUF##_2(xr[0], b, n, kc, C, mks, k0 == 0); \
                    else pb_fwd_row##SUF##_1(xr[0], b, n, kc, C, mks, k0 == 0);        \
                }                                                                      \
                else if (nv == 4) pb_fwd_tile##SUF##_4(xr, b, n, kc, C, n, mr, mks, k0 == 0); \
                else if (nv == 3) pb_fwd_tile##SUF##_3(xr, b, n, kc, C, n, mr, mks, k0 == 0); \
                else if (nv == 2) pb_fwd_tile##SUF##_2(xr, b, n, kc, C, n, mr, mks, k0 == 0); \
                else pb_fwd_tile##SUF##_1(xr, b, n, kc, C, n, mr, mks, k0 == 0);       \
            }                                                                          \
        }                                                                              \
    }                                                                                  \
    }                                                                                  \
}                                                                                      \
/* G (d x n) = X_b^T dZ, dZ (m x n); rp: scratch for m row pointers */                 \
static void pb_xtdz##SUF(const T* X, Py_ssize_t d, const Py_ssize_t* rows,             \
                         Py_ssize_t m, const T* dZ, Py_ssize_t n, T* G,                \
                         const T** rp)                                                 \
{                                                                                      \
    M mks[4];                                                                          \
    int o[PB_MR];                                                                      \
    for (Py_ssize_t i = 0; i < m; i++)                                                 \
        rp[i] = X + (rows != NULL ? rows[i] : i) * d;                                  \
    if (m == 0) {                                                                      \
        for (Py_ssize_t i = 0; i < d * n; i++) G[i] = 0;                               \
        return;                                                                        \
    }                                                                                  \
    for (Py_ssize_t i0 = 0; i0 < m; i0 += PB_BWD_KC) {                                 \
        Py_ssize_t kc = m - i0 < PB_BWD_KC ? m - i0 : PB_BWD_KC;                       \
        for (Py_ssize_t f = 0; f < d; f += PB_MR) {                                    \
            int mr = d - f < PB_MR ? (int)(d - f) : PB_MR;                             \
            for (int r = 0; r < PB_MR; r++) o[r] = (int)f + (r < mr ? r : 0);          \
            for (Py_ssize_t j = 0; j < n; j += 4 * L) {                                \
                int nv = pb_tile_masks##SUF(n - j, mks);                               \
                const T* b = dZ + i0 * n + j;                                          \
                T* C = G + f * n + j;                                                  \
                if (nv == 4) pb_bwd_tile##SUF##_4(rp + i0, o, b, n, kc, C, n, mr, mks, i0 == 0); \
                else if (nv == 3) pb_bwd_tile##SUF##_3(rp + i0, o, b, n, kc, C, n, mr, mks, i0 == 0); \
                else if (nv == 2) pb_bwd_tile##SUF##_2(rp + i0, o, b, n, kc, C, n, mr, mks, i0 == 0); \
                else pb_bwd_tile##SUF##_1(rp + i0, o, b, n, kc, C, n, mr, mks, i0 == 0); \
            }                                                                          \
        }                                                                              \
    }                                                                                  \
}

#define PB_LOADZ_PS(mk, p) _mm512_maskz_loadu_ps((mk), (p))
#define PB_LOADZ_PD(mk, p) _mm512_maskz_loadu_pd((mk), (p))
#define PB_MSTORE_PS(p, mk, v) _mm512_mask_storeu_ps((p), (mk), (v))
#define PB_MSTORE_PD(p, mk, v) _mm512_mask_storeu_pd((p), (mk), (v))

PB_DEFINE_ROWGEMM_ALL(float, __m512, __mmask16, 16, f, _mm512_setzero_ps, PB_LOADZ_PS,
                      _mm512_loadu_ps, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps,
                      PB_MSTORE_PS, _mm512_storeu_ps)
PB_DEFINE_ROWGEMM_ALL(double, __m512d, __mmask8, 8, , _mm512_setzero_pd, PB_LOADZ_PD,
                      _mm512_loadu_pd, _mm512_set1_pd, _mm512_fmadd_pd, _mm512_add_pd,
                      PB_MSTORE_PD, _mm512_storeu_pd)

/* The backward through a block's second layer when the layer is narrow (k <= PB_NARROW_K
 * outputs, a classifier's classes), in one pass over the batch's rows instead of two
 * BLAS products and a loop, for an activation whose derivative comes from h alone:
 *
 *   G2 (Hj x k) = h^T dz,   D (m x Hj) = (dz W2^T) ⊙ f'(h),   db = the column sums of D
 *
 * h and D are m x Hj, dz m x k, W2t (k x Hj) the block's W2 transposed, G2t (k x Hj)
 * the gradient of W2 transposed (the caller puts it back), all row-major; db (Hj) is
 * written, not added to. A column tile of L units at a time (the last one masked)
 * keeps W2t's k vectors of the tile, the k sums of G2t and the tile's column sum in
 * registers down the rows: each value of D is one FMA chain over the k outputs, each
 * of G2t one over the rows in order, and each column sum adds the rows in order (as
 * the loop it replaces did). BLAS ran the two products at about 40 GFLOP/s on the
 * digits net's 200 x 50 x 10 shapes, short sums being what they are for it.
 * k: 1 to PB_NARROW_K (the caller checks); act: PB_NARROW_TANH, _LOGISTIC, _RELU or
 * _IDENTITY. */

#define PB_DEFINE_NARROW(T, V, M, L, SUF, ZERO, LOADZ, SET1, FMA, FNMA, MUL, SUB, ADD,   \
                         MSTORE, CMPGT_MASK, MASKZ_MOV)                                  \
PB_AVX512 static inline __attribute__((always_inline)) void pb_narrow_body##SUF(        \
        const T* h, const T* dz, const T* W2t, Py_ssize_t m, Py_ssize_t Hj, const int k, \
        int act, T* D, T* G2t, T* db)                                                  \
{                                                                                      \
    V w[PB_NARROW_K], g[PB_NARROW_K];                                                  \
    const V one = SET1((T)1);                                                          \
    for (Py_ssize_t v0 = 0; v0 < Hj; v0 += L) {                                        \
        Py_ssize_t left = Hj - v0;                                                     \
        const M mk = left >= L ? (M)~(M)0 : (M)(((M)1 << left) - 1);                   \
        for (Py_ssize_t c = 0; c < k; c++) {                                           \
            w[c] = LOADZ(mk, W2t + c * Hj + v0);                                       \
            g[c] = ZERO();                                                             \
        }                                                                              \
        V cs = ZERO();                                                                 \
        for (Py_ssize_t r = 0; r < m; r++) {                                           \
            const T* dzr = dz + r * k;                                                 \
            const V hv = LOADZ(mk, h + r * Hj + v0);                                   \
            V dh = ZERO();                                                             \
            for (Py_ssize_t c = 0; c < k; c++) {                                       \
                const V a = SET1(dzr[c]);                                              \
                dh = FMA(a, w[c], dh);                                                 \
                g[c] = FMA(a, hv, g[c]);                                               \
            }                                                                          \
            V dv;                                                                      \
            if (act == PB_NARROW_TANH) dv = MUL(dh, FNMA(hv, hv, one));                \
            else if (act == PB_NARROW_LOGISTIC) dv = MUL(MUL(dh, hv), SUB(one, hv));   \
            else if (act == PB_NARROW_RELU) dv = MASKZ_MOV(CMPGT_MASK(hv, ZERO()), dh); \
            else dv = dh;                                                              \
            MSTORE(D + r * Hj + v0, mk, dv);                                           \
            cs = ADD(cs, dv);                                                          \
        }                                                                              \
        for (Py_ssize_t c = 0; c < k; c++)                                             \
            MSTORE(G2t + c * Hj + v0, mk, g[c]);                                       \
        MSTORE(db + v0, mk, cs);                                                       \
    }                                                                                  \
}                                                                                      \
/* k a constant in each case: the loops over k unroll, and the 2 k vectors of a tile  \
 * stay in registers (with k known only at run time they lived on the stack) */       \
PB_AVX512 static void pb_narrow_back##SUF(const T* h, const T* dz, const T* W2t,        \
        Py_ssize_t m, Py_ssize_t Hj, Py_ssize_t k, int act, T* D, T* G2t, T* db)       \
{                                                                                      \
    switch (k) {                                                                       \
    case 1: pb_narrow_body##SUF(h, dz, W2t, m, Hj, 1, act, D, G2t, db); break;         \
    case 2: pb_narrow_body##SUF(h, dz, W2t, m, Hj, 2, act, D, G2t, db); break;         \
    case 3: pb_narrow_body##SUF(h, dz, W2t, m, Hj, 3, act, D, G2t, db); break;         \
    case 4: pb_narrow_body##SUF(h, dz, W2t, m, Hj, 4, act, D, G2t, db); break;         \
    case 5: pb_narrow_body##SUF(h, dz, W2t, m, Hj, 5, act, D, G2t, db); break;         \
    case 6: pb_narrow_body##SUF(h, dz, W2t, m, Hj, 6, act, D, G2t, db); break;         \
    case 7: pb_narrow_body##SUF(h, dz, W2t, m, Hj, 7, act, D, G2t, db); break;         \
    case 8: pb_narrow_body##SUF(h, dz, W2t, m, Hj, 8, act, D, G2t, db); break;         \
    case 9: pb_narrow_body##SUF(h, dz, W2t, m, Hj, 9, act, D, G2t, db); break;         \
    case 10: pb_narrow_body##SUF(h, dz, W2t, m, Hj, 10, act, D, G2t, db); break;       \
    case 11: pb_narrow_body##SUF(h, dz, W2t, m, Hj, 11, act, D, G2t, db); break;       \
    case 12: pb_narrow_body##SUF(h, dz, W2t, m, Hj, 12, act, D, G2t, db); break;       \
    default: break;   /* no other k reaches here (the callers check) */               \
    }                                                                                  \
}

#define PB_CMPGT_PS(a, b) _mm512_cmp_ps_mask((a), (b), _CMP_GT_OQ)
#define PB_CMPGT_PD(a, b) _mm512_cmp_pd_mask((a), (b), _CMP_GT_OQ)
PB_DEFINE_NARROW(float, __m512, __mmask16, 16, f, _mm512_setzero_ps, PB_LOADZ_PS,
                 _mm512_set1_ps, _mm512_fmadd_ps, _mm512_fnmadd_ps, _mm512_mul_ps,
                 _mm512_sub_ps, _mm512_add_ps, PB_MSTORE_PS, PB_CMPGT_PS,
                 _mm512_maskz_mov_ps)
PB_DEFINE_NARROW(double, __m512d, __mmask8, 8, , _mm512_setzero_pd, PB_LOADZ_PD,
                 _mm512_set1_pd, _mm512_fmadd_pd, _mm512_fnmadd_pd, _mm512_mul_pd,
                 _mm512_sub_pd, _mm512_add_pd, PB_MSTORE_PD, PB_CMPGT_PD,
                 _mm512_maskz_mov_pd)

#else  /* no AVX-512 path on this compiler or CPU family: never called */

static int pb_rowgemm_available(void) { return 0; }
static void pb_xwf(const float* X, Py_ssize_t d, const Py_ssize_t* rows, Py_ssize_t m,
                   const float* W, Py_ssize_t n, float* Z) {}
static void pb_xw(const double* X, Py_ssize_t d, const Py_ssize_t* rows, Py_ssize_t m,
                  const double* W, Py_ssize_t n, double* Z) {}
static void pb_xtdzf(const float* X, Py_ssize_t d, const Py_ssize_t* rows, Py_ssize_t m,
                     const float* dZ, Py_ssize_t n, float* G, const float** rp) {}
static void pb_xtdz(const double* X, Py_ssize_t d, const Py_ssize_t* rows, Py_ssize_t m,
                    const double* dZ, Py_ssize_t n, double* G, const double** rp) {}

static void pb_narrow_backf(const float* h, const float* dz, const float* W2t,
                            Py_ssize_t m, Py_ssize_t Hj, Py_ssize_t k, int act, float* D,
                            float* G2t, float* db) {}
static void pb_narrow_back(const double* h, const double* dz, const double* W2t,
                           Py_ssize_t m, Py_ssize_t Hj, Py_ssize_t k, int act, double* D,
                           double* G2t, double* db) {}

#endif

#endif
