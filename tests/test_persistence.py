"""Reliability (7): persistence.

* pickle and joblib round trips predict identically in a fresh process (fitted and
  dumped here, loaded and used in a child ``sys.executable``), and the loaded model
  keeps training exactly as the original does;
* models pickled by an earlier version, kept in ``tests/fixtures/`` (made by
  ``tests/fixtures/make_fixtures.py``, with ``manifest.json`` naming the version),
  still load and predict exactly the stored arrays.
"""

import json
import pickle
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import joblib
import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_array_equal
from sklearn.exceptions import ConvergenceWarning

import pybackprop
from pybackprop import MLPClassifier, MLPRegressor

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _data():
    rng = np.random.RandomState(3)
    X = rng.standard_normal((50, 6))
    return X, {
        "multiclass": np.array(["a", "b", "c"])[np.digitize(X[:, 0], [-0.5, 0.5])],
        "binary": (X[:, 1] > 0).astype(int),
        "multilabel": np.column_stack([X[:, 0] > 0, X[:, 1] > 0, X[:, 2] > 0]).astype(int),
        "regression": X @ rng.uniform(-1, 1, 6),
        "poisson": rng.poisson(np.exp(0.3 * X[:, 0])).astype(float),
    }


X, Y = _data()

# name -> (estimator, target, dtype, sparse)
MODELS = {
    "clf_adam": (MLPClassifier(hidden_layer_sizes=(8, 4), max_iter=20, random_state=0,
                               learning_rate_init=0.01), "multiclass", np.float64, False),
    "clf_binary_lbfgs_f32": (MLPClassifier(hidden_layer_sizes=(5,), solver="lbfgs",
                                           max_iter=30, random_state=0),
                             "binary", np.float32, False),
    "clf_multilabel_sgd_sparse": (MLPClassifier(hidden_layer_sizes=(6,), solver="sgd",
                                                max_iter=15, random_state=0,
                                                activation=("silu",)),
                                  "multilabel", np.float64, True),
    "reg_adam_dropout": (MLPRegressor(hidden_layer_sizes=(7, 3), max_iter=15, random_state=0,
                                      dropout=0.2, activation="gelu"),
                         "regression", np.float64, False),
    "reg_poisson_numpy_backend": (MLPRegressor(loss="poisson", hidden_layer_sizes=(4,),
                                               max_iter=15, random_state=0, backend="numpy"),
                                  "poisson", np.float64, False),
    "reg_early_stopping": (MLPRegressor(hidden_layer_sizes=(5,), max_iter=15, random_state=0,
                                        early_stopping=True), "regression", np.float32, False),
}


def _inputs(dtype, sparse):
    X_in = X.astype(dtype)
    return sp.csr_matrix(X_in) if sparse else X_in


def _fit(name):
    est, target, dtype, sparse = MODELS[name]
    from sklearn.base import clone

    est = clone(est)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(_inputs(dtype, sparse), Y[target])
    return est


def _outputs(est, X_in):
    out = {"predict": np.asarray(est.predict(X_in))}
    if hasattr(est, "predict_proba"):
        out["predict_proba"] = est.predict_proba(X_in)
    return out


