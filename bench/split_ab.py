"""Two settings of pybackprop against each other, on one workload of bench/run.py.

    python bench/split_ab.py [WORKLOAD] [--pairs 8] [--what cut|rows|x-check]

Fits the workload (default mnist-shape) alternately with setting A and setting B, after
one warm-up fit of each, and prints each pair's times per epoch, the medians and the
median of the pairs' ratios (A / B). The settings (``--what``):

* ``cut`` (default): the first hidden layer cut by units (A) against the batch cut by
  rows (B), ``pybackprop._threads.FORCE_BY_UNITS`` True, then False. The two ways make
  the same model to rounding (tests/test_parallel.py).
* ``rows``: the row products (csrc/_rowgemm.h: float32 fits cut by units read X's
  rows in place, no gather, no BLAS) on (A) against off (B),
  ``pybackprop._kernels.row_products(True)``, then False (AVX-512 CPUs only). The same
  model to float32 rounding (tests/test_row_products.py).
* ``x-check``: X checked for NaN and infinity by the first epoch's gathers (A, the
  default ``CHECK_ROWS_IN_KERNEL_BYTES``) against scikit-learn's check before the fit
  (B, None). The same bits either way (tests/test_row_check.py).

Only their speed is compared here.
"""

import argparse
import os
import statistics
import sys
import time
import types
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402  (bench/run.py)

from pybackprop import _kernels, _mlp, _threads  # noqa: E402


def attribute(owner, name):
    """(get, set) of a module or class attribute."""
    return (lambda: getattr(owner, name)), (lambda value: setattr(owner, name, value))


# --what: (name of A, name of B, (get, set) of the setting, A's value, B's value)
SETTINGS = {
    "cut": ("cut by units", "by rows", attribute(_threads, "FORCE_BY_UNITS"), True,
            False),
    "rows": ("row products", "gathered", (_kernels.row_products, _kernels.row_products),
             True, False),
    "x-check": ("X checked in the gathers", "before the fit",
                attribute(_mlp.BaseMultilayerPerceptron, "CHECK_ROWS_IN_KERNEL_BYTES"),
                _mlp.BaseMultilayerPerceptron.CHECK_ROWS_IN_KERNEL_BYTES, None),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workload", nargs="?", default="mnist-shape",
                    choices=sorted(bench.FIT_SETUPS))
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--what", choices=sorted(SETTINGS), default="cut")
    args = ap.parse_args()
    name_a, name_b, (get, put), value_a, value_b = SETTINGS[args.what]
    if args.what == "rows" and not _kernels.row_products(True):
        sys.exit("this CPU does not run the row products (AVX-512)")
    cfg = bench.Config(types.SimpleNamespace(quick=False, repeats=1), [])
    setup = bench.FIT_SETUPS[args.workload](cfg)
    X, y, _, _ = setup["data"]
    saved = get()

    def seconds_per_epoch(value):
        put(value)
        est = bench.pb_estimator(setup["spec"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            est.fit(X, y)
            seconds = time.perf_counter() - t0
        return seconds / est.n_iter_

    try:
        seconds_per_epoch(value_a)
        seconds_per_epoch(value_b)
        a, b = [], []
        for _ in range(args.pairs):
            a.append(seconds_per_epoch(value_a))
            b.append(seconds_per_epoch(value_b))
            print("%s %.2f ms  %s %.2f ms  ratio %.3f" % (
                name_a, a[-1] * 1e3, name_b, b[-1] * 1e3, a[-1] / b[-1]), flush=True)
    finally:
        put(saved)
    print("%s, per epoch (median of %d pairs): %s %.2f ms, %s %.2f ms; ratio %.3f" % (
        args.workload, args.pairs, name_a, statistics.median(a) * 1e3, name_b,
        statistics.median(b) * 1e3, statistics.median(x / y for x, y in zip(a, b))))


if __name__ == "__main__":
    main()
