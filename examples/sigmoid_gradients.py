"""The notes' comprehension "Gradients with the sigmoid activation function".

A sigmoid layer with z⁽²⁾ = [2, 1, 3, −1] gives h⁽²⁾ = σ(z) ≈ [0.881, 0.731, 0.953, 0.269]
and σ′(z) = σ(z)(1 − σ(z)) ≈ [0.105, 0.197, 0.045, 0.197]; with dh⁽²⁾ = [1, −1, 2, −1],
dz⁽²⁾ = dh⁽²⁾ ⊗ σ′(z⁽²⁾) ≈ [0.105, −0.197, 0.090, −0.197].

Built through the public API: an ``MLPRegressor`` with one logistic hidden layer of 4
units and an identity output, one input x = 1. Hidden weights [2, 1, 3, −1] and zero
biases make z = [2, 1, 3, −1]; output weights W_out = [1, −1, 2, −1]ᵀ and a target
y = p − 1 make dz_out = p − y = 1 (one sample, so S = 1), hence
dh = dz_out · W_outᵀ = [1, −1, 2, −1]. h, dh and dz are then read from the trace.

Run: python examples/sigmoid_gradients.py
"""

import numpy as np

from pybackprop import MLPRegressor

Z2 = np.array([2.0, 1.0, 3.0, -1.0])
DH2 = np.array([1.0, -1.0, 2.0, -1.0])


def build_network():
    est = MLPRegressor(hidden_layer_sizes=(4,), activation="logistic", alpha=0.0,
                       solver="sgd", random_state=0)
    est.partial_fit(np.zeros((2, 1)), np.zeros(2))   # creates the layers
    est.coefs_[0][...] = Z2[None, :]                 # z = x W + b = [2, 1, 3, −1] at x = 1
    est.intercepts_[0][...] = 0.0
    est.coefs_[1][...] = DH2[:, None]                # W_out, so that dh = dz_out W_outᵀ
    est.intercepts_[1][...] = 0.0
    return est


def comprehension(est=None):
    """z, h, σ′(z), dh and dz of the hidden layer, read from ``backprop_trace``."""
    est = build_network() if est is None else est
    x = np.array([[1.0]])
    p = est.predict(x)[0]
    y = p - 1.0                                      # p − y = 1
    t = est.backprop_trace(x, [y])
    hidden, output = t
    return {
        "z": hidden.z[0],
        "h": hidden.h[0],
        "sigma_prime": hidden.dz[0] / hidden.dh[0],  # dz = dh ⊗ σ′(z)
        "dh": hidden.dh[0],
        "dz": hidden.dz[0],
        "dz_out": output.dz[0, 0],
    }


def main():
    r = comprehension()
    show = lambda a: np.array2string(np.round(a, 3), precision=3, floatmode="fixed")  # noqa: E731
    print("z(2)              =", show(r["z"]))
    print("h(2) = σ(z)       =", show(r["h"]), "  (answer B)")
    print("σ′(z) = h(1 − h)  =", show(r["sigma_prime"]), "  (answer A)")
    print("dz_out = p − y    = %.3f" % r["dz_out"])
    print("dh(2) = W_outᵀ dz =", show(r["dh"]))
    print("dz(2) = dh ⊗ σ′(z) =", show(r["dz"]), "  (answer A)")


if __name__ == "__main__":
    main()
