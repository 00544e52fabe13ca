"""Reliability (2): awkward but valid input gives the same model as its clean form.

Fortran order, strided views, read-only memory maps, big-endian, integer, boolean and
float16 arrays, DataFrames, lists: each is fitted with a fixed ``random_state`` and must
give exactly the coefficients (and predictions) of the same values as a C-contiguous
float64 ndarray. Edge shapes (one sample, one feature, batch_size 1 or beyond n) fit
without error and agree with the NumPy reference backend and scikit-learn.
"""

import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier as SkMLPClassifier
from sklearn.neural_network import MLPRegressor as SkMLPRegressor

from pybackprop import MLPClassifier, MLPRegressor

N, D = 48, 6
BATCH_WARNING = "Got `batch_size` less than 1 or larger than sample size"
SOLVER_PARAMS = {
    "adam": dict(solver="adam", max_iter=6, learning_rate_init=0.01, batch_size=16),
    "sgd": dict(solver="sgd", max_iter=6, learning_rate_init=0.05, batch_size=16),
    "lbfgs": dict(solver="lbfgs", max_iter=12),
}


def _data():
    rng = np.random.RandomState(1)
    X = rng.standard_normal((N, 2 * D))
    y_clf = (X[:, 0] - X[:, 2] > 0).astype(int) + (X[:, 4] > 1)
    y_reg = X @ rng.uniform(-1, 1, 2 * D)
    return X, y_clf, y_reg


X_WIDE, Y_CLF, Y_REG = _data()
X = np.ascontiguousarray(X_WIDE[:, :D])


def model(kind, solver="adam", backend="cython", **params):
    p = dict(hidden_layer_sizes=(7, 5), random_state=0, alpha=1e-3, backend=backend,
             **SOLVER_PARAMS[solver])
    p.update(params)
    return MLPClassifier(**p) if kind == "clf" else MLPRegressor(**p)


def fit_quietly(est, X, y, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y, **kwargs)


def assert_same_fit(a, b, X_a, X_b):
    """Identical weights and identical predictions (a on X_a, b on X_b)."""
    assert a.n_iter_ == b.n_iter_
    for wa, wb in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        assert wa.dtype == wb.dtype
        assert_array_equal(wa, wb)
    if hasattr(a, "predict_proba"):
        assert_array_equal(a.predict_proba(X_a), b.predict_proba(X_b))
    assert_array_equal(a.predict(X_a), b.predict(X_b))


def _memmap(tmp_path, array, name="X.dat"):
    path = tmp_path / name
    writable = np.memmap(path, dtype=array.dtype, mode="w+", shape=array.shape)
    writable[...] = array
    writable.flush()
    del writable
    return np.memmap(path, dtype=array.dtype, mode="r", shape=array.shape)


# awkward form -> (X_awkward, X_clean) built from the float64 data
AWKWARD_X = {
    "fortran": lambda tmp: (np.asfortranarray(X), X),
    "strided_columns": lambda tmp: (X_WIDE[:, ::2], np.ascontiguousarray(X_WIDE[:, ::2])),
    "strided_rows": lambda tmp: (
        np.repeat(X, 2, axis=0)[::2], X),
    "negative_strides": lambda tmp: (X[::-1, ::-1][::-1, ::-1], X),
    "readonly": lambda tmp: (_readonly(X), X),
    "readonly_memmap": lambda tmp: (_memmap(tmp, X), X),
    "readonly_memmap_fortran": lambda tmp: (
        np.asfortranarray(_memmap(tmp, X)), X),
    "big_endian": lambda tmp: (X.astype(">f8"), X),
    # scikit-learn keeps only native float32 as float32: a big-endian one is upcast
    "big_endian_float32": lambda tmp: (X.astype(">f4"), X.astype(np.float32).astype(np.float64)),
    "int64": lambda tmp: (np.round(3 * X).astype(np.int64), np.round(3 * X)),
    "int8": lambda tmp: (np.round(3 * X).astype(np.int8), np.round(3 * X)),
    "uint8": lambda tmp: (np.abs(np.round(3 * X)).astype(np.uint8), np.abs(np.round(3 * X))),
    "bool": lambda tmp: (X > 0, (X > 0).astype(np.float64)),
    "float16": lambda tmp: (X.astype(np.float16), X.astype(np.float16).astype(np.float64)),
    "list_of_lists": lambda tmp: (X.tolist(), X),
    "object_of_floats": lambda tmp: (X.astype(object), X),
}


