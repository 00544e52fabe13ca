"""pybackprop: multilayer perceptrons trained by backpropagation in typed Cython kernels,
with the face of scikit-learn's MLPClassifier and MLPRegressor."""

__version__ = "0.1.0"

from ._mlp import MLPClassifier, MLPRegressor
from ._progress import ProgressBar
from ._trace import BackpropTrace, LayerTrace, gradient_check

__all__ = [
    "BackpropTrace",
    "LayerTrace",
    "MLPClassifier",
    "MLPRegressor",
    "ProgressBar",
    "__version__",
    "gradient_check",
]
