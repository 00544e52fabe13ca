"""Benchmarks of pybackprop against scikit-learn, its own NumPy backend and PyTorch.

    python bench/run.py [workload ...] [--repeats N] [--quick] [--out FILE]

Prints a markdown table and writes it, with a description of the machine, to
``bench/RESULTS.md``; draws ``bench/results.png`` (speed-up against scikit-learn per
workload) when matplotlib is installed. ``--quick`` (1 repeat, few epochs, smaller
data) is a smoke test of the harness and writes ``bench/RESULTS-quick.md`` instead.
PyTorch and matplotlib are optional: a peer that cannot be imported is skipped with a
note. Benchmarks never assert: a missed target is a "no" in the table.

Method: all contenders run side by side in one process on the same data with the same
parameters; ``tol=0`` and ``n_iter_no_change`` larger than ``max_iter`` make every fit
run exactly the same number of epochs. Each repeat runs every contender once, in turn
(pybackprop, scikit-learn, numpy, torch, pybackprop, ...), each after 0.25 s idle (so
that no library's spinning threads from the run before share its cores), and the table
reports the median over repeats. Data generation, estimator construction and scoring are outside
the timed region; input validation inside ``fit`` / ``predict_proba`` is inside it.

Figures:
* seconds per epoch: fit time / epochs run (L-BFGS: per iteration); predict: per call.
* flops of a fit: ``epochs * n * (4*d*h1 + 6*sum(h_i*h_(i+1)))`` (h includes the output
  layer; for sparse X, ``d`` is replaced by the mean nonzeros per row); of a predict call
  ``2 * n * (d*h1 + sum(h_i*h_(i+1)))``.
* gemm peak: ``np.dot`` and scipy's BLAS ``?gemm`` (the library pybackprop's kernels
  call) on square matrices in the same run; the fraction of peak divides by the larger.
  A workload judged against the peak measures it again in every repeat, just before
  pybackprop's run, and reports the median of the per-repeat fractions: this shared
  machine's speed drifts by 10-30 % over minutes, so a peak taken once at the start
  can judge a slow phase against a fast one (either way).
* gemm floor: the same epoch's matrix products alone (``np.matmul`` on preallocated
  buffers of the workload's shapes), i.e. the time an ideal kernel would spend in BLAS.
* memory: ``tracemalloc`` peak of a separate, untimed one-epoch fit, above what was
  allocated before it. NumPy reports its buffers to tracemalloc, so this counts the
  arrays (copies of X, workspaces, optimizer state) a fit allocates; it does not count
  BLAS's internal buffers or the interpreter.
"""

import argparse
import copy
import datetime
import functools
import gc
import math
import os
import platform
import statistics
import sys
import threading
import time
import tracemalloc
import warnings

import numpy as np
import scipy
import scipy.linalg.blas as blas
import scipy.sparse as sp
import sklearn
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier as SkClassifier
from sklearn.neural_network import MLPRegressor as SkRegressor
from threadpoolctl import threadpool_info, threadpool_limits

import pybackprop
from pybackprop import MLPClassifier as PbClassifier
from pybackprop import MLPRegressor as PbRegressor

try:
    import torch
except ImportError:  # optional peer
    torch = None

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 0
CONTENDERS = ("pybackprop", "sklearn", "numpy", "torch")
NOTES = []  # harness-wide notes (skipped peers, ...)

warnings.filterwarnings("ignore", category=ConvergenceWarning)
warnings.filterwarnings("ignore", message=".*[Ss]parse.*", category=UserWarning)
warnings.filterwarnings("ignore", message=".*batch_size.*", category=UserWarning)


# ---------------------------------------------------------------------------
# machine and BLAS peak


def machine_info():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    blas_libs = [
        "%s %s (%s, %s, %d threads) %s" % (
            i.get("internal_api"), i.get("version"), i.get("architecture"),
            i.get("threading_layer"), i.get("num_threads"), os.path.basename(i["filepath"]))
        for i in threadpool_info()
    ]
    info = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": "%d logical (os.cpu_count), %d usable (affinity)" % (os.cpu_count(), affinity),
        "load": "%.2f %.2f %.2f (1/5/15 min, at start)" % os.getloadavg(),
        "python": platform.python_version(),
        "versions": "pybackprop %s, numpy %s, scipy %s, scikit-learn %s, torch %s" % (
            pybackprop.__version__, np.__version__, scipy.__version__, sklearn.__version__,
            torch.__version__ if torch else "not installed"),
        "blas": blas_libs,
    }
    if torch is not None:
        info["torch threads"] = "%d intra-op, %d inter-op" % (
            torch.get_num_threads(), torch.get_num_interop_threads())
    return info


def gemm_peak(size, repeats=3):
    """GFLOP/s of np.dot and scipy's ?gemm on (size x size) matrices, per dtype."""
    rng = np.random.default_rng(SEED)
    out = {}
    for dtype, routine in ((np.float32, blas.sgemm), (np.float64, blas.dgemm)):
        a = rng.standard_normal((size, size)).astype(dtype)
        b = rng.standard_normal((size, size)).astype(dtype)
        af, bf = np.asfortranarray(a), np.asfortranarray(b)
        c = np.empty((size, size), dtype=dtype)
        flops = 2.0 * size**3
        rates = {}
        for name, fn in (("np.dot", lambda: np.dot(a, b, out=c)),
                         ("scipy ?gemm", lambda: routine(1.0, af, bf))):
            fn()  # warm-up (thread pool start, page faults)
            ts = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
            rates[name] = flops / statistics.median(ts) / 1e9
        rates["peak"] = max(rates.values())
        out[np.dtype(dtype).name] = rates
    return out


