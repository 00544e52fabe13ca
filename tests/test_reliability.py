"""Reliability (1): bad input raises a clear error, and a fitted model survives it.

Every bad call (NaN / infinity in X, y or sample_weight, empty or 3-D or string X,
mismatched lengths, wrong width, a single class, unseen labels, negative Poisson
targets, bad sample weights, every invalid hyperparameter value) must raise a
ValueError (or scikit-learn's own exception type, which subclasses it) whose message
names the problem, and must leave a previously fitted model exactly as it was: same
``coefs_`` / ``intercepts_``, same predictions, same bookkeeping attributes.
"""

import warnings
from numbers import Integral

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import (
    Interval,
    InvalidParameterError,
    StrOptions,
    make_constraint,
)

from pybackprop import MLPClassifier, MLPRegressor

N, D = 60, 6


def _data():
    rng = np.random.RandomState(0)
    X = rng.standard_normal((N, D))
    y_clf = np.digitize(X[:, 0] + 0.3 * X[:, 1], [-0.5, 0.5])  # 3 classes
    y_reg = X @ rng.uniform(-1, 1, D) + 0.1 * rng.standard_normal(N)
    y_poisson = rng.poisson(np.exp(0.3 * X[:, 0])).astype(float)
    return X, {"clf": y_clf, "reg": y_reg, "poisson": y_poisson}


X_GOOD, TARGETS = _data()

BASE = dict(hidden_layer_sizes=(5, 4), max_iter=15, random_state=0, learning_rate_init=0.01)


def make_model(kind, solver="adam", backend="cython", **params):
    p = dict(BASE, solver=solver, backend=backend, **params)
    if kind == "clf":
        return MLPClassifier(**p)
    if kind == "poisson":
        return MLPRegressor(loss="poisson", **p)
    return MLPRegressor(**p)


def fitted(kind, solver="adam", backend="cython", **params):
    est = make_model(kind, solver, backend, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X_GOOD, TARGETS[kind])


def snapshot(est):
    snap = {
        "coefs": [c.copy() for c in est.coefs_],
        "intercepts": [b.copy() for b in est.intercepts_],
        "pred": np.array(est.predict(X_GOOD), copy=True),
        "n_iter_": est.n_iter_,
        "t_": est.t_,
        "loss_": est.loss_,
        "n_features_in_": est.n_features_in_,
        "loss_curve_": list(getattr(est, "loss_curve_", None) or []),
    }
    if hasattr(est, "predict_proba"):
        snap["proba"] = est.predict_proba(X_GOOD).copy()
        snap["classes_"] = est.classes_.copy()
    return snap


def assert_same_model(est, before):
    after = snapshot(est)
    assert len(after["coefs"]) == len(before["coefs"])
    for a, b in zip(after["coefs"] + after["intercepts"], before["coefs"] + before["intercepts"]):
        assert a.dtype == b.dtype
        assert_array_equal(a, b)
    assert_array_equal(after["pred"], before["pred"])
    if "proba" in before:
        assert_array_equal(after["proba"], before["proba"])
        assert_array_equal(after["classes_"], before["classes_"])
    for key in ("n_iter_", "t_", "loss_", "n_features_in_", "loss_curve_"):
        assert after[key] == before[key], key
    # the coefs_ are still the views the kernels update (not stale copies)
    assert np.shares_memory(est.coefs_[0], est._flat_params)


# ---------------------------------------------------------------------------
# bad data at fit / warm-start fit / partial_fit


def _with(a, index, value):
    a = np.array(a, dtype=float, copy=True)
    a[index] = value
    return a


def _object_X_with_none(X):
    Xo = X.astype(object)
    Xo[2, 3] = None
    return Xo


def _unseen_label(y):
    y = y.copy()
    y[5] = 7
    return y