def _continue(est, X_in, y):
    """One more epoch on the loaded model (where the solver allows it)."""
    if est.solver == "lbfgs":
        est.set_params(warm_start=True, max_iter=3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(X_in, y)
    elif est.early_stopping:
        est.set_params(warm_start=True, max_iter=2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(X_in, y)
    else:
        est.partial_fit(X_in, y)
    return est


CHILD = textwrap.dedent(
    """
    import pickle, sys, warnings
    import joblib
    import numpy as np
    import scipy.sparse as sp
    from sklearn.exceptions import ConvergenceWarning

    directory = sys.argv[1]
    names = sys.argv[2:]
    results = {}
    for name in names:
        X = np.load(f"{directory}/{name}.X.npy")
        y = np.load(f"{directory}/{name}.y.npy")
        if np.load(f"{directory}/{name}.sparse.npy"):
            X = sp.csr_matrix(X)
        for how in ("pickle", "joblib"):
            path = f"{directory}/{name}.{how}"
            if how == "pickle":
                with open(path, "rb") as f:
                    est = pickle.load(f)
            else:
                est = joblib.load(path)
            key = f"{name}.{how}"
            results[f"{key}.predict"] = np.asarray(est.predict(X))
            if hasattr(est, "predict_proba"):
                results[f"{key}.predict_proba"] = est.predict_proba(X)
            results[f"{key}.views"] = np.array(
                all(np.shares_memory(c, est._flat_params) for c in est.coefs_))
            # keep training the loaded model
            if est.solver == "lbfgs" or est.early_stopping:
                est.set_params(warm_start=True, max_iter=3 if est.solver == "lbfgs" else 2)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    est.fit(X, y)
            else:
                est.partial_fit(X, y)
            for i, c in enumerate(est.coefs_ + est.intercepts_):
                results[f"{key}.continued.{i}"] = c
    np.savez(f"{directory}/child_results.npz", **results)
    print("OK", len(names))
    """
)


def test_pickle_and_joblib_round_trip_in_fresh_process(tmp_path):
    names = list(MODELS)
    expected = {}
    for name in names:
        est = _fit(name)
        _, target, dtype, sparse = MODELS[name]
        X_in = _inputs(dtype, sparse)
        np.save(tmp_path / f"{name}.X.npy", X.astype(dtype))
        np.save(tmp_path / f"{name}.y.npy", Y[target])
        np.save(tmp_path / f"{name}.sparse.npy", np.array(sparse))
        with open(tmp_path / f"{name}.pickle", "wb") as f:
            pickle.dump(est, f, protocol=pickle.HIGHEST_PROTOCOL)
        joblib.dump(est, tmp_path / f"{name}.joblib")
        expected[name] = _outputs(est, X_in)
        continued = _continue(pickle.loads(pickle.dumps(est)), X_in, Y[target])
        expected[name]["continued"] = continued.coefs_ + continued.intercepts_
    # run outside the source tree: the child imports the installed package
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), *names],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    child = np.load(tmp_path / "child_results.npz")
    for name in names:
        for how in ("pickle", "joblib"):
            key = f"{name}.{how}"
            for method, value in expected[name].items():
                if method == "continued":
                    for i, w in enumerate(value):
                        assert_array_equal(child[f"{key}.continued.{i}"], w,
                                           err_msg=f"{key} continued {i}")
                else:
                    got = child[f"{key}.{method}"]
                    assert got.dtype == value.dtype, (key, method)
                    assert_array_equal(got, value, err_msg=f"{key} {method}")
            assert child[f"{key}.views"], f"{key}: coefs_ are not views of the buffer"


@pytest.mark.parametrize("protocol", range(0, pickle.HIGHEST_PROTOCOL + 1))
def test_every_pickle_protocol(protocol):
    est = _fit("clf_adam")
    loaded = pickle.loads(pickle.dumps(est, protocol=protocol))
    assert_array_equal(loaded.predict_proba(X), est.predict_proba(X))
    for a, b in zip(loaded.coefs_ + loaded.intercepts_, est.coefs_ + est.intercepts_):
        assert_array_equal(a, b)
        assert np.shares_memory(a, loaded._flat_params)
    assert loaded.get_params() == est.get_params()


def test_pickle_of_unfitted_and_of_replaced_weights():
    unfitted = pickle.loads(pickle.dumps(MLPRegressor(hidden_layer_sizes=(3,), alpha=0.5)))
    assert unfitted.get_params()["alpha"] == 0.5 and not hasattr(unfitted, "coefs_")
    est = _fit("clf_adam")
    # coefs_ replaced by the user (no longer views): pickled as they are
    est.coefs_ = [c * 2 for c in est.coefs_]
    expected = est.predict_proba(X)
    loaded = pickle.loads(pickle.dumps(est))
    assert_array_equal(loaded.predict_proba(X), expected)


def test_pickle_records_library_version():
    """A pickle must say which pybackprop made it, so that a future version that can
    no longer read it can fail with an error naming that version (as scikit-learn's
    own estimators record ``_sklearn_version``)."""
    state = _fit("clf_adam").__getstate__()
    assert pybackprop.__version__ in [v for v in state.values() if isinstance(v, str)], (
        "no pybackprop version in the pickled state: keys are " + ", ".join(sorted(state))
    )


# ---------------------------------------------------------------------------
# pickles made by an earlier version, kept as fixtures


def _manifest():
    with open(FIXTURES / "manifest.json") as f:
        return json.load(f)


MANIFEST = _manifest()


def _same_arithmetic():
    """True when the kernels here round exactly as those that made the fixtures:
    same build flags and same CPU features (the x86-64-v3 and v4 clones use FMA)."""
    sys.path.insert(0, str(FIXTURES))
    try:
        import make_fixtures
    finally:
        sys.path.remove(str(FIXTURES))
    from pybackprop import _kernels

    return (MANIFEST.get("build_flags") == _kernels.BUILD_FLAGS
            and MANIFEST.get("cpu_features") == make_fixtures.cpu_features())


