"""The course notes' 2-3-3-1 network, backpropagated through pybackprop's public API.

Two inputs, two hidden layers of three sigmoid units, one sigmoid output trained with
the binary cross-entropy L = −(y log p + (1−y) log(1−p)). That network is an
``MLPClassifier(hidden_layer_sizes=(3, 3), activation="logistic")`` on two features
with a binary target (the output of a binary classifier is logistic, its loss the
binary cross-entropy). Its weights are set by hand and one sample is traced; every
gradient of the notes is computed again by hand in NumPy, in the notes' order and in
their column-vector notation (z = W h + b, W of shape (fan_out, fan_in)), and the two
are compared. pybackprop stores W row-major as (fan_in, fan_out): ``coefs_[l]`` is the
notes' W⁽ˡ⁺¹⁾ transposed, and so is the trace's ``dW``.

Run: python examples/backprop_2331.py
"""

import numpy as np

from pybackprop import MLPClassifier

# the notes' layout: W[l] is (fan_out, fan_in), row j holds unit j's incoming weights
W1 = np.array([[0.2, -0.4],
               [0.5, 0.1],
               [-0.3, 0.6]])
B1 = np.array([0.1, -0.2, 0.05])
W2 = np.array([[0.3, -0.1, 0.2],
               [-0.5, 0.4, 0.1],
               [0.2, 0.2, -0.3]])
B2 = np.array([0.0, 0.1, -0.1])
W3 = np.array([[0.7, -0.6, 0.4]])
B3 = np.array([0.05])
X = np.array([1.0, 2.0])  # one sample, as a column in the notes
Y = 1                     # its class
LEARNING_RATE = 0.5

# the notes' order of the backward pass
ORDER = ["dz3", "dW3", "db3", "dh2", "dz2", "dW2", "db2", "dh1", "dz1", "dW1", "db1"]
FORMULAS = {
    "dz3": "p − y",
    "dW3": "dz3 · (h2)ᵀ",
    "db3": "dz3",
    "dh2": "(W3)ᵀ · dz3",
    "dz2": "dh2 ⊗ σ′(z2)",
    "dW2": "dz2 · (h1)ᵀ",
    "db2": "dz2",
    "dh1": "(W2)ᵀ · dz2",
    "dz1": "dh1 ⊗ σ′(z1)",
    "dW1": "dz1 · xᵀ",
    "db1": "dz1",
}


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def build_network(learning_rate=LEARNING_RATE):
    """The 2-3-3-1 all-sigmoid network with the weights above (alpha = 0).

    ``partial_fit`` on two made-up rows only creates the layers; the weights are then
    replaced by assigning new lists (pybackprop repacks them into its flat buffer).
    The solver settings make one more ``partial_fit`` on the sample one plain gradient
    step ``W := W − lr · dW``."""
    est = MLPClassifier(hidden_layer_sizes=(3, 3), activation="logistic", alpha=0.0,
                        solver="sgd", learning_rate_init=learning_rate, momentum=0.0,
                        batch_size=1, shuffle=False, random_state=0)
    est.partial_fit(np.array([[0.0, 0.0], [1.0, 1.0]]), [0, 1], classes=[0, 1])
    est.coefs_ = [W.T.copy() for W in (W1, W2, W3)]      # ours: (fan_in, fan_out)
    est.intercepts_ = [b.copy() for b in (B1, B2, B3)]
    return est


def by_hand(x=X, y=Y):
    """Feed forward and backpropagate one sample in the notes' notation (column
    vectors), in the notes' order."""
    x = x.reshape(-1, 1)
    z1 = W1 @ x + B1[:, None]
    h1 = sigmoid(z1)
    z2 = W2 @ h1 + B2[:, None]
    h2 = sigmoid(z2)
    z3 = W3 @ h2 + B3[:, None]
    p = sigmoid(z3)
    out = {"z1": z1, "h1": h1, "z2": z2, "h2": h2, "z3": z3, "p": p.item(),
           "loss": -(y * np.log(p) + (1 - y) * np.log(1 - p)).item(),
           "dL/dp": ((p - y) / (p * (1 - p))).item(), "dp/dz3": (p * (1 - p)).item()}
    out["dz3"] = p - y                                   # 1. dz3 = p − y
    out["dW3"] = out["dz3"] @ h2.T                       # 2. dW3 = dz3 · h2ᵀ
    out["db3"] = out["dz3"]
    out["dh2"] = W3.T @ out["dz3"]                       # 3. dh2 = W3ᵀ · dz3
    out["dz2"] = out["dh2"] * sigmoid(z2) * (1 - sigmoid(z2))  # 4. dz2 = dh2 ⊗ σ′(z2)
    out["dW2"] = out["dz2"] @ h1.T                       # 5. dW2 = dz2 · h1ᵀ
    out["db2"] = out["dz2"]
    out["dh1"] = W2.T @ out["dz2"]                       # 6. dh1 = W2ᵀ · dz2
    out["dz1"] = out["dh1"] * sigmoid(z1) * (1 - sigmoid(z1))  # 7. dz1 = dh1 ⊗ σ′(z1)
    out["dW1"] = out["dz1"] @ x.T                        # 8. dW1 = dz1 · xᵀ
    out["db1"] = out["dz1"]
    return out


