"""MLPClassifier and MLPRegressor: scikit-learn's estimators, trained by our kernels.

Read top to bottom: the shared base with its parameter constraints, ``_fit``
(validate → allocate once → epoch loop → guard), then the two estimators.
The Python layer decides *when* (epochs, stopping, the random stream); the backend
does the arithmetic. Same parameters and ``random_state`` give scikit-learn's model:
same initialisation, same draws for the validation split and the per-epoch shuffle,
same loss scaling.
"""

import warnings
from numbers import Integral, Real

import numpy as np
import scipy
import scipy.optimize
import scipy.sparse as sp
from sklearn import get_config
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, _fit_context, is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.metrics import check_scoring
from sklearn.utils import assert_all_finite, check_random_state, column_or_1d
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import _check_partial_fit_first_call, type_of_target, unique_labels
from sklearn.utils.validation import (
    _check_sample_weight,
    check_array,
    check_is_fitted,
    validate_data,
)

from . import __version__, _backend, _reference
from ._backend import BACKENDS, Data, Net
from ._layout import HIDDEN_ACTIVATIONS, Layout, checked_weights
from ._optim import AdamState, SGDState
from ._threads import (blas_threads_for, block_gradients, cap_row_blocks, cut_by_units,
                       fit_split)

_STOCHASTIC_SOLVERS = ("sgd", "adam")
# scipy >= 1.15 deprecates L-BFGS-B's ``iprint``
_SCIPY_LBFGS_IPRINT = tuple(int(v) for v in scipy.__version__.split(".")[:2]) < (1, 15)


def _lbfgs_n_iter(result, max_iter):
    """Iterations L-BFGS ran, warning as scikit-learn does when it did not converge."""
    if result.status != 0:
        message = result.message
        if isinstance(message, bytes):
            message = message.decode("latin1")
        warnings.warn(
            f"lbfgs failed to converge after {result.nit} iteration(s) "
            f"(status={result.status}):\n{message}.\n\n"
            "Increase the number of iterations to improve the convergence "
            f"(max_iter={max_iter}).\nYou might also want to scale the data as shown in:\n"
            "    https://scikit-learn.org/stable/modules/preprocessing.html",
            ConvergenceWarning,
            stacklevel=3,
        )
    return min(result.nit, max_iter)


def _validated_sample_weight(sample_weight, X):
    """None, or a finite, non-negative, not all-zero float vector of one weight per row."""
    if sample_weight is None:
        return None
    sample_weight = _check_sample_weight(sample_weight, X, ensure_non_negative=True)
    if not np.any(sample_weight > 0):
        raise ValueError("sample_weight must contain at least one positive weight; "
                         "all weights are zero.")
    return sample_weight


def _fitted_label_binarizer(y):
    """``LabelBinarizer().fit(y)``, with the common case made here: for a 1-D array of
    integers (native byte order), scikit-learn's type of target is 'binary' for at most
    two distinct values and 'multiclass' otherwise, and its classes are the sorted
    distinct values in y's dtype, which ``np.unique`` gives in a tenth of the time
    (25 against 287 us for the 1797 labels of the digits: ``fit`` derives the type of
    target twice). Every other y goes to ``fit`` itself."""
    lb = LabelBinarizer()
    if (isinstance(y, np.ndarray) and y.ndim == 1 and y.size
            and y.dtype.kind in "iu" and y.dtype.isnative):
        classes = np.unique(y)
        lb.y_type_ = "multiclass" if classes.size > 2 else "binary"
        lb.sparse_input_ = False
        lb.classes_ = classes
        return lb
    return lb.fit(y)


def _check_two_classes(label_binarizer):
    if label_binarizer.y_type_ != "multilabel-indicator" and len(label_binarizer.classes_) < 2:
        raise ValueError(
            "MLPClassifier needs samples of at least 2 classes in the data, but the data "
            f"contains only one class: {label_binarizer.classes_[0]}"
        )


def _indicator(label_binarizer, y):
    """``label_binarizer.transform(y).astype(bool)``: the class indicator matrix.

    For the common case, 1-D binary or multiclass labels, it is built here from the
    labels' positions in the sorted ``classes_``; ``transform`` re-derives the target
    type of y twice and costs about 40 times as long (0.6 ms for the 1797 labels of the
    digits, 3.5 ms for 60000). Any other case, and any label not among ``classes_``,
    goes to ``transform`` itself, which gives its own result or error."""
    lb = label_binarizer
    if sp.issparse(y):
        # a sparse indicator matrix (multilabel): transform reads it as it is
        return lb.transform(y).astype(bool)
    y = np.asarray(y)
    if (y.ndim != 1 or lb.y_type_ not in ("binary", "multiclass") or lb.sparse_output
            or lb.neg_label != 0 or lb.pos_label != 1):
        return lb.transform(y).astype(bool)
    classes = lb.classes_
    try:
        codes = np.searchsorted(classes, y)
        known = bool((codes < len(classes)).all()
                     and (classes[np.minimum(codes, len(classes) - 1)] == y).all())
    except TypeError:
        known = False
    if not known:
        return lb.transform(y).astype(bool)
    if lb.y_type_ == "binary":
        return (codes == 1).reshape(-1, 1)
    Y = np.zeros((y.shape[0], len(classes)), dtype=bool)
    Y[np.arange(y.shape[0]), codes] = True
    return Y


def _labels(label_binarizer, scores):
    """``label_binarizer.inverse_transform(scores)``: the predicted labels.

    For the common case, dense scores of 1-D binary or multiclass labels with the
    default 0 / 1 labels, it is worked here: the class of the greatest score (the first
    of equal ones), or of a score above 0.5 for two classes. ``inverse_transform``
    routes each call through the array API and costs about 40 µs of a one-row
    predict's 55. Anything else goes to ``inverse_transform`` itself."""
    lb = label_binarizer
    if (not isinstance(scores, np.ndarray) or lb.y_type_ not in ("binary", "multiclass")
            or lb.sparse_input_ or lb.neg_label != 0 or lb.pos_label != 1):
        return lb.inverse_transform(scores)
    classes = lb.classes_
    if lb.y_type_ == "multiclass" and scores.ndim == 2 and scores.shape[1] == len(classes):
        return classes.take(scores.argmax(axis=1))
    if (lb.y_type_ == "binary" and len(classes) == 2
            and (scores.ndim == 1 or scores.ndim == 2 and scores.shape[1] == 1)):
        return classes.take((scores.reshape(-1) > 0.5).astype(np.intp))
    return lb.inverse_transform(scores)


def _call_callbacks(callbacks, est, info):
    """True when a callback asks to stop training."""
    if callbacks is None:
        return False
    if callable(callbacks):
        callbacks = [callbacks]
    stop = False
    for callback in callbacks:
        stop = bool(callback(est, info)) or stop
    return stop