# name -> (make(X, y) -> (X, y, sample_weight), message pattern, kinds, methods)
ALL_KINDS = ("clf", "reg")
ALL_METHODS = ("fit", "warm_start", "partial_fit")
INCREMENTAL = ("warm_start", "partial_fit")
BAD_DATA = {
    "nan_X": (lambda X, y: (_with(X, (3, 2), np.nan), y, None), "Input X contains NaN",
              ALL_KINDS, ALL_METHODS),
    "inf_X": (lambda X, y: (_with(X, (3, 2), np.inf), y, None), "Input X contains infinity",
              ALL_KINDS, ALL_METHODS),
    "neg_inf_X_last_row": (lambda X, y: (_with(X, (-1, -1), -np.inf), y, None),
                           "Input X contains infinity", ALL_KINDS, ALL_METHODS),
    "nan_X_float32": (lambda X, y: (_with(X, (0, 0), np.nan).astype(np.float32), y, None),
                      "Input X contains NaN", ALL_KINDS, ALL_METHODS),
    "nan_y": (lambda X, y: (X, _with(y, 4, np.nan), None), "Input y contains NaN",
              ALL_KINDS, ALL_METHODS),
    "inf_y": (lambda X, y: (X, _with(y, 4, np.inf), None), "Input y contains infinity",
              ALL_KINDS, ALL_METHODS),
    "nan_sample_weight": (lambda X, y: (X, y, _with(np.ones(len(y)), 1, np.nan)),
                          "sample_weight contains NaN", ALL_KINDS, ALL_METHODS),
    "inf_sample_weight": (lambda X, y: (X, y, _with(np.ones(len(y)), 1, np.inf)),
                          "sample_weight contains infinity", ALL_KINDS, ALL_METHODS),
    "negative_sample_weight": (lambda X, y: (X, y, _with(np.ones(len(y)), 1, -0.5)),
                               "[Nn]egative.*sample_weight", ALL_KINDS, ALL_METHODS),
    "all_zero_sample_weight": (lambda X, y: (X, y, np.zeros(len(y))),
                               "[Ss]ample.?weight.*(non-zero|positive)|zero", ALL_KINDS,
                               ALL_METHODS),
    "short_sample_weight": (lambda X, y: (X, y, np.ones(len(y) - 1)),
                            r"sample_weight\.shape|inconsistent|expected", ALL_KINDS,
                            ALL_METHODS),
    "2d_sample_weight": (lambda X, y: (X, y, np.ones((len(y), 2))), "1D|1-d|shape",
                         ALL_KINDS, ALL_METHODS),
    "empty_X": (lambda X, y: (X[:0], y[:0], None), r"0 sample\(s\)", ALL_KINDS, ALL_METHODS),
    "no_features": (lambda X, y: (X[:, :0], y, None), r"0 feature\(s\)", ALL_KINDS,
                    ALL_METHODS),
    "y_shorter_than_X": (lambda X, y: (X, y[:-1], None), "inconsistent numbers of samples",
                         ALL_KINDS, ALL_METHODS),
    "X_shorter_than_y": (lambda X, y: (X[:-2], y, None), "inconsistent numbers of samples",
                         ALL_KINDS, ALL_METHODS),
    "3d_X": (lambda X, y: (X.reshape(len(X), D, 1), y, None), "dim 3", ALL_KINDS,
             ALL_METHODS),
    "1d_X": (lambda X, y: (X[:, 0], y, None), "Expected 2D array", ALL_KINDS, ALL_METHODS),
    "string_X": (lambda X, y: (np.full(X.shape, "a"), y, None), "could not convert string",
                 ALL_KINDS, ALL_METHODS),
    "object_X_with_strings": (lambda X, y: (np.full(X.shape, "a", dtype=object), y, None),
                              "could not convert string", ALL_KINDS, ALL_METHODS),
    "object_X_with_none": (lambda X, y: (_object_X_with_none(X), y, None), "NaN",
                           ALL_KINDS, ALL_METHODS),
    "complex_X": (lambda X, y: (X + 1j, y, None), "Complex data not supported", ALL_KINDS,
                  ALL_METHODS),
    "wrong_n_features": (lambda X, y: (X[:, :3], y, None),
                         "X has 3 features, but .* is expecting 6 features", ALL_KINDS,
                         INCREMENTAL),
    "single_class": (lambda X, y: (X, np.zeros(len(y), dtype=int), None),
                     "(one class|at least 2 classes|same classes)", ("clf",),
                     ("fit", "warm_start")),
    "unseen_label": (lambda X, y: (X, _unseen_label(y), None),
                     "classes not in|same classes", ("clf",), INCREMENTAL),
    "wrong_n_outputs": (lambda X, y: (X, np.column_stack([y, y]), None),
                        "layer sizes|n_outputs|outputs", ("reg",), INCREMENTAL),
    "negative_poisson_y": (lambda X, y: (X, _with(y, 0, -1.0), None), "negative.*[Pp]oisson",
                           ("poisson",), ALL_METHODS),
}
DATA_CASES = [
    (name, kind, method)
    for name, (_, _, kinds, methods) in BAD_DATA.items()
    for kind in kinds
    for method in methods
]