def peak_run(dtype, size):
    """A run for ``alternate``: the GFLOP/s of one ``dtype`` gemm of (size x size)
    matrices (the larger of np.dot and scipy's ?gemm, each the best of 2 calls), taken
    next to each repeat of a workload judged against the peak, so that the fraction
    of peak compares two timings made within seconds of each other. The machine's
    speed drifts by 10-30 % over minutes (shared cores); a peak taken once at the start
    of the run would judge a later slow phase against an earlier fast one."""
    rng = np.random.default_rng(SEED)
    a = rng.standard_normal((size, size)).astype(dtype)
    af = np.asfortranarray(a)
    c = np.empty((size, size), dtype=dtype)
    routine = blas.sgemm if np.dtype(dtype) == np.float32 else blas.dgemm
    calls = (lambda: np.dot(a, a, out=c), lambda: routine(1.0, af, af))
    # and the memory bandwidth of a 128 MiB copy: the slow phases of this machine slow
    # memory-bound work (the optimizer step, row gathers) far more than a gemm
    src = np.ones(2**24)
    dst = np.empty_like(src)
    for fn in calls:
        fn()  # warm-up
    np.copyto(dst, src)

    def run():
        best = []
        for fn in calls:
            ts = []
            for _ in range(2):
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
            best.append(min(ts))
        t0 = time.perf_counter()
        np.copyto(dst, src)
        run.copy_gbs.append(2 * src.nbytes / (time.perf_counter() - t0) / 1e9)
        run.rates.append(2.0 * size**3 / min(best) / 1e9)
        return min(best), None
    run.rates, run.copy_gbs = [], []
    return run


def alternate_with_peak(runs, repeats, target, dtype, size):
    """``alternate(runs, repeats)``, with a peak_run first in every repeat when the
    workload is judged against the gemm peak; returns the times and last artifacts
    without the peak's, and the peak run (None when there is none)."""
    peak = None
    if target is not None and target[0] == "peak":
        peak = peak_run(dtype, size)
        runs = {"gemm peak": peak, **runs}
    times, last = alternate(runs, repeats)
    times.pop("gemm peak", None)
    last.pop("gemm peak", None)
    return times, last, peak


def paired_peak(peak, flops, pb_seconds):
    """None without a peak run; else its rates and copy bandwidths, and the median
    over repeats of (pybackprop's GFLOP/s in repeat i) / (the peak measured next to
    it)."""
    if peak is None:
        return None
    return dict(rates=peak.rates, copy_gbs=peak.copy_gbs, fraction=statistics.median(
        flops / t / 1e9 / rate for t, rate in zip(pb_seconds, peak.rates)))


# ---------------------------------------------------------------------------
# data (deterministic, with a teacher so that accuracy means something)


def digits_data():
    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


def prototype_classification(n, n_test, d, k, dtype, seed, signal):
    """Uniform [0, 1) features pulled towards one random prototype per class:
    ``x = (1 - signal) * u + signal * prototype[y]`` (``signal`` sets the difficulty).
    Returns X, y, X_test, y_test."""
    rng = np.random.default_rng(seed)
    prototypes = rng.random((k, d), dtype=np.float32)
    y = rng.integers(0, k, n + n_test)
    X = rng.random((n + n_test, d), dtype=np.float32)
    X *= np.float32(1 - signal)
    X += np.float32(signal) * prototypes[y]
    X = X.astype(dtype, copy=False)
    return X[:n], y[:n], X[n:], y[n:]


def teacher_regression(n, n_test, d, dtype, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n + n_test, d)).astype(dtype)
    A = rng.standard_normal((d, 16)) / math.sqrt(d)
    y = np.sin(X @ A) @ rng.standard_normal(16) + 0.1 * rng.standard_normal(n + n_test)
    y = (y - y.mean()) / y.std()
    return X[:n], y[:n].astype(dtype), X[n:], y[n:].astype(dtype)


def sparse_classification(n, n_test, d, nnz_row, k, dtype, seed, topical=0.15):
    """Bag-of-words-like CSR: ``nnz_row`` columns per row (values in (0, 1]), a share
    ``topical`` of them drawn from the row's class block of d/k columns, the rest
    uniform over all d columns."""
    rng = np.random.default_rng(seed)
    rows = n + n_test
    y = rng.integers(0, k, rows)
    block = d // k
    from_topic = rng.random((rows, nnz_row)) < topical
    cols = np.where(from_topic, y[:, None] * block + rng.integers(0, block, (rows, nnz_row)),
                    rng.integers(0, d, (rows, nnz_row)))
    cols = np.sort(cols, axis=1)
    data = rng.random((rows, nnz_row), dtype=np.float32) + np.float32(1e-3)
    indptr = np.arange(0, rows * nnz_row + 1, nnz_row)
    X = sp.csr_matrix((data.ravel().astype(dtype), cols.ravel(), indptr), shape=(rows, d))
    X.sum_duplicates()
    return X[:n], y[:n], X[n:], y[n:]


# ---------------------------------------------------------------------------
# timing helpers


def timed(fn, *args, **kwargs):
    """(seconds, result) of one call, after a garbage collection."""
    gc.collect()
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - t0, result


# idle seconds before each run of ``alternate``: OpenBLAS's worker threads spin for
# about 0.1 s after a threaded call (2^28 TSC cycles, its default THREAD_TIMEOUT), and
# a run started inside that window shares the cores with them (a digits-sgd fit of
# pybackprop right after a threaded np.dot: 1.40 against 0.79 ms an epoch). Every
# contender starts from idle cores, whoever ran before it.
QUIET_SECONDS = 0.25


def alternate(runs, repeats):
    """Call each ``runs[name]()`` once per repeat, in turn, each after QUIET_SECONDS
    idle. Every run returns ``(seconds, artifact)``; returns ``{name: [seconds...]}``
    and the last artifacts."""
    times = {name: [] for name in runs}
    last = {}
    for _ in range(repeats):
        for name, run in runs.items():
            time.sleep(QUIET_SECONDS)
            dt, last[name] = run()
            times[name].append(dt)
    return times, last


