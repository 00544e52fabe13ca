"""A/B timing of two builds of the kernels on one workload of bench/run.py.

    python bench/ab.py WORKLOAD A.so B.so [--rounds 4] [--fits 3]
    python bench/ab.py WORKLOAD A.so B.so --in-process [--pairs 8]

Each round runs, for A then B, a fresh Python process that loads that build of
``pybackprop._kernels`` (copied over the one of an editable install, ``pip install -e
. --no-build-isolation``, and put back at the end), builds the workload's data, fits
once on a slice to warm up, then fits ``--fits`` times and prints the median seconds
per epoch. Alternating fresh processes is what makes two builds comparable on a
machine whose speed drifts over minutes: compare the two columns round by round,
and distrust rounds where both moved together.

With ``--in-process``, one process loads both builds side by side (each .so as its own
module object) and alternates fits between them, pair by pair, swapping the module the
backend calls: ``--pairs`` pairs after one warm-up pair, and the median of the pairs'
B/A ratios. The two fits of a pair run seconds apart, so a drift of the machine moves
both, where the fresh-process rounds moved by 10-30 % on this 2-core VM. Run a build
against itself first to see what is noise: digits-sgd A/A gave 1.003 over 10 pairs
(single pairs 0.98-1.06), regression 0.984 over 3. Both builds must take the Python
layer's arguments as they are.

To keep a build: ``cp pybackprop/_kernels*.so /tmp/A.so`` after ``pip install -e``.
"""

import argparse
import glob
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

CHILD = """
import sys, time, types, statistics
sys.path.insert(0, {here!r})
import run as bench
cfg = bench.Config(types.SimpleNamespace(quick=False, repeats=1), [])
setup = bench.FIT_SETUPS[{name!r}](cfg)
X, y, _, _ = setup["data"]
spec = setup["spec"]
bench.pb_estimator(spec).set_params(max_iter=1).fit(X[:512], y[:512])
per_epoch = []
for _ in range({fits}):
    t0 = time.perf_counter()
    est = bench.pb_estimator(spec).fit(X, y)
    per_epoch.append((time.perf_counter() - t0) / max(getattr(est, "n_iter_", 1), 1))
print(statistics.median(per_epoch))
"""


def in_process(workload, builds, pairs):
    """Alternating fits of the two builds in this process; prints per-epoch medians
    and the median of the pairs' B/A ratios."""
    import importlib.util
    import types
    import warnings

    sys.path.insert(0, HERE)
    import run as bench

    import pybackprop._backend as backend

    modules = []
    for build in builds:
        spec = importlib.util.spec_from_file_location("pybackprop._kernels", build)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        modules.append(module)
    cfg = bench.Config(types.SimpleNamespace(quick=False, repeats=1), [])
    setup = bench.FIT_SETUPS[workload](cfg)
    X, y, _, _ = setup["data"]
    times = ([], [])
    original = backend._kernels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for i in range(2 * pairs + 2):
                backend._kernels = modules[i % 2]
                t0 = time.perf_counter()
                est = bench.pb_estimator(setup["spec"]).fit(X, y)
                if i >= 2:   # the first pair warms up
                    times[i % 2].append((time.perf_counter() - t0)
                                        / max(getattr(est, "n_iter_", 1), 1))
    finally:
        backend._kernels = original
    ratios = [b / a for a, b in zip(*times)]
    for label, build, ts in zip("AB", builds, times):
        print("%s %-28s per epoch, median of %d: %s" % (
            label, os.path.basename(build), len(ts), _fmt(statistics.median(ts))))
    print("B/A, pair by pair: %s; median %.3f" % (
        " ".join("%.2f" % r for r in ratios), statistics.median(ratios)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workload")
    ap.add_argument("a", help="the first build (a copy of pybackprop/_kernels*.so)")
    ap.add_argument("b", help="the second build")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--fits", type=int, default=3)
    ap.add_argument("--in-process", action="store_true",
                    help="both builds in one process, fits alternating pair by pair")
    ap.add_argument("--pairs", type=int, default=8)
    args = ap.parse_args(argv)
    if args.in_process:
        in_process(args.workload, (args.a, args.b), args.pairs)
        return
    installed = glob.glob(os.path.join(ROOT, "pybackprop", "_kernels*.so"))
    if len(installed) != 1:
        sys.exit("needs exactly one pybackprop/_kernels*.so (an editable install); found %d"
                 % len(installed))
    target = installed[0]
    backup = tempfile.NamedTemporaryFile(suffix=".so", delete=False).name
    shutil.copy2(target, backup)
    code = CHILD.format(here=HERE, name=args.workload, fits=args.fits)
    times = {"A": [], "B": []}
    try:
        for _ in range(args.rounds):
            for label, build in (("A", args.a), ("B", args.b)):
                shutil.copy2(build, target)
                out = subprocess.run([sys.executable, "-c", code], cwd=tempfile.gettempdir(),
                                     capture_output=True, text=True, check=True).stdout
                times[label].append(float(out.strip().splitlines()[-1]))
    finally:
        shutil.copy2(backup, target)
        os.unlink(backup)
    for label, build in (("A", args.a), ("B", args.b)):
        ts = times[label]
        print("%s %-28s per epoch, round by round: %s; median %s" % (
            label, os.path.basename(build), ", ".join(_fmt(t) for t in ts),
            _fmt(statistics.median(ts))))


def _fmt(seconds):
    return "%.1f ms" % (seconds * 1e3) if seconds >= 1e-3 else "%.1f µs" % (seconds * 1e6)


if __name__ == "__main__":
    main()