def call(est, method, X, y, sample_weight=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if method == "partial_fit":
            return est.partial_fit(X, y, sample_weight=sample_weight)
        if method == "warm_start":
            est.set_params(warm_start=True)
        return est.fit(X, y, sample_weight=sample_weight)


@pytest.mark.parametrize("backend", ["cython", "numpy"])
@pytest.mark.parametrize("case, kind, method", DATA_CASES)
def test_bad_data_raises_and_keeps_fitted_model(case, kind, method, backend):
    """Bad data raises a ValueError naming the problem; the fitted model is untouched."""
    assert_rejected_keeps_model(fitted(kind, backend=backend), case, kind, method)


def assert_rejected_keeps_model(est, case, kind, method):
    """``method`` with bad data ``case`` raises the case's ValueError and leaves the
    fitted ``est`` as it was."""
    make, match, _, _ = BAD_DATA[case]
    before = snapshot(est)
    X, y, sw = make(X_GOOD, TARGETS[kind])
    with pytest.raises(ValueError, match=match):
        call(est, method, X, y, sw)
    est.set_params(warm_start=False)
    assert_same_model(est, before)


@pytest.mark.parametrize("case", ["nan_X", "nan_y", "negative_sample_weight", "3d_X",
                                  "single_class", "all_zero_sample_weight"])
def test_bad_data_lbfgs_refit_keeps_model(case):
    """The same guarantee for L-BFGS (no partial_fit), cold and warm refits."""
    kind = BAD_DATA[case][2][0]
    for method in ("fit", "warm_start"):
        assert_rejected_keeps_model(fitted(kind, solver="lbfgs"), case, kind, method)


@pytest.mark.parametrize("case", ["nan_X", "inf_y", "empty_X", "3d_X", "string_X",
                                  "y_shorter_than_X", "negative_sample_weight",
                                  "all_zero_sample_weight"])
@pytest.mark.parametrize("kind", ["clf", "reg"])
def test_bad_data_leaves_unfitted_estimator_unfitted(case, kind):
    """A first fit that fails leaves no half-fitted state behind."""
    make, match, _, _ = BAD_DATA[case]
    est = make_model(kind)
    X, y, sw = make(X_GOOD, TARGETS[kind])
    with pytest.raises(ValueError, match=match):
        est.fit(X, y, sample_weight=sw)
    assert not hasattr(est, "coefs_")
    assert not hasattr(est, "n_features_in_")
    assert not hasattr(est, "classes_")


def test_first_partial_fit_needs_two_classes():
    est = make_model("clf")
    with pytest.raises(ValueError, match="one class|at least 2 classes"):
        est.partial_fit(X_GOOD, np.zeros(N, dtype=int), classes=[0])
    assert not hasattr(est, "coefs_")


def test_first_partial_fit_needs_classes():
    est = make_model("clf")
    with pytest.raises(ValueError, match="classes must be passed"):
        est.partial_fit(X_GOOD, TARGETS["clf"])
    assert not hasattr(est, "coefs_")


def test_first_partial_fit_labels_outside_classes():
    est = make_model("clf")
    with pytest.raises(ValueError, match="classes not in"):
        est.partial_fit(X_GOOD, TARGETS["clf"], classes=[0, 1])
    assert not hasattr(est, "coefs_")


def test_partial_fit_unseen_label_after_first_call():
    """partial_fit with labels unseen by the first call (declared classes) fails cleanly."""
    est = make_model("clf")
    est.partial_fit(X_GOOD, TARGETS["clf"], classes=[0, 1, 2])
    before = snapshot(est)
    with pytest.raises(ValueError, match="classes not in"):
        est.partial_fit(X_GOOD, np.where(TARGETS["clf"] == 2, 3, TARGETS["clf"]))
    assert_same_model(est, before)


# ---------------------------------------------------------------------------
# bad data at predict time


BAD_PREDICT = {
    "nan": (lambda X: _with(X, (3, 2), np.nan), "Input X contains NaN"),
    "nan_float32": (lambda X: _with(X, (3, 2), np.nan).astype(np.float32),
                    "Input X contains NaN"),
    "inf": (lambda X: _with(X, (0, 0), np.inf), "Input X contains infinity"),
    "neg_inf": (lambda X: _with(X, (-1, -1), -np.inf), "Input X contains infinity"),
    # beyond the first ~1 MB chunk of the kernel's finiteness scan
    "nan_in_late_chunk": (lambda X: _with(np.tile(X, (800, 1)), (-1, 0), np.nan),
                          "Input X contains NaN"),
    "nan_fortran": (lambda X: np.asfortranarray(_with(X, (3, 2), np.nan)),
                    "Input X contains NaN"),
    "empty": (lambda X: X[:0], r"0 sample\(s\)"),
    "3d": (lambda X: X.reshape(len(X), D, 1), "dim 3"),
    "1d": (lambda X: X[0], "Expected 2D array"),
    # scikit-learn's predict error (fit converts numeric strings, then fails on "a")
    "string": (lambda X: np.full(X.shape, "a"), "not compatible with arrays of bytes/strings"),
    "complex": (lambda X: X + 1j, "Complex data not supported"),
    "too_few_features": (lambda X: X[:, :3], "X has 3 features, but .* expecting 6"),
    "too_many_features": (lambda X: np.hstack([X, X]), "X has 12 features, but .* expecting 6"),
    "too_few_features_float32": (lambda X: X[:, :3].astype(np.float32),
                                 "X has 3 features, but .* expecting 6"),
    "too_few_features_list": (lambda X: X[:, :3].tolist(), "X has 3 features, but .* expecting 6"),
}


@pytest.mark.parametrize("backend", ["cython", "numpy"])
@pytest.mark.parametrize("method", ["predict", "predict_proba", "predict_log_proba",
                                    "score"])
@pytest.mark.parametrize("case", list(BAD_PREDICT))
def test_bad_data_at_predict(case, method, backend):
    kind = "reg" if method == "score" and case.startswith("nan") else "clf"
    est = fitted(kind, backend=backend)
    before = snapshot(est)
    make, match = BAD_PREDICT[case]
    X = make(X_GOOD)
    with pytest.raises(ValueError, match=match):
        if method == "score":
            y = TARGETS[kind]
            est.score(X, np.resize(y, len(X)) if hasattr(X, "__len__") else y)
        else:
            getattr(est, method)(X)
    assert_same_model(est, before)


@pytest.mark.parametrize("backend", ["cython", "numpy"])
def test_regressor_predict_bad_data(backend):
    est = fitted("reg", backend=backend)
    before = snapshot(est)
    for case in ("nan", "nan_in_late_chunk", "inf", "too_few_features", "3d", "empty"):
        make, match = BAD_PREDICT[case]
        with pytest.raises(ValueError, match=match):
            est.predict(make(X_GOOD))
    assert_same_model(est, before)


def test_predict_before_fit_raises_not_fitted():
    from sklearn.exceptions import NotFittedError

    for kind in ("clf", "reg"):
        with pytest.raises(NotFittedError):
            make_model(kind).predict(X_GOOD)


# ---------------------------------------------------------------------------
# every invalid value of every hyperparameter


class _BadType:
    """An object no parameter accepts."""

    def __repr__(self):
        return "<BadType>"


def _invalid_for(constraint):
    """Values outside one constraint (each still has to fail every other one)."""
    c = make_constraint(constraint)
    values = []
    if isinstance(c, StrOptions):
        values += ["foo", "not " + " or ".join(sorted(c.options))]
    elif isinstance(c, Interval):
        if c.type is Integral:
            if c.left is not None:
                values += [c.left - 1, c.left - 10]
                if c.closed in ("right", "neither"):
                    values.append(c.left)
            if c.right is not None:
                values.append(c.right + 1)
                if c.closed in ("left", "neither"):
                    values.append(c.right)
            values += [2.5, "3"]
        else:
            if c.left is not None:
                values += [c.left - 1e-6, c.left - 1.0]
                if c.closed in ("right", "neither"):
                    values.append(c.left)
            if c.right is not None:
                values += [c.right + 1e-6, c.right + 1.0]
                if c.closed in ("left", "neither"):
                    values.append(c.right)
            else:
                values.append(np.inf)
            values += [np.nan, "0.5"]
    elif isinstance(constraint, str) and constraint == "boolean":
        values += ["yes", 2, None]
    elif isinstance(constraint, str) and constraint == "verbose":
        values += [-1, "loud"]
    elif isinstance(constraint, str) and constraint == "random_state":
        values += [-1, 2**32, "seed", 1.5]
    return values


def _satisfies_any(constraints, value):
    return any(make_constraint(c).is_satisfied_by(value) for c in constraints)


def _generated_invalid_params(cls):
    cases = []
    for name, constraints in cls._parameter_constraints.items():
        candidates = [_BadType()]
        for constraint in constraints:
            candidates += _invalid_for(constraint)
        seen = set()
        for value in candidates:
            key = repr(value)
            if key in seen or _satisfies_any(constraints, value):
                continue
            seen.add(key)
            cases.append((name, value))
    return cases


# values that pass the type constraints but not the estimator's own checks
SEMANTIC_INVALID = [
    ("hidden_layer_sizes", (0,), {}),
    ("hidden_layer_sizes", (5, 0), {}),
    ("hidden_layer_sizes", (2.5,), {}),
    ("hidden_layer_sizes", (-3,), {}),
    ("hidden_layer_sizes", (5, None), {}),
    ("hidden_layer_sizes", ((3,),), {}),
    ("hidden_layer_sizes", ("4",), {}),
    ("activation", ("relu",), {}),  # two hidden layers, one name
    ("activation", ("relu", "tanh", "relu"), {}),
    ("activation", ("relu", "foo"), {}),
    ("activation", ("relu", "softmax"), {}),
    ("activation", ("relu", 3), {}),
    ("activation", [], {}),
    ("dropout", (0.1,), {}),  # two hidden layers, one rate
    ("dropout", (0.1, 0.2, 0.3), {}),
    ("dropout", (0.1, 1.0), {}),
    ("dropout", (0.1, -0.1), {}),
    ("dropout", (0.1, "a"), {}),
    ("dropout", [0.1, np.nan], {}),
    ("dropout", 0.2, {"solver": "lbfgs"}),
    ("dropout", (0.2, 0.0), {"solver": "lbfgs"}),
    ("validation_fraction", 0.0, {"early_stopping": True}),
    ("scoring", "foo", {"early_stopping": True}),
    ("callbacks", [1], {}),
    ("callbacks", (len, "not callable"), {}),
]
CLASSIFIER_SEMANTIC_INVALID = [
    ("class_weight", [{0: 1.0}], {}),  # a list is for multilabel targets only
    ("class_weight", {0: -1.0}, {}),
    ("class_weight", {0: np.nan}, {}),
    ("class_weight", {0: np.inf}, {}),
    ("class_weight", {0: "a"}, {}),
    ("class_weight", {1: -0.5, 2: 1.0}, {}),
]

def _hyper_cases():
    cases = []
    for cls in (MLPClassifier, MLPRegressor):
        for name, value in _generated_invalid_params(cls):
            cases.append((cls, name, value, {}))
        for name, value, extra in SEMANTIC_INVALID:
            cases.append((cls, name, value, extra))
    for name, value, extra in CLASSIFIER_SEMANTIC_INVALID:
        cases.append((MLPClassifier, name, value, extra))
    return cases


def _case_id(case):
    cls, name, value, extra = case
    more = "".join(f",{k}={v}" for k, v in extra.items())
    return f"{cls.__name__[3:]}-{name}={value!r}{more}"


HYPER_CASES = _hyper_cases()

# where scikit-learn's own error (the same as sklearn.neural_network's) is the answer
MATCH = {
    ("validation_fraction", "0.0"): "validation_fraction|test_size=0.0",
    ("class_weight", "{0: 'a'}"): "class_weight|could not convert string to float",
}


def test_every_parameter_has_invalid_values():
    """The generator covers every constrained parameter of both estimators."""
    for cls in (MLPClassifier, MLPRegressor):
        covered = {name for c, name, _, _ in HYPER_CASES if c is cls}
        assert covered == set(cls._parameter_constraints)
        assert set(cls._parameter_constraints) == set(cls().get_params())


@pytest.mark.parametrize("case", HYPER_CASES, ids=[_case_id(c) for c in HYPER_CASES])
def test_invalid_hyperparameter_raises_and_keeps_fitted_model(case):
    """fit with an invalid value raises a ValueError naming the parameter; the model
    fitted before keeps its weights and predictions. The first partial_fit of a fresh
    estimator raises the same error. (Like scikit-learn's, a partial_fit on an already
    fitted estimator skips parameter validation, so it is not checked here.)"""
    cls, name, value, extra = case
    kind = "clf" if cls is MLPClassifier else "reg"
    est = fitted(kind)
    before = snapshot(est)
    good = est.get_params()
    match = MATCH.get((name, repr(value)), name)
    est.set_params(**{name: value}, **extra)
    with pytest.raises(ValueError, match=match) as info:
        call(est, "fit", X_GOOD, TARGETS[kind])
    if isinstance(info.value, InvalidParameterError):
        assert f"The '{name}' parameter of {cls.__name__} must be" in str(info.value)
    est.set_params(**good)
    assert_same_model(est, before)

    fresh = make_model(kind).set_params(**{name: value}, **extra)
    if fresh.get_params()["solver"] in ("sgd", "adam") and not fresh.get_params().get(
        "early_stopping"
    ):
        kwargs = {"classes": np.unique(TARGETS[kind])} if kind == "clf" else {}
        with pytest.raises(ValueError, match=match):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                fresh.partial_fit(X_GOOD, TARGETS[kind], **kwargs)
        assert not hasattr(fresh, "coefs_")


@pytest.mark.parametrize("cls", [MLPClassifier, MLPRegressor])
def test_invalid_hyperparameter_on_unfitted_estimator(cls):
    """The brief's named examples, on a fresh estimator: raise, stay unfitted."""
    kind = "clf" if cls is MLPClassifier else "reg"
    examples = [
        {"alpha": -1.0}, {"batch_size": 0}, {"solver": "foo"}, {"momentum": 2},
        {"validation_fraction": 1}, {"beta_1": 1}, {"hidden_layer_sizes": (0,)},
        {"hidden_layer_sizes": (2.5,)}, {"activation": "foo"},
        {"activation": ("relu", "relu", "relu")}, {"dropout": 1}, {"dropout": -0.1},
        {"dropout": (0.1, 0.1, 0.1)}, {"dropout": 0.5, "solver": "lbfgs"},
        {"backend": "foo"}, {"n_iter_no_change": 0},
    ]
    if cls is MLPClassifier:
        examples.append({"class_weight": "foo"})
    else:
        examples.append({"loss": "foo"})
    for params in examples:
        est = make_model(kind).set_params(**params)
        name = next(iter(params))
        with pytest.raises(ValueError, match=name):
            est.fit(X_GOOD, TARGETS[kind])
        assert not hasattr(est, "coefs_"), params
