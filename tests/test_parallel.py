"""Batches cut into blocks of rows and shared by OpenMP threads (_threads.fit_split).

The blocks fix the arithmetic: a fit must give the same bits on one thread or many,
in the main thread or another, and agree with the one-block epoch and the NumPy
reference to rounding.
"""

import multiprocessing
import threading
import time
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from pybackprop import MLPClassifier, MLPRegressor, _kernels, _threads
from pybackprop._backend import CythonBackend, Data, Net
from pybackprop._layout import Layout

rng = np.random.RandomState(0)
X = rng.normal(size=(203, 7))
y_multi = rng.randint(0, 4, size=203)
y_bin = (X[:, 0] > 0).astype(int)
y_multilabel = (X[:, :3] > 0).astype(int)
y_reg = np.c_[np.sin(X[:, 0]), X[:, 1] ** 2]
sw = rng.uniform(0.2, 2.0, size=203)

CASES = {
    "multiclass-adam": (MLPClassifier, y_multi, dict()),
    "binary-sgd-nesterov": (MLPClassifier, y_bin, dict(solver="sgd", momentum=0.9)),
    "multilabel-tanh": (MLPClassifier, y_multilabel, dict(activation="tanh")),
    "regression-two-layers": (MLPRegressor, y_reg, dict(hidden_layer_sizes=(9, 6))),
    "gelu-needs-z": (MLPClassifier, y_multi, dict(activation="gelu")),
    "float32": (MLPClassifier, y_multi, dict(dtype=np.float32)),
    "batch-not-dividing": (MLPClassifier, y_multi, dict(batch_size=50)),
    "alpha-strong": (MLPRegressor, y_reg, dict(alpha=0.3)),
}


@pytest.fixture
def blocks():
    """Set the number of blocks for the fits in a test; restored afterwards."""
    saved = _threads.FORCE_BLOCKS

    def set_blocks(n):
        _threads.FORCE_BLOCKS = n

    yield set_blocks
    _threads.FORCE_BLOCKS = saved


@pytest.fixture(params=["block-gradients", "shared-gradient"])
def gradients(request):
    """Both ways a fit cut by rows makes its gradient (_threads.block_gradients)."""
    saved = _threads.FORCE_BLOCK_GRADS
    _threads.FORCE_BLOCK_GRADS = request.param == "block-gradients"
    yield request.param
    _threads.FORCE_BLOCK_GRADS = saved


def fit(cls, y, kwargs, sample_weight=None, X_fit=X, max_iter=4):
    kwargs = dict(kwargs)
    dtype = kwargs.pop("dtype", np.float64)
    est = cls(hidden_layer_sizes=kwargs.pop("hidden_layer_sizes", (11,)), random_state=1,
              max_iter=max_iter, tol=0, n_iter_no_change=10**6, batch_size=kwargs.pop(
                  "batch_size", 64), **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X_fit.astype(dtype), y, sample_weight=sample_weight)
    return est


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("weighted", [False, True])
def test_blocks_agree_with_one_block_and_numpy(case, weighted, blocks, gradients):
    cls, y, kwargs = CASES[case]
    weights = sw if weighted else None
    blocks(1)
    one = fit(cls, y, kwargs, weights)
    ref = fit(cls, y, dict(kwargs, backend="numpy"), weights)
    tol = 1e-4 if kwargs.get("dtype") == np.float32 else 1e-10
    for n in (2, 3, 5):
        blocks(n)
        got = fit(cls, y, kwargs, weights)
        assert_allclose(got._flat_params, one._flat_params, rtol=tol, atol=tol)
        assert_allclose(got._flat_params, ref._flat_params, rtol=tol, atol=tol)
        assert_allclose(got.loss_curve_, one.loss_curve_, rtol=tol)


