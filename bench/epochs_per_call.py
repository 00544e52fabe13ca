"""Epochs in one kernel call against one call per epoch, on digits-sgd.

    python bench/epochs_per_call.py [--schedule adaptive] [--pairs 10]

Fits the digits-sgd model of bench/run.py ((100,) tanh, SGD with Nesterov momentum,
batch 200, 100 epochs, tol=0) with the given learning-rate schedule, alternating a fit
that runs one kernel call per epoch (the path that callbacks, early stopping or
partial_fit take) with one whose epochs run inside the kernel, and prints the median
time per epoch of each and the median of the pairs' ratios. The two fits of a pair end
on the same weights, bit for bit (checked).
"""

import argparse
import statistics
import time
import warnings

import numpy as np
from sklearn.datasets import load_digits

from pybackprop import MLPClassifier
from pybackprop._mlp import BaseMultilayerPerceptron


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--schedule", default="adaptive",
                    choices=["constant", "invscaling", "adaptive"])
    ap.add_argument("--pairs", type=int, default=10)
    args = ap.parse_args()
    X, y = load_digits(return_X_y=True)
    X = X / 16
    in_kernel = BaseMultilayerPerceptron._epochs_in_one_call

    def fit(one_call):
        BaseMultilayerPerceptron._epochs_in_one_call = (
            in_kernel if one_call else (lambda self, *a: False))
        est = MLPClassifier(hidden_layer_sizes=(100,), activation="tanh", solver="sgd",
                            momentum=0.9, learning_rate=args.schedule, batch_size=200,
                            max_iter=100, tol=0, n_iter_no_change=10**6, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            est.fit(X, y)
            seconds = time.perf_counter() - t0
        return seconds / est.n_iter_, est

    fit(True)
    fit(False)
    each, one, ratios = [], [], []
    for _ in range(args.pairs):
        (t_each, a), (t_one, b) = fit(False), fit(True)
        if not np.array_equal(a._flat_params, b._flat_params):
            raise SystemExit("the two fits ended on different weights")
        each.append(t_each)
        one.append(t_one)
        ratios.append(t_one / t_each)
    BaseMultilayerPerceptron._epochs_in_one_call = in_kernel
    print("digits-sgd, learning_rate=%r, per epoch (median of %d pairs): one call per "
          "epoch %.1f µs, epochs in the kernel %.1f µs; ratio %.3f"
          % (args.schedule, args.pairs, statistics.median(each) * 1e6,
             statistics.median(one) * 1e6, statistics.median(ratios)))
    print("pair ratios: " + " ".join("%.3f" % r for r in ratios))


if __name__ == "__main__":
    main()