@pytest.mark.parametrize("name", sorted(MANIFEST["models"]))
def test_fixture_pickles_still_predict_the_same(name):
    """Models pickled by pybackprop MANIFEST["pybackprop"] (tests/fixtures/) load and
    predict what they predicted when they were made: the weights are compared bit
    for bit, then predict_proba / predict (labels equal), bit for bit where the
    kernels round as those that made the fixtures (same build flags, same CPU
    features: see manifest.json), otherwise to 1e-12 (float64) / 1e-5 (float32) --
    a debug build (-O0) or a CPU without FMA rounds differently.

    Expectation for a future version that can no longer load these pickles: loading
    must fail with a clear error (any exception) whose message mentions the version
    the pickle was made with (MANIFEST["pybackprop"], e.g. "0.1.0"), telling the user
    to refit or to load it with that version; it must not load into a model that then
    predicts something else. A version that still loads them warns, naming both
    versions (the pickle records the version that made it); the version that made
    them loads them silently. If that day comes, regenerate the fixtures with
    ``python tests/fixtures/make_fixtures.py`` and keep this test for the new ones.
    """
    entry = MANIFEST["models"][name]
    version = MANIFEST["pybackprop"]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with open(FIXTURES / entry["pickle"], "rb") as f:
                est = pickle.load(f)
    except Exception as e:  # the documented failure mode only
        assert version in str(e), (
            f"loading a pickle made by pybackprop {version} failed without naming "
            f"that version: {type(e).__name__}: {e}"
        )
        return
    about_version = [str(w.message) for w in caught if "pybackprop" in str(w.message)]
    if version == pybackprop.__version__:
        assert not about_version, about_version
    else:
        assert any(version in m and pybackprop.__version__ in m for m in about_version), (
            f"a pickle of pybackprop {version} loaded by {pybackprop.__version__} "
            f"without a warning naming both versions: {about_version}"
        )
    assert type(est).__name__ == entry["class"]
    X_in = np.load(FIXTURES / entry["X"])
    weights = np.load(FIXTURES / entry["weights"])
    n_layers = len(est.coefs_)
    assert len(weights.files) == 2 * n_layers
    for i in range(n_layers):
        assert_array_equal(est.coefs_[i], weights[f"coef_{i}"])
        assert est.coefs_[i].dtype == weights[f"coef_{i}"].dtype
        assert_array_equal(est.intercepts_[i], weights[f"intercept_{i}"])
    expected = np.load(FIXTURES / entry["expected"])
    if hasattr(est, "predict_proba"):
        got = est.predict_proba(X_in)
        assert_array_equal(est.predict(X_in), np.load(FIXTURES / entry["labels"]))
    else:
        got = est.predict(X_in)
    assert got.dtype == expected.dtype
    if _same_arithmetic():
        assert_array_equal(got, expected)
    else:
        rtol = 1e-12 if expected.dtype == np.float64 else 1e-5
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * 1e-3)


def test_fixture_manifest_is_complete():
    """Every file the manifest names exists, and the script that makes them is there."""
    assert (FIXTURES / "make_fixtures.py").exists()
    assert MANIFEST["pybackprop"]
    for entry in MANIFEST["models"].values():
        for key in ("pickle", "X", "expected", "weights") + (
                ("labels",) if entry["class"] == "MLPClassifier" else ()):
            assert (FIXTURES / entry[key]).exists(), entry[key]


def test_fixture_models_refit_to_the_same_weights():
    """The fixture script is deterministic: refitting its models today gives the
    pickled weights (when they were made by this very version and build)."""
    if MANIFEST["pybackprop"] != pybackprop.__version__:
        pytest.skip("fixtures made by another version")
    if not _same_arithmetic():
        pytest.skip("kernels built or dispatched differently from the fixtures'")
    sys.path.insert(0, str(FIXTURES))
    try:
        import make_fixtures
    finally:
        sys.path.remove(str(FIXTURES))
    X_fix, X32, targets = make_fixtures.data()
    for name, (est, target, float32) in make_fixtures.models().items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(X32 if float32 else X_fix, targets[target])
        weights = np.load(FIXTURES / MANIFEST["models"][name]["weights"])
        for i, c in enumerate(est.coefs_):
            assert_array_equal(c, weights[f"coef_{i}"], err_msg=name)