def traced_peak_mib(fn):
    """tracemalloc peak (MiB) of fn() above what was allocated when it started."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    try:
        fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return (peak - base) / 2**20


def fit_flops(n, d, hidden, k, epochs):
    h = list(hidden) + [k]
    return epochs * n * (4 * d * h[0] + 6 * sum(a * b for a, b in zip(h[:-1], h[1:])))


def predict_flops(n, d, hidden, k):
    units = [d] + list(hidden) + [k]
    return 2 * n * sum(a * b for a, b in zip(units[:-1], units[1:]))


def gemm_floor(n, d, hidden, k, batch, dtype, repeats):
    """Seconds per epoch of the matrix products alone, for dense X: per batch the
    forward ``H @ W``, the backward ``H^T @ dZ`` and (layers > 1) ``dZ @ W^T``.
    Returns (BLAS threads as run, BLAS 1 thread)."""
    units = [d] + list(hidden) + [k]
    rng = np.random.default_rng(SEED)
    bufs = []
    for fan_in, fan_out in zip(units[:-1], units[1:]):
        bufs.append(dict(
            W=rng.standard_normal((fan_in, fan_out)).astype(dtype),
            dW=np.empty((fan_in, fan_out), dtype=dtype),
            Z=np.empty((batch, fan_out), dtype=dtype),
            dH=np.empty((batch, fan_in), dtype=dtype)))
    H0 = rng.standard_normal((batch, d)).astype(dtype)
    sizes = [batch] * (n // batch) + ([n % batch] if n % batch else [])

    def epoch():
        for m in sizes:
            h = H0[:m]
            for b in bufs:
                np.matmul(h, b["W"], out=b["Z"][:m])
                h = b["Z"][:m]
            for l in range(len(bufs) - 1, -1, -1):
                b = bufs[l]
                h_prev = H0[:m] if l == 0 else bufs[l - 1]["Z"][:m]
                np.matmul(h_prev.T, b["Z"][:m], out=b["dW"])
                if l > 0:
                    np.matmul(b["Z"][:m], b["W"].T, out=b["dH"][:m])

    out = []
    for limit in (None, 1):
        with threadpool_limits(limits=limit):
            epoch()
            out.append(statistics.median(timed(epoch)[0] for _ in range(max(repeats, 3))))
    return tuple(out)


# ---------------------------------------------------------------------------
# contenders


def sk_twin(model):
    """The scikit-learn estimator of a pybackprop one (same parameters)."""
    cls = SkClassifier if isinstance(model, PbClassifier) else SkRegressor
    known = cls().get_params()
    return cls(**{k: v for k, v in model.get_params().items() if k in known})


def numpy_twin(model):
    return model.set_params(backend="numpy")


def fit_run(make, X, y):
    """A run for ``alternate``: build a fresh estimator, time its fit."""
    def run():
        est = make()
        dt, _ = timed(est.fit, X, y)
        return dt, est
    return run


def torch_run(spec, X, y, task):
    """A run for ``alternate``: a plain PyTorch CPU training loop."""
    def run():
        net = TorchMLP(spec, X.shape[1], task, y)
        dt, _ = timed(net.fit, X, y)
        return dt, net
    return run


class TorchMLP:
    """The same network and optimizer as the estimators, as a plain torch loop:
    scikit-learn's Glorot-uniform draws for the initial weights, ``alpha/2 ||W||^2 / m``
    added to the batch loss, Adam (or SGD with Nesterov momentum) with the same
    hyper-parameters, a fresh permutation every epoch."""

    ACT = {"relu": "relu", "tanh": "tanh", "logistic": "sigmoid"}

    def __init__(self, spec, n_features, task, y):
        self.spec = spec
        self.task = task
        self.dtype = torch.float32 if spec["dtype"] == np.float32 else torch.float64
        self.classes = np.unique(y) if task == "clf" else None
        k = len(self.classes) if task == "clf" else 1
        units = [n_features] + list(spec["hidden"]) + [k]
        rs = np.random.RandomState(SEED)
        factor = 2.0 if spec["activation"] == "logistic" else 6.0
        self.W, self.b = [], []
        for fan_in, fan_out in zip(units[:-1], units[1:]):
            bound = math.sqrt(factor / (fan_in + fan_out))
            W = rs.uniform(-bound, bound, (fan_in, fan_out))
            b = rs.uniform(-bound, bound, fan_out)
            self.W.append(torch.tensor(W, dtype=self.dtype, requires_grad=True))
            self.b.append(torch.tensor(b, dtype=self.dtype, requires_grad=True))
        self.act = getattr(torch, self.ACT[spec["activation"]])

    def _tensor_rows(self, X, idx):
        if sp.issparse(X):
            Xb = X[idx]
            return torch.sparse_csr_tensor(
                torch.from_numpy(Xb.indptr.astype(np.int64)),
                torch.from_numpy(Xb.indices.astype(np.int64)),
                torch.from_numpy(Xb.data), size=Xb.shape, dtype=self.dtype)
        return X[idx]

    def forward(self, x):
        for l, (W, b) in enumerate(zip(self.W, self.b)):
            x = x @ W + b
            if l < len(self.W) - 1:
                x = self.act(x)
        return x

    def fit(self, X, y):
        s = self.spec
        params = self.W + self.b
        if s["solver"] == "adam":
            opt = torch.optim.Adam(params, lr=s["lr"], betas=(0.9, 0.999), eps=1e-8)
        else:
            opt = torch.optim.SGD(params, lr=s["lr"], momentum=0.9, nesterov=True)
        Xt = X if sp.issparse(X) else torch.from_numpy(np.ascontiguousarray(X))
        if self.task == "clf":
            yt = torch.from_numpy(np.searchsorted(self.classes, y).astype(np.int64))
        else:
            yt = torch.from_numpy(np.asarray(y, dtype=s["dtype"]))
        n = X.shape[0]
        gen = torch.Generator().manual_seed(SEED)
        alpha = s["alpha"]
        for _ in range(s["epochs"]):
            perm = torch.randperm(n, generator=gen)
            for start in range(0, n, s["batch"]):
                idx = perm[start:start + s["batch"]]
                xb = self._tensor_rows(X, idx.numpy()) if sp.issparse(X) else Xt[idx]
                out = self.forward(xb)
                if self.task == "clf":
                    loss = torch.nn.functional.cross_entropy(out, yt[idx])
                else:
                    loss = 0.5 * ((out[:, 0] - yt[idx]) ** 2).mean()
                loss = loss + 0.5 * alpha * sum((W * W).sum() for W in self.W) / len(idx)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        return self

    def predict_proba(self, X):
        with torch.no_grad():
            out = self.forward(torch.from_numpy(X) if not sp.issparse(X)
                               else self._tensor_rows(X, np.arange(X.shape[0])))
            return torch.softmax(out, dim=1).numpy()

    def score(self, X, y):
        with torch.no_grad():
            if self.task == "clf":
                return float(np.mean(self.classes[self.predict_proba(X).argmax(1)] == y))
            x = torch.from_numpy(X) if not sp.issparse(X) else self._tensor_rows(
                X, np.arange(X.shape[0]))
            p = self.forward(x)[:, 0].numpy()
            return float(1 - ((y - p) ** 2).sum() / ((y - y.mean()) ** 2).sum())


# ---------------------------------------------------------------------------
# the fit workloads


def pb_estimator(spec):
    """The pybackprop estimator of a fit spec: exactly ``spec["epochs"]`` epochs."""
    Pb = PbClassifier if spec["task"] == "clf" else PbRegressor
    return Pb(hidden_layer_sizes=spec["hidden"], activation=spec["activation"],
              solver=spec["solver"], alpha=spec["alpha"], batch_size=spec["batch"],
              learning_rate_init=spec["lr"], max_iter=spec["epochs"], tol=0.0,
              n_iter_no_change=spec["epochs"] + 10**6, random_state=SEED)


def fit_workload(name, cfg):
    """Time pybackprop, scikit-learn, the NumPy backend and torch on one fit setup."""
    setup = FIT_SETUPS[name](cfg)
    X, y, X_test, y_test = setup["data"]
    spec, target = setup["spec"], setup["target"]
    task = spec["task"]
    epochs = spec["epochs"]
    make_pb = lambda: pb_estimator(spec)  # noqa: E731
    makers = {"pybackprop": make_pb, "sklearn": lambda: sk_twin(make_pb()),
              "numpy": lambda: numpy_twin(make_pb())}
    runs = {name_: fit_run(make, X, y) for name_, make in makers.items()}
    notes = [setup["note"]]
    if torch is not None and spec["solver"] != "lbfgs":
        runs["torch"] = torch_run(spec, X, y, task)
    elif torch is not None:
        notes.append("torch: no L-BFGS peer (torch.optim.LBFGS is a different algorithm)")

    # warm-up on a slice: imports, thread pools, first-call costs
    for make in makers.values():
        est = make().set_params(max_iter=1)
        est.fit(X[:256], y[:256])
    if "torch" in runs:
        TorchMLP({**spec, "epochs": 1}, X.shape[1], task, y).fit(X[:256], y[:256])

    times, est, peak = alternate_with_peak(runs, cfg.repeats, target, spec["dtype"], cfg.gemm)
    iters = {k: getattr(v, "n_iter_", epochs) for k, v in est.items()}
    per_epoch = {k: statistics.median(v) / max(iters[k], 1) for k, v in times.items()}
    if len(set(iters.values())) > 1:
        notes.append("iterations run: " + ", ".join("%s %d" % kv for kv in iters.items()))
    scores = {k: v.score(X_test, y_test) for k, v in est.items()}

    n, d = X.shape
    d_eff = X.nnz / n if sp.issparse(X) else d
    k = len(np.unique(y)) if task == "clf" else 1
    flops = fit_flops(n, d_eff, spec["hidden"], k, iters["pybackprop"])
    mem = {c: traced_peak_mib(lambda: makers[c]().set_params(
        max_iter=spec.get("mem_iter", 1)).fit(X, y)) for c in ("pybackprop", "sklearn")}
    floor = None
    if not sp.issparse(X) and spec["solver"] != "lbfgs":
        floor = gemm_floor(n, d, spec["hidden"], k, spec["batch"], spec["dtype"], cfg.repeats)
    elif spec["solver"] == "lbfgs":
        floor = gemm_floor(n, d, spec["hidden"], k, n, spec["dtype"], cfg.repeats)
    return dict(
        workload=name, unit="s/epoch" if spec["solver"] != "lbfgs" else "s/iter",
        dtype=np.dtype(spec["dtype"]).name, times=per_epoch, raw=times, iters=iters,
        gflops=flops / (statistics.median(times["pybackprop"]) * 1e9),
        scores=scores, score_name="acc" if task == "clf" else "R²",
        mem=mem, mem_note="1-epoch fit" if spec["solver"] != "lbfgs" else "%d-iteration fit"
        % spec.get("mem_iter", 1),
        floor=floor, target=target, notes=notes,
        paired_peak=paired_peak(peak, flops, times["pybackprop"]),
        shape="n=%d d=%d%s h=%s k=%d batch=%s %s/%s, %d %s" % (
            n, d, " (CSR, %.0f nnz/row)" % d_eff if sp.issparse(X) else "", spec["hidden"], k,
            spec["batch"], spec["activation"], spec["solver"], epochs,
            "iterations" if spec["solver"] == "lbfgs" else "epochs"),
    )


def base_spec(**kw):
    spec = dict(task="clf", hidden=(100,), activation="relu", solver="adam", alpha=1e-4,
                batch=200, lr=1e-3, epochs=100, dtype=np.float64)
    spec.update(kw)
    return spec


def mnist_data(cfg, n_test=10000):
    n = cfg.n(60000)
    return prototype_classification(n, n_test, 784, 10, np.float32, seed=1, signal=0.1)


def s_digits(cfg):
    X, y = digits_data()
    return dict(data=(X, y, X, y), spec=base_spec(epochs=cfg.e(100)), target=("speedup", 5),
                note="digits: accuracy on the training set (all 1797 rows are fitted)")


def s_digits_b32(cfg):
    X, y = digits_data()
    return dict(data=(X, y, X, y), spec=base_spec(batch=32, epochs=cfg.e(30)),
                target=("speedup", 8), note="digits-b32: accuracy on the training set")


def s_digits_sgd(cfg):
    X, y = digits_data()
    return dict(data=(X, y, X, y),
                spec=base_spec(activation="tanh", solver="sgd", epochs=cfg.e(100)),
                target=("speedup", 5),
                note="digits-sgd: accuracy on the training set; sgd lr 0.001, momentum 0.9")


def s_digits_lbfgs(cfg):
    X, y = digits_data()
    spec = base_spec(activation="logistic", solver="lbfgs", epochs=cfg.e(200), batch="auto",
                     mem_iter=5)
    return dict(data=(X, y, X, y), spec=spec, target=("speedup", 2),
                note="digits-lbfgs: accuracy on the training set")


def s_mnist_shape(cfg):
    spec = base_spec(hidden=(256, 128), batch=256, epochs=2 if not cfg.quick else 1,
                     dtype=np.float32)
    return dict(data=mnist_data(cfg), spec=spec, target=("peak", 0.8),
                note="mnist-shape: held-out accuracy (10k rows; class prototypes, "
                "signal 0.1)")


def s_wide_logistic(cfg):
    data = prototype_classification(cfg.n(20000), 5000, 200, 5, np.float32, seed=2,
                                    signal=0.15)
    spec = base_spec(hidden=(512,), activation="logistic", epochs=cfg.e(5), dtype=np.float32)
    return dict(data=data, spec=spec, target=("speedup", 2),
                note="wide-logistic: held-out accuracy (5k rows; class prototypes, "
                "signal 0.15)")


def s_regression(cfg):
    data = teacher_regression(cfg.n(20000), 5000, 100, np.float64, seed=3)
    spec = base_spec(task="reg", hidden=(64, 64), epochs=cfg.e(10))
    return dict(data=data, spec=spec, target=("speedup", 3),
                note="regression: held-out R² (5k rows, sine teacher)")


def s_sparse(cfg):
    data = sparse_classification(cfg.n(20000), 5000, 20000, 100, 10, np.float32, seed=4)
    spec = base_spec(hidden=(128,), epochs=cfg.e(3), dtype=np.float32)
    return dict(data=data, spec=spec, target=("speedup", 3),
                note="sparse: held-out accuracy (5k rows; 15 % of each row's nonzeros in "
                "its class's block of columns)")


FIT_SETUPS = {
    "digits": s_digits,
    "digits-b32": s_digits_b32,
    "digits-sgd": s_digits_sgd,
    "digits-lbfgs": s_digits_lbfgs,
    "mnist-shape": s_mnist_shape,
    "wide-logistic": s_wide_logistic,
    "regression": s_regression,
    "sparse": s_sparse,
}


# ---------------------------------------------------------------------------
# predict workloads: one fitted pybackprop model, copied into each peer


def twins_of(model, X, y):
    """{contender: estimator} holding ``model``'s weights."""
    sk = sk_twin(model).set_params(max_iter=1)
    sk.fit(X[:50], y[:50])
    sk.coefs_ = [c.copy() for c in model.coefs_]
    sk.intercepts_ = [b.copy() for b in model.intercepts_]
    out = {"pybackprop": model, "sklearn": sk,
           "numpy": numpy_twin(copy.deepcopy(model))}
    if torch is not None:
        spec = dict(hidden=model.hidden_layer_sizes, activation=model.activation,
                    dtype=model.coefs_[0].dtype.type)
        tm = TorchMLP(spec, X.shape[1], "clf", model.classes_)
        tm.W = [torch.from_numpy(c.copy()) for c in model.coefs_]
        tm.b = [torch.from_numpy(b.copy()) for b in model.intercepts_]
        out["torch"] = tm
    return out


