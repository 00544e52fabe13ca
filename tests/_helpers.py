"""Small shared data sets: digits subsets and targets derived from them (fast on 2 cores)."""

import functools

import numpy as np
import scipy.sparse as sp
from sklearn.datasets import load_digits

BACKENDS = ["cython", "numpy"]


@functools.lru_cache(maxsize=None)
def _digits():
    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


def digits(n=300):
    """The first ``n`` digits scaled to [0, 1], and their labels 0..9."""
    X, y = _digits()
    return X[:n].copy(), y[:n].copy()


def make_data(kind, n=300, fmt="dense"):
    """(X, y) for one task on the first ``n`` digits.

    kind: multiclass | binary | multilabel | regression | multioutput | poisson.
    fmt: dense | csr | csc.
    """
    X, labels = digits(n)
    rng = np.random.RandomState(0)
    if kind == "multiclass":
        y = labels
    elif kind == "binary":
        y = np.where(labels % 2 == 0, "even", "odd")
    elif kind == "multilabel":
        y = np.column_stack([labels % 2 == 0, labels < 5, labels % 3 == 0]).astype(int)
    elif kind == "regression":
        y = X @ rng.uniform(-1, 1, X.shape[1]) + 0.1 * rng.standard_normal(n)
    elif kind == "multioutput":
        y = X @ rng.uniform(-1, 1, (X.shape[1], 3)) + 0.1 * rng.standard_normal((n, 3))
    elif kind == "poisson":
        y = rng.poisson(np.exp(X @ rng.uniform(-0.1, 0.1, X.shape[1]))).astype(float)
    else:
        raise ValueError(kind)
    if fmt == "csr":
        X = sp.csr_matrix(X)
    elif fmt == "csc":
        X = sp.csc_matrix(X)
    return X, y


def sample_weights(n, seed=0):
    """Positive, uneven sample weights."""
    return np.random.RandomState(seed).uniform(0.2, 3.0, n)


def numeric_gradient(f, x, h=1e-6):
    """Central differences (f(x + h e_i) - f(x - h e_i)) / 2h, coordinate by coordinate."""
    g = np.empty_like(x)
    for i in range(x.size):
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        g[i] = (f(xp) - f(xm)) / (2 * h)
    return g


def short_fit(cls, X, y, kwargs, dtype=np.float32, sample_weight=None):
    """Four epochs of 96-row batches, every one run (tol=0), from random_state=1."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    est = cls(random_state=1, max_iter=4, tol=0, n_iter_no_change=10**6, batch_size=96,
              **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X.astype(dtype), y, sample_weight=sample_weight)
    return est


def assert_same_bits_on_any_number_of_threads(fit_once, check=None):
    """fit_once() on OpenMP's threads as set, on one, and from another Python thread
    (whose fits run their blocks on one thread): the same weights and losses, bit for
    bit. check() runs after the first fit (what it used, say)."""
    import threading

    from numpy.testing import assert_array_equal
    from threadpoolctl import threadpool_limits

    many = fit_once()
    if check is not None:
        check()
    with threadpool_limits(limits=1, user_api="openmp"):
        single = fit_once()
    box = []
    worker = threading.Thread(target=lambda: box.append(fit_once()))
    worker.start()
    worker.join()
    for other in (single, box[0]):
        assert_array_equal(other._flat_params, many._flat_params)
        assert other.loss_curve_ == many.loss_curve_

