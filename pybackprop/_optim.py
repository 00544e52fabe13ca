"""Optimizer state and schedules (the once-per-epoch part of SGD and Adam).

The per-batch update itself runs in the kernels (``sgd_step`` / ``adam_step`` in
csrc/_kernels.pyx); ``step`` here is its NumPy twin, used by the reference backend.
State vectors are flat, the same length as the parameter buffer.
"""

import numpy as np


class SGDState:
    """v := μ v - η g;  θ += v  (Nesterov: θ += μ v - η g)."""

    kind = 0

    def __init__(self, n_params, dtype, learning_rate_init, lr_schedule, momentum,
                 nesterov, power_t):
        self.learning_rate_init = learning_rate_init
        self.learning_rate = float(learning_rate_init)
        self.lr_schedule = lr_schedule
        self.momentum = momentum
        self.nesterov = nesterov
        self.power_t = power_t
        self.velocity = np.zeros(n_params, dtype=dtype)
        self.t = 0  # unused by SGD; kept so both states look alike to the kernels

    @property
    def buffers(self):
        return self.velocity, self.velocity[:0]

    def step(self, params, grads):
        update = self.momentum * self.velocity - self.learning_rate * grads
        self.velocity[:] = update
        if self.nesterov:
            update = self.momentum * self.velocity - self.learning_rate * grads
        params += update

    def steps_taken(self, t):
        """The kernels took steps up to step t (unused by SGD)."""
        self.t = t

    def invscaling_rate(self, time_step):
        """The invscaling schedule's rate after time_step samples (which the kernels
        compute in double: see BaseMultilayerPerceptron._epochs_in_one_call)."""
        return float(self.learning_rate_init) / (time_step + 1) ** self.power_t

    def iteration_ends(self, time_step):
        if self.lr_schedule == "invscaling":
            self.learning_rate = self.invscaling_rate(time_step)

    def trigger_stopping(self, msg, verbose):
        """True to stop; with the adaptive schedule, first divide the rate by 5."""
        if self.lr_schedule != "adaptive":
            if verbose:
                print(msg + " Stopping.")
            return True
        if self.learning_rate <= 1e-6:
            if verbose:
                print(msg + " Learning rate too small. Stopping.")
            return True
        self.learning_rate /= 5.0
        if verbose:
            print(msg + " Setting learning rate to %f" % self.learning_rate)
        return False

    def copy(self):
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.velocity = self.velocity.copy()
        return new

    def copy_for(self, params):
        """A copy whose state matches ``params`` (see _check_state_for)."""
        new = self.copy()
        new.velocity = _check_state_for(self.velocity, params)
        return new


class AdamState:
    """m := β1 m + (1-β1) g;  v := β2 v + (1-β2) g²;  θ -= η_t m / (√v + ε),
    η_t = η √(1-β2^t) / (1-β1^t)."""

    kind = 1

    def __init__(self, n_params, dtype, learning_rate_init, beta_1, beta_2, epsilon):
        self.learning_rate_init = learning_rate_init
        self.learning_rate = float(learning_rate_init)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.t = 0
        self.m = np.zeros(n_params, dtype=dtype)
        self.v = np.zeros(n_params, dtype=dtype)

    @property
    def buffers(self):
        return self.m, self.v

    def step(self, params, grads):
        t = self.t + 1
        m = self.beta_1 * self.m + (1 - self.beta_1) * grads
        v = self.beta_2 * self.v + (1 - self.beta_2) * grads**2
        lr_t = self.learning_rate_init * np.sqrt(1 - self.beta_2**t) / (1 - self.beta_1**t)
        update = -lr_t * m / (np.sqrt(v) + self.epsilon)
        # commit together, so that Ctrl-C leaves either the old state or the new one
        self.m[:], self.v[:], self.t, self.learning_rate = m, v, t, lr_t
        params += update

    def steps_taken(self, t):
        """The kernels took steps up to step t: learning_rate is the last step's size,
        η √(1-β2^t) / (1-β1^t), as scikit-learn's AdamOptimizer keeps it."""
        self.t = t
        if t > 0:
            self.learning_rate = (self.learning_rate_init * np.sqrt(1 - self.beta_2**t)
                                  / (1 - self.beta_1**t))

    def iteration_ends(self, time_step):
        pass

    def trigger_stopping(self, msg, verbose):
        if verbose:
            print(msg + " Stopping.")
        return True

    def copy(self):
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.m = self.m.copy()
        new.v = self.v.copy()
        return new

    def copy_for(self, params):
        """A copy whose state matches ``params`` (see _check_state_for)."""
        new = self.copy()
        new.m = _check_state_for(self.m, params)
        new.v = _check_state_for(self.v, params)
        return new


def _check_state_for(state, params):
    """An optimizer state vector for ``params``: a copy in its dtype (the weights may
    have been replaced by arrays of the other float type), or a ValueError when the
    weights were replaced by a network of another size."""
    if state.shape != params.shape:
        raise ValueError(
            f"The optimizer state of the previous fit holds {state.shape[0]} values, but "
            f"coefs_ and intercepts_ now hold {params.shape[0]} parameters: keep training "
            "a network of the same shape, or fit anew (warm_start=False).")
    return state.astype(params.dtype, copy=True)
