"""Command line: ``pybackprop demo | info | bench`` (also ``python -m pybackprop``)."""

import argparse
import importlib.util
import os
import platform
import subprocess
import sys
import time
import warnings


def _demo(args):
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split

    from . import MLPClassifier, ProgressBar

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X / 16.0, y, test_size=0.25, random_state=0, stratify=y
    )
    params = dict(hidden_layer_sizes=(100,), max_iter=args.max_iter, random_state=0)
    # a progress bar when tqdm is there; no per-epoch lines otherwise
    callbacks = [ProgressBar(leave=False)] if importlib.util.find_spec("tqdm") else None
    runs = [("pybackprop", lambda: MLPClassifier(**params, callbacks=callbacks))]
    if args.compare:
        from sklearn.neural_network import MLPClassifier as SkMLPClassifier

        runs += [
            ("scikit-learn", lambda: SkMLPClassifier(**params)),
            ("pybackprop numpy", lambda: MLPClassifier(**params, backend="numpy")),
        ]
    print(f"digits: {X_train.shape[0]} training rows, {X.shape[1]} features, 10 classes; "
          f"MLP (100,) relu, adam, {args.max_iter} epochs")
    curves = {}
    for name, make in runs:
        est = make()
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(X_train, y_train)
        seconds = time.perf_counter() - start
        accuracy = est.score(X_test, y_test)
        curves[name] = est.loss_curve_
        print(f"{name:18s} accuracy {accuracy:.4f}   fit {seconds:.3f} s")
    if args.plot:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("matplotlib is not installed: no plot", file=sys.stderr)
            return 0
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, curve in curves.items():
            ax.plot(np.arange(1, len(curve) + 1), curve, label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss")
        ax.set_yscale("log")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot)
        print(f"loss curves saved to {args.plot}")
    return 0


def _info(args):
    import numpy
    import scipy
    import sklearn
    from threadpoolctl import threadpool_info

    from . import __version__, _kernels

    print(f"pybackprop {__version__} ({os.path.dirname(__file__)})")
    print(f"kernels    {_kernels.__file__}")
    print(f"build      {_kernels.BUILD_FLAGS}")
    print(f"python     {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cpus")
    print(f"numpy {numpy.__version__}, scipy {scipy.__version__}, scikit-learn {sklearn.__version__}")
    from ._threads import fit_split, usable_cores

    blocks, threads = fit_split(200, dropout=False)
    print(f"openmp     {'yes' if _kernels.HAVE_OPENMP else 'no'}, {_kernels.max_threads()} "
          f"threads; {usable_cores()} usable cores: a 200-row batch runs as {blocks} "
          f"block(s) on {threads} thread(s)")
    for pool in threadpool_info():
        print(f"threadpool {pool.get('internal_api')} {pool.get('version')} "
              f"threads={pool.get('num_threads')} {pool.get('filepath')}")
    return 0


def _bench(args):
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "bench", "run.py")
    if not os.path.exists(script):
        print("bench/run.py is not here: the benchmarks live in the source tree",
              file=sys.stderr)
        return 2
    return subprocess.call([sys.executable, script, *args.workloads])


def _positive_int(text):
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(prog="pybackprop", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="fit the digits data and print accuracy and seconds")
    demo.add_argument("--max-iter", type=_positive_int, default=100,
                      help="epochs (default 100)")
    demo.add_argument("--no-compare", dest="compare", action="store_false",
                      help="skip scikit-learn and the NumPy backend")
    demo.add_argument("--plot", metavar="PNG", default=None,
                      help="save the loss curves to this PNG (needs matplotlib)")
    demo.set_defaults(func=_demo)
    info = sub.add_parser("info", help="versions, kernels, BLAS and thread counts")
    info.set_defaults(func=_info)
    bench = sub.add_parser("bench", help="run bench/run.py from a source checkout")
    bench.add_argument("workloads", nargs="*")
    bench.set_defaults(func=_bench)
    args = parser.parse_args(argv)
    if getattr(args, "plot", None):
        # before the fits, not after them
        folder = os.path.dirname(os.path.abspath(args.plot))
        if not os.path.isdir(folder):
            parser.error(f"argument --plot: no directory {folder}")
    return args.func(args)
