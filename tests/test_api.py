"""The estimators' public surface: fitted attributes, views, pickling, dtypes, stopping
rules, meta-estimators, parameter handling and the failed-fit guarantee."""

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV
from sklearn.neural_network import MLPClassifier as SkMLPClassifier
from sklearn.neural_network import MLPRegressor as SkMLPRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError

from _helpers import digits, make_data
from pybackprop import MLPClassifier, MLPRegressor
from pybackprop import _backend

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

SMALL = dict(hidden_layer_sizes=(12, 7), max_iter=5, random_state=0)


def all_weights(est):
    return est.coefs_ + est.intercepts_


# ---------------------------------------------------------------------------
# fitted attributes


@pytest.mark.parametrize("early_stopping", [False, True])
def test_classifier_fitted_attributes_stochastic(early_stopping, backend):
    """After an adam fit every documented attribute exists with the right type and shape."""
    X, y = make_data("multiclass")
    est = MLPClassifier(**SMALL, backend=backend, early_stopping=early_stopping).fit(X, y)
    assert_array_equal(est.classes_, np.arange(10))
    assert isinstance(est.loss_, float) and np.isfinite(est.loss_)
    assert isinstance(est.loss_curve_, list) and len(est.loss_curve_) == est.n_iter_ == 5
    assert all(isinstance(v, float) for v in est.loss_curve_)
    assert est.loss_ == est.loss_curve_[-1]
    assert isinstance(est.t_, int)
    n_train = 270 if early_stopping else 300
    assert est.t_ == 5 * n_train
    if early_stopping:
        assert est.best_loss_ is None
        assert isinstance(est.validation_scores_, list) and len(est.validation_scores_) == 5
        assert est.best_validation_score_ == max(est.validation_scores_)
        assert all(0 <= s <= 1 for s in est.validation_scores_)
    else:
        assert est.best_loss_ == min(est.loss_curve_)
        assert est.validation_scores_ is None and est.best_validation_score_ is None
    assert isinstance(est.n_iter_, int)
    assert est.n_features_in_ == 64
    assert not hasattr(est, "feature_names_in_")
    assert est.n_layers_ == 4
    assert est.n_outputs_ == 10
    assert est.out_activation_ == "softmax"
    assert [c.shape for c in est.coefs_] == [(64, 12), (12, 7), (7, 10)]
    assert [b.shape for b in est.intercepts_] == [(12,), (7,), (10,)]
    assert all(isinstance(w, np.ndarray) and w.dtype == np.float64 for w in all_weights(est))


def test_lbfgs_fitted_attributes(backend):
    """An lbfgs fit sets loss_ and n_iter_ but no stochastic-only attributes."""
    X, y = make_data("regression")
    est = MLPRegressor(solver="lbfgs", **SMALL, backend=backend).fit(X, y)
    assert isinstance(est.loss_, float) and np.isfinite(est.loss_)
    assert 1 <= est.n_iter_ <= 5
    assert est.t_ == 0
    assert not hasattr(est, "loss_curve_")
    assert est.out_activation_ == "identity"
    assert est.n_outputs_ == 1
    assert est.predict(X).shape == (300,)


@pytest.mark.parametrize(
    "task, out_activation, n_outputs, classes",
    [
        ("binary", "logistic", 1, np.array(["even", "odd"])),
        ("multilabel", "logistic", 3, np.arange(3)),
        ("multiclass", "softmax", 10, np.arange(10)),
    ],
)
def test_classifier_targets(task, out_activation, n_outputs, classes):
    """classes_, out_activation_, n_outputs_ and the output shapes follow the target type."""
    X, y = make_data(task)
    est = MLPClassifier(**SMALL).fit(X, y)
    assert_array_equal(est.classes_, classes)
    assert est.out_activation_ == out_activation
    assert est.n_outputs_ == n_outputs
    pred = est.predict(X)
    assert pred.shape == y.shape
    assert set(np.unique(pred)) <= set(np.unique(y))
    proba = est.predict_proba(X)
    assert proba.shape == (300, max(n_outputs, 2))
    if task != "multilabel":
        assert_allclose(proba.sum(axis=1), 1.0)
    assert_allclose(est.predict_log_proba(X), np.log(proba))


@pytest.mark.parametrize(
    "fit_on, y",
    [
        (np.array(["even", "odd", "odd"]), np.array(["odd", "even", "odd", "odd"])),
        (np.array([3, 1, 2, 7]), np.array([7, 1, 1, 2, 3, 7])),
        (np.array([-1.0, 0.0, 2.0]), np.array([0.0, -1.0, 2.0, 2.0])),
        (np.array([True, False]), np.array([False, True, True])),
        (np.array(["a", "b", "c"], dtype=object), np.array(["c", "a"], dtype=object)),
        # labels seen in fit but only one class in this batch (partial_fit)
        (np.array([0, 1, 2]), np.array([2, 2, 2])),
        # not among classes_: transform's own answer (all-zero rows)
        (np.array([0, 1, 2]), np.array([0, 5, 1])),
        # 2-D indicator targets
        (np.array([[1, 0], [0, 1], [1, 1]]), np.array([[0, 1], [1, 1]])),
    ],
)
def test_indicator_matches_label_binarizer(fit_on, y):
    """The classifier's target matrix is LabelBinarizer.transform's, as bools."""
    from sklearn.preprocessing import LabelBinarizer

    from pybackprop._mlp import _indicator

    lb = LabelBinarizer().fit(fit_on)
    expected = lb.transform(y).astype(bool)
    got = _indicator(lb, y)
    assert got.dtype == bool
    assert_array_equal(got, expected)


