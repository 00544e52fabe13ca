"""Extension modules only; the project's metadata lives in pyproject.toml.

``PYBACKPROP_DEBUG=1`` at build time turns Cython's bounds and wraparound checks
back on (and drops -O3) for the whole of csrc/.
The kernels are built with OpenMP when the compiler takes ``-fopenmp`` (a data-parallel
epoch splits each batch over the cores); ``PYBACKPROP_OPENMP=0``, or a compiler without
it, builds them serial.
"""
import os
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("PYBACKPROP_DEBUG", "0") not in ("", "0")

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": not DEBUG,
}
# -fno-math-errno lets sqrt vectorise (the kernels never read errno);
# -fno-trapping-math lets the branch-free selects of exp and relu vectorise (the kernels
# never read floating-point exception flags). Neither changes a computed value.
compile_args = (["-O0", "-g"] if DEBUG else ["-O3"]) + ["-fno-math-errno", "-fno-trapping-math"]


def builds_with(flag, source):
    """Whether a test program compiles and links with ``flag``."""
    from setuptools._distutils.ccompiler import new_compiler
    from setuptools._distutils.errors import CompileError, LinkError
    from setuptools._distutils.sysconfig import customize_compiler

    compiler = new_compiler()
    customize_compiler(compiler)
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(source)
        try:
            objects = compiler.compile([src], output_dir=tmp, extra_postargs=[flag])
            compiler.link_executable(objects, os.path.join(tmp, "probe"),
                                     extra_postargs=[flag])
        except (CompileError, LinkError):
            return False
    return True


def openmp_flags():
    """``["-fopenmp"]`` when a test program compiles and links with it, else []."""
    if os.environ.get("PYBACKPROP_OPENMP", "1") in ("", "0"):
        return []
    if builds_with("-fopenmp", "#include <omp.h>\n"
                   "int main(void) { return omp_get_max_threads() < 1; }\n"):
        return ["-fopenmp"]
    return []


openmp = openmp_flags()
# the optimizer step sums the weights' squares as an `omp simd` reduction (_loops.h);
# -fopenmp covers it, and without OpenMP -fopenmp-simd (no runtime) still vectorises it
if not openmp and builds_with("-fopenmp-simd", "int main(void) { return 0; }\n"):
    compile_args.append("-fopenmp-simd")

extensions = [
    Extension(
        "pybackprop._kernels",
        ["csrc/_kernels.pyx"],
        include_dirs=[np.get_include(), "csrc"],
        extra_compile_args=compile_args + openmp,
        extra_link_args=openmp,
        define_macros=[
            ("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION"),
            # what `pybackprop info` reports as the build
            ("PB_BUILD_FLAGS", '"%s"' % " ".join(
                compile_args + openmp + ["boundscheck=%s" % DEBUG, "target_clones=x86-64-v4,x86-64-v3,default"])),
        ],
    ),
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=directives,
        include_path=["csrc"],
    ),
)
