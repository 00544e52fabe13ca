"""How many threads a fit runs on: OpenMP threads splitting each batch, and BLAS
threads inside each product.

A fit cuts each batch into blocks (fit_split), by rows or by the units of the first
hidden layer (cut_by_units), and OpenMP threads run the blocks; BLAS then runs on one
thread inside each. A fit that does not split (one block: dropout, tiny batches)
follows the rule below.

OpenBLAS splits a product over its threads and then waits for them, spinning. For the
small products of a minibatch (a 200 × 64 × 100 product takes tens of microseconds)
that hand-off costs about as much as the product, and when the other cores are busy
the waiting thread can stall a whole time slice: on this 2-core machine a digits fit
ran 10 times slower with two BLAS threads than with one under load (bench/run.py,
two-threads workload). So a fit in the main thread whose largest per-batch product is
small runs its products on one thread; larger products keep BLAS's own threading.
"""

import contextlib
import os
import threading

import numpy as np
from threadpoolctl import OpenBLASController, ThreadpoolController

from . import _kernels

# below this many flops in the largest product of a batch, BLAS gets one thread
SMALL_PRODUCT_FLOPS = 8e6

_controller = None
_lock = threading.Lock()
_holders = 0  # fits inside a one-thread section right now
_limiter = None  # threadpoolctl's limit, held while any of them runs


def _in_main_thread():
    """Only fits in the main thread change thread counts: fits in other threads may
    run side by side, and the counts are one number for the whole process."""
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def _one_blas_thread():
    """BLAS on one thread while a fit needs it, through threadpoolctl (which then
    gives the limit back, and its control of OpenBLAS, when the last such fit ends)."""
    global _controller, _holders, _limiter
    with _lock:
        if _holders == 0:
            if _controller is None:
                _controller = ThreadpoolController()
            _limiter = _controller.limit(limits=1, user_api="blas")
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0:
                _limiter.restore_original_limits()
                _limiter = None
                # threadpoolctl >= 3.6 lets one thread at a time control OpenBLAS:
                # hand that back, or other threads' limits silently do nothing
                clear = getattr(OpenBLASController, "clear_controlling_thread", None)
                if clear is not None:
                    clear()


def blas_threads_for(units, rows, n_threads=1):
    """Context: BLAS limited to one thread when batches are split over ``n_threads`` > 1
    threads, or when every product of a ``rows``-row batch through layers ``units`` is
    small; otherwise nothing changes."""
    if n_threads > 1:
        return _one_blas_thread()
    largest = max(2.0 * rows * a * b for a, b in zip(units[:-1], units[1:]))
    if largest >= SMALL_PRODUCT_FLOPS or not _in_main_thread():
        # BLAS's thread count is one number for the whole process: fits running in
        # other threads leave it alone (OpenBLAS did not take back its count reliably
        # when fits in two threads overlapped: tests/test_threads_memory.py)
        return contextlib.nullcontext()
    return _one_blas_thread()


# fewest rows in a block of a batch (see fit_split)
MIN_ROWS_PER_BLOCK = 8
# None: decide per fit; an int: that many blocks for every fit that can split
# (tests and benchmarks compare the two ways with it)
FORCE_BLOCKS = None

_forked = False


