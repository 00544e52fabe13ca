# cython: language_level=3
"""Per-batch arithmetic of a multilayer perceptron: forward, loss, backward, update.

Design
------
* Math (row-major, one row per sample; the seeds write the same with column vectors)::

      z_l = h_{l-1} @ W_l + b_l        h_l = f(z_l)          h_0 = x
      p   = g(z_L)                     (softmax, logistic, identity or exp)
      dz_L = (p - y) * s               (s: sample weight; the canonical link makes it exact)
      dW_l = (h_{l-1}^T @ dz_l + alpha W_l) / S      db_l = colsum(dz_l) / S
      dh_{l-1} = dz_l @ W_l^T          dz_{l-1} = dh_{l-1} ⊙ f'(z_{l-1})

  with ``S`` the batch size, or the sum of the batch's sample weights.
* Buffers, all owned by the Python layer and allocated once per fit:
  ``params`` / ``grads`` are one flat vector each, laid out as
  ``[W_1 .. W_L, b_1 .. b_L]`` (``coefs_`` and ``intercepts_`` are views of it);
  ``acts`` and ``deltas`` hold, for each layer ``l >= 1``, a ``(rows, units[l])``
  block at ``act_off[l-1]``; ``xbuf`` holds the gathered input rows of a dense batch.
* A sparse ``X`` is CSR with int32 indices; its rows are never gathered, the first
  layer reads them in place.
* Kernels allocate nothing per batch (an epoch takes a few scratch values).
  ``run_epoch`` releases the GIL for a whole epoch and takes it back between batches
  only to check for Ctrl-C.
* Threads: an epoch cuts each batch into blocks, of rows (any net) or of the first
  hidden layer's units; OpenMP threads share the blocks, and the blocks alone fix the
  arithmetic (see _epoch_share and _unit_share).
"""

cimport cython
from cython cimport floating
from libc.math cimport sqrt, pow, log, isfinite
from libc.string cimport memcpy, memset
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

from _blas cimport gemm, axpy, sum_of_squares
from _activations cimport (activate, softmax_rows, multiply_derivative,
                           multiply_derivative_colsum, needs_z,
                           fill_rows, bias_activate, colsum_add, colsum_add_ld,
                           add_inplace,
                           IDENTITY, LOGISTIC, TANH, RELU, EXP, SOFTMAX)

ctypedef Py_ssize_t intp

from cython.parallel cimport parallel
from cpython.mem cimport PyMem_Malloc, PyMem_Free

import numpy as np

cdef extern from "Python.h":
    int PyErr_CheckSignals() nogil
    void* PyErr_Occurred()

cdef extern from "_omp.h" nogil:
    int PB_HAVE_OPENMP
    void pb_barrier()
    int pb_clock_on
    double pb_clock[64][4][3]
    void pb_clock_start()
    void pb_timed_barrier(int site)
    int pb_thread_num()
    int pb_num_threads()
    int pb_max_threads()
    int pb_load_int(const int* p)
    void pb_store_int(int* p, int v)

HAVE_OPENMP = bool(PB_HAVE_OPENMP)


def max_threads():
    """Threads a parallel region started from this thread would get (OpenMP's
    ``omp_get_max_threads``: OMP_NUM_THREADS and threadpoolctl limits count); 1 when
    built without OpenMP."""
    return pb_max_threads()

cdef extern from *:
    """
    #ifndef PB_BUILD_FLAGS
    #define PB_BUILD_FLAGS "unknown"
    #endif
    """
    const char* PB_BUILD_FLAGS

BUILD_FLAGS = PB_BUILD_FLAGS.decode()

cdef extern from "_loops.h" nogil:
    void pb_sgd_step(double* p, const double* g, const double* g2, double* vel,
                     Py_ssize_t n, double alpha, double S, double lr, double mu, int nesterov,
                     double* sq)
    void pb_sgd_stepf(float* p, const float* g, const float* g2, float* vel, Py_ssize_t n,
                      float alpha, float S, float lr, float mu, int nesterov, double* sq)
    void pb_adam_step(double* p, const double* g, const double* g2, double* m, double* v,
                      Py_ssize_t n, double alpha, double S, double lr_t, double b1,
                      double b2, double eps, double* sq)
    void pb_adam_stepf(float* p, const float* g, const float* g2, float* m, float* v,
                       Py_ssize_t n, float alpha, float S, float lr_t, float b1, float b2,
                       float eps, double* sq)
    int pb_copy_finite(const double* src, double* dst, Py_ssize_t n)
    int pb_copy_finitef(const float* src, float* dst, Py_ssize_t n)

cdef extern from "_rowgemm.h" nogil:
    int pb_rowgemm_available()
    void pb_xwf(const float* X, Py_ssize_t d, const Py_ssize_t* rows, Py_ssize_t m,
                const float* W, Py_ssize_t n, float* Z)
    void pb_xtdzf(const float* X, Py_ssize_t d, const Py_ssize_t* rows, Py_ssize_t m,
                  const float* dZ, Py_ssize_t n, float* G, const float** rp)
    void pb_xw(const double* X, Py_ssize_t d, const Py_ssize_t* rows, Py_ssize_t m,
               const double* W, Py_ssize_t n, double* Z)
    void pb_xtdz(const double* X, Py_ssize_t d, const Py_ssize_t* rows, Py_ssize_t m,
                 const double* dZ, Py_ssize_t n, double* G, const double** rp)
    int PB_NARROW_K, PB_NARROW_IDENTITY, PB_NARROW_TANH, PB_NARROW_LOGISTIC, PB_NARROW_RELU
    void pb_narrow_backf(const float* h, const float* dz, const float* W2t, Py_ssize_t m,
                         Py_ssize_t Hj, Py_ssize_t k, int act, float* D, float* G2t,
                         float* db)
    void pb_narrow_back(const double* h, const double* dz, const double* W2t,
                        Py_ssize_t m, Py_ssize_t Hj, Py_ssize_t k, int act, double* D,
                        double* G2t, double* db)

# float32 fits cut by units make the first layer's two products with _rowgemm.h's
# loops, which read the batch's rows where they lie in X (no gather, no packed copies
# in BLAS), where the CPU has AVX-512, and the second layer's three when it has
# ROW_PRODUCTS_MIN_K units or more; float32 predict makes all its products with them.
# row_products() turns them off and on
cdef bint ROW_PRODUCTS = pb_rowgemm_available() != 0
cdef intp ROW_PRODUCTS_MIN_K = 32
# whether the last fit cut by units made them (for the tests)
cdef bint LAST_SPLIT_ROW_PRODUCTS = False
cdef bint LAST_SPLIT_NARROW = False


def row_products(enable=None):
    """Whether float32 fits cut by hidden units (and the predicts of dense X) make
    their products with the loops that read X's rows in place (csrc/_rowgemm.h) rather
    than gathering the batch and calling BLAS; ``enable`` (True or False) sets it
    first. They can be on only where the CPU runs AVX-512."""
    global ROW_PRODUCTS
    if enable is not None:
        ROW_PRODUCTS = bool(enable) and pb_rowgemm_available() != 0
    return bool(ROW_PRODUCTS)


# fits cut by units run the backward through a narrow second layer (PB_NARROW_K
# outputs or fewer, and an activation whose derivative comes from h) with
# pb_narrow_back, where the CPU has AVX-512; narrow_backward() turns it off and on
cdef bint NARROW_BACK = pb_rowgemm_available() != 0


def narrow_backward(enable=None):
    """Whether fits cut by hidden units run the backward through a second layer of at
    most 12 outputs (a classifier's classes) in one fused pass (csrc/_rowgemm.h's
    pb_narrow_back) rather than two BLAS products and a loop; ``enable`` sets it
    first. It can be on only where the CPU runs AVX-512."""
    global NARROW_BACK
    if enable is not None:
        NARROW_BACK = bool(enable) and pb_rowgemm_available() != 0
    return bool(NARROW_BACK)


cdef inline int narrow_code(int act) noexcept nogil:
    """pb_narrow_back's code for a hidden activation, -1 where it has none."""
    if act == TANH:
        return PB_NARROW_TANH
    if act == LOGISTIC:
        return PB_NARROW_LOGISTIC
    if act == RELU:
        return PB_NARROW_RELU
    if act == IDENTITY:
        return PB_NARROW_IDENTITY
    return -1


def _narrow_back(const floating[:, ::1] h, const floating[:, ::1] dz,
                 const floating[:, ::1] W2, floating[:, ::1] D, floating[:, ::1] G2,
                 floating[::1] db, int act):
    """Tests' entry to pb_narrow_back: G2 = h.T @ dz, D = (dz @ W2.T) * f'(h) and db =
    D.sum(axis=0) for hidden activation code ``act`` (identity, logistic, tanh or relu)."""
    cdef intp m = h.shape[0], Hj = h.shape[1], k = dz.shape[1]
    cdef int code = narrow_code(act)
    if not pb_rowgemm_available():
        raise RuntimeError("this CPU does not run AVX-512")
    if code < 0:
        raise ValueError("no narrow backward for this activation")
    if (dz.shape[0] != m or W2.shape[0] != Hj or W2.shape[1] != k or D.shape[0] != m
            or D.shape[1] != Hj or G2.shape[0] != Hj or G2.shape[1] != k
            or db.shape[0] != Hj):
        raise ValueError("shapes do not match: h (m, H), dz (m, k), W2 and G2 (H, k), "
                         "D (m, H), db (H,)")
    if not (1 <= k <= PB_NARROW_K and m >= 1 and Hj >= 1):
        raise ValueError("k must be 1 to %d, m and H at least 1" % PB_NARROW_K)
    # W2 and the gradient go through their transposes, as in _unit_share
    scratch = np.empty(2 * k * Hj, dtype=np.float32 if floating is float else np.float64)
    cdef floating[::1] t = scratch
    transpose(&W2[0, 0], &t[0], Hj, k)
    if floating is float:
        pb_narrow_backf(&h[0, 0], &dz[0, 0], &t[0], m, Hj, k, code, &D[0, 0],
                        &t[k * Hj], &db[0])
    else:
        pb_narrow_back(&h[0, 0], &dz[0, 0], &t[0], m, Hj, k, code, &D[0, 0],
                       &t[k * Hj], &db[0])
    transpose(&t[k * Hj], &G2[0, 0], k, Hj)


def barrier_clock(enable=None):
    """Whether the barriers of fits on several threads are timed (csrc/_omp.h);
    ``enable`` (True or False) sets it first, and clears the times. For bench/
    breakdown.py --barriers; off, a barrier costs one test more."""
    global pb_clock_on
    if enable is not None:
        memset(pb_clock, 0, sizeof(pb_clock))
        pb_clock_on = 1 if enable else 0
    return pb_clock_on != 0


def barrier_times():
    """The barrier clock's sums since it was switched, as nested lists: 64 threads x 4
    sites (0 an epoch's start, 1 and 2 a batch's first and second barrier, 3 an
    epoch's end) x [seconds worked since the thread's last barrier, seconds waited
    in this one, barriers passed]. Threads past 64 are not timed."""
    return [[[pb_clock[t][s][k] for k in range(3)] for s in range(4)] for t in range(64)]


def _last_split_used_row_products():
    """Whether the last epochs cut by units made the first layer's products from X's
    rows in place."""
    return bool(LAST_SPLIT_ROW_PRODUCTS)


def _last_split_used_narrow():
    """Whether the last epochs cut by units ran the backward through the second layer
    with pb_narrow_back."""
    return bool(LAST_SPLIT_NARROW)


def _row_products(const floating[:, ::1] X, const intp[::1] rows,
                  const floating[:, ::1] W, floating[:, ::1] Z,
                  const floating[:, ::1] dZ, floating[:, ::1] G):
    """Tests' entry to _rowgemm.h: Z = X[rows] @ W and G = X[rows].T @ dZ (X's rows
    in order when rows is None), made by pb_xw / pb_xtdz."""
    cdef intp n_x = X.shape[0], d = X.shape[1], n = W.shape[1], i
    cdef intp m = n_x if rows is None else rows.shape[0]
    cdef const intp* at = NULL
    cdef const floating** rp
    if not pb_rowgemm_available():
        raise RuntimeError("this CPU does not run AVX-512")
    if (W.shape[0] != d or Z.shape[0] != m or Z.shape[1] != n or dZ.shape[0] != m
            or dZ.shape[1] != n or G.shape[0] != d or G.shape[1] != n):
        raise ValueError("shapes do not match: X (n, d), W (d, k), Z and dZ (m, k), "
                         "G (d, k)")
    if rows is not None:
        for i in range(m):
            if not 0 <= rows[i] < n_x:
                raise ValueError(f"row {rows[i]} is outside X's {n_x} rows")
    if m == 0 or n == 0:
        raise ValueError("empty product")
    if rows is not None:
        at = &rows[0]
    # with d = 0 (no inputs: Z is zeros) X, W and G hold nothing, and are not read
    cdef const floating* xp = &X[0, 0] if d > 0 else NULL
    cdef const floating* wp = &W[0, 0] if d > 0 else NULL
    cdef floating* gp = &G[0, 0] if d > 0 else NULL
    rp = <const floating**> PyMem_Malloc(m * sizeof(floating*))
    if rp == NULL:
        raise MemoryError()
    if floating is float:
        pb_xwf(xp, d, at, m, wp, n, &Z[0, 0])
        pb_xtdzf(xp, d, at, m, &dZ[0, 0], n, gp, rp)
    else:
        pb_xw(xp, d, at, m, wp, n, &Z[0, 0])
        pb_xtdz(xp, d, at, m, &dZ[0, 0], n, gp, rp)
    PyMem_Free(rp)


cdef extern from "_mt19937.h" nogil:
    ctypedef struct pb_mt:
        unsigned int* key
        intp* pos
    void pb_shuffle(pb_mt* s, intp* x, intp n)

cdef enum:
    SQUARED_ERROR = 0
    POISSON = 1
    LOG_LOSS = 2       # softmax output, integer labels
    BINARY_LOG_LOSS = 3  # logistic output, 0/1 indicator targets

    SGD = 0
    ADAM = 1


cdef struct Net:
    intp n_layers          # number of weight layers L
    const intp* units      # L + 1 layer widths, units[0] = n_features
    const intp* coef_off   # offset of W_l (units[l-1], units[l]) in params, l = 1..L
    const intp* inter_off  # offset of b_l in params
    const intp* act_off    # offset of layer l's (rows, units[l]) block in acts / deltas
    const int* hidden      # activation code of each hidden layer (L - 1)
    const double* keep     # dropout keep-probability of each hidden layer, or NULL
    unsigned long long* rng  # dropout's random stream (splitmix64 state)
    int output             # activation code of the output layer
    int loss               # loss code
    double alpha           # L2 strength
    bint sparse            # X is CSR (data, indices, indptr)
    const int* indices
    const int* indptr


