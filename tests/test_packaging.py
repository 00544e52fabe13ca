"""The installed package is typed (PEP 561) and its stub of the compiled kernels matches
them, argument for argument."""

import ast
import inspect
from pathlib import Path

import pytest

import pybackprop
from pybackprop import _kernels

PACKAGE = Path(pybackprop.__file__).parent
KERNELS = {"run_epoch": "_RunEpoch", "loss_grad": "_LossGrad", "predict": "_Predict",
           "trace": "_Trace"}


def test_typed_markers_are_installed():
    assert (PACKAGE / "py.typed").is_file()
    assert (PACKAGE / "_kernels.pyi").is_file()


def stub_tree():
    return ast.parse((PACKAGE / "_kernels.pyi").read_text(encoding="utf-8"))


def test_stub_declares_every_public_kernel():
    tree = stub_tree()
    declared = {node.target.id for node in tree.body if isinstance(node, ast.AnnAssign)}
    functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    classes = {node.name for node in tree.body if isinstance(node, ast.ClassDef)
               and not node.name.startswith("_")}
    public = {name for name in vars(_kernels) if not name.startswith("_")
              and callable(getattr(_kernels, name))}
    assert (declared - {"BUILD_FLAGS", "HAVE_OPENMP"} == public - functions - classes
            == set(KERNELS))
    assert classes == {"NonFiniteInput"} and issubclass(_kernels.NonFiniteInput, ValueError)
    assert functions == {"max_threads", "row_products", "narrow_backward",
                         "barrier_clock", "barrier_times", "unit_split_size",
                         "sparse_batch_nnz", "sparse_step_sizes"} and functions <= public
    assert "BUILD_FLAGS" in declared and isinstance(_kernels.BUILD_FLAGS, str)
    assert "HAVE_OPENMP" in declared and isinstance(_kernels.HAVE_OPENMP, bool)


@pytest.mark.parametrize("kernel", list(KERNELS))
@pytest.mark.parametrize("specialisation", ["float", "double"])
def test_stub_signature_matches_compiled_kernel(kernel, specialisation):
    protocols = {node.name: node for node in stub_tree().body if isinstance(node, ast.ClassDef)}
    call = next(f for f in protocols[KERNELS[kernel]].body
                if isinstance(f, ast.FunctionDef) and f.name == "__call__")
    stub = [a.arg for a in call.args.args][1:]  # less self
    runtime = list(inspect.signature(getattr(_kernels, kernel)[specialisation]).parameters)
    assert stub == runtime
