"""Scale-out with Dask: model selection fanned out to a cluster through joblib, and
streaming ``partial_fit`` over the blocks of a dask array.

The cluster is a real ``distributed.LocalCluster`` (two worker processes, one thread
each, everything on 127.0.0.1, no dashboard), started once for the module and shut
down by its context managers. Skipped when dask / distributed are not installed.
"""

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score

from _helpers import digits, make_data
from pybackprop import MLPClassifier, MLPRegressor

dask = pytest.importorskip("dask", reason="dask is not installed")
da = pytest.importorskip("dask.array", reason="dask.array is not installed")

pytestmark = [
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
    # when another cluster on this machine holds port 8787, the scheduler's HTTP server
    # (no dashboard) takes a free port instead, still on 127.0.0.1
    pytest.mark.filterwarnings("ignore:Port 8787 is already in use:UserWarning"),
]

LOCALHOST = "tcp://127.0.0.1:"
CHUNK = 60


@pytest.fixture(scope="module")
def client():
    """A Client on a two-process LocalCluster, listening on 127.0.0.1 only."""
    distributed = pytest.importorskip("distributed", reason="distributed is not installed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None,
    ) as cluster, distributed.Client(cluster) as client:
        client.wait_for_workers(2, timeout=60)
        yield client


def assert_local_only(client):
    """Scheduler, nannies, workers and their HTTP servers all listen on 127.0.0.1."""
    info = client.scheduler_info()
    assert info["address"].startswith(LOCALHOST)
    assert client.cluster.scheduler.http_server.address == "127.0.0.1"
    assert len(info["workers"]) == 2
    for address, worker in info["workers"].items():
        assert address.startswith(LOCALHOST)
        assert worker["nanny"].startswith(LOCALHOST)
    http = client.run(lambda dask_worker: dask_worker.http_server.address)
    assert set(http.values()) == {"127.0.0.1"}


# ---------------------------------------------------------------------------
# model selection: one fit per task, fanned out through joblib


def grid_search(X, y):
    est = MLPClassifier(max_iter=12, learning_rate_init=0.01, random_state=0)
    grid = {"alpha": [1e-4, 1.0], "hidden_layer_sizes": [(8,), (16,)]}
    return GridSearchCV(est, grid, cv=KFold(3, shuffle=True, random_state=0)).fit(X, y)


def test_grid_search_on_dask_cluster_matches_local(client):
    """GridSearchCV under ``joblib.parallel_backend("dask")`` runs its fits on the
    cluster's workers and finds what the local run finds, score for score."""
    import joblib
    from distributed import get_task_stream

    assert_local_only(client)
    X, y = digits(360)
    local = grid_search(X, y)
    with get_task_stream(client) as stream, joblib.parallel_backend("dask"):
        remote = grid_search(X, y)
    assert len(stream.data) >= 12  # 4 candidates x 3 folds (+ the refit)
    assert {task["worker"] for task in stream.data} <= set(client.scheduler_info()["workers"])
    assert_array_equal(remote.cv_results_["mean_test_score"],
                       local.cv_results_["mean_test_score"])
    assert_array_equal(remote.cv_results_["split0_test_score"],
                       local.cv_results_["split0_test_score"])
    assert remote.best_params_ == local.best_params_
    assert local.best_score_ > 0.5  # the grid is not degenerate
    assert_array_equal(remote.best_estimator_.predict(X), local.best_estimator_.predict(X))


def test_cross_val_score_on_dask_cluster_matches_local(client):
    import joblib

    X, y = make_data("regression", n=300)
    est = MLPRegressor(hidden_layer_sizes=(10,), solver="lbfgs", max_iter=30, random_state=0)
    local = cross_val_score(est, X, y, cv=4)
    with joblib.parallel_backend("dask"):
        remote = cross_val_score(est, X, y, cv=4)
    assert_array_equal(remote, local)


# ---------------------------------------------------------------------------
# streaming: partial_fit over the blocks of a dask array


def partial_fit_block(est, X, y, **kwargs):
    """One partial_fit on one block; returns the model, so blocks can be chained."""
    return est.partial_fit(X, y, **kwargs)


def stream_numpy(est, X, y, **kwargs):
    for start in range(0, X.shape[0], CHUNK):
        est.partial_fit(X[start:start + CHUNK], y[start:start + CHUNK], **kwargs)
    return est


def dask_blocks(X, y):
    X_da = da.from_array(X, chunks=(CHUNK, -1))
    y_da = da.from_array(y, chunks=(CHUNK,) + (-1,) * (y.ndim - 1))
    n_blocks = int(np.ceil(X.shape[0] / CHUNK))
    assert X_da.numblocks == (n_blocks, 1) and y_da.numblocks[0] == n_blocks
    return X_da.to_delayed().ravel(), y_da.to_delayed().ravel()


def stream_dask(est, X, y, scheduler, **kwargs):
    """Each block is computed (by ``scheduler``), then handed to partial_fit here."""
    for xb, yb in zip(*dask_blocks(X, y)):
        xb, yb = dask.compute(xb, yb, scheduler=scheduler)
        est.partial_fit(xb, yb, **kwargs)
    return est


def stream_dask_chained(est, X, y, scheduler, **kwargs):
    """The model itself travels: one task per block, each taking the previous model."""
    for xb, yb in zip(*dask_blocks(X, y)):
        est = dask.delayed(partial_fit_block)(est, xb, yb, **kwargs)
    return est.compute(scheduler=scheduler)


def streaming_cases():
    X, y = make_data("multiclass", n=300)
    Xr, yr = make_data("multioutput", n=300)
    common = dict(hidden_layer_sizes=(12,), random_state=0, learning_rate_init=0.01)
    return [
        (MLPClassifier(**common), X, y, {"classes": np.unique(y)}),
        (MLPRegressor(solver="sgd", **common), Xr, yr, {}),
        (MLPClassifier(**common), X.astype(np.float32), y, {"classes": np.unique(y)}),
    ]


def assert_same_model(a, b):
    assert a._flat_params.dtype == b._flat_params.dtype
    assert_array_equal(a._flat_params, b._flat_params)
    assert a.loss_curve_ == b.loss_curve_
    assert a.t_ == b.t_


@pytest.mark.parametrize("case", range(3), ids=["classifier", "regressor", "float32"])
def test_partial_fit_over_dask_blocks_synchronous(case):
    """Without a cluster: the blocks of a dask array give the model the numpy chunks give."""
    est, X, y, kwargs = streaming_cases()[case]
    ref = stream_numpy(est.__class__(**est.get_params()), X, y, **kwargs)
    assert len(ref.loss_curve_) == 5
    got = stream_dask(est.__class__(**est.get_params()), X, y, "synchronous", **kwargs)
    assert_same_model(got, ref)
    chained = stream_dask_chained(est.__class__(**est.get_params()), X, y, "synchronous",
                                  **kwargs)
    assert_same_model(chained, ref)


def test_partial_fit_over_dask_blocks_on_cluster(client):
    """On the cluster: blocks computed by the workers and fed to one model here, or the
    model handed from task to task on the workers: both equal the numpy chunk loop."""
    assert_local_only(client)
    for est, X, y, kwargs in streaming_cases():
        ref = stream_numpy(est.__class__(**est.get_params()), X, y, **kwargs)
        got = stream_dask(est.__class__(**est.get_params()), X, y, client.get, **kwargs)
        assert_same_model(got, ref)
        chained = stream_dask_chained(est.__class__(**est.get_params()), X, y, client.get,
                                      **kwargs)
        assert_same_model(chained, ref)
        assert_array_equal(chained.predict(X), ref.predict(X))
