"""Reliability (3): numerics at the edges.

Inputs of magnitude 1e4 and 1e30, saturated sigmoids and softmax over huge logits must
not make the compiled kernels overflow noisily (no RuntimeWarning) or hand back NaN:
a fit either ends with finite weights, whose predictions hold no NaN, or raises
"Solver produced non-finite parameter weights" with the previous model intact. A
diverging fit behaves as scikit-learn's does on the same input (same outcome: the
same error, or a finite model), never returning NaN weights silently.

The kernels are checked here (backend="cython"); the NumPy reference backend, like
scikit-learn, may emit NumPy's floating-point RuntimeWarnings.
"""

import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier as SkMLPClassifier
from sklearn.neural_network import MLPRegressor as SkMLPRegressor

from pybackprop import MLPClassifier, MLPRegressor

NON_FINITE = "Solver produced non-finite parameter weights"
ACTIVATIONS = ["identity", "logistic", "tanh", "relu", "leaky_relu", "elu", "gelu",
               "softplus", "silu"]
TASKS = ["binary", "multiclass", "multilabel", "regression", "poisson"]
N, D = 40, 5


def _targets():
    rng = np.random.RandomState(0)
    X = rng.standard_normal((N, D))
    y = {
        "binary": (X[:, 0] > 0).astype(int),
        "multiclass": np.digitize(X[:, 0], [-0.5, 0.5]),
        "multilabel": np.column_stack([X[:, 0] > 0, X[:, 1] > 0, X[:, 0] + X[:, 2] > 0])
        .astype(int),
        "regression": X @ rng.standard_normal(D),
        "poisson": rng.poisson(np.exp(0.5 * X[:, 0])).astype(float),
    }
    return X, y


X, Y = _targets()


def model(task, **params):
    p = dict(hidden_layer_sizes=(4, 3), max_iter=5, random_state=0)
    p.update(params)
    if task == "poisson":
        return MLPRegressor(loss="poisson", **p)
    if task == "regression":
        return MLPRegressor(**p)
    return MLPClassifier(**p)


def output(est, X):
    return est.predict_proba(X) if hasattr(est, "predict_proba") else est.predict(X)


def weights(est):
    return [w.copy() for w in est.coefs_ + est.intercepts_]


def all_finite(arrays):
    return all(np.isfinite(a).all() for a in arrays)


