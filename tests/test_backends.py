"""The Cython kernels against the NumPy reference, and both against finite differences."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.exceptions import ConvergenceWarning

from _helpers import make_data, numeric_gradient, sample_weights
from pybackprop import MLPClassifier, MLPRegressor
from pybackprop._backend import CythonBackend, NumpyBackend

ACTIVATIONS = ["identity", "logistic", "tanh", "relu"]
SOLVERS = ["adam", "sgd", "lbfgs"]
# task -> (estimator class, extra parameters); together they cover every loss
TASKS = {
    "squared_error": (MLPRegressor, {}),
    "squared_error_3_outputs": (MLPRegressor, {}),
    "poisson": (MLPRegressor, {"loss": "poisson"}),
    "log_loss_multiclass": (MLPClassifier, {}),
    "log_loss_binary": (MLPClassifier, {}),
    "log_loss_multilabel": (MLPClassifier, {}),
}
DATA_KIND = {
    "squared_error": "regression",
    "squared_error_3_outputs": "multioutput",
    "poisson": "poisson",
    "log_loss_multiclass": "multiclass",
    "log_loss_binary": "binary",
    "log_loss_multilabel": "multilabel",
}
SOLVER_PARAMS = {
    "adam": dict(solver="adam", learning_rate_init=0.01, max_iter=8),
    "sgd": dict(solver="sgd", learning_rate_init=0.01, max_iter=8, batch_size=32),
    "lbfgs": dict(solver="lbfgs", max_iter=15),
}


def fit_pair(task, solver, activation, X, y, sample_weight=None, **params):
    """The same estimator fitted with each backend."""
    cls, extra = TASKS[task]
    p = dict(hidden_layer_sizes=(10, 7), activation=activation, random_state=0, alpha=1e-3,
             **extra, **SOLVER_PARAMS[solver])
    p.update(params)
    fitted = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for backend in ("cython", "numpy"):
            fitted.append(cls(backend=backend, **p).fit(X, y, sample_weight=sample_weight))
    return fitted


def assert_backends_agree(cy, ref, X, rtol, atol, scaled=False):
    """Same fit from both backends. With ``scaled``, each array's absolute tolerance is
    ``rtol`` times its largest entry (float32 rounding hits small weights hardest)."""

    def close(a, b):
        b = np.asarray(b)
        tol = max(atol, rtol * float(np.max(np.abs(b)))) if scaled else atol
        assert_allclose(a, b, rtol=rtol, atol=tol)

    assert cy.n_iter_ == ref.n_iter_
    close(cy.loss_, ref.loss_)
    if hasattr(ref, "loss_curve_"):
        close(cy.loss_curve_, ref.loss_curve_)
    for a, b in zip(cy.coefs_ + cy.intercepts_, ref.coefs_ + ref.intercepts_):
        assert a.dtype == b.dtype
        close(a, b)
    if hasattr(ref, "predict_proba"):
        close(cy.predict_proba(X), ref.predict_proba(X))
    else:
        close(cy.predict(X), ref.predict(X))


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("task", list(TASKS))
def test_cython_equals_numpy_float64(task, solver, activation):
    """In float64, the Cython backend reproduces the NumPy reference to 1e-10 after several epochs."""
    X, y = make_data(DATA_KIND[task], n=200)
    cy, ref = fit_pair(task, solver, activation, X, y)
    assert cy.coefs_[0].dtype == np.float64
    assert_backends_agree(cy, ref, X, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("fmt", ["csr", "csc"])
@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("task", ["log_loss_multiclass", "squared_error_3_outputs", "poisson"])
def test_cython_equals_numpy_sparse_weighted(task, solver, fmt):
    """Sparse X with sample weights: the Cython backend reproduces the NumPy reference to 1e-10."""
    X, y = make_data(DATA_KIND[task], n=200, fmt=fmt)
    cy, ref = fit_pair(task, solver, "tanh", X, y, sample_weight=sample_weights(200))
    assert_backends_agree(cy, ref, X, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("task", ["log_loss_multiclass", "log_loss_binary", "squared_error"])
def test_cython_equals_numpy_early_stopping(task, solver):
    """Early stopping, shuffled minibatches restricted to the training split: the backends agree."""
    X, y = make_data(DATA_KIND[task], n=200)
    extra = {} if solver == "lbfgs" else dict(early_stopping=True, n_iter_no_change=2)
    cy, ref = fit_pair(task, solver, "relu", X, y, **extra)
    assert_backends_agree(cy, ref, X, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize(
    "task", ["squared_error", "poisson", "log_loss_multiclass", "log_loss_multilabel"]
)
def test_cython_equals_numpy_float32(task, solver, activation):
    """With float32 X, both backends train in float32 and agree to ~1e-4 relative."""
    X, y = make_data(DATA_KIND[task], n=200)
    X = X.astype(np.float32)
    extra = {"max_iter": 5} if solver == "lbfgs" else {}
    cy, ref = fit_pair(task, solver, activation, X, y, **extra)
    for est in (cy, ref):
        assert all(w.dtype == np.float32 for w in est.coefs_ + est.intercepts_)
        assert est._flat_params.dtype == np.float32
    assert_backends_agree(cy, ref, X, rtol=1e-4, atol=1e-6, scaled=True)


# ---------------------------------------------------------------------------
# analytic gradient vs central finite differences

GRAD_TASKS = ["squared_error", "squared_error_3_outputs", "poisson", "log_loss_multiclass",
              "log_loss_binary", "log_loss_multilabel"]


def gradient_setup(task, activation, alpha, weighted, fmt, n=40, n_features=6):
    """A briefly fitted two-hidden-layer net, and the Data the backends read."""
    X, y = make_data(DATA_KIND[task], n=300)
    # a few informative pixels, rows spread over the data set
    X = X[::300 // n][:n, 18:18 + n_features]
    X = X + np.random.RandomState(1).uniform(0, 0.1, X.shape) * (X > 0)
    y = y[::300 // n][:n]
    if fmt != "dense":
        X = sp.csr_matrix(X) if fmt == "csr" else sp.csc_matrix(X)
    sw = sample_weights(n) if weighted else None
    cls, extra = TASKS[task]
    est = cls(hidden_layer_sizes=(5, 4), activation=activation, solver="adam", max_iter=3,
              learning_rate_init=0.05, alpha=alpha, random_state=0, **extra)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y, sample_weight=sw)
    # the targets as _fit hands them to the backends
    if cls is MLPClassifier:
        Y = est._label_binarizer.transform(y).astype(bool)
    else:
        Y = np.asarray(y, dtype=np.float64)
    Y = Y.reshape(n, -1)
    data = est._make_data(X, Y, sw)  # as _fit_lbfgs builds it
    assert data.dtype == np.float64
    return est, data


def assert_gradient_matches(backend, params):
    grads = np.empty_like(params)
    scratch = np.empty_like(params)
    loss = backend.loss_grad(params.copy(), grads)
    assert np.isfinite(loss)
    fd = numeric_gradient(lambda p: backend.loss_grad(p, scratch), params)
    err = np.linalg.norm(grads - fd) / max(np.linalg.norm(fd), np.linalg.norm(grads))
    assert err < 1e-6, err
    assert np.linalg.norm(grads) > 1e-4  # not vacuous


@pytest.mark.parametrize("fmt", ["dense", "csr"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("alpha", [0.0, 0.5])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("task", GRAD_TASKS)
@pytest.mark.parametrize("backend_cls", [CythonBackend, NumpyBackend],
                         ids=["cython", "numpy"])
def test_gradient_matches_finite_differences(backend_cls, task, activation, alpha, weighted,
                                             fmt):
    """loss_grad's gradient equals central differences of its loss (relative error < 1e-6)."""
    est, data = gradient_setup(task, activation, alpha, weighted, fmt)
    net = est._net()
    backend = backend_cls(net, data, net.chunk_rows(data.n_samples))
    assert_gradient_matches(backend, est._flat_params.copy())


