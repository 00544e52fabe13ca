"""The first layer's products made from X's rows where they lie (csrc/_rowgemm.h, used
by float32 fits cut by hidden units on CPUs with AVX-512): against NumPy, at every
edge of their blocks; the same bits wherever an output sits in a block; and fits that
use them against fits that gather and call BLAS, and against the NumPy backend."""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from threadpoolctl import threadpool_limits

from pybackprop import MLPClassifier, MLPRegressor, _kernels, _threads

from _helpers import assert_same_bits_on_any_number_of_threads, short_fit

pytestmark = pytest.mark.skipif(not _kernels.row_products(),
                                reason="the row products need a CPU with AVX-512")


@pytest.fixture
def row_products():
    """Turn the row products on or off for a test; restored afterwards."""
    saved = _kernels.row_products()
    yield _kernels.row_products
    _kernels.row_products(saved)


def products(X, rows, W, dZ):
    """Z = X[rows] W and G = X[rows]^T dZ by the kernels, each written into a buffer
    with a guard of NaN after it, which must stay as it was."""
    m = X.shape[0] if rows is None else len(rows)
    d, n = W.shape
    zbuf = np.full(m * n + 17, np.nan, X.dtype)
    gbuf = np.full(d * n + 17, np.nan, X.dtype)
    Z = zbuf[:m * n].reshape(m, n)
    G = gbuf[:d * n].reshape(d, n)
    _kernels._row_products(X, rows, W, Z, dZ, G)
    assert np.isnan(zbuf[m * n:]).all() and np.isnan(gbuf[d * n:]).all()
    return Z, G


def assert_product(got, A, B, dtype):
    """got == A @ B up to the rounding of a sum of products in dtype: within
    4 k eps Σ|a b| of each exact (float64 for float32 inputs, longdouble otherwise)."""
    wide = np.float64 if dtype == np.float32 else np.longdouble
    exact = A.astype(wide) @ B.astype(wide)
    bound = np.abs(A).astype(wide) @ np.abs(B).astype(wide)
    eps = np.finfo(dtype).eps
    k = A.shape[1]
    err = np.abs(got.astype(wide) - exact)
    assert (err <= 4 * k * eps * bound + np.finfo(dtype).tiny).all(), float(err.max())


