"""Every epoch of a fit in one kernel call (run_epoch with an EpochRun): the shuffle
drawn in C is RandomState.shuffle's, and a fit run that way is the fit run one epoch
per call, to the bit: weights, loss curve, stopping epoch, counters and the state of
the random generator afterwards."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_array_equal
from sklearn.exceptions import ConvergenceWarning

from pybackprop import MLPClassifier, MLPRegressor, _threads
from pybackprop._backend import CythonBackend, Data, EpochRun, Net
from pybackprop._layout import Layout
from pybackprop._mlp import BaseMultilayerPerceptron
from pybackprop._optim import SGDState

rng = np.random.RandomState(0)
X = rng.normal(size=(1500, 6))
y_multi = rng.randint(0, 3, size=1500)
y_reg = np.c_[np.sin(X[:, 0]), X[:, 1] ** 2]


def frozen_backend(n_rows, n_blocks=1):
    """A backend whose SGD steps change nothing (learning rate 0), and its state."""
    lay = Layout([6, 4, 3])
    net = Net(lay, "relu", "softmax", "log_loss", 0.0)
    data = Data(X[:n_rows], np.eye(3)[y_multi[:n_rows]], None, True, np.float64)
    params = np.random.RandomState(1).normal(size=lay.n_params)
    opt = SGDState(lay.n_params, np.float64, 0.0, "constant", 0.0, False, 0.5)
    return CythonBackend(net, data, 32, n_blocks=n_blocks, n_threads=n_blocks), params, opt


@pytest.mark.parametrize("n, epochs, seed", [(1, 2, 0), (2, 3, 1), (5, 1, 2), (97, 4, 3),
                                             (1500, 3, 4), (1500, 2, 2**32 - 1)])
def test_shuffle_in_c_is_random_states(n, epochs, seed):
    """rows after k epochs = k calls of RandomState.shuffle, and the generator's state
    after them is RandomState's (several times 624 draws: the regeneration too)."""
    backend, params, opt = frozen_backend(n)
    rs = np.random.RandomState(seed)
    rs.randint(10, size=seed % 7)  # a state part way through its 624 words
    state = rs.get_state(legacy=False)
    run = EpochRun(epochs, state["state"], 0.0, np.inf, np.inf, 0)
    rows = np.arange(n, dtype=np.intp)
    assert backend.run_epoch(params, rows, n, 32, opt, epochs=run) == epochs
    assert run.done == epochs
    expected = np.arange(n, dtype=np.intp)
    for _ in range(epochs):
        rs.shuffle(expected)
    assert_array_equal(rows, expected)
    after = rs.get_state(legacy=False)["state"]
    assert_array_equal(run.key, after["key"])
    assert int(run.pos[0]) == after["pos"]


@pytest.mark.parametrize("n_blocks", [1, 2])
def test_epochs_in_one_call_are_the_epochs_one_by_one(n_blocks):
    """The loss sums recorded per epoch are those of one-epoch calls over the same
    orders, and the weights end the same, bit for bit."""
    lay = Layout([6, 5, 3])
    net = Net(lay, "tanh", "softmax", "log_loss", 1e-3)
    data = Data(X, np.eye(3)[y_multi], None, True, np.float64)
    start = np.random.RandomState(2).normal(size=lay.n_params) * 0.3

    def fresh():
        opt = SGDState(lay.n_params, np.float64, 0.05, "constant", 0.9, True, 0.5)
        return CythonBackend(net, data, 100, n_blocks=n_blocks, n_threads=n_blocks), opt

    backend, opt = fresh()
    params = start.copy()
    rs = np.random.RandomState(3)
    rows = np.arange(1500, dtype=np.intp)
    run = EpochRun(4, rs.get_state(legacy=False)["state"], 0.0, np.inf, np.inf, 0)
    assert backend.run_epoch(params, rows, 1500, 100, opt, epochs=run) == 4

    backend, opt = fresh()
    one_by_one = start.copy()
    order = np.arange(1500, dtype=np.intp)
    totals = []
    for _ in range(4):
        rs.shuffle(order)
        totals.append(backend.run_epoch(one_by_one, order, 1500, 100, opt))
    assert_array_equal(run.totals, totals)
    assert_array_equal(params, one_by_one)


