"""Backpropagation made visible: every intermediate of one batch, and a gradient check.

Shapes here are row-major, one row per sample: ``W`` is ``(fan_in, fan_out)``,
``z = h_prev @ W + b`` is ``(n, fan_out)`` and ``dW = h_prevᵀ @ dz``. The course notes
write the same equations for one sample as column vectors, ``z = W h_prev + b`` with
their ``W`` being our ``Wᵀ``, so their ``dW = dz · h_prevᵀ`` is the transpose of ours
(summed over the batch) and their ``dh = Wᵀ dz`` is our ``dz @ Wᵀ``.
"""

from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np

from . import _kernels, _reference
from ._backend import BACKENDS, Data


@dataclass(frozen=True)
class LayerTrace:
    """One layer l of a traced batch (n rows).

    z  : (n, fan_out)      z = h_prev @ W + b
    h  : (n, fan_out)      h = f(z); for the output layer h is p
    dz : (n, fan_out)      ∂L/∂z
    dW : (fan_in, fan_out) ∂L/∂W = h_prevᵀ @ dz  (+ alpha W / S from the L2 term)
    db : (fan_out,)        ∂L/∂b = Σ_rows dz
    dh : (n, fan_out)      ∂L/∂h; at the output, ∂L/∂p of the unclipped loss
    """

    z: np.ndarray
    h: np.ndarray
    dz: np.ndarray
    dW: np.ndarray
    db: np.ndarray
    dh: np.ndarray


class BackpropTrace(tuple):
    """One :class:`LayerTrace` per layer (hidden layers, then output), with the
    output ``p`` and the ``loss`` exactly as the solver computes them."""

    def __new__(cls, layers, p, loss):
        self = super().__new__(cls, layers)
        self.p = p
        self.loss = loss
        return self

    def __repr__(self):
        shapes = ", ".join(str(layer.z.shape) for layer in self)
        return f"BackpropTrace(loss={self.loss:.6g}, layers z: {shapes})"