@pytest.mark.parametrize(
    "y",
    [
        np.array([3, 1, 2, 7, 1]),
        np.array([7, 7, 7]),                              # one class
        np.array([5, -2, 5], dtype=np.int8),
        np.array([0, 1, 1, 0], dtype=np.uint8),
        np.array([2**40, 3, 2**40], dtype=np.int64),
        np.array([2**63 + 5, 1], dtype=np.uint64),
        np.array([4, 2, 4], dtype=np.int32),
        np.array([1, 0, 9], dtype=">i8"),                  # not native: fit's own way
        np.array([0.0, 1.0, 2.0]),                         # floats: fit's own way
        np.array([True, False, True]),
        np.array(["b", "a"]),
        np.array([[1, 0], [0, 1], [1, 1]]),                # multilabel
    ],
)
def test_fitted_label_binarizer_matches_fit(y):
    """The classifier's label binarizer is LabelBinarizer().fit(y)'s: the same
    attributes, classes of the same values and dtype, the same transform."""
    from sklearn.preprocessing import LabelBinarizer

    from pybackprop._mlp import _fitted_label_binarizer

    expected = LabelBinarizer().fit(y)
    got = _fitted_label_binarizer(y)
    assert type(got) is LabelBinarizer
    assert sorted(vars(got)) == sorted(vars(expected))
    assert got.y_type_ == expected.y_type_
    assert got.sparse_input_ == expected.sparse_input_
    assert got.classes_.dtype == expected.classes_.dtype
    assert_array_equal(got.classes_, expected.classes_)
    assert_array_equal(got.transform(y), expected.transform(y))


@pytest.mark.parametrize(
    "fit_on, scores",
    [
        # multiclass: the greatest score, the first of equal ones
        (np.array(["a", "b", "c"]),
         np.array([[0.1, 0.7, 0.2], [0.4, 0.2, 0.4], [0.3, 0.3, 0.4], [1 / 3, 1 / 3, 1 / 3]])),
        (np.array([3, 1, 7]), np.array([[0.2, 0.5, 0.3], [0.6, 0.3, 0.1]], dtype=np.float32)),
        (np.array(["x", "y", "z"], dtype=object), np.array([[0.0, 0.0, 1.0]])),
        # binary: a score above 0.5 (exactly 0.5 is the first class), 1-D or one column
        (np.array([-1.0, 2.0]), np.array([0.2, 0.5, 0.5000001, 0.9])),
        (np.array([False, True]), np.array([[0.7], [0.1]], dtype=np.float32)),
        (np.array(["no", "yes"]), np.array([0.49, 0.51])),
        # no rows
        (np.array([0, 1, 2]), np.zeros((0, 3))),
        # multilabel: inverse_transform's own answer
        (np.array([[1, 0], [0, 1], [1, 1]]), np.array([[0.2, 0.9], [0.6, 0.4]])),
    ],
)
def test_labels_match_label_binarizer(fit_on, scores):
    """The classifier's predicted labels are LabelBinarizer.inverse_transform's."""
    from sklearn.preprocessing import LabelBinarizer

    from pybackprop._mlp import _labels

    lb = LabelBinarizer().fit(fit_on)
    expected = lb.inverse_transform(scores)
    got = _labels(lb, scores)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert_array_equal(got, expected)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_predict_is_the_argmax_of_predict_proba(n_classes):
    """predict gives the class of the greatest probability (above 0.5 for two classes),
    as inverse_transform of predict_proba's scores does."""
    X, y = make_data("binary" if n_classes == 2 else "multiclass")
    est = MLPClassifier(**SMALL).fit(X, y)
    proba = est.predict_proba(X)
    assert_array_equal(est.predict(X), est.classes_[proba.argmax(axis=1)])
    assert_array_equal(est.predict(X), est._label_binarizer.inverse_transform(
        proba[:, 1] if n_classes == 2 else proba))


def test_regressor_outputs():
    """Poisson regression uses an exp output (positive predictions); multi-output predicts 2-D."""
    X, y = make_data("poisson")
    est = MLPRegressor(loss="poisson", **SMALL).fit(X, y)
    assert est.out_activation_ == "exp"
    assert (est.predict(X) > 0).all()
    X, Y = make_data("multioutput")
    est = MLPRegressor(**SMALL).fit(X, Y)
    assert est.n_outputs_ == 3 and est.predict(X).shape == (300, 3)


