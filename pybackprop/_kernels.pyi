"""Type stub of the compiled kernels (csrc/_kernels.pyx).

Every kernel is fused over float32 / float64: one call takes arrays of one float type
throughout (``X``, ``Y``, ``sw``, ``params``, ``grads`` and the workspaces), and
``kernel["float"]`` / ``kernel["double"]`` selects a specialisation without per-call
dispatch. Arrays are 1-D and C-contiguous (2-D data flattened row-major); empty arrays
stand for "absent" (dense X: empty ``indices`` / ``indptr``; no sample weights: empty
``sw``; targets as class codes: empty ``Y``, else empty ``labels``). Shapes are checked
by the caller (pybackprop._backend), not here.
"""

from typing import Literal, Protocol, TypeVar

import numpy as np
from numpy.typing import NDArray

_Float = TypeVar("_Float", np.float32, np.float64)
_Specialisation = Literal["float", "double"]

class _RunEpoch(Protocol):
    def __call__(
        self,
        units: NDArray[np.intp],
        coef_off: NDArray[np.intp],
        inter_off: NDArray[np.intp],
        act_off: NDArray[np.intp],
        hidden: NDArray[np.intc],
        output: int,
        loss: int,
        alpha: float,
        X: NDArray[_Float],
        indices: NDArray[np.intc],
        indptr: NDArray[np.intc],
        Y: NDArray[_Float],
        labels: NDArray[np.intp],
        sw: NDArray[_Float],
        rows: NDArray[np.intp],
        n_rows: int,
        batch_size: int,
        params: NDArray[_Float],
        grads: NDArray[_Float],
        acts: NDArray[_Float],
        deltas: NDArray[_Float],
        xbuf: NDArray[_Float],
        zs: NDArray[_Float],
        keep: NDArray[np.float64],
        seed: int,
        masks: NDArray[_Float],
        solver: int,
        state_1: NDArray[_Float],
        state_2: NDArray[_Float],
        lr: float,
        momentum: float,
        nesterov: bool,
        beta_1: float,
        beta_2: float,
        epsilon: float,
        step_count: NDArray[np.intp],
        n_blocks: int = ...,
        n_threads: int = ...,
        split_ws: NDArray[_Float] | None = ...,
        n_epochs: int = ...,
        totals: NDArray[np.float64] | None = ...,
        mt_key: NDArray[np.uint32] | None = ...,
        mt_pos: NDArray[np.intp] | None = ...,
        tol: float = ...,
        patience: float = ...,
        epoch_state: NDArray[np.float64] | None = ...,
        block_grads: bool = ...,
        index_ws: NDArray[np.intp] | None = ...,
        invscaling: bool = ...,
        lr_init: float = ...,
        power_t: float = ...,
        t_start: int = ...,
        adaptive: bool = ...,
        nonfinite: NDArray[np.intc] | None = ...,
    ) -> float:
        """One epoch of minibatch updates; returns Σ batch_loss · batch_rows. With
        ``totals``, up to ``n_epochs`` epochs (shuffled with ``mt_key`` / ``mt_pos``,
        stopped by the training-loss rule on ``epoch_state``); returns how many ran.
        ``block_grads``: a gradient buffer per block of rows in ``grads``, summed
        (else one, each block making its share over the whole batch; for sparse X,
        without W_1's part but with a scratch block per thread, and ``index_ws``).
        ``nonfinite``: the first epoch checks the rows it gathers, and raises
        NonFiniteInput (setting ``nonfinite[0]``) at NaN or infinity."""
    def __getitem__(self, key: _Specialisation) -> _RunEpoch: ...

class _LossGrad(Protocol):
    def __call__(
        self,
        units: NDArray[np.intp],
        coef_off: NDArray[np.intp],
        inter_off: NDArray[np.intp],
        act_off: NDArray[np.intp],
        hidden: NDArray[np.intc],
        output: int,
        loss: int,
        alpha: float,
        X: NDArray[_Float],
        indices: NDArray[np.intc],
        indptr: NDArray[np.intc],
        Y: NDArray[_Float],
        labels: NDArray[np.intp],
        sw: NDArray[_Float],
        n_rows: int,
        chunk: int,
        params: NDArray[_Float],
        grads: NDArray[_Float],
        acts: NDArray[_Float],
        deltas: NDArray[_Float],
        zs: NDArray[_Float],
    ) -> float:
        """Full-batch loss; the gradient is written to ``grads``."""
    def __getitem__(self, key: _Specialisation) -> _LossGrad: ...

