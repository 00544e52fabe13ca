"""Conversion to and from scikit-learn's ``sklearn.neural_network`` estimators.

``to_sklearn(est)`` gives the fitted scikit-learn estimator that computes what ``est``
computes (same weights, copied), so that tools built for scikit-learn's MLPs (skl2onnx,
for instance) work on a pybackprop model. ``from_sklearn(cls, sk_est)`` goes the other
way and packs the weights into pybackprop's flat parameter buffer. Both copy every
fitted attribute either library reads in ``predict``, ``predict_proba``, ``score``,
``partial_fit`` and warm-started ``fit``, including the stochastic optimizer's state
(Adam's moments and step count, SGD's velocities and learning rate), so that training
goes on where it stopped. The round trip ``from_sklearn(type(est), to_sklearn(est))``
gives back the very same weights.

Not representable in scikit-learn:

* activations it lacks ('leaky_relu', 'elu', 'gelu', 'softplus', 'silu') or different
  activations per hidden layer: ``to_sklearn`` raises ``ValueError``;
* the training-only parameters ``class_weight``, ``dropout``, ``scoring`` and
  ``callbacks``: they change how a model is trained, not what a fitted model computes,
  so ``to_sklearn`` drops them with a ``UserWarning`` when they are not at their
  defaults (the exported model predicts the same; refitting it trains without them);
* ``validation_loss_curve_``: scikit-learn keeps no held-out loss; ``from_sklearn``
  fills it with NaN, one per entry of ``validation_scores_``.

Loss figures (``loss_``, ``loss_curve_``, ``best_loss_``) are copied as they are. For a
regressor with several outputs and ``loss='squared_error'`` they therefore stay in the
convention of the library that trained the model (pybackprop sums the squared error
over the outputs, scikit-learn averages it; see README), as no exact conversion exists
once ``alpha > 0``.
"""

import copy
import warnings

import numpy as np
from sklearn.base import is_classifier
from sklearn.neural_network import MLPClassifier as SkMLPClassifier
from sklearn.neural_network import MLPRegressor as SkMLPRegressor
from sklearn.neural_network._stochastic_optimizers import AdamOptimizer, SGDOptimizer

from ._layout import Layout, checked_weights
from ._optim import AdamState, SGDState

__all__ = ["from_sklearn", "to_sklearn"]

SKLEARN_ACTIVATIONS = ("identity", "logistic", "tanh", "relu")

# fitted attributes copied as they are (lists copied, arrays copied), when present
_PLAIN_ATTRS = (
    "n_features_in_",
    "feature_names_in_",
    "n_iter_",
    "t_",
    "n_layers_",
    "n_outputs_",
    "out_activation_",
    "loss_",
    "loss_curve_",
    "best_loss_",
    "validation_scores_",
    "best_validation_score_",
    "_no_improvement_count",
)


def _copy_value(value):
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, list):
        return list(value)
    return value


def _copy_plain(src, dst):
    for name in _PLAIN_ATTRS:
        if name in src.__dict__:
            setattr(dst, name, _copy_value(src.__dict__[name]))


def _copy_labels(src, dst):
    if "_label_binarizer" in src.__dict__:
        dst._label_binarizer = copy.deepcopy(src._label_binarizer)
        dst.classes_ = dst._label_binarizer.classes_


def _is_fitted(est):
    return "coefs_" in est.__dict__


def _sklearn_class(est):
    return SkMLPClassifier if is_classifier(est) else SkMLPRegressor


def _sklearn_params(est, sk_cls):
    """est's parameters that scikit-learn has; the activation checked, the training-only
    extras at non-default values reported."""
    params = est.get_params(deep=False)
    sk_names = set(sk_cls().get_params(deep=False))
    defaults = type(est)().get_params(deep=False)
    activation = params["activation"]
    if not isinstance(activation, str):
        names = list(activation)
        if len(set(names)) != 1:
            raise ValueError(
                "scikit-learn's MLPs use one activation for every hidden layer; this "
                f"model has activation={activation!r}."
            )
        activation = names[0]
    if activation not in SKLEARN_ACTIVATIONS:
        raise ValueError(
            f"scikit-learn's MLPs have no activation {activation!r} (they have "
            f"{', '.join(SKLEARN_ACTIVATIONS)}); this model cannot be converted."
        )
    params["activation"] = activation
    dropped = sorted(
        name for name in set(params) - sk_names - {"backend"}
        if not _same_param(params[name], defaults.get(name))
    )
    if dropped:
        warnings.warn(
            f"scikit-learn's {sk_cls.__name__} has no parameter "
            f"{', '.join(dropped)}: dropped. They act only during training, so the "
            "converted model predicts the same, but refitting it trains without them.",
            UserWarning,
            stacklevel=3,
        )
    return {name: copy.deepcopy(value) for name, value in params.items() if name in sk_names}


def _same_param(value, default):
    if isinstance(value, (list, tuple)) and not isinstance(default, (list, tuple)):
        # a per-layer sequence equal to the scalar default, e.g. dropout=(0.0, 0.0)
        return all(_same_param(v, default) for v in value)
    try:
        return bool(value == default)
    except (TypeError, ValueError):  # arrays, objects without a plain ==
        return value is default


def _split(flat, layout):
    """Copies of ``flat``'s per-layer blocks, in scikit-learn's order coefs + intercepts."""
    coefs, intercepts = layout.views(flat)
    return [a.copy() for a in coefs] + [b.copy() for b in intercepts]


def _flatten(arrays, layout, dtype):
    n = layout.n_layers
    return layout.pack(arrays[:n], arrays[n:], dtype)


