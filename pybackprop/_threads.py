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

from threadpoolctl import OpenBLASController, ThreadpoolController

# below this many flops in the largest product of a batch, BLAS gets one thread
SMALL_PRODUCT_FLOPS = 8e6

_controller = None
_lock = threading.Lock()
_holders = 0  # fits inside a one-thread section right now
_limiter = None  # threadpoolctl's limit, held while any of them runs


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
