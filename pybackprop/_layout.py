"""The flat parameter buffer and the codes shared with the kernels.

All weights and biases of a network live in one contiguous vector laid out as
``[W_1 .. W_L, b_1 .. b_L]`` (scikit-learn's packing order). ``coefs_[l]`` and
``intercepts_[l]`` are reshaped views of it, so an optimizer step is one loop over one
array and L-BFGS works on the buffer itself.
"""

import numpy as np

# activation codes (csrc/_activations.pxd)
ACTIVATION_CODES = {
    "identity": 0,
    "logistic": 1,
    "tanh": 2,
    "relu": 3,
    "exp": 4,
    "softmax": 5,
    "leaky_relu": 6,
    "elu": 7,
    "gelu": 8,
    "softplus": 9,
    "silu": 10,
}
HIDDEN_ACTIVATIONS = ("identity", "logistic", "tanh", "relu", "leaky_relu", "elu", "gelu",
                      "softplus", "silu")
# activations whose derivative needs z itself, not only h = f(z)
NEEDS_Z = ("gelu", "silu")
# loss codes (csrc/_kernels.pyx); "log_loss" with a logistic output is binary
LOSS_CODES = {"squared_error": 0, "poisson": 1, "log_loss": 2, "binary_log_loss": 3}


class Layout:
    """Offsets of every layer's W and b in the flat buffer, and of every layer's
    (rows, width) block in the activation / delta workspaces."""

    def __init__(self, layer_units):
        self.units = np.asarray(layer_units, dtype=np.intp)
        pairs = list(zip(self.units[:-1], self.units[1:]))
        sizes = [int(a * b) for a, b in pairs]
        self.coef_shapes = [(int(a), int(b)) for a, b in pairs]
        self.coef_off = np.cumsum([0] + sizes[:-1]).astype(np.intp)
        start = sum(sizes)
        self.inter_off = (start + np.cumsum([0] + [int(b) for b in self.units[1:-1]])).astype(
            np.intp
        )
        self.n_params = start + int(self.units[1:].sum())
        self.n_layers = len(pairs)

    def act_offsets(self, rows):
        """Offsets of each layer's (rows, units[l]) block, and the workspace length."""
        cache = self.__dict__.setdefault("_act_cache", {})
        if rows not in cache:
            widths = self.units[1:] * rows
            off = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.intp)
            cache[rows] = (off, int(widths.sum()))
        return cache[rows]

    def views(self, params):
        """coefs_ and intercepts_ as views into ``params``."""
        coefs = [
            params[o : o + a * b].reshape(a, b)
            for o, (a, b) in zip(self.coef_off, self.coef_shapes)
        ]
        intercepts = [
            params[o : o + b] for o, (_, b) in zip(self.inter_off, self.coef_shapes)
        ]
        return coefs, intercepts

    def pack(self, coefs, intercepts, dtype):
        """A new flat buffer holding copies of ``coefs`` and ``intercepts``, which
        must have this layout's shapes (every value of the buffer is written)."""
        if len(coefs) != self.n_layers or len(intercepts) != self.n_layers:
            raise ValueError(f"{len(coefs)} weight and {len(intercepts)} bias arrays for "
                             f"a network of {self.n_layers} layers.")
        params = np.empty(self.n_params, dtype=dtype)
        for i, (o, shape, c, b) in enumerate(zip(self.coef_off, self.coef_shapes, coefs,
                                                 intercepts)):
            if np.shape(c) != shape or np.shape(b) != shape[1:]:
                raise ValueError(f"layer {i}: weights of shape {np.shape(c)} and biases of "
                                 f"shape {np.shape(b)}, where the network has {shape} and "
                                 f"{shape[1:]}.")
            params[o : o + c.size] = np.ravel(c)
            params[self.inter_off[i] : self.inter_off[i] + shape[1]] = b
        return params

    def is_view_of(self, params, coefs, intercepts):
        """True when ``coefs`` / ``intercepts`` are still this layout's views of ``params``."""
        if len(coefs) != self.n_layers or len(intercepts) != self.n_layers:
            return False
        base = params.ctypes.data
        size = params.itemsize
        for o, shape, c in zip(self.coef_off, self.coef_shapes, coefs):
            if not (
                isinstance(c, np.ndarray)
                and c.dtype == params.dtype
                and c.shape == shape
                and c.ctypes.data == base + int(o) * size
                and c.flags.c_contiguous
            ):
                return False
        for o, (_, b), c in zip(self.inter_off, self.coef_shapes, intercepts):
            if not (
                isinstance(c, np.ndarray)
                and c.dtype == params.dtype
                and c.shape == (b,)
                and c.ctypes.data == base + int(o) * size
            ):
                return False
        return True


def checked_weights(coefs, intercepts, n_features, n_outputs):
    """coefs_ and intercepts_ as the user left them, checked to form a network before
    they are packed for the kernels: 2-D coefs whose shapes chain from n_features
    inputs to n_outputs outputs, and one 1-D intercept per coef, as wide as it."""
    try:
        coefs = [np.asarray(c) for c in coefs]
        intercepts = [np.asarray(b) for b in intercepts]
    except TypeError:
        raise ValueError("coefs_ and intercepts_ must be lists of arrays.") from None
    if not coefs or len(coefs) != len(intercepts):
        raise ValueError(f"coefs_ and intercepts_ must hold one array per layer: got "
                         f"{len(coefs)} coefs and {len(intercepts)} intercepts.")
    for i, c in enumerate(coefs):
        if c.ndim != 2 or 0 in c.shape:
            raise ValueError(f"coefs_[{i}] must be a non-empty 2-D array; got shape "
                             f"{c.shape}.")
        if not (np.issubdtype(c.dtype, np.number) and np.issubdtype(intercepts[i].dtype,
                                                                   np.number)):
            raise ValueError(f"coefs_[{i}] and intercepts_[{i}] must hold numbers.")
        if i and c.shape[0] != coefs[i - 1].shape[1]:
            raise ValueError(f"coefs_[{i}] has shape {c.shape}, but coefs_[{i - 1}] has "
                             f"{coefs[i - 1].shape[1]} columns: the layers do not chain.")
        if intercepts[i].shape != (c.shape[1],):
            raise ValueError(f"intercepts_[{i}] has shape {intercepts[i].shape}, but "
                             f"coefs_[{i}] has {c.shape[1]} columns.")
    if n_features is not None and coefs[0].shape[0] != n_features:
        raise ValueError(f"coefs_[0] has {coefs[0].shape[0]} rows, but the model was "
                         f"fitted on {n_features} features.")
    if n_outputs is not None and coefs[-1].shape[1] != n_outputs:
        raise ValueError(f"coefs_[-1] has {coefs[-1].shape[1]} columns, but the model "
                         f"has {n_outputs} outputs.")
    return coefs, intercepts
