"""Backpropagation in plain NumPy, step by step as the course notes write it.

This is the ``backend="numpy"`` of the estimators, the oracle of the tests and the
"pure NumPy" column of the benchmarks. It does the same arithmetic as the Cython
kernels, one readable line per equation. The notes use column vectors
(``z = W h + b``, ``dW = dz · hᵀ``); here one row is one sample, so every equation is
transposed: ``z = h @ W + b`` and ``dW = hᵀ @ dz`` with ``W`` of shape (fan_in, fan_out).

    1. h⁰ = x
    2. for l in 1..L:  zˡ = hˡ⁻¹ Wˡ + bˡ,  hˡ = f(zˡ)        (output: softmax / σ / id / exp)
    3. loss = mean over the batch of the per-sample loss (+ L2 term)
    4. dzᴸ = p - y                                          (canonical link)
    5. for l in L..1:  dWˡ = hˡ⁻¹ᵀ dzˡ,  dbˡ = Σ dzˡ,
                       dhˡ⁻¹ = dzˡ Wˡᵀ,  dzˡ⁻¹ = dhˡ⁻¹ ⊗ f'(zˡ⁻¹)
    6. average over the batch, add α W, update.
"""

import numpy as np
from scipy import special

LEAKY_SLOPE = 0.01


def _logistic(z):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-z))


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _exp(z):
    with np.errstate(over="ignore"):
        return np.exp(z)


def _elu(z):
    with np.errstate(over="ignore"):
        return np.where(z < 0, np.expm1(np.minimum(z, 0)), z)


def _gelu(z):
    return 0.5 * z * (1 + special.erf(z / np.sqrt(2)))


def _softplus(z):
    return np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))


ACTIVATIONS = {
    "identity": lambda z: z,
    "logistic": _logistic,
    "tanh": np.tanh,
    "relu": lambda z: np.maximum(z, 0),
    "leaky_relu": lambda z: np.where(z < 0, LEAKY_SLOPE * z, z),
    "elu": _elu,
    "gelu": _gelu,
    "softplus": _softplus,
    "silu": lambda z: z * _logistic(z),
    "exp": _exp,
    "softmax": _softmax,
}

# f'(z), written through h = f(z) where that is possible (no copy of z is needed on
# the way back); GELU and SiLU read z
DERIVATIVES = {
    "identity": lambda h, z: np.ones_like(h),
    "logistic": lambda h, z: h * (1 - h),
    "tanh": lambda h, z: 1 - h * h,
    "relu": lambda h, z: (h > 0).astype(h.dtype),
    "leaky_relu": lambda h, z: np.where(h > 0, 1, LEAKY_SLOPE).astype(h.dtype),
    "elu": lambda h, z: np.where(h > 0, 1, h + 1).astype(h.dtype),
    "softplus": lambda h, z: -np.expm1(-h),
    "gelu": lambda h, z: 0.5 * (1 + special.erf(z / np.sqrt(2)))
    + z * np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi),
    "silu": lambda h, z: _logistic(z) * (1 + z * (1 - _logistic(z))),
}


def splitmix64_uniform(seed, count, start=0):
    """Draws start+1 .. start+count of splitmix64 from ``seed``, in [0, 1): the stream
    the kernels' dropout uses, computed here all at once."""
    with np.errstate(over="ignore"):
        k = np.arange(start + 1, start + count + 1, dtype=np.uint64)
        z = np.uint64(seed) + k * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def sample_losses(p, y, loss):
    """Per-sample loss, summed over outputs; probabilities clipped to [eps, 1 - eps]."""
    if loss == "squared_error":
        return 0.5 * ((y - p) ** 2).sum(axis=1)
    if loss == "poisson":
        with np.errstate(divide="ignore", invalid="ignore"):
            ylogy = np.where(y > 0, y * np.log(np.where(y > 0, y, 1) / p), 0.0)
        return (ylogy - y + p).sum(axis=1)
    eps = np.finfo(p.dtype).eps
    p = np.clip(p, eps, 1 - eps)
    if loss == "log_loss":  # softmax, one-hot y:  -yᵀ log p
        return -(y * np.log(p)).sum(axis=1)
    # binary_log_loss:  -(y log p + (1 - y) log(1 - p))
    return -(np.where(y > 0, y * np.log(p), 0) + np.where(y < 1, (1 - y) * np.log(1 - p), 0)).sum(axis=1)


def _layer_activations(hidden, output, n_layers):
    hidden = [hidden] * (n_layers - 1) if isinstance(hidden, str) else list(hidden)
    return hidden + [output]


def feed_forward(coefs, intercepts, x, hidden, output):
    """[h⁰, h¹, …, hᴸ = p] for the rows of x."""
    h = [x]
    for W, b, f in zip(coefs, intercepts, _layer_activations(hidden, output, len(coefs))):
        h.append(np.asarray(ACTIVATIONS[f](h[-1] @ W + b)))
    return h