cdef struct EpochLoop:
    # run_epoch's epochs, run inside one parallel region: before each, thread 0
    # shuffles ``rows`` (when ``mt`` is not NULL); after each, it records the epoch's
    # total loss and applies the training-loss stopping rule (when ``state`` is not NULL)
    intp n_epochs
    intp* rows
    intp n_rows
    pb_mt* mt
    double tol
    double patience    # stop once the epochs without improvement exceed this
    double* totals     # per epoch: the sum over batches of batch loss x batch rows
    double* state      # best loss, epochs without improvement, epochs done
    int leave          # thread 0 says: no more epochs
    double lr          # the learning rate of the epoch that runs (Adam: η before its
                       # bias correction)
    bint invscaling    # SGD's invscaling schedule: after each epoch, thread 0 sets
    double lr_init     # lr = lr_init / (t + 1)^power_t, t the samples seen so far
    double power_t
    intp t
    bint adaptive      # SGD's adaptive schedule: where the stopping rule would end the
                       # epochs, lr /= 5 instead (and the count restarts), until lr <= 1e-6


cdef inline double seconds() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + 1e-9 * ts.tv_nsec


# Ctrl-C is looked for when this long has passed since the last look (and always
# between batches no faster than that): taking the GIL back after every small batch
# costs more than the batch
cdef double SIGNAL_INTERVAL = 0.005

# with block gradients (see _epoch_share), slices of the flat parameter vector per
# block of a batch, dealt round-robin to the threads for the summing and the step: the
# gradient a thread reads from the other core's cache is hotter in some parts of the
# vector than in others (the layer computed last), and 2 slices (one per thread, on 2
# cores) left one thread stepping for 41 ms of an mnist-shape epoch while the other
# took 23 ms; 16 slices: 26-34 ms each
cdef int SLICES_PER_BLOCK = 8

# a sparse first layer reads (and, backward, writes) one row of W_1 per nonzero, rows
# that lie anywhere in W_1: their cache lines are asked for this many nonzeros ahead
# (on a 20000 x 128 float32 W_1, 15 % off the time of the row products)
cdef intp PREFETCH_AHEAD = 4

cdef extern from *:
    """
    static inline void pb_prefetch_span(const void* p, Py_ssize_t bytes, int write)
    {
    #if defined(__GNUC__) || defined(__clang__)
        const char* c = (const char*)p;
        for (Py_ssize_t o = 0; o < bytes; o += 64) {
            if (write) __builtin_prefetch(c + o, 1);
            else __builtin_prefetch(c + o, 0);
        }
    #else
        (void)p; (void)bytes; (void)write;
    #endif
    }
    """
    void prefetch_span "pb_prefetch_span"(const void* p, Py_ssize_t nbytes, int write) noexcept nogil


cdef inline void prefetch_ahead(const floating* M, const Net* net, intp p, intp end,
                                intp cols, int write) noexcept nogil:
    """Ask for the row of M (``cols`` wide) that nonzero p + PREFETCH_AHEAD of a CSR
    row ending at ``end`` picks, if the row has it."""
    if p + PREFETCH_AHEAD < end:
        prefetch_span(M + net.indices[p + PREFETCH_AHEAD] * cols, cols * sizeof(floating),
                      write)


cdef int signal_due(double* last) noexcept nogil:
    """1 when a signal handler raised (the exception stays set), else 0; looks only
    when SIGNAL_INTERVAL has passed since ``last``. In a parallel region, the
    exception is raised once the region has ended."""
    cdef double now = seconds()
    if now - last[0] < SIGNAL_INTERVAL:
        return 0
    last[0] = now
    with gil:
        return PyErr_CheckSignals() != 0


cdef int check_signals(double* last) except -1 nogil:
    """Raise KeyboardInterrupt (or whatever a signal handler raises) if one is due."""
    return -1 if signal_due(last) else 0


cdef struct Targets:
    const intp* rows       # rows of X / y / sample_weight in this batch; NULL: contiguous
    intp start             # first row when rows is NULL, else first position in rows
    const intp* labels     # class codes (LOG_LOSS) or NULL
    int* bad               # not NULL: gathered rows are checked as they are copied,
                           # and *bad set to 1 when one holds NaN or infinity


cdef Net make_net(const intp[::1] units, const intp[::1] coef_off,
                  const intp[::1] inter_off, const intp[::1] act_off,
                  const int[::1] hidden, int output, int loss, double alpha,
                  const int[::1] indices, const int[::1] indptr) except *:
    cdef Net net
    if hidden.shape[0] != units.shape[0] - 2 or coef_off.shape[0] != units.shape[0] - 1 \
            or inter_off.shape[0] != units.shape[0] - 1 or act_off.shape[0] != units.shape[0] - 1:
        raise ValueError("layer tables of inconsistent lengths")
    net.n_layers = units.shape[0] - 1
    net.units = &units[0]
    net.coef_off = &coef_off[0]
    net.inter_off = &inter_off[0]
    net.act_off = &act_off[0]
    net.hidden = &hidden[0] if hidden.shape[0] > 0 else NULL
    net.keep = NULL
    net.rng = NULL
    net.output = output
    net.loss = loss
    net.alpha = alpha
    net.sparse = indptr.shape[0] > 0
    net.indices = &indices[0] if indices.shape[0] > 0 else NULL
    net.indptr = &indptr[0] if indptr.shape[0] > 0 else NULL
    return net


cdef int check_sizes(const Net* net, intp n_params, intp x_len, intp n_rows) except -1:
    """The buffers the Python layer hands over are as long as the layer tables say:
    every parameter, and for dense X, n_rows rows of units[0] values (the kernels run
    without bounds checks)."""
    cdef intp L = net.n_layers, l
    for l in range(L):
        if (net.coef_off[l] < 0 or net.inter_off[l] < 0
                or net.coef_off[l] + net.units[l] * net.units[l + 1] > n_params
                or net.inter_off[l] + net.units[l + 1] > n_params):
            raise ValueError("params holds fewer values than the layers have parameters")
    if not net.sparse and x_len < n_rows * net.units[0]:
        raise ValueError("X holds fewer than n_rows rows of units[0] values")
    return 0


