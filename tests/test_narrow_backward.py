"""The backward through a narrow second layer in one pass (csrc/_rowgemm.h's
pb_narrow_back, used by fits cut by hidden units on CPUs with AVX-512 when the second
layer has at most 12 units): against NumPy at the edges of its column tiles and for
every number of outputs it takes, and fits that use it against fits that run BLAS,
against the NumPy backend, and on any number of threads."""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from pybackprop import MLPClassifier, MLPRegressor, _kernels

from _helpers import assert_same_bits_on_any_number_of_threads, short_fit

pytestmark = pytest.mark.skipif(not _kernels.narrow_backward(),
                                reason="the fused backward needs a CPU with AVX-512")

# the package's activation codes (which _narrow_back maps to the kernel's), and f' from h
DERIVATIVES = {
    0: lambda h: np.ones_like(h),       # identity
    1: lambda h: h * (1 - h),           # logistic
    2: lambda h: 1 - h * h,             # tanh
    3: lambda h: (h > 0).astype(h.dtype),   # relu
}


@pytest.fixture
def narrow():
    """Turn the fused backward on or off for a test; restored afterwards."""
    saved = _kernels.narrow_backward()
    yield _kernels.narrow_backward
    _kernels.narrow_backward(saved)


def within_rounding(got, exact, bound, terms, dtype):
    """|got - exact| <= 4 terms eps bound (bound: the sum of |products|)."""
    eps = np.finfo(dtype).eps
    err = np.abs(got.astype(exact.dtype) - exact)
    assert (err <= 4 * terms * eps * bound + np.finfo(dtype).tiny).all(), float(err.max())


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("act", sorted(DERIVATIVES))
@pytest.mark.parametrize("m, units", [(1, 1), (7, 7), (5, 8), (9, 9), (200, 50),
                                      (33, 16), (33, 17), (64, 130)])
@pytest.mark.parametrize("k", [1, 5, 10, 12])
def test_kernel_matches_numpy(dtype, act, m, units, k):
    """G2 = h^T dz, D = (dz W2^T) ⊙ f'(h), db = D's column sums, against the same in
    wider precision, each within the rounding of its sums of products (f' itself
    rounds to within a couple of eps of 1); the buffers past the outputs stay as they
    were."""
    rng = np.random.RandomState(m * 1000 + units * 10 + k)
    lo = 0.0 if act == 1 else -1.0
    h = rng.uniform(lo, 1.0, (m, units)).astype(dtype)
    h[rng.uniform(size=h.shape) < 0.1] = 0.0         # relu's zeros
    dz = rng.standard_normal((m, k)).astype(dtype)
    W2 = rng.standard_normal((units, k)).astype(dtype)
    dbuf = np.full(m * units + 9, np.nan, dtype)
    D = dbuf[:m * units].reshape(m, units)
    G2 = np.full((units, k), np.nan, dtype)
    dbb = np.full(units + 9, np.nan, dtype)
    db = dbb[:units]
    _kernels._narrow_back(h, dz, W2, D, G2, db, act)
    assert np.isnan(dbuf[m * units:]).all() and np.isnan(dbb[units:]).all()
    wide = np.longdouble if dtype == np.float64 else np.float64
    hw, dzw, Ww = (a.astype(wide) for a in (h, dz, W2))
    fprime = DERIVATIVES[act](hw)
    dh = dzw @ Ww.T
    size = (np.abs(dzw) @ np.abs(Ww).T) * (np.abs(fprime) + 2)
    within_rounding(G2, hw.T @ dzw, np.abs(hw).T @ np.abs(dzw), m, dtype)
    within_rounding(D, dh * fprime, size, k + 2, dtype)
    within_rounding(db, (dh * fprime).sum(axis=0), size.sum(axis=0), k + 2 + m, dtype)


