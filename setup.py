"""Extension modules only; the project's metadata lives in pyproject.toml.

``PYBACKPROP_DEBUG=1`` at build time turns Cython's bounds and wraparound checks
back on (and drops -O3) for the whole of csrc/.
"""
import os

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

extensions = [
    Extension(
        "pybackprop._kernels",
        ["csrc/_kernels.pyx"],
        include_dirs=[np.get_include(), "csrc"],
        extra_compile_args=compile_args,
        define_macros=[
            ("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION"),
            # what `pybackprop info` reports as the build
            ("PB_BUILD_FLAGS", '"%s"' % " ".join(
                compile_args + ["boundscheck=%s" % DEBUG, "target_clones=x86-64-v3,default"])),
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