def predict_workload(name, cfg):
    """Time predict_proba: ``calls`` calls on one row each when X has one row per call
    (X then has ``calls`` rows), else one call on all of X."""
    setup = PREDICT_SETUPS[name](cfg)
    model, (X_fit, y_fit), (X, y) = setup["model"], setup["fit"], setup["data"]
    calls, target, notes = setup["calls"], setup["target"], setup["notes"]
    peers = twins_of(model, X_fit, y_fit)
    one_row = calls > 1

    def run_of(est):
        def run():
            if one_row:
                gc.collect()
                t0 = time.perf_counter()
                for i in range(calls):
                    est.predict_proba(X[i:i + 1])
                return (time.perf_counter() - t0) / calls, None
            return timed(est.predict_proba, X)[0], None
        return run

    runs = {k: run_of(v) for k, v in peers.items()}
    for run in runs.values():
        run()  # warm-up
    times, _, peak = alternate_with_peak(runs, cfg.repeats, target,
                                         model.coefs_[0].dtype.type, cfg.gemm)
    per_call = {k: statistics.median(v) for k, v in times.items()}
    scores = {k: float(np.mean(np.asarray(model.classes_)[v.predict_proba(X).argmax(1)] == y))
              for k, v in peers.items()}
    n = 1 if one_row else X.shape[0]
    flops = predict_flops(n, X.shape[1], model.hidden_layer_sizes, len(model.classes_))
    mem = {k: traced_peak_mib(lambda: peers[k].predict_proba(X if not one_row else X[:1]))
           for k in ("pybackprop", "sklearn")}
    return dict(workload=name, unit="s/call", dtype=model.coefs_[0].dtype.name,
                times=per_call, raw=times, gflops=flops / per_call["pybackprop"] / 1e9,
                scores=scores, score_name="acc", mem=mem, mem_note="one call",
                floor=None, target=target, notes=notes,
                paired_peak=paired_peak(peak, flops, times["pybackprop"]),
                shape="%s rows/call, d=%d h=%s" % (
                    1 if one_row else X.shape[0], X.shape[1], model.hidden_layer_sizes))


