"""Weights edited by hand, corrupted sparse input, values a float32 model cannot hold:
a ValueError that names the problem, never a read or write past a buffer (the kernels
run without bounds checks) and never uninitialised memory used as weights."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.exceptions import ConvergenceWarning

from pybackprop import MLPRegressor, _backend, _kernels
from pybackprop._layout import Layout

rng = np.random.RandomState(0)
X = rng.rand(60, 4)
y = rng.rand(60)


@pytest.fixture
def fitted():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return MLPRegressor(hidden_layer_sizes=(10,), max_iter=3, random_state=0).fit(X, y)


EDITS = {
    # name: (edit of (coefs, intercepts), the message's words)
    "layers-do-not-chain": (lambda c, b: ([c[0], np.ones((3, 1))], b), "do not chain"),
    "intercept-too-short": (lambda c, b: (c, [np.zeros(3), b[1]]), r"intercepts_\[0\]"),
    "intercept-too-long": (lambda c, b: (c, [np.zeros(20), b[1]]), r"intercepts_\[0\]"),
    "intercept-missing": (lambda c, b: (c, b[:1]), "one array per layer"),
    "more-inputs-than-features": (lambda c, b: ([np.ones((5000, 10)), c[1]], b),
                                  "fitted on 4 features"),
    "fewer-inputs-than-features": (lambda c, b: ([c[0][:2], c[1]], b), "fitted on 4"),
    "wider-output": (lambda c, b: ([c[0], np.ones((10, 3))], [b[0], np.ones(3)]),
                     "1 outputs"),
    "coef-1d": (lambda c, b: ([c[0].ravel(), c[1]], b), "2-D"),
    "strings": (lambda c, b: ([c[0].astype(str), c[1]], b), "numbers"),
}


@pytest.mark.parametrize("edit", list(EDITS))
@pytest.mark.parametrize("call", ["predict", "partial_fit", "warm_fit", "to_sklearn"])
def test_edited_weights_that_do_not_form_the_network_raise(fitted, edit, call):
    change, words = EDITS[edit]
    fitted.coefs_, fitted.intercepts_ = change(list(fitted.coefs_), list(fitted.intercepts_))
    with pytest.raises(ValueError, match=words):
        if call == "predict":
            fitted.predict(X)
        elif call == "partial_fit":
            fitted.partial_fit(X, y)
        elif call == "warm_fit":
            fitted.set_params(warm_start=True).fit(X, y)
        else:
            fitted.to_sklearn()


@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_resized_network_keeps_training_only_with_a_matching_optimizer_state(solver):
    """Hidden layer grown 10 -> 12 by hand (consistently, with hidden_layer_sizes):
    the previous optimizer state cannot serve the new weights; the model stays as it
    was. (scikit-learn fails here with a broadcasting error.)"""
    est = MLPRegressor(hidden_layer_sizes=(10,), solver=solver, max_iter=3,
                       random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
    coefs = [np.hstack([est.coefs_[0], np.zeros((4, 2))]),
             np.vstack([est.coefs_[1], np.zeros((2, 1))])]
    intercepts = [np.r_[est.intercepts_[0], 0.0, 0.0], est.intercepts_[1].copy()]
    est.coefs_, est.intercepts_ = coefs, intercepts
    est.set_params(hidden_layer_sizes=(12,))
    before = est.predict(X)
    with pytest.raises(ValueError, match="optimizer state of the previous fit holds 61 "
                                         "values, but coefs_ and intercepts_ now hold 73"):
        est.partial_fit(X, y)
    assert_array_equal(est.predict(X), before)
    # a warm-started fit starts a new optimizer state: it trains the resized network
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.set_params(warm_start=True).fit(X, y)
    assert est.coefs_[0].shape == (4, 12) and est._optimizer.buffers[0].size == 73


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weights_replaced_by_the_other_float_type_keep_training(dtype):
    """The optimizer state follows the weights' new dtype, as scikit-learn's does."""
    other = np.float64 if dtype == np.float32 else np.float32
    est = MLPRegressor(hidden_layer_sizes=(10,), max_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X.astype(dtype), y)
        est.coefs_ = [c.astype(other) for c in est.coefs_]
        est.intercepts_ = [b.astype(other) for b in est.intercepts_]
        est.partial_fit(X, y)
    assert est.coefs_[0].dtype == other
    assert est._optimizer.m.dtype == other and est._optimizer.v.dtype == other


def test_layout_pack_checks_every_shape():
    lay = Layout([4, 3, 2])
    good = [np.ones((4, 3)), np.ones((3, 2))], [np.ones(3), np.ones(2)]
    assert lay.pack(*good, np.float64).shape == (4 * 3 + 3 * 2 + 3 + 2,)
    with pytest.raises(ValueError, match="layer 1"):
        lay.pack(good[0], [np.ones(3), np.ones(5)], np.float64)
    with pytest.raises(ValueError, match="layer 0"):
        lay.pack([np.ones((2, 2)), np.ones((3, 2))], good[1], np.float64)
    with pytest.raises(ValueError, match="1 weight and 2 bias arrays"):
        lay.pack(good[0][:1], good[1], np.float64)


def corrupted(kind):
    Xs = sp.csr_matrix(np.where(X > 0.5, X, 0))
    if kind == "index-past-the-columns":
        Xs.indices[3] = 10**6
    elif kind == "negative-index":
        Xs.indices[0] = -5
    elif kind == "indptr-past-the-data":
        Xs.indptr[-1] = Xs.indices.shape[0] + 100
    elif kind == "indptr-decreasing":
        Xs.indptr[5] = Xs.indptr[6] + 1
    return Xs


@pytest.mark.parametrize("kind", ["index-past-the-columns", "negative-index",
                                  "indptr-past-the-data", "indptr-decreasing"])
def test_corrupted_csr_input_is_refused(fitted, kind):
    with pytest.raises(ValueError, match="not a valid CSR matrix|index|indptr"):
        fitted.predict(corrupted(kind))
    with pytest.raises(ValueError, match="not a valid CSR matrix|index|indptr"):
        MLPRegressor(hidden_layer_sizes=(5,), max_iter=2).fit(corrupted(kind), y)


@pytest.mark.parametrize("fmt", ["dense", "csr"])
def test_float32_model_on_float64_input_beyond_float32(fmt):
    """Finite float64 input beyond float32's range: a float32 model predicts it in
    float64 (as scikit-learn does; no cast to float32 that would overflow); NaN is
    still refused by name."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = MLPRegressor(hidden_layer_sizes=(5,), max_iter=2, random_state=0)
        est.fit(X.astype(np.float32), y)
    big = X.copy()
    big[0, 0] = 1e39
    out = est.predict(big if fmt == "dense" else sp.csr_matrix(big))
    assert out.dtype == np.float64 and np.isfinite(out).all()
    with pytest.raises(ValueError, match="NaN"):
        big[0, 0] = np.nan
        est.predict(big if fmt == "dense" else sp.csr_matrix(big))