class _Predict(Protocol):
    def __call__(
        self,
        units: NDArray[np.intp],
        coef_off: NDArray[np.intp],
        inter_off: NDArray[np.intp],
        act_off: NDArray[np.intp],
        hidden: NDArray[np.intc],
        output: int,
        X: NDArray[_Float],
        indices: NDArray[np.intc],
        indptr: NDArray[np.intc],
        n_rows: int,
        chunk: int,
        params: NDArray[_Float],
        acts: NDArray[_Float],
        out: NDArray[_Float],
        check_finite: bool = ...,
        n_threads: int = ...,
    ) -> bool:
        """Output-layer activations of rows 0..n_rows-1 into ``out``; False when
        ``check_finite`` met NaN or infinity in X. n_threads > 1 (float32, dense X,
        row_products() on) shares the chunks among threads, each with its own
        workspace in ``acts``."""
    def __getitem__(self, key: _Specialisation) -> _Predict: ...

class _Trace(Protocol):
    def __call__(
        self,
        units: NDArray[np.intp],
        coef_off: NDArray[np.intp],
        inter_off: NDArray[np.intp],
        act_off: NDArray[np.intp],
        hidden: NDArray[np.intc],
        output: int,
        loss: int,
        alpha: float,
        X: NDArray[_Float],
        indices: NDArray[np.intc],
        indptr: NDArray[np.intc],
        Y: NDArray[_Float],
        labels: NDArray[np.intp],
        sw: NDArray[_Float],
        n_rows: int,
        params: NDArray[_Float],
        grads: NDArray[_Float],
        zs: NDArray[_Float],
        acts: NDArray[_Float],
        dhs: NDArray[_Float],
        deltas: NDArray[_Float],
    ) -> tuple[float, float]:
        """One batch with every intermediate kept; returns ``(loss, S)``."""
    def __getitem__(self, key: _Specialisation) -> _Trace: ...

run_epoch: _RunEpoch
loss_grad: _LossGrad
predict: _Predict
trace: _Trace

BUILD_FLAGS: str
HAVE_OPENMP: bool

class NonFiniteInput(ValueError):
    """X holds NaN or infinity, found by run_epoch's check of the rows it gathers."""

def max_threads() -> int:
    """Threads a parallel region started from this thread would get."""

def row_products(enable: bool | None = None) -> bool:
    """Whether float32 fits cut by hidden units and float32 predict make their
    products from X's rows in place (AVX-512 only); ``enable`` sets it first."""

def narrow_backward(enable: bool | None = None) -> bool:
    """Whether fits cut by hidden units run the backward through a second layer of at
    most 12 outputs in one fused pass (AVX-512 only); ``enable`` sets it first."""

def barrier_clock(enable: bool | None = None) -> bool:
    """Whether the epoch loops' barriers are timed; ``enable`` sets it first and clears
    the times."""

def barrier_times() -> list[list[list[float]]]:
    """64 threads x 4 sites x [seconds worked before, seconds waited, barriers]: the
    barrier clock's sums; sites: an epoch's start, a batch's first and second barrier,
    an epoch's end."""

def unit_split_size(
    units: NDArray[np.intp], hidden: NDArray[np.intc], batch_rows: int, n_blocks: int,
    n_threads: int, row_products: bool = ...
) -> int:
    """Workspace length for an epoch whose first hidden layer is cut by units
    (``row_products``: a float32 fit with row_products() on, which keeps no row
    buffers)."""

def sparse_batch_nnz(indptr: NDArray[np.int32], batch_size: int) -> int:
    """A bound on the nonzeros of any batch of ``batch_size`` rows of a CSR matrix."""

def sparse_step_sizes(
    fan_in: int, fan_out: int, n_blocks: int, batch_nnz: int
) -> tuple[int, int]:
    """Per thread: gradient scratch values and index workspace length for a sparse
    first layer in a fit whose blocks share one gradient."""
