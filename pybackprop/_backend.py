"""The two backends behind one interface, and the data they are handed.

``Net`` says what the network computes, ``Data`` holds validated training data in the
layout the kernels read (C-contiguous dense rows, or CSR with int32 indices).
``CythonBackend`` owns the per-fit workspaces and calls csrc/_kernels.pyx;
``NumpyBackend`` calls the reference in ``_reference.py``. Every shape the kernels rely
on has been checked by the estimator before either is built.
"""

import numpy as np
import scipy.sparse as sp

from . import _kernels, _reference
from ._layout import ACTIVATION_CODES, LOSS_CODES, NEEDS_Z
from ._threads import predict_threads

# raised by run_epoch when the rows it checks hold NaN or infinity
NonFiniteInput = _kernels.NonFiniteInput

_EMPTY_INT = np.empty(0, dtype=np.intc)
_EMPTY_INTP = np.empty(0, dtype=np.intp)
# rows per chunk when a whole data set goes through (predict, L-BFGS): the activation
# workspace stays near this many values
_CHUNK_VALUES = 1 << 22


def typed(kernel, dtype):
    """The float or double specialisation of a fused kernel, skipping per-call dispatch."""
    return kernel["float" if dtype == np.float32 else "double"]


_EMPTY_DOUBLE = np.empty(0, dtype=np.float64)