def _readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
@pytest.mark.parametrize("kind", ["clf", "reg"])
@pytest.mark.parametrize("form", list(AWKWARD_X))
def test_awkward_X_gives_same_model(form, kind, solver, tmp_path):
    X_awk, X_clean = AWKWARD_X[form](tmp_path)
    y = Y_CLF if kind == "clf" else Y_REG
    awk = fit_quietly(model(kind, solver), X_awk, y)
    clean = fit_quietly(model(kind, solver), X_clean, y)
    assert_same_fit(awk, clean, X_awk, X_clean)
    if form == "float16":
        assert awk.coefs_[0].dtype == np.float64  # upcast, not float16 arithmetic


@pytest.mark.parametrize("form", ["fortran", "strided_columns", "readonly_memmap",
                                  "big_endian", "bool", "float16"])
def test_awkward_X_numpy_backend(form, tmp_path):
    X_awk, X_clean = AWKWARD_X[form](tmp_path)
    awk = fit_quietly(model("clf", backend="numpy"), X_awk, Y_CLF)
    clean = fit_quietly(model("clf", backend="numpy"), X_clean, Y_CLF)
    assert_same_fit(awk, clean, X_awk, X_clean)


@pytest.mark.parametrize("form", ["fortran", "strided_columns", "readonly_memmap",
                                  "big_endian", "int64", "bool"])
def test_awkward_X_partial_fit(form, tmp_path):
    X_awk, X_clean = AWKWARD_X[form](tmp_path)
    classes = np.unique(Y_CLF)
    a = model("clf")
    b = model("clf")
    for _ in range(3):
        a.partial_fit(X_awk, Y_CLF, classes=classes)
        b.partial_fit(X_clean, Y_CLF, classes=classes)
    assert_same_fit(a, b, X_awk, X_clean)


@pytest.mark.parametrize("form", ["fortran", "strided_columns", "readonly_memmap",
                                  "big_endian", "int64", "bool", "float16"])
def test_awkward_X_at_predict(form, tmp_path):
    """A model fitted on clean data predicts awkward forms of the same values alike."""
    X_awk, X_clean = AWKWARD_X[form](tmp_path)
    est = fit_quietly(model("clf"), X_clean, Y_CLF)
    assert_array_equal(est.predict_proba(X_awk), est.predict_proba(X_clean))


def test_readonly_memmap_y_and_sample_weight(tmp_path):
    sw = np.random.RandomState(0).uniform(0.5, 2, N)
    X_mm = _memmap(tmp_path, X, "X.dat")
    y_mm = _memmap(tmp_path, Y_REG, "y.dat")
    sw_mm = _memmap(tmp_path, sw, "sw.dat")
    a = fit_quietly(model("reg"), X_mm, y_mm, sample_weight=sw_mm)
    b = fit_quietly(model("reg"), X, Y_REG, sample_weight=sw)
    assert_same_fit(a, b, X_mm, X)
    assert not X_mm.flags.writeable  # untouched


def test_inputs_are_not_modified():
    X_in, y_in = X.copy(), Y_REG.copy()
    sw = np.ones(N)
    est = fit_quietly(model("reg"), X_in, y_in, sample_weight=sw)
    est.predict(X_in)
    assert_array_equal(X_in, X)
    assert_array_equal(y_in, Y_REG)
    assert_array_equal(sw, np.ones(N))


@pytest.mark.parametrize("kind", ["clf", "reg"])
def test_y_forms(kind):
    """y as a list, a column vector (with scikit-learn's DataConversionWarning) or a
    big-endian array gives the model of the plain 1-D array."""
    from sklearn.exceptions import DataConversionWarning

    y = Y_CLF if kind == "clf" else Y_REG
    clean = fit_quietly(model(kind), X, y)
    for y_awk in (list(y), y.astype(y.dtype.newbyteorder(">"))):
        assert_same_fit(fit_quietly(model(kind), X, y_awk), clean, X, X)
    with pytest.warns(DataConversionWarning):
        column = fit_quietly(model(kind), X, y.reshape(-1, 1))
    assert_same_fit(column, clean, X, X)