def test_feature_names_in_from_dataframe(backend):
    """A DataFrame's column names become feature_names_in_; predicting from the DataFrame works."""
    X, y = make_data("multiclass")
    df = pd.DataFrame(X, columns=[f"px{i}" for i in range(64)])
    est = MLPClassifier(**SMALL, backend=backend).fit(df, y)
    assert_array_equal(est.feature_names_in_, df.columns.to_numpy())
    assert est.feature_names_in_.dtype == object
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "X has feature names" warning
        pred = est.predict(df)
    with pytest.warns(UserWarning, match="feature names"):  # as scikit-learn warns
        assert_array_equal(pred, est.predict(X))


# ---------------------------------------------------------------------------
# views into the flat parameter buffer


def assert_views(est):
    flat = est._flat_params
    assert flat.ndim == 1 and flat.flags.c_contiguous
    assert sum(w.size for w in all_weights(est)) == flat.size
    for w in all_weights(est):
        assert np.shares_memory(w, flat)


@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
def test_weights_are_views_of_flat_params(solver, backend):
    """coefs_ and intercepts_ are views into _flat_params after fit, warm-start refit and partial_fit."""
    X, y = make_data("multiclass")
    est = MLPClassifier(solver=solver, **SMALL, backend=backend).fit(X, y)
    assert_views(est)
    est.set_params(warm_start=True).fit(X, y)
    assert_views(est)
    if solver != "lbfgs":
        est.partial_fit(X, y)
        assert_views(est)
    # the views are live: writing into coefs_ changes what the model predicts
    before = est.predict_proba(X)
    est.coefs_[-1][:] = 0
    est.intercepts_[-1][:] = 0
    assert_allclose(est.predict_proba(X), 0.1)
    assert not np.allclose(before, 0.1)


def test_replaced_weights_are_used(backend):
    """Assigning new coefs_/intercepts_ lists is honoured: predictions match scikit-learn's with the same weights."""
    X, y = make_data("multiclass")
    ours = MLPClassifier(**SMALL, backend=backend).fit(X, y)
    ref = SkMLPClassifier(**SMALL).fit(X, y)
    rng = np.random.RandomState(3)
    coefs = [rng.standard_normal(c.shape) for c in ref.coefs_]
    intercepts = [rng.standard_normal(b.shape) for b in ref.intercepts_]
    ours.coefs_, ours.intercepts_ = [c.copy() for c in coefs], [b.copy() for b in intercepts]
    ref.coefs_, ref.intercepts_ = coefs, intercepts
    assert_allclose(ours.predict_proba(X), ref.predict_proba(X), rtol=1e-10, atol=1e-14)
    assert_array_equal(ours.predict(X), ref.predict(X))


@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_pickle_round_trip(solver, backend):
    """An unpickled model predicts identically, keeps the views, and trains on like the original."""
    X, y = make_data("multiclass")
    est = MLPClassifier(solver=solver, **SMALL, backend=backend).fit(X, y)
    back = pickle.loads(pickle.dumps(est))
    assert_array_equal(back.predict(X), est.predict(X))
    assert_array_equal(back.predict_proba(X), est.predict_proba(X))
    assert_views(back)
    assert not np.shares_memory(back._flat_params, est._flat_params)
    for a, b in zip(all_weights(back), all_weights(est)):
        assert_array_equal(a, b)
    if solver == "adam":  # optimizer state survives too
        est.partial_fit(X, y)
        back.partial_fit(X, y)
        assert_array_equal(back._flat_params, est._flat_params)
        assert back.loss_curve_ == est.loss_curve_


# ---------------------------------------------------------------------------
# partial_fit availability, dtypes


@pytest.mark.parametrize("cls", [MLPClassifier, MLPRegressor])
def test_partial_fit_only_for_stochastic_solvers(cls):
    """partial_fit is hidden (hasattr False) with lbfgs, on both estimators, and present for sgd/adam."""
    assert not hasattr(cls(solver="lbfgs"), "partial_fit")
    assert hasattr(cls(solver="sgd"), "partial_fit")
    assert hasattr(cls(solver="adam"), "partial_fit")
    with pytest.raises(AttributeError):
        cls(solver="lbfgs").partial_fit


@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
def test_float32_in_float32_out(solver, backend):
    """float32 X trains float32 weights and predicts float32; float64 stays float64."""
    X, y = make_data("multiclass")
    est = MLPClassifier(solver=solver, **SMALL, backend=backend).fit(X.astype(np.float32), y)
    assert all(w.dtype == np.float32 for w in all_weights(est))
    assert est.predict_proba(X.astype(np.float32)).dtype == np.float32
    assert np.isfinite(est.loss_)
    reg = MLPRegressor(solver=solver, **SMALL, backend=backend)
    Xr, yr = make_data("regression")
    reg.fit(Xr.astype(np.float32), yr)
    assert all(w.dtype == np.float32 for w in all_weights(reg))
    assert reg.predict(Xr.astype(np.float32)).dtype == np.float32
    est64 = MLPClassifier(solver=solver, **SMALL, backend=backend).fit(X, y)
    assert all(w.dtype == np.float64 for w in all_weights(est64))
    assert est64.predict_proba(X).dtype == np.float64