def s_predict_1row(cfg):
    X, y = digits_data()
    model = PbClassifier(max_iter=100, tol=0, n_iter_no_change=10**6,
                         random_state=SEED).fit(X, y)
    calls = 200 if cfg.quick else 2000
    idx = np.arange(calls) % X.shape[0]
    return dict(model=model, fit=(X, y), data=(X[idx], y[idx]), calls=calls,
                target=("speedup", 5),
                notes=["predict-1row: digits model (100 epochs); time per call over %d "
                       "calls, each on one row; accuracy on those rows (training data)"
                       % calls])


def s_predict_100k(cfg):
    X, y, Xt, yt = mnist_data(cfg, n_test=cfg.n(100000))
    model = PbClassifier(hidden_layer_sizes=(256, 128), batch_size=256,
                         max_iter=2 if not cfg.quick else 1, tol=0, n_iter_no_change=10**6,
                         random_state=SEED).fit(X, y)
    return dict(model=model, fit=(X, y), data=(Xt, yt), calls=1, target=("peak", 0.8),
                notes=["predict-100k: mnist-shape model (2 epochs), float32; accuracy on "
                       "the %d held-out rows" % Xt.shape[0]])


PREDICT_SETUPS = {"predict-1row": s_predict_1row, "predict-100k": s_predict_100k}