# widths around the blocks' edges: 6 rows a block (forward: batch rows; backward:
# inputs), 16 floats / 8 doubles a vector, four vectors a block, sums cut every 256
# inputs (forward) and every 128 rows (backward)
INPUTS = [1, 5, 6, 7, 255, 256, 257, 600]
ROWS = [1, 5, 6, 7, 127, 128, 129, 300]
UNITS = [1, 7, 8, 15, 16, 17, 50, 64, 65, 130]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", INPUTS)
def test_products_match_numpy(dtype, d):
    rng = np.random.RandomState(d)
    X = rng.standard_normal((310, d)).astype(dtype)
    for i, m in enumerate(ROWS):
        for j, n in enumerate(UNITS):
            rows = None if (i + j) % 3 == 0 else rng.randint(0, 310, size=m).astype(np.intp)
            Xb = X[:m] if rows is None else X[rows]
            W = rng.standard_normal((d, n)).astype(dtype)
            dZ = rng.standard_normal((m, n)).astype(dtype)
            Z, G = products(X[:m] if rows is None else X, rows, W, dZ)
            assert_product(Z, Xb, W, dtype)
            assert_product(G, Xb.T, dZ, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_an_output_has_the_same_bits_wherever_it_sits(dtype):
    """Each output is one chain of multiply-adds down k in a fixed order, whichever
    block, vector and lane it falls in: columns moved along by 1 to 70 places, and
    rows moved within the batch, give bitwise the same values (a fit's arithmetic does
    not depend on how its units are shared among threads)."""
    rng = np.random.RandomState(5)
    d, m, n = 300, 140, 37
    X = rng.standard_normal((400, d)).astype(dtype)
    rows = rng.randint(0, 400, size=m).astype(np.intp)
    W = rng.standard_normal((d, n)).astype(dtype)
    dZ = rng.standard_normal((m, n)).astype(dtype)
    Z, G = products(X, rows, W, dZ)
    for shift in (1, 5, 16, 33, 70):
        Ws = np.ascontiguousarray(np.hstack([rng.standard_normal((d, shift)).astype(dtype), W]))
        dZs = np.ascontiguousarray(np.hstack([rng.standard_normal((m, shift)).astype(dtype),
                                              dZ]))
        Zs, Gs = products(X, rows, Ws, dZs)
        assert_array_equal(Zs[:, shift:], Z)
        assert_array_equal(Gs[:, shift:], G)
    # the batch's rows moved down by 1 to 7 places: the forward's outputs keep their bits
    for lead in (1, 4, 7):
        more = np.r_[rng.randint(0, 400, size=lead), rows].astype(np.intp)
        Zr, _ = products(X, more, W, rng.standard_normal((m + lead, n)).astype(dtype))
        assert_array_equal(Zr[lead:], Z)
    # a row alone (the forward's one-row block) or last in a batch of 6 k + 1 rows
    for i in (0, 1, 77, m - 1):
        Z1, _ = products(X, rows[i:i + 1], W, dZ[i:i + 1])
        assert_array_equal(Z1, Z[i:i + 1])
    Z7, _ = products(X, rows[:7], W, dZ[:7])
    assert_array_equal(Z7, Z[:7])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_products_of_no_inputs_are_zeros(dtype):
    X = np.zeros((9, 0), dtype)
    Z, G = products(X, np.array([3, 1, 8], np.intp), np.zeros((0, 5), dtype),
                    np.ones((3, 5), dtype))
    assert_array_equal(Z, np.zeros((3, 5), dtype))
    assert G.shape == (0, 5)


def test_products_check_their_arguments():
    X = np.zeros((10, 4), np.float32)
    W = np.zeros((4, 3), np.float32)
    Z = np.zeros((2, 3), np.float32)
    G = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match="outside X's 10 rows"):
        _kernels._row_products(X, np.array([0, 10], np.intp), W, Z, Z, G)
    with pytest.raises(ValueError, match="shapes do not match"):
        _kernels._row_products(X, np.array([0, 1], np.intp), W[:3], Z, Z, G)
    with pytest.raises(ValueError, match="shapes do not match"):
        _kernels._row_products(X, None, W, Z, Z, G)


rng = np.random.RandomState(0)
X = rng.normal(size=(611, 40)).astype(np.float32)
y_multi = rng.randint(0, 4, size=611)
y_reg = np.c_[np.sin(X[:, 0]), X[:, 1] ** 2]
CASES = {
    "adam-relu": (MLPClassifier, y_multi, dict(hidden_layer_sizes=(70,))),
    "sgd-tanh-deep": (MLPClassifier, y_multi, dict(hidden_layer_sizes=(50, 9, 5),
                                                   activation="tanh", solver="sgd",
                                                   momentum=0.9)),
    "regression-no-shuffle": (MLPRegressor, y_reg, dict(hidden_layer_sizes=(33,),
                                                        shuffle=False, alpha=0.1)),
    # a second layer of 32 or more units: its products are made by the same loops
    "wide-second-layer": (MLPClassifier, y_multi, dict(hidden_layer_sizes=(48, 40),
                                                       activation="logistic")),
    "wide-second-layer-deep": (MLPRegressor, y_reg, dict(hidden_layer_sizes=(64, 33, 6),
                                                         solver="sgd", momentum=0.8,
                                                         nesterovs_momentum=False)),
}


def fit(cls, y, kwargs, sample_weight=None, dtype=np.float32):
    return short_fit(cls, X, y, kwargs, dtype, sample_weight)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("weighted", [False, True])
def test_fits_agree_with_blas_and_numpy(case, weighted, row_products, cut_by_units):
    """Four epochs of batches of 96 rows (the last of 35) cut by units into two
    blocks, with the row products and with BLAS on gathered rows: the same model to
    float32 rounding, both that of the NumPy backend."""
    cls, y, kwargs = CASES[case]
    sw = np.random.RandomState(1).uniform(0.2, 2.0, size=len(X)) if weighted else None
    assert row_products(True)
    direct = fit(cls, y, kwargs, sw)
    assert _kernels._last_split_used_row_products()
    assert not row_products(False)
    gathered = fit(cls, y, kwargs, sw)
    assert not _kernels._last_split_used_row_products()
    ref = fit(cls, y, dict(kwargs, backend="numpy"), sw)
    for got in (direct, gathered):
        assert_allclose(got._flat_params, ref._flat_params, rtol=1e-4, atol=1e-4)
        assert_allclose(got.loss_curve_, ref.loss_curve_, rtol=1e-4)