@pytest.mark.parametrize("fmt", ["dense", "csr", "int"])
def test_float32_model_predicts_other_input_in_float64_as_scikit_learn(fmt, backend):
    """A float32 model on float64 (or integer, or sparse float64) X predicts in
    float64, as scikit-learn's products of float64 X and float32 weights do: its
    float64 output, to rounding, with the same weights; float64 X beyond float32's
    range included. float32 X on a float64 model also predicts float64."""
    import scipy.sparse as sp

    X, y = make_data("multiclass")
    est = MLPClassifier(**SMALL, backend=backend).fit(X.astype(np.float32), y)
    sk = SkMLPClassifier(**SMALL).fit(X.astype(np.float32), y)
    sk.coefs_ = [w.copy() for w in est.coefs_]
    sk.intercepts_ = [b.copy() for b in est.intercepts_]
    Xr, yr = make_data("regression")
    reg = MLPRegressor(**SMALL, backend=backend).fit(Xr.astype(np.float32), yr)
    sk_reg = SkMLPRegressor(**SMALL).fit(Xr.astype(np.float32), yr)
    sk_reg.coefs_ = [w.copy() for w in reg.coefs_]
    sk_reg.intercepts_ = [b.copy() for b in reg.intercepts_]
    big = Xr.copy()
    big[0, 0] = 1e39
    for A, B, data in ((est, sk, X), (reg, sk_reg, Xr)) + ((reg, sk_reg, big),) * (fmt != "int"):
        if fmt == "csr":
            data = sp.csr_matrix(data)
        elif fmt == "int":
            data = np.round(4 * data).astype(np.int64)
        got = A.predict_proba(data) if A is est else A.predict(data)
        want = B.predict_proba(data) if A is est else B.predict(data)
        assert got.dtype == want.dtype == np.float64
        assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    # float32 X on float64 weights: float64, as scikit-learn's product
    est64 = MLPClassifier(**SMALL, backend=backend).fit(X, y)
    assert est64.predict_proba(X.astype(np.float32)).dtype == np.float64
    assert_allclose(est64.predict_proba(X.astype(np.float32)),
                    est64.predict_proba(X.astype(np.float32).astype(np.float64)), rtol=0)


def test_predict_refuses_strings_as_scikit_learn():
    """Numbers written as strings: fit takes them (scikit-learn's fit converts them
    too), predict refuses them with scikit-learn's error."""
    X, y = make_data("multiclass")
    for cls in (MLPClassifier, SkMLPClassifier):
        est = cls(**SMALL).fit(X, y)
        with pytest.raises(ValueError, match="strings"):
            est.predict(X.astype(str))


@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
def test_losses_are_numpy_floats_as_scikit_learn(solver):
    """loss_, the items of loss_curve_ and best_loss_ have scikit-learn's types."""
    X, y = make_data("multiclass")
    ours = MLPClassifier(solver=solver, **SMALL).fit(X, y)
    theirs = SkMLPClassifier(solver=solver, **SMALL).fit(X, y)
    assert type(ours.loss_) is type(theirs.loss_) is np.float64
    if solver != "lbfgs":
        assert [type(v) for v in ours.loss_curve_] == [type(v) for v in theirs.loss_curve_]
        assert type(ours.best_loss_) is type(theirs.best_loss_)
        assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-9)


@pytest.mark.parametrize("early_stopping", [False, True])
def test_sparse_multilabel_targets_as_scikit_learn(early_stopping):
    """A multilabel y given as a sparse indicator matrix: fit, partial_fit, predict
    and score as scikit-learn's MLPClassifier (the same losses; a sparse prediction)."""
    import scipy.sparse as sp

    X, Y = make_data("multilabel")
    Ys = sp.csr_matrix(Y)
    kw = dict(SMALL, early_stopping=early_stopping)
    ours, theirs = MLPClassifier(**kw).fit(X, Ys), SkMLPClassifier(**kw).fit(X, Ys)
    assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-9)
    got, want = ours.predict(X), theirs.predict(X)
    assert type(got) is type(want) and sp.issparse(got)
    assert_array_equal(got.toarray(), want.toarray())
    assert ours.score(X, Ys) == theirs.score(X, Ys)
    if not early_stopping:
        for est in (ours, theirs):
            est.partial_fit(X, Ys)
        assert_allclose(ours.loss_, theirs.loss_, rtol=1e-9)


# ---------------------------------------------------------------------------
# stopping rules


