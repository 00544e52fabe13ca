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
