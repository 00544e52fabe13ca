"""Backpropagation made visible: ``backprop_trace`` and ``gradient_check``.

Every intermediate of the trace (z, h, dz, dW, db, dh per layer, p, loss) is checked
against an independent chain-rule computation written here, for every hidden
activation × every output/loss pair, with and without sample weights and L2, dense and
CSR, on both backends; the trace must leave the model alone, and its dW / db must be the
step the stochastic solvers take. ``gradient_check`` must pass in float64 everywhere.
"""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_allclose, assert_array_equal

from pybackprop import BackpropTrace, LayerTrace, MLPClassifier, MLPRegressor, gradient_check

HIDDEN = ["identity", "logistic", "tanh", "relu"]
# task: (estimator, kwargs, output activation)
TASKS = {
    "multiclass": (MLPClassifier, {}, "softmax"),
    "binary": (MLPClassifier, {}, "logistic"),
    "multilabel": (MLPClassifier, {}, "logistic"),
    "regression": (MLPRegressor, {}, "identity"),
    "regression_2out": (MLPRegressor, {}, "identity"),
    "poisson": (MLPRegressor, {"loss": "poisson"}, "exp"),
}
N, D, WIDTHS = 30, 4, (5, 4)
RTOL, ATOL = 1e-9, 1e-13