@pytest.mark.parametrize("max_fun", [5, 15])
def test_max_fun_limits_lbfgs(max_fun, backend, monkeypatch):
    """max_fun caps L-BFGS's loss evaluations (and warns), far below what max_iter would allow."""
    calls = []
    original = _backend.BACKENDS[backend]

    class Counting(original):
        def loss_grad(self, params, grads):
            calls.append(1)
            return super().loss_grad(params, grads)

    monkeypatch.setitem(_backend.BACKENDS, backend, Counting)
    X, y = make_data("multiclass")
    est = MLPClassifier(solver="lbfgs", hidden_layer_sizes=(10,), max_iter=500, max_fun=max_fun,
                        random_state=0, backend=backend)
    with pytest.warns(ConvergenceWarning, match="lbfgs failed to converge"):
        est.fit(X, y)
    assert max_fun <= len(calls) <= max_fun + 5  # the last line search may finish past it
    assert est.n_iter_ <= max_fun
    # the same cap in scikit-learn stops at the same iteration
    ref = SkMLPClassifier(solver="lbfgs", hidden_layer_sizes=(10,), max_iter=500,
                          max_fun=max_fun, random_state=0).fit(X, y)
    assert est.n_iter_ == ref.n_iter_


@pytest.mark.parametrize("early_stopping", [False, True])
@pytest.mark.parametrize("n_iter_no_change", [1, 3])
def test_n_iter_no_change_stops(n_iter_no_change, early_stopping, backend):
    """With tol too large to ever be met, training stops n_iter_no_change + 2 epochs in (no ConvergenceWarning)."""
    X, y = make_data("multiclass")
    est = MLPClassifier(hidden_layer_sizes=(10,), max_iter=50, tol=10.0, random_state=0,
                        n_iter_no_change=n_iter_no_change, early_stopping=early_stopping,
                        backend=backend)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        est.fit(X, y)
    # epoch 1 sets the first best (count 0); each later epoch adds 1; stop once count > n
    assert est.n_iter_ == n_iter_no_change + 2
    assert len(est.loss_curve_) == est.n_iter_


def test_n_iter_no_change_inf_runs_max_iter(backend):
    """n_iter_no_change=inf never stops early: max_iter epochs and a ConvergenceWarning."""
    X, y = make_data("multiclass")
    est = MLPClassifier(hidden_layer_sizes=(10,), max_iter=6, tol=10.0, random_state=0,
                        n_iter_no_change=np.inf, backend=backend)
    with pytest.warns(ConvergenceWarning):
        est.fit(X, y)
    assert est.n_iter_ == 6


def test_adaptive_learning_rate_divides_before_stopping(backend):
    """sgd 'adaptive' divides the rate by 5 at each stall and stops once it is <= 1e-6."""
    X, y = make_data("multiclass")
    est = MLPClassifier(solver="sgd", learning_rate="adaptive", learning_rate_init=0.1,
                        hidden_layer_sizes=(10,), max_iter=200, tol=10.0, n_iter_no_change=1,
                        random_state=0, backend=backend).fit(X, y)
    # epoch 1 sets the best loss; from then on every 2nd epoch is a stall. Stalls 1..8
    # divide the rate (0.1 / 5**8 <= 1e-6 < 0.1 / 5**7); stall 9 stops, at epoch 1 + 2·9
    assert est._optimizer.learning_rate == pytest.approx(0.1 / 5 ** 8)
    assert est.n_iter_ == 1 + 2 * 9


# ---------------------------------------------------------------------------
# meta-estimators and parameters


def test_pipeline_in_grid_search(backend):
    """Pipeline(StandardScaler, MLPClassifier) inside GridSearchCV fits, selects and predicts."""
    X, y = digits(400)
    pipe = Pipeline([("scale", StandardScaler()),
                     ("mlp", MLPClassifier(max_iter=20, learning_rate_init=0.01, random_state=0,
                                           backend=backend))])
    grid = {"mlp__alpha": [1e-4, 1e-1], "mlp__hidden_layer_sizes": [(8,), (16,)]}
    search = GridSearchCV(pipe, grid, cv=2).fit(X, y)
    assert search.best_params_["mlp__alpha"] in grid["mlp__alpha"]
    assert len(search.cv_results_["mean_test_score"]) == 4
    assert search.best_score_ > 0.7
    assert search.score(X, y) > 0.85
    assert search.best_estimator_.named_steps["mlp"].backend == backend


@pytest.mark.parametrize("cls", [MLPClassifier, MLPRegressor])
def test_params_round_trip(cls):
    """get_params / set_params / clone carry every parameter, backend included."""
    est = cls(hidden_layer_sizes=(7, 3), alpha=0.3, backend="numpy", solver="sgd",
              random_state=5)
    params = est.get_params()
    assert params["backend"] == "numpy"
    assert params["hidden_layer_sizes"] == (7, 3)
    # every scikit-learn parameter is there with scikit-learn's default
    sk_cls = SkMLPClassifier if cls is MLPClassifier else SkMLPRegressor
    defaults = cls().get_params()
    for name, value in sk_cls().get_params().items():
        assert name in defaults
        assert defaults[name] == value, name
    assert defaults["backend"] == "cython"
    twin = clone(est)
    assert twin is not est and twin.get_params() == params
    est.set_params(backend="cython", alpha=1.0)
    assert est.backend == "cython" and est.alpha == 1.0
    assert clone(est).get_params()["backend"] == "cython"