# ---------------------------------------------------------------------------
# two threads


def w_two_threads(cfg):
    X, y = digits_data()
    epochs = cfg.e(100)
    params = dict(max_iter=epochs, tol=0, n_iter_no_change=10**6, random_state=SEED)

    def pair(make, threaded):
        def fit():
            make().fit(X, y)

        def run():
            gc.collect()
            t0 = time.perf_counter()
            if threaded:
                ts = [threading.Thread(target=fit) for _ in range(2)]
                for t in ts:
                    t.start()
                for t in ts:
                    t.join()
            else:
                fit()
                fit()
            return time.perf_counter() - t0, None
        return run

    rows = {}
    as_run = "pybackprop, BLAS %s threads" % "/".join(
        str(i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas")
    for label, limit, make in (
            (as_run, None, lambda: PbClassifier(**params)),
            # limits=1 with no user_api: BLAS and OpenMP both at one thread
            ("pybackprop, BLAS and OpenMP 1 thread", 1, lambda: PbClassifier(**params)),
            ("sklearn, BLAS and OpenMP 1 thread", 1, lambda: SkClassifier(**params))):
        with threadpool_limits(limits=limit):
            pair(make, False)()  # warm-up
            times, _ = alternate({"sequential": pair(make, False),
                                  "threaded": pair(make, True)}, cfg.repeats)
        seq, thr = statistics.median(times["sequential"]), statistics.median(times["threaded"])
        rows[label] = (seq, thr, seq / thr)
    pb_thr = rows[as_run][1]
    notes = ["two-threads: two digits fits (%d epochs) one after the other vs in two "
             "Python threads; ratio = sequential / threaded wall time (2.0 = perfect "
             "overlap on 2 cores). " % epochs + "; ".join(
                 "%s: %.3f s vs %.3f s, ratio %.2f" % (k, *v) for k, v in rows.items())]
    return dict(workload="two-threads", unit="s (2 fits)", dtype="float64",
                times={"pybackprop": pb_thr}, raw={}, gflops=None, scores={},
                score_name="", mem=None, floor=None, target=None, notes=notes,
                threads=rows, ratio=rows[as_run][2], shape="2 x digits fit, threaded vs sequential")


WORKLOADS = {
    **{name: functools.partial(fit_workload, name) for name in FIT_SETUPS},
    **{name: functools.partial(predict_workload, name) for name in PREDICT_SETUPS},
    "two-threads": w_two_threads,
}


# ---------------------------------------------------------------------------
# report


def judge(r, peak):
    """(target text, met text, fraction of peak)."""
    frac = None
    if r.get("paired_peak"):
        frac = r["paired_peak"]["fraction"]
    elif r.get("gflops") is not None and peak:
        frac = r["gflops"] / peak[r["dtype"]]["peak"]
    tgt = r["target"]
    if tgt is None:
        return "—", "—", frac
    kind, value = tgt
    if kind == "speedup":
        sp_ = r["times"].get("sklearn", float("nan")) / r["times"]["pybackprop"]
        return "≥ %g× sklearn" % value, "yes" if sp_ >= value else "no", frac
    return "≥ %d %% of gemm peak" % (value * 100), "yes" if frac and frac >= value else "no", frac


def fmt_t(t):
    if t is None or (isinstance(t, float) and math.isnan(t)):
        return "—"
    if t >= 1:
        return "%.2f s" % t
    if t >= 1e-3:
        return "%.2f ms" % (t * 1e3)
    return "%.1f µs" % (t * 1e6)


def speedup_cell(r, peer):
    if peer not in r["times"] or "pybackprop" not in r["times"]:
        return "—"
    return "%.2f×" % (r["times"][peer] / r["times"]["pybackprop"])


def table(results, peak):
    head = ("| workload | dtype | unit | pybackprop | GFLOP/s | % peak | vs sklearn | "
            "vs numpy | vs torch | score pb / sk / np / torch | peak MiB pb / sk | "
            "target | met? |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        tgt, met, frac = judge(r, peak)
        if r["workload"] == "two-threads":
            rat = r["ratio"]
            lines.append("| two-threads | float64 | s (2 fits) | %s threaded | — | — | "
                         "ratio %.2f (seq/thr) | — | — | — | — | — | — |"
                         % (fmt_t(r["times"]["pybackprop"]), rat))
            continue
        score = " / ".join("%.3f" % r["scores"][c] if c in r["scores"] else "—"
                           for c in CONTENDERS)
        mem = ("%.1f / %.1f" % (r["mem"]["pybackprop"], r["mem"]["sklearn"])
               if r.get("mem") else "—")
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s %s | %s | %s | %s |" % (
            r["workload"], r["dtype"], r["unit"], fmt_t(r["times"]["pybackprop"]),
            "%.1f" % r["gflops"] if r["gflops"] is not None else "—",
            "%.0f %%" % (100 * frac) if frac is not None else "—",
            speedup_cell(r, "sklearn"), speedup_cell(r, "numpy"), speedup_cell(r, "torch"),
            r["score_name"], score, mem, tgt, met))
    return "\n".join(lines)


def raw_table(results):
    lines = ["| workload | shape | 1-min load | contender | median | min | max | gemm floor "
             "(BLAS as run / 1 thread) |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        for c in CONTENDERS:
            if c not in r["raw"]:
                continue
            ts = r["raw"][c]
            div = r["iters"][c] if "iters" in r else 1
            lines.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
                r["workload"], r["shape"], r.get("load", ""), c,
                fmt_t(statistics.median(ts) / div),
                fmt_t(min(ts) / div), fmt_t(max(ts) / div),
                "%s / %s" % tuple(map(fmt_t, r["floor"])) if (c == "pybackprop" and r.get("floor"))
                else ""))
    return "\n".join(lines)


