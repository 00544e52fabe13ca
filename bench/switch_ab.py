"""In-process A/B of pybackprop's row products (csrc/_rowgemm.h) on one workload of
bench/run.py: alternating fits with ``_kernels.row_products()`` off (A) and on (B).

    python bench/switch_ab.py WORKLOAD [--pairs 6]

Prints each pair's per-epoch times and B/A, then the medians. One process, the two
fits of a pair seconds apart, so a drift of the machine moves both (see bench/ab.py,
which compares two builds the same way). Benchmarks never assert.
"""

import argparse
import os
import statistics
import sys
import time
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import run as bench  # noqa: E402

from pybackprop import _kernels  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workload", choices=sorted(bench.FIT_SETUPS))
    parser.add_argument("--pairs", type=int, default=6)
    args = parser.parse_args()
    if not _kernels.row_products(True):
        sys.exit("this CPU does not run the row products (AVX-512)")
    cfg = bench.Config(types.SimpleNamespace(quick=False, repeats=1), [])
    setup = bench.FIT_SETUPS[args.workload](cfg)
    X, y = setup["data"][:2]
    spec = setup["spec"]

    def fit(on):
        _kernels.row_products(on)
        t0 = time.perf_counter()
        est = bench.pb_estimator(spec).fit(X, y)
        return (time.perf_counter() - t0) / max(getattr(est, "n_iter_", 1), 1)

    fit(False)
    fit(True)
    a, b = [], []
    for p in range(args.pairs):
        a.append(fit(False))
        b.append(fit(True))
        print(f"pair {p}: off {a[-1] * 1e3:.2f} ms, on {b[-1] * 1e3:.2f} ms, "
              f"B/A {b[-1] / a[-1]:.3f}", flush=True)
    _kernels.row_products(True)
    print(f"median per epoch: off {statistics.median(a) * 1e3:.2f} ms, on "
          f"{statistics.median(b) * 1e3:.2f} ms; median B/A "
          f"{statistics.median(on / off for off, on in zip(a, b)):.3f}")


if __name__ == "__main__":
    main()
