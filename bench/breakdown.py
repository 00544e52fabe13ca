"""Where pybackprop's fit time goes, per workload of bench/run.py.

    python bench/breakdown.py [workload ...] [--quick] [--fits K] [--perf] [--cprofile]
                              [--barriers]

For each fit workload (default: all of them) prints, per epoch (L-BFGS: per iteration):

* ``fit``: the whole ``fit`` call, as bench/run.py times it;
* ``kernels``: time inside the compiled entry points (``pybackprop._kernels.*``), so
  ``python = fit - kernels`` is the Python layer (validation, shuffling, the epoch loop,
  the L-BFGS driver);
* ``gemm floor``: the epoch's matrix products alone, so ``kernels - gemm floor`` is
  what the kernels spend outside BLAS (gathers, activations, softmax, loss, bias sums,
  optimizer step): the fit with its threads as set (the OpenMP split and BLAS as the
  fit chooses) and with BLAS and OpenMP at 1 thread; the floor is the whole batch's
  products with BLAS at its default thread count and at 1 thread;
* ``sklearn`` and the time pybackprop would need to meet a speed-up target.

For the predict workloads: the whole ``predict_proba`` call vs the compiled ``predict``.

``--perf`` samples the fit loop with ``perf record`` (started only once the data is
built, through a control FIFO) and prints the top shared objects and symbols;
``--cprofile`` prints the Python functions with the most cumulative time.
``--barriers`` times the barriers of the fit's epochs on their threads
(``_kernels.barrier_clock``) and prints, per thread, epoch and barrier site, the time
it worked before the barrier and the time it waited in it: two threads that work
alike wait little; one that waits long is waiting for a slower one.
"""

import argparse
import cProfile
import io
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402  (bench/run.py)

import pybackprop._backend as pb_backend  # noqa: E402


class KernelTimer:
    """Stands in for ``pybackprop._backend._kernels``, timing every call."""

    def __init__(self, module):
        self._module = module
        self.seconds = {}

    def __getattr__(self, name):
        target = getattr(self._module, name)
        return _Timed(target, name, self.seconds) if callable(target) else target


class _Timed:
    """A timed kernel; indexing (``kernel["float"]``, Cython's fused-type
    specialisations) gives a timed specialisation."""

    def __init__(self, target, name, seconds):
        self.target, self.name, self.seconds = target, name, seconds

    def __getitem__(self, key):
        return _Timed(self.target[key], self.name, self.seconds)

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return self.target(*args, **kwargs)
        finally:
            self.seconds[self.name] = (self.seconds.get(self.name, 0.0)
                                       + time.perf_counter() - t0)


def breakdown(name, cfg, fits):
    setup = bench.FIT_SETUPS[name](cfg)
    X, y, _, _ = setup["data"]
    spec = setup["spec"]
    n, d = X.shape
    k = len(np.unique(y)) if spec["task"] == "clf" else 1
    bench.pb_estimator(spec).set_params(max_iter=1).fit(X[:256], y[:256])  # warm-up

    real = pb_backend._kernels
    rows = {}
    for label, limit in (("threads as set", None), ("BLAS + OpenMP 1 thread", 1)):
        with threadpool_limits(limits=limit):
            fit_t, kern_t, iters = [], [], 1
            for _ in range(fits):
                timer = KernelTimer(real)
                pb_backend._kernels = timer
                try:
                    est = bench.pb_estimator(spec)
                    dt, _ = bench.timed(est.fit, X, y)
                finally:
                    pb_backend._kernels = real
                iters = max(est.n_iter_, 1)
                fit_t.append(dt / iters)
                kern_t.append(sum(timer.seconds.values()) / iters)
            rows[label] = (statistics.median(fit_t), statistics.median(kern_t), timer.seconds)
    floor = (None, None)
    if not sp.issparse(X):
        batch = n if spec["solver"] == "lbfgs" else spec["batch"]
        floor = bench.gemm_floor(n, d, spec["hidden"], k, batch, spec["dtype"], fits)
    sk = bench.sk_twin(bench.pb_estimator(spec))
    sk.set_params(max_iter=1).fit(X[:256], y[:256])
    sk = bench.sk_twin(bench.pb_estimator(spec))
    sk_t = bench.timed(sk.fit, X, y)[0] / max(sk.n_iter_, 1)

    fmt = bench.fmt_t
    unit = "iter" if spec["solver"] == "lbfgs" else "epoch"
    print("\n## %s (%s, per %s)" % (name, np.dtype(spec["dtype"]).name, unit))
    print("| threads | fit | kernels | python | gemm floor | kernels - floor | sklearn | "
          "needed for target |")
    print("|---|---|---|---|---|---|---|---|")
    tgt = setup["target"]
    for i, (label, (fit_s, kern_s, calls)) in enumerate(rows.items()):
        fl = floor[i]
        need = "%s (%s)" % (fmt(sk_t / tgt[1]), "≥ %g×" % tgt[1]) if tgt[0] == "speedup" else (
            "≥ %d %% peak" % (100 * tgt[1]))
        print("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
            label, fmt(fit_s), fmt(kern_s), fmt(fit_s - kern_s), fmt(fl) if fl else "—",
            fmt(kern_s - fl) if fl else "—", fmt(sk_t), need))
    print("kernel entry points (last fit, BLAS + OpenMP 1 thread): " + ", ".join(
        "%s %.1f %%" % (k_, 100 * v / sum(calls.values())) for k_, v in calls.items()))