def test_stopping_rule_in_the_kernel():
    """With tol, the call stops after the epoch where the count of epochs without
    improvement first exceeds the patience; best loss and count are the rule's."""
    backend, params, opt = frozen_backend(1500)
    # the weights never change: every epoch has the same loss, never an improvement
    # by more than tol, so epoch 1 sets the best and epochs 2, 3, 4 count
    run = EpochRun(50, None, 1e-4, 2, np.inf, 0)
    assert backend.run_epoch(params, None, 1500, 32, opt, epochs=run) == 4
    assert run.state[1] == 3
    assert run.state[0] == run.totals[0] / 1500
    assert (run.totals[:4] == run.totals[0]).all() and (run.totals[4:] == 0).all()


def test_kernel_rejects_bad_epoch_arguments():
    backend, params, opt = frozen_backend(40)
    rows = np.arange(40, dtype=np.intp)
    run = EpochRun(3, np.random.RandomState(0).get_state(legacy=False)["state"], 0.0,
                   np.inf, np.inf, 0)
    run.key = run.key[:600]
    with pytest.raises(ValueError, match="MT19937 state"):
        backend.run_epoch(params, rows, 40, 32, opt, epochs=run)
    run.key = np.zeros(624, dtype=np.uint32)
    with pytest.raises(ValueError, match="fewer than n_rows"):
        backend.run_epoch(params, rows[:20], 40, 32, opt, epochs=run)
    with pytest.raises(ValueError, match="all n_rows"):   # the shuffle permutes them all
        backend.run_epoch(params, np.r_[rows, rows[:5]], 40, 32, opt, epochs=run)
    run.totals = run.totals[:0]
    with pytest.raises(ValueError, match="totals"):
        backend.run_epoch(params, rows, 40, 32, opt, epochs=run)


# ---------------------------------------------------------------------------
# whole fits: one call against one call per epoch


@pytest.fixture
def one_call_per_epoch(monkeypatch):
    """Fits in this context run one kernel call per epoch."""

    def per_epoch(self, *args, **kwargs):
        return False

    def enter():
        monkeypatch.setattr(BaseMultilayerPerceptron, "_epochs_in_one_call", per_epoch)

    return enter, monkeypatch.undo