def _after_fork_in_child():
    # GNU OpenMP's thread pool does not survive fork(): a forked child that started a
    # parallel region could wait forever on threads that are not there
    global _forked
    _forked = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def usable_cores():
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def fit_split(rows, dropout):
    """``(n_blocks, n_threads)`` for a fit with ``rows``-row batches.

    Each batch is cut into n_blocks blocks of rows (one per usable core, each of at
    least MIN_ROWS_PER_BLOCK rows; one with dropout, whose random stream runs through
    the batch in order), and n_threads OpenMP threads share them. The blocks fix the
    arithmetic, so a fit gives the same bits on any number of threads: a fit in the
    main thread takes OpenMP's thread count (OMP_NUM_THREADS and threadpoolctl's
    "openmp" limit count); fits in other threads, which could oversubscribe the cores,
    and fits in a forked child run their blocks on one thread."""
    if dropout:
        return 1, 1
    if FORCE_BLOCKS is not None:
        blocks = max(1, min(int(FORCE_BLOCKS), rows))
    else:
        blocks = max(1, min(usable_cores(), rows // MIN_ROWS_PER_BLOCK))
    if (_forked or not _kernels.HAVE_OPENMP
            or not _in_main_thread()):
        return blocks, 1
    return blocks, max(1, min(blocks, _kernels.max_threads()))


# fewest flops of a predict (2 · rows · Σ fan_in · fan_out) that shares its chunks
# among threads: about 30 µs on one core. The digits model's predict_proba took 742
# against 429 µs for its 1797 rows on one thread and on two; 180 rows (2.7e6 flops),
# called back to back, 104 against 65 µs, and early stopping's epochs, which predict
# them, 1.10 against 0.90 ms; but 330 against 364 µs after 10 ms idle, when the
# other thread must first wake. 1e6 flops are 68 of its rows; fewer than 16 rows stay
# on one thread anyway (fit_split)
PARALLEL_PREDICT_FLOPS = 1e6


def predict_threads(n_rows, units, dtype, sparse):
    """OpenMP threads for a predict of n_rows rows through layers ``units``: one,
    unless X is dense, the products run without BLAS (the kernels' row_products())
    and the predict makes PARALLEL_PREDICT_FLOPS or more; then as many as a fit in
    this thread would take (fit_split's rules: OpenMP's thread count, one thread in a
    forked child or a thread other than the main one, where the products then run on
    one core where BLAS would have taken its own threads)."""
    if n_rows < 2 * MIN_ROWS_PER_BLOCK or sparse:
        return 1     # one block (fit_split), and no Python arithmetic in a small predict
    flops = 2.0 * n_rows * sum(int(a) * int(b) for a, b in zip(units[:-1], units[1:]))
    if (dtype not in (np.float32, np.float64) or not _kernels.row_products()
            or flops < PARALLEL_PREDICT_FLOPS):
        return 1
    return fit_split(n_rows, False)[1]


# fewest hidden units in a block when a net's first hidden layer is cut by units
MIN_UNITS_PER_BLOCK = 8

# with more than one hidden layer, the weights of the layers after the second (the
# tail, of which every thread keeps and steps a copy), times the blocks, may be at most
# this share of the weights the blocks cut (W_1 and W_2)
TAIL_SHARE = 0.05

# None: decide per fit (cut_by_units); True or False: that way for every fit that can
FORCE_BY_UNITS = None

# the most memory the gradient buffers of a fit cut by rows may take together (one
# buffer the size of the parameters per block), unless two buffers alone take more
ROW_GRADIENTS_BYTES = 64 * 2**20


# None: decide per fit (block_gradients); True or False: that way for every fit cut by
# rows (tests and benchmarks compare the two ways with it)
FORCE_BLOCK_GRADS = None


def block_gradients(units, rows, sparse):
    """Whether a fit cut by rows gives each block of a batch a gradient buffer of its
    own, summed once the blocks are done, rather than having each block make, over the
    whole batch, the gradient of its share of the parameters (see the kernels'
    _epoch_share).

    Either way a thread reads what the other blocks wrote: their gradients (P values
    each, for P parameters) in the first way, their rows of the activations and deltas
    (rows × (d + 2 Σ hidden + outputs) values in all; d not counted for sparse X,
    which is read from X itself) in the second. The first is taken when it reads less.
    Measured with bench/run.py's workloads on 2 cores (two blocks): sparse (20000
    features, 128 units) 212 → 153 ms per epoch the second way; regression (100
    features, 64-64 units) 14.2 → 16.3 ms; mnist-shape (784, 256-128) the same
    within the noise."""
    if FORCE_BLOCK_GRADS is not None:
        return bool(FORCE_BLOCK_GRADS)
    units = [int(u) for u in units]
    n_params = sum(a * b + b for a, b in zip(units[:-1], units[1:]))
    shared = rows * ((0 if sparse else units[0]) + 2 * sum(units[1:-1]) + units[-1])
    return n_params <= shared


def cap_row_blocks(n_blocks, n_threads, n_params, itemsize):
    """``(n_blocks, n_threads)`` for a fit cut by rows with block gradients
    (block_gradients), with no more blocks than fit ROW_GRADIENTS_BYTES of gradient
    buffers (two at the least).

    Each block of rows fills a gradient buffer the size of the parameters, and every
    batch sums them all: on 2 cores, 4 or 8 blocks instead of 2 cost 28-82 % more per
    epoch (sparse and mnist-shape workloads of bench/run.py, FORCE_BLOCKS). Without a
    cap, a sparse 20000-feature, 128-unit model on 64 cores would hold 25 buffers of
    10 MB and read them all every batch; with it, 6. A fit cut by hidden units holds
    no such buffers and is not capped."""
    if FORCE_BLOCKS is not None:
        return n_blocks, n_threads
    fit = max(2, ROW_GRADIENTS_BYTES // max(1, n_params * itemsize))
    blocks = min(n_blocks, fit)
    return blocks, min(n_threads, blocks)


def cut_by_units(units, rows, n_blocks, sparse, dropout):
    """Whether a fit cuts the units of its first hidden layer into the n_blocks blocks
    rather than its batches' rows: for dense X and no dropout, when each block gets
    MIN_UNITS_PER_BLOCK units or more, the threads would exchange less than the
    parameters (rows × units[2] values per batch, against the B gradients of a cut by
    rows), and the tail, whose copy every thread keeps and steps, is small (TAIL_SHARE).

    Cut by units, no thread reads the weights another has just stepped. Cut by rows,
    every core reads all the weights each batch, and that costs: the 784-256-128-10
    mnist-shape net stepped its Adam state in 30 ms a thread-epoch, against 12 ms with
    the weights' writes sent where no core read them (README, limits)."""
    if len(units) < 3 or sparse or dropout or n_blocks < 2:
        return False
    units = [int(u) for u in units]
    d, h, k = units[:3]
    split = d * h + h * k
    tail = sum(a * b for a, b in zip(units[2:-1], units[3:]))
    if FORCE_BY_UNITS is not None:
        return bool(FORCE_BY_UNITS) and h >= n_blocks
    return (h >= MIN_UNITS_PER_BLOCK * n_blocks and rows * k < split
            and tail * n_blocks <= TAIL_SHARE * split)