class BaseMultilayerPerceptron(BaseEstimator):
    """Shared machinery of MLPClassifier and MLPRegressor; use those."""

    _parameter_constraints: dict = {
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions(set(HIDDEN_ACTIVATIONS)), list, tuple],
        "solver": [StrOptions({"lbfgs", "sgd", "adam"})],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "power_t": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "momentum": [Interval(Real, 0, 1, closed="both")],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left"), Options(Real, {np.inf})],
        "max_fun": [Interval(Integral, 1, None, closed="left")],
        "backend": [StrOptions({"cython", "numpy"})],
        "scoring": [None, str, callable],
        "dropout": [Interval(Real, 0, 1, closed="left"), list, tuple],
        "callbacks": [None, list, tuple, callable],
    }

    # ---- the network as the kernels see it --------------------------------------

    def _hidden_activations(self, n_hidden):
        """One activation name per hidden layer, checked."""
        if isinstance(self.activation, str):
            return [self.activation] * n_hidden
        names = list(self.activation)
        if len(names) != n_hidden or not all(
            isinstance(a, str) and a in HIDDEN_ACTIVATIONS for a in names
        ):
            raise ValueError(
                f"activation must be one of {sorted(HIDDEN_ACTIVATIONS)} or a sequence of "
                f"them, one per hidden layer ({n_hidden}); got {self.activation!r}."
            )
        return names

    def _dropout_rates(self, n_hidden):
        """One dropout rate per hidden layer, checked; all zero means no dropout."""
        rates = self.dropout
        if isinstance(rates, Real):
            rates = [rates] * n_hidden
        rates = list(rates)
        if len(rates) != n_hidden or not all(
            isinstance(r, Real) and not isinstance(r, bool) and 0 <= r < 1 for r in rates
        ):
            raise ValueError(
                "dropout must be a rate in [0, 1) or a sequence of them, one per hidden "
                f"layer ({n_hidden}); got {self.dropout!r}."
            )
        return np.array(rates, dtype=np.float64)

    def _net(self, training=False):
        loss = self.loss
        if loss == "log_loss" and self.out_activation_ == "logistic":
            loss = "binary_log_loss"
        n_hidden = self._layout.n_layers - 1
        dropout = self._dropout_rates(n_hidden) if training else None
        return Net(self._layout, self._hidden_activations(n_hidden), self.out_activation_,
                   loss, self.alpha, dropout)

    def _params(self):
        """The flat buffer behind coefs_ / intercepts_; repacked if the user replaced them."""
        params = getattr(self, "_flat_params", None)
        views = getattr(self, "_views", None)
        if (
            params is not None
            and views is not None
            and len(self.coefs_) == len(views[0])
            and len(self.intercepts_) == len(views[1])
            and all(a is b for a, b in zip(self.coefs_, views[0]))
            and all(a is b for a, b in zip(self.intercepts_, views[1]))
        ):
            return params  # the very views this buffer handed out
        if params is None or not self._layout.is_view_of(params, self.coefs_, self.intercepts_):
            coefs, intercepts = checked_weights(self.coefs_, self.intercepts_,
                                                 getattr(self, "n_features_in_", None),
                                                 getattr(self, "n_outputs_", None))
            dtype = np.result_type(*coefs, *intercepts)
            if dtype not in (np.float32, np.float64):
                dtype = np.float64
            self._layout = Layout([coefs[0].shape[0]] + [c.shape[1] for c in coefs])
            params = self._layout.pack(coefs, intercepts, dtype)
            self._set_params_buffer(params)
        return params

    def _set_params_buffer(self, params):
        self._flat_params = params
        coefs, intercepts = self._layout.views(params)
        self.coefs_ = coefs
        self.intercepts_ = intercepts
        self._views = (tuple(coefs), tuple(intercepts))

    def __getstate__(self):
        state = dict(super().__getstate__(), _pybackprop_version=__version__)
        # coefs_ / intercepts_ are views of the flat buffer: store it once
        if "_flat_params" in state and self._layout.is_view_of(
            state["_flat_params"], state.get("coefs_", []), state.get("intercepts_", [])
        ):
            state = dict(state)
            state.pop("coefs_")
            state.pop("intercepts_")
            state.pop("_views", None)
        return state

    def __setstate__(self, state):
        pickled = state.get("_pybackprop_version", "unknown")
        if pickled != __version__:
            warnings.warn(
                f"Trying to unpickle {type(self).__name__} from pybackprop {pickled} "
                f"with pybackprop {__version__}: this might lead to breaking code or "
                "invalid results. Use at your own risk.",
                UserWarning,
            )
        super().__setstate__(state)
        if "_flat_params" in state and "coefs_" not in state:
            self._set_params_buffer(self._flat_params)

    # ---- fitting -----------------------------------------------------------------

    def _init_coef(self, fan_in, fan_out, dtype, random_state, activation, out=None):
        """Glorot uniform (coef, intercept); scikit-learn's draws in scikit-learn's
        order, into ``out`` (two arrays) when given. The weights are drawn a few rows at
        a time (RandomState draws one value after another, so the stream is the same):
        a float32 layer of 20000 x 128 never has a float64 copy beside it."""
        factor = 2.0 if activation == "logistic" else 6.0
        bound = np.sqrt(factor / (fan_in + fan_out))
        coef, intercept = out if out is not None else (
            np.empty((fan_in, fan_out), dtype=dtype), np.empty(fan_out, dtype=dtype))
        rows = max(1, 65536 // max(1, fan_out))
        for start in range(0, fan_in, rows):
            stop = min(fan_in, start + rows)
            coef[start:stop] = random_state.uniform(-bound, bound, (stop - start, fan_out))
        intercept[...] = random_state.uniform(-bound, bound, fan_out)
        return coef, intercept

    def _initialize(self, y, layer_units, dtype, random_state):
        self.n_iter_ = 0
        self.t_ = 0
        self.n_outputs_ = y.shape[1]
        self.n_layers_ = len(layer_units)
        if not is_classifier(self):
            self.out_activation_ = "exp" if self.loss == "poisson" else "identity"
        elif self._label_binarizer.y_type_ == "multiclass":
            self.out_activation_ = "softmax"
        else:
            self.out_activation_ = "logistic"
        self._layout = Layout(layer_units)
        params = np.empty(self._layout.n_params, dtype=dtype)
        coefs, intercepts = self._layout.views(params)
        hidden = self._hidden_activations(self.n_layers_ - 2)
        for i in range(self.n_layers_ - 1):
            # a layer's scale follows the activation it feeds (the output layer: the
            # last hidden one's), which with one activation name is scikit-learn's rule
            activation = hidden[min(i, len(hidden) - 1)] if hidden else self.activation
            self._init_coef(layer_units[i], layer_units[i + 1], dtype, random_state,
                            activation, out=(coefs[i], intercepts[i]))
        self._set_params_buffer(params)
        self.__dict__.pop("_best_params", None)
        if self.solver in _STOCHASTIC_SOLVERS:
            self.loss_curve_ = []
            self._start_stopping_rule(params)

    def _start_stopping_rule(self, params):
        """The stopping rule's state from scratch: the training loss's (best_loss_) or,
        with early stopping, the validation score's, with a copy of the weights at the
        best score (as scikit-learn's _best_coefs; a copy of the parameters is not
        free, so only then)."""
        self._no_improvement_count = 0
        if self.early_stopping:
            self.validation_scores_ = []
            self.validation_loss_curve_ = []
            self.best_validation_score_ = -np.inf
            self.best_loss_ = None
            self._best_params = params.copy()
        else:
            self.best_loss_ = np.inf
            self.validation_scores_ = None
            self.best_validation_score_ = None
            self.__dict__.pop("validation_loss_curve_", None)
            self.__dict__.pop("_best_params", None)

    def _continue_stopping_rule(self, params):
        """A warm-started stochastic fit goes on with the stopping rule's state, unless
        the last fit kept another rule's (early_stopping switched, or an L-BFGS fit,
        which keeps none): then that rule starts from scratch, where scikit-learn
        fails on the missing state."""
        if not isinstance(getattr(self, "loss_curve_", None), list):
            self.loss_curve_ = []
        if self.early_stopping:
            kept = (isinstance(getattr(self, "validation_scores_", None), list)
                    and isinstance(getattr(self, "validation_loss_curve_", None), list)
                    and isinstance(getattr(self, "best_validation_score_", None), Real))
        else:
            kept = isinstance(getattr(self, "best_loss_", None), Real)
        if not kept or not hasattr(self, "_no_improvement_count"):
            self._start_stopping_rule(params)

    def _fit(self, X, y, sample_weight=None, incremental=False):
        # A failed fit leaves the estimator as it was: every array the fit writes is
        # new or copied, so restoring the attribute dict undoes it.
        saved = self.__dict__.copy()
        try:
            return self._fit_unguarded(X, y, sample_weight, incremental)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(saved)
            raise

    def _fit_unguarded(self, X, y, sample_weight, incremental):
        hidden_layer_sizes = self.hidden_layer_sizes
        if not hasattr(hidden_layer_sizes, "__iter__"):
            hidden_layer_sizes = [hidden_layer_sizes]
        hidden_layer_sizes = list(hidden_layer_sizes)
        if not all(isinstance(h, Integral) and not isinstance(h, bool) and h > 0
                   for h in hidden_layer_sizes):
            raise ValueError(
                "hidden_layer_sizes must be positive integers, got %s." % hidden_layer_sizes
            )
        hidden_layer_sizes = [int(h) for h in hidden_layer_sizes]
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        self._hidden_activations(len(hidden_layer_sizes))
        callbacks = self.callbacks
        if callbacks is not None and not callable(callbacks) and not all(
            callable(c) for c in callbacks
        ):
            raise ValueError(f"callbacks must be callables; got {callbacks!r}.")
        if self._dropout_rates(len(hidden_layer_sizes)).any() and self.solver == "lbfgs":
            raise ValueError("dropout needs a stochastic solver ('sgd' or 'adam'): it makes "
                             "the loss random, which L-BFGS cannot minimise.")

        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)
        may_defer = self._may_check_rows_in_kernel(X)
        X, y = self._validate_input(X, y, incremental, reset=first_pass,
                                    ensure_all_finite=not may_defer)
        # the kernel reads X's own values only when it keeps its dtype
        check_rows = may_defer and X.dtype == (X.dtype if first_pass
                                               else self._flat_params.dtype)
        if may_defer and not check_rows:
            self._assert_X_finite(X)
        n_samples, n_features = X.shape
        sample_weight = _validated_sample_weight(sample_weight, X)
        if y.ndim == 1:
            y = y.reshape((-1, 1))
        sample_weight = self._with_class_weight(y, sample_weight, incremental)
        layer_units = [n_features] + hidden_layer_sizes + [y.shape[1]]
        random_state = check_random_state(self.random_state)

        kept = None
        if first_pass:
            self._initialize(y, layer_units, X.dtype, random_state)
        else:
            params = self._params()
            if list(self._layout.units) != layer_units:
                raise ValueError(
                    "The network's layer sizes %s do not match the fitted model's %s: "
                    "hidden_layer_sizes, n_features and n_outputs must stay the same "
                    "with warm_start=True or partial_fit."
                    % ([int(u) for u in layer_units], [int(u) for u in self._layout.units])
                )
            # work on a copy, so that an error midway leaves the fitted weights intact;
            # a fit that succeeds writes its result back into the buffer and the views
            # it replaces (coefs_ and intercepts_ stay the same objects, as
            # scikit-learn's do; arrays the caller assigned were repacked by _params)
            kept = (params, self.coefs_, self.intercepts_, self._views)
            self._set_params_buffer(params.copy())
            if hasattr(self, "_optimizer"):
                # partial_fit steps on with this state; a warm-started fit makes a new one
                self._optimizer = (self._optimizer.copy_for(params) if incremental
                                   else self._optimizer.copy())
            best = self.__dict__.get("_best_params")
            if best is not None and best.shape != params.shape:
                # weights replaced by a network of another shape: no earlier best
                self._best_params = params.copy()
            elif best is not None and self.early_stopping:
                # early stopping updates the best weights in place
                self._best_params = best.copy()
            for name in ("loss_curve_", "validation_scores_", "validation_loss_curve_"):
                if isinstance(getattr(self, name, None), list):
                    setattr(self, name, list(getattr(self, name)))
            if self.solver in _STOCHASTIC_SOLVERS:
                self._continue_stopping_rule(params)
        dtype = self._flat_params.dtype
        if X.dtype != dtype:
            X = X.astype(dtype)
        self.n_outputs_ = y.shape[1]

        if self.solver in _STOCHASTIC_SOLVERS:
            self._fit_stochastic(X, y, sample_weight, random_state, incremental,
                                 check_rows)
        else:
            self._fit_lbfgs(X, y, sample_weight)

        if not np.isfinite(self._flat_params).all():
            raise ValueError(
                "Solver produced non-finite parameter weights. The input data may"
                " contain large values and need to be preprocessed."
            )
        if not np.isfinite(getattr(self, "loss_", 0.0)):
            # finite weights whose loss overflowed predict NaN: refuse them the same way
            raise ValueError(
                f"Solver produced non-finite parameter weights or loss (loss_={self.loss_})."
                " The input data may contain large values and need to be preprocessed."
            )
        if kept is not None and kept[0].flags.writeable:
            # (a model loaded memory-mapped read-only keeps the new arrays)
            params, self.coefs_, self.intercepts_, self._views = kept
            params[:] = self._flat_params
            self._flat_params = params
        return self

    def _with_class_weight(self, y, sample_weight, incremental):
        return sample_weight

    # dense X of at least this many bytes, in a fit whose first epoch gathers every
    # row, is checked for NaN and infinity by that epoch's gathers, in the pass that
    # copies each row anyway, rather than by a scan of its own before the fit (a 188 MB
    # X: 7.7 ms, 1 % of a 2-epoch fit's time, README); None: never
    CHECK_ROWS_IN_KERNEL_BYTES = 4 * 2**20

    def _may_check_rows_in_kernel(self, X):
        """Whether X, as given, may be checked for NaN and infinity by the kernel: a
        float32 or float64 ndarray of at least CHECK_ROWS_IN_KERNEL_BYTES (validation
        makes no copy of another type), in a fit whose first epoch gathers every row: a
        stochastic solver, shuffled rows, no validation split, the compiled kernels.
        Any other X is checked where scikit-learn checks it."""
        return (self.CHECK_ROWS_IN_KERNEL_BYTES is not None
                and type(X) is np.ndarray and X.dtype in (np.float32, np.float64)
                and X.nbytes >= self.CHECK_ROWS_IN_KERNEL_BYTES
                and self.solver in _STOCHASTIC_SOLVERS and bool(self.shuffle)
                and not self.early_stopping and self.backend == "cython")

    def _assert_X_finite(self, X):
        """scikit-learn's error for dense X holding NaN or infinity (check_array's)."""
        assert_all_finite(X, input_name="X", estimator_name=type(self).__name__)

    def _make_data(self, X, y, sample_weight):
        multiclass = self.out_activation_ == "softmax"
        return Data(X, y, sample_weight, multiclass, self._flat_params.dtype)

    def _fit_lbfgs(self, X, y, sample_weight):
        net = self._net()
        data = self._make_data(X, y, sample_weight)
        backend = BACKENDS[self.backend](net, data, net.chunk_rows(X.shape[0]))
        params = self._flat_params
        grads = np.empty_like(params)
        best = {"loss": np.inf, "x": params.copy(), "iterations": 0, "stopped": False}

        def loss_and_grad(x):
            params[:] = x
            loss = backend.loss_grad(params, grads)
            if loss < best["loss"]:
                best["loss"] = loss
                best["x"][:] = params
            return loss, grads.astype(np.float64)

        def count_iteration(intermediate_result):
            best["iterations"] += 1
            if self.callbacks is None:
                return
            self.n_iter_ = best["iterations"]
            self.loss_ = np.float64(intermediate_result.fun)
            info = {"epoch": self.n_iter_, "loss": self.loss_, "validation_score": None,
                    "validation_loss": None, "learning_rate": None}
            params[:] = intermediate_result.x
            readonly = params.view()
            readonly.flags.writeable = False
            info["coefs"], info["intercepts"] = self._layout.views(readonly)
            if _call_callbacks(self.callbacks, self, info):
                best["stopped"] = True
                raise StopIteration

        options = {"maxfun": self.max_fun, "maxiter": self.max_iter, "gtol": self.tol}
        if _SCIPY_LBFGS_IPRINT:
            options["iprint"] = 1 if (self.verbose is True or self.verbose >= 1) else -1
        try:
            result = scipy.optimize.minimize(
                loss_and_grad, params.astype(np.float64), method="L-BFGS-B", jac=True,
                options=options, callback=count_iteration,
            )
        except KeyboardInterrupt:
            # keep the best point evaluated so far, as a finished run would
            warnings.warn("Training interrupted by user.")
            params[:] = best["x"]
            self.n_iter_ = best["iterations"]
            self.loss_ = np.float64(best["loss"])
            return
        if best["stopped"]:
            self.n_iter_ = best["iterations"]
        else:
            self.n_iter_ = _lbfgs_n_iter(result, self.max_iter)
        self.loss_ = np.float64(result.fun)
        params[:] = result.x

    def _fit_stochastic(self, X, y, sample_weight, random_state, incremental,
                        check_rows=False):
        params = self._flat_params
        if not incremental or not hasattr(self, "_optimizer"):
            if self.solver == "sgd":
                self._optimizer = SGDState(
                    params.size, params.dtype, self.learning_rate_init, self.learning_rate,
                    self.momentum, self.nesterovs_momentum, self.power_t,
                )
            else:
                self._optimizer = AdamState(
                    params.size, params.dtype, self.learning_rate_init, self.beta_1,
                    self.beta_2, self.epsilon,
                )
        optimizer = self._optimizer

        early_stopping = self.early_stopping
        train_idx = None
        X_val = y_val = Y_val = sw_val = None
        if early_stopping:
            # the same draws as splitting X itself: they depend only on n and stratify
            stratify = y if (is_classifier(self) and self.n_outputs_ == 1) else None
            train_idx, val_idx = train_test_split(
                np.arange(X.shape[0]), random_state=random_state,
                test_size=self.validation_fraction, stratify=stratify,
            )
            if val_idx.shape[0] < 2:
                raise ValueError(
                    "The validation set is too small. Increase 'validation_fraction' "
                    "or the size of your dataset."
                )
            X_val = X[val_idx]
            y_val = y[val_idx]
            Y_val = y_val
            if is_classifier(self):
                y_val = self._label_binarizer.inverse_transform(y_val)
            elif y_val.shape[1] == 1:
                y_val = y_val.ravel()
            sw_val = None if sample_weight is None else sample_weight[val_idx]

        n_train = X.shape[0] if train_idx is None else train_idx.shape[0]
        if self.batch_size == "auto":
            batch_size = min(200, n_train)
        else:
            if self.batch_size > n_train:
                warnings.warn(
                    "Got `batch_size` less than 1 or larger than "
                    "sample size. It is going to be clipped"
                )
            batch_size = int(np.clip(self.batch_size, 1, n_train))

        net = self._net(training=True)
        data = self._make_data(X, y, sample_weight)
        dropout = bool(net.dropout.any())
        n_blocks, n_threads = fit_split(batch_size, dropout)
        by_units = cut_by_units(self._layout.units, batch_size, n_blocks, sp.issparse(X),
                                dropout)
        block_grads = not by_units and block_gradients(self._layout.units, batch_size,
                                                       sp.issparse(X))
        if block_grads:
            n_blocks, n_threads = cap_row_blocks(n_blocks, n_threads, params.size,
                                                 params.itemsize)
        backend = BACKENDS[self.backend](net, data, batch_size, n_blocks, n_threads,
                                         by_units, block_grads)
        # X not yet checked for NaN and infinity: the first epoch's gathers do it
        backend.rows_unchecked = check_rows
        sample_idx = np.arange(n_train, dtype=np.intp)
        try:
            with blas_threads_for(self._layout.units, batch_size, n_threads):
                self._epochs(backend, optimizer, params, random_state, dropout,
                             sample_idx, train_idx, n_train, batch_size, early_stopping,
                             X_val, y_val, Y_val, sw_val, incremental)
        except _backend.NonFiniteInput:
            # scikit-learn's message, which says NaN or infinity (the fit is undone)
            self._assert_X_finite(X)
            raise
        if early_stopping:
            params[:] = self._best_params

    def _epochs(self, backend, optimizer, params, random_state, dropout, sample_idx,
                train_idx, n_train, batch_size, early_stopping, X_val, y_val, Y_val,
                sw_val, incremental):
        """The epoch loop: shuffle, one kernel call per epoch, then the stopping rules.

        Where nothing in Python has to run between epochs, the kernel runs them, up to
        _EPOCHS_PER_CALL per call (_run_epochs), and the loop replays the losses it
        recorded: the same bookkeeping, and the same stopping rule, which the kernel
        applied in the same arithmetic."""
        try:
            self.n_iter_ = 0
            one_call = self._epochs_in_one_call(backend, optimizer, random_state, dropout,
                                                n_train, early_stopping, incremental)
            run = interrupted = None
            replayed = 0
            for _ in range(self.max_iter):
                if one_call:
                    if run is not None and replayed == run.done:
                        # the call's epochs are replayed, and the stopping rule did not
                        # end the fit: Ctrl-C, or the next call
                        self._raise_if_cut(run, interrupted)
                        run = None
                    if run is None:
                        run, interrupted = self._run_epochs(
                            backend, optimizer, params, random_state, sample_idx, n_train,
                            batch_size, min(self._EPOCHS_PER_CALL,
                                            self.max_iter - self.n_iter_))
                        replayed = 0
                        if run.done == 0:
                            self._raise_if_cut(run, interrupted)
                    total = float(run.totals[replayed])
                    replayed += 1
                else:
                    if self.shuffle:
                        # the draws and the order of sklearn.utils.shuffle(sample_idx,
                        # random_state=...), which shuffles an arange and indexes with
                        # it: the same swaps made on sample_idx itself, in place
                        random_state.shuffle(sample_idx)
                        rows = sample_idx if train_idx is None else train_idx[sample_idx]
                    else:
                        rows = train_idx
                    # dropout's stream is seeded from random_state each epoch; without
                    # dropout no draw is taken, so the stream stays scikit-learn's
                    seed = (int(random_state.randint(np.iinfo(np.int64).max)) if dropout
                            else 0)
                    total = backend.run_epoch(params, rows, n_train, batch_size, optimizer,
                                              seed)
                self.n_iter_ += 1
                # np.float64, as scikit-learn's (a NumPy sum)
                self.loss_ = np.float64(total / n_train)
                self.t_ += n_train
                self.loss_curve_.append(self.loss_)
                if self.verbose:
                    print("Iteration %d, loss = %.8f" % (self.n_iter_, self.loss_))

                p_val = None
                if early_stopping:
                    # one forward pass over the held-out rows for the loss and the score
                    p_val = self._forward_pass_fast(X_val, check_input=False)
                    self.validation_loss_curve_.append(self._validation_loss(p_val, Y_val, sw_val))
                self._update_no_improvement_count(early_stopping, X_val, y_val, sw_val, p_val)
                optimizer.iteration_ends(self.t_)
                if (self.callbacks is not None
                        and _call_callbacks(self.callbacks, self, self._epoch_info())):
                    break
                if self._no_improvement_count > self.n_iter_no_change:
                    if early_stopping:
                        msg = ("Validation score did not improve more than tol=%f for %d "
                               "consecutive epochs." % (self.tol, self.n_iter_no_change))
                    else:
                        msg = ("Training loss did not improve more than tol=%f for %d "
                               "consecutive epochs." % (self.tol, self.n_iter_no_change))
                    if optimizer.trigger_stopping(msg, self.verbose):
                        break
                    self._no_improvement_count = 0
                if incremental:
                    break
                if self.n_iter_ == self.max_iter:
                    warnings.warn(
                        "Stochastic Optimizer: Maximum iterations (%d) reached and the "
                        "optimization hasn't converged yet." % self.max_iter,
                        ConvergenceWarning,
                    )
            if interrupted is not None:
                # Ctrl-C as the last epoch ended
                raise interrupted
        except KeyboardInterrupt:
            if getattr(backend, "rows_unchecked", False):
                # stopped before the first epoch had checked every row of X
                self._assert_X_finite(backend.data.X)
            warnings.warn("Training interrupted by user.")

    # epochs per kernel call where the kernel runs them: an EpochRun stays small
    # whatever max_iter is
    _EPOCHS_PER_CALL = 256

    def _epochs_in_one_call(self, backend, optimizer, random_state, dropout, n_train,
                            early_stopping, incremental):
        """Whether the kernel can run the epochs, many per call: where nothing in
        Python needs to run between them (no callbacks, printing, validation, dropout
        seeds, or partial_fit; SGD's invscaling and adaptive schedules run in the
        kernel) and the shuffle draws from MT19937, which the kernel runs on a
        copy of random_state's state."""
        if (not getattr(backend, "runs_epochs", False) or dropout or early_stopping
                or incremental or self.verbose or self.callbacks is not None
                or not isinstance(self.best_loss_, Real)):
            return False
        if getattr(optimizer, "lr_schedule", None) == "invscaling":
            try:
                rate = optimizer.invscaling_rate(self.t_)
            except OverflowError:
                return False
            if not isinstance(rate, float):
                # a power_t that makes iteration_ends' rate a float32 (or a
                # longdouble): the kernel's rate, in double, would not be the estimator's
                return False
        return not self.shuffle or (
            random_state.get_state(legacy=False).get("bit_generator") == "MT19937"
            and n_train < 2**32)

    @staticmethod
    def _raise_if_cut(run, interrupted):
        """After the epochs of ``run`` were replayed without the stopping rule ending
        the fit: raise the KeyboardInterrupt that ended the call; a call that stopped
        short without one means the kernel's rule and the replay disagree."""
        if interrupted is not None:
            raise interrupted
        if run.done < len(run.totals):
            raise RuntimeError("the epochs run and the stopping rule disagree")

    def _run_epochs(self, backend, optimizer, params, random_state, sample_idx, n_train,
                    batch_size, n_epochs):
        """Up to n_epochs epochs in one kernel call, which shuffles with a copy of
        random_state's MT19937 state, drawing as ``random_state.shuffle`` draws, and
        stops by the training-loss rule from the current best loss and count; the
        advanced state is put back. Returns the EpochRun and the KeyboardInterrupt
        that cut it short, if any."""
        mt_state = random_state.get_state(legacy=False) if self.shuffle else None
        run = _backend.EpochRun(n_epochs, None if mt_state is None else mt_state["state"],
                                self.tol, self.n_iter_no_change, self.best_loss_,
                                self._no_improvement_count, optimizer, self.t_)
        rows = sample_idx if self.shuffle else None
        try:
            backend.run_epoch(params, rows, n_train, batch_size, optimizer, epochs=run)
        except KeyboardInterrupt as exc:
            return run, exc
        finally:
            if mt_state is not None:
                mt_state["state"] = {"key": run.key, "pos": int(run.pos[0])}
                random_state.set_state(mt_state)
        return run, None

    def _epoch_info(self):
        """What a callback sees after each epoch; the weights are read-only views."""
        params = self._flat_params.view()
        params.flags.writeable = False
        coefs, intercepts = self._layout.views(params)
        early = self.early_stopping
        return {
            "epoch": self.n_iter_,
            "loss": self.loss_,
            "validation_score": self.validation_scores_[-1] if early else None,
            "validation_loss": self.validation_loss_curve_[-1] if early else None,
            "learning_rate": self._optimizer.learning_rate,
            "coefs": coefs,
            "intercepts": intercepts,
        }

    def _validation_loss(self, p, Y_val, sw_val):
        """Weighted mean loss of the held-out rows (no L2 term), from the network's
        outputs p for them."""
        losses = _reference.sample_losses(p, Y_val.astype(p.dtype), self._net().loss)
        return float(np.average(losses, weights=sw_val))

    def _validation_score(self, X_val, y_val, sw_val, p_val=None):
        if self.scoring is None:
            if p_val is not None:
                return self._score_outputs(p_val, y_val, sw_val)
            return self._score(X_val, y_val, sample_weight=sw_val)
        scorer = check_scoring(self, scoring=self.scoring)
        with warnings.catch_warnings():
            # the held-out rows are an array even when fit saw a DataFrame
            warnings.filterwarnings("ignore", message="X does not have valid feature names")
            if sw_val is None:
                return scorer(self, X_val, y_val)
            return scorer(self, X_val, y_val, sample_weight=sw_val)

    def _update_no_improvement_count(self, early_stopping, X_val, y_val, sw_val,
                                     p_val=None):
        if early_stopping:
            score = self._validation_score(X_val, y_val, sw_val, p_val)
            self.validation_scores_.append(score)
            if self.verbose:
                print("Validation score: %f" % self.validation_scores_[-1])
            if score < self.best_validation_score_ + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                best = self.__dict__.get("_best_params")
                if (best is not None and best.shape == self._flat_params.shape
                        and best.dtype == self._flat_params.dtype):
                    best[...] = self._flat_params   # in place: no second copy at once
                else:
                    self._best_params = self._flat_params.copy()
        else:
            # in double arithmetic, whatever the types of tol and best_loss_ (a
            # float32 would round the comparison; the kernels' rule runs in double)
            if self.loss_curve_[-1] > float(self.best_loss_) - float(self.tol):
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if self.loss_curve_[-1] < float(self.best_loss_):
                self.best_loss_ = self.loss_curve_[-1]

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fit the model to data matrix X and target(s) y.

        Parameters
        ----------
        X : {ndarray, sparse matrix} of shape (n_samples, n_features)
            The input data.
        y : ndarray of shape (n_samples,) or (n_samples, n_outputs)
            Class labels (classification) or real numbers (regression).
        sample_weight : array-like of shape (n_samples,), default=None
            Sample weights.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=False)

    def _check_solver(self):
        if self.solver not in _STOCHASTIC_SOLVERS:
            raise AttributeError(
                "partial_fit is only available for stochastic optimizers. "
                "%s is not stochastic." % self.solver
            )
        return True

    # ---- prediction --------------------------------------------------------------

    def _is_plain_input(self, X):
        """True for the common case that needs no conversion: a non-empty 2-D float
        ndarray of the fitted width, from a model fitted without feature names. It skips
        ``validate_data``, whose overhead dominates a one-row predict, and the kernel
        checks it for NaN / infinity; anything else takes the full validation (and its
        error messages)."""
        if (
            type(X) is not np.ndarray
            or X.ndim != 2
            or X.dtype not in (np.float64, np.float32)
            or X.shape[0] == 0
            or hasattr(self, "feature_names_in_")
        ):
            return False
        if X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, but {self.__class__.__name__} is "
                f"expecting {self.n_features_in_} features as input."
            )
        # finiteness is checked by the kernel, chunk by chunk (see _forward_pass_fast)
        return True

    def _forward_pass_fast(self, X, check_input=True):
        """Output-layer activations for the rows of X, in float64 unless both X and
        the weights are float32 (NumPy's promotion, as scikit-learn's products give)."""
        plain = check_input and self._is_plain_input(X)
        if check_input and not plain:
            # as scikit-learn's predict validates: any numeric dtype (strings refused)
            X = validate_data(self, X, accept_sparse=["csr", "csc"], reset=False)
            if X.dtype not in (np.float64, np.float32):
                X = X.astype(np.float64)
        params = self._params()
        if params.dtype != X.dtype:
            # float32 weights on float64 X run in float64, as do float64 weights on
            # float32 X: both casts are exact
            if params.dtype == np.float32:
                params = params.astype(np.float64)
            else:
                X = X.astype(np.float64)
        out = _backend.predict(self._net(), X, params, self.backend, check_finite=plain)
        if out is None and get_config()["assume_finite"]:
            # the caller vouched for X (sklearn.set_config): predict without the scan
            out = _backend.predict(self._net(), X, params, self.backend)
        if out is None:
            # NaN or infinity in a plain array: the full validation names the problem
            validate_data(self, X, reset=False)
            raise ValueError("Input X contains NaN or infinity.")
        if np.isnan(np.add.reduce(out, axis=None)):
            warnings.warn(
                "The network's output contains NaN: the input or the weights are too large "
                f"for {out.dtype} (products overflow to ±inf). Scale the input, or refit "
                "with a smaller learning rate.",
                UserWarning,
                stacklevel=3,
            )
        return out

    # ---- backpropagation made visible ---------------------------------------------

    def _trace_inputs(self, X, y, sample_weight):
        """X, the target matrix and sample weights, validated as fit validates them."""
        check_is_fitted(self)
        X = validate_data(self, X, accept_sparse=["csr", "csc"], reset=False,
                          dtype=(np.float64, np.float32))
        X = X.astype(self._params().dtype, copy=False)
        Y = self._target_matrix(y, X.shape[0])
        sample_weight = _validated_sample_weight(sample_weight, X)
        # the weights the solver uses: class weights multiplied in
        sample_weight = self._with_class_weight(Y, sample_weight, incremental=False)
        return X, Y, sample_weight

    def backprop_trace(self, X, y, sample_weight=None):
        """Every step of backpropagation for the rows of (X, y), with the current
        weights, as the solver computes it; the model is not changed.

        Returns a :class:`~pybackprop.BackpropTrace`: one record per layer (hidden
        layers, then output) with ``z, h, dz, dW, db, dh``, plus ``p`` and ``loss``.
        The rows form one batch: ``loss`` is their weighted mean loss plus
        ``½ alpha ‖W‖² / S`` and every derivative is of that loss.

        Shapes are row-major (one row per sample): ``W`` is ``(fan_in, fan_out)``,
        ``z = h_prev @ W + b`` and ``dW = h_prevᵀ @ dz``. In the column-vector notation
        of the course notes (``z = W h_prev + b``, one sample) the same step reads
        ``dW = dz · h_prevᵀ`` and ``dh_prev = Wᵀ · dz``.
        """
        from ._trace import trace

        X, Y, sample_weight = self._trace_inputs(X, y, sample_weight)
        return trace(self, X, Y, sample_weight, self.backend)

    # ---- scikit-learn interop ------------------------------------------------------

    def to_sklearn(self):
        """The equivalent fitted ``sklearn.neural_network`` estimator (same weights,
        same predictions, optimizer state included); see ``pybackprop._interop``."""
        from ._interop import to_sklearn

        return to_sklearn(self)

    @classmethod
    def from_sklearn(cls, sk_est):
        """The equivalent pybackprop estimator of a fitted scikit-learn one."""
        from ._interop import from_sklearn

        return from_sklearn(cls, sk_est)

    def _score(self, X, y, sample_weight=None):
        """The default score (accuracy, R²) of the rows of X, validated already."""
        return self._score_outputs(self._forward_pass_fast(X, check_input=False), y,
                                   sample_weight)

    def _score_outputs(self, p, y, sample_weight):
        """``_score(X, y, sample_weight)`` from the network's outputs p for the rows of
        X (early stopping's held-out rows, whose outputs the validation loss needs
        too): NaN where a prediction is not finite."""
        y_pred = self._predictions(p)
        if np.issubdtype(y_pred.dtype, np.floating) and not np.isfinite(y_pred).all():
            return np.nan
        return self._score_predictions(y, y_pred, sample_weight)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


