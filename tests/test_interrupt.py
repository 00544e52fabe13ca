"""Ctrl-C during a long fit returns promptly with a usable model."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose

from pybackprop import MLPClassifier

SCRIPT = textwrap.dedent(
    """
    import sys, time, warnings
    import numpy as np
    from pybackprop import MLPClassifier

    solver, backend = sys.argv[1], sys.argv[2]
    rng = np.random.RandomState(0)
    X = rng.standard_normal((20000, 50))
    y = (X[:, 0] + rng.standard_normal(20000) > 0).astype(int)
    est = MLPClassifier(solver=solver, hidden_layer_sizes=(100,), max_iter=100000,
                        max_fun=10**9, tol=0.0, n_iter_no_change=np.inf, random_state=0,
                        backend=backend)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        print("START", flush=True)
        est.fit(X, y)
        returned = time.monotonic()
    print("RETURNED", repr(returned), flush=True)
    for w in caught:
        print("WARNING", w.category.__name__, str(w.message).replace("\\n", " "), flush=True)
    proba = est.predict_proba(X[:500])
    ok = bool(np.isfinite(proba).all() and np.isfinite(est._flat_params).all()
              and np.isfinite(est.loss_))
    print("FINITE", ok, flush=True)
    print("N_ITER", est.n_iter_, flush=True)
    """
)


@pytest.mark.parametrize("solver, backend", [("adam", "cython"), ("lbfgs", "cython"),
                                             ("adam", "numpy")])
def test_ctrl_c_returns_promptly_with_usable_model(solver, backend, tmp_path):
    """SIGINT mid-fit: fit returns within 1 s, warns "Training interrupted by user.", and the model predicts finite values."""
    # run outside the source tree, so that the child imports the installed package
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, solver, backend],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )
    try:
        assert proc.stdout.readline().strip() == "START", proc.stderr.read()
        time.sleep(1.5)
        assert proc.poll() is None, "the fit ended before the signal"
        sent = time.monotonic()  # CLOCK_MONOTONIC is system-wide on Linux
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    lines = out.splitlines()
    returned = float(next(l for l in lines if l.startswith("RETURNED")).split()[1])
    assert returned - sent < 1.0, f"fit returned {returned - sent:.2f} s after the signal"
    assert "WARNING UserWarning Training interrupted by user." in lines
    assert "FINITE True" in lines
    n_iter = int(next(l for l in lines if l.startswith("N_ITER")).split()[1])
    assert n_iter >= 1


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("hidden, batch", [
    ((100,), 1),       # one block: the serial epoch
    ((100,), 16),      # one hidden layer, cut by hidden units
    ((30, 20), 16),    # two hidden layers, batches cut by rows
    ((100, 5), 16),    # two hidden layers, the first cut by units
])
def test_interrupted_adam_state_matches_the_steps_taken(hidden, batch, monkeypatch):
    """After Ctrl-C mid-epoch (Cython), the weights are exactly those of ``_optimizer.t`` Adam steps."""
    from pybackprop._backend import CythonBackend

    rng = np.random.RandomState(0)
    X = rng.standard_normal((40000 * batch, 20))
    y = (X[:, 0] > 0).astype(int)
    params = dict(hidden_layer_sizes=hidden, batch_size=batch, shuffle=False, max_iter=1,
                  random_state=0)
    est = MLPClassifier(**params)

    # the signal comes 0.1 s into the epoch itself, however long validation took
    state = {"in_epoch": False}
    timer = threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT))
    run_epoch = CythonBackend.run_epoch

    def timed_epoch(self, *args, **kwargs):
        state["in_epoch"] = True
        timer.start()
        try:
            return run_epoch(self, *args, **kwargs)
        finally:
            state["in_epoch"] = False

    def on_sigint(signum, frame):
        if state["in_epoch"]:
            raise KeyboardInterrupt

    monkeypatch.setattr(CythonBackend, "run_epoch", timed_epoch)
    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            est.fit(X, y)
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert "Training interrupted by user." in [str(w.message) for w in caught]
    assert est.n_iter_ == 0  # stopped inside the first epoch
    steps = est._optimizer.t
    assert steps > 0, "Adam's step counter was not advanced, yet the weights moved"
    # replay exactly `steps` single-row Adam steps with the NumPy reference
    replay = MLPClassifier(**params, backend="numpy").fit(X[:steps * batch], y[:steps * batch])
    assert_allclose(est._flat_params, replay._flat_params, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("blocks, hidden", [(1, (16, 8)), (2, (16, 8)), (2, (16,))])
def test_ctrl_c_ends_a_fit_of_one_batch_epochs(blocks, hidden, monkeypatch):
    """Epochs of a single batch, many to a kernel call: Ctrl-C still ends the fit
    (a stop seen on an epoch's last batch ends the call, the epoch counted)."""
    from pybackprop import MLPRegressor, _threads

    monkeypatch.setattr(_threads, "FORCE_BLOCKS", blocks)
    rng = np.random.RandomState(0)
    X = rng.randn(300, 40)
    y = rng.randn(300)
    est = MLPRegressor(hidden_layer_sizes=hidden, max_iter=10**6, tol=0,
                       n_iter_no_change=np.inf, batch_size=300, random_state=0)
    state = {"in_fit": True}

    def on_sigint(signum, frame):
        if state["in_fit"]:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            timer.start()
            start = time.monotonic()
            est.fit(X, y)
            took = time.monotonic() - start
    finally:
        state["in_fit"] = False
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert "Training interrupted by user." in [str(w.message) for w in caught]
    assert took < 5 and 1 <= est.n_iter_ < 10**6
    assert len(est.loss_curve_) == est.n_iter_

