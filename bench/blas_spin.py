"""A fit right after a threaded BLAS call, against one from idle cores.

    python bench/blas_spin.py [--rounds 8] [--size 600]

OpenBLAS's worker threads spin for about 0.1 s after a threaded call before they
sleep (2^28 TSC cycles, its default THREAD_TIMEOUT); an OpenMP fit started in that
window shares the cores with them. Each round fits the digits-sgd model of
bench/run.py (100 epochs) four ways, in turn: from idle cores; right after a threaded
``A @ A`` of NumPy; right after the same product under
``threadpool_limits(1, user_api="blas")``; and after the product and a 0.3 s pause.
Prints the median milliseconds per epoch of each.
"""

import argparse
import statistics
import time
import warnings

import numpy as np
from sklearn.datasets import load_digits
from threadpoolctl import threadpool_limits

from pybackprop import MLPClassifier


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--size", type=int, default=600, help="of the square product")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    X, y = load_digits(return_X_y=True)
    X = X / 16
    A = np.random.default_rng(0).random((args.size, args.size))

    def fit():
        est = MLPClassifier((100,), activation="tanh", solver="sgd", momentum=0.9,
                            learning_rate_init=0.001, batch_size=200, max_iter=100, tol=0,
                            n_iter_no_change=1000, random_state=0)
        t0 = time.perf_counter()
        est.fit(X, y)
        return (time.perf_counter() - t0) / est.n_iter_

    def one_blas_thread():
        with threadpool_limits(1, user_api="blas"):
            A @ A

    def pause():
        A @ A
        time.sleep(0.3)

    before = {"idle cores": lambda: time.sleep(0.3), "right after A @ A": lambda: A @ A,
              "after A @ A on 1 BLAS thread": one_blas_thread,
              "after A @ A and 0.3 s": pause}
    times = {name: [] for name in before}
    fit()  # warm-up
    for _ in range(args.rounds):
        for name, prepare in before.items():
            prepare()
            times[name].append(fit())
    for name, ts in times.items():
        print("%-30s %.3f ms an epoch (%s)" % (name, 1e3 * statistics.median(ts),
                                              " ".join("%.2f" % (1e3 * t) for t in ts)))


if __name__ == "__main__":
    main()