def _optimizer_to_sklearn(opt, layout, params):
    if isinstance(opt, AdamState):
        sk = AdamOptimizer(params, opt.learning_rate_init, opt.beta_1, opt.beta_2,
                           opt.epsilon)
        sk.t = int(opt.t)
        sk.ms = _split(opt.m, layout)
        sk.vs = _split(opt.v, layout)
    elif isinstance(opt, SGDState):
        sk = SGDOptimizer(params, opt.learning_rate_init, opt.lr_schedule, opt.momentum,
                          opt.nesterov, opt.power_t)
        sk.velocities = _split(opt.velocity, layout)
    else:  # pragma: no cover - no other optimizer exists
        return None
    sk.learning_rate = opt.learning_rate
    return sk


def _optimizer_from_sklearn(sk, layout, dtype):
    if isinstance(sk, AdamOptimizer):
        opt = AdamState(layout.n_params, dtype, sk.learning_rate_init, sk.beta_1,
                        sk.beta_2, sk.epsilon)
        opt.t = int(sk.t)
        opt.m = _flatten(sk.ms, layout, dtype)
        opt.v = _flatten(sk.vs, layout, dtype)
    elif isinstance(sk, SGDOptimizer):
        opt = SGDState(layout.n_params, dtype, sk.learning_rate_init, sk.lr_schedule,
                       sk.momentum, sk.nesterov, sk.power_t)
        opt.velocity = _flatten(sk.velocities, layout, dtype)
    else:
        return None
    opt.learning_rate = sk.learning_rate
    return opt


def to_sklearn(est):
    """The scikit-learn estimator equivalent to the pybackprop estimator ``est``.

    Parameters
    ----------
    est : pybackprop.MLPClassifier or pybackprop.MLPRegressor
        Fitted or not.

    Returns
    -------
    sk_est : sklearn.neural_network.MLPClassifier or MLPRegressor
        The same parameters (less ``backend`` and pybackprop's training-only
        extensions) and, when ``est`` is fitted, copies of its weights and fitted
        attributes: it predicts what ``est`` predicts, up to floating-point rounding
        of the two implementations, and ``partial_fit`` / warm-started ``fit`` go on
        from the same optimizer state.

    Raises
    ------
    ValueError
        When ``est`` uses an activation scikit-learn does not have, or several.
    """
    sk_cls = _sklearn_class(est)
    sk = sk_cls(**_sklearn_params(est, sk_cls))
    if not _is_fitted(est):
        return sk
    params = est._params()  # repacks coefs_ / intercepts_ if the user replaced them
    layout = est._layout
    coefs, intercepts = layout.views(params)
    sk.coefs_ = [c.copy() for c in coefs]
    sk.intercepts_ = [b.copy() for b in intercepts]
    _copy_plain(est, sk)
    _copy_labels(est, sk)
    best = est.__dict__.get("_best_params")
    if best is not None:
        sk._best_coefs, sk._best_intercepts = (
            [a.copy() for a in part] for part in layout.views(best)
        )
    opt = est.__dict__.get("_optimizer")
    if opt is not None:
        sk._optimizer = _optimizer_to_sklearn(opt, layout, sk.coefs_ + sk.intercepts_)
    return sk


def from_sklearn(cls, sk_est):
    """The pybackprop estimator of class ``cls`` equivalent to ``sk_est``.

    Parameters
    ----------
    cls : type
        ``pybackprop.MLPClassifier`` or ``pybackprop.MLPRegressor`` (or a subclass).
    sk_est : sklearn.neural_network.MLPClassifier or MLPRegressor
        Fitted or not; its kind (classifier or regressor) must be ``cls``'s.

    Returns
    -------
    est : cls
        The same parameters (``backend`` at its default) and, when ``sk_est`` is
        fitted, its weights copied into one flat parameter buffer, with every fitted
        attribute and the stochastic optimizer's state.
    """
    template = cls()
    expected = SkMLPClassifier if is_classifier(template) else SkMLPRegressor
    if not isinstance(sk_est, expected):
        raise TypeError(
            f"{cls.__name__}.from_sklearn needs a fitted or unfitted "
            f"sklearn.neural_network.{expected.__name__}, got {type(sk_est).__name__}."
        )
    names = set(template.get_params(deep=False))
    params = {name: copy.deepcopy(value)
              for name, value in sk_est.get_params(deep=False).items() if name in names}
    est = cls(**params)
    if not _is_fitted(sk_est):
        return est
    try:
        coefs, intercepts = checked_weights(list(sk_est.coefs_), list(sk_est.intercepts_),
                                             getattr(sk_est, "n_features_in_", None),
                                             getattr(sk_est, "n_outputs_", None))
    except ValueError as exc:
        raise ValueError(f"sk_est's weights do not form its network: {exc}") from None
    dtype = np.result_type(*coefs, *intercepts)
    if dtype not in (np.float32, np.float64):
        dtype = np.dtype(np.float64)
    layout = Layout([coefs[0].shape[0]] + [c.shape[1] for c in coefs])
    est._layout = layout
    est._set_params_buffer(layout.pack(coefs, intercepts, dtype))
    _copy_plain(sk_est, est)
    _copy_labels(sk_est, est)
    best_c = sk_est.__dict__.get("_best_coefs")
    best_i = sk_est.__dict__.get("_best_intercepts")
    if best_c is not None and best_i is not None:
        # early stopping's best weights (a fit keeps none without it)
        est._best_params = layout.pack(best_c, best_i, dtype)
    opt = sk_est.__dict__.get("_optimizer")
    if opt is not None:
        converted = _optimizer_from_sklearn(opt, layout, dtype)
        if converted is not None:
            est._optimizer = converted
    scores = est.__dict__.get("validation_scores_")
    if isinstance(scores, list):
        est.validation_loss_curve_ = [float("nan")] * len(scores)
    return est