def test_kernels_check_buffer_lengths(fitted):
    """The last line of defence: the kernels compare each buffer's length with the
    layer tables before running unchecked."""
    net = fitted._net()
    lay = net.layout
    params = fitted._params()
    hidden, output, loss = net.codes()
    act_off, size = lay.act_offsets(60)
    acts = np.empty(size)
    out = np.empty(60)
    args = (lay.units, lay.coef_off, lay.inter_off, act_off, hidden, output)
    empty = np.empty(0, dtype=np.intc)
    predict = _kernels.predict["double"]
    assert predict(*args, X.reshape(-1), empty, empty, 60, 60, params, acts, out)
    with pytest.raises(ValueError, match="X holds fewer than n_rows rows"):
        predict(*args, X.reshape(-1)[:-1], empty, empty, 60, 60, params, acts, out)
    with pytest.raises(ValueError, match="params holds fewer values"):
        predict(*args, X.reshape(-1), empty, empty, 60, 60, params[:-1], acts, out)
    with pytest.raises(ValueError, match="out holds fewer"):
        predict(*args, X.reshape(-1), empty, empty, 60, 60, params, acts, out[:-1])
    # run_epoch: an optimizer state shorter than the parameters
    from pybackprop._optim import AdamState

    data = _backend.Data(X, y.reshape(-1, 1), None, False, np.float64)
    backend = _backend.CythonBackend(net, data, 20)
    opt = AdamState(params.size, np.float64, 1e-3, 0.9, 0.999, 1e-8)
    opt.v = opt.v[:-1]
    with pytest.raises(ValueError, match="optimizer state holds fewer values"):
        backend.run_epoch(params.copy(), None, 60, 20, opt)


@pytest.mark.parametrize("call", ["partial_fit", "warm_fit"])
def test_training_on_updates_the_weight_arrays_the_caller_holds(fitted, call):
    """As in scikit-learn, coefs_ and intercepts_ stay the same arrays across
    partial_fit and warm-started fits, updated in place."""
    coefs, first, bias = fitted.coefs_, fitted.coefs_[0], fitted.intercepts_[-1]
    before = first.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if call == "partial_fit":
            fitted.partial_fit(X, y)
        else:
            fitted.set_params(warm_start=True).fit(X, y)
    assert fitted.coefs_ is coefs and fitted.coefs_[0] is first
    assert fitted.intercepts_[-1] is bias
    assert not np.array_equal(first, before)
    assert np.shares_memory(first, fitted._flat_params)
    # and a failed call leaves them as they were
    now = first.copy()
    with pytest.raises(ValueError):
        fitted.partial_fit(X[:, :3], y)
    assert fitted.coefs_[0] is first
    assert_array_equal(first, now)


def test_assume_finite_config_skips_the_finiteness_check(fitted):
    """sklearn.set_config(assume_finite=True) lets NaN through predict, as in
    scikit-learn (the output is NaN where the input is)."""
    from sklearn import config_context

    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fitted.predict(bad)
    with config_context(assume_finite=True), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the NaN output is reported
        out = fitted.predict(bad)
    assert np.isnan(out[0]) and np.isfinite(out[1:]).all()
    assert_allclose(out[1:], fitted.predict(X[1:]), rtol=1e-12)
