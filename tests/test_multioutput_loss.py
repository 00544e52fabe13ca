"""The documented deviation for multi-output squared error.

scikit-learn reports ``0.5 · mean over outputs and samples`` of the squared error while its
gradient is that of the sum over outputs; pybackprop reports ``0.5 · Σ_outputs``, mean over
samples, so its loss and gradient agree. Everything else (the weights sgd/adam reach) is
unchanged.
"""

import warnings
from itertools import pairwise

import numpy as np
import pytest
from numpy.testing import assert_allclose
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPRegressor as SkMLPRegressor

from _helpers import make_data, numeric_gradient
from pybackprop import MLPRegressor
from pybackprop._backend import BACKENDS

N_OUTPUTS = 3


def small_problem(n=40):
    """40 rows, 8 features, 3 outputs."""
    X, Y = make_data("multioutput", n=300)
    X, Y = X[::7][:n, 20:28], Y[::7][:n]
    assert Y.shape == (n, N_OUTPUTS)
    return X, Y


def fitted(cls, X, Y, **params):
    p = dict(hidden_layer_sizes=(6,), activation="tanh", random_state=0, alpha=0.0)
    p.update(params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return cls(**p).fit(X, Y)


def rel_err(a, b):
    return np.linalg.norm(a - b) / max(np.linalg.norm(a), np.linalg.norm(b))


def ours_loss_grad(est, X, Y):
    """pybackprop's full-batch objective, through its backend objects (as _fit_lbfgs)."""
    net = est._net()
    backend = BACKENDS[est.backend](net, est._make_data(X, Y, None), X.shape[0])

    def f(params):
        grads = np.empty_like(params)
        loss = backend.loss_grad(np.array(params), grads)
        return loss, grads

    return f


def sklearn_loss_grad(sk, X, Y):
    """scikit-learn's own L-BFGS objective ``_loss_grad_lbfgs`` at a packed parameter vector."""
    units = [X.shape[1], *sk.hidden_layer_sizes, Y.shape[1]]
    activations = [X] + [None] * (len(units) - 1)
    deltas = [None] * (len(units) - 1)
    coef_grads = [np.empty((a, b)) for a, b in pairwise(units)]
    intercept_grads = [np.empty(b) for b in units[1:]]

    def f(packed):
        loss, grad = sk._loss_grad_lbfgs(np.array(packed), X, Y, None, activations, deltas,
                                         coef_grads, intercept_grads)
        return loss, np.array(grad)

    return f


def hand_loss(coefs, intercepts, X, Y, alpha):
    """0.5 · Σ_outputs (y − p)², averaged over samples, + 0.5 · alpha · ‖W‖² / n (tanh net)."""
    h = X
    for i, (W, b) in enumerate(zip(coefs, intercepts)):
        h = h @ W + b
        if i < len(coefs) - 1:
            h = np.tanh(h)
    n = X.shape[0]
    return (0.5 * ((Y - h) ** 2).sum() + 0.5 * alpha * sum((W ** 2).sum() for W in coefs)) / n


@pytest.mark.parametrize("alpha", [0.0, 0.3])
def test_our_loss_is_summed_over_outputs_and_matches_its_gradient(alpha, backend):
    """(a) pybackprop's 3-output loss is 0.5·Σ_outputs, and its gradient is that loss's (finite differences)."""
    X, Y = small_problem()
    est = fitted(MLPRegressor, X, Y, solver="adam", max_iter=5, learning_rate_init=0.05,
                 alpha=alpha, backend=backend)
    f = ours_loss_grad(est, X, Y)
    params = est._flat_params.copy()
    loss, grad = f(params)
    assert_allclose(loss, hand_loss(est.coefs_, est.intercepts_, X, Y, alpha), rtol=1e-12)
    fd = numeric_gradient(lambda p: f(p)[0], params)
    assert rel_err(grad, fd) < 1e-6


def test_lbfgs_reports_the_summed_loss(backend):
    """(a) After an L-BFGS fit on 3 outputs, ``loss_`` is the summed loss of the returned weights."""
    X, Y = small_problem()
    est = fitted(MLPRegressor, X, Y, solver="lbfgs", max_iter=30, alpha=0.1, backend=backend)
    assert_allclose(est.loss_, hand_loss(est.coefs_, est.intercepts_, X, Y, 0.1), rtol=1e-10)


def test_sklearn_loss_and_gradient_disagree():
    """(b) scikit-learn's L-BFGS gradient is n_outputs × the gradient of the loss it reports."""
    X, Y = small_problem()
    sk = fitted(SkMLPRegressor, X, Y, solver="lbfgs", max_iter=2)  # sets its packing
    packed = np.hstack([a.ravel() for a in sk.coefs_ + sk.intercepts_])
    f = sklearn_loss_grad(sk, X, Y)
    loss, grad = f(packed)
    fd = numeric_gradient(lambda p: f(p)[0], packed)
    assert rel_err(grad, fd) > 0.5  # inconsistent ...
    assert rel_err(grad / N_OUTPUTS, fd) < 1e-6  # ... by exactly the factor n_outputs
    # its reported loss is the mean over outputs (worked by hand)
    sk._unpack(packed)
    assert_allclose(loss, hand_loss(sk.coefs_, sk.intercepts_, X, Y, 0.0) / N_OUTPUTS,
                    rtol=1e-12)


def test_same_gradient_as_sklearn_and_n_outputs_times_its_loss(backend):
    """(b) At the same weights our gradient equals scikit-learn's and our loss is 3× its loss."""
    X, Y = small_problem()
    sk = fitted(SkMLPRegressor, X, Y, solver="lbfgs", max_iter=2)
    ours = fitted(MLPRegressor, X, Y, solver="lbfgs", max_iter=2, backend=backend)
    packed = np.hstack([a.ravel() for a in sk.coefs_ + sk.intercepts_])
    sk_loss, sk_grad = sklearn_loss_grad(sk, X, Y)(packed)
    our_loss, our_grad = ours_loss_grad(ours, X, Y)(packed)  # same packing order
    assert_allclose(our_grad, sk_grad, rtol=1e-10, atol=1e-14)
    assert_allclose(our_loss, N_OUTPUTS * sk_loss, rtol=1e-12)


@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_stochastic_weights_equal_sklearn_and_loss_is_scaled(solver, backend):
    """(c) With adam/sgd the 3-output weights equal scikit-learn's; loss_curve_ is 3× scikit-learn's."""
    X, Y = make_data("multioutput", n=300)
    params = dict(solver=solver, max_iter=8, learning_rate_init=0.01,
                  hidden_layer_sizes=(12,), activation="relu")
    sk = fitted(SkMLPRegressor, X, Y, **params)
    ours = fitted(MLPRegressor, X, Y, backend=backend, **params)
    assert ours.n_iter_ == sk.n_iter_ == 8
    assert_allclose(ours.loss_curve_, N_OUTPUTS * np.asarray(sk.loss_curve_), rtol=1e-6)
    for a, b in zip(ours.coefs_ + ours.intercepts_, sk.coefs_ + sk.intercepts_):
        assert_allclose(a, b, rtol=1e-6, atol=1e-9)


def test_stochastic_weights_equal_sklearn_with_l2(backend):
    """(c) With alpha > 0 the weights still equal scikit-learn's (the L2 term is not rescaled)."""
    X, Y = make_data("multioutput", n=300)
    params = dict(solver="adam", max_iter=8, learning_rate_init=0.01, alpha=0.5)
    sk = fitted(SkMLPRegressor, X, Y, **params)
    ours = fitted(MLPRegressor, X, Y, backend=backend, **params)
    for a, b in zip(ours.coefs_ + ours.intercepts_, sk.coefs_ + sk.intercepts_):
        assert_allclose(a, b, rtol=1e-6, atol=1e-9)
    assert_allclose(ours.predict(X), sk.predict(X), rtol=1e-6, atol=1e-9)