def forward_backward(coefs, intercepts, x, y, sample_weight, hidden, output, loss, alpha,
                     masks=None):
    """Every intermediate of one batch: per layer z, h, dz, dW, db, dh, and the loss.

    The loss is the weighted mean of the per-sample losses plus ``½ α ‖W‖² / S``
    (S = number of samples, or the sum of their weights); the gradients are its own.
    ``masks`` (training with dropout) holds, per hidden layer, 0 for a dropped unit
    and 1/keep for a kept one.
    """
    activations = _layer_activations(hidden, output, len(coefs))
    # feed forward:  zˡ = hˡ⁻¹ Wˡ + bˡ,  hˡ = f(zˡ)  (⊗ mask with dropout)
    zs, hs = [], []
    h_prev = x
    for l, (W, b, f) in enumerate(zip(coefs, intercepts, activations)):
        z = np.asarray(h_prev @ W + b)
        h = np.asarray(ACTIVATIONS[f](z))
        if masks is not None and l < len(coefs) - 1 and masks[l] is not None:
            h = h * masks[l]
        zs.append(z)
        hs.append(h)
        h_prev = h
    p = hs[-1]

    # loss: weighted average over the batch, then the L2 term
    s = np.ones(p.shape[0], dtype=p.dtype) if sample_weight is None else sample_weight
    S = s.sum()
    L = np.dot(s, sample_losses(p, y, loss)) / S
    L += 0.5 * alpha * sum(np.dot(W.ravel(), W.ravel()) for W in coefs) / S

    # backpropagation; dz is kept unscaled (· S) until the division of step 6
    n_layers = len(coefs)
    dz = [None] * n_layers
    dh = [None] * n_layers
    dW = [None] * n_layers
    db = [None] * n_layers
    dz[-1] = (p - y) * s[:, None]  # dzᴸ = p - y, weighted
    for l in range(n_layers - 1, -1, -1):
        h_prev = x if l == 0 else hs[l - 1]
        dW[l] = (np.asarray(h_prev.T @ dz[l]) + alpha * coefs[l]) / S  # dWˡ = hˡ⁻¹ᵀ dzˡ
        db[l] = dz[l].sum(axis=0) / S  # dbˡ = Σ dzˡ
        if l > 0:
            dh[l - 1] = dz[l] @ coefs[l].T  # dhˡ⁻¹ = dzˡ Wˡᵀ
            fprime = DERIVATIVES[activations[l - 1]](ACTIVATIONS[activations[l - 1]](zs[l - 1])
                                                      if masks is not None else hs[l - 1],
                                                      zs[l - 1])
            if masks is not None and masks[l - 1] is not None:
                fprime = fprime * masks[l - 1]
            dz[l - 1] = dh[l - 1] * fprime  # dzˡ⁻¹ = dhˡ⁻¹ ⊗ f'(zˡ⁻¹)
    dz = [d / S for d in dz]
    dh = [None if d is None else d / S for d in dh]
    return zs, hs, dz, dW, db, dh, float(L)


def backprop(coefs, intercepts, x, y, sample_weight, hidden, output, loss, alpha,
             masks=None):
    """Loss and gradients (dW, db per layer) of a batch, averaged over its samples."""
    _, _, _, dW, db, _, L = forward_backward(coefs, intercepts, x, y, sample_weight,
                                             hidden, output, loss, alpha, masks)
    return L, dW, db


def dropout_masks(net, rows, seed, drawn):
    """Per hidden layer, 0 or 1/keep for each unit of a batch, from the splitmix64
    stream after ``drawn`` draws (the kernels draw layer by layer, row-major)."""
    masks = []
    for rate, width in zip(net.dropout, net.layout.units[1:-1]):
        if rate == 0:
            masks.append(None)
            continue
        u = splitmix64_uniform(seed, rows * int(width), drawn)
        drawn += rows * int(width)
        keep = 1.0 - rate
        masks.append(np.where(u < keep, 1.0 / keep, 0.0).reshape(rows, int(width)))
    return masks, drawn


def run_epoch(net, data, params, rows, n_rows, batch_size, optimizer, seed=0):
    """Minibatch steps over ``rows`` (rows 0..n_rows-1 when None); returns
    Σ batch_loss · batch_rows, as the Cython kernel does."""
    coefs, intercepts = net.layout.views(params)
    grads = np.empty_like(params)
    gcoefs, gintercepts = net.layout.views(grads)
    total = 0.0
    drawn = 0
    for start in range(0, n_rows, batch_size):
        batch = np.arange(start, min(start + batch_size, n_rows))
        if rows is not None:
            batch = rows[batch]
        sw = None if data.sample_weight is None else data.sample_weight[batch]
        masks = None
        if net.dropout.any():
            masks, drawn = dropout_masks(net, len(batch), seed, drawn)
            masks = [None if m is None else m.astype(params.dtype) for m in masks]
        batch_loss, dW, db = backprop(
            coefs, intercepts, data.X[batch], data.Y[batch].astype(params.dtype), sw,
            net.hidden, net.output, net.loss, net.alpha, masks,
        )
        for g, d in zip(gcoefs + gintercepts, dW + db):
            g[...] = d
        optimizer.step(params, grads)
        total += batch_loss * len(batch)
    return total


def loss_grad(net, data, params, grads):
    """Full-batch loss; the gradient is written into ``grads``."""
    coefs, intercepts = net.layout.views(params)
    L, dW, db = backprop(
        coefs, intercepts, data.X, data.Y.astype(params.dtype), data.sample_weight,
        net.hidden, net.output, net.loss, net.alpha,
    )
    gcoefs, gintercepts = net.layout.views(grads)
    for g, d in zip(gcoefs + gintercepts, dW + db):
        g[...] = d
    return L


def predict(net, X, params):
    coefs, intercepts = net.layout.views(params)
    return feed_forward(coefs, intercepts, X, net.hidden, net.output)[-1]
