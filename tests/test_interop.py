"""Conversion to and from scikit-learn's MLPs (pybackprop._interop), and ONNX through it.

Every task (binary, multiclass, multilabel, regression, multi-output, Poisson), float32 and
float64, each solver, a model fitted by either library: the converted model predicts the
same; the round trip gives back the same weights bit for bit; training goes on from the
same optimizer state.
"""

import copy
import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.neural_network import MLPClassifier as SkMLPClassifier
from sklearn.neural_network import MLPRegressor as SkMLPRegressor

from _helpers import make_data
from pybackprop import MLPClassifier, MLPRegressor
from pybackprop._interop import from_sklearn, to_sklearn

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

OURS = {"classifier": MLPClassifier, "regressor": MLPRegressor}
THEIRS = {"classifier": SkMLPClassifier, "regressor": SkMLPRegressor}
TASKS = {
    "binary": "classifier",
    "multiclass": "classifier",
    "multilabel": "classifier",
    "regression": "regressor",
    "multioutput": "regressor",
    "poisson": "regressor",
}
FITTED_ATTRS = ("n_features_in_", "n_iter_", "t_", "n_layers_", "n_outputs_",
                "out_activation_", "loss_", "loss_curve_", "best_loss_",
                "validation_scores_", "best_validation_score_")


def task_data(task, dtype=np.float64, n=200):
    X, y = make_data(task, n=n)
    return X.astype(dtype), y


def params_for(task, solver="adam", **extra):
    p = dict(hidden_layer_sizes=(9, 5), activation="tanh", solver=solver, max_iter=6,
             random_state=0, learning_rate_init=0.01)
    if task == "poisson":
        p["loss"] = "poisson"
    p.update(extra)
    return p


def fit(library, task, X, y, **params):
    kind = TASKS[task]
    cls = (OURS if library == "pybackprop" else THEIRS)[kind]
    return cls(**params).fit(X, y)


def weights(est):
    return list(est.coefs_) + list(est.intercepts_)


def outputs(est, X):
    """What the model computes: predict, and predict_proba for a classifier."""
    out = [est.predict(X)]
    if hasattr(est, "predict_proba"):
        out.append(est.predict_proba(X))
    return out


def assert_same_attrs(a, b):
    for name in FITTED_ATTRS:
        assert (name in a.__dict__) == (name in b.__dict__), name
        if name in a.__dict__:
            va, vb = getattr(a, name), getattr(b, name)
            assert type(va) is type(vb), name
            if va is not None:
                assert_array_equal(va, vb, err_msg=name)
    if hasattr(a, "classes_"):
        assert_array_equal(a.classes_, b.classes_)
        assert a._label_binarizer.y_type_ == b._label_binarizer.y_type_


def assert_views(est):
    """coefs_ / intercepts_ are views of the flat buffer, as after a fit."""
    assert est._layout.is_view_of(est._flat_params, est.coefs_, est.intercepts_)


# ---------------------------------------------------------------------------
# pybackprop -> scikit-learn -> pybackprop


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("task", list(TASKS))
def test_to_sklearn_predicts_the_same_and_round_trip_is_exact(task, dtype):
    """A pybackprop model exported to scikit-learn predicts the same; brought back, it
    has bit-identical weights and outputs."""
    X, y = task_data(task, dtype)
    est = fit("pybackprop", task, X, y, **params_for(task))
    sk = to_sklearn(est)
    assert type(sk) is THEIRS[TASKS[task]]
    assert sk.get_params() == {k: v for k, v in est.get_params().items()
                               if k in sk.get_params()}
    for a, b in zip(weights(sk), weights(est)):
        assert a.dtype == b.dtype == dtype
        assert_array_equal(a, b)
        assert not np.shares_memory(a, est._flat_params)
    assert_same_attrs(sk, est)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    ours, theirs = outputs(est, X), outputs(sk, X)
    if TASKS[task] == "classifier":
        assert_array_equal(theirs[0], ours[0])
        assert_allclose(theirs[1], ours[1], rtol=rtol, atol=rtol * 1e-2)
        assert sk.score(X, y) == est.score(X, y)
    else:
        assert_allclose(theirs[0], ours[0], rtol=rtol, atol=rtol)
        assert sk.score(X, y) == pytest.approx(est.score(X, y), rel=rtol)

    back = from_sklearn(type(est), sk)
    assert type(back) is type(est)
    assert back.get_params() == est.get_params()
    assert back._flat_params.dtype == dtype
    assert_array_equal(back._flat_params, est._flat_params)
    assert_views(back)
    for a, b in zip(outputs(back, X), outputs(est, X)):
        assert_array_equal(a, b)
    assert_same_attrs(back, est)


