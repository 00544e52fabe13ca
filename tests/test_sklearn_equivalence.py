"""Same parameters and random_state as scikit-learn's MLPs ⇒ the same model, to 1e-6.

Every case fits scikit-learn's estimator and pybackprop's (on both backends) on the same
data, then compares the loss history, every weight and bias, the iteration counters,
the early-stopping scores and the predictions.
"""

import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier as SkMLPClassifier
from sklearn.neural_network import MLPRegressor as SkMLPRegressor

from _helpers import make_data, sample_weights
from pybackprop import MLPClassifier, MLPRegressor

RTOL = 1e-6
ATOL = 1e-9

CLASSIFIER_TASKS = ("multiclass", "binary", "multilabel")
BASE = dict(hidden_layer_sizes=(15,), random_state=0, max_iter=10)
# stopping rules that fire well before max_iter on this data (adaptive sgd: the rate is
# divided by 5 eight times first)
STOP_EARLY = dict(n_iter_no_change=2, tol=0.2, max_iter=30)
SGD = dict(solver="sgd", learning_rate_init=0.05)


def case(task, procedure="fit", fmt="dense", **params):
    """One pytest parameter: (task, procedure, fmt, params) with a readable id."""
    p = {**BASE, **params}
    if task == "multioutput":
        # the L2 term is not scaled by n_outputs: ``loss = n_outputs × sklearn's`` needs alpha=0
        p.setdefault("alpha", 0.0)
    extra = "-".join(
        f"{k}={v}" for k, v in params.items() if k not in ("hidden_layer_sizes",)
    )
    if "hidden_layer_sizes" in params:
        extra += f"-hidden={params['hidden_layer_sizes']}"
    return pytest.param(task, procedure, fmt, p, id=f"{task}-{procedure}-{fmt}-{extra}")


CASES = [
    # solvers and schedules, multiclass
    case("multiclass", solver="adam"),
    case("multiclass", solver="adam", shuffle=False),
    case("multiclass", solver="adam", batch_size=64),
    case("multiclass", solver="adam", batch_size=1000),  # clipped, with a warning
    *[
        case("multiclass", **SGD, learning_rate=lr, nesterovs_momentum=nest, batch_size=32)
        for lr in ("constant", "invscaling", "adaptive")
        for nest in (True, False)
    ],
    case("multiclass", **SGD, momentum=0.0),
    case("multiclass", **SGD, learning_rate="adaptive", **STOP_EARLY),  # rate divided by 5
    case("multiclass", **SGD, learning_rate="constant", **STOP_EARLY),  # stops early
    case("multiclass", solver="adam", **STOP_EARLY),
    case("multiclass", solver="lbfgs", max_iter=25),
    case("multiclass", solver="lbfgs", max_iter=30, alpha=0.1),
    case("multiclass", solver="lbfgs", max_iter=200, max_fun=40),
    # early stopping (stratified split for classifiers, plain split for regressors)
    case("multiclass", solver="adam", early_stopping=True, n_iter_no_change=3, max_iter=20),
    case("multiclass", **SGD, early_stopping=True, n_iter_no_change=2, max_iter=20,
         learning_rate="adaptive", validation_fraction=0.2),
    case("binary", solver="adam", early_stopping=True, n_iter_no_change=2, max_iter=15),
    case("multilabel", solver="adam", early_stopping=True, n_iter_no_change=2, max_iter=15),
    case("regression", solver="adam", early_stopping=True, n_iter_no_change=2, max_iter=30,
         learning_rate_init=0.05),
    case("multioutput", solver="sgd", early_stopping=True, n_iter_no_change=2, max_iter=30,
         learning_rate_init=0.05),
    case("multiclass", "sample_weight", solver="adam", early_stopping=True,
         n_iter_no_change=2, max_iter=15),
    # every hidden activation
    *[
        case(task, solver=solver, activation=act, **({"max_iter": 20} if solver == "lbfgs" else {}))
        for act in ("identity", "logistic", "tanh", "relu")
        for task, solver in (("multiclass", "adam"), ("multiclass", "lbfgs"),
                             ("regression", "sgd"), ("regression", "lbfgs"))
    ],
    # two hidden layers
    case("multiclass", solver="adam", hidden_layer_sizes=(12, 8)),
    case("multiclass", **SGD, hidden_layer_sizes=(12, 8), activation="tanh"),
    case("multiclass", solver="lbfgs", max_iter=20, hidden_layer_sizes=(12, 8)),
    case("regression", solver="adam", hidden_layer_sizes=(12, 8), activation="logistic"),
    # other targets
    case("binary", solver="adam"),
    case("binary", **SGD),
    case("binary", solver="lbfgs", max_iter=25),
    case("multilabel", solver="adam"),
    case("multilabel", **SGD, learning_rate="invscaling"),
    case("multilabel", solver="lbfgs", max_iter=25),
    case("regression", solver="adam", learning_rate_init=0.01),
    case("regression", solver="sgd", learning_rate_init=0.01, nesterovs_momentum=False),
    case("regression", solver="lbfgs", max_iter=25),
    case("multioutput", solver="adam", learning_rate_init=0.01),
    case("multioutput", solver="sgd", learning_rate_init=0.01, batch_size=50),
    case("poisson", solver="adam", loss="poisson", learning_rate_init=0.01),
    case("poisson", solver="sgd", loss="poisson", learning_rate_init=0.01),
    case("poisson", solver="lbfgs", loss="poisson", max_iter=25),
    # sample weights
    case("multiclass", "sample_weight", solver="adam"),
    case("multiclass", "sample_weight", **SGD, batch_size=32),
    case("multiclass", "sample_weight", solver="lbfgs", max_iter=20),
    case("binary", "sample_weight", solver="lbfgs", max_iter=20),
    case("multilabel", "sample_weight", solver="adam"),
    case("regression", "sample_weight", solver="adam", learning_rate_init=0.01),
    case("regression", "sample_weight", solver="lbfgs", max_iter=20, alpha=0.5),
    case("poisson", "sample_weight", solver="lbfgs", loss="poisson", max_iter=20),
    case("multioutput", "sample_weight", solver="adam", learning_rate_init=0.01),
    # sparse X
    *[
        case(task, fmt=fmt, solver=solver, **({"max_iter": 20} if solver == "lbfgs" else {}))
        for fmt in ("csr", "csc")
        for task, solver in (("multiclass", "adam"), ("multiclass", "sgd"),
                             ("multiclass", "lbfgs"), ("regression", "lbfgs"),
                             ("multilabel", "adam"))
    ],
    case("multiclass", "sample_weight", fmt="csr", solver="adam", hidden_layer_sizes=(12, 8)),
    case("multiclass", fmt="csr", solver="adam", early_stopping=True, n_iter_no_change=2),
    # warm start: fit on a part, then fit again on everything
    case("multiclass", "warm_start", solver="adam"),
    case("multiclass", "warm_start", **SGD, learning_rate="invscaling"),
    case("multiclass", "warm_start", solver="lbfgs", max_iter=15),
    case("multilabel", "warm_start", solver="adam"),
    case("regression", "warm_start", solver="lbfgs", max_iter=15),
    case("regression", "warm_start", solver="adam", random_state="instance"),
    # partial_fit sequences
    case("multiclass", "partial_fit", solver="adam"),
    case("multiclass", "partial_fit", **SGD, learning_rate="invscaling"),
    case("multiclass", "partial_fit", solver="adam", random_state="instance"),
    case("binary", "partial_fit", solver="sgd"),
    case("multilabel", "partial_fit", solver="adam"),
    case("regression", "partial_fit", solver="adam"),
    case("multioutput", "partial_fit", solver="sgd", learning_rate_init=0.01),
    case("multiclass", "partial_fit_sample_weight", solver="adam"),
    case("multiclass", "partial_then_fit", solver="adam"),
]