@pytest.mark.parametrize("case", list(CASES))
def test_fits_same_bits_on_any_number_of_threads(case, row_products, cut_by_units):
    cls, y, kwargs = CASES[case]
    if _kernels.max_threads() < 2:
        pytest.skip("one OpenMP thread: nothing to compare")
    assert row_products(True)

    def used():
        assert _kernels._last_split_used_row_products()

    assert_same_bits_on_any_number_of_threads(lambda: fit(cls, y, kwargs), used)


def test_row_products_switch(row_products):
    assert row_products(False) is False and row_products() is False
    assert row_products(True) is True and row_products() is True


@pytest.fixture
def small_parallel_predicts(monkeypatch):
    """Every dense predict shares its chunks among threads, however small."""
    monkeypatch.setattr(_threads, "PARALLEL_PREDICT_FLOPS", 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_predict_shared_among_threads(dtype, row_products, small_parallel_predicts):
    """predict_proba on two threads, in chunks that fit a core's cache (the last one
    short): bitwise what one thread gives, and what BLAS and the NumPy backend give to
    rounding."""
    rs = np.random.RandomState(4)
    Xp = rs.normal(size=(5003, 40)).astype(dtype)
    est = fit(MLPClassifier, y_multi, dict(hidden_layer_sizes=(70, 40)), dtype=dtype)
    assert row_products(True)
    if _threads.predict_threads(len(Xp), est._layout.units, dtype, False) < 2:
        pytest.skip("one OpenMP thread: nothing to compare")
    many = est.predict_proba(Xp)
    assert many.dtype == dtype
    with threadpool_limits(limits=1, user_api="openmp"):
        assert _threads.predict_threads(len(Xp), est._layout.units, dtype, False) == 1
        one = est.predict_proba(Xp)
    assert_array_equal(many, one)
    # rows predicted alone or in other chunks: the same bits
    assert_array_equal(est.predict_proba(Xp[4990:]), many[4990:])
    assert_array_equal(est.predict_proba(Xp[17:18]), many[17:18])
    assert not row_products(False)
    blas = est.predict_proba(Xp)
    ref = est.set_params(backend="numpy").predict_proba(Xp)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
    assert_allclose(many, blas, **tol)
    assert_allclose(many, ref, **tol)


def test_predict_threads_rule(row_products, monkeypatch):
    """Threads for a dense predict of PARALLEL_PREDICT_FLOPS or more, float32 or
    float64, with the row products on; one otherwise."""
    monkeypatch.setattr(_threads, "PARALLEL_PREDICT_FLOPS", 4e6)
    units = np.array([64, 100, 10])          # 14800 flops a row: 270.3 rows make 4e6
    many = min(2, _kernels.max_threads(), _threads.usable_cores())
    assert row_products(True)
    for dtype in (np.float32, np.float64):
        assert _threads.predict_threads(271, units, dtype, False) == many
        assert _threads.predict_threads(270, units, dtype, False) == 1
        assert _threads.predict_threads(10**6, units, dtype, True) == 1      # sparse
    assert _threads.predict_threads(10**6, units, np.float16, False) == 1
    assert not row_products(False)
    assert _threads.predict_threads(10**6, units, np.float64, False) == 1


def test_predict_on_threads_stops_at_nan(row_products, small_parallel_predicts):
    rs = np.random.RandomState(6)
    Xp = rs.normal(size=(4000, 40)).astype(np.float32)
    Xp[3990, 7] = np.nan
    est = fit(MLPClassifier, y_multi, dict(hidden_layer_sizes=(70,)))
    assert row_products(True)
    assert _threads.predict_threads(len(Xp), est._layout.units, np.float32, False) == \
        min(2, _kernels.max_threads())
    with pytest.raises(ValueError, match="Input X contains NaN"):
        est.predict(Xp)


def test_predict_kernel_checks_threads_and_workspace(row_products):
    est = fit(MLPClassifier, y_multi, dict(hidden_layer_sizes=(70,)))
    lay = est._layout
    act_off, size = lay.act_offsets(100)
    hidden = np.array([3], np.intc)
    empty = np.empty(0, np.intc)
    out = np.empty(200 * 4, np.float32)
    args = (lay.units, lay.coef_off, lay.inter_off, act_off, hidden, 5, X[:200].ravel(),
            empty, empty, 200, 100, est._flat_params)
    with pytest.raises(ValueError, match="negative offset"):
        _kernels.predict["float"](lay.units, lay.coef_off, lay.inter_off, -act_off - 1,
                                  *args[4:], np.empty(2 * size, np.float32), out, False, 2)
    # two hidden layers (70, 40), act_off made for 10 rows, chunks of 100: the last
    # hidden layer's block ends at 700 + 100 * 40 = 4700, the first's at 7000, past a
    # workspace of 5000
    deep = fit(MLPClassifier, y_multi, dict(hidden_layer_sizes=(70, 40)))
    dl = deep._layout
    with pytest.raises(ValueError, match="fewer values than n_threads workspaces"):
        _kernels.predict["float"](dl.units, dl.coef_off, dl.inter_off, dl.act_offsets(10)[0],
                                  np.array([3, 3], np.intc), 5, X[:200].ravel(), empty,
                                  empty, 200, 100, deep._flat_params,
                                  np.empty(2 * 5000, np.float32), out, False, 2)
    with pytest.raises(ValueError, match="fewer values than n_threads workspaces"):
        _kernels.predict["float"](*args, np.empty(2 * act_off[-1] - 1, np.float32), out, False,
                                  2)
    with pytest.raises(ValueError, match="at least 1"):
        _kernels.predict["float"](*args, np.empty(size, np.float32), out, False, 0)
    assert row_products(False) is False
    with pytest.raises(ValueError, match="only with the row products"):
        _kernels.predict["float"](*args, np.empty(2 * size, np.float32), out, False, 2)
    assert row_products(True)
    assert _kernels.predict["float"](*args, np.empty(2 * size, np.float32), out, False, 2)
    assert_allclose(out.reshape(200, 4), est.predict_proba(X[:200]), rtol=1e-6)


@pytest.mark.parametrize("units", [[40, 37, 4], [40, 37, 36, 5, 4]])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_cut_by_units_keeps_no_row_buffers_and_stays_inside(units, n_threads,
                                                            row_products):
    """A float32 fit with the row products gathers no rows, so its workspace holds no
    row buffers: shorter than a gathering fit's by those buffers, and a workspace of
    exactly that length, followed by sentinels, leaves them as they were (and gives
    the model of a roomy one)."""
    from pybackprop._backend import CythonBackend, Data, Net
    from pybackprop._layout import Layout
    from pybackprop._optim import AdamState

    lay = Layout(units)
    net = Net(lay, "relu", "softmax", "log_loss", 1e-3)
    data = Data(X, np.eye(4)[y_multi], None, True, np.float32)
    codes = net.codes()[0]
    gathered = _kernels.unit_split_size(lay.units, codes, 50, 3, n_threads)
    assert row_products(True)
    size = _kernels.unit_split_size(lay.units, codes, 50, 3, n_threads, True)
    buffers = 1 if n_threads == 1 else 3
    assert gathered - size == buffers * -(-50 * units[0] // 16) * 16
    start = np.random.RandomState(0).normal(size=lay.n_params).astype(np.float32) * 0.3
    results = []
    for spare in (0, 1000):
        backend = CythonBackend(net, data, 50, n_blocks=3, n_threads=n_threads,
                                by_units=True)
        assert backend.split_ws.size == size
        room = np.full(size + spare + 64, 12345.0, np.float32)
        backend.split_ws = room[:size + spare]
        params = start.copy()
        opt = AdamState(lay.n_params, np.float32, 1e-2, 0.9, 0.999, 1e-8)
        rows = np.random.RandomState(1).permutation(len(X))
        for _ in range(2):
            backend.run_epoch(params, rows, len(X), 50, opt)
        assert _kernels._last_split_used_row_products()
        assert (room[size + spare:] == 12345.0).all()
        results.append(params)
    assert_array_equal(results[0], results[1])
    # a workspace for the row products is too short once they are off
    assert not row_products(False)
    backend.split_ws = room[:size]
    with pytest.raises(ValueError, match="smaller than unit_split_size"):
        backend.run_epoch(start.copy(), rows, len(X), 50,
                          AdamState(lay.n_params, np.float32, 1e-2, 0.9, 0.999, 1e-8))
