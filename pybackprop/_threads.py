"""How many BLAS threads a fit's products get.

OpenBLAS splits a product over its threads and then waits for them, spinning. For the
small products of a minibatch (a 200 × 64 × 100 product takes tens of microseconds)
that hand-off costs about as much as the product, and when the other cores are busy
the waiting thread can stall a whole time slice: on this 2-core machine a digits fit
ran 10 times slower with two BLAS threads than with one under load (bench/run.py,
two-threads workload). So a fit in the main thread whose largest per-batch product is
small runs its products on one thread; larger products keep BLAS's own threading.
"""

import contextlib
import threading

from threadpoolctl import ThreadpoolController

# below this many flops in the largest product of a batch, BLAS gets one thread
SMALL_PRODUCT_FLOPS = 8e6

_controller = None
_lock = threading.Lock()
_holders = 0  # fits inside a one-thread section right now
_saved = None  # the BLAS limits from before the first of them


@contextlib.contextmanager
def _one_blas_thread():
    """BLAS on one thread while any fit needs it; the limits from before come back
    when the last such fit ends, however the fits of several threads interleave."""
    global _controller, _holders, _saved
    with _lock:
        if _holders == 0:
            if _controller is None:
                _controller = ThreadpoolController()
            blas = _controller.select(user_api="blas").lib_controllers
            _saved = [(lib, lib.num_threads) for lib in blas]
            for lib in blas:
                lib.set_num_threads(1)
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0:
                for lib, threads in _saved:
                    lib.set_num_threads(threads)
                _saved = None


def blas_threads_for(units, rows):
    """Context: BLAS limited to one thread when every product of a ``rows``-row batch
    through layers ``units`` is small; otherwise nothing changes."""
    largest = max(2.0 * rows * a * b for a, b in zip(units[:-1], units[1:]))
    if largest >= SMALL_PRODUCT_FLOPS or threading.current_thread() is not threading.main_thread():
        # BLAS's thread count is one number for the whole process: fits running in
        # other threads leave it alone (OpenBLAS did not take back its count reliably
        # when fits in two threads overlapped: tests/test_threads_memory.py)
        return contextlib.nullcontext()
    return _one_blas_thread()