def test_blocks_agree_with_one_block_on_sparse_input(blocks, gradients):
    Xs = sp.random(203, 40, density=0.1, format="csr", random_state=3)
    blocks(1)
    one = fit(MLPClassifier, y_multi, {}, X_fit=Xs)
    blocks(2)
    two = fit(MLPClassifier, y_multi, {}, X_fit=Xs)
    assert_allclose(two._flat_params, one._flat_params, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("n_blocks", [2, 3])
def test_shared_gradient_of_a_wide_sparse_first_layer(n_blocks, blocks, monkeypatch):
    """300 features: each block's rows of W_1 span several 64-row chunks (the last one
    short), made and stepped a chunk at a time. Agrees with the NumPy reference and
    with block gradients, and gives the same bits on one thread."""
    Xs = sp.random(203, 300, density=0.05, format="csr", random_state=4)
    kwargs = dict(hidden_layer_sizes=(13,), alpha=1e-3)
    ref = fit(MLPClassifier, y_multi, dict(kwargs, backend="numpy"), X_fit=Xs)
    blocks(n_blocks)
    monkeypatch.setattr(_threads, "FORCE_BLOCK_GRADS", True)
    summed = fit(MLPClassifier, y_multi, kwargs, X_fit=Xs)
    monkeypatch.setattr(_threads, "FORCE_BLOCK_GRADS", False)
    shared = fit(MLPClassifier, y_multi, kwargs, X_fit=Xs)
    with threadpool_limits(limits=1, user_api="openmp"):
        single = fit(MLPClassifier, y_multi, kwargs, X_fit=Xs)
    for got in (summed, shared):
        assert_allclose(got._flat_params, ref._flat_params, rtol=1e-10, atol=1e-12)
        assert_allclose(got.loss_curve_, ref.loss_curve_, rtol=1e-10)
    assert_array_equal(single._flat_params, shared._flat_params)


@pytest.mark.parametrize("case", list(CASES))
def test_same_bits_on_any_number_of_threads(case, blocks, gradients):
    """Three blocks on two threads (uneven shares), on one thread, and in a thread
    that is not the main one: bitwise the same model and loss curve."""
    cls, y, kwargs = CASES[case]
    blocks(3)
    with threadpool_limits(limits=1, user_api="openmp"):
        assert _threads.fit_split(64, False) == (3, 1)
    assert_same_bits_on_one_thread_and_in_a_worker(cls, y, kwargs)


def assert_same_bits_on_one_thread_and_in_a_worker(cls, y, kwargs):
    """The fit in the main thread, on OpenMP's threads; on one OpenMP thread; and in a
    thread that is not the main one: bitwise the same model and loss curve."""
    many = fit(cls, y, kwargs, sw)
    with threadpool_limits(limits=1, user_api="openmp"):
        single = fit(cls, y, kwargs, sw)
    box = []
    worker = threading.Thread(target=lambda: box.append(fit(cls, y, kwargs, sw)))
    worker.start()
    worker.join()
    for other in (single, box[0]):
        assert_array_equal(other._flat_params, many._flat_params)
        assert other.loss_curve_ == many.loss_curve_


def test_last_batch_smaller_than_the_number_of_blocks(blocks, gradients):
    """203 rows in batches of 101: the last batch has 1 row, fewer than the blocks;
    the empty blocks must add nothing."""
    blocks(4)
    got = fit(MLPClassifier, y_multi, dict(batch_size=101), max_iter=3)
    ref = fit(MLPClassifier, y_multi, dict(batch_size=101, backend="numpy"), max_iter=3)
    assert_allclose(got._flat_params, ref._flat_params, rtol=1e-10, atol=1e-12)
    assert_allclose(got.loss_curve_, ref.loss_curve_, rtol=1e-10)


def test_partial_fit_same_bits_in_main_and_worker_thread(blocks, gradients):
    blocks(2)
    a = MLPClassifier(hidden_layer_sizes=(10,), random_state=0, batch_size=40)
    b = MLPClassifier(hidden_layer_sizes=(10,), random_state=0, batch_size=40)
    for _ in range(3):
        a.partial_fit(X, y_multi, classes=np.arange(4))
        worker = threading.Thread(target=b.partial_fit, args=(X, y_multi),
                                  kwargs=dict(classes=np.arange(4)))
        worker.start()
        worker.join()
    assert_array_equal(a._flat_params, b._flat_params)


def test_fit_split_rules(blocks):
    cores = _threads.usable_cores()
    blocks(None)
    assert _threads.fit_split(200, dropout=True) == (1, 1)
    assert _threads.fit_split(7, dropout=False) == (1, 1)
    n_blocks, n_threads = _threads.fit_split(200, dropout=False)
    assert n_blocks == min(cores, 200 // _threads.MIN_ROWS_PER_BLOCK)
    assert 1 <= n_threads <= n_blocks
    if _kernels.HAVE_OPENMP:
        assert n_threads == min(n_blocks, _kernels.max_threads())
    box = []
    worker = threading.Thread(target=lambda: box.append(_threads.fit_split(200, False)))
    worker.start()
    worker.join()
    assert box[0] == (n_blocks, 1)


def test_max_threads_follows_threadpoolctl():
    if not _kernels.HAVE_OPENMP:
        assert _kernels.max_threads() == 1
        return
    with threadpool_limits(limits=1, user_api="openmp"):
        assert _kernels.max_threads() == 1


def _fit_in_child(queue):
    est = MLPClassifier(hidden_layer_sizes=(10,), random_state=0, max_iter=3, batch_size=64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y_multi)
    queue.put((_threads.fit_split(64, False), est._flat_params))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(),
                    reason="no fork() here")
def test_fit_in_forked_child_after_parallel_fits(blocks):
    """GNU OpenMP's threads do not survive fork(): a child forked after parallel fits
    must fit on one thread (same bits), not wait forever on a parallel region."""
    blocks(None)
    parent = MLPClassifier(hidden_layer_sizes=(10,), random_state=0, max_iter=3,
                           batch_size=64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        parent.fit(X, y_multi)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_fit_in_child, args=(queue,))
    child.start()
    split, params = queue.get(timeout=60)
    child.join(timeout=60)
    assert child.exitcode == 0
    blocks_parent, _ = _threads.fit_split(64, False)
    assert split == (blocks_parent, 1)
    assert_array_equal(params, parent._flat_params)


def _backend(n_blocks, keep=None):
    lay = Layout([7, 5, 4])
    net = Net(lay, "relu", "softmax", "log_loss", 1e-4,
              dropout=None if keep is None else [1 - keep])
    Y = np.eye(4)[y_multi]
    data = Data(X, Y, None, True, np.float64)
    return lay, net, CythonBackend(net, data, 64, n_blocks=n_blocks)


def test_kernel_rejects_a_short_gradient_buffer_and_split_dropout():
    from pybackprop._optim import AdamState

    lay, net, backend = _backend(2)
    params = np.random.RandomState(0).normal(size=lay.n_params) * 0.1
    opt = AdamState(lay.n_params, np.float64, 1e-3, 0.9, 0.999, 1e-8)
    backend.grads = backend.grads[:2 * lay.n_params - 1]   # block gradients: 2 buffers
    with pytest.raises(ValueError, match="fewer than n_blocks gradient buffers"):
        backend.run_epoch(params, None, 203, 64, opt)
    backend.block_grads = False    # one shared gradient buffer
    backend.grads = backend.grads[:lay.n_params - 1]
    with pytest.raises(ValueError, match="grads holds fewer values than params"):
        backend.run_epoch(params, None, 203, 64, opt)
    backend.grads = np.empty(lay.n_params)
    backend.run_epoch(params, None, 203, 64, opt)
    lay, net, backend = _backend(2, keep=0.5)
    with pytest.raises(ValueError, match="dropout needs n_blocks=1"):
        backend.run_epoch(params, None, 203, 64, opt, seed=1)
    backend.n_threads = 0
    with pytest.raises(ValueError, match="at least 1"):
        backend.run_epoch(params, None, 203, 64, opt, seed=1)


# ---------------------------------------------------------------------------
# one hidden layer, cut by hidden units

UNIT_CASES = {
    "multiclass-adam-relu": (MLPClassifier, y_multi, dict()),
    "binary-sgd-nesterov": (MLPClassifier, y_bin, dict(solver="sgd", momentum=0.9)),
    "sgd-no-momentum": (MLPClassifier, y_multi, dict(solver="sgd", momentum=0.0,
                                                      learning_rate="invscaling")),
    "multilabel-logistic": (MLPClassifier, y_multilabel, dict(activation="logistic")),
    "regression-two-outputs": (MLPRegressor, y_reg, dict(activation="tanh")),
    "poisson": (MLPRegressor, np.exp(0.3 * X[:, 0]), dict(loss="poisson")),
    "silu-needs-z": (MLPClassifier, y_multi, dict(activation="silu")),
    "float32": (MLPClassifier, y_multi, dict(dtype=np.float32)),
    "uneven-units-and-last-batch": (MLPClassifier, y_multi,
                                    dict(hidden_layer_sizes=(37,), batch_size=50)),
    "identity": (MLPRegressor, y_reg, dict(activation="identity", alpha=0.5)),
}


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_row_blocks_capped_by_gradient_memory(blocks, monkeypatch):
    """Blocks of rows hold one parameter-sized gradient buffer each: no more of them
    than fit ROW_GRADIENTS_BYTES (but two at the least), whatever the core count."""
    blocks(None)
    budget = _threads.ROW_GRADIENTS_BYTES
    small, big = 10_000, 2_560_000 + 128 + 1280 + 10   # digits-like; sparse 20000×128
    assert _threads.cap_row_blocks(25, 25, small, 8) == (25, 25)
    assert _threads.cap_row_blocks(25, 25, big, 4) == (budget // (big * 4), budget // (big * 4))
    assert _threads.cap_row_blocks(25, 3, big, 4) == (budget // (big * 4), 3)
    assert _threads.cap_row_blocks(25, 25, 10 * budget, 4) == (2, 2)   # two at the least
    assert _threads.cap_row_blocks(1, 1, 10 * budget, 4) == (1, 1)
    blocks(25)   # forced (tests, benchmarks): as forced
    assert _threads.cap_row_blocks(25, 25, big, 4) == (25, 25)
    # and a fit takes it: on 64 cores, a sparse 20000-feature fit with block gradients
    # gets 6 blocks; one that shares its gradient holds no gradient of W_1, and gets 25
    blocks(None)
    monkeypatch.setattr(_threads, "usable_cores", lambda: 64)
    seen = []
    real = CythonBackend.__init__

    def spy(self, net, data, batch_rows, n_blocks=1, n_threads=1, by_units=False,
            block_grads=True):
        seen.append((n_blocks, by_units, block_grads))
        real(self, net, data, batch_rows, n_blocks, n_threads, by_units, block_grads)
        seen.append((self.grads.size, self.n_threads))

    monkeypatch.setattr(CythonBackend, "__init__", spy)
    X = sp.random(300, 20000, density=0.005, format="csr", random_state=0, dtype=np.float32)
    y = np.arange(300) % 10
    monkeypatch.setattr(_threads, "FORCE_BLOCK_GRADS", True)
    MLPClassifier(hidden_layer_sizes=(128,), max_iter=1, random_state=0).fit(X, y)
    assert seen[-2] == (6, False, True) and seen[-1][0] == 6 * big
    monkeypatch.setattr(_threads, "FORCE_BLOCK_GRADS", None)
    MLPClassifier(hidden_layer_sizes=(128,), max_iter=1, random_state=0).fit(X, y)
    # one gradient, less W_1's part, plus a 64-row scratch block of W_1 per thread
    n_threads = seen[-1][1]
    assert seen[-2] == (25, False, False)
    assert seen[-1][0] == big - 20000 * 128 + n_threads * 64 * 128


def test_block_gradients_rule(monkeypatch):
    """Block gradients when the parameters are no more than the rows of activations and
    deltas the other blocks write: bench/run.py's regression (20000 x 100, 64-64, batch
    200; about 11k parameters against 71k values) and mnist-shape (784, 256-128, batch
    256; 235k against 400k) keep them; its sparse workload (20000 features, 128 units;
    2.6M against 51k) shares one gradient."""
    monkeypatch.setattr(_threads, "FORCE_BLOCK_GRADS", None)
    assert _threads.block_gradients([100, 64, 64, 1], 200, sparse=False)
    assert _threads.block_gradients([784, 256, 128, 10], 256, sparse=False)
    assert not _threads.block_gradients([20000, 128, 10], 200, sparse=True)
    # the input's width counts for dense X only
    assert _threads.block_gradients([2000, 16, 2], 100, sparse=False)        # 32k ≤ 203k
    assert not _threads.block_gradients([2000, 16, 2], 100, sparse=True)     # 32k > 3.4k
    monkeypatch.setattr(_threads, "FORCE_BLOCK_GRADS", False)
    assert not _threads.block_gradients([100, 64, 64, 1], 200, sparse=False)


def test_cut_by_units_rules(monkeypatch):
    monkeypatch.setattr(_threads, "FORCE_BY_UNITS", None)
    assert _threads.cut_by_units([64, 100, 10], 200, 2, False, False)
    assert not _threads.cut_by_units([64, 100, 10], 200, 1, False, False)   # one block
    assert not _threads.cut_by_units([64, 100, 10], 200, 2, True, False)    # sparse
    assert not _threads.cut_by_units([64, 100, 10], 200, 2, False, True)    # dropout
    assert not _threads.cut_by_units([64, 15, 10], 200, 2, False, False)    # 7 units a block
    # exchanging 5000 × 3 outputs would cost more than the 4 × 50 + 50 × 3 parameters
    assert not _threads.cut_by_units([4, 50, 3], 5000, 2, False, False)
    # more hidden layers: bench/run.py's mnist-shape (the tail, 128 × 10 weights, 1 %
    # of the 233k that the blocks cut) is cut by units; its regression (200 × 64 z_2
    # values a batch against 10.5k weights) and a digits net whose tail is 9 % of the
    # cut weights (×2 blocks) are not
    assert _threads.cut_by_units([784, 256, 128, 10], 256, 2, False, False)
    assert not _threads.cut_by_units([100, 64, 64, 1], 200, 2, False, False)
    assert not _threads.cut_by_units([64, 100, 50, 10], 200, 2, False, False)
    assert _threads.cut_by_units([64, 100, 50, 1], 200, 2, False, False)
    monkeypatch.setattr(_threads, "FORCE_BY_UNITS", True)
    assert _threads.cut_by_units([64, 100, 50, 10], 200, 2, False, False)
    assert not _threads.cut_by_units([64, 100, 50, 10], 200, 2, True, False)  # sparse
    monkeypatch.setattr(_threads, "FORCE_BY_UNITS", False)
    assert not _threads.cut_by_units([64, 100, 10], 200, 2, False, False)


def test_unit_split_size_checks_its_arguments():
    hidden = np.array([0], dtype=np.intc)
    units = np.array([7, 20, 4], dtype=np.intp)
    assert _kernels.unit_split_size(units, hidden, 64, 2, 2) > 0
    with pytest.raises(ValueError, match="needs a hidden layer"):
        _kernels.unit_split_size(units[[0, 2]], hidden[:0], 64, 2, 2)
    with pytest.raises(ValueError, match="one activation code per hidden layer"):
        _kernels.unit_split_size(units, np.array([0, 0], dtype=np.intc), 64, 2, 2)
    with pytest.raises(ValueError, match="at least 1"):
        _kernels.unit_split_size(units, hidden, 0, 2, 2)


# nets with more than one hidden layer, their first one cut by units and the rest (the
# tail) run whole by every thread
DEEP_UNIT_CASES = {
    "multiclass-adam-relu": (MLPClassifier, y_multi, dict(hidden_layer_sizes=(33, 9))),
    "three-layers-tanh-sgd": (MLPClassifier, y_multi, dict(
        hidden_layer_sizes=(33, 9, 6), activation="tanh", solver="sgd", momentum=0.9)),
    "z-needed-in-the-tail": (MLPClassifier, y_bin, dict(
        hidden_layer_sizes=(33, 8, 5), activation=("relu", "gelu", "silu"))),
    "z-needed-first-only": (MLPRegressor, y_reg, dict(
        hidden_layer_sizes=(33, 8), activation=("silu", "tanh"))),
    "multilabel-logistic": (MLPClassifier, y_multilabel, dict(
        hidden_layer_sizes=(30, 7), activation="logistic")),
    "poisson": (MLPRegressor, np.exp(0.3 * X[:, 0]), dict(
        hidden_layer_sizes=(30, 6), loss="poisson")),
    # (tanh: with relu, NumPy's float32 reference crosses a kink that the kernels,
    # nearer the float64 model, do not, and its Adam moments differ by 3e-4)
    "float32": (MLPRegressor, y_reg, dict(hidden_layer_sizes=(30, 6), dtype=np.float32,
                                          alpha=0.1, activation="tanh")),
    "uneven-units-and-last-batch": (MLPClassifier, y_multi, dict(
        hidden_layer_sizes=(37, 5), batch_size=50)),
}


@pytest.mark.parametrize("case", list(DEEP_UNIT_CASES))
@pytest.mark.parametrize("weighted", [False, True])
def test_deep_cut_by_units_agrees_with_numpy_and_rows(case, weighted, blocks,
                                                     monkeypatch):
    """A first hidden layer cut by units, later layers repeated in every thread: the
    NumPy reference's model, and a cut by rows', to rounding, for 2-4 blocks."""
    cls, y, kwargs = DEEP_UNIT_CASES[case]
    weights = sw if weighted else None
    tol = 1e-4 if kwargs.get("dtype") == np.float32 else 1e-10
    ref = fit(cls, y, dict(kwargs, backend="numpy"), weights)
    seen = []
    real = CythonBackend.__init__

    def spy(self, net, data, batch_rows, n_blocks=1, n_threads=1, by_units=False,
            block_grads=True):
        seen.append((n_blocks, by_units))
        real(self, net, data, batch_rows, n_blocks, n_threads, by_units, block_grads)

    monkeypatch.setattr(CythonBackend, "__init__", spy)
    blocks(2)
    monkeypatch.setattr(_threads, "FORCE_BY_UNITS", False)
    rows = fit(cls, y, kwargs, weights)
    monkeypatch.setattr(_threads, "FORCE_BY_UNITS", True)
    for n in (2, 3, 4):
        blocks(n)
        got = fit(cls, y, kwargs, weights)
        assert seen[-1] == (n, True)
        for other in (ref, rows):
            assert_allclose(got._flat_params, other._flat_params, rtol=tol, atol=tol)
            assert_allclose(got.loss_curve_, other.loss_curve_, rtol=tol)
        if kwargs.get("solver") != "sgd":
            assert got._optimizer.t == ref._optimizer.t
        for other in (ref, rows):
            for a, b in zip(got._optimizer.buffers, other._optimizer.buffers):
                assert_allclose(a, b, rtol=tol, atol=tol)
    assert seen[0] == (2, False)


@pytest.mark.parametrize("case", ["multiclass-adam-relu", "three-layers-tanh-sgd",
                                  "z-needed-in-the-tail"])
def test_deep_cut_by_units_same_bits_on_any_number_of_threads(case, blocks, monkeypatch):
    cls, y, kwargs = DEEP_UNIT_CASES[case]
    blocks(3)
    monkeypatch.setattr(_threads, "FORCE_BY_UNITS", True)
    assert_same_bits_on_one_thread_and_in_a_worker(cls, y, kwargs)


@pytest.mark.parametrize("hidden", [(24,), (24, 6)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cut_by_units_sharing_the_gathered_rows(hidden, dtype, blocks, monkeypatch):
    """Batches of 256 KiB or more of X rows are gathered once, each thread its share,
    into buffers the threads share (one batch ahead): on two threads, bitwise the fit
    that gathers every batch in each thread (one thread), over epochs whose last batch
    is short, and the NumPy reference's model to rounding."""
    rs = np.random.RandomState(3)
    itemsize = np.dtype(dtype).itemsize
    d, batch = 300, (256 * 1024) // (300 * itemsize) + 1      # just over 256 KiB
    Xw = rs.normal(size=(3 * batch + 17, d)).astype(dtype)
    yw = rs.randint(0, 3, size=Xw.shape[0])
    kwargs = dict(hidden_layer_sizes=hidden, batch_size=batch, random_state=0,
                  max_iter=3, tol=0, n_iter_no_change=10**6, learning_rate_init=1e-2)
    blocks(2)
    monkeypatch.setattr(_threads, "FORCE_BY_UNITS", True)
    # float32 batches are gathered only with the row products off (_kernels.row_products)
    saved = _kernels.row_products()
    _kernels.row_products(False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            two = MLPClassifier(**kwargs).fit(Xw, yw)
            with threadpool_limits(limits=1, user_api="openmp"):
                one = MLPClassifier(**kwargs).fit(Xw, yw)
            ref = MLPClassifier(backend="numpy", **kwargs).fit(Xw, yw)
    finally:
        _kernels.row_products(saved)
    assert_array_equal(two._flat_params, one._flat_params)
    assert two.loss_curve_ == one.loss_curve_
    tol = 1e-4 if dtype == np.float32 else 1e-10
    assert_allclose(two._flat_params, ref._flat_params, rtol=tol, atol=tol)


@pytest.mark.parametrize("case", list(UNIT_CASES))
@pytest.mark.parametrize("weighted", [False, True])
def test_cut_by_units_agrees_with_numpy_and_one_block(case, weighted, blocks):
    cls, y, kwargs = UNIT_CASES[case]
    kwargs = dict({"hidden_layer_sizes": (33,)}, **kwargs)
    weights = sw if weighted else None
    tol = 1e-4 if kwargs.get("dtype") == np.float32 else 1e-10
    ref = fit(cls, y, dict(kwargs, backend="numpy"), weights)
    blocks(1)
    one = fit(cls, y, kwargs, weights)
    for n in (2, 3, 4):
        blocks(n)
        batch = kwargs.get("batch_size", 64)
        assert _threads.cut_by_units([7, kwargs["hidden_layer_sizes"][0],
                                      one.n_outputs_], batch, n, False, False)
        got = fit(cls, y, kwargs, weights)
        assert_allclose(got._flat_params, ref._flat_params, rtol=tol, atol=tol)
        assert_allclose(got._flat_params, one._flat_params, rtol=tol, atol=tol)
        assert_allclose(got.loss_curve_, ref.loss_curve_, rtol=tol)
        if kwargs.get("solver") != "sgd":
            assert got._optimizer.t == ref._optimizer.t
        for a, b in zip(got._optimizer.buffers, ref._optimizer.buffers):
            if a is not None and b is not None:
                assert_allclose(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("case", ["multiclass-adam-relu", "binary-sgd-nesterov",
                                  "silu-needs-z"])
def test_cut_by_units_same_bits_on_any_number_of_threads(case, blocks):
    cls, y, kwargs = UNIT_CASES[case]
    kwargs = dict(kwargs, hidden_layer_sizes=(40,))
    blocks(3)
    assert _threads.cut_by_units([7, 40, 4], 64, 3, False, False)
    assert_same_bits_on_one_thread_and_in_a_worker(cls, y, kwargs)


@pytest.mark.parametrize("hidden", [(32,), (32, 6, 5)])
def test_cut_by_units_warm_start_and_partial_fit_continue_the_optimizer(hidden, blocks,
                                                                        monkeypatch):
    """The packed parameters and optimizer state (and a deeper net's copy of its tail)
    go back to the flat buffers at the end of every call: continuing a fit equals one
    longer fit of the NumPy reference."""
    blocks(2)
    monkeypatch.setattr(_threads, "FORCE_BY_UNITS", True)
    kwargs = dict(hidden_layer_sizes=hidden, random_state=0, batch_size=64)
    est = MLPClassifier(**kwargs)
    ref = MLPClassifier(backend="numpy", **kwargs)
    for _ in range(3):
        est.partial_fit(X, y_multi, classes=np.arange(4))
        ref.partial_fit(X, y_multi, classes=np.arange(4))
    assert_allclose(est._flat_params, ref._flat_params, rtol=1e-10, atol=1e-12)
    for a, b in zip(est._optimizer.buffers, ref._optimizer.buffers):
        assert_allclose(a, b, rtol=1e-9, atol=1e-14)


def test_cut_by_units_kernel_checks_its_arguments():
    from pybackprop._optim import AdamState

    lay = Layout([7, 20, 4])
    net = Net(lay, "relu", "softmax", "log_loss", 1e-4)
    data = Data(X, np.eye(4)[y_multi], None, True, np.float64)
    params = np.random.RandomState(0).normal(size=lay.n_params) * 0.1
    opt = AdamState(lay.n_params, np.float64, 1e-3, 0.9, 0.999, 1e-8)
    backend = CythonBackend(net, data, 64, n_blocks=2, n_threads=2, by_units=True)
    backend.split_ws = backend.split_ws[:-1]
    with pytest.raises(ValueError, match="smaller than unit_split_size"):
        backend.run_epoch(params, None, 203, 64, opt)
    backend = CythonBackend(net, data, 64, n_blocks=21, n_threads=2, by_units=True)
    with pytest.raises(ValueError, match="more blocks than hidden units"):
        backend.run_epoch(params, None, 203, 64, opt)
    lay = Layout([7, 4])
    net = Net(lay, "relu", "softmax", "log_loss", 1e-4)
    backend = CythonBackend(net, data, 64, n_blocks=2, n_threads=2)
    backend.split_ws = np.empty(10**5)
    params = np.zeros(lay.n_params)
    with pytest.raises(ValueError, match="needs a hidden layer"):
        backend.run_epoch(params, None, 203, 64, AdamState(lay.n_params, np.float64, 1e-3,
                                                           0.9, 0.999, 1e-8))


@pytest.mark.parametrize("units", [[7, 37, 4], [7, 37, 6, 5, 4]])
@pytest.mark.parametrize("activation", ["relu", "gelu", ("relu", "relu", "silu")])
@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_cut_by_units_stays_inside_its_workspace(units, activation, n_threads):
    """The kernels run without bounds checks: a workspace of exactly
    unit_split_size() values, followed by sentinels, leaves the sentinels as they were
    (and the result equals that of a roomy workspace); with a tail of two layers too,
    whose activations may need z where the first does not."""
    from pybackprop._optim import AdamState

    if isinstance(activation, tuple):
        activation = activation[:len(units) - 2]
    lay = Layout(units)
    net = Net(lay, activation, "softmax", "log_loss", 1e-3)
    data = Data(X, np.eye(4)[y_multi], None, True, np.float64)
    start = np.random.RandomState(0).normal(size=lay.n_params) * 0.3
    results = []
    for spare in (0, 1000):
        backend = CythonBackend(net, data, 50, n_blocks=3, n_threads=n_threads,
                                by_units=True)
        size = backend.split_ws.size
        assert size == _kernels.unit_split_size(lay.units, net.codes()[0], 50, 3,
                                                n_threads)
        room = np.full(size + spare + 64, 12345.0)
        backend.split_ws = room[:size + spare]
        params = start.copy()
        opt = AdamState(lay.n_params, np.float64, 1e-2, 0.9, 0.999, 1e-8)
        rows = np.random.RandomState(1).permutation(203)
        for _ in range(2):
            backend.run_epoch(params, rows, 203, 50, opt)
        assert (room[size + spare:] == 12345.0).all()
        results.append(params)
    assert_array_equal(results[0], results[1])


def _shared_sparse_backend(X_csr, y, n_blocks=2):
    d = X_csr.shape[1]
    lay = Layout([d, 4, 3])
    net = Net(lay, "relu", "softmax", "log_loss", 1e-3)
    data = Data(X_csr, np.eye(3)[y], None, True, np.float64)
    return lay, net, data, CythonBackend(net, data, X_csr.shape[0], n_blocks=n_blocks,
                                         block_grads=False)


def test_shared_sparse_step_with_repeated_rows_stays_in_its_workspace():
    """The index workspace is sized for batches of distinct rows; an epoch order that
    repeats the longest row (a hand-made call) holds more nonzeros, and is stepped
    chunk by chunk from the batch's rows instead: nothing written past the workspace,
    and the same step as with block gradients."""
    from pybackprop._optim import SGDState

    n, d = 64, 300
    lil = sp.lil_matrix((n, d))
    lil[0, :] = 1.0
    lil[1:, 5] = 2.0
    Xs = lil.tocsr()
    y = np.arange(n) % 3
    rows = np.zeros(n, dtype=np.intp)   # row 0, 64 times: 19200 nonzeros in a batch
    results = []
    for shared in (True, False):
        lay, net, data, backend = _shared_sparse_backend(Xs, y)
        guard = 1 << 12
        if shared:
            padded = np.full(backend.index_ws.size + guard, -7, dtype=np.intp)
            backend.index_ws = padded[:backend.index_ws.size]
        else:
            backend.block_grads = True
            backend.grads = np.empty(2 * lay.n_params)
        params = np.random.RandomState(0).normal(size=lay.n_params) * 0.1
        opt = SGDState(lay.n_params, np.float64, 0.1, "constant", 0.0, False, 0.5)
        backend.run_epoch(params, rows.copy(), n, n, opt)
        if shared:
            assert (padded[backend.index_ws.size:] == -7).all()
        results.append(params)
    assert_allclose(results[0], results[1], rtol=1e-12, atol=1e-14)


def test_shared_sparse_step_checks_its_sizes_and_layout():
    with pytest.raises(ValueError, match="n_blocks must be at least 1"):
        _kernels.sparse_step_sizes(10, 4, 0, 5)
    with pytest.raises(ValueError, match="not negative"):
        _kernels.sparse_step_sizes(10, 4, 2, -1)
    # the bound: the batch_size longest rows, whatever batch_size
    indptr = np.array([0, 3, 3, 10, 11], dtype=np.int32)   # rows of 3, 0, 7, 1
    assert _kernels.sparse_batch_nnz(indptr, 2) == 10
    assert _kernels.sparse_batch_nnz(indptr, 2**62) == 11
    # grads holds no room for W_1: a layout with b_1 before W_1 is refused
    from pybackprop._optim import SGDState

    Xs = sp.random(64, 100, density=0.2, format="csr", random_state=0)
    lay, net, data, backend = _shared_sparse_backend(Xs, np.arange(64) % 3)
    h, d, k = 4, 100, 3
    static = list(backend._epoch_args()[0])
    static[1] = np.array([h, h + d * h], dtype=np.intp)            # W_1, W_2
    static[2] = np.array([0, h + d * h + h * k], dtype=np.intp)    # b_1 first, b_2
    backend._epoch_static = (tuple(static), backend.net.keep)
    params = np.zeros(lay.n_params)
    opt = SGDState(lay.n_params, np.float64, 0.1, "constant", 0.0, False, 0.5)
    with pytest.raises(ValueError, match="W_1 first"):
        backend.run_epoch(params, None, 64, 64, opt)


def test_run_epoch_checks_rows_batch_size_layout_and_indptr():
    """What a hand-made run_epoch call could get wrong is refused before any thread
    starts: rows outside X, y or sample_weight, a batch size below 1, a layer table
    reaching past params, a sparse X whose row pointers go down or past its values."""
    from pybackprop._optim import SGDState

    lay, net, backend = _backend(2)
    params = np.random.RandomState(0).normal(size=lay.n_params) * 0.1
    opt = SGDState(lay.n_params, np.float64, 0.1, "constant", 0.0, False, 0.5)
    with pytest.raises(ValueError, match="rows holds a row outside"):
        backend.run_epoch(params, np.array([0, 5, 100000]), 3, 2, opt)
    with pytest.raises(ValueError, match="rows holds a row outside"):
        backend.run_epoch(params, np.array([0, -1]), 2, 2, opt)
    with pytest.raises(ValueError, match="fewer than n_rows rows"):
        backend.run_epoch(params, None, 204, 64, opt)
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        backend.run_epoch(params, None, 203, 0, opt)
    static = list(backend._epoch_args()[0])
    static[1] = np.array([0, lay.n_params - 4], dtype=np.intp)   # W_2 past the end
    backend._epoch_static = (tuple(static), backend.net.keep)
    with pytest.raises(ValueError, match="fewer values than the layers"):
        backend.run_epoch(params, None, 203, 64, opt)
    # sparse: indptr going down, or past the values
    Xs = sp.random(64, 100, density=0.2, format="csr", random_state=0)
    for bad in ("down", "past"):
        lay, net, data, backend = _shared_sparse_backend(Xs, np.arange(64) % 3)
        values, indices, indptr, Y, labels, sw = data.for_kernels()
        indptr = indptr.copy()
        if bad == "down":
            indptr[5] = indptr[7] + 1
        else:
            indptr[-1] = values.size + 1
        data._kernel = (values, indices, indptr, Y, labels, sw)
        backend._epoch_static = None
        params = np.zeros(lay.n_params)
        opt = SGDState(lay.n_params, np.float64, 0.1, "constant", 0.0, False, 0.5)
        with pytest.raises(ValueError, match="indptr"):
            backend.run_epoch(params, None, 64, 64, opt)


@pytest.mark.parametrize("by_units", [True, False])
def test_barrier_clock_counts_every_barrier_of_each_thread(by_units, blocks, monkeypatch):
    """With the barrier clock on, each of two threads passes the epoch loops' barriers:
    one at an epoch's start, two a batch, and at an epoch's end three cut by units (the
    last batch's, then the loop's two) or two cut by rows; the time it worked and waited
    adds up to no more than the fit took. Switched off, nothing is counted."""
    if _kernels.max_threads() < 2:
        pytest.skip("one OpenMP thread: no barriers")
    blocks(2)
    monkeypatch.setattr(_threads, "FORCE_BY_UNITS", by_units)
    epochs, batches = 3, 4     # 203 rows in batches of 64
    assert not _kernels.barrier_clock()
    try:
        assert _kernels.barrier_clock(True)
        start = time.perf_counter()
        est = fit(MLPClassifier, y_multi, dict(hidden_layer_sizes=(16,)), max_iter=epochs)
        took = time.perf_counter() - start
        times = np.array(_kernels.barrier_times())
    finally:
        _kernels.barrier_clock(False)
    assert est.n_iter_ == epochs
    counts = times[:, :, 2]
    assert_array_equal(counts[:2], [[epochs, epochs * batches, epochs * batches,
                                     epochs * (3 if by_units else 2)]] * 2)
    assert not counts[2:].any()
    assert (times[:2, :, :2] >= 0).all()
    assert (times[:2, 1, 0] > 0).all()
    assert (times[:2, :, :2].sum(axis=(1, 2)) <= took).all()
    # off: the times were cleared and stay so
    fit(MLPClassifier, y_multi, dict(hidden_layer_sizes=(16,)), max_iter=1)
    assert not np.array(_kernels.barrier_times()).any()