METHOD = """Method: every contender runs in this one process on the same data with the same
parameters; `tol=0` and `n_iter_no_change > max_iter` make every fit run exactly the
same epochs. Each repeat runs pybackprop, scikit-learn, the NumPy backend and torch in
turn, each after 0.25 s idle (OpenBLAS's threads spin for about 0.1 s after a threaded
call; a run inside that window shares the cores with them). Fit time includes `fit`'s
own input validation, not data generation. GFLOP/s =
`epochs·n·(4·d·h1 + 6·Σ h_i·h_(i+1))` / pybackprop's time (sparse: d = nonzeros per row;
predict: `2·n·Σ fan_in·fan_out`); % peak divides by the larger of `np.dot` and scipy
`?gemm` GFLOP/s for the workload's dtype: for workloads judged against the peak, that
gemm runs in each repeat, just before pybackprop, and % peak is the median of the
per-repeat fractions (the start-of-run peak below is kept for the other rows and
quoted beside it in the notes). Peak MiB: tracemalloc peak of a
separate untimed 1-epoch fit (L-BFGS: 5 iterations; predict: one call), i.e. the
NumPy/Python allocations of the fit, not BLAS's internal buffers."""


def write_report(path, info, peak, results, cfg, elapsed):
    main = table(results, peak)
    parts = ["# pybackprop benchmarks", ""]
    if cfg.quick:
        parts += ["**Quick mode** (1 repeat, fewer epochs, smaller data): a smoke test of "
                  "the harness, not results.", ""]
    parts += ["Generated by `%s` in %.0f s. Median of %d alternating "
              "repeat(s); speed-up = peer time / pybackprop time (higher is better)."
              % (" ".join(["python bench/run.py"] + cfg.argv), elapsed, cfg.repeats), "", METHOD, "", "## Machine", ""]
    for k, v in info.items():
        if isinstance(v, list):
            parts.append("- %s:" % k)
            parts += ["  - %s" % x for x in v]
        else:
            parts.append("- %s: %s" % (k, v))
    parts.append("- load at end: %.2f %.2f %.2f" % os.getloadavg())
    parts += ["", "gemm peak, GFLOP/s (%d×%d, median of 3):" % (cfg.gemm, cfg.gemm), "",
              "| dtype | np.dot | scipy ?gemm | peak used |", "|---|---|---|---|"]
    for dt, rates in peak.items():
        parts.append("| %s | %.1f | %.1f | %.1f |" % (dt, rates["np.dot"], rates["scipy ?gemm"],
                                                       rates["peak"]))
    parts += ["", "## Results", "", main, "", "Notes:", ""]
    parts += ["- " + n for n in NOTES]
    for r in results:
        parts += ["- " + n for n in r["notes"]]
        pp = r.get("paired_peak")
        if pp:
            start = r["gflops"] / peak[r["dtype"]]["peak"] if peak else float("nan")
            parts.append(
                "- %s: %% peak %.0f %% is the median over repeats of pybackprop's GFLOP/s "
                "over the %s gemm peak measured just before it (%s GFLOP/s); against the "
                "peak measured at the start of the run it is %.0f %%. pybackprop's time "
                "per repeat: %s; memory bandwidth (128 MiB copy) measured with each peak: "
                "%s GB/s." % (
                    r["workload"], 100 * pp["fraction"], r["dtype"],
                    ", ".join("%.1f" % x for x in pp["rates"]), 100 * start,
                    ", ".join(fmt_t(t / r["iters"]["pybackprop"] if "iters" in r else t)
                              for t in r["raw"]["pybackprop"]),
                    ", ".join("%.1f" % x for x in pp["copy_gbs"])))
    parts += ["- score columns: pybackprop / scikit-learn / NumPy backend / torch; peak MiB: "
              "tracemalloc peak of an untimed fit (or predict call) of pybackprop / "
              "scikit-learn, see bench/run.py's docstring.",
              "", "## Per-contender times", "",
              "`gemm floor`: the same epoch's matrix products alone (np.matmul into "
              "preallocated buffers), a lower bound for a kernel built on BLAS.", "",
              raw_table(results), ""]
    text = "\n".join(parts)
    with open(path, "w") as f:
        f.write(text)
    return main, text


