"""X checked for NaN and infinity by the first epoch's gathers (CHECK_ROWS_IN_KERNEL_BYTES):
the same errors as scikit-learn's check before the fit, the fit undone, the same weights
when X is finite."""

import subprocess
import sys
import warnings

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from sklearn.neural_network import MLPClassifier as SkMLPClassifier
from sklearn.neural_network import MLPRegressor as SkMLPRegressor
from threadpoolctl import threadpool_limits

from pybackprop import MLPClassifier, MLPRegressor, _backend, _kernels, _mlp, _threads
from pybackprop._backend import CythonBackend


@pytest.fixture
def spy(monkeypatch):
    """Every X the kernels check, every NonFiniteInput they raise (with the rows of
    the epoch and Adam's steps at that moment), every scikit-learn check of X."""
    seen = {"calls": 0, "checked": 0, "raised": [], "asserts": 0}
    run_epoch = CythonBackend.run_epoch
    assert_all_finite = _mlp.assert_all_finite

    def spied_epoch(self, params, rows, n_rows, batch_size, opt, *args, **kwargs):
        seen["calls"] += 1
        seen["checked"] += bool(self.rows_unchecked)
        t0 = opt.t
        try:
            return run_epoch(self, params, rows, n_rows, batch_size, opt, *args, **kwargs)
        except _backend.NonFiniteInput:
            seen["raised"].append((None if rows is None else rows.copy(), opt.t - t0,
                                   batch_size))
            raise

    def spied_assert(*args, **kwargs):
        seen["asserts"] += 1
        return assert_all_finite(*args, **kwargs)

    monkeypatch.setattr(CythonBackend, "run_epoch", spied_epoch)
    monkeypatch.setattr(_mlp, "assert_all_finite", spied_assert)
    monkeypatch.setattr(_mlp.BaseMultilayerPerceptron, "CHECK_ROWS_IN_KERNEL_BYTES", 0)
    return seen


@pytest.fixture(autouse=True)
def row_products_restored():
    saved = _kernels.row_products()
    yield
    _kernels.row_products(saved)


def data(n, d, dtype, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.standard_normal((n, d)).astype(dtype)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int) + (X[:, 2] > 1)
    return X, y


def sklearn_error(estimator, X, y):
    with pytest.raises(ValueError) as info:
        estimator.fit(X, y)
    return str(info.value)


# (d, hidden, by_units, blocks): the cut by units with batches of 256 KiB of rows or
# more (one shared gather) and less (a gather per thread), with one and two hidden
# layers; the cut by rows; one block
WAYS = {
    "units-shared": (256, (32,), True, 2),
    # the same with the row products off: float32 batches are gathered too
    "units-shared-gathered": (256, (32,), True, 2),
    "units-own": (24, (32, 16), True, 2),
    "rows": (24, (32,), False, 2),
    "one-block": (24, (16, 8), False, 1),
}


