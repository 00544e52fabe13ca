"""How many BLAS threads a fit's products get.

OpenBLAS splits a product over its threads and then waits for them, spinning. For the
small products of a minibatch (a 200 × 64 × 100 product takes tens of microseconds)
that hand-off costs about as much as the product, and when the other cores are busy
the waiting thread can stall a whole time slice: on this 2-core machine a digits fit
ran 10 times slower with two BLAS threads than with one under load (bench/run.py,
two-threads workload). So a fit whose largest per-batch product is small runs its
products on one thread; larger products keep BLAS's own threading.
"""

import contextlib

from threadpoolctl import ThreadpoolController

# below this many flops in the largest product of a batch, BLAS gets one thread
SMALL_PRODUCT_FLOPS = 8e6

_controller = None


def blas_threads_for(units, rows):
    """Context: BLAS limited to one thread when every product of a ``rows``-row batch
    through layers ``units`` is small; otherwise nothing changes."""
    global _controller
    largest = max(2.0 * rows * a * b for a, b in zip(units[:-1], units[1:]))
    if largest >= SMALL_PRODUCT_FLOPS:
        return contextlib.nullcontext()
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller.limit(limits=1, user_api="blas")