class _Strict:
    """Floating-point RuntimeWarnings raised as errors; other warnings recorded."""

    def __enter__(self):
        self._ctx = warnings.catch_warnings(record=True)
        self.records = self._ctx.__enter__()
        warnings.simplefilter("always")
        warnings.simplefilter("error", RuntimeWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        return self

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def check_no_silent_nan(est, X_eval):
    """Predictions without NaN; or a clear ValueError; or NaN with a warning saying so.

    Returns a description of the problem, or None."""
    with _Strict() as strict:
        try:
            out = output(est, X_eval)
        except ValueError:
            return None
        except RuntimeWarning as w:
            return f"RuntimeWarning at predict: {w}"
    if np.isnan(out).any():
        if any("nan" in str(r.message).lower() or "finite" in str(r.message).lower()
               for r in strict.records):
            return None
        return f"{int(np.isnan(out).sum())} NaN in the predictions, no error, no warning"
    return None


def _fit_outcome(est, X_fit, y):
    """'ok', 'non-finite' (the clear error), or a description of what went wrong."""
    with _Strict():
        try:
            est.fit(X_fit, y)
        except ValueError as e:
            if NON_FINITE in str(e):
                return "non-finite"
            return f"unexpected ValueError: {e}"
        except RuntimeWarning as w:
            return f"RuntimeWarning in fit: {w}"
    return "ok"


@pytest.mark.parametrize("scale", [1e4, 1e30])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("solver", ["lbfgs", "sgd", "adam"])
@pytest.mark.parametrize("task", TASKS)
def test_extreme_inputs_fit(task, solver, dtype, scale):
    """Fit on X * 1e4 and X * 1e30, every activation: no RuntimeWarning; finite weights
    and NaN-free predictions, or the non-finite error with the earlier model intact."""
    problems = []
    X_big = (X * scale).astype(dtype)
    for activation in ACTIVATIONS:
        est = model(task, solver=solver, activation=activation)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(X.astype(dtype), Y[task])
        before, pred_before = weights(est), output(est, X.astype(dtype))
        outcome = _fit_outcome(est, X_big, Y[task])
        if outcome == "non-finite":
            after = weights(est)
            if len(after) != len(before) or not all(
                np.array_equal(a, b) for a, b in zip(after, before)
            ):
                problems.append(f"{activation}: failed fit changed the weights")
            elif not np.array_equal(output(est, X.astype(dtype)), pred_before):
                problems.append(f"{activation}: failed fit changed the predictions")
            continue
        if outcome != "ok":
            problems.append(f"{activation}: {outcome}")
            continue
        if not all_finite(weights(est)):
            problems.append(f"{activation}: non-finite weights returned silently")
            continue
        for X_eval in (X_big, X.astype(dtype)):
            problem = check_no_silent_nan(est, X_eval)
            if problem:
                problems.append(f"{activation}: {problem}")
                break
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("scale", [1e4, 1e30, -1e30])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("task", TASKS)
def test_extreme_inputs_predict(task, dtype, scale):
    """A model fitted on clean data, asked about huge inputs: saturated hidden units,
    huge logits. No RuntimeWarning, no NaN; probabilities stay probabilities."""
    problems = []
    for activation in ACTIVATIONS:
        est = model(task, solver="lbfgs", activation=activation, max_iter=20)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(X.astype(dtype), Y[task])
        with _Strict():
            try:
                out = output(est, (X * scale).astype(dtype))
            except RuntimeWarning as w:
                problems.append(f"{activation}: RuntimeWarning {w}")
                continue
        if np.isnan(out).any():
            problems.append(f"{activation}: NaN in the output")
        elif task in ("binary", "multiclass", "multilabel"):
            if not ((out >= 0) & (out <= 1)).all():
                problems.append(f"{activation}: probabilities outside [0, 1]")
            if task != "multilabel" and not np.allclose(out.sum(axis=1), 1, atol=1e-5):
                problems.append(f"{activation}: probabilities do not sum to 1")
        elif task == "poisson":
            # exp of a huge logit is +inf (as in scikit-learn), never negative or NaN
            if (out < 0).any():
                problems.append(f"{activation}: negative Poisson mean")
        elif not np.isfinite(out).all():
            problems.append(f"{activation}: non-finite regression output")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------
# saturation: sigmoids at 0 / 1, softmax and logistic outputs over huge logits


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("solver", ["lbfgs", "adam"])
def test_saturated_logistic_hidden_units(solver, dtype):
    """Hidden sigmoids driven to exactly 0 and 1: their derivative is 0, the fit and
    the backprop trace stay finite, no warning."""
    X_big = (X * 1e30).astype(dtype)
    est = model("multiclass", solver=solver, activation="logistic", max_iter=5)
    with _Strict():
        est.fit(X_big, Y["multiclass"])
        h = 1 / (1 + np.exp(-np.clip(X_big.astype(np.float64) @ est.coefs_[0]
                                     + est.intercepts_[0], -700, 700)))
        assert np.isin(np.round(h, 12), [0.0, 1.0]).mean() > 0.9  # saturated indeed
        trace = est.backprop_trace(X_big, Y["multiclass"])
    assert np.isfinite(trace.loss)
    for layer in trace:
        for name in ("z", "h", "dz", "dW", "db"):
            assert np.isfinite(getattr(layer, name)).all(), name
    assert all_finite(weights(est))
    proba = est.predict_proba(X_big)
    assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)


def _with_huge_logits(est, factor):
    """The fitted model with its output layer scaled by ``factor``."""
    est.coefs_ = est.coefs_[:-1] + [est.coefs_[-1] * factor]
    est.intercepts_ = est.intercepts_[:-1] + [est.intercepts_[-1] * factor]
    return est


@pytest.mark.parametrize("factor", [1e10, 1e30])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_huge_logits(task, dtype, factor):
    """Softmax / logistic over logits of 1e10..1e30: probabilities exactly 0 or 1
    without NaN, a finite (clipped) loss, and a training step that stays finite."""
    if dtype == np.float32 and factor == 1e30:
        factor = 1e20  # stay below float32's overflow in the product itself
    est = model(task, solver="adam", max_iter=10, activation="tanh")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X.astype(dtype), Y[task])
    _with_huge_logits(est, factor)
    Xd = X.astype(dtype)
    with _Strict():
        proba = est.predict_proba(Xd)
        trace = est.backprop_trace(Xd, Y[task])
    assert not np.isnan(proba).any()
    assert ((proba >= 0) & (proba <= 1)).all()
    if task != "multilabel":
        assert_allclose(proba.sum(axis=1), 1, rtol=1e-6)
    # every probability saturated; the loss is the clipped log of eps, not inf
    assert np.isin(proba, [0.0, 1.0]).mean() > 0.95
    assert np.isfinite(trace.loss) and trace.loss > 0
    for layer in trace:
        for name in ("z", "h", "dz", "dW", "db"):
            assert np.isfinite(getattr(layer, name)).all(), name
    # one more epoch from there: finite, or the clear error with the model intact
    before = weights(est)
    with _Strict():
        try:
            est.partial_fit(Xd, Y[task])
        except ValueError as e:
            assert NON_FINITE in str(e)
            for a, b in zip(weights(est), before):
                assert_array_equal(a, b)
            return
    assert all_finite(weights(est))
    assert not np.isnan(est.predict_proba(Xd)).any()