@pytest.mark.parametrize("way", list(WAYS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad, where", [(np.nan, 0), (np.inf, 517), (-np.inf, 999)])
@pytest.mark.parametrize("threads", [1, 2])
def test_kernel_check_gives_scikit_learns_error(way, dtype, bad, where, threads, spy,
                                                monkeypatch):
    """A NaN or ±inf anywhere in X: the fit's first epoch finds it and the fit raises
    scikit-learn's own message for that X; the estimator stays unfitted."""
    d, hidden, by_units, blocks = WAYS[way]
    _kernels.row_products(not way.endswith("-gathered"))
    monkeypatch.setattr(_threads, "FORCE_BY_UNITS", by_units)
    monkeypatch.setattr(_threads, "FORCE_BLOCKS", blocks)
    X, y = data(1000, d, dtype)
    X[where, 3] = bad
    expected = sklearn_error(SkMLPClassifier(hidden_layer_sizes=hidden, max_iter=3), X, y)
    est = MLPClassifier(hidden_layer_sizes=hidden, batch_size=256, max_iter=3,
                        random_state=0)
    with threadpool_limits(threads, user_api="openmp"):
        assert sklearn_error(est, X, y) == expected
    assert spy["checked"] == 1 and len(spy["raised"]) == 1
    assert spy["asserts"] == 1  # scikit-learn's check ran once, after the kernel's
    assert not hasattr(est, "coefs_") and not hasattr(est, "n_iter_")


@pytest.mark.parametrize("way", list(WAYS))
def test_the_epochs_stop_at_the_batch_holding_the_row(way, spy, monkeypatch):
    """At most the batches before the one holding the bad row, and that one, step."""
    d, hidden, by_units, blocks = WAYS[way]
    _kernels.row_products(not way.endswith("-gathered"))
    monkeypatch.setattr(_threads, "FORCE_BY_UNITS", by_units)
    monkeypatch.setattr(_threads, "FORCE_BLOCKS", blocks)
    X, y = data(2000, d, np.float32)
    steps = []
    for row in (5, 1200, 1999):
        Xb = X.copy()
        Xb[row, 0] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            MLPClassifier(hidden_layer_sizes=hidden, batch_size=256, max_iter=4,
                          random_state=1).fit(Xb, y)
        rows, taken, batch = spy["raised"][-1]
        position = int(np.flatnonzero(rows == row)[0])
        assert position // batch <= taken <= position // batch + 1
        steps.append(taken)
    assert max(steps) > 0  # the epochs ran until the row's batch


@pytest.mark.parametrize("way", list(WAYS))
@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
def test_finite_X_gives_the_same_fit(way, Estimator, spy, monkeypatch):
    """Rows copied with the check are the same values: the same bits as the fit whose
    X scikit-learn checked, over several epochs in one call and one call per epoch."""
    d, hidden, by_units, blocks = WAYS[way]
    _kernels.row_products(not way.endswith("-gathered"))
    monkeypatch.setattr(_threads, "FORCE_BY_UNITS", by_units)
    monkeypatch.setattr(_threads, "FORCE_BLOCKS", blocks)
    X, y = data(700, d, np.float64)
    for callbacks in (None, [lambda est, info: False]):
        params = dict(hidden_layer_sizes=hidden, batch_size=100, max_iter=3,
                      random_state=0, callbacks=callbacks)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            checked = Estimator(**params).fit(X, y)
            assert spy["checked"] == 1 and spy["asserts"] == 0
            monkeypatch.setattr(_mlp.BaseMultilayerPerceptron,
                                "CHECK_ROWS_IN_KERNEL_BYTES", None)
            plain = Estimator(**params).fit(X, y)
            monkeypatch.setattr(_mlp.BaseMultilayerPerceptron,
                                "CHECK_ROWS_IN_KERNEL_BYTES", 0)
        assert spy["checked"] == 1  # the second fit's X was checked before
        assert_array_equal(checked._flat_params, plain._flat_params)
        assert checked.loss_curve_ == plain.loss_curve_
        spy["checked"] = 0


@pytest.mark.parametrize("how", ["partial_fit", "warm_start"])
def test_a_fitted_model_is_left_as_it_was(how, spy):
    """A bad X given to partial_fit or a warm-started fit: scikit-learn's error, and
    the weights, the optimizer's state and the counters as they were."""
    X, y = data(600, 24, np.float64)
    est = MLPRegressor(hidden_layer_sizes=(16,), batch_size=64, max_iter=2, random_state=0,
                       warm_start=how == "warm_start")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, y)
    before = (est._flat_params.copy(), est._optimizer.t, est._optimizer.buffers[0].copy(),
              est.n_iter_, list(est.loss_curve_), est.t_)
    Xb = X.copy()
    Xb[300, 7] = np.inf
    expected = sklearn_error(SkMLPRegressor(), Xb, y)
    with pytest.raises(ValueError) as info:
        getattr(est, "partial_fit" if how == "partial_fit" else "fit")(Xb, y)
    assert str(info.value) == expected
    assert len(spy["raised"]) == 1
    after = (est._flat_params, est._optimizer.t, est._optimizer.buffers[0], est.n_iter_,
             est.loss_curve_, est.t_)
    assert_array_equal(after[0], before[0])
    assert after[1] == before[1]
    assert_array_equal(after[2], before[2])
    assert after[3:] == before[3:]


@pytest.mark.parametrize("bad", [True, False])
def test_ctrl_c_before_the_check_ends(bad, spy, monkeypatch):
    """Ctrl-C before the first epoch has checked every row: X is checked then, so a
    bad X still gets the error; a good one, the interrupted fit."""
    X, y = data(600, 24, np.float64)
    if bad:
        X[10, 2] = np.nan

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(CythonBackend, "run_epoch", interrupted)
    est = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if bad:
            with pytest.raises(ValueError, match="Input X contains NaN"):
                est.fit(X, y)
            assert not hasattr(est, "coefs_")
        else:
            est.fit(X, y)
            assert est.n_iter_ == 0
    assert ("Training interrupted by user." in [str(w.message) for w in caught]) != bad
    assert spy["asserts"] == 1


@pytest.mark.parametrize("case", ["small", "list", "float16", "lbfgs", "no-shuffle",
                                  "early-stopping", "numpy-backend", "other-dtype"])
def test_other_fits_check_X_before(case, spy, monkeypatch):
    """Where the first epoch would not check X as it is (X too small, not a float
    ndarray, L-BFGS, unshuffled or split rows, the NumPy backend, a warm start in
    another dtype), X is checked before any epoch, with scikit-learn's message."""
    X, y = data(300, 24, np.float64)
    X[100, 1] = np.nan
    params = dict(hidden_layer_sizes=(8,), max_iter=2, random_state=0)
    est = MLPClassifier(**params)
    Xin = X
    if case == "small":
        monkeypatch.setattr(_mlp.BaseMultilayerPerceptron, "CHECK_ROWS_IN_KERNEL_BYTES",
                            X.nbytes + 1)
    elif case == "list":
        Xin = X.tolist()
    elif case == "float16":
        Xin = X.astype(np.float16)
    elif case == "lbfgs":
        est.set_params(solver="lbfgs")
    elif case == "no-shuffle":
        est.set_params(shuffle=False)
    elif case == "early-stopping":
        est.set_params(early_stopping=True)
    elif case == "numpy-backend":
        est.set_params(backend="numpy")
    else:
        est.set_params(warm_start=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit(np.nan_to_num(X).astype(np.float32), y)
        spy["calls"] = 0
    expected = sklearn_error(SkMLPClassifier(**params), X, y)
    with pytest.raises(ValueError) as info:
        est.fit(Xin, y)
    assert str(info.value) == expected
    assert spy["calls"] == 0 and not spy["raised"]


def test_the_backend_refuses_a_check_it_cannot_make():
    """The check needs the epoch to gather every row of dense X: rows in their order,
    or only some of them, are refused rather than left unchecked."""
    X, y = data(300, 24, np.float64)
    est = MLPClassifier(hidden_layer_sizes=(8,), max_iter=1, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, y)
    net = est._net(training=True)
    backend = CythonBackend(net, est._make_data(X, _mlp._indicator(est._label_binarizer, y),
                                                None), 100)
    backend.rows_unchecked = True
    for rows in (None, np.arange(200, dtype=np.intp)):
        with pytest.raises(ValueError, match="every row of dense X"):
            backend.run_epoch(est._flat_params.copy(), rows, 300, 100, est._optimizer)
    assert backend.rows_unchecked


STRESS = """
import sys, time, warnings
import numpy as np
from pybackprop import MLPClassifier, _mlp, _threads
warnings.simplefilter("ignore")
_threads.FORCE_BY_UNITS = False
_threads.FORCE_BLOCKS = 2
_mlp.BaseMultilayerPerceptron.CHECK_ROWS_IN_KERNEL_BYTES = 0
rs = np.random.RandomState(0)
X = rs.standard_normal((1000, 24))
y = (X[:, 0] > 0).astype(int)
X[524, 3] = np.nan
t0, n = time.perf_counter(), 0
while time.perf_counter() - t0 < float(sys.argv[1]):
    try:
        MLPClassifier((8,), batch_size=16, max_iter=2, random_state=n).fit(X, y)
    except ValueError:
        n += 1
print(n)
"""


def test_a_nan_found_a_batch_ahead_stops_every_thread_alike(tmp_path):
    """Cut by rows on two threads, with NaN in one row: the thread that finds it while
    gathering its rows of the next batch must not stop the other before that one has
    finished this batch. With one stop flag for every batch it did, and the two then
    waited at different barriers: repeated fits like these hung within 10 seconds, in
    each of three tries. Five seconds of them must end, each with the error."""
    if _kernels.max_threads() < 2:
        pytest.skip("one OpenMP thread: no second thread to stop apart")
    # run outside the source tree, which would shadow the installed package
    done = subprocess.run([sys.executable, "-c", STRESS, "5"], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 100