def predict_breakdown(name, cfg, repeats, with_cprofile):
    """predict_proba: whole call vs the compiled ``predict`` vs the Python around it."""
    setup = bench.PREDICT_SETUPS[name](cfg)
    model, (X, _) = setup["model"], setup["data"]
    calls = setup["calls"]
    args = [X[i:i + 1] for i in range(calls)] if calls > 1 else [X]
    sk = bench.twins_of(model, *setup["fit"])["sklearn"]

    def call_all(est):
        for a in args:
            est.predict_proba(a)

    call_all(model)
    real = pb_backend._kernels
    total, kern = [], []
    for _ in range(repeats):
        timer = KernelTimer(real)
        pb_backend._kernels = timer
        try:
            total.append(bench.timed(call_all, model)[0] / calls)
        finally:
            pb_backend._kernels = real
        kern.append(sum(timer.seconds.values()) / calls)
    sk_t = statistics.median(bench.timed(call_all, sk)[0] / calls for _ in range(repeats))
    fmt = bench.fmt_t
    t, k = statistics.median(total), statistics.median(kern)
    print("\n## %s (per call)" % name)
    print("| predict_proba | kernels | python | sklearn |\n|---|---|---|---|")
    print("| %s | %s | %s | %s |" % (fmt(t), fmt(k), fmt(t - k), fmt(sk_t)))
    if with_cprofile:
        prof = cProfile.Profile()
        prof.runcall(call_all, model)
        print_stats(prof, name)


SITES = ("epoch start", "batch, 1st", "batch, 2nd", "epoch end")


def barriers(name, cfg, fits):
    """Per thread and epoch: work before and wait in each barrier site of the epoch
    loops, summed over ``fits`` fits (their threads as set)."""
    setup = bench.FIT_SETUPS[name](cfg)
    X, y, _, _ = setup["data"]
    spec = setup["spec"]
    bench.pb_estimator(spec).set_params(max_iter=1).fit(X[:256], y[:256])  # warm-up
    kernels = pb_backend._kernels
    epochs, fit_s = 0, []
    kernels.barrier_clock(True)
    try:
        for _ in range(fits):
            est = bench.pb_estimator(spec)
            dt, _ = bench.timed(est.fit, X, y)
            epochs += max(est.n_iter_, 1)
            fit_s.append(dt / max(est.n_iter_, 1))
        times = np.array(kernels.barrier_times())
    finally:
        kernels.barrier_clock(False)
    threads = np.flatnonzero(times[:, :, 2].sum(axis=1))
    print("\n### barriers: %s (%d fits, %s an epoch)" % (
        name, fits, bench.fmt_t(statistics.median(fit_s))))
    if not len(threads):
        print("no barriers: the fits ran on one thread (or cut by neither rows nor units)")
        return
    print("| thread | " + " | ".join("%s: work / wait" % s for s in SITES)
          + " | work | wait |")
    print("|---|" + "---|" * (len(SITES) + 2))
    fmt = bench.fmt_t
    for t in threads:
        work, wait = times[t, :, 0] / epochs, times[t, :, 1] / epochs
        print("| %d | " % t + " | ".join("%s / %s" % (fmt(a), fmt(b)) for a, b in zip(work, wait))
              + " | %s | %s |" % (fmt(work.sum()), fmt(wait.sum())))
    print("(per epoch; barriers per epoch and thread: %s)" % ", ".join(
        "%g" % c for c in times[threads[0], :, 2] / epochs))