_COMMON_PARAMS_DOC = """
    hidden_layer_sizes : array-like of shape (n_layers - 2,), default=(100,)
        The ith element is the number of neurons in the ith hidden layer.
    activation : str or sequence of str, default='relu'
        Activation of the hidden layers: 'identity', 'logistic', 'tanh', 'relu' (as
        scikit-learn), or 'leaky_relu' (slope 0.01), 'elu', 'gelu' (exact, with erf),
        'softplus', 'silu'; or one name per hidden layer.
    solver : {'lbfgs', 'sgd', 'adam'}, default='adam'
        The weight optimizer.
    alpha : float, default=0.0001
        Strength of the L2 penalty, divided by the sample size when added to the loss.
    batch_size : int or 'auto', default='auto'
        Minibatch size of the stochastic solvers; 'auto' is ``min(200, n_samples)``.
    learning_rate : {'constant', 'invscaling', 'adaptive'}, default='constant'
        Learning-rate schedule of ``solver='sgd'``.
    learning_rate_init : float, default=0.001
        Initial learning rate (sgd, adam).
    power_t : float, default=0.5
        Exponent of the 'invscaling' schedule.
    max_iter : int, default=200
        Maximum number of epochs (sgd, adam) or iterations (lbfgs).
    shuffle : bool, default=True
        Whether to shuffle the samples each epoch (sgd, adam).
    random_state : int, RandomState instance or None, default=None
        Seeds the initial weights, the early-stopping split and the shuffles.
    tol : float, default=1e-4
        Tolerance of the stopping rules.
    verbose : bool, default=False
        Print progress messages to stdout.
    warm_start : bool, default=False
        Reuse the previous solution as the starting point of ``fit``.
    momentum : float, default=0.9
        Momentum of sgd, in [0, 1].
    nesterovs_momentum : bool, default=True
        Use Nesterov's momentum (sgd with momentum > 0).
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the data and stop when its score stalls;
        the best weights seen are restored.
    validation_fraction : float, default=0.1
        Share of the data held out for early stopping.
    beta_1, beta_2 : float, default=0.9, 0.999
        Adam's decay rates of the first and second moment estimates.
    epsilon : float, default=1e-8
        Adam's numerical-stability constant.
    n_iter_no_change : int, default=10
        Epochs without ``tol`` improvement before stopping (sgd, adam).
    max_fun : int, default=15000
        Maximum number of loss evaluations (lbfgs).
    backend : {'cython', 'numpy'}, default='cython'
        Where the arithmetic runs: the compiled kernels, or the readable NumPy
        reference (same algorithm, same results to rounding).
    scoring : str, callable or None, default=None
        What early stopping watches on the held-out rows: None for the estimator's
        ``score`` (accuracy, R²), or any scikit-learn scorer name or callable.
    callbacks : callable, list of callables or None, default=None
        Called as ``callback(estimator, info)`` after each epoch (each L-BFGS
        iteration) with ``info`` holding ``epoch, loss, validation_score,
        validation_loss, learning_rate`` and read-only views ``coefs, intercepts``.
        A callback returning True stops training.
    dropout : float or sequence of float, default=0.0
        Share of each hidden layer's units dropped at random in every training batch
        (one rate, or one per hidden layer), with inverted scaling so that prediction
        needs no change. Drawn from ``random_state``. Stochastic solvers only.
"""