@pytest.mark.parametrize("solver", ["sgd", "lbfgs"])
@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_round_trip_other_solvers(task, solver):
    X, y = task_data(task)
    est = fit("pybackprop", task, X, y, **params_for(task, solver=solver))
    back = from_sklearn(type(est), to_sklearn(est))
    assert_array_equal(back._flat_params, est._flat_params)
    for a, b in zip(outputs(back, X), outputs(est, X)):
        assert_array_equal(a, b)
    assert_same_attrs(back, est)


# ---------------------------------------------------------------------------
# scikit-learn -> pybackprop -> scikit-learn


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("task", list(TASKS))
def test_from_sklearn_predicts_the_same_and_round_trip_is_exact(task, dtype):
    """A model trained by scikit-learn, imported, predicts what scikit-learn predicts;
    exported again, it has bit-identical weights and outputs."""
    X, y = task_data(task, dtype)
    sk = fit("sklearn", task, X, y, **params_for(task))
    est = from_sklearn(OURS[TASKS[task]], sk)
    assert est.backend == "cython"
    assert_views(est)
    assert est._flat_params.dtype == dtype
    for a, b in zip(weights(est), weights(sk)):
        assert_array_equal(a, b)
    assert_same_attrs(est, sk)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    ours, theirs = outputs(est, X), outputs(sk, X)
    assert_allclose(ours[-1], theirs[-1], rtol=rtol, atol=rtol)
    if TASKS[task] == "classifier":
        assert_array_equal(ours[0], theirs[0])

    again = to_sklearn(est)
    for a, b in zip(weights(again), weights(sk)):
        assert_array_equal(a, b)
    for a, b in zip(outputs(again, X), outputs(sk, X)):
        assert_array_equal(a, b)
    assert_same_attrs(again, sk)


# ---------------------------------------------------------------------------
# training goes on where it stopped


@pytest.mark.parametrize("solver", ["adam", "sgd"])
@pytest.mark.parametrize("task", ["multiclass", "regression"])
@pytest.mark.parametrize("fitted_by", ["pybackprop", "sklearn"])
def test_partial_fit_continues_from_the_same_optimizer_state(fitted_by, task, solver):
    """After conversion, partial_fit takes the step the original would take: the
    optimizer's state (Adam's moments and step count, SGD's velocities) came along."""
    X, y = task_data(task)
    extra = {"learning_rate": "invscaling"} if solver == "sgd" else {}
    orig = fit(fitted_by, task, X, y, **params_for(task, solver=solver, **extra))
    conv = (to_sklearn(orig) if fitted_by == "pybackprop"
            else from_sklearn(OURS[TASKS[task]], orig))
    fresh = copy.deepcopy(conv)  # same weights, optimizer state reset
    del fresh._optimizer
    for est in (orig, conv, fresh):
        for _ in range(2):
            est.partial_fit(X, y)
    for a, b in zip(weights(conv), weights(orig)):
        assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    assert_allclose(conv.loss_curve_, orig.loss_curve_, rtol=1e-9)
    assert conv.t_ == orig.t_
    assert max(np.abs(a - b).max() for a, b in zip(weights(fresh), weights(orig))) > 1e-6