def test_clone_of_fitted_is_unfitted():
    """clone() of a fitted estimator keeps the parameters but none of the fitted state."""
    X, y = make_data("multiclass")
    est = MLPClassifier(**SMALL, backend="numpy").fit(X, y)
    twin = clone(est)
    assert not hasattr(twin, "coefs_") and not hasattr(twin, "_flat_params")
    assert twin.get_params() == est.get_params()


INVALID = [
    ("hidden_layer_sizes", 0),
    ("hidden_layer_sizes", (10, 0)),
    ("hidden_layer_sizes", (10, -3)),
    ("activation", "softmax"),
    ("solver", "newton"),
    ("alpha", -1.0),
    ("batch_size", 0),
    ("batch_size", "big"),
    ("learning_rate", "cyclic"),
    ("learning_rate_init", 0.0),
    ("power_t", -0.5),
    ("max_iter", 0),
    ("shuffle", "yes"),
    ("random_state", "seed"),
    ("tol", -1e-3),
    ("momentum", 1.5),
    ("nesterovs_momentum", 1.5),
    ("early_stopping", "no"),
    ("validation_fraction", 1.0),
    ("beta_1", 1.0),
    ("beta_2", -0.1),
    ("epsilon", 0.0),
    ("n_iter_no_change", 0),
    ("max_fun", 0),
    ("backend", "gpu"),
    ("backend", None),
]


@pytest.mark.parametrize("cls", [MLPClassifier, MLPRegressor])
@pytest.mark.parametrize("name, value", INVALID)
def test_invalid_hyperparameter_raises(cls, name, value):
    """An invalid hyperparameter value raises a ValueError naming the parameter, at fit."""
    X, y = make_data("multiclass" if cls is MLPClassifier else "regression", n=50)
    est = cls(**{"max_iter": 2, name: value})
    with pytest.raises(ValueError, match=name):
        est.fit(X, y)


def test_invalid_regressor_loss_raises():
    """MLPRegressor(loss=...) outside {squared_error, poisson} raises InvalidParameterError."""
    X, y = make_data("regression", n=50)
    with pytest.raises(InvalidParameterError, match="loss"):
        MLPRegressor(loss="huber").fit(X, y)


def test_poisson_rejects_negative_targets():
    """loss='poisson' with a negative target raises a ValueError instead of training on NaN."""
    X, y = make_data("regression", n=50)
    with pytest.raises(ValueError, match="negative"):
        MLPRegressor(loss="poisson", max_iter=2).fit(X, y - y.max() - 1)


# ---------------------------------------------------------------------------
# a failed fit leaves a fitted model as it was


def snapshot(est, X):
    return {
        "weights": [w.copy() for w in all_weights(est)],
        "pred": est.predict(X).copy(),
        "n_iter_": est.n_iter_,
        "loss_": est.loss_,
        "loss_curve_": list(getattr(est, "loss_curve_", [])),
        "n_features_in_": est.n_features_in_,
        "t_": est.t_,
    }


def assert_unchanged(est, before, X):
    after = snapshot(est, X)
    for a, b in zip(after["weights"], before["weights"]):
        assert_array_equal(a, b)
    assert_array_equal(after["pred"], before["pred"])
    for key in ("n_iter_", "loss_", "loss_curve_", "n_features_in_", "t_"):
        assert after[key] == before[key], key
    assert_views(est)


def _nan_X(X):
    X = X.copy()
    X[3, 5] = np.nan
    return X


FAILURES = {
    "warm_start_wrong_n_features": lambda est, X, y: est.set_params(warm_start=True).fit(
        X[:, :10], y),
    "warm_start_nan": lambda est, X, y: est.set_params(warm_start=True).fit(_nan_X(X), y),
    "cold_fit_nan": lambda est, X, y: est.fit(_nan_X(X), y),
    "cold_fit_bad_sample_weight": lambda est, X, y: est.fit(X, y, sample_weight=np.ones(3)),
    "warm_start_new_class": lambda est, X, y: est.set_params(warm_start=True).fit(
        X, np.where(y == 0, 10, y)),
    "warm_start_other_hidden_sizes": lambda est, X, y: est.set_params(
        warm_start=True, hidden_layer_sizes=(5,)).fit(X, y),
    "partial_fit_wrong_n_features": lambda est, X, y: est.partial_fit(X[:, :10], y),
    "partial_fit_unseen_class": lambda est, X, y: est.partial_fit(X, np.where(y == 0, 10, y)),
    "diverging_warm_start": lambda est, X, y: est.set_params(
        warm_start=True, solver="sgd", learning_rate_init=1e12, momentum=0.0).fit(X * 1e6, y),
}


