"""The command line, verbose output and the progress bar."""

import subprocess
import sys
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier as SkMLPClassifier

from pybackprop import MLPClassifier, ProgressBar


def run_cli(tmp_path, *args):
    """``python -m pybackprop ...`` from outside the source tree (the installed package)."""
    return subprocess.run([sys.executable, "-m", "pybackprop", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


def test_help_lists_every_command(tmp_path):
    """--help names demo, info and bench; each command has its own --help."""
    out = run_cli(tmp_path, "--help")
    assert out.returncode == 0
    for command in ("demo", "info", "bench"):
        assert command in out.stdout
        sub = run_cli(tmp_path, command, "--help")
        assert sub.returncode == 0 and "usage" in sub.stdout


def test_bad_command_is_an_error_on_stderr(tmp_path):
    """An unknown command exits non-zero with its message on stderr, nothing on stdout."""
    out = run_cli(tmp_path, "frobnicate")
    assert out.returncode != 0
    assert "invalid choice" in out.stderr and out.stdout == ""


def test_demo_prints_accuracy_and_seconds(tmp_path):
    """demo fits digits and prints an accuracy near scikit-learn's and the seconds taken."""
    out = run_cli(tmp_path, "demo", "--max-iter", "30", "--no-compare")
    assert out.returncode == 0, out.stderr
    line = next(l for l in out.stdout.splitlines() if l.startswith("pybackprop"))
    accuracy = float(line.split("accuracy")[1].split()[0])
    seconds = float(line.split("fit")[1].split()[0])
    assert 0.9 < accuracy <= 1.0 and seconds > 0


def test_demo_compare_lists_the_three_fits(tmp_path):
    """With comparison, scikit-learn and the NumPy backend reach the same accuracy."""
    out = run_cli(tmp_path, "demo", "--max-iter", "5")
    assert out.returncode == 0, out.stderr
    accuracies = {l.rsplit("accuracy", 1)[0].strip(): l.split("accuracy")[1].split()[0]
                  for l in out.stdout.splitlines() if "accuracy" in l}
    assert set(accuracies) == {"pybackprop", "scikit-learn", "pybackprop numpy"}
    assert len(set(accuracies.values())) == 1


def test_info_reports_versions_build_and_threads(tmp_path):
    """info prints the versions, the kernels' build flags, OpenMP's threads, how a
    batch is split, and the BLAS thread pools."""
    from pybackprop import _kernels, _threads

    out = run_cli(tmp_path, "info")
    assert out.returncode == 0, out.stderr
    for word in ("pybackprop", "numpy", "scikit-learn", "build", "threadpool", "openmp"):
        assert word in out.stdout
    line = next(l for l in out.stdout.splitlines() if l.startswith("openmp"))
    assert ("yes" if _kernels.HAVE_OPENMP else "no") in line
    assert f"{_threads.usable_cores()} usable cores" in line


def test_verbose_prints_scikit_learns_lines(capsys):
    """verbose=True prints, line for line, what scikit-learn prints for the same fit."""
    X, y = load_digits(return_X_y=True)
    X, y = X[:300] / 16, y[:300]
    params = dict(max_iter=4, random_state=0, verbose=True, early_stopping=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        SkMLPClassifier(**params).fit(X, y)
        theirs = capsys.readouterr().out
        MLPClassifier(**params).fit(X, y)
        ours = capsys.readouterr().out
    assert ours.splitlines() and len(ours.splitlines()) == len(theirs.splitlines())
    for a, b in zip(ours.splitlines(), theirs.splitlines()):
        name_a, _, value_a = a.rpartition(" ")
        name_b, _, value_b = b.rpartition(" ")
        assert name_a == name_b
        assert float(value_a) == pytest.approx(float(value_b), rel=1e-6)


def test_silent_by_default(capsys):
    """Nothing is printed without verbose or a progress bar."""
    X, y = load_digits(return_X_y=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        MLPClassifier(max_iter=2, random_state=0).fit(X[:200] / 16, y[:200])
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_progress_bar_counts_epochs_and_leaves_the_model_alone(capsys):
    """A ProgressBar callback draws one step per epoch and trains the same model."""
    pytest.importorskip("tqdm")
    X, y = load_digits(return_X_y=True)
    X, y = X[:300] / 16, y[:300]
    bar = ProgressBar()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with_bar = MLPClassifier(max_iter=5, random_state=0, callbacks=[bar]).fit(X, y)
        plain = MLPClassifier(max_iter=5, random_state=0).fit(X, y)
    err = capsys.readouterr().err
    assert "5/5" in err and "loss=" in err
    for a, b in zip(with_bar.coefs_, plain.coefs_):
        np.testing.assert_array_equal(a, b)


def test_progress_bar_without_tqdm_prints_plain_lines(monkeypatch, capsys):
    """Without tqdm the bar falls back to one printed line per epoch."""
    import builtins

    real_import = builtins.__import__

    def no_tqdm(name, *args, **kwargs):
        if name.startswith("tqdm"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    X, y = load_digits(return_X_y=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        MLPClassifier(max_iter=3, random_state=0, callbacks=[ProgressBar()]).fit(X[:200] / 16, y[:200])
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("epoch")]
    assert [l.split(":")[0] for l in lines] == ["epoch 1", "epoch 2", "epoch 3"]


def test_demo_saves_the_loss_curves(tmp_path):
    """demo --plot writes the loss curves as a PNG when matplotlib is installed."""
    pytest.importorskip("matplotlib")
    out = run_cli(tmp_path, "demo", "--max-iter", "5", "--plot", "curves.png")
    assert out.returncode == 0, out.stderr
    png = (tmp_path / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


@pytest.mark.parametrize("args, message", [
    (("--max-iter", "0"), "argument --max-iter: must be at least 1, got 0"),
    (("--max-iter", "ten"), "argument --max-iter: 'ten' is not an integer"),
    (("--plot", "no/such/folder/curves.png"), "argument --plot: no directory"),
])
def test_demo_bad_arguments_are_usage_errors(tmp_path, args, message):
    """Bad demo arguments exit with argparse's usage error (status 2) before any fit:
    no traceback, nothing on stdout."""
    out = run_cli(tmp_path, "demo", "--no-compare", *args)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr
    assert out.stdout == ""
