"""Reliability (4, 5): threads and memory.

A fitted model is read-only at predict time: many threads predicting at once get
exactly the serial answer. Fitting keeps no global mutable state: two models fitted at
once in two threads come out bit for bit as when fitted one after the other, and the
process's BLAS settings are as they were. Repeated fit / predict cycles do not leak.
"""

import gc
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_info, threadpool_limits

from pybackprop import MLPClassifier, MLPRegressor, _threads

N_THREADS = 8


def _data(n=600, d=20, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.standard_normal((n, d))
    y = np.digitize(X[:, 0] + X[:, 1], [-1, 0, 1])
    return X, y


X, Y = _data()

# warnings.catch_warnings is not thread-safe: filter for the whole module instead
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(autouse=True)
def _restore_blas_threads():
    """Whatever a test leaves behind, the next test (and module) starts from the
    process's BLAS thread counts as they were."""
    with threadpool_limits(limits=None):
        yield


def fit_quietly(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y)


@pytest.mark.parametrize("backend", ["cython", "numpy"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_concurrent_predict_proba_equals_serial(dtype, backend):
    est = fit_quietly(MLPClassifier(hidden_layer_sizes=(32, 16), activation="gelu",
                                    max_iter=5, random_state=0, backend=backend),
                      X.astype(dtype), Y)
    # inputs of different sizes, so that calls of different lengths overlap
    inputs = [X[: 50 + 37 * i].astype(dtype) for i in range(N_THREADS)]
    expected = [est.predict_proba(x) for x in inputs]
    repetitions = 40 if backend == "cython" else 10

    def job(i):
        return i, est.predict_proba(inputs[i])

    with ThreadPoolExecutor(N_THREADS) as pool:
        for _ in range(repetitions):
            order = [i % N_THREADS for i in range(3 * N_THREADS)]
            for i, result in pool.map(job, order):
                assert result.dtype == expected[i].dtype
                assert_array_equal(result, expected[i])


def test_concurrent_predict_one_row_and_many_rows():
    """The fast one-row path and the chunked path, interleaved from many threads."""
    est = fit_quietly(MLPRegressor(hidden_layer_sizes=(16,), max_iter=5, random_state=0),
                      X, X[:, 0] - X[:, 3])
    big = np.tile(X, (8, 1))  # several kernel chunks
    expected_big = est.predict(big)
    # one row goes through gemv, many through gemm: compare each with its own kind
    expected_rows = [est.predict(X[r:r + 1])[0] for r in range(64)]

    def job(i):
        if i % 2:
            assert_array_equal(est.predict(big), expected_big)
        else:
            for r in range(64):
                assert est.predict(X[r:r + 1])[0] == expected_rows[r]
        return True

    with ThreadPoolExecutor(N_THREADS) as pool:
        assert all(pool.map(job, range(4 * N_THREADS)))


SOLVERS = {
    "adam": dict(solver="adam", max_iter=8, learning_rate_init=0.01),
    "sgd": dict(solver="sgd", max_iter=8, learning_rate_init=0.05, batch_size=32),
    "lbfgs": dict(solver="lbfgs", max_iter=25),
    "adam_dropout": dict(solver="adam", max_iter=6, dropout=0.2),
}


def _two_models(solver):
    a = MLPClassifier(hidden_layer_sizes=(24, 12), random_state=0, **SOLVERS[solver])
    b = MLPRegressor(hidden_layer_sizes=(16,), activation="tanh", random_state=1,
                     **SOLVERS[solver])
    Xb, _ = _data(seed=1)
    return [(a, X, Y), (b, Xb, Xb[:, 0] * Xb[:, 1])]


def _weights(est):
    return [w.copy() for w in est.coefs_ + est.intercepts_]


@pytest.mark.parametrize("solver", list(SOLVERS))
def test_concurrent_fits_equal_serial_fits(solver):
    serial = [_weights(fit_quietly(est, Xs, ys)) for est, Xs, ys in _two_models(solver)]
    for _ in range(3):
        jobs = _two_models(solver)
        with ThreadPoolExecutor(2) as pool:
            fitted = list(pool.map(lambda job: fit_quietly(*job), jobs))
        for est, expected in zip(fitted, serial):
            got = _weights(est)
            assert len(got) == len(expected)
            for a, b in zip(got, expected):
                assert_array_equal(a, b)


def test_concurrent_partial_fit_of_different_models():
    classes = np.unique(Y)

    def run(seed):
        est = MLPClassifier(hidden_layer_sizes=(10,), random_state=seed)
        for start in range(0, len(X), 100):
            est.partial_fit(X[start:start + 100], Y[start:start + 100], classes=classes)
        return _weights(est)

    serial = [run(seed) for seed in range(4)]
    with ThreadPoolExecutor(4) as pool:
        concurrent = list(pool.map(run, range(4)))
    for got, expected in zip(concurrent, serial):
        for a, b in zip(got, expected):
            assert_array_equal(a, b)


def _blas_threads():
    return [(info["internal_api"], info["filepath"], info["num_threads"])
            for info in threadpool_info()]


def test_concurrent_fits_leave_blas_threads_as_they_were():
    """The fit's 'one BLAS thread for small products' limit is process-wide state:
    after two fits that overlap in two threads, every BLAS library must be back at its
    original thread count (not stuck at 1).

    The overlap is forced with callbacks: A enters its fit (and the limit), then B;
    A leaves first, then B. Saving and restoring the limit per fit, B saved A's
    limit of 1 and restores it last."""
    import threading

    # (no threadpool_limits around it: the main thread would then own OpenBLAS's
    # limit and threadpoolctl would ignore the fits' threads)
    before = _blas_threads()
    if not any(n > 1 for _, _, n in before):
        pytest.skip("BLAS runs one thread here: nothing to restore")
    a_inside, b_inside, a_done = threading.Event(), threading.Event(), threading.Event()

    def a_callback(est, info):
        a_inside.set()
        assert b_inside.wait(10)

    def b_callback(est, info):
        b_inside.set()
        assert a_done.wait(10)

    def run_a():
        try:
            fit_quietly(MLPClassifier(hidden_layer_sizes=(8,), max_iter=1, random_state=0,
                                      callbacks=a_callback), X[:300], Y[:300])
        finally:
            a_done.set()

    def run_b():
        assert a_inside.wait(10)
        fit_quietly(MLPClassifier(hidden_layer_sizes=(8,), max_iter=1, random_state=1,
                                  callbacks=b_callback), X[:300], Y[:300])

    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(run_a), pool.submit(run_b)]
        for future in futures:
            future.result(timeout=30)
    assert _blas_threads() == before


def test_fit_leaves_blas_threads_as_they_were():
    before = _blas_threads()
    fit_quietly(MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0), X, Y)
    assert _blas_threads() == before


def test_fit_leaves_threadpoolctl_usable_from_other_threads():
    """After a fit (which limits BLAS to one thread for its small products), a
    ``threadpool_limits`` in another thread must still take effect: the fit must not
    leave the main thread as threadpoolctl's owner of OpenBLAS's process-wide limit
    (threadpoolctl then silently ignores every other thread's limits)."""
    import threading

    if not any(n > 1 for _, _, n in _blas_threads()):
        pytest.skip("BLAS runs one thread here: a limit of 1 changes nothing")
    fit_quietly(MLPClassifier(hidden_layer_sizes=(8,), max_iter=2, random_state=0),
                X[:200], Y[:200])
    seen = []

    def worker():
        with threadpool_limits(limits=1, user_api="blas"):
            seen.extend(n for api, _, n in _blas_threads() if api == "openblas")

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen and all(n == 1 for n in seen), (
        f"threadpool_limits(1) in a worker thread after a fit: BLAS threads {seen}")


# ---------------------------------------------------------------------------
# memory


def _rss_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    pytest.skip("no VmRSS in /proc/self/status")


def _cycle(i, X_small, y_small, y_reg):
    solver = ("adam", "sgd", "lbfgs")[i % 3]
    clf = MLPClassifier(hidden_layer_sizes=(6, 4), solver=solver, max_iter=3,
                        random_state=i, activation=("relu", "gelu")[i % 2])
    clf.fit(X_small, y_small)
    clf.predict_proba(X_small)
    reg = MLPRegressor(hidden_layer_sizes=(5,), solver=solver, max_iter=3, random_state=i,
                       dropout=0.1 if solver != "lbfgs" else 0.0)
    reg.fit(X_small.astype(np.float32), y_reg)
    reg.predict(X_small[:1].astype(np.float32))
    if solver != "lbfgs":
        reg.partial_fit(X_small.astype(np.float32), y_reg)


@pytest.mark.slow
def test_fit_predict_cycles_do_not_leak():
    X_small, y_small = X[:30, :5], Y[:30]
    y_reg = X_small[:, 0] - X_small[:, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(60):  # warm-up: imports, caches, allocator pools
            _cycle(i, X_small, y_small, y_reg)
        gc.collect()
        start = _rss_kb()
        for i in range(500):
            _cycle(i, X_small, y_small, y_reg)
        gc.collect()
        growth_mb = (_rss_kb() - start) / 1024
    assert growth_mb < 10, f"RSS grew by {growth_mb:.1f} MB over 500 cycles"


@pytest.mark.parametrize("early_stopping", [False, True])
def test_fit_holds_the_parameters_and_adam_state(early_stopping):
    """Beyond X, an Adam fit of a wide sparse model holds the parameters and Adam's two
    moments, plus what scales with a batch (the gradient of W_1 is made a chunk at a
    time when the blocks of a batch share one gradient; with one block, a whole
    gradient); with early stopping, also the best weights so far. No gradient per
    block and no other copy of the parameters."""
    import tracemalloc

    import scipy.sparse as sp

    Xs = sp.random(1000, 5000, density=0.01, format="csr", random_state=0)
    y = np.arange(1000) % 3
    est = MLPClassifier(hidden_layer_sizes=(100,), max_iter=2, batch_size=100,
                        random_state=0, early_stopping=early_stopping)
    param_bytes = (5000 * 100 + 100 + 100 * 3 + 3) * 8
    gc.collect()
    tracemalloc.start()
    try:
        fit_quietly(est, Xs, y)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    split = _threads.fit_split(100, dropout=False)[0] > 1   # blocks of rows
    copies = (3 if split else 4) + early_stopping
    assert peak <= copies * param_bytes + 2**20, (peak / param_bytes, copies)
    assert peak >= copies * param_bytes   # what is counted is there
