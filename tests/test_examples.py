"""The examples reproduce the course notes' worked numbers through the public API."""

import importlib.util
import pathlib
import runpy

import numpy as np
import pytest
from numpy.testing import assert_allclose

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- (a) the 2-3-3-1 sigmoid network ---------------------------------------------------

def test_2331_every_gradient_matches_the_notes_formulas():
    """dz3 = p − y, dW3 = dz3 h2ᵀ, dh2 = W3ᵀ dz3, dz2 = dh2 ⊗ σ′(z2), dW2, dh1, dz1, dW1
    (and the biases) from the trace equal the formulas computed by hand."""
    ex = load("backprop_2331")
    est = ex.build_network()
    assert est.out_activation_ == "logistic" and est.alpha == 0
    assert [W.shape for W in est.coefs_] == [(2, 3), (3, 3), (3, 1)]
    hand, traced = ex.by_hand(), ex.from_trace(est)
    for name in ["z1", "h1", "z2", "h2", "z3", "p", "loss", "dL/dp", "dp/dz3"] + ex.ORDER:
        assert np.shape(traced[name]) == np.shape(hand[name]), name
        assert_allclose(traced[name], hand[name], rtol=1e-12, atol=1e-15, err_msg=name)
    # the notes' identities, checked on the numbers
    p = hand["p"]
    assert_allclose(hand["dz3"], p - ex.Y)
    assert_allclose(traced["dL/dp"] * traced["dp/dz3"], traced["dz3"].item(), rtol=1e-12)
    assert_allclose(hand["loss"], -np.log(p))  # y = 1
    assert traced["dW1"].shape == (3, 2) and traced["dW3"].shape == (1, 3)
    # the numbers the example prints
    assert round(p, 6) == 0.571444 and round(traced["loss"], 6) == 0.559589
    assert_allclose(traced["dW3"], [[-0.235129, -0.239058, -0.201828]], atol=5e-7)


def test_2331_one_sgd_step():
    """partial_fit on the one sample moves every W and b by −lr times its gradient."""
    ex = load("backprop_2331")
    new, expected = ex.gradient_step(ex.build_network())
    assert list(new) == ["W1", "b1", "W2", "b2", "W3", "b3"]
    for name in new:
        assert_allclose(new[name], expected[name], rtol=1e-12, atol=1e-15, err_msg=name)
        assert not np.allclose(new[name], getattr(ex, name.upper()))  # it did move


# ---- (b) the sigmoid comprehension -----------------------------------------------------

def test_sigmoid_comprehension_numbers():
    ex = load("sigmoid_gradients")
    r = ex.comprehension()
    assert_allclose(r["z"], [2, 1, 3, -1], rtol=1e-15)
    assert_allclose(r["dz_out"], 1.0, rtol=1e-12)
    assert_allclose(r["dh"], [1, -1, 2, -1], rtol=1e-12)
    assert_allclose(r["h"], [0.880797, 0.731059, 0.952574, 0.268941], atol=1e-6)
    assert_allclose(r["h"], 1 / (1 + np.exp(-r["z"])), rtol=1e-13)
    assert_allclose(r["sigma_prime"], r["h"] * (1 - r["h"]), rtol=1e-12)
    assert_allclose(r["dz"], r["dh"] * r["h"] * (1 - r["h"]), rtol=1e-12)
    # the notes' answers, to 3 decimals
    assert np.round(r["h"], 3).tolist() == [0.881, 0.731, 0.953, 0.269]
    assert np.round(r["sigma_prime"], 3).tolist() == [0.105, 0.197, 0.045, 0.197]
    assert np.round(r["dz"], 3).tolist() == [0.105, -0.197, 0.090, -0.197]
    # and not the distractors
    assert np.round(r["h"], 3).tolist() != [0.781, 0.531, 0.753, 0.469]
    assert np.round(r["dz"], 3).tolist() != [0.105, 0.197, 0.090, 0.197]


# ---- (c) cross-entropy -----------------------------------------------------------------

@pytest.mark.parametrize("question,probabilities,loss,rounded", [
    ("question 1", (0.8, 0.1, 0.1), -np.log(0.8), 0.2),
    ("question 2", (0.1, 0.8, 0.1), -np.log(0.1), 2.3),
])
def test_cross_entropy_numbers(question, probabilities, loss, rounded):
    ex = load("cross_entropy")
    assert ex.QUESTIONS[question] == probabilities
    got, p, dz = ex.cross_entropy(probabilities)
    assert_allclose(p, probabilities, rtol=1e-12)
    assert_allclose(got, loss, rtol=1e-12)
    assert round(got, 1) == rounded
    assert_allclose(dz, np.array(probabilities) - [1, 0, 0], atol=1e-12)


def test_cross_entropy_values_to_3_decimals():
    ex = load("cross_entropy")
    assert round(ex.cross_entropy((0.8, 0.1, 0.1))[0], 3) == 0.223
    assert round(ex.cross_entropy((0.1, 0.8, 0.1))[0], 3) == 2.303


# ---- every script runs and prints its numbers --------------------------------------------

@pytest.mark.parametrize("name,expected", [
    ("backprop_2331", ["dz3 = p − y", "dh2 = (W3)ᵀ · dz3", "dz2 = dh2 ⊗ σ′(z2)",
                       "dW1 = dz1 · xᵀ", "0.571444", "-0.428556"]),
    ("sigmoid_gradients", ["[0.881 0.731 0.953 0.269]", "[0.105 0.197 0.045 0.197]",
                           "[ 0.105 -0.197  0.090 -0.197]"]),
    ("cross_entropy", ["−ln 0.8 = 0.22314 ≈ 0.2", "−ln 0.1 = 2.30259 ≈ 2.3"]),
])
def test_script_runs(name, expected, capsys):
    runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name="__main__")
    out = capsys.readouterr().out
    for text in expected:
        assert text in out, text
    assert "False" not in out  # every "trace == by hand" comparison holds