# ---------------------------------------------------------------------------
# pandas


@pytest.mark.parametrize("kind", ["clf", "reg"])
def test_dataframe_gives_same_model_and_keeps_feature_names(kind):
    pd = pytest.importorskip("pandas")
    y = Y_CLF if kind == "clf" else Y_REG
    columns = [f"f{i}" for i in range(D)]
    frame = pd.DataFrame(X, columns=columns)
    est = fit_quietly(model(kind), frame, pd.Series(y, name="target"))
    clean = fit_quietly(model(kind), X, y)
    assert_array_equal(est.feature_names_in_, np.array(columns, dtype=object))
    assert est.n_features_in_ == D
    assert_same_fit(est, clean, frame, X)
    # predicting with the DataFrame is silent (names match)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est.predict(frame)
    # predicting with an array works, with scikit-learn's warning
    with pytest.warns(UserWarning, match="valid feature names"):
        assert_array_equal(est.predict(X), clean.predict(X))
    # other column names are refused, as scikit-learn does
    renamed = frame.rename(columns={"f0": "other"})
    with pytest.raises(ValueError, match="feature names"):
        est.predict(renamed)
    # reordered columns too
    with pytest.raises(ValueError, match="feature names"):
        est.predict(frame[columns[::-1]])


def test_dataframe_mixed_dtypes_and_partial_fit():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({
        "a": X[:, 0],
        "b": np.round(3 * X[:, 1]).astype(np.int32),
        "c": X[:, 2] > 0,
        "d": X[:, 3].astype(np.float32),
    })
    clean = frame.to_numpy(dtype=np.float64)
    classes = np.unique(Y_CLF)
    a, b = model("clf"), model("clf")
    for _ in range(2):
        a.partial_fit(frame, Y_CLF, classes=classes)
        b.partial_fit(clean, Y_CLF, classes=classes)
    assert list(a.feature_names_in_) == ["a", "b", "c", "d"]
    assert_same_fit(a, b, frame, clean)