def _output_dh(output, p, Y, s_over_S):
    """∂L/∂p per element, for the output activation's canonical loss."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if output == "softmax":
            dp = -Y / p
        elif output == "logistic":
            dp = (p - Y) / (p * (1 - p))
        elif output == "exp":
            dp = 1 - Y / p
        else:
            dp = p - Y
    return dp * s_over_S[:, None]


def trace(est, X, Y, sample_weight, backend):
    """Forward and backward pass over all rows of X as one batch (see BackpropTrace)."""
    params = est._params()
    net = est._net()
    lay = net.layout
    dtype = params.dtype
    n = X.shape[0]
    s = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=float)
    if backend == "numpy":
        coefs, intercepts = lay.views(params)
        rec = _reference.forward_backward(coefs, intercepts, X, Y.astype(dtype),
                                          None if sample_weight is None else sample_weight.astype(dtype),
                                          net.hidden, net.output, net.loss, net.alpha)
        zs, hs, dzs, dWs, dbs, dhs, loss = rec
    else:
        data = Data(X, Y, sample_weight, net.output == "softmax", dtype)
        values, indices, indptr, Yk, labels, sw = data.for_kernels()
        act_off, size = lay.act_offsets(n)
        bufs = [np.zeros(size, dtype=dtype) for _ in range(4)]
        grads = np.empty(lay.n_params, dtype=dtype)
        hidden, output, loss_code = net.codes()
        loss, S = _kernels.trace(lay.units, lay.coef_off, lay.inter_off, act_off, hidden,
                                 output, loss_code, net.alpha, values, indices, indptr, Yk,
                                 labels, sw, n, params, grads, *bufs)
        blocks = [
            [buf[o : o + n * w].reshape(n, w) for o, w in zip(act_off, lay.units[1:])]
            for buf in bufs
        ]
        zs, hs, dhs, dzs = blocks
        dzs = [dz / S for dz in dzs]
        dhs = [dh / S for dh in dhs]
        dWs, dbs = lay.views(grads)
    S = s.sum()
    dhs = list(dhs[:-1]) + [_output_dh(net.output, hs[-1], Y.astype(dtype), s / S).astype(dtype)]
    layers = [LayerTrace(*parts) for parts in zip(zs, hs, dzs, dWs, dbs, dhs)]
    return BackpropTrace(layers, hs[-1], float(loss))


def relative_error(analytic, numeric, floor=1e-3):
    """max_i |a_i − n_i| / max(|a_i|, |n_i|, floor · max|a|).

    Relative where a component is not tiny; components over 1000 times smaller than the
    largest are measured against ``floor · max|a|``, below which any finite
    difference is rounding noise."""
    analytic = np.asarray(analytic, dtype=float)
    numeric = np.asarray(numeric, dtype=float)
    least = floor * max(np.abs(analytic).max(), np.finfo(float).tiny)
    scale = np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)), least)
    return float(np.max(np.abs(analytic - numeric) / scale))


def gradient_check(est, X, y, sample_weight=None, *, eps=1e-3, max_params=2000,
                   random_state=0):
    """Largest relative error between the analytic gradient of a fitted estimator and
    central finite differences of its loss (see :func:`relative_error`).

    The loss is the solver's objective on (X, y) with the estimator's current weights
    (L2 term and sample weights included) and the gradient is its backend's. The
    derivative along each parameter is the fourth-order central difference
    ``(−L(θ+2ε) + 8 L(θ+ε) − 8 L(θ−ε) + L(θ−2ε)) / 12ε``. With relu, leaky_relu or elu
    layers (a jump in f′ or f″ at 0) a
    coordinate whose steps would flip some unit across its kink is retried with a 100
    and a 10⁴ times smaller ε, and left out if even that flips one. At most ``max_params``
    coordinates, drawn with ``random_state``, are checked. Run it in float64: float32
    rounding swamps any finite difference.
    """
    if isinstance(eps, bool) or not isinstance(eps, Real) or not 0 < eps < np.inf:
        raise ValueError(f"eps must be a positive finite number, got {eps!r}")
    if isinstance(max_params, bool) or not isinstance(max_params, Integral) \
            or max_params < 1:
        raise ValueError(f"max_params must be a positive integer, got {max_params!r}")
    X, Y, sample_weight = est._trace_inputs(X, y, sample_weight)
    params = est._params().copy()
    net = est._net()
    data = Data(X, Y, sample_weight, net.output == "softmax", params.dtype)
    backend = BACKENDS[est.backend](net, data, net.chunk_rows(X.shape[0]))
    grads = np.empty_like(params)
    backend.loss_grad(params, grads)
    analytic = grads.copy()
    idx = np.arange(params.size)
    if params.size > max_params:
        rng = np.random.RandomState(random_state)
        idx = np.sort(rng.choice(params.size, max_params, replace=False))
    scratch = np.empty_like(params)

    def loss_at(i, value):
        params[i] = value
        return backend.loss_grad(params, scratch)

    def relu_pattern():
        coefs, intercepts = net.layout.views(params)
        hs = _reference.feed_forward(coefs, intercepts, X, net.hidden, net.output)[1:-1]
        return [h > 0 for h in hs]

    def crosses_kink(i, saved, step):
        # a relu's derivative jumps at 0: a difference taken across the jump is not one
        for value in (saved - 2 * step, saved + 2 * step):
            params[i] = value
            if any((a != b).any() for a, b in zip(relu_pattern(), base_pattern)):
                params[i] = saved
                return True
        params[i] = saved
        return False

    kinked = any(name in ("relu", "leaky_relu", "elu") for name in net.hidden)
    base_pattern = relu_pattern() if kinked else None
    checked = []
    numeric = []
    for i in idx:
        saved = params[i]
        for step in (eps, eps * 1e-2, eps * 1e-4):
            if base_pattern is None or not crosses_kink(i, saved, step):
                f = [loss_at(i, saved + k * step) for k in (-2, -1, 1, 2)]
                params[i] = saved
                numeric.append((f[0] - 8 * f[1] + 8 * f[2] - f[3]) / (12 * step))
                checked.append(i)
                break
    # coordinates whose every step straddles a kink have no derivative to compare
    return relative_error(analytic[checked], numeric)