def from_trace(est, x=X, y=Y):
    """The same quantities read from ``est.backprop_trace`` (one row → one column;
    our dW is (fan_in, fan_out), the notes' is its transpose)."""
    t = est.backprop_trace(x.reshape(1, -1), [y])
    layer1, layer2, layer3 = t
    col = lambda a: a[0].reshape(-1, 1)  # noqa: E731
    return {"z1": col(layer1.z), "h1": col(layer1.h), "z2": col(layer2.z),
            "h2": col(layer2.h), "z3": col(layer3.z), "p": t.p.item(), "loss": t.loss,
            "dL/dp": layer3.dh.item(), "dp/dz3": (layer3.dz / layer3.dh).item(),
            "dz3": col(layer3.dz), "dW3": layer3.dW.T, "db3": layer3.db.reshape(-1, 1),
            "dh2": col(layer2.dh), "dz2": col(layer2.dz), "dW2": layer2.dW.T,
            "db2": layer2.db.reshape(-1, 1),
            "dh1": col(layer1.dh), "dz1": col(layer1.dz), "dW1": layer1.dW.T,
            "db1": layer1.db.reshape(-1, 1)}


def gradient_step(est, x=X, y=Y):
    """One ``partial_fit`` on the sample; returns (new parameters, old − lr · gradient
    by hand), both in the notes' layout, keyed W1, b1, …, W3, b3."""
    hand = by_hand(x, y)
    lr = est.learning_rate_init
    expected = {}
    for l, (W, b) in enumerate(((W1, B1), (W2, B2), (W3, B3)), start=1):
        expected[f"W{l}"] = W - lr * hand[f"dW{l}"]
        expected[f"b{l}"] = b - lr * hand[f"db{l}"].ravel()
    est.partial_fit(x.reshape(1, -1), [y])
    new = {}
    for l, (W, b) in enumerate(zip(est.coefs_, est.intercepts_), start=1):
        new[f"W{l}"], new[f"b{l}"] = W.T.copy(), b.copy()
    return new, expected


def main():
    est = build_network()
    hand, traced = by_hand(), from_trace(est)
    fmt = lambda a: np.array2string(np.asarray(a), precision=6, suppress_small=True)  # noqa: E731
    print("2-3-3-1 sigmoid network, x = %s, y = %d" % (X, Y))
    print("p = σ(z3) = %.6f   L = −(y log p + (1−y) log(1−p)) = %.6f" % (traced["p"], traced["loss"]))
    print("∂L/∂p = (p−y)/(p(1−p)) = %.6f   ∂p/∂z3 = p(1−p) = %.6f"
          % (traced["dL/dp"], traced["dp/dz3"]))
    for step, name in enumerate(ORDER, start=1):
        agree = np.allclose(traced[name], hand[name], rtol=1e-12, atol=1e-15)
        print(f"\n{step:2d}. {name} = {FORMULAS[name]}   (trace == by hand: {agree})")
        print("    " + fmt(traced[name]).replace("\n", "\n    "))
    new, expected = gradient_step(est)
    print("\nOne SGD step (lr = %g): W_new = W_old − lr · dW, b_new = b_old − lr · db"
          % est.learning_rate_init)
    for name in new:
        agree = np.allclose(new[name], expected[name], rtol=1e-12, atol=1e-15)
        print(f"{name}_new = " + fmt(new[name]).replace("\n", "\n" + " " * 9)
              + f"   (== by hand: {agree})")

if __name__ == "__main__":
    main()