def test_dataframe_with_nan_is_refused():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(D)])
    frame.iloc[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model("reg").fit(frame, Y_REG)


# ---------------------------------------------------------------------------
# batch sizes


@pytest.mark.parametrize("solver", ["adam", "sgd"])
@pytest.mark.parametrize("kind", ["clf", "reg"])
def test_batch_size_larger_than_n_is_clipped_with_warning(kind, solver):
    y = Y_CLF if kind == "clf" else Y_REG
    with pytest.warns(UserWarning, match=BATCH_WARNING):
        big = fit_quietly(model(kind, solver, batch_size=N + 50), X, y)
    full = fit_quietly(model(kind, solver, batch_size=N), X, y)
    assert_same_fit(big, full, X, X)
    # scikit-learn warns the same
    sk_cls = SkMLPClassifier if kind == "clf" else SkMLPRegressor
    with pytest.warns(UserWarning, match=BATCH_WARNING):
        fit_quietly(sk_cls(hidden_layer_sizes=(3,), solver=solver, max_iter=2,
                           batch_size=N + 50, random_state=0), X, y)


def test_batch_size_larger_than_n_with_partial_fit():
    with pytest.warns(UserWarning, match=BATCH_WARNING):
        a = model("clf", batch_size=1000).partial_fit(X, Y_CLF, classes=np.unique(Y_CLF))
    b = model("clf", batch_size=N).partial_fit(X, Y_CLF, classes=np.unique(Y_CLF))
    assert_same_fit(a, b, X, X)


@pytest.mark.parametrize("solver", ["adam", "sgd"])
@pytest.mark.parametrize("kind", ["clf", "reg"])
def test_batch_size_one(kind, solver):
    """One-row batches: the kernels' gemv / outer-product paths, against the NumPy
    reference and against scikit-learn."""
    y = Y_CLF if kind == "clf" else Y_REG
    params = dict(batch_size=1, max_iter=3)
    cy = fit_quietly(model(kind, solver, **params), X, y)
    ref = fit_quietly(model(kind, solver, backend="numpy", **params), X, y)
    for a, b in zip(cy.coefs_ + cy.intercepts_, ref.coefs_ + ref.intercepts_):
        assert_allclose(a, b, rtol=1e-9, atol=1e-11)
    sk_cls = SkMLPClassifier if kind == "clf" else SkMLPRegressor
    sk_params = {k: v for k, v in cy.get_params().items()
                 if k in sk_cls().get_params()}
    sk = fit_quietly(sk_cls(**sk_params), X, y)
    for a, b in zip(cy.coefs_ + cy.intercepts_, sk.coefs_ + sk.intercepts_):
        assert_allclose(a, b, rtol=1e-7, atol=1e-9)


# ---------------------------------------------------------------------------
# one sample, one feature


@pytest.mark.filterwarnings("ignore:Got `batch_size`:UserWarning")
@pytest.mark.parametrize("backend", ["cython", "numpy"])
@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
def test_regressor_one_sample(solver, backend):
    X1, y1 = X[:1], Y_REG[:1]
    est = fit_quietly(model("reg", solver, backend=backend), X1, y1)
    pred = est.predict(X1)
    assert pred.shape == (1,) and np.isfinite(pred).all()
    assert all(np.isfinite(w).all() for w in est.coefs_ + est.intercepts_)
    sk_cls = SkMLPRegressor
    sk_params = {k: v for k, v in est.get_params().items() if k in sk_cls().get_params()}
    sk_params["batch_size"] = "auto"
    est2 = fit_quietly(model("reg", solver, backend=backend, batch_size="auto"), X1, y1)
    sk = fit_quietly(sk_cls(**sk_params), X1, y1)
    assert_allclose(est2.predict(X1), sk.predict(X1), rtol=1e-6, atol=1e-8)


@pytest.mark.filterwarnings("ignore:Got `batch_size`:UserWarning")
@pytest.mark.parametrize("backend", ["cython", "numpy"])
@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_classifier_one_sample_partial_fit(solver, backend):
    est = model("clf", solver, backend=backend)
    est.partial_fit(X[:1], [1], classes=[0, 1])
    est.partial_fit(X[1:2], [0])
    proba = est.predict_proba(X[:3])
    assert proba.shape == (3, 2)
    assert_allclose(proba.sum(axis=1), 1.0)
    assert est.predict(X[:1]).shape == (1,)
    assert list(est.classes_) == [0, 1]
    # multiclass, one sample of a string label
    est = model("clf", solver, backend=backend)
    est.partial_fit(X[:1], ["b"], classes=["a", "b", "c"])
    assert est.predict_proba(X[:1]).shape == (1, 3)
    assert est.predict(X[:2]).dtype.kind == "U"


@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
@pytest.mark.parametrize("kind", ["clf", "reg"])
def test_one_feature(kind, solver):
    X1 = X[:, :1]
    y = Y_CLF if kind == "clf" else Y_REG
    cy = fit_quietly(model(kind, solver), X1, y)
    ref = fit_quietly(model(kind, solver, backend="numpy"), X1, y)
    for a, b in zip(cy.coefs_ + cy.intercepts_, ref.coefs_ + ref.intercepts_):
        assert_allclose(a, b, rtol=1e-8, atol=1e-10)
    assert cy.coefs_[0].shape == (1, 7)
    assert cy.predict(X1).shape == (N,)
    # one feature, one sample at predict
    assert cy.predict(X1[:1]).shape == (1,)


@pytest.mark.parametrize("kind", ["clf", "reg"])
def test_one_feature_one_unit(kind):
    """The thinnest network: 1 input, one hidden unit, (for a regressor) one output."""
    X1 = X[:, :1]
    y = Y_CLF if kind == "clf" else Y_REG
    cy = fit_quietly(model(kind, hidden_layer_sizes=(1,)), X1, y)
    ref = fit_quietly(model(kind, hidden_layer_sizes=(1,), backend="numpy"), X1, y)
    for a, b in zip(cy.coefs_ + cy.intercepts_, ref.coefs_ + ref.intercepts_):
        assert_allclose(a, b, rtol=1e-8, atol=1e-10)


def test_one_row_predict_after_fit():
    """One row (gemv / outer-product paths) agrees with the same row in a batch
    (gemm) to rounding; bit equality is not promised, BLAS sums in other orders."""
    est = fit_quietly(model("clf"), X, Y_CLF)
    full = est.predict_proba(X)
    for i in (0, 5, N - 1):
        assert_allclose(est.predict_proba(X[i:i + 1]), full[i:i + 1], rtol=1e-12,
                        atol=1e-15)