def test_warm_start_fit_continues_after_conversion():
    X, y = task_data("multiclass")
    est = MLPClassifier(**params_for("multiclass", warm_start=True)).fit(X, y)
    sk = to_sklearn(est)
    est.fit(X, y)
    sk.fit(X, y)
    for a, b in zip(weights(sk), weights(est)):
        assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    assert_allclose(sk.loss_curve_, est.loss_curve_, rtol=1e-9)


@pytest.mark.parametrize("fitted_by", ["pybackprop", "sklearn"])
def test_early_stopping_attributes(fitted_by):
    X, y = task_data("multiclass")
    orig = fit(fitted_by, "multiclass", X, y,
               **params_for("multiclass", early_stopping=True, max_iter=8))
    conv = (to_sklearn(orig) if fitted_by == "pybackprop"
            else from_sklearn(MLPClassifier, orig))
    assert_same_attrs(conv, orig)
    assert conv.best_loss_ is None and len(conv.validation_scores_) == 8
    if fitted_by == "pybackprop":
        best = [a.copy() for a in orig._layout.views(orig._best_params)[0]]
        for a, b in zip(conv._best_coefs, best):
            assert_array_equal(a, b)
    else:
        for a, b in zip(conv._layout.views(conv._best_params)[0], orig._best_coefs):
            assert_array_equal(a, b)
        # scikit-learn keeps no held-out loss
        assert len(conv.validation_loss_curve_) == 8
        assert np.isnan(conv.validation_loss_curve_).all()


# ---------------------------------------------------------------------------
# details


def test_feature_names_travel():
    X, y = task_data("multiclass")
    df = pd.DataFrame(X, columns=[f"px{i}" for i in range(X.shape[1])])
    est = MLPClassifier(**params_for("multiclass")).fit(df, y)
    sk = to_sklearn(est)
    assert_array_equal(sk.feature_names_in_, est.feature_names_in_)
    assert_array_equal(sk.predict(df), est.predict(df))
    back = from_sklearn(MLPClassifier, sk)
    assert_array_equal(back.feature_names_in_, est.feature_names_in_)
    assert_array_equal(back.predict_proba(df), est.predict_proba(df))


def test_unfitted_estimators_convert_to_unfitted():
    sk = to_sklearn(MLPClassifier(hidden_layer_sizes=(7,), alpha=0.5, backend="numpy"))
    assert type(sk) is SkMLPClassifier and not hasattr(sk, "coefs_")
    assert sk.get_params()["alpha"] == 0.5 and sk.get_params()["hidden_layer_sizes"] == (7,)
    est = from_sklearn(MLPRegressor, SkMLPRegressor(loss="poisson", max_iter=7))
    assert type(est) is MLPRegressor and not hasattr(est, "coefs_")
    assert est.loss == "poisson" and est.max_iter == 7 and est.backend == "cython"


def test_replaced_coefs_are_exported():
    """Weights assigned by the user (new lists) are what the exported model holds."""
    X, y = task_data("regression")
    est = MLPRegressor(**params_for("regression")).fit(X, y)
    rng = np.random.RandomState(1)
    est.coefs_ = [rng.standard_normal(c.shape) for c in est.coefs_]
    est.intercepts_ = [rng.standard_normal(b.shape) for b in est.intercepts_]
    expected = [a.copy() for a in weights(est)]
    sk = to_sklearn(est)
    for a, b in zip(weights(sk), expected):
        assert_array_equal(a, b)
    assert_allclose(sk.predict(X), est.predict(X), rtol=1e-12)


def test_imported_model_pickles_and_refits():
    X, y = task_data("binary")
    sk = SkMLPClassifier(**params_for("binary")).fit(X, y)
    imported = from_sklearn(MLPClassifier, sk)
    est = pickle.loads(pickle.dumps(imported))
    assert_views(est)
    assert_array_equal(est.predict_proba(X), imported.predict_proba(X))
    assert est.fit(X, y).score(X, y) > 0.5