def test_kernel_checks_its_arguments():
    h = np.zeros((4, 3))
    ok = dict(dz=np.zeros((4, 2)), W2=np.zeros((3, 2)), D=np.zeros((4, 3)),
              G2=np.zeros((3, 2)), db=np.zeros(3))
    _kernels._narrow_back(h, ok["dz"], ok["W2"], ok["D"], ok["G2"], ok["db"], 2)
    with pytest.raises(ValueError, match="shapes do not match"):
        _kernels._narrow_back(h, np.zeros((5, 2)), ok["W2"], ok["D"], ok["G2"], ok["db"], 2)
    with pytest.raises(ValueError, match="shapes do not match"):
        _kernels._narrow_back(h, ok["dz"], ok["W2"], ok["D"], ok["G2"], np.zeros(4), 2)
    with pytest.raises(ValueError, match="k must be 1 to 12"):
        _kernels._narrow_back(h, np.zeros((4, 13)), np.zeros((3, 13)), ok["D"],
                              np.zeros((3, 13)), ok["db"], 2)
    with pytest.raises(ValueError, match="no narrow backward"):
        _kernels._narrow_back(h, ok["dz"], ok["W2"], ok["D"], ok["G2"], ok["db"], 99)


rng = np.random.RandomState(0)
X = rng.normal(size=(611, 30))
y_multi = rng.randint(0, 7, size=611)
y_many = rng.randint(0, 13, size=611)
y_reg = np.c_[np.sin(X[:, 0]), X[:, 1] ** 2]
# (estimator, y, parameters, whether the fused backward applies)
CASES = {
    "sgd-tanh": (MLPClassifier, y_multi, dict(hidden_layer_sizes=(50,), activation="tanh",
                                              solver="sgd", momentum=0.9), True),
    "adam-relu": (MLPClassifier, y_multi, dict(hidden_layer_sizes=(41,)), True),
    "logistic": (MLPClassifier, y_multi, dict(hidden_layer_sizes=(24,),
                                              activation="logistic"), True),
    "identity-regression": (MLPRegressor, y_reg, dict(hidden_layer_sizes=(17,),
                                                      activation="identity"), True),
    "binary": (MLPClassifier, y_multi > 3, dict(hidden_layer_sizes=(30,),
                                                activation="tanh"), True),
    # a narrow second hidden layer, with a tail after it
    "deep": (MLPClassifier, y_multi, dict(hidden_layer_sizes=(40, 9, 6),
                                          activation="tanh", solver="sgd"), True),
    # 13 classes: BLAS
    "thirteen-classes": (MLPClassifier, y_many, dict(hidden_layer_sizes=(30,)), False),
    # an activation whose derivative needs z, or one the kernel does not take: BLAS
    "gelu": (MLPClassifier, y_multi, dict(hidden_layer_sizes=(30,), activation="gelu"),
             False),
    "elu": (MLPClassifier, y_multi, dict(hidden_layer_sizes=(30,), activation="elu"),
            False),
}


def fit(cls, y, kwargs, dtype, sample_weight=None):
    return short_fit(cls, X, y, kwargs, dtype, sample_weight)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fits_agree_with_blas_and_numpy(case, dtype, narrow, cut_by_units):
    """Four epochs of batches of 96 rows (the last of 35) cut by units into two blocks,
    with the fused backward and with BLAS: the same model to rounding, both that of
    the NumPy backend; the fused backward runs only where it applies."""
    cls, y, kwargs, applies = CASES[case]
    sw = np.random.RandomState(2).uniform(0.2, 2.0, size=len(X))
    assert narrow(True)
    fused = fit(cls, y, kwargs, dtype, sw)
    assert _kernels._last_split_used_narrow() == applies
    assert not narrow(False)
    blas = fit(cls, y, kwargs, dtype, sw)
    assert not _kernels._last_split_used_narrow()
    ref = fit(cls, y, dict(kwargs, backend="numpy"), dtype, sw)
    tol = 1e-9 if dtype == np.float64 else 1e-4
    for got in (fused, blas):
        assert_allclose(got._flat_params, ref._flat_params, rtol=tol, atol=tol)
        assert_allclose(got.loss_curve_, ref.loss_curve_, rtol=tol)
    if not applies:
        assert_array_equal(fused._flat_params, blas._flat_params)


@pytest.mark.parametrize("case", ["sgd-tanh", "deep"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fits_same_bits_on_any_number_of_threads(case, dtype, narrow, cut_by_units):
    cls, y, kwargs, _ = CASES[case]
    if _kernels.max_threads() < 2:
        pytest.skip("one OpenMP thread: nothing to compare")
    assert narrow(True)

    def used():
        assert _kernels._last_split_used_narrow()

    assert_same_bits_on_any_number_of_threads(lambda: fit(cls, y, kwargs, dtype), used)


def test_narrow_backward_switch(narrow):
    assert narrow(False) is False and narrow() is False
    assert narrow(True) is True and narrow() is True