def test_softmax_rows_of_equal_huge_logits():
    """Ties among huge logits: the probability is shared, not NaN."""
    est = model("multiclass", solver="lbfgs", hidden_layer_sizes=(2,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, Y["multiclass"])
    W = np.zeros_like(est.coefs_[-1])
    est.coefs_ = est.coefs_[:-1] + [W]
    est.intercepts_ = est.intercepts_[:-1] + [np.array([1e300, 1e300, -1e300])]
    with _Strict():
        proba = est.predict_proba(X)
    assert_allclose(proba, np.tile([0.5, 0.5, 0.0], (N, 1)))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_poisson_huge_logit_is_inf_not_nan(dtype):
    """exp of a huge logit overflows to +inf quietly (no NaN, no RuntimeWarning)."""
    est = model("poisson", solver="lbfgs", max_iter=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X.astype(dtype), Y["poisson"])
    _with_huge_logits(est, 1e20)
    with _Strict():
        pred = est.predict(X.astype(dtype))
    assert not np.isnan(pred).any()
    assert (pred >= 0).all()


# ---------------------------------------------------------------------------
# diverging fits, against scikit-learn


def _digits(n=200):
    from sklearn.datasets import load_digits

    Xd, yd = load_digits(return_X_y=True)
    return Xd[:n], yd[:n]  # unscaled: pixel values 0..16


def _diabetes(n=200):
    from sklearn.datasets import load_diabetes

    Xd, yd = load_diabetes(return_X_y=True)
    return Xd[:n] * 1000, yd[:n]  # unscaled: values in the hundreds


DIVERGING = {
    "clf_sgd_lr1e3": ("clf", dict(solver="sgd", learning_rate_init=1e3)),
    "clf_adam_lr1e3": ("clf", dict(solver="adam", learning_rate_init=1e3)),
    "clf_sgd_lr10_no_momentum": ("clf", dict(solver="sgd", learning_rate_init=10.0,
                                            momentum=0.0)),
    "reg_sgd_lr1e3": ("reg", dict(solver="sgd", learning_rate_init=1e3)),
    "reg_sgd_lr10": ("reg", dict(solver="sgd", learning_rate_init=10.0)),
    "reg_sgd_lr1e-3": ("reg", dict(solver="sgd", learning_rate_init=1e-3)),
    "reg_adam_lr1e3": ("reg", dict(solver="adam", learning_rate_init=1e3)),
    "reg_sgd_invscaling": ("reg", dict(solver="sgd", learning_rate_init=1.0,
                                       learning_rate="invscaling")),
}


def _sklearn_outcome(cls, params, X_fit, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            est = cls(**params).fit(X_fit, y)
        except ValueError as e:
            assert NON_FINITE in str(e)
            return "non-finite"
    assert all_finite(est.coefs_ + est.intercepts_)
    return "ok"


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", list(DIVERGING))
def test_diverging_fit_behaves_as_sklearn(case, dtype):
    kind, extra = DIVERGING[case]
    X_fit, y = _digits() if kind == "clf" else _diabetes()
    X_fit = X_fit.astype(dtype)
    params = dict(hidden_layer_sizes=(8,), max_iter=5, random_state=0, **extra)
    cls, sk_cls = ((MLPClassifier, SkMLPClassifier) if kind == "clf"
                   else (MLPRegressor, SkMLPRegressor))
    expected = _sklearn_outcome(sk_cls, params, X_fit, y)

    # a previously fitted model, refitted divergently
    est = cls(hidden_layer_sizes=(8,), max_iter=3, random_state=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X_fit / 16, y)
    before = weights(est)
    est.set_params(**params)
    outcome = _fit_outcome(est, X_fit, y)
    assert outcome == expected, f"pybackprop: {outcome}, scikit-learn: {expected}"
    if outcome == "non-finite":
        for a, b in zip(weights(est), before):
            assert_array_equal(a, b)
        assert est.n_iter_ == 3
    else:
        assert all_finite(weights(est))


def test_diverging_partial_fit_never_returns_nan_weights():
    """Epoch after epoch of a diverging partial_fit: every call either leaves finite
    weights or raises the clear error and keeps the last finite model."""
    X_fit, y = _diabetes()
    est = MLPRegressor(hidden_layer_sizes=(8,), solver="sgd", learning_rate_init=10.0,
                       random_state=0)
    raised = False
    for _ in range(20):
        before = weights(est) if hasattr(est, "coefs_") else None
        with _Strict():
            try:
                est.partial_fit(X_fit, y)
            except ValueError as e:
                assert NON_FINITE in str(e)
                raised = True
                if before is None:
                    assert not hasattr(est, "coefs_")
                else:
                    for a, b in zip(weights(est), before):
                        assert_array_equal(a, b)
                    assert not np.isnan(est.predict(X_fit / 1000)).any()
                continue
        assert all_finite(weights(est))
    assert raised  # it does diverge


def test_lbfgs_on_huge_targets():
    """Targets of 1e150 (squared error 1e300): finite model or the clear error."""
    est = MLPRegressor(hidden_layer_sizes=(4,), solver="lbfgs", max_iter=10, random_state=0)
    outcome = _fit_outcome(est, X, Y["regression"] * 1e150)
    assert outcome in ("ok", "non-finite"), outcome
    if outcome == "ok":
        assert all_finite(weights(est))
        assert check_no_silent_nan(est, X) is None


@pytest.mark.parametrize("activation, reference", [
    ("tanh", np.tanh),
    ("logistic", lambda x: 1 / (1 + np.exp(-x))),
])
def test_vectorised_activations_are_within_a_few_ulps(activation, reference):
    """The kernels' branch-free tanh and logistic (exp), seen through predict with
    identity weights, against NumPy's: within 4 ulps from 1e-8 to the saturated tails
    (NumPy's own tanh and exp are within about 1 ulp)."""
    rng = np.random.RandomState(0)
    d = 8
    X = np.concatenate([rng.uniform(-1e-6, 1e-6, (500, d)), rng.uniform(-1, 1, (500, d)),
                        rng.uniform(-8, 8, (500, d)), rng.uniform(-40, 40, (500, d))])
    X[X == 0] = 1e-8
    est = MLPRegressor(hidden_layer_sizes=(d,), activation=activation, max_iter=1,
                       random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X[:50], X[:50])
    est.coefs_ = [np.eye(d), np.eye(d)]
    est.intercepts_ = [np.zeros(d), np.zeros(d)]
    np.testing.assert_array_max_ulp(est.predict(X), reference(X), maxulp=4)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("activation", ["relu", "tanh", "logistic"])
def test_bias_and_activation_on_narrow_rows(activation, dtype):
    """The bias + activation pass runs flat over q rows at a time when a row is not a
    whole number of vectors (pb_tile_rows): every width's path (q = 16, 8, 4, 2, rows
    of whole vectors, a tile too wide), with row counts that leave part of a tile,
    against the forward pass written in NumPy. A bias shifted by one column, or a tile
    reused from the wrong row, is off by far more than the tolerance."""
    act = {"relu": lambda z: np.maximum(z, 0), "tanh": np.tanh,
           "logistic": lambda z: 1 / (1 + np.exp(-z))}[activation]
    rng = np.random.RandomState(1)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for width in (1, 3, 7, 10, 12, 24, 40, 50, 100, 130, 16, 64):
        for rows in (1, 5, 17, 203):
            X = rng.standard_normal((rows, 6)).astype(dtype)
            est = MLPRegressor(hidden_layer_sizes=(width,), activation=activation,
                               max_iter=1, random_state=0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                est.fit(X[:1].repeat(2, axis=0), np.zeros(2))
            est.coefs_ = [rng.standard_normal((6, width)).astype(dtype),
                          rng.standard_normal((width, 1)).astype(dtype)]
            # distinct biases per column, so that a misplaced one shows
            est.intercepts_ = [np.linspace(-2, 2, width).astype(dtype),
                               np.array([0.5], dtype=dtype)]
            h = act(X.astype(np.float64) @ est.coefs_[0] + est.intercepts_[0])
            expected = (h @ est.coefs_[1] + est.intercepts_[1]).ravel()
            assert_allclose(est.predict(X), expected, rtol=tol, atol=tol,
                            err_msg=f"width {width}, {rows} rows")