_COMMON_ATTRS_DOC = """
    loss_ : float
        The loss at the end of training.
    best_loss_ : float or None
        Lowest training loss reached (stochastic solvers without early stopping).
    loss_curve_ : list of float
        Training loss after each epoch (stochastic solvers).
    validation_scores_ : list of float or None
        Held-out score after each epoch (with ``early_stopping=True``).
    validation_loss_curve_ : list of float
        Held-out loss (weighted mean, no L2 term) after each epoch (with
        ``early_stopping=True``).
    best_validation_score_ : float or None
        Best held-out score (with ``early_stopping=True``).
    t_ : int
        Number of training samples seen by the solver.
    coefs_ : list of ndarray of shape (fan_in, fan_out)
        Weight matrices, views into one flat parameter buffer.
    intercepts_ : list of ndarray of shape (fan_out,)
        Bias vectors, views into the same buffer.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Feature names, when X had string column names.
    n_iter_ : int
        Number of epochs (stochastic) or iterations (lbfgs) run.
    n_layers_ : int
        Number of layers, input and output included.
    n_outputs_ : int
        Number of outputs.
    out_activation_ : str
        Activation of the output layer.
"""


class MLPClassifier(ClassifierMixin, BaseMultilayerPerceptron):
    __doc__ = (
        """Multilayer perceptron classifier trained by backpropagation.

    Minimises the cross-entropy (softmax output for multiclass, logistic for binary
    and multilabel targets) plus ``alpha / 2 · ||W||² / n`` with L-BFGS, SGD or Adam.
    A drop-in replacement of :class:`sklearn.neural_network.MLPClassifier`: the same
    parameters give the same model for the same ``random_state``.

    Parameters
    ----------"""
        + _COMMON_PARAMS_DOC
        + """
    class_weight : dict, list of dict, 'balanced' or None, default=None
        Weights of the classes, multiplied into ``sample_weight`` as in scikit-learn's
        other classifiers; 'balanced' uses ``n_samples / (n_classes * bincount(y))``
        (with ``partial_fit``, counted over each batch).

    Attributes
    ----------
    classes_ : ndarray or list of ndarray
        Class labels for each output."""
        + _COMMON_ATTRS_DOC
        + """
    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from pybackprop import MLPClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = MLPClassifier(random_state=0, max_iter=30).fit(X / 16, y)
    >>> clf.score(X / 16, y) > 0.95
    True
    """
    )

    def __init__(
        self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam", alpha=0.0001,
        batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5,
        max_iter=200, shuffle=True, random_state=None, tol=1e-4, verbose=False,
        warm_start=False, momentum=0.9, nesterovs_momentum=True, early_stopping=False,
        validation_fraction=0.1, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
        n_iter_no_change=10, max_fun=15000, backend="cython", class_weight=None,
        scoring=None, callbacks=None, dropout=0.0,
    ):
        self.class_weight = class_weight
        self.dropout = dropout
        self.scoring = scoring
        self.callbacks = callbacks
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.backend = backend

    _parameter_constraints: dict = {
        **BaseMultilayerPerceptron._parameter_constraints,
        "class_weight": [dict, list, StrOptions({"balanced"}), None],
    }

    loss = "log_loss"

    def _validate_input(self, X, y, incremental, reset, ensure_all_finite=True):
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                             dtype=(np.float64, np.float32), reset=reset,
                             ensure_all_finite=ensure_all_finite)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._label_binarizer = _fitted_label_binarizer(y)
            self.classes_ = self._label_binarizer.classes_
            _check_two_classes(self._label_binarizer)
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError(
                        "warm_start can only be used where `y` has the same classes as in "
                        f"the previous call to fit. Previously got {self.classes_}, "
                        f"`y` has {classes}"
                    )
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(
                    f"`y` has classes not in `self.classes_`. `self.classes_` has "
                    f"{self.classes_}. 'y' has {classes}."
                )
        y = _indicator(self._label_binarizer, y)
        return X, y

    def _with_class_weight(self, y, sample_weight, incremental):
        """sample_weight × class_weight[label] (per output, multiplied, for multilabel).

        'balanced' counts the classes of the data at hand (with partial_fit, the batch)
        weighted by sample_weight, as scikit-learn's linear classifiers do, so that a
        weight of 2 and a repeated row stay the same thing."""
        if self.class_weight is None:
            return sample_weight
        multilabel = self._label_binarizer.y_type_ == "multilabel-indicator"
        if multilabel:
            columns = [y[:, j].astype(int) for j in range(y.shape[1])]
            per_column = self.class_weight
            if not isinstance(per_column, list):
                per_column = [per_column] * len(columns)
            if len(per_column) != len(columns):
                raise ValueError(f"class_weight must hold one dict per output ({len(columns)}) "
                                 f"for multilabel targets, got {len(per_column)}.")
        else:
            codes = y.argmax(axis=1) if y.shape[1] > 1 else y[:, 0].astype(int)
            columns = [self.classes_[codes]]
            per_column = [self.class_weight]
        weights = np.ones(y.shape[0]) if sample_weight is None else sample_weight.copy()
        for labels, class_weight in zip(columns, per_column):
            present = np.unique(labels)
            if isinstance(class_weight, str):
                # classes whose rows all weigh 0 are absent; those rows keep weight 0
                counted = present if sample_weight is None else np.unique(labels[sample_weight > 0])
                balanced = compute_class_weight(
                    class_weight, classes=counted, y=labels[np.isin(labels, counted)],
                    sample_weight=None if sample_weight is None
                    else sample_weight[np.isin(labels, counted)])
                values = np.zeros(len(present))
                values[np.searchsorted(present, counted)] = balanced
            elif isinstance(class_weight, dict):
                # a key that is no class is a typo, as scikit-learn's
                # compute_class_weight says
                allowed = [0, 1] if multilabel else self.classes_.tolist()
                unknown = [c for c in class_weight if c not in allowed]
                if unknown:
                    raise ValueError(f"class_weight has keys that are not classes: {unknown}; "
                                     f"the classes are {allowed}.")
                values = np.array([class_weight.get(c, 1.0) for c in present], dtype=float)
            else:
                raise ValueError("class_weight must be 'balanced', a dict, or (multilabel) "
                                 f"a list of them; got {class_weight!r}.")
            if not (np.all(np.isfinite(values)) and np.all(values >= 0)):
                raise ValueError("class_weight values must be finite and non-negative; "
                                 f"got {class_weight!r}.")
            weights = weights * values[np.searchsorted(present, labels)]
        if not np.any(weights > 0):
            raise ValueError("class_weight and sample_weight leave no sample with a "
                             "positive weight.")
        return weights

    def _target_matrix(self, y, n_samples):
        if not sp.issparse(y):
            y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1 and not sp.issparse(y):
            y = y.ravel()
        unseen = np.setdiff1d(unique_labels(y), self.classes_)
        if len(unseen):
            raise ValueError(f"y has classes not in classes_: {unseen}")
        Y = _indicator(self._label_binarizer, y)
        if Y.shape[0] != n_samples:
            raise ValueError(f"X has {n_samples} rows but y has {Y.shape[0]}.")
        return Y

    def predict(self, X):
        """Predict with the multilayer perceptron classifier.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_classes)
            The predicted classes.
        """
        if "coefs_" not in self.__dict__:
            check_is_fitted(self)
        return self._predict(X)

    def _predict(self, X, check_input=True):
        return self._predictions(self._forward_pass_fast(X, check_input=check_input))

    def _predictions(self, p):
        """The labels of the network's outputs p."""
        return _labels(self._label_binarizer, p.ravel() if self.n_outputs_ == 1 else p)

    @staticmethod
    def _score_predictions(y, y_pred, sample_weight=None):
        """accuracy_score(y, y_pred, sample_weight=sample_weight). For 1-D labels (not
        multilabel) it is worked here, as accuracy_score works it (the weighted mean
        of y == y_pred): accuracy_score's checks of its arguments took about 0.4 ms of
        each epoch of early stopping on the digits data, half of the epoch."""
        if (isinstance(y, np.ndarray) and isinstance(y_pred, np.ndarray) and y.ndim == 1
                and y.shape == y_pred.shape and y.dtype == y_pred.dtype):
            return float(np.average(y == y_pred, weights=sample_weight))
        return accuracy_score(y, y_pred, sample_weight=sample_weight)

    @available_if(lambda est: est._check_solver())
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch of the stochastic solver over (X, y).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        sample_weight : array-like of shape (n_samples,), default=None
        classes : array of shape (n_classes,), default=None
            All classes; required on the first call, ignored afterwards.

        Returns
        -------
        self : object
        """
        if _check_partial_fit_first_call(self, classes):
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
            _check_two_classes(self._label_binarizer)
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def predict_log_proba(self, X):
        """Log of the class probabilities, ``log(predict_proba(X))``."""
        y_prob = self.predict_proba(X)
        return np.log(y_prob, out=y_prob)

    def predict_proba(self, X):
        """Class probabilities.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        y_prob : ndarray of shape (n_samples, n_classes)
        """
        if "coefs_" not in self.__dict__:
            check_is_fitted(self)
        y_pred = self._forward_pass_fast(X)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        if y_pred.ndim == 1:
            return np.vstack([1 - y_pred, y_pred]).T
        return y_pred

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, BaseMultilayerPerceptron):
    __doc__ = (
        """Multilayer perceptron regressor trained by backpropagation.

    Minimises half the squared error (identity output) or half the Poisson deviance
    (exp output) plus ``alpha / 2 · ||W||² / n`` with L-BFGS, SGD or Adam. A drop-in
    replacement of :class:`sklearn.neural_network.MLPRegressor`.

    With several outputs the squared-error loss is summed over the outputs (its
    gradient is the one every solver follows); scikit-learn reports it averaged over
    the outputs, which makes its L-BFGS loss disagree with its own gradient.

    Parameters
    ----------
    loss : {'squared_error', 'poisson'}, default='squared_error'
        The loss to minimise."""
        + _COMMON_PARAMS_DOC
        + """
    Attributes
    ----------"""
        + _COMMON_ATTRS_DOC
        + """
    Examples
    --------
    >>> import numpy as np
    >>> from pybackprop import MLPRegressor
    >>> X = np.linspace(-1, 1, 200).reshape(-1, 1)
    >>> reg = MLPRegressor(solver="lbfgs", random_state=0).fit(X, X.ravel() ** 2)
    >>> reg.score(X, X.ravel() ** 2) > 0.9
    True
    """
    )

    _parameter_constraints: dict = {
        **BaseMultilayerPerceptron._parameter_constraints,
        "loss": [StrOptions({"squared_error", "poisson"})],
    }

    def __init__(
        self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *,
        solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
        learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
        random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
        nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
        beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
        backend="cython", scoring=None, callbacks=None, dropout=0.0,
    ):
        self.dropout = dropout
        self.scoring = scoring
        self.callbacks = callbacks
        self.loss = loss
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.backend = backend

    def _target_matrix(self, y, n_samples):
        y = check_array(y, ensure_2d=False, dtype=np.float64)
        Y = y.reshape(-1, 1) if y.ndim == 1 else y
        if Y.shape != (n_samples, self.n_outputs_):
            raise ValueError(f"y must have shape ({n_samples}, {self.n_outputs_}) "
                             f"(or ({n_samples},) with one output), got {y.shape}.")
        return Y

    def predict(self, X):
        """Predict with the multilayer perceptron regressor.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_outputs)
        """
        if "coefs_" not in self.__dict__:
            check_is_fitted(self)
        return self._predict(X)

    def _predict(self, X, check_input=True):
        return self._predictions(self._forward_pass_fast(X, check_input=check_input))

    @staticmethod
    def _predictions(p):
        return p.ravel() if p.shape[1] == 1 else p

    @staticmethod
    def _score_predictions(y, y_pred, sample_weight=None):
        """r2_score(y, y_pred, sample_weight=sample_weight). For finite float32 /
        float64 arrays of one shape and two rows or more it is worked here with
        r2_score's own NumPy operations, in its order and dtype (the same value, bit
        for bit): its argument checks took about 0.24 ms a call, every epoch of early
        stopping."""
        floats = (np.float32, np.float64)
        if not (isinstance(y, np.ndarray) and isinstance(y_pred, np.ndarray)
                and y.shape == y_pred.shape and y.ndim in (1, 2) and len(y) >= 2
                and y.dtype in floats and y_pred.dtype in floats
                and (sample_weight is None
                     or (isinstance(sample_weight, np.ndarray)
                         and sample_weight.shape == (len(y),)
                         and sample_weight.dtype in floats))
                and np.isfinite(y).all() and np.isfinite(y_pred).all()):
            return r2_score(y, y_pred, sample_weight=sample_weight)
        extra = () if sample_weight is None else (sample_weight,)
        dtype = np.result_type(y, y_pred, *extra)
        y_true = y.astype(dtype, copy=False).reshape(len(y), -1)
        y_pred = y_pred.astype(dtype, copy=False).reshape(len(y), -1)
        weight = 1.0
        if sample_weight is not None:
            sample_weight = sample_weight.astype(dtype, copy=False)
            weight = sample_weight[:, None]
        numerator = np.sum(weight * (y_true - y_pred) ** 2, axis=0)
        denominator = np.sum(
            weight * (y_true - np.average(y_true, axis=0, weights=sample_weight)) ** 2,
            axis=0)
        # r2_score's force_finite: 1 for perfect predictions, 0 against a constant y
        nonzero_numerator, nonzero_denominator = numerator != 0, denominator != 0
        scores = np.ones(y_true.shape[1], dtype=numerator.dtype)
        valid = nonzero_denominator & nonzero_numerator
        scores[valid] = 1 - (numerator[valid] / denominator[valid])
        scores[nonzero_numerator & ~nonzero_denominator] = 0.0
        return float(np.average(scores))

    def _validate_input(self, X, y, incremental, reset, ensure_all_finite=True):
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                             y_numeric=True, dtype=(np.float64, np.float32), reset=reset,
                             ensure_all_finite=ensure_all_finite)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if self.loss == "poisson" and np.any(y < 0):
            raise ValueError("Some value(s) of y are negative which is not allowed for "
                             "Poisson regression (loss='poisson').")
        return X, y

    @available_if(lambda est: est._check_solver())
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch of the stochastic solver over (X, y).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : ndarray of shape (n_samples,) or (n_samples, n_outputs)
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self : object
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)