@pytest.mark.parametrize("failure", list(FAILURES))
def test_failed_fit_leaves_model_unchanged(failure, backend):
    """A fit that raises leaves a previously fitted model with identical weights, attributes and predictions."""
    X, y = make_data("multiclass")
    est = MLPClassifier(**SMALL, backend=backend).fit(X, y)
    before = snapshot(est, X)
    with pytest.raises(ValueError):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            FAILURES[failure](est, X, y)
    assert_unchanged(est, before, X)


@pytest.mark.parametrize("failure", ["wrong_n_features", "nan"])
def test_failed_regressor_fit_leaves_model_unchanged(failure, backend):
    """The failed-fit guarantee holds for MLPRegressor (lbfgs) too."""
    X, y = make_data("regression")
    est = MLPRegressor(solver="lbfgs", **SMALL, backend=backend, warm_start=True).fit(X, y)
    before = snapshot(est, X)
    bad = X[:, :10] if failure == "wrong_n_features" else _nan_X(X)
    with pytest.raises(ValueError):
        est.fit(bad, y)
    assert_unchanged(est, before, X)
    est.fit(X, y)  # and it still trains afterwards
    assert est.n_iter_ >= 1


def test_failed_warm_fit_with_early_stopping_keeps_the_best_weights(backend):
    """Early stopping updates its best weights in place during a fit: a warm-started
    fit that fails after improving on them leaves the earlier best as it was."""
    X, y = make_data("multiclass")
    est = MLPClassifier(**dict(SMALL, max_iter=3), early_stopping=True, backend=backend)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
    best = est._best_params.copy()
    score = est.best_validation_score_
    epochs = []

    def fail_on_third(model, info):
        epochs.append(model.best_validation_score_)
        if len(epochs) == 3:
            raise ValueError("stop here")

    est.set_params(warm_start=True, callbacks=fail_on_third, learning_rate_init=0.05)
    with pytest.raises(ValueError, match="stop here"):
        est.fit(X, y)
    assert max(epochs) > score   # the failed fit did find better weights
    assert_array_equal(est._best_params, best)
    assert est.best_validation_score_ == score


def test_warm_start_turning_early_stopping_on_starts_its_rule(backend):
    """A warm start that turns early stopping on (scikit-learn fails on the missing
    state) scores every epoch from scratch and ends on the weights of the best one."""
    X, y = make_data("multiclass")
    est = MLPClassifier(**dict(SMALL, max_iter=3), backend=backend).fit(X, y)
    seen = []

    def record(model, info):
        seen.append((info["validation_score"],
                     [c.copy() for c in info["coefs"] + info["intercepts"]]))

    est.set_params(warm_start=True, early_stopping=True, max_iter=6, tol=0,
                   n_iter_no_change=100, learning_rate_init=0.05, callbacks=record)
    est.fit(X, y)
    scores = [score for score, _ in seen]
    assert est.validation_scores_ == scores and len(scores) == 6
    assert len(est.validation_loss_curve_) == 6 and len(est.loss_curve_) == 3 + 6
    assert est.best_validation_score_ == max(scores) and est.best_loss_ is None
    best = seen[int(np.argmax(scores))][1]
    for got, want in zip(all_weights(est), best):
        assert_array_equal(got, want)


def test_warm_start_turning_early_stopping_off_starts_the_loss_rule(backend):
    """And turned off, the training-loss rule starts from scratch: with a tol that
    nothing can beat and n_iter_no_change=1, the first epoch is an improvement on
    best_loss_ = inf and the next two are not, so the fit stops after the third
    (worked by hand); best_loss_ is the least loss of these three."""
    X, y = make_data("multiclass")
    est = MLPClassifier(**SMALL, early_stopping=True, backend=backend).fit(X, y)
    est.set_params(warm_start=True, early_stopping=False, tol=1e9, n_iter_no_change=1,
                   max_iter=10)
    est.fit(X, y)
    assert est.n_iter_ == 3
    assert len(est.loss_curve_) == 5 + 3 and est.best_loss_ == min(est.loss_curve_[-3:])
    assert est.validation_scores_ is None and est.best_validation_score_ is None
    assert not hasattr(est, "validation_loss_curve_")
    assert "_best_params" not in est.__dict__


@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_warm_start_from_lbfgs_to_a_stochastic_solver(solver, backend):
    """L-BFGS keeps no stopping-rule state: a warm start with a stochastic solver after
    it starts one (scikit-learn fails on the missing best_loss_), from the L-BFGS
    weights, and partial_fit does the same."""
    X, y = make_data("multiclass")
    est = MLPClassifier(**SMALL, solver="lbfgs", backend=backend).fit(X, y)
    start = [w.copy() for w in all_weights(est)]
    loss_before = est.loss_
    est.set_params(warm_start=True, solver=solver, learning_rate_init=1e-4, max_iter=2)
    est.fit(X, y)
    assert len(est.loss_curve_) == 2 and est.best_loss_ == min(est.loss_curve_)
    # tiny steps from the L-BFGS weights: the loss stays near theirs
    assert abs(est.loss_curve_[0] - loss_before) < 0.05 * loss_before
    assert any(not np.array_equal(a, b) for a, b in zip(all_weights(est), start))
    again = MLPClassifier(**SMALL, solver="lbfgs", backend=backend).fit(X, y)
    again.set_params(solver=solver).partial_fit(X, y)
    assert again.loss_curve_ == [again.best_loss_]


