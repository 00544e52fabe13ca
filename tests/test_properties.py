"""Reliability (6): property tests, the Cython kernels against the NumPy reference.

Random shapes (1..64 samples, 1..16 features, one or two hidden layers of 1..16
units, batch sizes 1..n+5), both float dtypes, every hidden activation (one for all
layers or one per layer), every loss / output (multiclass softmax, binary and
multilabel logistic, squared error with one or several outputs, Poisson) and every
solver: both backends must give the same model (float64: ~1e-9 relative after a few
epochs; float32: predictions and loss within ~1e-3) and neither may crash.
"""

import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402

from pybackprop import MLPClassifier, MLPRegressor  # noqa: E402

ACTIVATIONS = ["identity", "logistic", "tanh", "relu", "leaky_relu", "elu", "gelu",
               "softplus", "silu"]
TASKS = ["multiclass", "binary", "multilabel", "regression", "multioutput", "poisson"]
CLASSIFICATION = ("multiclass", "binary", "multilabel")
BATCH_WARNING = "Got `batch_size` less than 1 or larger than sample size"

SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow],
                print_blob=True)


@st.composite
def problems(draw, dtypes=(np.float64, np.float32)):
    """A data set and estimator parameters, both drawn."""
    task = draw(st.sampled_from(TASKS))
    min_n = 2 if task in ("multiclass", "binary") else 1
    n = draw(st.integers(min_n, 64))
    d = draw(st.integers(1, 16))
    widths = tuple(draw(st.lists(st.integers(1, 16), min_size=1, max_size=2)))
    if draw(st.booleans()):
        activation = draw(st.sampled_from(ACTIVATIONS))
    else:
        activation = tuple(draw(st.sampled_from(ACTIVATIONS)) for _ in widths)
    solver = draw(st.sampled_from(["sgd", "adam", "lbfgs"]))
    dtype = draw(st.sampled_from(dtypes))
    seed = draw(st.integers(0, 2**31 - 1))
    weighted = draw(st.booleans())

    rng = np.random.RandomState(seed)
    X = rng.standard_normal((n, d)) * draw(st.sampled_from([0.5, 1.0, 3.0]))
    if task == "multiclass":
        k = draw(st.integers(2, min(n, 5)))
        y = rng.permutation(np.arange(n) % k)  # every class present
    elif task == "binary":
        y = rng.permutation(np.arange(n) % 2)
    elif task == "multilabel":
        y = rng.randint(0, 2, (n, draw(st.integers(2, 3))))
    elif task == "regression":
        y = X @ rng.uniform(-1, 1, d) + 0.1 * rng.standard_normal(n)
    elif task == "multioutput":
        y = X @ rng.uniform(-1, 1, (d, draw(st.integers(2, 3))))
    else:
        y = rng.poisson(np.exp(0.3 * X[:, 0])).astype(float)
    sample_weight = rng.uniform(0.2, 3.0, n) if weighted else None

    params = dict(hidden_layer_sizes=widths, activation=activation, solver=solver,
                  random_state=int(rng.randint(2**31 - 1)),
                  alpha=draw(st.sampled_from([0.0, 1e-4, 0.1])))
    if solver == "lbfgs":
        params["max_iter"] = draw(st.integers(1, 4))
    else:
        params["max_iter"] = draw(st.integers(1, 3))
        params["batch_size"] = draw(st.integers(1, n + 5))
        params["shuffle"] = draw(st.booleans())
        if draw(st.booleans()):
            params["dropout"] = draw(st.sampled_from([0.1, 0.5]))
    if solver == "sgd":
        params["learning_rate_init"] = 0.01
        params["learning_rate"] = draw(st.sampled_from(["constant", "invscaling",
                                                        "adaptive"]))
        params["momentum"] = draw(st.sampled_from([0.0, 0.9]))
        params["nesterovs_momentum"] = draw(st.booleans())
    elif solver == "adam":
        params["learning_rate_init"] = draw(st.sampled_from([1e-3, 1e-2]))
    if task == "poisson":
        params["loss"] = "poisson"
    return task, X.astype(dtype), y, sample_weight, params


def _estimator(task, params, backend):
    cls = MLPClassifier if task in CLASSIFICATION else MLPRegressor
    return cls(backend=backend, **params)


def _fit_both(task, X, y, sample_weight, params):
    """The fitted pair, or the pair of identical errors (the test fails otherwise)."""
    fitted, errors = [], []
    for backend in ("cython", "numpy"):
        est = _estimator(task, params, backend)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.filterwarnings("ignore", message=BATCH_WARNING)
            # the reference may overflow loudly; it is not what is tested here
            warnings.simplefilter("ignore", RuntimeWarning)
            try:
                fitted.append(est.fit(X, y, sample_weight=sample_weight))
                errors.append(None)
            except ValueError as e:
                errors.append(str(e))
    if errors[0] != errors[1]:
        # A fit that diverges to the edge of the float range may overflow in one
        # backend and stay (barely) finite in the other: rounding decides which. Then
        # the finite one must show the divergence too: a loss beyond 1e20.
        survivor = fitted[0]
        assert all(e is None or "non-finite" in e for e in errors), errors
        assert not np.isfinite(survivor.loss_) or survivor.loss_ > 1e20, (errors, survivor.loss_)
        return None
    return fitted if errors[0] is None else None


def _output(est, X):
    return est.predict_proba(X) if hasattr(est, "predict_proba") else est.predict(X)