def print_stats(prof, name):
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(12)
    print("\n### cProfile: %s (tottime)\n```" % name)
    lines = buf.getvalue().splitlines()
    head = next((i for i, ln in enumerate(lines) if "ncalls" in ln), 0)
    print("\n".join(ln.replace(os.path.dirname(np.__path__[0]) + "/", "")
                    for ln in lines[head:head + 14]))
    print("```")


def loop_fits(name, cfg, seconds, ctl):
    """Fit repeatedly for ~``seconds``; tell perf to start sampling once data is built."""
    setup = bench.FIT_SETUPS[name](cfg)
    X, y, _, _ = setup["data"]
    bench.pb_estimator(setup["spec"]).set_params(max_iter=1).fit(X[:256], y[:256])
    if ctl:
        with open(ctl, "w") as f:
            f.write("enable\n")
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        bench.pb_estimator(setup["spec"]).fit(X, y)
    if ctl:
        with open(ctl, "w") as f:
            f.write("disable\n")


def perf_profile(name, extra, seconds=8, top=22):
    tmp = tempfile.mkdtemp(prefix="pbperf")
    ctl, data = os.path.join(tmp, "ctl"), os.path.join(tmp, "perf.data")
    os.mkfifo(ctl)
    cmd = ["perf", "record", "-q", "-F", "1999", "-D", "-1", "--control", "fifo:" + ctl,
           "-o", data, "--", sys.executable, os.path.abspath(__file__), name,
           "--loop", str(seconds), "--ctl", ctl] + extra
    subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL)
    print("\n### perf: %s, %d s of fits (self time)" % (name, seconds))
    for sort in ("dso", "sym"):
        out = subprocess.run(
            ["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", sort,
             "--percent-limit", "0.7"], capture_output=True, text=True).stdout
        lines = [ln for ln in out.splitlines() if ln.strip() and not ln.startswith("#")]
        print("```")
        print("\n".join(ln[:150] for ln in lines[:top]))
        print("```")


def cprofile(name, cfg):
    setup = bench.FIT_SETUPS[name](cfg)
    X, y, _, _ = setup["data"]
    est = bench.pb_estimator(setup["spec"])
    prof = cProfile.Profile()
    prof.runcall(est.fit, X, y)
    print_stats(prof, name)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workloads", nargs="*",
                    help="fit or predict workloads of bench/run.py (default: the fit ones)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--epochs", type=int, help="cap every workload's epochs / iterations "
                    "(the figures are per epoch, so a cap only shortens the run)")
    ap.add_argument("--fits", type=int, default=3, help="fits per setting (median)")
    ap.add_argument("--perf", action="store_true", help="also sample with perf record")
    ap.add_argument("--cprofile", action="store_true", help="also run cProfile")
    ap.add_argument("--barriers", action="store_true",
                    help="also time the barriers of the epochs, per thread")
    ap.add_argument("--loop", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--ctl", help=argparse.SUPPRESS)
    args = ap.parse_args()

    class Cfg:
        quick = args.quick
        repeats = 1

        @staticmethod
        def e(epochs):
            return max(1, epochs // 10) if args.quick else epochs

        @staticmethod
        def n(rows):
            return rows // 5 if args.quick else rows

    if args.epochs:
        for name, make in list(bench.FIT_SETUPS.items()):
            def capped(cfg, make=make):
                setup = make(cfg)
                setup["spec"]["epochs"] = min(setup["spec"]["epochs"], args.epochs)
                return setup
            bench.FIT_SETUPS[name] = capped
    names = args.workloads or list(bench.FIT_SETUPS)
    if args.loop:
        loop_fits(names[0], Cfg, args.loop, args.ctl)
        return
    for name in names:
        if name in bench.PREDICT_SETUPS:
            predict_breakdown(name, Cfg, args.fits, args.cprofile)
            continue
        breakdown(name, Cfg, args.fits)
        if args.barriers:
            barriers(name, Cfg, args.fits)
        if args.cprofile:
            cprofile(name, Cfg)
        if args.perf:
            perf_profile(name, (["--quick"] if args.quick else [])
                         + (["--epochs", str(args.epochs)] if args.epochs else []))


if __name__ == "__main__":
    main()