cdef int check_rows(const Net* net, const intp[::1] rows, intp n_rows, intp x_len,
                    const int[::1] indptr, const floating[::1] Y, const intp[::1] labels,
                    const floating[::1] sw) except -1:
    """The rows an epoch reads (``rows``, or 0..n_rows-1 when it is empty) all lie in X,
    and in the targets and sample weights that are given; a sparse X's row pointers
    do not go down and stay inside its values."""
    cdef intp n = x_len // net.units[0] if not net.sparse and net.units[0] > 0 else 0
    cdef intp k = net.units[net.n_layers], i, r
    if net.sparse:
        n = indptr.shape[0] - 1
        for i in range(n):
            if indptr[i + 1] < indptr[i]:
                raise ValueError("indptr goes down")
        if n >= 0 and (indptr[0] < 0 or indptr[n] > x_len):
            raise ValueError("indptr points outside X's values")
    if Y.shape[0] > 0:
        n = min(n, Y.shape[0] // k)
    if labels.shape[0] > 0:
        n = min(n, labels.shape[0])
    if sw.shape[0] > 0:
        n = min(n, sw.shape[0])
    if rows.shape[0] == 0:
        if n_rows > n:
            raise ValueError("n_rows is more than the rows of X, y or sample_weight")
        return 0
    if rows.shape[0] < n_rows:
        raise ValueError("rows holds fewer than n_rows rows")
    for i in range(n_rows):
        r = rows[i]
        if r < 0 or r >= n:
            raise ValueError("rows holds a row outside X, y or sample_weight")
    return 0


cdef inline intp row_of(const Targets* tg, intp i) noexcept nogil:
    """Row of X (and of y, sample_weight) holding the batch's i-th sample."""
    if tg.rows == NULL:
        return tg.start + i
    return tg.rows[tg.start + i]


cdef inline double batch_weight(const floating* sw, const Targets* tg, intp m) noexcept nogil:
    """S of a batch: its number of rows, or the sum of their sample weights."""
    cdef double total = 0
    cdef intp i
    if sw == NULL:
        return m
    for i in range(m):
        total += sw[row_of(tg, i)]
    return total


cdef inline double uniform(unsigned long long* state) noexcept nogil:
    """Next draw in [0, 1) of splitmix64 (the NumPy reference draws the same stream)."""
    cdef unsigned long long z
    state[0] += 0x9E3779B97F4A7C15ULL
    z = state[0]
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    z = z ^ (z >> 31)
    return (z >> 11) * (1.0 / 9007199254740992.0)


cdef inline void dropout(floating* h, floating* mask, intp n, double keep,
                         unsigned long long* rng) noexcept nogil:
    """Inverted dropout: each unit kept with probability ``keep`` and scaled by 1/keep,
    so that prediction needs no change; the scale (0 or 1/keep) goes to ``mask``."""
    cdef intp i
    cdef floating scale = <floating> (1.0 / keep)
    for i in range(n):
        mask[i] = scale if uniform(rng) < keep else 0
        h[i] = h[i] * mask[i]


# ---------------------------------------------------------------------------
# forward


@cython.boundscheck(False)
@cython.wraparound(False)
cdef void forward(const Net* net, const floating* X, const Targets* tg, intp m,
                  const floating* params, floating* acts, floating* xbuf,
                  floating* out, floating* zs, floating* masks,
                  bint row_products=False) noexcept nogil:
    """Fill every layer's block of ``acts`` for m rows; the output layer goes to
    ``out`` (pass the last block of ``acts`` to keep it there). When ``zs`` is not
    NULL, each layer's z (before its activation) is kept there, laid out as ``acts``.
    When ``masks`` is not NULL (training with dropout), hidden layers drop units.
    With ``row_products`` (where pb_rowgemm_available()), the dense products are
    _rowgemm.h's, which call no BLAS and read X's rows in place, without the gather's
    check of them (only predict asks, and scans its chunks itself)."""
    cdef intp L = net.n_layers, d = net.units[0]
    cdef intp l, i, p, r, end, fan_in, fan_out
    cdef const floating* h_prev
    cdef const intp* rows_at
    cdef const floating* W
    cdef const floating* b
    cdef floating* z
    cdef floating* z_row

    for l in range(L):
        fan_in = net.units[l]
        fan_out = net.units[l + 1]
        W = params + net.coef_off[l]
        b = params + net.inter_off[l]
        z = out if l == L - 1 else acts + net.act_off[l]
        if l == 0 and net.sparse:
            # Z = X[rows] @ W_1, reading each CSR row where it lies; the rows of W_1
            # that the row's nonzeros pick lie anywhere: ask for them a few ahead
            memset(z, 0, m * fan_out * sizeof(floating))
            for i in range(m):
                r = row_of(tg, i)
                z_row = z + i * fan_out
                end = net.indptr[r + 1]
                for p in range(net.indptr[r], end):
                    prefetch_ahead(W, net, p, end, fan_out, 0)
                    axpy(<int> fan_out, X[p], W + net.indices[p] * fan_out, z_row)
        else:
            # Z = H_prev @ W; with the row products a shuffled batch's rows are read
            # where they lie, without gather_share's check of them (tg.bad): the
            # caller must check them
            rows_at = NULL
            if l > 0:
                h_prev = acts + net.act_off[l - 1]
            elif tg.rows == NULL:
                h_prev = X + tg.start * d
            elif row_products:
                h_prev = X
                rows_at = tg.rows + tg.start
            else:
                gather_share(X, tg.rows, tg.start, m, d, xbuf, 0, 1, tg.bad)
                h_prev = xbuf
            rows_times(row_products, h_prev, rows_at, h_prev, m, fan_in, W, fan_out, z)
        # the bias, added in the activation's pass (z kept first when asked)
        bias_activate(net.hidden[l] if l < L - 1 else net.output, z, b, m, fan_out,
                      zs + net.act_off[l] if zs != NULL else NULL)
        if l < L - 1 and masks != NULL and net.keep[l] < 1:
            dropout(z, masks + net.act_off[l], m * fan_out, net.keep[l], net.rng)


# ---------------------------------------------------------------------------
# loss and dz at the output


cdef inline double clip_log(double p, double eps) noexcept nogil:
    """log(p) with p clipped to [eps, 1 - eps], as the reported log-loss does."""
    if p < eps:
        p = eps
    elif p > 1 - eps:
        p = 1 - eps
    return log(p)


@cython.boundscheck(False)
@cython.wraparound(False)
@cython.cdivision(True)
cdef double output_loss(const Net* net, const Targets* tg, intp m,
                        const floating* P, const floating* Y, const floating* sw,
                        floating* dz, bint with_loss=True) noexcept nogil:
    """Sum over the batch of (sample weight × row loss); writes dz = (p - y) · s.
    Without ``with_loss``, dz alone (returns 0). dz may be P itself (dz in place).

    Row losses: half squared error summed over outputs; half Poisson deviance
    ``y log(y/p) - y + p``; ``-log p_y`` for softmax; binary cross-entropy summed over
    outputs for logistic. Probabilities are clipped to [eps, 1-eps] inside the log.
    """
    cdef intp k = net.units[net.n_layers]
    cdef intp i, j, r, c
    cdef double total = 0, row_loss, s, p, y, diff
    cdef double eps = 1.1920928955078125e-07 if floating is float else 2.220446049250313e-16
    cdef const floating* p_row
    cdef const floating* y_row
    cdef floating* dz_row

    for i in range(m):
        r = row_of(tg, i)
        s = sw[r] if sw != NULL else 1.0
        p_row = P + i * k
        dz_row = dz + i * k
        row_loss = 0
        if net.loss == LOG_LOSS:
            c = tg.labels[r]
            if with_loss:
                row_loss = -clip_log(p_row[c], eps)
            if dz_row != p_row:
                for j in range(k):
                    dz_row[j] = p_row[j]
            dz_row[c] -= 1
        elif not with_loss:
            y_row = Y + r * k
            for j in range(k):
                dz_row[j] = p_row[j] - y_row[j]
        else:
            y_row = Y + r * k
            for j in range(k):
                p = p_row[j]
                y = y_row[j]
                dz_row[j] = p_row[j] - y_row[j]
                if net.loss == SQUARED_ERROR:
                    diff = y - p
                    row_loss += diff * diff
                elif net.loss == POISSON:
                    if y > 0:
                        row_loss += y * log(y / p)
                    row_loss += p - y
                else:
                    if y > 0:
                        row_loss -= y * clip_log(p, eps)
                    if y < 1:
                        row_loss -= (1 - y) * clip_log(1 - p, eps)
            if net.loss == SQUARED_ERROR:
                row_loss *= 0.5
        if sw != NULL:
            for j in range(k):
                dz_row[j] = dz_row[j] * <floating> s
        total += s * row_loss
    return total


# ---------------------------------------------------------------------------
# backward


cdef inline const floating* layer_input(const Net* net, const floating* X,
                                        const Targets* tg, const floating* acts,
                                        const floating* xbuf, intp l) noexcept nogil:
    """H_{l-1}, what layer l of a batch multiplies: the previous layer's activations,
    or for l = 0 the batch's rows of dense X (where they lie when the rows are not
    shuffled, else as forward gathered them into ``xbuf``)."""
    if l > 0:
        return acts + net.act_off[l - 1]
    if tg.rows == NULL:
        return X + tg.start * net.units[0]
    return xbuf


@cython.boundscheck(False)
@cython.wraparound(False)
cdef void backward(const Net* net, const floating* X, const Targets* tg, intp m,
                   const floating* params, floating* acts, floating* deltas,
                   const floating* xbuf, floating* grads, bint accumulate,
                   const floating* zs, const floating* masks, floating* dhs) noexcept nogil:
    """Unscaled sums ``h_{l-1}^T dz_l`` and ``colsum(dz_l)`` into grads (added to what
    is there when ``accumulate``); dz_L must already be in its deltas block. ``zs``
    holds z where an activation's derivative needs it; ``masks`` the dropout scales
    of a training batch (or NULL). When ``dhs`` is not NULL, each hidden layer's dh
    (before ⊙ f') is kept there. With ``grads`` NULL, only the deltas: dz of every
    layer, for block_step to turn into the weights' gradients."""
    cdef intp L = net.n_layers, d = net.units[0]
    cdef intp l, i, p, r, end, fan_in, fan_out, n
    cdef floating beta = 1.0 if accumulate else 0.0
    cdef floating keep
    cdef floating* h
    cdef floating* dh
    cdef const floating* mask
    cdef const floating* h_prev
    cdef const floating* dz
    cdef const floating* dz_row
    cdef floating* dW
    cdef floating* db

    for l in range(L - 1, -1, -1):
        fan_in = net.units[l]
        fan_out = net.units[l + 1]
        dz = deltas + net.act_off[l]
        if grads == NULL:
            pass    # the deltas only
        elif l == 0 and net.sparse:
            # dW_1 (+)= X[rows]^T @ dz_1, scattered from the CSR rows
            dW = grads + net.coef_off[l]
            if not accumulate:
                memset(dW, 0, fan_in * fan_out * sizeof(floating))
            for i in range(m):
                r = row_of(tg, i)
                dz_row = dz + i * fan_out
                end = net.indptr[r + 1]
                for p in range(net.indptr[r], end):
                    prefetch_ahead(dW, net, p, end, fan_out, 1)
                    axpy(<int> fan_out, X[p], dz_row, dW + net.indices[p] * fan_out)
        else:
            h_prev = layer_input(net, X, tg, acts, xbuf, l)
            # dW (+)= H_prev^T @ dz
            dW = grads + net.coef_off[l]
            gemm(True, False, <int> fan_in, <int> fan_out, <int> m, <floating> 1.0,
                 h_prev, <int> fan_in, dz, <int> fan_out, beta, dW, <int> fan_out)
        if grads != NULL:
            db = grads + net.inter_off[l]
            if not accumulate:
                memset(db, 0, fan_out * sizeof(floating))
            colsum_add(dz, m, fan_out, db)
        if l > 0:
            # dh_{l-1} = dz_l @ W_l^T, written over dz_{l-1}'s block, then ⊙ f'
            gemm(False, True, <int> m, <int> fan_in, <int> fan_out, <floating> 1.0,
                 dz, <int> fan_out, params + net.coef_off[l], <int> fan_out,
                 <floating> 0.0, deltas + net.act_off[l - 1], <int> fan_in)
            n = m * fan_in
            h = acts + net.act_off[l - 1]
            dh = deltas + net.act_off[l - 1]
            if dhs != NULL:
                memcpy(dhs + net.act_off[l - 1], dh, n * sizeof(floating))
            if masks != NULL and net.keep[l - 1] < 1:
                # through the dropout: dh ⊙ mask; h (no longer needed for dW) back to
                # f(z) on the kept units, for the derivative
                mask = masks + net.act_off[l - 1]
                keep = <floating> net.keep[l - 1]
                for i in range(n):
                    dh[i] = dh[i] * mask[i]
                    h[i] = h[i] * keep
            multiply_derivative(net.hidden[l - 1], h,
                                zs + net.act_off[l - 1] if zs != NULL else NULL, dh, n)


@cython.boundscheck(False)
@cython.wraparound(False)
@cython.cdivision(True)
cdef double finish_gradient(const Net* net, const floating* params, floating* grads,
                            double loss_sum, double sw_sum) noexcept nogil:
    """Adds the L2 term and divides by S: returns the batch loss, leaves the gradient."""
    cdef intp l, i, n
    cdef double sq = 0, alpha = net.alpha
    cdef const floating* W
    cdef floating* g
    for l in range(net.n_layers):
        n = net.units[l] * net.units[l + 1]
        W = params + net.coef_off[l]
        g = grads + net.coef_off[l]
        sq += sum_of_squares(W, <int> n)
        for i in range(n):
            g[i] = (g[i] + <floating> alpha * W[i]) / <floating> sw_sum
        g = grads + net.inter_off[l]
        for i in range(net.units[l + 1]):
            g[i] = g[i] / <floating> sw_sum
    return loss_sum / sw_sum + 0.5 * alpha * sq / sw_sum


# ---------------------------------------------------------------------------
# optimizer steps over the flat buffers


cdef inline void step_range(floating* params, const floating* grads,
                            const floating* grads_2, floating* state_1,
                            floating* state_2, intp n, double alpha, double sw_sum,
                            int solver, double lr, double momentum, bint nesterov,
                            double beta_1, double beta_2, double epsilon,
                            double* sq=NULL) noexcept nogil:
    """For n parameters: g := (g + g2 + α w) / S (g2: ``grads_2``, or 0 when NULL), then
    SGD:  v := μ v - η g;  w += v, or with Nesterov w += μ v - η g;
    Adam: m := β1 m + (1-β1) g;  v := β2 v + (1-β2) g²;  w -= η_t m / (√v + ε)
    (``lr`` is η, or Adam's bias-corrected η_t). One fused loop, in _loops.h, which also
    leaves Σ w² (before the step) in ``sq`` unless it is NULL."""
    if solver == SGD:
        if floating is float:
            pb_sgd_stepf(params, grads, grads_2, state_1, n, <float> alpha,
                         <float> sw_sum, <float> lr, <float> momentum, nesterov, sq)
        else:
            pb_sgd_step(params, grads, grads_2, state_1, n, alpha, sw_sum, lr, momentum,
                        nesterov, sq)
    else:
        if floating is float:
            pb_adam_stepf(params, grads, grads_2, state_1, state_2, n, <float> alpha,
                          <float> sw_sum, <float> lr, <float> beta_1, <float> beta_2,
                          <float> epsilon, sq)
        else:
            pb_adam_step(params, grads, grads_2, state_1, state_2, n, alpha, sw_sum, lr,
                         beta_1, beta_2, epsilon, sq)


cdef inline void step_slice(const Net* net, floating* params, const floating* grads,
                            const floating* grads_2, floating* state_1,
                            floating* state_2, intp lo, intp hi, double sw_sum,
                            int solver, double lr, double momentum, bint nesterov,
                            double beta_1, double beta_2, double epsilon,
                            double* sq) noexcept nogil:
    """The end of a batch for parameters [lo, hi) of the flat buffer: the gradient
    ``grads`` (+ ``grads_2`` unless NULL) finished and the parameters stepped in one
    pass. The weights (everything below inter_off[0]) get the L2 term, and their sum
    of squares (before the step) goes to ``sq``."""
    cdef intp n_weights = net.inter_off[0], w_hi = min(hi, n_weights), b_lo = max(lo, n_weights)
    sq[0] = 0
    if lo < w_hi:
        step_range(params + lo, grads + lo, grads_2 + lo if grads_2 != NULL else NULL,
                   state_1 + lo, state_2 + lo if state_2 != NULL else NULL, w_hi - lo,
                   net.alpha, sw_sum, solver, lr, momentum, nesterov, beta_1, beta_2,
                   epsilon, sq)
    if b_lo < hi:
        step_range(params + b_lo, grads + b_lo,
                   grads_2 + b_lo if grads_2 != NULL else NULL, state_1 + b_lo,
                   state_2 + b_lo if state_2 != NULL else NULL, hi - b_lo, 0.0, sw_sum,
                   solver, lr, momentum, nesterov, beta_1, beta_2, epsilon)


# rows of a sparse first layer's W_1 whose gradient block_step makes and steps at a
# time, in a scratch block that stays in cache (64 x 128 float32: 32 kB)
cdef intp SPARSE_CHUNK_ROWS = 64


cdef inline intp sparse_index_size(intp fan_in, int B, intp batch_nnz) noexcept nogil:
    """Length of a thread's index workspace for sparse_rows_step: a count per chunk of
    its block's rows of W_1, and two values per nonzero of a batch."""
    return ((fan_in + B - 1) // B + SPARSE_CHUNK_ROWS - 1) // SPARSE_CHUNK_ROWS + 1 \
        + 2 * batch_nnz


def sparse_batch_nnz(const int[::1] indptr, intp batch_size):
    """The most nonzeros a batch of ``batch_size`` distinct rows of a CSR matrix can
    hold: its batch_size longest rows'. (It sizes sparse_rows_step's workspace, which
    checks it: a batch with more, from repeated rows, is still stepped right.)"""
    import numpy as np
    lengths = np.diff(np.asarray(indptr, dtype=np.int64))
    if lengths.size == 0 or batch_size <= 0:
        return 0
    k = min(batch_size, lengths.size)
    return int(max(0, np.partition(lengths, lengths.size - k)[lengths.size - k:].sum()))


def sparse_step_sizes(intp fan_in, intp fan_out, int n_blocks, intp batch_nnz):
    """``(scratch, index)``: the values of gradient scratch and of index workspace
    each thread of a fit that shares its gradient needs for a sparse first layer
    (fan_in x fan_out, batches of at most ``batch_nnz`` nonzeros, n_blocks blocks)."""
    if n_blocks < 1 or fan_in < 0 or fan_out < 0 or batch_nnz < 0:
        raise ValueError("n_blocks must be at least 1, and the sizes not negative")
    return SPARSE_CHUNK_ROWS * fan_out, sparse_index_size(fan_in, n_blocks, batch_nnz)


@cython.boundscheck(False)
@cython.wraparound(False)
@cython.cdivision(True)
cdef double sparse_rows_step(const Net* net, const floating* X, const Targets* tg, intp m,
                             floating* params, const floating* dz, intp lo, intp hi,
                             floating* scratch, intp* index, intp index_len,
                             double sw_sum, int solver, floating* state_1,
                             floating* state_2, double lr, double momentum, bint nesterov,
                             double beta_1, double beta_2, double epsilon) noexcept nogil:
    """Rows [lo, hi) of a sparse first layer's W_1, gradient and step, SPARSE_CHUNK_ROWS
    rows at a time: the batch's nonzeros in columns [lo, hi) are sorted by chunk
    (a counting sort into ``index``: the counts, then (nonzero, batch row) pairs),
    and for each chunk the rows' gradient is scattered into ``scratch`` and stepped
    while it is in cache. Each row of W_1 adds its nonzeros in batch order, as one
    scatter over the batch would; no gradient the size of W_1 is stored. A batch with
    more nonzeros than ``index`` (``index_len`` values) has room for, which only rows
    repeated in the epoch's order can make, is scattered chunk by chunk from the
    batch's rows instead. Returns Σ w² of the rows before the step."""
    cdef intp fan_out = net.units[1], CH = SPARSE_CHUNK_ROWS
    cdef intp n_chunks = (hi - lo + CH - 1) // CH
    cdef intp* counts = index
    cdef intp* pairs = index + n_chunks + 1
    cdef intp capacity = (index_len - n_chunks - 1) // 2
    cdef intp i, p, r, c, k, q, start, c0, c1, off
    cdef bint sorted_pairs
    cdef double sq = 0, part
    memset(counts, 0, (n_chunks + 1) * sizeof(intp))
    for i in range(m):
        r = row_of(tg, i)
        for p in range(net.indptr[r], net.indptr[r + 1]):
            c = net.indices[p]
            if lo <= c < hi:
                counts[(c - lo) // CH + 1] += 1
    for k in range(n_chunks):
        counts[k + 1] += counts[k]
    sorted_pairs = counts[n_chunks] <= capacity
    # counts[k]: where chunk k's pairs begin, advanced to where they end
    for i in range(m if sorted_pairs else 0):
        r = row_of(tg, i)
        for p in range(net.indptr[r], net.indptr[r + 1]):
            c = net.indices[p]
            if lo <= c < hi:
                k = (c - lo) // CH
                q = counts[k]
                counts[k] = q + 1
                pairs[2 * q] = p
                pairs[2 * q + 1] = i
    start = 0
    for k in range(n_chunks):
        c0 = lo + k * CH
        c1 = min(c0 + CH, hi)
        memset(scratch, 0, (c1 - c0) * fan_out * sizeof(floating))
        if sorted_pairs:
            for q in range(start, counts[k]):
                p = pairs[2 * q]
                axpy(<int> fan_out, X[p], dz + pairs[2 * q + 1] * fan_out,
                     scratch + (net.indices[p] - c0) * fan_out)
            start = counts[k]
        else:
            for i in range(m):
                r = row_of(tg, i)
                for p in range(net.indptr[r], net.indptr[r + 1]):
                    c = net.indices[p]
                    if c0 <= c < c1:
                        axpy(<int> fan_out, X[p], dz + i * fan_out,
                             scratch + (c - c0) * fan_out)
        off = net.coef_off[0] + c0 * fan_out
        step_range(params + off, scratch, <const floating*> NULL, state_1 + off,
                   state_2 + off if state_2 != NULL else NULL, (c1 - c0) * fan_out,
                   net.alpha, sw_sum, solver, lr, momentum, nesterov, beta_1, beta_2,
                   epsilon, &part)
        sq += part
    return sq


@cython.boundscheck(False)
@cython.wraparound(False)
cdef void block_step(const Net* net, const floating* X, const Targets* tg, intp m,
                     floating* params, const floating* acts, const floating* deltas,
                     const floating* xbuf, floating* grads, floating* scratch,
                     intp* index, intp index_len, int blk, int B, double sw_sum, int solver,
                     floating* state_1, floating* state_2, double lr, double momentum,
                     bint nesterov, double beta_1, double beta_2, double epsilon,
                     double* sq) noexcept nogil:
    """Block blk of B's part of a batch's step, once every block's deltas are in
    (backward with grads NULL): for each layer l, rows [fan_in blk / B, fan_in
    (blk+1) / B) of W_l get their gradient over all m rows of the batch, dW = H_{l-1}^T
    dz_l (one product), and are stepped while it is still in cache; entries
    [fan_out blk / B, fan_out (blk+1) / B) of b_l likewise. The rows of W_l are one
    stretch of the flat buffers, so each block writes only its own part of ``grads``.
    A sparse first layer goes through sparse_rows_step, with this thread's ``scratch``
    and ``index``; ``grads`` then holds no room for W_1 (the gradient of parameter
    ``off`` is at ``grads + off - fan_in · fan_out`` of W_1). Σ w² of the block's
    weights, before the step, goes to ``sq``."""
    cdef intp L = net.n_layers
    cdef intp l, lo, hi, c0, c1, fan_in, fan_out, off
    cdef intp skip = net.units[0] * net.units[1] if net.sparse else 0
    cdef double part
    cdef const floating* h_prev
    cdef const floating* dz
    sq[0] = 0
    for l in range(L):
        fan_in = net.units[l]
        fan_out = net.units[l + 1]
        dz = deltas + net.act_off[l]
        lo = fan_in * blk // B
        hi = fan_in * (blk + 1) // B
        off = net.coef_off[l] + lo * fan_out
        if hi > lo and l == 0 and net.sparse:
            sq[0] += sparse_rows_step(net, X, tg, m, params, dz, lo, hi, scratch, index,
                                      index_len, sw_sum, solver, state_1, state_2, lr,
                                      momentum, nesterov, beta_1, beta_2, epsilon)
        elif hi > lo:
            h_prev = layer_input(net, X, tg, acts, xbuf, l)
            # columns [lo, hi) of H_prev, transposed, times dz
            gemm(True, False, <int> (hi - lo), <int> fan_out, <int> m, <floating> 1.0,
                 h_prev + lo, <int> fan_in, dz, <int> fan_out, <floating> 0.0,
                 grads + (off - skip), <int> fan_out)
            step_range(params + off, grads + (off - skip), <const floating*> NULL,
                       state_1 + off, state_2 + off if state_2 != NULL else NULL,
                       (hi - lo) * fan_out, net.alpha, sw_sum, solver, lr, momentum,
                       nesterov, beta_1, beta_2, epsilon, &part)
            sq[0] += part
        c0 = fan_out * blk // B
        c1 = fan_out * (blk + 1) // B
        if c1 > c0:
            off = net.inter_off[l] + c0
            memset(grads + (off - skip), 0, (c1 - c0) * sizeof(floating))
            colsum_add_ld(dz + c0, m, c1 - c0, fan_out, grads + (off - skip))
            step_range(params + off, grads + (off - skip), <const floating*> NULL,
                       state_1 + off, state_2 + off if state_2 != NULL else NULL,
                       c1 - c0, 0.0, sw_sum, solver, lr, momentum, nesterov, beta_1,
                       beta_2, epsilon)


# ---------------------------------------------------------------------------
# entry points (GIL held only to check arguments and for Ctrl-C)


cdef inline floating* ptr_or_null(floating[::1] a) noexcept nogil:
    return &a[0] if a.shape[0] > 0 else NULL


cdef inline const floating* cptr_or_null(const floating[::1] a) noexcept nogil:
    return &a[0] if a.shape[0] > 0 else NULL


cdef inline double step_size(int solver, double lr, double beta_1, double beta_2,
                             intp* steps) noexcept nogil:
    """The learning rate of this step: SGD's as given; Adam's bias-corrected
    η √(1 - β2^t) / (1 - β1^t), counting the step in ``steps``."""
    if solver == SGD:
        return lr
    steps[0] += 1
    return lr * sqrt(1 - pow(beta_2, <double> steps[0])) / (1 - pow(beta_1, <double> steps[0]))


@cython.boundscheck(False)
@cython.wraparound(False)
@cython.cdivision(True)
cdef inline void epoch_begins(EpochLoop* loop, double* total, int tid,
                              int T) noexcept nogil:
    """Every thread, before an epoch: thread 0 shuffles the rows and resets the loss
    sum, and the others wait for it."""
    if tid == 0:
        if loop.mt != NULL:
            pb_shuffle(loop.mt, loop.rows, loop.n_rows)
        total[0] = 0
    if T > 1:
        pb_timed_barrier(0)


cdef inline bint epoch_over(EpochLoop* loop, intp e, double* total, bint cut_short,
                            bint interrupted, int tid, int T) noexcept nogil:
    """Every thread, after its share of epoch e: True when no epoch follows (thread 0
    decides, once all are done). ``interrupted``: Ctrl-C was seen, in this epoch or
    at its very end; a whole epoch is recorded, and none follows."""
    if T > 1:
        pb_timed_barrier(3)
    if tid == 0:
        epoch_ends(loop, e, total[0], cut_short)
        if interrupted:
            loop.leave = 1
    if T > 1:
        pb_timed_barrier(3)
    return loop.leave


cdef inline void epoch_ends(EpochLoop* loop, intp e, double total, bint cut_short) noexcept nogil:
    """Thread 0, once every thread has finished epoch e: record it and decide whether
    another follows. The stopping rule is the estimators' (BaseMultilayerPerceptron.
    _update_no_improvement_count on the training loss), in the same double arithmetic,
    so that the Python layer, replaying the recorded losses, stops at the same epoch.
    An epoch that Ctrl-C cut short is not recorded."""
    cdef double loss, scale
    if cut_short:
        loop.leave = 1
        return
    loop.totals[e] = total
    loop.t += loop.n_rows
    if loop.invscaling:
        # the estimators' SGD iteration_ends(t_), in the same double arithmetic;
        # where (t + 1)^power_t overflows, Python raises OverflowError as it replays
        # this epoch: no epoch follows
        scale = pow(<double> (loop.t + 1), loop.power_t)
        if not isfinite(scale):
            loop.leave = 1
        loop.lr = loop.lr_init / scale
    if e + 1 >= loop.n_epochs:
        loop.leave = 1
    if loop.state == NULL:
        return
    loop.state[2] = e + 1
    loss = total / <double> loop.n_rows
    if loss > loop.state[0] - loop.tol:
        loop.state[1] += 1
    else:
        loop.state[1] = 0
    if loss < loop.state[0]:
        loop.state[0] = loss
    if loop.state[1] > loop.patience:
        # the estimators' trigger_stopping: SGD's adaptive schedule divides the rate
        # (in double, as Python's float) while it is above 1e-6, else the epochs end
        if loop.adaptive and not loop.lr <= 1e-6:
            loop.lr = loop.lr / 5.0
            loop.state[1] = 0
        else:
            loop.leave = 1


cdef void _epoch_share(const Net* net, const floating* X, const floating* Y,
                       const floating* sw, const Targets* tg_all, intp n_rows,
                       intp batch_size, int n_blocks, floating* params,
                       floating* grads, floating* acts, floating* deltas,
                       floating* xbuf, floating* zs, floating* masks, intp n_params,
                       int solver, floating* state_1, floating* state_2,
                       double momentum, bint nesterov, double beta_1, double beta_2,
                       double epsilon, intp* t, intp* off_all, double* parts,
                       double* total, int* stop, EpochLoop* loop,
                       bint block_grads, floating* scratch_all, intp* index_all,
                       intp scratch_len, intp index_len) noexcept nogil:
    """One thread's share of ``loop``'s epochs; every thread of the team runs it.

    Each batch of m rows is cut into B = ``n_blocks`` blocks of rows, block j being
    rows [m j / B, m (j+1) / B); forward, loss and backward run per block, in the
    block's rows of the shared workspaces. Then the gradient is made and stepped in
    one of two ways (with one block they are the same):

    * ``block_grads``: each block's backward fills the block's own gradient buffer
      (``grads`` + j P). After a barrier, the flat parameter vector is cut into
      S = SLICES_PER_BLOCK · B equal slices; for each, the B gradients are summed in
      block order and the slice is stepped. A thread reads the other blocks'
      gradients: P values each.
    * otherwise backward leaves the deltas only, and after a barrier block j makes,
      over the whole batch, the gradient of its share of every layer (block_step:
      rows [fan_in j / B, fan_in (j+1) / B) of each W_l, one stretch of ``grads``)
      and steps it while it is in cache. A thread reads the other blocks' rows of
      the activations and deltas instead of P-value gradients, and no block holds a
      gradient of its own: the way for parameters that outweigh a batch's
      activations (wide or sparse inputs).

    A second barrier, and the next batch reads the new parameters. Thread k of T
    takes blocks [B k / T, B (k+1) / T) (and, with block gradients, slices k, k + T,
    ...), so the arithmetic depends on B only: any number of threads gives the same
    bits.
    Thread 0 adds up the batch loss and looks for Ctrl-C; ``stop`` tells the others:
    stop[parity] for a batch of that parity, set before its second barrier and read
    after it (one flag would let a thread that found NaN in the next batch's rows stop
    a slower one a batch early, and the two would wait at different barriers)."""
    cdef int tid = pb_thread_num(), T = pb_num_threads()
    cdef int first = n_blocks * tid // T, last = n_blocks * (tid + 1) // T
    cdef int blk, sl, parity = 0
    cdef bint whole = block_grads or n_blocks == 1
    cdef int n_slices = SLICES_PER_BLOCK * n_blocks if n_blocks > 1 else 1
    cdef Net mine = net[0]
    cdef Targets tg = tg_all[0]
    cdef Targets batch = tg_all[0]
    cdef intp L = net.n_layers, d = net.units[0]
    cdef intp* off = off_all + tid * L
    cdef floating* x_rows = NULL
    cdef intp start = 0, m, r0, rows, l, u, lo, hi, e, steps = t[0]
    cdef bint cut_short
    cdef double sw_sum, lr_t, loss_sum, sq_sum
    cdef double* loss_parts
    cdef double* sq_parts
    cdef double last_check = seconds()
    cdef int found = 0     # this thread's gathers found NaN / infinity (see Targets.bad)
    mine.act_off = off
    pb_clock_start()
    for e in range(loop.n_epochs):
        epoch_begins(loop, total, tid, T)
        start = 0
        cut_short = False
        # the first epoch gathers every row: it checks them, if asked
        tg.bad = &found if e == 0 and tg_all.bad != NULL else NULL
        while start < n_rows:
            m = min(batch_size, n_rows - start)
            # the parts of this batch; thread 0 reads them after the second barrier, while
            # the others may already write the next batch's, into the other half
            loss_parts = parts + parity * (n_blocks + n_slices)
            sq_parts = loss_parts + n_blocks
            for blk in range(first, last):
                r0 = m * blk // n_blocks
                rows = m * (blk + 1) // n_blocks - r0
                loss_parts[blk] = 0
                if rows == 0:
                    if whole:
                        memset(grads + blk * n_params, 0, n_params * sizeof(floating))
                    continue
                for l in range(L):
                    off[l] = net.act_off[l] + r0 * net.units[l + 1]
                tg.start = start + r0
                if xbuf != NULL:
                    x_rows = xbuf + r0 * d
                forward(&mine, X, &tg, rows, params, acts, x_rows, acts + off[L - 1], zs, masks)
                loss_parts[blk] = output_loss(&mine, &tg, rows, acts + off[L - 1], Y, sw,
                                              deltas + off[L - 1])
                backward(&mine, X, &tg, rows, params, acts, deltas, x_rows,
                         grads + blk * n_params if whole else NULL, False, zs, masks, NULL)
            if found:
                # every thread stops after this batch (read after the second barrier;
                # the next batch's flag is the other one)
                tg_all.bad[0] = 1
                stop[parity] = 1
            if T > 1:
                pb_timed_barrier(1)
            batch.start = start
            sw_sum = batch_weight(sw, &batch, m)
            lr_t = step_size(solver, loop.lr, beta_1, beta_2, &steps)
            if whole:
                sl = tid
                while sl < n_slices:
                    # slice sl of the gradient: ((g_0 + g_2) + g_3 ...) + g_1, the last
                    # sum fused into the step
                    lo = n_params * sl // n_slices
                    hi = n_params * (sl + 1) // n_slices
                    for u in range(2, n_blocks):
                        add_inplace(grads + lo, grads + u * n_params + lo, hi - lo)
                    step_slice(net, params, grads,
                               grads + n_params if n_blocks > 1 else NULL, state_1,
                               state_2, lo, hi, sw_sum, solver, lr_t, momentum, nesterov,
                               beta_1, beta_2, epsilon, &sq_parts[sl])
                    sl += T
            else:
                for blk in range(first, last):
                    block_step(net, X, &batch, m, params, acts, deltas, xbuf, grads,
                               scratch_all + tid * scratch_len,
                               index_all + tid * index_len, index_len, blk, n_blocks,
                               sw_sum,
                               solver, state_1, state_2, lr_t, momentum, nesterov, beta_1,
                               beta_2, epsilon, &sq_parts[blk])
            if tid == 0 and signal_due(&last_check):
                stop[parity] = 1
            if T > 1:
                pb_timed_barrier(2)
            if tid == 0:
                loss_sum = 0
                sq_sum = 0
                for blk in range(n_blocks):
                    loss_sum += loss_parts[blk]
                for sl in range(n_slices if whole else n_blocks):
                    sq_sum += sq_parts[sl]
                total[0] += (loss_sum / sw_sum + 0.5 * net.alpha * sq_sum / sw_sum) * m
            if stop[parity]:
                # this batch was applied: the epoch is whole if it was the last
                cut_short = start + batch_size < n_rows
                break
            parity = 1 - parity
            start += batch_size
        if epoch_over(loop, e, total, cut_short, stop[0] or stop[1], tid, T):
            break
    if tid == 0:
        t[0] = steps


def run_epoch(const intp[::1] units, const intp[::1] coef_off, const intp[::1] inter_off,
              const intp[::1] act_off, const int[::1] hidden, int output, int loss,
              double alpha, const floating[::1] X, const int[::1] indices,
              const int[::1] indptr, const floating[::1] Y, const intp[::1] labels,
              const floating[::1] sw, const intp[::1] rows, intp n_rows, intp batch_size,
              floating[::1] params, floating[::1] grads, floating[::1] acts,
              floating[::1] deltas, floating[::1] xbuf, floating[::1] zs,
              const double[::1] keep, unsigned long long seed, floating[::1] masks,
              int solver, floating[::1] state_1, floating[::1] state_2,
              double lr, double momentum, bint nesterov,
              double beta_1, double beta_2, double epsilon, intp[::1] step_count,
              int n_blocks=1, int n_threads=1, floating[::1] split_ws=None,
              intp n_epochs=1, double[::1] totals=None, unsigned int[::1] mt_key=None,
              intp[::1] mt_pos=None, double tol=0.0, double patience=0.0,
              double[::1] epoch_state=None, bint block_grads=True,
              intp[::1] index_ws=None, bint invscaling=False, double lr_init=0.0,
              double power_t=0.0, intp t_start=0, bint adaptive=False,
              int[::1] nonfinite=None):
    """One epoch of minibatch updates over ``rows`` (or rows 0..n_rows-1 when empty).

    ``zs`` (z of every layer) is needed when an activation's derivative reads z;
    ``keep`` (one keep-probability per hidden layer), ``seed`` and ``masks`` turn on
    dropout; pass empty arrays otherwise. ``step_count[0]``, Adam's step counter, is
    advanced in place with every step. Returns the sum over batches of
    batch_loss * batch_rows. Raises KeyboardInterrupt between batches on Ctrl-C, with
    the batches already done applied (and counted). Shapes are checked by the caller.

    Each batch is cut into ``n_blocks`` blocks of rows, and ``n_threads`` OpenMP
    threads share the blocks; the result depends on n_blocks, not on n_threads. With
    ``block_grads``, each block fills a gradient buffer of its own (``grads`` holds
    n_blocks buffers, one after the other) and the buffers are summed; without, each
    block makes and steps the gradient of its share of the parameters over the whole
    batch, and ``grads`` needs the size of ``params`` only (see _epoch_share); with
    sparse X and several blocks, not the W_1 part of it, but ``sparse_step_sizes``'s
    scratch per thread after the rest, and ``index_ws`` its index workspace per
    thread (for batches of at most batch_size · the longest row's nonzeros).
    Dropout (whose random stream runs through the batch in order) needs one block.
    With ``split_ws`` (not None, of length ``unit_split_size(...)``), a net with dense X
    has the units of its first hidden layer cut into n_blocks blocks instead.

    With ``totals`` (not None), up to ``n_epochs`` epochs run in one call, the
    threads kept between them, and the call returns how many were run. Before each
    epoch, when ``mt_key`` and ``mt_pos`` hold an MT19937 state (numpy's
    ``RandomState.get_state()``: 624 words and the position), ``rows`` (all n_rows of
    them) is shuffled in place as ``RandomState.shuffle`` would, and the state is
    advanced in place. After each, ``totals[e]`` gets its loss sum (what the
    one-epoch call returns) and the training-loss stopping rule runs on
    ``epoch_state`` = [best loss, epochs without improvement, epochs done] with
    ``tol``: the epochs end once the count exceeds ``patience``. On Ctrl-C,
    ``epoch_state[2]`` tells how many epochs were whole. With ``invscaling`` (SGD, and
    ``totals``), the learning rate starts at ``lr`` and after each epoch becomes
    lr_init / (t + 1)^power_t, t counting the rows of every epoch from ``t_start``.
    With ``adaptive`` (SGD, and ``totals``), where the stopping rule would end the
    epochs the rate is divided by 5 instead and the count restarts, unless the rate
    is already at most 1e-6.

    With ``nonfinite`` (one int, not None) and ``rows``, the call's first epoch checks
    each row of dense X as it gathers it; at a row holding NaN or infinity the epochs
    stop within a batch or two, ``nonfinite[0]`` is set to 1 and NonFiniteInput is
    raised (the parameters are then partly stepped, with what that batch held).
    """
    cdef Net net = make_net(units, coef_off, inter_off, act_off, hidden, output, loss,
                            alpha, indices, indptr)
    cdef Targets tg
    cdef double total = 0
    cdef unsigned long long rng = seed
    cdef floating* mask_ptr = NULL
    cdef intp* off_all
    cdef double* parts
    cdef int stop[2]
    cdef EpochLoop loop
    cdef pb_mt mt
    cdef bint shared_sparse, w1_first
    cdef intp l
    cdef floating* scratch_ptr = NULL
    cdef intp* index_ptr = NULL
    cdef intp scratch_len = 0, index_len = 0
    if n_blocks < 1 or n_threads < 1:
        raise ValueError("n_blocks and n_threads must be at least 1")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    check_sizes(&net, params.shape[0], X.shape[0], n_rows)
    check_rows(&net, rows, n_rows, X.shape[0], indptr, Y, labels, sw)
    if state_1.shape[0] < params.shape[0] or (solver == ADAM
                                              and state_2.shape[0] < params.shape[0]):
        raise ValueError("the optimizer state holds fewer values than params")
    n_threads = min(n_threads, n_blocks)
    epoch_loop(&loop, &mt, rows, n_rows, n_epochs, totals, mt_key, mt_pos, tol, patience,
               epoch_state, &total, lr, invscaling, lr_init, power_t, t_start, adaptive)
    tg.rows = &rows[0] if rows.shape[0] > 0 else NULL
    tg.start = 0
    tg.labels = &labels[0] if labels.shape[0] > 0 else NULL
    tg.bad = NULL
    if nonfinite is not None:
        if nonfinite.shape[0] < 1:
            raise ValueError("nonfinite must hold one value")
        nonfinite[0] = 0
        if not net.sparse and tg.rows != NULL:
            tg.bad = &nonfinite[0]
    if split_ws is not None:
        # grads, acts, deltas, xbuf, zs and masks are not read: the workspace holds all
        run_unit_split(&net, X, Y, sw, &tg, n_rows, batch_size, n_blocks, n_threads,
                       params, split_ws, solver, state_1, state_2, momentum, nesterov,
                       beta_1, beta_2, epsilon, step_count, keep.shape[0] > 0, &loop)
        return total if totals is None else <intp> epoch_state[2]
    shared_sparse = net.sparse and not block_grads and n_blocks > 1
    if shared_sparse:
        # grads holds no room for W_1, which must come first in the flat layout
        w1_first = net.coef_off[0] == 0
        for l in range(net.n_layers):
            w1_first = w1_first and net.inter_off[l] >= net.units[0] * net.units[1] and (
                l == 0 or net.coef_off[l] >= net.units[0] * net.units[1])
        if not w1_first:
            raise ValueError("a shared gradient with sparse X needs W_1 first in the "
                             "parameter layout")
        scratch_len, index_len = sparse_step_sizes(
            net.units[0], net.units[1], n_blocks,
            sparse_batch_nnz(indptr, batch_size))
        if grads.shape[0] < (params.shape[0] - net.units[0] * net.units[1]
                             + n_threads * scratch_len):
            raise ValueError("grads holds fewer values than params less W_1 and "
                             "n_threads scratch blocks")
        if index_ws is None or index_ws.shape[0] < n_threads * index_len:
            raise ValueError("index_ws holds fewer than n_threads index workspaces")
        scratch_ptr = &grads[0] + params.shape[0] - net.units[0] * net.units[1]
        index_ptr = &index_ws[0]
    elif grads.shape[0] < (n_blocks if block_grads else 1) * params.shape[0]:
        raise ValueError("grads holds fewer than n_blocks gradient buffers" if block_grads
                         else "grads holds fewer values than params")
    if keep.shape[0] > 0:
        if n_blocks > 1:
            raise ValueError("dropout needs n_blocks=1")
        net.keep = &keep[0]
        net.rng = &rng
        mask_ptr = &masks[0]
    off_all = <intp*> PyMem_Malloc(n_threads * net.n_layers * sizeof(intp))
    parts = <double*> PyMem_Malloc(2 * (1 + SLICES_PER_BLOCK) * n_blocks * sizeof(double))
    try:
        if off_all == NULL or parts == NULL:
            raise MemoryError()
        # two stop flags, batches of even and odd parity: a thread that finds NaN in
        # its rows of the next batch must not flip the flag the others have yet to read
        # for this one
        stop[0] = 0
        stop[1] = 0
        with nogil, parallel(num_threads=n_threads):
            _epoch_share(&net, &X[0], cptr_or_null(Y), cptr_or_null(sw), &tg, n_rows,
                         batch_size, n_blocks, &params[0], &grads[0], &acts[0],
                         &deltas[0], ptr_or_null(xbuf), ptr_or_null(zs), mask_ptr,
                         params.shape[0], solver, &state_1[0], ptr_or_null(state_2),
                         momentum, nesterov, beta_1, beta_2, epsilon, &step_count[0],
                         off_all, parts, &total, stop, &loop, block_grads,
                         scratch_ptr, index_ptr, scratch_len, index_len)
    finally:
        PyMem_Free(off_all)
        PyMem_Free(parts)
    if stop[0] or stop[1]:
        raise_stopped(tg.bad)
    return total if totals is None else <intp> epoch_state[2]


cdef int epoch_loop(EpochLoop* loop, pb_mt* mt, const intp[::1] rows, intp n_rows,
                    intp n_epochs, double[::1] totals, unsigned int[::1] mt_key,
                    intp[::1] mt_pos, double tol, double patience,
                    double[::1] epoch_state, double* total, double lr, bint invscaling,
                    double lr_init, double power_t, intp t_start,
                    bint adaptive) except -1:
    """Check run_epoch's epoch arguments and fill ``loop`` with them: with ``totals``
    None, one epoch whose loss sum goes to ``total``."""
    loop.n_epochs = n_epochs
    loop.lr = lr
    loop.invscaling = invscaling
    loop.adaptive = adaptive
    loop.lr_init = lr_init
    loop.power_t = power_t
    loop.t = t_start
    loop.rows = NULL
    loop.n_rows = n_rows
    loop.mt = NULL
    loop.tol = tol
    loop.patience = patience
    loop.leave = 0
    loop.state = NULL
    loop.totals = total
    if totals is None:
        if (n_epochs != 1 or mt_key is not None or epoch_state is not None or invscaling
                or adaptive):
            raise ValueError("several epochs, a shuffle, a stopping rule or a learning-"
                             "rate schedule need totals")
        return 0
    if n_epochs < 1 or totals.shape[0] < n_epochs:
        raise ValueError("totals must hold n_epochs >= 1 values")
    if epoch_state is None or epoch_state.shape[0] < 3:
        raise ValueError("epoch_state must hold 3 values")
    loop.totals = &totals[0]
    loop.state = &epoch_state[0]
    epoch_state[2] = 0
    if mt_key is not None:
        if mt_key.shape[0] != 624 or mt_pos is None or mt_pos.shape[0] < 1 \
                or not 0 <= mt_pos[0] <= 624:
            raise ValueError("mt_key and mt_pos must hold an MT19937 state")
        if rows.shape[0] != n_rows or n_rows >= (<intp> 1) << 32:
            raise ValueError("the shuffle needs rows of all n_rows < 2**32 positions")
        mt.key = &mt_key[0]
        mt.pos = &mt_pos[0]
        loop.mt = mt
        loop.rows = <intp*> &rows[0] if n_rows > 0 else NULL
    return 0


cdef object run_unit_split(Net* net, const floating[::1] X, const floating[::1] Y,
                           const floating[::1] sw, Targets* tg, intp n_rows,
                           intp batch_size, int n_blocks, int n_threads,
                           floating[::1] params, floating[::1] ws, int solver,
                           floating[::1] state_1, floating[::1] state_2,
                           double momentum, bint nesterov, double beta_1, double beta_2,
                           double epsilon, intp[::1] step_count, bint dropout,
                           EpochLoop* loop):
    """run_epoch's path for a net whose first hidden layer is cut by units."""
    cdef double total = 0
    cdef double* sq_parts
    cdef intp* tail_off = NULL
    cdef floating* tail_parts = NULL
    cdef const floating** row_ptrs = NULL
    cdef intp L = net.n_layers, i, n_tw, a
    cdef int stop[2]
    cdef int narrow = -1
    if L < 2 or net.sparse or dropout:
        raise ValueError("cutting by hidden units needs a hidden layer, dense X and "
                         "no dropout")
    if n_blocks > net.units[1]:
        raise ValueError("more blocks than hidden units")
    # the backward through a narrow second layer in one pass, where it can
    if NARROW_BACK and not needs_z(net.hidden[0]) and net.units[2] <= PB_NARROW_K:
        narrow = narrow_code(net.hidden[0])
    # the row products (float32): no row buffers in ws, a row pointer scratch instead
    cdef bint direct = False
    if floating is float:
        direct = ROW_PRODUCTS
    if ws.shape[0] < unit_split_values(net.units, net.hidden, L, batch_size, n_blocks,
                                       n_threads, direct):
        raise ValueError("split_ws is smaller than unit_split_size()")
    stop[0] = 0
    stop[1] = 0
    # the blocks' Σ w² (two batches' worth), then their parts of a batch's loss
    sq_parts = <double*> PyMem_Malloc(3 * n_blocks * sizeof(double))
    if L > 2:
        # the tail's layer tables, the same for every thread: W_l and b_l in its copy
        # [W_3 ... W_L | b_3 ... b_L], and layer l's block of its activations
        tail_off = <intp*> PyMem_Malloc(3 * (L - 2) * sizeof(intp))
        # each block's part of the tail's gradient, over its rows of the batch
        tail_parts = <floating*> PyMem_Malloc(
            n_blocks * pad16(tail_weights(net.units, L) + tail_biases(net.units, L))
            * sizeof(floating))
    if direct:
        # each thread's pointers to its batch's rows of X (see _unit_share)
        row_ptrs = <const floating**> PyMem_Malloc(n_threads * batch_size
                                                   * sizeof(floating*))
    try:
        if sq_parts == NULL or (L > 2 and (tail_off == NULL or tail_parts == NULL)):
            raise MemoryError()
        if direct and row_ptrs == NULL:
            raise MemoryError()
        global LAST_SPLIT_ROW_PRODUCTS, LAST_SPLIT_NARROW
        LAST_SPLIT_ROW_PRODUCTS = row_ptrs != NULL
        LAST_SPLIT_NARROW = narrow >= 0
        n_tw = tail_weights(net.units, L)
        a = 0
        for i in range(L - 2):
            tail_off[i] = 0 if i == 0 else tail_off[i - 1] + net.units[i + 1] * net.units[i + 2]
            tail_off[L - 2 + i] = n_tw if i == 0 else tail_off[L - 2 + i - 1] + net.units[i + 2]
            tail_off[2 * (L - 2) + i] = a
            a += pad16(batch_size * net.units[i + 3])
        with nogil, parallel(num_threads=n_threads):
            _unit_share(net, &X[0], cptr_or_null(Y), cptr_or_null(sw), tg, n_rows,
                        batch_size, n_blocks, &params[0], &ws[0], solver, &state_1[0],
                        ptr_or_null(state_2), momentum, nesterov, beta_1, beta_2,
                        epsilon, &step_count[0], sq_parts, &total, stop, loop, tail_off,
                        tail_parts, row_ptrs, narrow)
    finally:
        PyMem_Free(row_ptrs)
        PyMem_Free(sq_parts)
        PyMem_Free(tail_off)
        PyMem_Free(tail_parts)
    if stop[0] or stop[1]:
        raise_stopped(tg.bad)


class NonFiniteInput(ValueError):
    """X holds NaN or infinity, found by the rows' check in run_epoch's gathers."""


cdef int raise_stopped(const int* bad) except -1:
    """After epochs a stop flag ended: raise the exception a signal handler left set
    inside the parallel region, or else NonFiniteInput (a gathered row held NaN or
    infinity)."""
    if PyErr_Occurred() == NULL and bad != NULL and bad[0]:
        raise NonFiniteInput("X holds NaN or infinity")
    return -1


# ---------------------------------------------------------------------------
# the first hidden layer cut into blocks of units, the batch whole
#
# A net x -> h (H units) -> z_2 (k = units[2] values a row) -> ... is cut by the units
# of its first hidden layer instead of rows: block j of B owns units [H j / B,
# H (j+1) / B), i.e. columns of W_1 and b_1 and rows of W_2. Its forward pass gives
# its part of z_2, h_j @ W2_j; the parts are summed in block order. Then block j
# takes rows [m j / B, m (j+1) / B) of the batch on: with one hidden layer z_2 is the
# output, and the block makes those rows of it, their softmax, loss and dz; with more,
# it runs the later layers over them (the tail: f_2, then W_3, b_3 ... to the loss,
# and back to dz_2), and its part of the tail's gradient. Every thread reads the rows
# of dz_2 (and the parts of the loss and of the tail's gradient, added in block order)
# after a second barrier. Every thread keeps a copy of the tail's parameters and steps
# it alike, as it does b_2. (Before, every thread computed all the rows: in-process
# A/B against that, digits-sgd 0.985, digits 0.987, mnist-shape 0.963 and 0.976.)
# Each block runs its own backward pass and steps its own parameters, which it keeps,
# with their optimizer state, packed in its workspace for the whole epoch. No thread
# writes what another reads but the parts, the rows of dz_2 and the parts of the loss
# and the tail's gradient: two barriers per batch.


cdef inline intp pad16(intp n) noexcept nogil:
    """n rounded up to 16 values (64 bytes of floats): workspace parts of different
    threads never share a cache line."""
    return (n + 15) & ~(<intp> 15)


cdef inline intp units_of(intp H, int B, int j) noexcept nogil:
    return H * (j + 1) // B - H * j // B


cdef struct UnitBlock:
    intp start     # where block j's workspace begins
    intp units     # its hidden units, Hj
    intp n_w       # its weights, d Hj + Hj k (W1_j then W2_j); b1_j follows
    intp stride    # parameters, gradient, state 1 and state 2 lie this far apart
    intp h         # h_j (m × Hj), then dh_j, then z_j, each ``rows`` long
    intp rows
    intp part      # its part of the output (m × k), twice, ``part_len`` apart
    intp part_len


cdef inline UnitBlock unit_block(intp d, intp H, intp k, intp m, int B, int j,
                                 bint with_z) noexcept nogil:
    """Where block j's pieces lie in the workspace of B blocks of m-row batches: the
    blocks one after the other, each [params | grads | state 1 | state 2 | h | dh |
    (z) | part, part]. With j = B, ``start`` is the blocks' total length."""
    cdef UnitBlock blk
    cdef int i
    blk.start = 0
    for i in range(j + 1):
        blk.units = units_of(H, B, i)
        blk.n_w = d * blk.units + blk.units * k
        blk.stride = pad16(blk.n_w + blk.units)
        blk.rows = pad16(m * blk.units)
        blk.h = 4 * blk.stride
        blk.part = blk.h + blk.rows * (3 if with_z else 2)
        blk.part_len = pad16(m * k)
        if i < j:
            blk.start += blk.part + 2 * blk.part_len
    return blk


cdef inline intp unit_thread_size(intp d, intp H, intp k, intp m, int B) noexcept nogil:
    """Values of a thread's workspace: z_2 (or the output) and dz_2, b_2 with its
    gradient and two states, and room for a block's W2_j transposed and for its
    gradient transposed (pb_narrow_back) (thread 0's dz_2 serves every thread; with
    one hidden layer it is made in place of the output, and the other threads' z_2 and
    dz_2 go unused). The tail's
    workspace follows (tail_thread_size). The batch's rows of X lie before all the
    threads' workspaces (unit_split_values)."""
    return 2 * pad16(m * k) + 4 * pad16(k) + 2 * pad16((H + B - 1) // B * k)


cdef inline intp tail_weights(const intp* units, intp L) noexcept nogil:
    """Weights of the tail, W_3 ... W_L (none with one hidden layer)."""
    cdef intp l, n = 0
    for l in range(2, L):
        n += units[l] * units[l + 1]
    return n


cdef inline intp tail_biases(const intp* units, intp L) noexcept nogil:
    """Biases of the tail, b_3 ... b_L."""
    cdef intp l, n = 0
    for l in range(2, L):
        n += units[l + 1]
    return n


cdef inline intp tail_rows(const intp* units, intp L, intp m) noexcept nogil:
    """Values of the tail's activations (or deltas, or zs) for an m-row batch."""
    cdef intp l, n = 0
    for l in range(2, L):
        n += pad16(m * units[l + 1])
    return n


cdef inline bint tail_needs_z(const int* hidden, intp L) noexcept nogil:
    """Whether f_2 or a later hidden activation needs z for its derivative."""
    cdef intp l
    for l in range(1, L - 1):
        if needs_z(hidden[l]):
            return True
    return False


cdef inline intp tail_thread_size(const intp* units, const int* hidden, intp L,
                                  intp m) noexcept nogil:
    """Values of a thread's tail workspace: its copy of [W_3 ... W_L | b_3 ... b_L]
    with the gradient and two states, the tail's activations and deltas, and (when an
    activation's derivative needs z) the tail's zs and z_2."""
    cdef bint with_z
    if L <= 2:
        return 0
    with_z = tail_needs_z(hidden, L)
    return (4 * pad16(tail_weights(units, L) + tail_biases(units, L))
            + (3 if with_z else 2) * tail_rows(units, L, m)
            + (pad16(m * units[2]) if with_z else 0))


cdef inline intp unit_split_values(const intp* units, const int* hidden, intp L,
                                   intp batch_rows, int n_blocks, int n_threads,
                                   bint direct) noexcept nogil:
    """Values of the workspace; ``direct``: the row products read X's rows in place,
    and no row buffers are kept."""
    cdef intp d = units[0], H = units[1], k = units[2]
    return (unit_block(d, H, k, batch_rows, n_blocks, n_blocks, needs_z(hidden[0])).start
            + (0 if direct else row_buffers(n_threads)) * pad16(batch_rows * d)
            + n_threads * (unit_thread_size(d, H, k, batch_rows, n_blocks)
                           + tail_thread_size(units, hidden, L, batch_rows)))


# a fit cut by units whose batches' rows of X take SHARE_ROWS_BYTES or more gathers
# each shuffled batch into one of these buffers, shared by the threads, each thread
# its share of the rows, during the batch before: the barrier that ends that batch's
# forward pass hands them over (otherwise thread t gathers the whole batch for itself
# into buffer t). Three, so that a fast thread filling the batch after next never
# writes the rows a slow one is still multiplying by
cdef int SHARED_ROW_BUFFERS = 3
cdef intp SHARE_ROWS_BYTES = 256 * 1024


cdef inline int row_buffers(int T) noexcept nogil:
    """Row buffers of a fit cut by units on T threads: one per thread, and at least the
    shared ones when the threads can share (T > 1)."""
    return 1 if T == 1 else max(T, SHARED_ROW_BUFFERS)


cdef inline void gather_share(const floating* X, const intp* rows, intp start, intp m,
                              intp d, floating* dst, int tid, int T,
                              int* bad) noexcept nogil:
    """Thread tid of T copies its share of rows start .. start + m - 1 of the epoch's
    order into dst (m x d); with T = 1, all of them. With ``bad`` (not NULL), the
    copy also checks the rows, and sets bad[0] to 1 when one holds NaN or infinity."""
    cdef intp i
    cdef int found = 0
    if bad == NULL:
        for i in range(m * tid // T, m * (tid + 1) // T):
            memcpy(dst + i * d, X + rows[start + i] * d, d * sizeof(floating))
        return
    for i in range(m * tid // T, m * (tid + 1) // T):
        if floating is float:
            found |= pb_copy_finitef(X + rows[start + i] * d, dst + i * d, d)
        else:
            found |= pb_copy_finite(X + rows[start + i] * d, dst + i * d, d)
    if found:
        bad[0] = 1


cdef inline void transpose(const floating* A, floating* At, intp rows,
                           intp cols) noexcept nogil:
    """At (cols x rows) = A (rows x cols) transposed, both row-major."""
    cdef intp r, c
    for r in range(rows):
        for c in range(cols):
            At[c * rows + r] = A[r * cols + c]


def unit_split_size(const intp[::1] units, const int[::1] hidden, intp batch_rows,
                    int n_blocks, int n_threads, bint row_products=False):
    """Length of the workspace ``run_epoch`` needs to cut the first hidden layer of a
    net (layer widths ``units``, hidden activation codes ``hidden``) into n_blocks
    blocks of units run by up to n_threads threads; ``row_products``: for a float32
    fit with row_products() on, which gathers no rows and needs no row buffers."""
    if units.shape[0] < 3 or hidden.shape[0] != units.shape[0] - 2:
        raise ValueError("a cut by units needs a hidden layer, and one activation code "
                         "per hidden layer")
    if n_blocks < 1 or n_threads < 1 or batch_rows < 1:
        raise ValueError("n_blocks, n_threads and batch_rows must be at least 1")
    return unit_split_values(&units[0], &hidden[0], units.shape[0] - 1, batch_rows,
                             n_blocks, n_threads, row_products)


cdef inline void rows_times(bint direct, const floating* x_base, const intp* rows_at,
                            const floating* x_rows, intp m, intp d, const floating* W,
                            intp n, floating* Z) noexcept nogil:
    """Z (m x n) = X_b W, W (d x n), X_b a batch's m rows of d values: with ``direct``
    (ROW_PRODUCTS), _rowgemm.h's product reads them where they lie, x_base +
    rows_at[i] d (x_base + i d without rows_at); otherwise BLAS reads them from
    x_rows, gathered or contiguous."""
    if direct:
        if floating is float:
            pb_xwf(x_base, d, rows_at, m, W, n, Z)
        else:
            pb_xw(x_base, d, rows_at, m, W, n, Z)
        return
    gemm(False, False, <int> m, <int> n, <int> d, <floating> 1.0, x_rows, <int> d, W,
         <int> n, <floating> 0.0, Z, <int> n)


cdef inline void rows_t_times(bint direct, const floating* x_base, const intp* rows_at,
                              const floating* x_rows, intp m, intp d, const floating* dZ,
                              intp n, floating* G, const floating** rp) noexcept nogil:
    """G (d x n) = X_b^T dZ, dZ (m x n), the batch's rows as for rows_times; rp: room
    for m row pointers (direct only)."""
    if floating is float:
        if direct:
            pb_xtdzf(x_base, d, rows_at, m, dZ, n, G, rp)
            return
    gemm(True, False, <int> d, <int> n, <int> m, <floating> 1.0, x_rows, <int> d, dZ,
         <int> n, <floating> 0.0, G, <int> n)


cdef void pack_unit_block(const Net* net, floating* flat, floating* packed, int B, int j,
                          bint to_flat) noexcept nogil:
    """Copy block j's [W1_j | W2_j | b1_j] between the flat layout and its packed one
    (either way), for a parameter vector or an optimizer state laid out alike."""
    cdef intp d = net.units[0], H = net.units[1], k = net.units[2]
    cdef intp a = H * j // B, Hj = units_of(H, B, j), r
    cdef floating* W1 = flat + net.coef_off[0] + a
    cdef floating* W2 = flat + net.coef_off[1] + a * k
    cdef floating* b1 = flat + net.inter_off[0] + a
    cdef floating* pW2 = packed + d * Hj
    cdef floating* pb1 = pW2 + Hj * k
    for r in range(d):
        copy_either_way(W1 + r * H, packed + r * Hj, Hj, to_flat)
    copy_either_way(W2, pW2, Hj * k, to_flat)
    copy_either_way(b1, pb1, Hj, to_flat)


cdef void pack_unit_blocks(const Net* net, floating* ws, intp m, int B, int first,
                           int last, bint with_z, floating* params, floating* state_1,
                           floating* state_2, bint to_flat) noexcept nogil:
    """pack_unit_block for blocks [first, last): the parameters, state 1 and (Adam,
    when state_2 is not NULL) state 2."""
    cdef UnitBlock blk
    cdef int j
    for j in range(first, last):
        blk = unit_block(net.units[0], net.units[1], net.units[2], m, B, j, with_z)
        pack_unit_block(net, params, ws + blk.start, B, j, to_flat)
        pack_unit_block(net, state_1, ws + blk.start + 2 * blk.stride, B, j, to_flat)
        if state_2 != NULL:
            pack_unit_block(net, state_2, ws + blk.start + 3 * blk.stride, B, j, to_flat)


cdef struct PendingLoss:
    # a batch whose loss waits for its blocks' Σ w², which their steps leave in
    # sq_parts (read after the next barrier): its loss, S, rows, the parity of its
    # sq_parts, the tail's Σ w², and whether there is one
    double loss
    double sw_sum
    intp m
    int parity
    double tail_sq
    bint waiting


cdef inline void add_pending_loss(PendingLoss* p, double* total, const double* sq_parts,
                                  int n_blocks, double alpha) noexcept nogil:
    """total += m × (the waiting batch's loss + its L2 term), the blocks' Σ w² added
    in block order, then the tail's; nothing when no batch waits."""
    cdef double sq = 0
    cdef int j
    if not p.waiting:
        return
    for j in range(n_blocks):
        sq += sq_parts[p.parity * n_blocks + j]
    sq += p.tail_sq
    total[0] += (p.loss / p.sw_sum + 0.5 * alpha * sq / p.sw_sum) * p.m
    p.waiting = False


cdef void pack_tail(const Net* net, const intp* tail_off, floating* params,
                    floating* state_1, floating* state_2, floating* tp, floating* ts1,
                    floating* ts2, bint to_flat) noexcept nogil:
    """Copy W_l and b_l of the tail (l = 3 .. L) between the flat layout and a thread's
    copy [W_3 ... W_L | b_3 ... b_L], either way: the parameters, state 1 and (Adam,
    when state_2 is not NULL) state 2."""
    cdef intp Lt = net.n_layers - 2, i, l, n
    for i in range(Lt):
        l = i + 2
        n = net.units[l] * net.units[l + 1]
        copy_either_way(params + net.coef_off[l], tp + tail_off[i], n, to_flat)
        copy_either_way(state_1 + net.coef_off[l], ts1 + tail_off[i], n, to_flat)
        if state_2 != NULL:
            copy_either_way(state_2 + net.coef_off[l], ts2 + tail_off[i], n, to_flat)
        n = net.units[l + 1]
        copy_either_way(params + net.inter_off[l], tp + tail_off[Lt + i], n, to_flat)
        copy_either_way(state_1 + net.inter_off[l], ts1 + tail_off[Lt + i], n, to_flat)
        if state_2 != NULL:
            copy_either_way(state_2 + net.inter_off[l], ts2 + tail_off[Lt + i], n,
                            to_flat)


cdef inline void copy_either_way(floating* flat, floating* packed, intp n,
                                 bint to_flat) noexcept nogil:
    if to_flat:
        memcpy(flat, packed, n * sizeof(floating))
    else:
        memcpy(packed, flat, n * sizeof(floating))


@cython.boundscheck(False)
@cython.wraparound(False)
@cython.cdivision(True)
cdef void _unit_share(const Net* net, const floating* X, const floating* Y,
                      const floating* sw, const Targets* tg_all, intp n_rows,
                      intp batch_size, int n_blocks, floating* params, floating* ws,
                      int solver, floating* state_1, floating* state_2,
                      double momentum, bint nesterov, double beta_1, double beta_2,
                      double epsilon, intp* t, double* sq_parts, double* total,
                      int* stop, EpochLoop* loop, const intp* tail_off,
                      floating* tail_parts, const floating** row_ptrs,
                      int narrow) noexcept nogil:
    """One thread's share of ``loop``'s epochs of a net whose first hidden layer is cut
    by units (see above); thread k of T runs blocks [B k / T, B (k+1) / T), packed
    once for all the epochs, and keeps its own copy of the tail (``tail_off``: its
    layer tables, see run_unit_split). Thread 0 adds up the loss and looks for
    Ctrl-C; every thread reads ``stop[parity]`` after the next barrier, before it
    changes anything (two flags: thread 0 sets the other one).

    With ``row_ptrs`` (float32, AVX-512: ROW_PRODUCTS), x W1_j and x^T dz_j read the
    batch's rows where they lie in X (pb_xwf, pb_xtdzf): no rows are gathered, and in
    the first epoch each thread checks its share of every batch's rows instead.

    With ``narrow`` (a pb_narrow_back code, -1 for none) the backward through the
    second layer runs in one pass per block (pb_narrow_back)."""
    cdef int tid = pb_thread_num(), T = pb_num_threads()
    cdef int first = n_blocks * tid // T, last = n_blocks * (tid + 1) // T
    cdef int j, parity = 0
    cdef bint with_z = needs_z(net.hidden[0])
    cdef bint adam = state_2 != NULL
    cdef int act = net.hidden[0]
    cdef intp d = net.units[0], H = net.units[1], k = net.units[2]
    cdef intp start = 0, m, i, Hj, n_w, e, steps = t[0]
    cdef bint cut_short
    cdef double sw_sum, lr_t, loss
    cdef PendingLoss pending     # thread 0's
    pending.waiting = False
    cdef Targets tg = tg_all[0]
    cdef Targets tg_rows
    cdef intp r0, r1
    cdef int jj
    cdef double* loss_parts = sq_parts + 2 * n_blocks
    cdef floating* o
    cdef UnitBlock blk
    cdef floating* mine
    cdef floating* xb
    cdef floating* out
    cdef floating* dz
    cdef floating* b2
    cdef floating* gb2
    cdef floating* b2_s1
    cdef floating* b2_s2
    cdef floating* w2t
    cdef floating* g2t
    cdef floating* p_j
    cdef floating* g_j
    cdef floating* s1_j
    cdef floating* s2_j
    cdef floating* h_j
    cdef floating* dh_j
    cdef floating* z_j
    cdef floating* part
    cdef const floating* x_rows
    # direct: the batch's rows are x_base + rows_at[i] * d (x_base + i * d without rows_at)
    cdef bint direct = row_ptrs != NULL
    # and the second layer's three products too, when it is wide enough that
    # _rowgemm.h's blocks of 16 values a row are mostly full
    cdef bint direct_2 = direct and net.units[2] >= ROW_PRODUCTS_MIN_K
    cdef const floating** rp = row_ptrs + tid * batch_size if direct else NULL
    cdef const floating* x_base = X
    cdef const intp* rows_at = NULL
    cdef double last_check = seconds()
    cdef int found = 0     # this thread's gathers found NaN / infinity (see Targets.bad)
    # the tail (more than one hidden layer): its own Net over this thread's copy
    cdef intp L = net.n_layers, Lt = net.n_layers - 2, l
    cdef intp n_tw = tail_weights(net.units, L), n_tb = tail_biases(net.units, L)
    cdef intp n_t = pad16(n_tw + n_tb), t_rows = tail_rows(net.units, L, batch_size)
    cdef bint tail_z = L > 2 and tail_needs_z(net.hidden, L)
    cdef Net tail
    cdef Targets tail_in
    cdef floating* tp = NULL
    cdef floating* tgr = NULL
    cdef floating* ts1 = NULL
    cdef floating* ts2 = NULL
    cdef floating* tacts = NULL
    cdef floating* tdel = NULL
    cdef floating* tzs = NULL
    cdef floating* z2 = NULL
    cdef floating* tout = NULL
    # the row buffers follow every block's workspace, and this thread's follows them
    cdef floating* shared_x = ws + unit_block(d, H, k, batch_size, n_blocks, n_blocks,
                                              with_z).start
    cdef intp x_len = pad16(batch_size * d), g = 0
    cdef bint share_rows = (tg_all.rows != NULL and T > 1 and not direct
                            and batch_size * d * <intp> sizeof(floating) >= SHARE_ROWS_BYTES)
    # no row buffers with the row products (unit_split_values)
    cdef int n_row_buffers = 0 if direct else row_buffers(T)
    xb = shared_x + tid * x_len if not direct else NULL
    mine = shared_x + n_row_buffers * x_len \
        + tid * (unit_thread_size(d, H, k, batch_size, n_blocks)
                 + tail_thread_size(net.units, net.hidden, L, batch_size))
    out = mine
    dz = out + pad16(batch_size * k)
    b2 = dz + pad16(batch_size * k)
    gb2 = b2 + pad16(k)
    b2_s1 = gb2 + pad16(k)
    b2_s2 = b2_s1 + pad16(k)
    w2t = b2_s2 + pad16(k)
    g2t = w2t + pad16((H + n_blocks - 1) // n_blocks * k)
    if L == 2:
        # one hidden layer: block j makes rows [m j / B, m (j + 1) / B) of the output,
        # its loss and dz (in place of the output: one buffer fewer to write, and to
        # take from the core that read it last), in thread 0's buffer, which every
        # thread then reads
        out = shared_x + n_row_buffers * x_len
        dz = out
    else:
        # with a tail, block j runs the tail over those rows, in this thread's
        # buffers, and writes their rows of dz_2 into thread 0's
        dz = shared_x + n_row_buffers * x_len + pad16(batch_size * k)
    if L > 2:
        tp = mine + unit_thread_size(d, H, k, batch_size, n_blocks)
        tgr = tp + n_t
        ts1 = tgr + n_t
        ts2 = ts1 + n_t
        tacts = ts2 + n_t
        tdel = tacts + t_rows
        if tail_z:
            tzs = tdel + t_rows
            z2 = tzs + t_rows
        tail.n_layers = Lt
        tail.units = net.units + 2
        tail.coef_off = tail_off
        tail.inter_off = tail_off + Lt
        tail.act_off = tail_off + 2 * Lt
        tail.hidden = net.hidden + 2 if Lt > 1 else NULL
        tail.keep = NULL
        tail.rng = NULL
        tail.output = net.output
        tail.loss = net.loss
        tail.alpha = net.alpha
        tail.sparse = False
        tail.indices = NULL
        tail.indptr = NULL
        tout = tacts + tail_off[2 * Lt + Lt - 1]
        # the tail's input, h_2, is read where it lies: the block's rows of this
        # thread's z_2 buffer
        tail_in.rows = NULL
        tail_in.start = 0
        tail_in.labels = NULL
        tail_in.bad = NULL
        pack_tail(net, tail_off, params, state_1, state_2, tp, ts1, ts2, False)
    memcpy(b2, params + net.inter_off[1], k * sizeof(floating))
    memcpy(b2_s1, state_1 + net.inter_off[1], k * sizeof(floating))
    if adam:
        memcpy(b2_s2, state_2 + net.inter_off[1], k * sizeof(floating))
    pack_unit_blocks(net, ws, batch_size, n_blocks, first, last, with_z, params, state_1,
                     state_2, False)

    pb_clock_start()
    for e in range(loop.n_epochs):
        epoch_begins(loop, total, tid, T)
        start = 0
        cut_short = False
        # the first epoch gathers every row: it checks them, if asked. A thread that
        # finds NaN or infinity sets the stop flag read after the barrier that ends
        # the forward pass of the batch it gathered
        tg.bad = &found if e == 0 and tg_all.bad != NULL else NULL
        if share_rows:
            # the epoch's first batch; later ones are gathered during the batch before
            gather_share(X, tg.rows, 0, min(batch_size, n_rows), d,
                         shared_x + (g % SHARED_ROW_BUFFERS) * x_len, tid, T, tg.bad)
            if found:
                stop[parity] = 1
            pb_timed_barrier(0)
        while start < n_rows:
            m = min(batch_size, n_rows - start)
            tg.start = start
            if tg.rows == NULL:
                x_rows = X + start * d
                x_base = x_rows
                rows_at = NULL
            elif direct:
                x_rows = NULL
                x_base = X
                rows_at = tg.rows + start
                if tg.bad != NULL:
                    for i in range(m * tid // T, m * (tid + 1) // T):
                        found |= not all_finite(X + rows_at[i] * d, d)
                    if found:
                        stop[parity] = 1
            elif share_rows:
                x_rows = shared_x + (g % SHARED_ROW_BUFFERS) * x_len
            else:
                gather_share(X, tg.rows, start, m, d, xb, 0, 1, tg.bad)
                x_rows = xb
                if found:
                    stop[parity] = 1
            # forward, block by block: h_j = f(x W1_j + b1_j), part_j = h_j W2_j
            for j in range(first, last):
                blk = unit_block(d, H, k, batch_size, n_blocks, j, with_z)
                Hj = blk.units
                p_j = ws + blk.start
                h_j = p_j + blk.h
                z_j = h_j + 2 * blk.rows
                part = p_j + blk.part + parity * blk.part_len
                rows_times(direct, x_base, rows_at, x_rows, m, d, p_j, Hj, h_j)
                bias_activate(act, h_j, p_j + blk.n_w, m, Hj, z_j if with_z else NULL)
                rows_times(direct_2, h_j, NULL, h_j, m, Hj, p_j + d * Hj, k, part)
            if share_rows and start + batch_size < n_rows:
                gather_share(X, tg.rows, start + batch_size,
                             min(batch_size, n_rows - start - batch_size), d,
                             shared_x + ((g + 1) % SHARED_ROW_BUFFERS) * x_len, tid, T,
                             tg.bad)
                if found:
                    # the next batch's rows: it stops before it changes anything
                    stop[1 - parity] = 1
            if T > 1:
                pb_timed_barrier(1)
            if tid == 0:
                add_pending_loss(&pending, total, sq_parts, n_blocks, net.alpha)
            if stop[parity]:
                # before this batch changed anything: the epoch is cut short
                cut_short = True
                break
            # block j takes rows [m j / B, m (j + 1) / B) of the batch on: z_2 = b2 +
            # the blocks' parts (added in block order) over them; with one hidden
            # layer z_2 is the output, whose rows the block turns into their softmax,
            # loss and dz (in place); with more, h_2 = f_2(z_2) runs the tail over
            # those rows to the loss and back to their rows of dz_2, and gives the
            # block's part of the tail's gradient
            for j in range(first, last):
                r0 = m * j // n_blocks
                r1 = m * (j + 1) // n_blocks
                if L > 2 and r1 == r0:
                    loss_parts[j] = 0
                    memset(tail_parts + j * n_t, 0, (n_tw + n_tb) * sizeof(floating))
                    continue
                o = out + r0 * k
                fill_rows(o, b2, r1 - r0, k)
                for jj in range(n_blocks):
                    blk = unit_block(d, H, k, batch_size, n_blocks, jj, with_z)
                    add_inplace(o, ws + blk.start + blk.part + parity * blk.part_len
                                + r0 * k, (r1 - r0) * k)
                tg_rows = tg
                tg_rows.start = tg.start + r0
                if L == 2:
                    if net.output == SOFTMAX:
                        softmax_rows(o, r1 - r0, k)
                    else:
                        activate(net.output, o, (r1 - r0) * k)
                    loss_parts[j] = output_loss(net, &tg_rows, r1 - r0, o, Y, sw, o, True)
                    continue
                if tail_z:
                    memcpy(z2 + r0 * k, o, (r1 - r0) * k * sizeof(floating))
                activate(net.hidden[1], o, (r1 - r0) * k)
                forward(&tail, o, &tail_in, r1 - r0, tp, tacts, NULL, tout, tzs, NULL)
                loss_parts[j] = output_loss(&tail, &tg_rows, r1 - r0, tout, Y, sw,
                                            tdel + tail_off[3 * Lt - 1], True)
                backward(&tail, o, &tail_in, r1 - r0, tp, tacts, tdel, NULL,
                         tail_parts + j * n_t, False, tzs, NULL, NULL)
                # dz_2 = (dz_3 W_3^T) ⊙ f_2'
                gemm(False, True, <int> (r1 - r0), <int> k, <int> net.units[3],
                     <floating> 1.0, tdel, <int> net.units[3], tp, <int> net.units[3],
                     <floating> 0.0, dz + r0 * k, <int> k)
                multiply_derivative(net.hidden[1], o, z2 + r0 * k if tail_z else NULL,
                                    dz + r0 * k, (r1 - r0) * k)
            # every block's rows of dz_2 and parts, before any thread reads them (they
            # are next written after the next batch's forward barrier, when every
            # thread is done with them)
            if T > 1:
                pb_timed_barrier(2)
            loss = 0
            for j in range(n_blocks):
                loss += loss_parts[j]
            if L > 2:
                # the tail's gradient: the blocks' parts added in block order (the
                # parts' padding past n_tw + n_tb is never written, nor read)
                memcpy(tgr, tail_parts, (n_tw + n_tb) * sizeof(floating))
                for j in range(1, n_blocks):
                    add_inplace(tgr, tail_parts + j * n_t, n_tw + n_tb)
            sw_sum = batch_weight(sw, &tg, m)
            lr_t = step_size(solver, loop.lr, beta_1, beta_2, &steps)
            if tid == 0:
                # added once every block has stepped (and so summed its w²)
                pending.loss = loss
                pending.sw_sum = sw_sum
                pending.m = m
                pending.parity = parity
                pending.tail_sq = 0.0     # set by thread 0's step of the tail, below
                pending.waiting = True
            # b2, in every thread alike
            memset(gb2, 0, k * sizeof(floating))
            colsum_add(dz, m, k, gb2)
            step_range(b2, gb2, <const floating*> NULL, b2_s1, b2_s2 if adam else NULL, k,
                       0.0, sw_sum, solver, lr_t, momentum, nesterov, beta_1, beta_2, epsilon)
            if L > 2:
                # the tail, in every thread alike: its weights (with the L2 term), then
                # its biases
                step_range(tp, tgr, <const floating*> NULL, ts1, ts2 if adam else NULL,
                           n_tw, net.alpha, sw_sum, solver, lr_t, momentum, nesterov,
                           beta_1, beta_2, epsilon,
                           &pending.tail_sq if tid == 0 else <double*> NULL)
                step_range(tp + n_tw, tgr + n_tw, <const floating*> NULL, ts1 + n_tw,
                           ts2 + n_tw if adam else NULL, n_tb, 0.0, sw_sum, solver, lr_t,
                           momentum, nesterov, beta_1, beta_2, epsilon)
            # backward and step, block by block
            for j in range(first, last):
                blk = unit_block(d, H, k, batch_size, n_blocks, j, with_z)
                Hj = blk.units
                n_w = blk.n_w
                p_j = ws + blk.start
                g_j = p_j + blk.stride
                s1_j = p_j + 2 * blk.stride
                s2_j = p_j + 3 * blk.stride
                h_j = p_j + blk.h
                dh_j = h_j + blk.rows
                z_j = dh_j + blk.rows
                # dW2_j = h_j^T dz;  dh_j = dz W2_j^T, then ⊙ f'. W2_j^T is copied out
                # first: BLAS runs dz @ (a k x Hj matrix) as a plain product, faster
                # than dz @ (an Hj x k matrix)^T for so small a k (4.6 against 6.2 µs
                # per digits batch and thread, the copy included)
                transpose(p_j + d * Hj, w2t, Hj, k)
                if narrow >= 0:
                    # all of it, and db1_j, in one pass over the rows
                    if floating is float:
                        pb_narrow_backf(h_j, dz, w2t, m, Hj, k, narrow, dh_j, g2t,
                                        g_j + n_w)
                    else:
                        pb_narrow_back(h_j, dz, w2t, m, Hj, k, narrow, dh_j, g2t,
                                       g_j + n_w)
                    transpose(g2t, g_j + d * Hj, k, Hj)
                else:
                    rows_t_times(direct_2, h_j, NULL, h_j, m, Hj, dz, k, g_j + d * Hj, rp)
                    rows_times(direct_2, dz, NULL, dz, m, k, w2t, Hj, dh_j)
                    # dz_j = dh_j ⊙ f', and db1_j = colsum(dz_j) in the same pass
                    memset(g_j + n_w, 0, Hj * sizeof(floating))
                    multiply_derivative_colsum(act, h_j, z_j if with_z else NULL, dh_j, m,
                                               Hj, g_j + n_w)
                # dW1_j = x^T dz_j
                rows_t_times(direct, x_base, rows_at, x_rows, m, d, dh_j, Hj, g_j, rp)
                # the step leaves Σ w² of the weights it stepped from (the L2 term)
                step_range(p_j, g_j, <const floating*> NULL, s1_j, s2_j if adam else NULL,
                           n_w, net.alpha, sw_sum, solver, lr_t, momentum, nesterov,
                           beta_1, beta_2, epsilon, &sq_parts[parity * n_blocks + j])
                step_range(p_j + n_w, g_j + n_w, <const floating*> NULL, s1_j + n_w,
                           s2_j + n_w if adam else NULL, Hj, 0.0, sw_sum, solver, lr_t,
                           momentum, nesterov, beta_1, beta_2, epsilon)
            if tid == 0 and signal_due(&last_check):
                stop[1 - parity] = 1
            parity = 1 - parity
            g += 1
            start += batch_size
        # the last batch's loss, once its blocks have stepped
        if T > 1:
            pb_timed_barrier(3)
        if tid == 0:
            add_pending_loss(&pending, total, sq_parts, n_blocks, net.alpha)
        if epoch_over(loop, e, total, cut_short, stop[0] or stop[1], tid, T):
            break

    if found:
        tg_all.bad[0] = 1
    # back into the flat layout
    pack_unit_blocks(net, ws, batch_size, n_blocks, first, last, with_z, params, state_1,
                     state_2, True)
    if tid == 0:
        memcpy(params + net.inter_off[1], b2, k * sizeof(floating))
        memcpy(state_1 + net.inter_off[1], b2_s1, k * sizeof(floating))
        if adam:
            memcpy(state_2 + net.inter_off[1], b2_s2, k * sizeof(floating))
        if L > 2:
            pack_tail(net, tail_off, params, state_1, state_2, tp, ts1, ts2, True)
        t[0] = steps


@cython.boundscheck(False)
@cython.wraparound(False)
cdef int _loss_grad(const Net* net, const floating* X, const floating* Y,
                    const floating* sw, Targets* tg, intp n_rows, intp chunk,
                    const floating* params, floating* grads, floating* acts,
                    floating* deltas, floating* zs, double* result) except -1 nogil:
    cdef intp start, m, L = net.n_layers
    cdef double loss_sum = 0, sw_sum = 0
    cdef floating* P = acts + net.act_off[L - 1]
    cdef double last_check = seconds()
    start = 0
    while start < n_rows:
        m = min(chunk, n_rows - start)
        tg.start = start
        forward(net, X, tg, m, params, acts, NULL, P, zs, NULL)
        loss_sum += output_loss(net, tg, m, P, Y, sw, deltas + net.act_off[L - 1])
        backward(net, X, tg, m, params, acts, deltas, NULL, grads, start > 0, zs, NULL,
                 NULL)
        start += chunk
        if start < n_rows and check_signals(&last_check) < 0:
            return -1
    tg.start = 0
    sw_sum = batch_weight(sw, tg, n_rows)
    result[0] = finish_gradient(net, params, grads, loss_sum, sw_sum)
    return 0


def loss_grad(const intp[::1] units, const intp[::1] coef_off, const intp[::1] inter_off,
              const intp[::1] act_off, const int[::1] hidden, int output, int loss,
              double alpha, const floating[::1] X, const int[::1] indices,
              const int[::1] indptr, const floating[::1] Y, const intp[::1] labels,
              const floating[::1] sw, intp n_rows, intp chunk, const floating[::1] params,
              floating[::1] grads, floating[::1] acts, floating[::1] deltas,
              floating[::1] zs):
    """Loss and gradient over rows 0..n_rows-1, processed ``chunk`` rows at a time
    (the full-batch objective L-BFGS minimises). The gradient goes to ``grads``.
    Raises KeyboardInterrupt between chunks on Ctrl-C."""
    cdef Net net = make_net(units, coef_off, inter_off, act_off, hidden, output, loss,
                            alpha, indices, indptr)
    cdef Targets tg
    cdef double result = 0
    check_sizes(&net, params.shape[0], X.shape[0], n_rows)
    if grads.shape[0] < params.shape[0]:
        raise ValueError("grads holds fewer values than params")
    tg.rows = NULL
    tg.labels = &labels[0] if labels.shape[0] > 0 else NULL
    tg.bad = NULL
    with nogil:
        _loss_grad(&net, &X[0], cptr_or_null(Y), cptr_or_null(sw), &tg, n_rows, chunk,
                   &params[0], &grads[0], &acts[0], &deltas[0], ptr_or_null(zs), &result)
    return result


cdef inline bint all_finite(const floating* x, intp n) noexcept nogil:
    """No NaN or infinity among n values (x - x is 0 exactly for finite x)."""
    cdef intp i
    cdef int bad = 0
    for i in range(n):
        bad |= (x[i] - x[i]) != 0     # NaN for NaN and ±inf; an integer OR vectorises
    return bad == 0


def predict(const intp[::1] units, const intp[::1] coef_off, const intp[::1] inter_off,
            const intp[::1] act_off, const int[::1] hidden, int output,
            const floating[::1] X, const int[::1] indices, const int[::1] indptr,
            intp n_rows, intp chunk, const floating[::1] params, floating[::1] acts,
            floating[::1] out, bint check_finite=False, int n_threads=1):
    """Output-layer activations of rows 0..n_rows-1 into ``out`` (n_rows × n_outputs).

    With ``check_finite``, each chunk of X is first scanned for NaN / infinity (the
    product then reads it from cache); returns False, with ``out`` unfinished, at the
    first chunk that holds one. Returns True otherwise.

    For dense X with row_products() on, the products are _rowgemm.h's, which call no
    BLAS (so OpenBLAS's threads, which spin for a while after each threaded call, stay
    asleep), and each row's outputs are the same bits whatever the chunks and the
    threads; with n_threads > 1, OpenMP threads then take the chunks in turn, each with
    its own workspace: ``acts`` holds n_threads workspaces of equal length, one after
    the other. Otherwise n_threads must be 1, and BLAS runs as it is set."""
    cdef Net net = make_net(units, coef_off, inter_off, act_off, hidden, output, 0,
                            0.0, indices, indptr)
    cdef intp L = units.shape[0] - 1, k = units[L], stride, need, i
    cdef bint row_products = ROW_PRODUCTS and not net.sparse
    cdef int stop = 0
    check_sizes(&net, params.shape[0], X.shape[0], n_rows)
    if out.shape[0] < n_rows * k:
        raise ValueError("out holds fewer than n_rows rows of outputs")
    if n_threads < 1 or chunk < 1:
        raise ValueError("n_threads and chunk must be at least 1")
    if n_threads > 1 and not row_products:
        raise ValueError("predict shares chunks among threads only with the row "
                         "products (dense X, row_products() on)")
    stride = acts.shape[0] // n_threads
    # every hidden layer's block of chunk rows inside one workspace
    need = 0
    for i in range(L - 1):
        if act_off[i] < 0:
            raise ValueError("act_off holds a negative offset")
        need = max(need, act_off[i] + chunk * units[i + 1])
    if stride < need:
        raise ValueError("acts holds fewer values than n_threads workspaces of chunk "
                         "rows' activations")
    if n_rows == 0:
        return True
    if n_threads > 1:
        with nogil, parallel(num_threads=n_threads):
            _predict_share(&net, &X[0], n_rows, chunk, &params[0], &acts[0], stride,
                           &out[0], check_finite, row_products, &stop)
    else:
        with nogil:
            _predict_share(&net, &X[0], n_rows, chunk, &params[0], &acts[0], stride,
                           &out[0], check_finite, row_products, &stop)
    return not stop


cdef void _predict_share(const Net* net, const floating* X, intp n_rows, intp chunk,
                         const floating* params, floating* acts, intp stride,
                         floating* out, bint check_finite, bint row_products,
                         int* stop) noexcept nogil:
    """One thread's chunks of predict (outside a parallel region, thread 0 of 1: all
    of them, in order): chunk c goes to thread c mod T, with workspace
    acts + tid * stride. A chunk holding NaN or infinity sets stop[0], and every
    thread stops at its next chunk."""
    cdef int tid = pb_thread_num(), T = pb_num_threads()
    cdef intp c, start, m, d = net.units[0], k = net.units[net.n_layers]
    cdef intp n_chunks = (n_rows + chunk - 1) // chunk
    cdef bint finite
    cdef Targets tg
    tg.rows = NULL
    tg.labels = NULL
    tg.bad = NULL
    c = tid
    while c < n_chunks:
        if pb_load_int(stop):
            return
        start = c * chunk
        m = min(chunk, n_rows - start)
        if check_finite:
            if net.sparse:
                finite = all_finite(X + net.indptr[start],
                                    net.indptr[start + m] - net.indptr[start])
            else:
                finite = all_finite(X + start * d, m * d)
            if not finite:
                pb_store_int(stop, 1)
                return
        tg.start = start
        forward(net, X, &tg, m, params, acts + tid * stride, NULL, out + start * k, NULL,
                NULL, row_products)
        c += T


def trace(const intp[::1] units, const intp[::1] coef_off, const intp[::1] inter_off,
          const intp[::1] act_off, const int[::1] hidden, int output, int loss,
          double alpha, const floating[::1] X, const int[::1] indices,
          const int[::1] indptr, const floating[::1] Y, const intp[::1] labels,
          const floating[::1] sw, intp n_rows, const floating[::1] params,
          floating[::1] grads, floating[::1] zs, floating[::1] acts, floating[::1] dhs,
          floating[::1] deltas):
    """One batch of rows 0..n_rows-1 with every intermediate kept: z and h of each
    layer, dh of each hidden layer, the (unscaled) dz of each layer, and the finished
    gradient. Returns ``(loss, S)``; dz / S is the derivative of the loss."""
    cdef Net net = make_net(units, coef_off, inter_off, act_off, hidden, output, loss,
                            alpha, indices, indptr)
    cdef Targets tg
    cdef intp L = net.n_layers
    cdef double loss_sum, sw_sum = 0, result
    cdef const floating* swp = cptr_or_null(sw)
    cdef floating* P = &acts[0] + net.act_off[L - 1]
    check_sizes(&net, params.shape[0], X.shape[0], n_rows)
    if grads.shape[0] < params.shape[0]:
        raise ValueError("grads holds fewer values than params")
    tg.rows = NULL
    tg.start = 0
    tg.labels = &labels[0] if labels.shape[0] > 0 else NULL
    tg.bad = NULL
    with nogil:
        forward(&net, &X[0], &tg, n_rows, &params[0], &acts[0], NULL, P, &zs[0], NULL)
        loss_sum = output_loss(&net, &tg, n_rows, P, cptr_or_null(Y), swp,
                               &deltas[0] + net.act_off[L - 1])
        backward(&net, &X[0], &tg, n_rows, &params[0], &acts[0], &deltas[0], NULL,
                 &grads[0], False, &zs[0], NULL, &dhs[0])
        sw_sum = batch_weight(swp, &tg, n_rows)
        result = finish_gradient(&net, &params[0], &grads[0], loss_sum, sw_sum)
    return result, sw_sum