def _close(a, b, rtol, what):
    """Each array within ``rtol`` of the other, relative to its largest entry."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, what
    # an overflow (exp of a diverged Poisson logit) must happen in both, alike
    finite = np.isfinite(b)
    np.testing.assert_array_equal(a[~finite], b[~finite], err_msg=what)
    a, b = a[finite], b[finite]
    scale = max(1.0, float(np.max(np.abs(b)))) if b.size else 1.0
    assert_allclose(a, b, rtol=rtol, atol=rtol * scale, err_msg=what)


@settings(max_examples=250, **SETTINGS)
@given(problems(dtypes=(np.float64,)))
def test_cython_equals_numpy_float64(problem):
    task, X, y, sample_weight, params = problem
    pair = _fit_both(task, X, y, sample_weight, params)
    if pair is None:
        return
    cy, ref = pair
    assert cy.n_iter_ == ref.n_iter_
    rtol = 1e-9 if params["solver"] != "lbfgs" else 1e-7
    for i, (a, b) in enumerate(zip(cy.coefs_ + cy.intercepts_, ref.coefs_ + ref.intercepts_)):
        assert a.dtype == b.dtype == np.float64
        _close(a, b, rtol, f"weights {i}")
    _close(cy.loss_, ref.loss_, rtol, "loss_")
    if hasattr(ref, "loss_curve_"):
        _close(cy.loss_curve_, ref.loss_curve_, rtol, "loss_curve_")
    _close(_output(cy, X), _output(ref, X), rtol, "predictions")
    if task != "poisson":
        assert np.isfinite(_output(cy, X)).all()


@settings(max_examples=150, **SETTINGS)
@given(problems(dtypes=(np.float32,)))
def test_cython_equals_numpy_float32(problem):
    task, X, y, sample_weight, params = problem
    pair = _fit_both(task, X, y, sample_weight, params)
    if pair is None:
        return
    cy, ref = pair
    for a, b in zip(cy.coefs_ + cy.intercepts_, ref.coefs_ + ref.intercepts_):
        assert a.dtype == b.dtype == np.float32
    rtol = 1e-3 if params["solver"] != "lbfgs" else 1e-2
    if params["solver"] == "lbfgs" and cy.n_iter_ != ref.n_iter_:
        return  # float32 rounding can end L-BFGS's line search an iteration apart
    assert cy.n_iter_ == ref.n_iter_
    _close(cy.loss_, ref.loss_, rtol, "loss_")
    out_cy, out_ref = _output(cy, X), _output(ref, X)
    assert out_cy.dtype == np.float32
    _close(out_cy, out_ref, rtol, "predictions")


@settings(max_examples=150, **SETTINGS)
@given(problems(), st.integers(0, 2**31 - 1))
def test_predict_equal_for_any_weights(problem, seed):
    """Forward pass alone, with the weights replaced by random ones (big and small):
    the kernels' predictions equal the reference's."""
    task, X, y, sample_weight, params = problem
    params = dict(params, solver="lbfgs", max_iter=1, dropout=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        cy = _estimator(task, params, "cython").fit(X, y)
    rng = np.random.RandomState(seed)
    scale = rng.choice([0.1, 1.0, 5.0])
    cy.coefs_ = [(scale * rng.standard_normal(c.shape)).astype(X.dtype) for c in cy.coefs_]
    cy.intercepts_ = [(scale * rng.standard_normal(b.shape)).astype(X.dtype)
                      for b in cy.intercepts_]
    ref = _estimator(task, params, "numpy")
    ref.__dict__.update({k: v for k, v in cy.__dict__.items() if k.endswith("_")})
    ref.__dict__.update({k: v for k, v in cy.__dict__.items() if k.startswith("_")})
    ref.set_params(backend="numpy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out_ref = _output(ref, X)
    out_cy = _output(cy, X)
    assert out_cy.dtype == X.dtype
    rtol = 1e-9 if X.dtype == np.float64 else 1e-3
    if task == "poisson":  # exp output: compare in log space
        with np.errstate(divide="ignore"):
            out_cy, out_ref = np.log(out_cy), np.log(out_ref)
    _close(out_cy, out_ref, rtol, "predictions")
    # the first row alone gives the same row
    _close(_output(cy, X[:1]), _output(cy, X)[:1], rtol, "one row")


@settings(max_examples=100, **SETTINGS)
@given(problems(dtypes=(np.float64,)), st.integers(1, 4))
def test_partial_fit_equal(problem, n_calls):
    """Several partial_fit calls (one epoch each) agree between the backends."""
    task, X, y, sample_weight, params = problem
    if params["solver"] == "lbfgs":
        params = dict(params, solver="adam", batch_size=min(len(X), 8), max_iter=1)
    models, errors = [], []
    for backend in ("cython", "numpy"):
        est = _estimator(task, params, backend)
        kwargs = {}
        if task in ("multiclass", "binary"):
            kwargs["classes"] = np.unique(y)
        elif task == "multilabel":
            kwargs["classes"] = np.arange(y.shape[1])
        error = None
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=BATCH_WARNING)
            warnings.simplefilter("ignore", RuntimeWarning)
            for call in range(n_calls):
                try:
                    est.partial_fit(X, y, sample_weight=sample_weight, **kwargs)
                except ValueError as e:  # a diverging fit: must happen in both alike
                    error = (call, str(e))
                    break
                kwargs = {}
        models.append(est)
        errors.append(error)
    assert errors[0] == errors[1], errors
    cy, ref = models
    if not hasattr(ref, "coefs_"):
        assert not hasattr(cy, "coefs_")
        return
    assert cy.t_ == ref.t_
    for i, (a, b) in enumerate(zip(cy.coefs_ + cy.intercepts_, ref.coefs_ + ref.intercepts_)):
        _close(a, b, 1e-9, f"weights {i}")