def plot(path, results):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        NOTES.append("matplotlib not installed: no chart drawn")
        return False
    rows = [r for r in results if "sklearn" in r["times"]]
    if not rows:
        return False
    names = [r["workload"] for r in rows]
    vals = [r["times"]["sklearn"] / r["times"]["pybackprop"] for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(rows) + 2), 4.5))
    colors = []
    for r, v in zip(rows, vals):
        tgt = r["target"]
        ok = tgt is None or (tgt[0] == "speedup" and v >= tgt[1])
        colors.append("tab:green" if ok and tgt and tgt[0] == "speedup" else
                      "tab:red" if tgt and tgt[0] == "speedup" else "tab:gray")
    bars = ax.bar(names, vals, color=colors)
    for i, r in enumerate(rows):
        if r["target"] and r["target"][0] == "speedup":
            ax.plot([i - 0.4, i + 0.4], [r["target"][1]] * 2, color="black", lw=1.5)
    for b, v in zip(bars, vals):
        ax.text(b.get_x() + b.get_width() / 2, v, "%.1f×" % v, ha="center", va="bottom",
                fontsize=8)
    ax.axhline(1, color="gray", lw=0.8, ls="--")
    ax.set_ylabel("speed-up vs scikit-learn (×)")
    ax.set_title("pybackprop vs scikit-learn (black line: target; gray: target is % of "
                 "gemm peak)", fontsize=9)
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


class Config:
    def __init__(self, args, argv):
        self.quick = args.quick
        self.repeats = 1 if args.quick else max(args.repeats, 1)
        self.gemm = 1024 if args.quick else 2048
        self.argv = argv

    def e(self, epochs):
        """Epochs (or iterations) of a workload: fewer in quick mode."""
        return max(1, epochs // 10) if self.quick else epochs

    def n(self, rows):
        return rows // 5 if self.quick else rows


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workloads", nargs="*", metavar="workload",
                    help="any of: %s (default: all)" % ", ".join(WORKLOADS))
    ap.add_argument("--repeats", type=int, default=3,
                    help="alternating repeats per workload (default 3)")
    ap.add_argument("--quick", action="store_true",
                    help="1 repeat, fewer epochs, smaller data: smoke test")
    ap.add_argument("--blas-threads", type=int, default=None, metavar="N",
                    help="limit every BLAS (and torch) to N threads for the whole run "
                    "(default: leave them as the machine sets them)")
    ap.add_argument("--out", help="report path (default bench/RESULTS.md, "
                    "bench/RESULTS-quick.md with --quick); the chart goes beside it")
    args = ap.parse_args(argv)
    unknown = [w for w in args.workloads if w not in WORKLOADS]
    if unknown:
        ap.error("unknown workload(s) %s; choose from %s" % (unknown, ", ".join(WORKLOADS)))
    cfg = Config(args, argv)
    if args.blas_threads:
        cfg.limiter = threadpool_limits(limits=args.blas_threads)  # held for the run
        if torch is not None:
            torch.set_num_threads(args.blas_threads)
        NOTES.append("run with --blas-threads %d" % args.blas_threads)
    names = args.workloads or list(WORKLOADS)
    out = args.out or os.path.join(HERE, "RESULTS-quick.md" if cfg.quick else "RESULTS.md")
    png = os.path.join(os.path.dirname(os.path.abspath(out)),
                       "results-quick.png" if cfg.quick else "results.png")
    if torch is None:
        NOTES.append("torch not installed: PyTorch peer skipped")
    else:
        NOTES.append("torch %s peer: plain CPU loop, %d threads" % (
            torch.__version__, torch.get_num_threads()))

    t_start = time.perf_counter()
    info = machine_info()
    print("machine: %s, %s" % (info["cpu"], info["cores"]), flush=True)
    peak = gemm_peak(cfg.gemm)
    print("gemm peak GFLOP/s: " + ", ".join(
        "%s %.1f" % (k, v["peak"]) for k, v in peak.items()), flush=True)
    results = []
    for name in names:
        t0 = time.perf_counter()
        load = os.getloadavg()[0]
        r = WORKLOADS[name](cfg)
        r["load"] = "%.2f→%.2f" % (load, os.getloadavg()[0])
        results.append(r)
        print("%-14s done in %5.1f s: pybackprop %s (%s)%s" % (
            name, time.perf_counter() - t0, fmt_t(r["times"]["pybackprop"]), r["unit"],
            "" if "sklearn" not in r["times"] else ", %.2f× sklearn" % (
                r["times"]["sklearn"] / r["times"]["pybackprop"])), flush=True)
    drew = plot(png, results)
    main_table, _ = write_report(out, info, peak, results, cfg, time.perf_counter() - t_start)
    print()
    print(main_table)
    print()
    for n in NOTES:
        print("note: " + n)
    print("wrote %s%s" % (out, " and " + png if drew else ""))


if __name__ == "__main__":
    main()
