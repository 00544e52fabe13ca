"""Cut by units against cut by rows, on one workload of bench/run.py.

    python bench/split_ab.py [WORKLOAD] [--pairs 8]

Fits the workload (default mnist-shape) alternately with the first hidden layer cut by
units and with the batch cut by rows (``pybackprop._threads.FORCE_BY_UNITS`` True, then
False), after one warm-up fit of each, and prints each pair's times per epoch, the
medians and the median of the pairs' ratios (units / rows). The two ways make the same
model to rounding (tests/test_parallel.py); only their speed is compared here.
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

from pybackprop import _threads  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workload", nargs="?", default="mnist-shape",
                    choices=sorted(bench.FIT_SETUPS))
    ap.add_argument("--pairs", type=int, default=8)
    args = ap.parse_args()
    cfg = bench.Config(types.SimpleNamespace(quick=False, repeats=1), [])
    setup = bench.FIT_SETUPS[args.workload](cfg)
    X, y, _, _ = setup["data"]
    saved = _threads.FORCE_BY_UNITS

    def seconds_per_epoch(by_units):
        _threads.FORCE_BY_UNITS = by_units
        est = bench.pb_estimator(setup["spec"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            est.fit(X, y)
            seconds = time.perf_counter() - t0
        return seconds / est.n_iter_

    try:
        seconds_per_epoch(True)
        seconds_per_epoch(False)
        units, rows = [], []
        for _ in range(args.pairs):
            units.append(seconds_per_epoch(True))
            rows.append(seconds_per_epoch(False))
            print("units %.2f ms  rows %.2f ms  ratio %.3f" % (
                units[-1] * 1e3, rows[-1] * 1e3, units[-1] / rows[-1]), flush=True)
    finally:
        _threads.FORCE_BY_UNITS = saved
    print("%s, per epoch (median of %d pairs): cut by units %.2f ms, by rows %.2f ms; "
          "ratio %.3f" % (args.workload, args.pairs, statistics.median(units) * 1e3,
                          statistics.median(rows) * 1e3,
                          statistics.median(u / r for u, r in zip(units, rows))))


if __name__ == "__main__":
    main()