def _estimators(task, params, backend):
    """(pybackprop estimator, scikit-learn estimator) built from the same parameters."""
    ours_cls, ref_cls = (
        (MLPClassifier, SkMLPClassifier) if task in CLASSIFIER_TASKS
        else (MLPRegressor, SkMLPRegressor)
    )
    ests = []
    for cls in (ours_cls, ref_cls):
        p = dict(params)
        if p.get("random_state") == "instance":
            p["random_state"] = np.random.RandomState(42)  # one fresh stream each
        if cls is MLPClassifier or cls is MLPRegressor:
            p["backend"] = backend
        ests.append(cls(**p))
    return ests


def _train(est, procedure, X, y):
    """Run one training procedure on ``est``."""
    n = X.shape[0]
    if procedure == "fit":
        est.fit(X, y)
    elif procedure == "sample_weight":
        est.fit(X, y, sample_weight=sample_weights(n))
    elif procedure == "warm_start":
        est.set_params(warm_start=True)
        est.fit(X[:200], y[:200])
        est.fit(X, y)
    elif procedure.startswith("partial"):
        kwargs = {}
        if hasattr(est, "predict_proba"):
            kwargs["classes"] = np.arange(y.shape[1]) if y.ndim == 2 else np.unique(y)
        sw = sample_weights(n) if procedure.endswith("sample_weight") else None
        for lo, hi in ((0, 100), (100, 220), (220, n)):
            est.partial_fit(X[lo:hi], y[lo:hi],
                            sample_weight=None if sw is None else sw[lo:hi], **kwargs)
            kwargs = {}
        if procedure == "partial_then_fit":
            est.set_params(max_iter=3)
            est.fit(X, y)  # starts over: not warm
    else:
        raise ValueError(procedure)
    return est


