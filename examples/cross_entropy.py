"""The notes' two cross-entropy questions, as the loss of a softmax classifier.

CE = −(y₁ log p₁ + y₂ log p₂ + y₃ log p₃) with y = (1, 0, 0):
p = (0.8, 0.1, 0.1) gives −ln 0.8 ≈ 0.223 (≈ 0.2), and p₁ = 0.1 gives −ln 0.1 ≈ 2.303
(≈ 2.3; the notes' second question misprints p₁ as 0.8 but its answer is this one).

An ``MLPClassifier`` over three classes has a softmax output and this loss. With zero
output weights and output biases b = log p, softmax(z) = softmax(log p) = p for every
input, so the probabilities are set by hand; the loss of one sample of class 1
(alpha = 0, S = 1) read from ``backprop_trace`` is then −ln p₁, and dz = p − y.

Run: python examples/cross_entropy.py
"""

import numpy as np

from pybackprop import MLPClassifier

QUESTIONS = {
    "question 1": (0.8, 0.1, 0.1),   # the notes' numbers
    "question 2": (0.1, 0.8, 0.1),   # p₁ = 0.1, the value its answer 2.3 belongs to
}


def softmax_classifier(probabilities):
    """A 3-class classifier whose predicted probabilities are ``probabilities``."""
    est = MLPClassifier(hidden_layer_sizes=(2,), alpha=0.0, solver="sgd", random_state=0)
    est.partial_fit(np.zeros((3, 1)), [1, 2, 3], classes=[1, 2, 3])  # creates the layers
    est.coefs_[1][...] = 0.0                              # z_out = b_out for every x
    est.intercepts_[1][...] = np.log(probabilities)       # softmax(log p) = p
    return est


def cross_entropy(probabilities, true_class=1):
    """(loss, p, dz) of one sample of ``true_class`` (class 1 is y = (1, 0, 0))."""
    est = softmax_classifier(probabilities)
    t = est.backprop_trace(np.array([[0.0]]), [true_class])
    return t.loss, t.p[0], t[-1].dz[0]


def main():
    for name, probabilities in QUESTIONS.items():
        loss, p, dz = cross_entropy(probabilities)
        print(f"{name}: y = (1, 0, 0), p = {np.round(p, 3)}")
        print(f"  CE = −ln p₁ = −ln {p[0]:.1f} = {loss:.5f} ≈ {loss:.1f}")
        print(f"  dz = p − y = {np.round(dz, 3)}")


if __name__ == "__main__":
    main()