def task_data(task, n=N, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.standard_normal((n, D))
    if task == "multiclass":
        y = np.arange(n) % 3
        rng.shuffle(y)
    elif task == "binary":
        y = np.where(rng.rand(n) < 0.5, "no", "yes")
    elif task == "multilabel":
        y = (rng.rand(n, 3) < 0.5).astype(int)
        y[:2] = [[0, 0, 0], [1, 1, 1]]
    elif task == "regression":
        y = X @ rng.standard_normal(D) + 0.1 * rng.standard_normal(n)
    elif task == "regression_2out":
        y = X @ rng.standard_normal((D, 2))
    else:  # poisson: counts, zeros included
        y = rng.poisson(1.5, n).astype(float)
        y[0] = 0.0
    return X, y


def target_matrix(est, task, y):
    """Y as the loss sees it, built by hand (not through the estimator's binarizer)."""
    if task == "multiclass":
        return (y[:, None] == est.classes_[None, :]).astype(float)
    if task == "binary":
        return (y == est.classes_[1]).astype(float)[:, None]
    return np.asarray(y, dtype=float).reshape(len(y), -1)


def random_weights(est, rng, scale):
    """Overwrite every weight and bias in place (the views into the flat buffer)."""
    for W, b in zip(est.coefs_, est.intercepts_):
        W[...] = rng.normal(0, scale, W.shape)
        b[...] = rng.normal(0, scale, b.shape)


def fitted(task, activation, backend="cython", alpha=0.0, seed=1, **kw):
    """A fitted estimator for the task, with random hand-set weights."""
    Est, extra, _ = TASKS[task]
    X, y = task_data(task)
    est = Est(hidden_layer_sizes=WIDTHS, activation=activation, solver="lbfgs", max_iter=1,
              alpha=alpha, random_state=0, backend=backend, **extra, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, y)
    random_weights(est, np.random.RandomState(seed), 0.4 if task == "poisson" else 0.8)
    return est, X, y


# ---- the independent computation ---------------------------------------------------

F = {
    "identity": lambda z: z,
    "logistic": lambda z: 1 / (1 + np.exp(-z)),
    "tanh": np.tanh,
    "relu": lambda z: np.maximum(z, 0),
}
F_PRIME = {  # f'(z), from z
    "identity": lambda z: np.ones_like(z),
    "logistic": lambda z: F["logistic"](z) * (1 - F["logistic"](z)),
    "tanh": lambda z: 1 / np.cosh(z) ** 2,
    "relu": lambda z: (z > 0).astype(float),
}


def by_hand(Ws, bs, X, Y, s, hidden, output, alpha):
    """Forward pass, loss, and the chain rule from ∂L/∂p, without the p − y shortcut:
    dz_out = J_out(z)ᵀ ∂L/∂p (softmax's full Jacobian), then dh = dz Wᵀ, dz = dh ⊗ f′(z),
    dW = h_prevᵀ dz + αW/S, db = Σ_rows dz."""
    X = X.toarray() if sp.issparse(X) else X
    n = X.shape[0]
    s = np.ones(n) if s is None else np.asarray(s, float)
    S = s.sum()
    zs, hs, h = [], [], X
    for l, (W, b) in enumerate(zip(Ws, bs)):
        z = h @ W + b
        if l < len(Ws) - 1:
            h = F[hidden](z)
        elif output == "softmax":
            e = np.exp(z - z.max(axis=1, keepdims=True))
            h = e / e.sum(axis=1, keepdims=True)
        elif output == "logistic":
            h = 1 / (1 + np.exp(-z))
        elif output == "exp":
            h = np.exp(z)
        else:
            h = z
        zs.append(z)
        hs.append(h)
    p = hs[-1]
    if output == "softmax":  # -yᵀ log p
        row_loss = -(Y * np.log(p)).sum(axis=1)
        dL_dp = -Y / p
    elif output == "logistic":  # -(y log p + (1-y) log(1-p)), summed over outputs
        row_loss = -(Y * np.log(p) + (1 - Y) * np.log(1 - p)).sum(axis=1)
        dL_dp = -Y / p + (1 - Y) / (1 - p)
    elif output == "exp":  # half Poisson deviance y log(y/p) - y + p
        ylogy = np.where(Y > 0, Y * np.log(np.where(Y > 0, Y, 1) / p), 0.0)
        row_loss = (ylogy - Y + p).sum(axis=1)
        dL_dp = 1 - Y / p
    else:  # ½ (p - y)², summed over outputs
        row_loss = 0.5 * ((p - Y) ** 2).sum(axis=1)
        dL_dp = p - Y
    loss = s @ row_loss / S + 0.5 * alpha * sum((W**2).sum() for W in Ws) / S
    dh_out = dL_dp * (s / S)[:, None]
    if output == "softmax":  # dz_k = Σ_j dh_j p_j (δ_jk - p_k)
        dz = p * dh_out - p * (p * dh_out).sum(axis=1, keepdims=True)
    elif output == "logistic":
        dz = dh_out * p * (1 - p)
    elif output == "exp":
        dz = dh_out * p
    else:
        dz = dh_out
    L = len(Ws)
    dzs, dhs, dWs, dbs = [None] * L, [None] * L, [None] * L, [None] * L
    dzs[-1], dhs[-1] = dz, dh_out
    for l in range(L - 1, -1, -1):
        h_prev = X if l == 0 else hs[l - 1]
        dWs[l] = h_prev.T @ dzs[l] + alpha * Ws[l] / S
        dbs[l] = dzs[l].sum(axis=0)
        if l > 0:
            dhs[l - 1] = dzs[l] @ Ws[l].T
            dzs[l - 1] = dhs[l - 1] * F_PRIME[hidden](zs[l - 1])
    return dict(z=zs, h=hs, dz=dzs, dW=dWs, db=dbs, dh=dhs, p=p, loss=loss)


def assert_trace_matches(trace, want):
    assert isinstance(trace, BackpropTrace) and len(trace) == len(want["z"])
    assert all(isinstance(layer, LayerTrace) for layer in trace)
    for l, layer in enumerate(trace):
        for name in ("z", "h", "dz", "dW", "db", "dh"):
            got = getattr(layer, name)
            assert got.shape == want[name][l].shape, (l, name)
            assert_allclose(got, want[name][l], rtol=RTOL, atol=ATOL, err_msg=f"layer {l} {name}")
    assert_allclose(trace.p, want["p"], rtol=RTOL, atol=ATOL)
    assert trace.p is trace[-1].h or np.array_equal(trace.p, trace[-1].h)
    assert_allclose(trace.loss, want["loss"], rtol=RTOL)


# ---- 1. the trace is the chain rule ------------------------------------------------

@pytest.mark.parametrize("task", list(TASKS))
@pytest.mark.parametrize("activation", HIDDEN)
def test_trace_matches_hand_computation(task, activation, backend):
    """z, h, dz, dW, db, dh, p and loss equal the hand-written chain rule, with and
    without sample weights and alpha, for dense and CSR X."""
    est, X, y = fitted(task, activation, backend=backend)
    output = TASKS[task][2]
    assert est.out_activation_ == output
    Y = target_matrix(est, task, y)
    sw = np.random.RandomState(2).uniform(0.2, 3.0, len(y))
    for alpha in (0.0, 0.3):
        est.set_params(alpha=alpha)
        for weights in (None, sw):
            want = by_hand(est.coefs_, est.intercepts_, X, Y, weights, activation, output, alpha)
            for data in (X, sp.csr_matrix(X)):
                trace = est.backprop_trace(data, y, sample_weight=weights)
                assert_trace_matches(trace, want)
                # the canonical pairs: dz at the output is (p - y) · s / S
                s = np.ones(len(y)) if weights is None else weights
                assert_allclose(trace[-1].dz, (trace.p - Y) * (s / s.sum())[:, None],
                                rtol=RTOL, atol=ATOL)


def test_trace_single_hidden_layer_and_float32():
    """One hidden layer works too; a float32 model gives a float32 trace close to the
    float64 computation."""
    X, y = task_data("multiclass")
    est = MLPClassifier(hidden_layer_sizes=(3,), activation="tanh", max_iter=2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X.astype(np.float32), y)
    assert est.coefs_[0].dtype == np.float32
    Y = target_matrix(est, "multiclass", y)
    want = by_hand([W.astype(float) for W in est.coefs_],
                   [b.astype(float) for b in est.intercepts_], X, Y, None, "tanh", "softmax",
                   est.alpha)
    for backend in ("cython", "numpy"):
        est.set_params(backend=backend)
        trace = est.backprop_trace(X.astype(np.float32), y)
        assert len(trace) == 2 and trace[0].dW.dtype == np.float32
        for l in range(2):
            for name in ("z", "h", "dz", "dW", "db", "dh"):
                assert_allclose(getattr(trace[l], name), want[name][l], rtol=2e-4, atol=2e-6)
        assert_allclose(trace.loss, want["loss"], rtol=1e-5)


# ---- 2. the trace changes nothing --------------------------------------------------

@pytest.mark.parametrize("task", ["multiclass", "binary", "regression_2out", "poisson"])
def test_trace_does_not_change_the_model(task, backend):
    est, X, y = fitted(task, "tanh", backend=backend, alpha=0.1)
    coefs = [W.copy() for W in est.coefs_]
    intercepts = [b.copy() for b in est.intercepts_]
    ids = [id(W) for W in est.coefs_]
    before = est.predict_proba(X) if task in ("multiclass", "binary") else est.predict(X)
    sw = np.linspace(0.5, 2, len(y))
    for data, weights in ((X, None), (sp.csr_matrix(X), sw)):
        trace = est.backprop_trace(data, y, sample_weight=weights)
        # scribbling on the trace does not reach the model either
        for layer in trace:
            for name in ("z", "h", "dz", "dW", "db", "dh"):
                getattr(layer, name)[...] = 7.0
    for a, b in zip(est.coefs_, coefs):
        assert_array_equal(a, b)
    for a, b in zip(est.intercepts_, intercepts):
        assert_array_equal(a, b)
    assert [id(W) for W in est.coefs_] == ids
    after = est.predict_proba(X) if task in ("multiclass", "binary") else est.predict(X)
    assert_array_equal(before, after)


# ---- 3. dW, db are the solver's gradient -------------------------------------------

@pytest.mark.parametrize("task", list(TASKS))
def test_backends_trace_the_same_gradient(task):
    """The Cython kernels and the NumPy reference produce the same trace."""
    est, X, y = fitted(task, "logistic", alpha=0.2)
    sw = np.random.RandomState(3).uniform(0.2, 3.0, len(y))
    a = est.backprop_trace(sp.csr_matrix(X), y, sample_weight=sw)
    est.set_params(backend="numpy")
    b = est.backprop_trace(X, y, sample_weight=sw)
    for la, lb in zip(a, b):
        for name in ("z", "h", "dz", "dW", "db", "dh"):
            assert_allclose(getattr(la, name), getattr(lb, name), rtol=1e-10, atol=ATOL)
    assert_allclose(a.loss, b.loss, rtol=1e-12)


def sgd_estimator(task, activation, backend, lr, alpha, **kw):
    Est, extra, _ = TASKS[task]
    X, y = task_data(task)
    params = dict(hidden_layer_sizes=WIDTHS, activation=activation, solver="sgd",
                  learning_rate_init=lr, batch_size=len(y), shuffle=False, max_iter=1,
                  alpha=alpha, random_state=0, backend=backend, **extra)
    params.update(kw)
    est = Est(**params)
    if Est is MLPClassifier:
        # multilabel: the classes are the label columns, as unique_labels sees them
        classes = np.arange(y.shape[1]) if task == "multilabel" else np.unique(y)
        est.partial_fit(X, y, classes=classes)
    else:
        est.partial_fit(X, y)
    random_weights(est, np.random.RandomState(5), 0.4 if task == "poisson" else 0.8)
    return est, X, y


@pytest.mark.parametrize("task,activation", list(zip(TASKS, HIDDEN + HIDDEN[:2])))
def test_one_sgd_step_is_minus_lr_times_the_traced_gradient(task, activation, backend):
    """partial_fit with plain SGD over one full batch from known weights moves them by
    exactly −lr · (dW, db) of the trace, and reports the trace's loss."""
    lr = 0.05
    est, X, y = sgd_estimator(task, activation, backend, lr, alpha=0.3, momentum=0)
    sw = np.random.RandomState(4).uniform(0.2, 3.0, len(y))
    for data, weights in ((X, sw), (sp.csr_matrix(X), None)):
        W0 = [W.copy() for W in est.coefs_]
        b0 = [b.copy() for b in est.intercepts_]
        trace = est.backprop_trace(data, y, sample_weight=weights)
        est.partial_fit(data, y, sample_weight=weights)
        for l, layer in enumerate(trace):
            assert_allclose(est.coefs_[l], W0[l] - lr * layer.dW, rtol=1e-12, atol=1e-14)
            assert_allclose(est.intercepts_[l], b0[l] - lr * layer.db, rtol=1e-12, atol=1e-14)
        assert_allclose(est.loss_, trace.loss, rtol=1e-12)


@pytest.mark.parametrize("solver", ["momentum", "nesterov", "adam"])
def test_optimizer_updates_follow_the_documented_equations(solver, backend):
    """Two full-batch steps of SGD with momentum (v := μv − ηg; θ += v), Nesterov
    (θ += μv − ηg with the new v) and Adam (bias-corrected η_t) from traced gradients."""
    lr, mu, b1, b2, eps = 0.05, 0.9, 0.9, 0.999, 1e-8
    if solver == "adam":
        kw = dict(solver="adam", beta_1=b1, beta_2=b2, epsilon=eps)
    else:
        kw = dict(momentum=mu, nesterovs_momentum=solver == "nesterov")
    est, X, y = sgd_estimator("regression_2out", "tanh", backend, lr, alpha=0.2,
                              warm_start=True, **kw)
    theta = [a.copy() for a in est.coefs_ + est.intercepts_]
    v = [np.zeros_like(a) for a in theta]
    m = [np.zeros_like(a) for a in theta]
    for t in (1, 2):
        trace = est.backprop_trace(X, y)
        g = [layer.dW for layer in trace] + [layer.db for layer in trace]
        for i in range(len(theta)):
            if solver == "adam":
                m[i] = b1 * m[i] + (1 - b1) * g[i]
                v[i] = b2 * v[i] + (1 - b2) * g[i] ** 2
                lr_t = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
                theta[i] = theta[i] - lr_t * m[i] / (np.sqrt(v[i]) + eps)
            else:
                v[i] = mu * v[i] - lr * g[i]
                theta[i] = theta[i] + (mu * v[i] - lr * g[i] if solver == "nesterov" else v[i])
        if t == 1:  # fit with warm_start: the known weights, a fresh optimizer state
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                est.fit(X, y)
        else:  # partial_fit: the optimizer state carries over
            est.partial_fit(X, y)
        for got, want in zip(est.coefs_ + est.intercepts_, theta):
            assert_allclose(got, want, rtol=1e-10, atol=1e-13)


# ---- 4. gradient check ---------------------------------------------------------------

@pytest.mark.parametrize("task", list(TASKS))
@pytest.mark.parametrize("activation", HIDDEN)
def test_gradient_check(task, activation, backend):
    """Analytic gradient vs 4th-order central differences, float64: < 1e-6 with and
    without sample weights and alpha (dense, and CSR once)."""
    est, X, y = fitted(task, activation, backend=backend)
    X, y = X[:30], y[:30]
    sw = np.random.RandomState(6).uniform(0.2, 3.0, len(y))
    for alpha, weights, data in ((0.0, None, X), (0.5, sw, X), (0.5, None, sp.csr_matrix(X))):
        est.set_params(alpha=alpha)
        err = gradient_check(est, data, y, sample_weight=weights)
        assert err < 1e-6, (alpha, weights is not None, err)


def test_gradient_check_detects_a_wrong_gradient(monkeypatch):
    """The check is not vacuous: a gradient off by a tenth in one layer fails it."""
    from pybackprop import _reference

    est, X, y = fitted("regression", "tanh", backend="numpy")
    real = _reference.backprop

    def off(*args, **kwargs):
        L, dW, db = real(*args, **kwargs)
        return L, [dW[0] * 1.1] + dW[1:], db

    monkeypatch.setattr(_reference, "backprop", off)
    assert gradient_check(est, X, y) > 1e-3


def test_trace_includes_class_weight():
    """With class_weight, the traced gradient is still the step the solver takes."""
    lr = 0.1
    X, y = task_data("multiclass")
    est = MLPClassifier(hidden_layer_sizes=(3,), solver="sgd", momentum=0, learning_rate_init=lr,
                        batch_size=len(y), shuffle=False, class_weight={0: 5.0}, alpha=0,
                        random_state=0)
    est.partial_fit(X, y, classes=[0, 1, 2])
    W0 = est.coefs_[-1].copy()
    trace = est.backprop_trace(X, y)
    est.partial_fit(X, y)
    assert_allclose(est.coefs_[-1], W0 - lr * trace[-1].dW, rtol=1e-10)


@pytest.mark.parametrize("kwargs, message", [
    (dict(eps=0), "eps must be a positive finite number, got 0"),
    (dict(eps=-1e-3), "eps must be a positive finite number"),
    (dict(eps=np.inf), "eps must be a positive finite number"),
    (dict(eps="1e-3"), "eps must be a positive finite number"),
    (dict(max_params=0), "max_params must be a positive integer, got 0"),
    (dict(max_params=-3), "max_params must be a positive integer"),
    (dict(max_params=2.5), "max_params must be a positive integer"),
])
def test_gradient_check_rejects_bad_eps_and_max_params(kwargs, message):
    """eps = 0 divided by zero and max_params = 0 failed inside NumPy; both now get a
    ValueError that names the argument."""
    rng = np.random.RandomState(0)
    X = rng.randn(40, 3)
    y = (X[:, 0] > 0).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = MLPClassifier(hidden_layer_sizes=(4,), max_iter=3, random_state=0).fit(X, y)
    with pytest.raises(ValueError, match=message):
        gradient_check(est, X, y, **kwargs)
    assert gradient_check(est, X, y, max_params=5) < 1e-6   # and the defaults still work