FITS = {
    "adam-cut-by-units": (MLPClassifier, y_multi, dict()),
    # the first of two hidden layers cut by units, the second run whole by each thread
    "deep-cut-by-units": (MLPClassifier, y_multi, dict(hidden_layer_sizes=(16, 5),
                                                       by_units=True)),
    "deep-cut-by-units-sgd-adaptive-stops": (MLPRegressor, y_reg, dict(
        hidden_layer_sizes=(16, 6, 4), by_units=True, solver="sgd",
        learning_rate="adaptive", learning_rate_init=0.05, tol=1e-2, n_iter_no_change=1,
        max_iter=200, per_call=5)),
    "sgd-nesterov-tanh": (MLPClassifier, y_multi, dict(solver="sgd", activation="tanh",
                                                       momentum=0.9)),
    "two-layers-by-rows": (MLPRegressor, y_reg, dict(hidden_layer_sizes=(8, 5))),
    "no-shuffle": (MLPClassifier, y_multi, dict(shuffle=False)),
    "stops-on-tol": (MLPClassifier, y_multi, dict(tol=1e-2, n_iter_no_change=2,
                                                  max_iter=200)),
    "sparse": (MLPClassifier, y_multi, dict(sparse=True)),
    # a fit cut by rows whose blocks share one gradient (_threads.block_gradients)
    "two-layers-shared-gradient": (MLPRegressor, y_reg, dict(hidden_layer_sizes=(8, 5),
                                                             block_grads=False)),
    "sparse-shared-gradient": (MLPClassifier, y_multi, dict(sparse=True,
                                                            block_grads=False)),
    "float32": (MLPRegressor, y_reg, dict(dtype=np.float32)),
    # SGD's invscaling schedule, run in the kernel after each epoch
    "sgd-invscaling": (MLPClassifier, y_multi, dict(solver="sgd", learning_rate="invscaling",
                                                    learning_rate_init=0.2, power_t=0.3)),
    "sgd-invscaling-five-per-call": (MLPRegressor, y_reg, dict(
        solver="sgd", learning_rate="invscaling", learning_rate_init=0.05, per_call=5,
        hidden_layer_sizes=(8, 5))),
    # SGD's adaptive schedule, run in the kernel: the rate divided by 5 at each stall
    # until it is <= 1e-6, then the stop; with 5 epochs a call, divisions
    # fall inside calls and at their boundaries
    "sgd-adaptive-stops": (MLPClassifier, y_multi, dict(
        solver="sgd", learning_rate="adaptive", learning_rate_init=0.2, tol=1e-2,
        n_iter_no_change=2, max_iter=200)),
    "sgd-adaptive-five-per-call-stops": (MLPRegressor, y_reg, dict(
        solver="sgd", learning_rate="adaptive", learning_rate_init=0.05, tol=1e-2,
        n_iter_no_change=1, max_iter=200, per_call=5, hidden_layer_sizes=(8, 5))),
    # 5 epochs per kernel call: the calls' boundaries, and the rule stopping at one
    "five-per-call": (MLPClassifier, y_multi, dict(per_call=5)),
    "five-per-call-stops": (MLPClassifier, y_multi, dict(per_call=5, tol=1e-2,
                                                         n_iter_no_change=2, max_iter=200)),
}


@pytest.mark.parametrize("case", list(FITS))
@pytest.mark.parametrize("n_blocks", [1, 2])
def test_fit_in_one_call_is_the_fit_epoch_by_epoch(case, n_blocks, one_call_per_epoch,
                                                   monkeypatch):
    cls, y, kwargs = FITS[case]
    kwargs = dict(kwargs)
    dtype = kwargs.pop("dtype", np.float64)
    Xf = X.astype(dtype)
    if kwargs.pop("sparse", False):
        Xf = sp.csr_matrix(np.where(np.abs(Xf) > 1, Xf, 0))
    params = dict(hidden_layer_sizes=(9,), batch_size=64, max_iter=12, tol=0.0,
                  n_iter_no_change=10**6)
    params.update(kwargs)
    monkeypatch.setattr(_threads, "FORCE_BLOCKS", n_blocks)
    monkeypatch.setattr(_threads, "FORCE_BLOCK_GRADS", params.pop("block_grads", True))
    monkeypatch.setattr(_threads, "FORCE_BY_UNITS", params.pop("by_units", None))
    monkeypatch.setattr(BaseMultilayerPerceptron, "_EPOCHS_PER_CALL",
                        params.pop("per_call", 256))

    def fit(seed_state):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            est = cls(random_state=seed_state, **params).fit(Xf, y)
        return est, [str(w.message) for w in caught]

    rs_one = np.random.RandomState(7)
    one, warned_one = fit(rs_one)
    enter, leave = one_call_per_epoch
    enter()
    rs_each = np.random.RandomState(7)
    each, warned_each = fit(rs_each)
    leave()
    assert one.n_iter_ == each.n_iter_ and one.t_ == each.t_
    assert one.loss_curve_ == each.loss_curve_ and one.loss_ == each.loss_
    assert one.best_loss_ == each.best_loss_
    assert one._no_improvement_count == each._no_improvement_count
    assert_array_equal(one._flat_params, each._flat_params)
    assert one._optimizer.t == each._optimizer.t
    assert one._optimizer.learning_rate == each._optimizer.learning_rate
    assert warned_one == warned_each
    assert rs_one.randint(2**31) == rs_each.randint(2**31)
    if "stops" in case:
        assert one.n_iter_ < 200
    if "adaptive" in case:
        # it stopped on the rate: divided by 5 until it was <= 1e-6 (8 times from 0.2,
        # 7 from 0.05), and not before
        rate = params["learning_rate_init"]
        while rate > 1e-6:
            rate /= 5.0
        assert one._optimizer.learning_rate == rate