class Net:
    """What the network computes: layer sizes, one activation name per hidden layer,
    the output activation, the loss, the L2 strength, and the dropout rate of each
    hidden layer (all zero: no dropout)."""

    def __init__(self, layout, hidden, output, loss, alpha, dropout=None):
        self.layout = layout
        n_hidden = layout.n_layers - 1
        self.hidden = [hidden] * n_hidden if isinstance(hidden, str) else list(hidden)
        self.output = output
        self.loss = loss
        self.alpha = float(alpha)
        rates = np.zeros(n_hidden) if dropout is None else np.broadcast_to(
            np.asarray(dropout, dtype=np.float64), (n_hidden,))
        self.dropout = np.array(rates, dtype=np.float64)
        self.needs_z = any(name in NEEDS_Z for name in self.hidden)

    def codes(self):
        hidden = np.array([ACTIVATION_CODES[h] for h in self.hidden], dtype=np.intc)
        return hidden, ACTIVATION_CODES[self.output], LOSS_CODES[self.loss]

    @property
    def keep(self):
        """Keep-probabilities for the kernels; empty when nothing is dropped."""
        if not self.dropout.any():
            return _EMPTY_DOUBLE
        return np.ascontiguousarray(1.0 - self.dropout)

    def chunk_rows(self, n_rows):
        return int(max(1, min(n_rows, _CHUNK_VALUES // int(self.layout.units[1:].sum()))))


def _check_csr(X):
    """The kernels follow indptr and indices without bounds checks: a CSR matrix
    whose arrays were corrupted (scipy checks them only on request) is refused."""
    indptr, indices = X.indptr, X.indices
    n_rows, n_cols = X.shape
    ok = (indptr.shape == (n_rows + 1,) and indptr[0] == 0
          and indptr[-1] <= min(indices.shape[0], X.data.shape[0])
          and (n_rows == 0 or np.diff(indptr).min() >= 0))
    nnz = int(indptr[-1]) if ok else 0
    if ok and nnz:
        used = indices[:nnz]
        ok = used.min() >= 0 and used.max() < n_cols
    if not ok:
        raise ValueError("Sparse X is not a valid CSR matrix: its indptr or indices are "
                         "out of range.")


def kernel_input(X, dtype):
    """(values, indices, indptr) as the kernels read X: dense rows, or CSR parts."""
    if sp.issparse(X):
        X = X.tocsr()
        if X.nnz >= np.iinfo(np.intc).max or X.shape[1] >= np.iinfo(np.intc).max:
            raise ValueError("Sparse X with 2**31 or more nonzeros or columns is not supported.")
        _check_csr(X)
        return (np.ascontiguousarray(X.data, dtype=dtype),
                np.ascontiguousarray(X.indices, dtype=np.intc),
                np.ascontiguousarray(X.indptr, dtype=np.intc))
    X = np.ascontiguousarray(X, dtype=dtype)
    return X.reshape(-1), _EMPTY_INT, _EMPTY_INT


class Data:
    """Training rows: X, the target matrix Y (one-hot for multiclass), class codes for
    multiclass, and sample weights (or None)."""

    def __init__(self, X, Y, sample_weight, multiclass, dtype):
        self.X = X.tocsr() if sp.issparse(X) else np.ascontiguousarray(X, dtype=dtype)
        self.Y = Y
        self.n_samples = X.shape[0]
        self.sample_weight = sample_weight
        self.multiclass = multiclass
        self.dtype = dtype
        self._kernel = None

    def for_kernels(self):
        if self._kernel is None:
            values, indices, indptr = kernel_input(self.X, self.dtype)
            if self.multiclass:
                labels = np.ascontiguousarray(self.Y.argmax(axis=1), dtype=np.intp)
                Y = np.empty(0, dtype=self.dtype)
            else:
                labels = _EMPTY_INTP
                Y = np.ascontiguousarray(self.Y, dtype=self.dtype).reshape(-1)
            sw = (np.empty(0, dtype=self.dtype) if self.sample_weight is None
                  else np.ascontiguousarray(self.sample_weight, dtype=self.dtype))
            self._kernel = (values, indices, indptr, Y, labels, sw)
        return self._kernel


class EpochRun:
    """Several epochs in one kernel call (``CythonBackend.run_epoch(..., epochs=)``):
    the shuffle's MT19937 state (a copy of ``RandomState.get_state()``'s, or None for
    no shuffle), the training-loss stopping rule's state, SGD's learning-rate schedules,
    and the loss sum of each epoch run, which the kernel fills in."""

    def __init__(self, n_epochs, mt_state, tol, patience, best_loss, no_improvement,
                 optimizer=None, t_start=0):
        self.totals = np.zeros(n_epochs)
        # SGD's invscaling schedule, run by the kernel after each epoch from the
        # samples seen so far (the estimator's t_)
        self.invscaling = getattr(optimizer, "lr_schedule", None) == "invscaling"
        self.lr_init = float(optimizer.learning_rate_init) if self.invscaling else 0.0
        self.power_t = float(optimizer.power_t) if self.invscaling else 0.0
        # its adaptive schedule, which divides the rate by 5 where the stopping rule
        # would stop (SGDState.trigger_stopping)
        self.adaptive = getattr(optimizer, "lr_schedule", None) == "adaptive"
        self.t_start = int(t_start)
        self.state = np.array([best_loss, no_improvement, 0.0])
        self.tol = float(tol)
        self.patience = float(patience)
        self.key = self.pos = None
        if mt_state is not None:
            self.key = np.array(mt_state["key"], dtype=np.uint32)
            self.pos = np.array([mt_state["pos"]], dtype=np.intp)

    def kernel_args(self):
        """run_epoch's keyword arguments for these epochs."""
        args = dict(n_epochs=len(self.totals), totals=self.totals, mt_key=self.key,
                    mt_pos=self.pos, tol=self.tol, patience=self.patience,
                    epoch_state=self.state)
        if self.invscaling:
            args.update(invscaling=True, lr_init=self.lr_init, power_t=self.power_t,
                        t_start=self.t_start)
        if self.adaptive:
            args.update(adaptive=True)
        return args

    @property
    def done(self):
        """Epochs run whole (and recorded in ``totals``)."""
        return int(self.state[2])


class CythonBackend:
    """Workspaces allocated once per fit; every epoch and every L-BFGS evaluation
    reuses them."""

    runs_epochs = True  # run_epoch takes epochs=EpochRun
    rows_unchecked = False  # see run_epoch

    def __init__(self, net, data, batch_rows, n_blocks=1, n_threads=1, by_units=False,
                 block_grads=True):
        self.net = net
        self.data = data
        self.n_blocks = n_blocks
        self.n_threads = n_threads
        self.block_grads = block_grads
        self._epoch_static = None
        lay = net.layout
        # a net whose first hidden layer is cut by units keeps everything in this
        # workspace
        self.split_ws = None
        if by_units:
            # float32 with the row products gathers no rows: no row buffers
            self.split_ws = np.empty(_kernels.unit_split_size(
                lay.units, net.codes()[0], batch_rows, n_blocks, n_threads,
                data.dtype == np.float32 and _kernels.row_products()),
                dtype=data.dtype)
        self.rows = batch_rows
        # the row-wise workspaces, unused (one value each) when the workspace above
        # holds everything
        self.act_off, size = lay.act_offsets(batch_rows)
        size = 1 if by_units else max(size, 1)
        self.acts = np.empty(size, dtype=data.dtype)
        self.deltas = np.empty(size, dtype=data.dtype)
        dense = not sp.issparse(data.X) and not by_units
        self.xbuf = np.empty(batch_rows * int(lay.units[0]) if dense else 0, dtype=data.dtype)
        # one gradient buffer per block of a batch, or one for all of them (see
        # _threads.block_gradients)
        n_grads = 0 if by_units else n_blocks if block_grads else 1
        n_values = lay.n_params * n_grads
        self.index_ws = None
        if sp.issparse(data.X) and n_grads == 1 and n_blocks > 1:
            # a sparse first layer's gradient is made a chunk of W_1 at a time, in a
            # scratch block per thread: no room for W_1 (see the kernels' block_step)
            d, h1 = int(lay.units[0]), int(lay.units[1])
            batch_nnz = _kernels.sparse_batch_nnz(data.for_kernels()[2], batch_rows)
            scratch, index = _kernels.sparse_step_sizes(d, h1, n_blocks, batch_nnz)
            n_values = lay.n_params - d * h1 + n_threads * scratch
            self.index_ws = np.empty(n_threads * index, dtype=np.intp)
        self.grads = np.empty(max(1, n_values), dtype=data.dtype)
        empty = np.empty(0, dtype=data.dtype)
        self.zs = np.empty(size, dtype=data.dtype) if net.needs_z else empty
        self.masks = np.empty(size, dtype=data.dtype) if net.keep.size else empty

    def _args(self):
        lay = self.net.layout
        hidden, output, loss = self.net.codes()
        return (lay.units, lay.coef_off, lay.inter_off, self.act_off, hidden, output,
                loss, self.net.alpha)

    def _epoch_args(self):
        """The arguments of run_epoch that stay the same from epoch to epoch."""
        if self._epoch_static is None:
            self._epoch_static = (self._args() + self.data.for_kernels(), self.net.keep)
        return self._epoch_static

    def run_epoch(self, params, rows, n_rows, batch_size, opt, seed=0, epochs=None):
        """One epoch over ``rows`` (None: rows 0..n_rows-1), returning its loss sum;
        with ``epochs`` (an EpochRun), the epochs it describes, shuffling ``rows`` in
        place, returning how many ran.

        While ``rows_unchecked``, the call's first epoch checks the rows of X as it
        gathers them (they must be all of them), raising NonFiniteInput at NaN or
        infinity; once it returns, X is checked."""
        static, keep = self._epoch_args()
        state_1, state_2 = opt.buffers
        check = self.rows_unchecked
        if check and (rows is None or len(rows) != self.data.n_samples
                      or sp.issparse(self.data.X)):
            raise ValueError("checking X in the epoch needs every row of dense X, "
                             "shuffled")
        rows = _EMPTY_INTP if rows is None else np.ascontiguousarray(rows, dtype=np.intp)
        nesterov = bool(getattr(opt, "nesterov", False))
        # Adam's step count, advanced in place by the kernel: kept right even when
        # Ctrl-C stops the epoch midway
        steps = np.array([opt.t], dtype=np.intp)
        nonfinite = np.zeros(1, dtype=np.int32) if check else None
        try:
            result = typed(_kernels.run_epoch, params.dtype)(
                *static, rows, n_rows,
                batch_size, params, self.grads, self.acts, self.deltas, self.xbuf, self.zs,
                keep, seed, self.masks, opt.kind, state_1, state_2,
                opt.learning_rate_init if opt.kind == 1 else opt.learning_rate,
                getattr(opt, "momentum", 0.0), nesterov, getattr(opt, "beta_1", 0.0),
                getattr(opt, "beta_2", 0.0), getattr(opt, "epsilon", 0.0), steps,
                self.n_blocks, self.n_threads, self.split_ws,
                block_grads=self.block_grads, index_ws=self.index_ws,
                **({} if epochs is None else epochs.kernel_args()),
                **({} if nonfinite is None else {"nonfinite": nonfinite}),
            )
        finally:
            opt.steps_taken(int(steps[0]))
        if check:
            if nonfinite[0]:
                # (the kernel raises this itself once its threads have stopped)
                raise NonFiniteInput("X holds NaN or infinity")
            self.rows_unchecked = False
        return result

    def loss_grad(self, params, grads):
        values, indices, indptr, Y, labels, sw = self.data.for_kernels()
        return typed(_kernels.loss_grad, params.dtype)(*self._args(), values, indices, indptr, Y, labels, sw,
                                  self.data.n_samples, self.rows, params, grads,
                                  self.acts, self.deltas, self.zs)


class NumpyBackend:
    def __init__(self, net, data, batch_rows, n_blocks=1, n_threads=1, by_units=False,
                 block_grads=True):
        self.net = net
        self.data = data

    def run_epoch(self, params, rows, n_rows, batch_size, opt, seed=0):
        return _reference.run_epoch(self.net, self.data, params, rows, n_rows, batch_size,
                                    opt, seed)

    def loss_grad(self, params, grads):
        return _reference.loss_grad(self.net, self.data, params, grads)


BACKENDS = {"cython": CythonBackend, "numpy": NumpyBackend}


def predict(net, X, params, backend, check_finite=False):
    """Output-layer activations for every row of X (already of params' dtype); None
    when ``check_finite`` finds NaN or infinity in X."""
    if backend == "numpy":
        if check_finite and not np.isfinite(X.data if sp.issparse(X) else X).all():
            return None
        out = _reference.predict(net, X, params)
        return np.ascontiguousarray(out, dtype=params.dtype)
    lay = net.layout
    n = X.shape[0]
    # chunks of about 8 MB of X, so that the finiteness scan leaves each in cache for
    # its product; the activations of a chunk bound it too
    x_bytes = max(1, int(lay.units[0]) * params.itemsize)
    chunk = max(1, min(net.chunk_rows(n), max(64, (8 << 20) // x_bytes)))
    threads = predict_threads(n, lay.units, params.dtype, sp.issparse(X))
    if threads > 1:
        # the threads' chunks: a chunk's rows of X and its activations within about
        # 1 MiB (one core's L2 here), where the products reuse them; 96 to 384 rows
        # gave the same time for mnist-shape's predict-100k (4.7 kB a row), 2675 rows
        # (8 MB of X) took 10 % more
        row_bytes = int(lay.units.sum() - lay.units[-1]) * params.itemsize
        chunk = max(1, min(chunk, max(64, (1 << 20) // row_bytes), -(-n // threads)))
    act_off, size = lay.act_offsets(chunk)
    acts = np.empty(max(size, 1) * threads, dtype=params.dtype)
    out = np.empty((n, int(lay.units[-1])), dtype=params.dtype)
    values, indices, indptr = kernel_input(X, params.dtype)
    hidden, output, _ = net.codes()
    finite = typed(_kernels.predict, params.dtype)(
        lay.units, lay.coef_off, lay.inter_off, act_off, hidden, output, values, indices,
        indptr, n, chunk, params, acts, out.reshape(-1), check_finite, threads)
    return out if finite else None
