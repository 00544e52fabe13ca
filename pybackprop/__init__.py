"""pybackprop: multilayer perceptrons trained by backpropagation in typed Cython kernels,
with the face of scikit-learn's MLPClassifier and MLPRegressor."""

__version__ = "0.1.0"

from ._mlp import MLPClassifier, MLPRegressor

__all__ = ["MLPClassifier", "MLPRegressor", "__version__"]