def test_partial_fit_and_callbacks_keep_one_call_per_epoch(monkeypatch):
    """partial_fit, callbacks, verbose, early stopping and dropout run one call per
    epoch; the invscaling and adaptive schedules run in the kernel."""
    calls = []
    run_epoch = CythonBackend.run_epoch

    def counted(self, *args, epochs=None, **kwargs):
        calls.append(epochs is not None)
        return run_epoch(self, *args, epochs=epochs, **kwargs)

    monkeypatch.setattr(CythonBackend, "run_epoch", counted)
    small = dict(hidden_layer_sizes=(5,), max_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        MLPClassifier(**small).fit(X, y_multi)
        assert calls == [True]
        calls.clear()
        monkeypatch.setattr(BaseMultilayerPerceptron, "_EPOCHS_PER_CALL", 2)
        MLPClassifier(**small).fit(X, y_multi)
        assert calls == [True, True]  # 2 epochs, then 1
        monkeypatch.setattr(BaseMultilayerPerceptron, "_EPOCHS_PER_CALL", 256)
        for extra in (dict(callbacks=lambda est, info: False), dict(early_stopping=True),
                      dict(dropout=0.2)):
            calls.clear()
            MLPClassifier(**small, **extra).fit(X, y_multi)
            assert calls == [False] * 3, extra
        for schedule in ("invscaling", "adaptive"):
            calls.clear()
            MLPClassifier(**small, solver="sgd", learning_rate=schedule).fit(X, y_multi)
            assert calls == [True], schedule
        calls.clear()
        MLPClassifier(**small).partial_fit(X, y_multi, classes=[0, 1, 2])
        assert calls == [False]


def test_adam_learning_rate_is_the_last_steps_size():
    """_optimizer.learning_rate after an Adam fit is scikit-learn's: the bias-corrected
    step size of the last step (the callbacks report it too)."""
    from sklearn.neural_network import MLPClassifier as SkMLPClassifier

    params = dict(hidden_layer_sizes=(6,), max_iter=4, random_state=0, batch_size=100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = MLPClassifier(**params).fit(X, y_multi)
        ref = SkMLPClassifier(**params).fit(X, y_multi)
    assert ours._optimizer.t == ref._optimizer.t == 4 * 15
    assert ours._optimizer.learning_rate == pytest.approx(ref._optimizer.learning_rate,
                                                          rel=1e-12)
    assert ours._optimizer.learning_rate != ours.learning_rate_init


def test_rule_in_double_whatever_the_types_of_tol_and_best_loss():
    """A float32 best_loss_ (as from_sklearn copies it from a float32 model) or tol
    must not round the stopping rule: the kernel's rule runs in double, and so does
    the replay. Here double and float32 decide loss > best - tol differently."""
    import copy

    Xr = rng.randn(100, 5)
    yr = Xr[:, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        base = MLPRegressor(hidden_layer_sizes=(8,), max_iter=5, random_state=0,
                            warm_start=True, n_iter_no_change=1, tol=1e-4).fit(Xr, yr)
        probe = copy.deepcopy(base).set_params(max_iter=1, n_iter_no_change=10**6)
        first = float(probe.fit(Xr, yr).loss_curve_[-1])
    best = np.float32(first + 0.01)
    # a tol at which double and float32 (numpy 2's arithmetic with a float32 operand)
    # decide loss > best - tol differently: float32's spacing here is about 6e-8
    tol = next(t for t in (float(best) - first + 1e-9 * k for k in range(-100, 100))
               if (first > float(best) - t) != bool(first > best - t))
    counts = first > float(best) - tol
    runs = []
    for callbacks in (None, lambda est, info: False):  # one call; one call per epoch
        est = copy.deepcopy(base)
        est.best_loss_, est._no_improvement_count = best, 1
        est.set_params(max_iter=3, callbacks=callbacks, tol=tol)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(Xr, yr)
        runs.append((est.n_iter_, est.loss_curve_[-est.n_iter_:], est._optimizer.t))
    assert runs[0] == runs[1]
    # counted: 2 epochs without improvement > n_iter_no_change, the fit stops at once
    assert runs[0][0] == (1 if counts else 3)


def test_interrupt_as_a_call_returns_is_not_lost(monkeypatch):
    """A KeyboardInterrupt raised as the kernel call hands back (the signal came in
    its last milliseconds) ends the fit after the epochs it ran."""
    from pybackprop._optim import AdamState

    steps_taken = AdamState.steps_taken
    fired = []

    def interrupted_on_return(self, t):
        steps_taken(self, t)
        if not fired:
            fired.append(t)
            raise KeyboardInterrupt

    monkeypatch.setattr(AdamState, "steps_taken", interrupted_on_return)
    monkeypatch.setattr(BaseMultilayerPerceptron, "_EPOCHS_PER_CALL", 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est = MLPRegressor(hidden_layer_sizes=(8,), max_iter=50, tol=0,
                           n_iter_no_change=10**6, random_state=0).fit(X, y_reg)
    assert est.n_iter_ == 4 and len(est.loss_curve_) == 4
    assert "Training interrupted by user." in [str(w.message) for w in caught]


@pytest.mark.parametrize("n_blocks", [1, 2])
def test_invscaling_in_the_kernel_continues_a_warm_start(n_blocks, one_call_per_epoch,
                                                         monkeypatch):
    """A warm-started SGD fit with the invscaling schedule starts from the samples seen
    (t_): the kernel's rates after each epoch are the estimator's, to the bit, and
    they did fall."""
    monkeypatch.setattr(_threads, "FORCE_BLOCKS", n_blocks)
    params = dict(hidden_layer_sizes=(9,), batch_size=64, max_iter=4, tol=0.0,
                  n_iter_no_change=10**6, solver="sgd", learning_rate="invscaling",
                  learning_rate_init=0.3, power_t=0.7, warm_start=True, random_state=3)

    def two_fits():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est = MLPClassifier(**params).fit(X, y_multi)
            first = est._optimizer.learning_rate
            est.fit(X, y_multi)
        return est, first

    one, first_one = two_fits()
    enter, leave = one_call_per_epoch
    enter()
    each, first_each = two_fits()
    leave()
    n = X.shape[0]
    assert first_one == first_each == 0.3 / (4 * n + 1) ** 0.7
    assert one._optimizer.learning_rate == each._optimizer.learning_rate \
        == 0.3 / (8 * n + 1) ** 0.7
    assert one.t_ == each.t_ == 8 * n
    assert one.loss_curve_ == each.loss_curve_
    assert_array_equal(one._flat_params, each._flat_params)


def test_invscaling_edge_cases_match_one_call_per_epoch(one_call_per_epoch):
    """A float32 power_t (whose rate iteration_ends computes in float32) and a power_t
    whose (t + 1)^power_t overflows (OverflowError as the first epoch ends) give what
    one call per epoch gives."""
    base = dict(hidden_layer_sizes=(7,), batch_size=64, max_iter=5, tol=0.0,
                n_iter_no_change=10**6, solver="sgd", learning_rate="invscaling",
                learning_rate_init=0.1, momentum=0.9, random_state=0)

    def fit(**kw):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est = MLPClassifier(**base, **kw)
            try:
                est.fit(X, y_multi)
            except OverflowError:
                return est, "overflow"
        return est, None

    enter, leave = one_call_per_epoch
    for kw in (dict(power_t=np.float32(0.7)), dict(power_t=200.0)):
        one, raised_one = fit(**kw)
        enter()
        each, raised_each = fit(**kw)
        leave()
        assert raised_one == raised_each
        if raised_one is None:
            assert one.loss_curve_ == each.loss_curve_
            assert_array_equal(one._flat_params, each._flat_params)
            assert one._optimizer.learning_rate == each._optimizer.learning_rate
    assert raised_one == "overflow"