def test_imported_weights_are_copies():
    X, y = task_data("multiclass")
    sk = SkMLPClassifier(**params_for("multiclass")).fit(X, y)
    est = from_sklearn(MLPClassifier, sk)
    before = sk.predict_proba(X)
    est.coefs_[0][...] = 0.0
    assert_array_equal(sk.predict_proba(X), before)


@pytest.mark.parametrize("activation", ["gelu", ("tanh", "relu")])
def test_activation_scikit_learn_lacks_is_refused(activation):
    X, y = task_data("multiclass")
    est = MLPClassifier(**params_for("multiclass", activation=activation)).fit(X, y)
    with pytest.raises(ValueError, match="activation"):
        to_sklearn(est)


def test_one_activation_per_layer_all_the_same_is_accepted():
    X, y = task_data("multiclass")
    est = MLPClassifier(**params_for("multiclass", activation=("relu", "relu"))).fit(X, y)
    sk = to_sklearn(est)
    assert sk.activation == "relu"
    assert_allclose(sk.predict_proba(X), est.predict_proba(X), rtol=1e-12, atol=1e-15)


def test_training_only_extras_are_dropped_with_a_warning():
    X, y = task_data("multiclass")
    est = MLPClassifier(**params_for("multiclass", dropout=0.2, class_weight="balanced",
                                     scoring="accuracy")).fit(X, y)
    with pytest.warns(UserWarning, match="class_weight, dropout, scoring"):
        sk = to_sklearn(est)
    assert_allclose(sk.predict_proba(X), est.predict_proba(X), rtol=1e-12, atol=1e-15)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # defaults, and backend, drop silently
        to_sklearn(MLPClassifier(backend="numpy", dropout=(0.0, 0.0)))


def test_kind_mismatch_is_refused():
    with pytest.raises(TypeError, match="MLPRegressor"):
        from_sklearn(MLPRegressor, SkMLPClassifier())
    with pytest.raises(TypeError, match="MLPClassifier"):
        from_sklearn(MLPClassifier, object())


def test_estimator_methods():
    """``est.to_sklearn()`` and ``MLPClassifier.from_sklearn(sk)`` call the functions."""
    if not hasattr(MLPClassifier, "to_sklearn"):
        pytest.skip("to_sklearn / from_sklearn methods not yet added to _mlp.py")
    X, y = task_data("multiclass")
    est = MLPClassifier(**params_for("multiclass")).fit(X, y)
    sk = est.to_sklearn()
    assert type(sk) is SkMLPClassifier
    back = MLPClassifier.from_sklearn(sk)
    assert type(back) is MLPClassifier
    assert_array_equal(back.predict_proba(X), est.predict_proba(X))
    reg = MLPRegressor.from_sklearn(SkMLPRegressor(max_iter=3))
    assert type(reg) is MLPRegressor


# ---------------------------------------------------------------------------
# ONNX, through to_sklearn


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_onnx_export_through_to_sklearn(task):
    """skl2onnx converts the exported model; onnxruntime computes what pybackprop does."""
    skl2onnx = pytest.importorskip("skl2onnx", reason="skl2onnx is not installed")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    X, y = task_data(task, np.float32)
    est = fit("pybackprop", task, X, y, **params_for(task, max_iter=10))
    options = {"zipmap": False} if TASKS[task] == "classifier" else None
    onx = skl2onnx.to_onnx(to_sklearn(est), X[:1], options=options, target_opset=17)
    session = ort.InferenceSession(onx.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: X})
    if TASKS[task] == "classifier":
        labels, proba = got
        assert_array_equal(labels, est.predict(X))
        assert_allclose(proba, est.predict_proba(X), rtol=1e-4, atol=1e-6)
    else:
        assert_allclose(got[0].ravel(), est.predict(X), rtol=1e-4, atol=1e-5)