@pytest.mark.parametrize("fmt", ["dense", "csr"])
@pytest.mark.parametrize("chunk", [1, 7])
@pytest.mark.parametrize("task", GRAD_TASKS)
def test_chunked_loss_grad_equals_whole_batch(task, chunk, fmt):
    """Cython loss_grad accumulated over row chunks equals the NumPy full batch, and finite differences."""
    est, data = gradient_setup(task, "tanh", 0.3, True, fmt)
    net = est._net()
    params = est._flat_params.copy()
    g_chunked, g_ref = np.empty_like(params), np.empty_like(params)
    loss_chunked = CythonBackend(net, data, chunk).loss_grad(params, g_chunked)
    loss_ref = NumpyBackend(net, data, data.n_samples).loss_grad(params, g_ref)
    assert_allclose(loss_chunked, loss_ref, rtol=1e-12)
    assert_allclose(g_chunked, g_ref, rtol=1e-10, atol=1e-13)
    assert_gradient_matches(CythonBackend(net, data, chunk), params)


@pytest.mark.parametrize("task", GRAD_TASKS)
def test_loss_matches_hand_computation(task):
    """loss_grad's loss is the documented formula, computed here from coefs_ by plain NumPy."""
    est, data = gradient_setup(task, "logistic", 0.5, True, "dense")
    net = est._net()
    X, Y, s = data.X, data.Y.astype(float), data.sample_weight
    h = X
    for i, (W, b) in enumerate(zip(est.coefs_, est.intercepts_)):
        z = h @ W + b
        h = 1 / (1 + np.exp(-z)) if i < len(est.coefs_) - 1 else z
    if est.out_activation_ == "identity":
        per_sample = 0.5 * ((Y - h) ** 2).sum(axis=1)
    elif est.out_activation_ == "exp":
        p = np.exp(h)
        per_sample = (np.where(Y > 0, Y * np.log(np.where(Y > 0, Y, 1) / p), 0) - Y + p).sum(1)
    elif est.out_activation_ == "softmax":
        logp = h - h.max(axis=1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
        per_sample = -(Y * logp).sum(axis=1)
    else:
        p = 1 / (1 + np.exp(-h))
        per_sample = -(Y * np.log(p) + (1 - Y) * np.log(1 - p)).sum(axis=1)
    l2 = sum((W ** 2).sum() for W in est.coefs_)
    expected = (s @ per_sample + 0.5 * 0.5 * l2) / s.sum()
    for backend_cls in (CythonBackend, NumpyBackend):
        grads = np.empty_like(est._flat_params)
        loss = backend_cls(net, data, data.n_samples).loss_grad(est._flat_params.copy(), grads)
        assert_allclose(loss, expected, rtol=1e-10)


@pytest.mark.parametrize("fmt", ["dense", "csr"])
def test_predict_backends_agree_on_large_input(fmt):
    """Predicting more rows than one chunk holds gives the NumPy reference's outputs."""
    X, y = make_data("multiclass", n=300)
    est = MLPClassifier(hidden_layer_sizes=(40,), max_iter=2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
    big = np.tile(X, (400, 1))  # 120000 rows × 50 units > one 4M-value chunk
    if fmt == "csr":
        big = sp.csr_matrix(big)
    assert est._net().chunk_rows(big.shape[0]) < big.shape[0]
    p_cy = est.predict_proba(big)
    est.set_params(backend="numpy")
    p_np = est.predict_proba(big)
    assert_allclose(p_cy, p_np, rtol=1e-10, atol=1e-14)
    assert_array_equal(p_cy[:300], p_cy[-300:])
