"""scikit-learn's estimator checks on every pybackprop estimator configuration."""

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from pybackprop import MLPClassifier, MLPRegressor

ESTIMATORS = [
    MLPClassifier(max_iter=100),
    MLPRegressor(max_iter=100),
    MLPClassifier(solver="lbfgs", max_iter=100),
    MLPRegressor(solver="sgd", max_iter=100),
    MLPClassifier(backend="numpy", max_iter=100),
]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@parametrize_with_checks(ESTIMATORS)
def test_sklearn_compatible_estimator(estimator, check):
    """The estimator passes scikit-learn's API contract check ``check``."""
    check(estimator)