def assert_same_model(ours, ref, X, loss_scale=1.0):
    """Everything a fit exposes agrees with scikit-learn's fit."""
    assert ours.n_iter_ == ref.n_iter_
    assert ours.t_ == ref.t_
    assert ours.n_layers_ == ref.n_layers_
    assert ours.n_outputs_ == ref.n_outputs_
    assert ours.out_activation_ == ref.out_activation_
    assert_allclose(ours.loss_, loss_scale * ref.loss_, rtol=RTOL, atol=ATOL)
    if hasattr(ref, "loss_curve_"):
        assert_allclose(ours.loss_curve_, loss_scale * np.asarray(ref.loss_curve_),
                        rtol=RTOL, atol=ATOL)
        if ref.best_loss_ is None:
            assert ours.best_loss_ is None
        else:
            assert_allclose(ours.best_loss_, loss_scale * ref.best_loss_, rtol=RTOL, atol=ATOL)
    else:
        assert not hasattr(ours, "loss_curve_")
    if getattr(ref, "validation_scores_", None) is not None:
        assert_allclose(ours.validation_scores_, ref.validation_scores_, rtol=RTOL, atol=ATOL)
        assert_allclose(ours.best_validation_score_, ref.best_validation_score_,
                        rtol=RTOL, atol=ATOL)
    else:
        assert getattr(ours, "validation_scores_", None) is None
        assert getattr(ours, "best_validation_score_", None) is None

    assert len(ours.coefs_) == len(ref.coefs_) == ref.n_layers_ - 1
    for ours_w, ref_w in zip(ours.coefs_ + ours.intercepts_, ref.coefs_ + ref.intercepts_):
        assert ours_w.shape == ref_w.shape
        assert ours_w.dtype == ref_w.dtype
        assert_allclose(ours_w, ref_w, rtol=RTOL, atol=ATOL)

    if hasattr(ref, "predict_proba"):
        assert_array_equal(ours.classes_, ref.classes_)
        assert_array_equal(ours.predict(X), ref.predict(X))
        assert_allclose(ours.predict_proba(X), ref.predict_proba(X), rtol=RTOL, atol=ATOL)
    else:
        assert_allclose(ours.predict(X), ref.predict(X), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("task, procedure, fmt, params", CASES)
def test_same_model_as_sklearn(task, procedure, fmt, params, backend):
    """pybackprop trains the same network as scikit-learn for these parameters."""
    X, y = make_data(task, fmt=fmt)
    ours, ref = _estimators(task, params, backend)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", message="Got `batch_size`")
        _train(ref, procedure, X, y)
        _train(ours, procedure, X, y)
    # scikit-learn averages the multi-output squared error over outputs; we sum it
    scale = y.shape[1] if (task == "multioutput") else 1.0
    assert_same_model(ours, ref, X, loss_scale=scale)


@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
def test_same_warnings_as_sklearn(solver, backend):
    """A fit that hits max_iter warns ConvergenceWarning exactly when scikit-learn does."""
    X, y = make_data("multiclass")
    params = dict(BASE, solver=solver, max_iter=3)
    ours, ref = _estimators("multiclass", params, backend)
    with warnings.catch_warnings(record=True) as ref_w:
        warnings.simplefilter("always")
        ref.fit(X, y)
    with warnings.catch_warnings(record=True) as ours_w:
        warnings.simplefilter("always")
        ours.fit(X, y)
    ref_cats = sorted(w.category.__name__ for w in ref_w)
    assert ref_cats == ["ConvergenceWarning"]
    assert sorted(w.category.__name__ for w in ours_w) == ref_cats


def test_warm_start_early_stopping_keeps_best_weights(backend):
    """warm_start + early_stopping: a refit that never beats the best score keeps the best weights.

    Same validation scores as scikit-learn; scikit-learn itself returns the last weights here,
    because after early stopping its coefs_ *is* _best_coefs and the refit updates it in place.
    """
    X, y = make_data("multiclass")
    params = dict(BASE, max_iter=5, warm_start=True, early_stopping=True, n_iter_no_change=2)
    ours, ref = _estimators("multiclass", params, backend)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for est in (ours, ref):
            est.fit(X, y)
        assert_same_model(ours, ref, X)
        best = [w.copy() for w in ours.coefs_ + ours.intercepts_]
        best_pred = ours.predict_proba(X)
        for est in (ours, ref):
            est.fit(X, y)
    assert ours.n_iter_ == ref.n_iter_
    assert_allclose(ours.validation_scores_, ref.validation_scores_, rtol=RTOL)
    assert ours.best_validation_score_ == ref.best_validation_score_
    assert max(ours.validation_scores_[5:]) <= max(ours.validation_scores_[:5])  # no new best
    for a, b in zip(ours.coefs_ + ours.intercepts_, best):
        assert_array_equal(a, b)
    assert_array_equal(ours.predict_proba(X), best_pred)