def test_failed_warm_fit_after_switching_early_stopping_changes_nothing(backend):
    X, y = make_data("multiclass")
    est = MLPClassifier(**SMALL, backend=backend).fit(X, y)
    before = dict(est.__dict__)
    est.set_params(warm_start=True, early_stopping=True)
    with pytest.raises(ValueError, match="NaN"):
        est.fit(np.where(X > 0.5, np.nan, X), y)
    assert est.__dict__.keys() == before.keys()
    assert est.best_loss_ == before["best_loss_"] and est.validation_scores_ is None
    assert est.loss_curve_ is before["loss_curve_"]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_initial_weights_drawn_in_chunks_are_scikit_learns_draws(dtype):
    """Large layers are drawn a few rows at a time: the same values as one draw of the
    whole layer (scikit-learn's), then cast."""
    fan_in, fan_out = 70000, 3     # 65536 // 3 rows a draw: 4 draws
    ours = MLPClassifier()._init_coef(fan_in, fan_out, dtype, np.random.RandomState(5),
                                      "relu")
    rs = np.random.RandomState(5)
    bound = np.sqrt(6.0 / (fan_in + fan_out))
    coef = rs.uniform(-bound, bound, (fan_in, fan_out))
    intercept = rs.uniform(-bound, bound, fan_out)
    assert ours[0].dtype == dtype and ours[1].dtype == dtype
    assert_array_equal(ours[0], coef.astype(dtype))
    assert_array_equal(ours[1], intercept.astype(dtype))


@pytest.mark.parametrize("labels", [np.array([3, 1, 7]), np.array(["a", "b", "c"]),
                                    np.array([0.0, -1.0, 2.0])])
@pytest.mark.parametrize("weighted", [False, True])
def test_validation_accuracy_is_accuracy_score(labels, weighted):
    """Early stopping's score, worked from the labels: accuracy_score's value and type;
    multilabel and other shapes go to accuracy_score itself."""
    from sklearn.metrics import accuracy_score

    rs = np.random.RandomState(0)
    y, y_pred = labels[rs.randint(0, 3, 50)], labels[rs.randint(0, 3, 50)]
    sw = rs.uniform(0, 2, 50) if weighted else None
    got = MLPClassifier._score_predictions(y, y_pred, sw)
    want = accuracy_score(y, y_pred, sample_weight=sw)
    assert type(got) is type(want) and got == want
    Y, Y_pred = rs.randint(0, 2, (50, 3)), rs.randint(0, 2, (50, 3))
    assert MLPClassifier._score_predictions(Y, Y_pred, sw) == accuracy_score(
        Y, Y_pred, sample_weight=sw)
    with pytest.raises(ValueError):
        MLPClassifier._score_predictions(y[:10], y_pred, sw)


@pytest.mark.parametrize("shape", [(50,), (50, 1), (50, 3)])
@pytest.mark.parametrize("dtypes", [(np.float64, np.float64, np.float64),
                                    (np.float32, np.float32, None),
                                    (np.float32, np.float32, np.float64),
                                    (np.float64, np.float32, np.float32)])
def test_validation_r2_is_r2_score(shape, dtypes):
    """The regressor's early-stopping score, worked from the predictions: r2_score's
    value bit for bit (weighted or not, float32 or float64, a constant column, a
    perfect one), and r2_score itself for anything else."""
    from sklearn.metrics import r2_score

    rs = np.random.RandomState(1)
    ty, tp, tw = dtypes
    y = rs.normal(size=shape).astype(ty)
    y_pred = (y + rs.normal(scale=0.5, size=shape)).astype(tp)
    sw = None if tw is None else rs.uniform(0.1, 2, shape[0]).astype(tw)
    cases = [(y, y_pred)]
    if len(shape) == 2 and shape[1] == 3:
        constant, perfect = y.copy(), y_pred.copy()
        constant[:, 0] = 2.5                  # a constant column: scored 0 (or 1 if exact)
        perfect[:, 1] = y[:, 1]               # a perfect column: scored 1
        cases += [(constant, y_pred), (y, perfect), (constant, constant.astype(tp))]
    for a, b in cases:
        got = MLPRegressor._score_predictions(a, b, sw)
        want = r2_score(a, b, sample_weight=sw)
        assert type(got) is type(want) is float and got == want
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one = MLPRegressor._score_predictions(y[:1], y_pred[:1])   # r2_score's nan
    assert np.isnan(one)
    with pytest.raises(ValueError):
        MLPRegressor._score_predictions(y[:10], y_pred, sw)
