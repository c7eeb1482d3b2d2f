"""LARS (You et al. 2017) as a Keras 3 optimizer, with the update rule of SimCLR's TF2 code.

Per variable ``w`` with gradient ``g``::

    g = g + weight_decay * w                         (unless excluded from weight decay)
    trust = eta * ||w|| / ||g|| if both > 0 else 1   (unless excluded from adaptation: trust = 1)
    v = momentum * v + lr * trust * g
    w = w - v            (nesterov: w = w - (momentum * v + lr * trust * g))

Biases and normalisation parameters (the backbone's ``*_group_norm/gamma|beta``, the projection
head's ``batch_normalization_*``) are excluded from both by default, as in SimCLR and BiT.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import keras
from keras import ops

# Matched as substrings of each variable's path (e.g. "block1_unit01_a_group_norm/gamma",
# "projection_head/batch_normalization_0/beta", "dense/bias").
DEFAULT_EXCLUDE = ("bias", "group_norm", "batch_normalization", "batch_norm", "gamma", "beta")


def _variable_path(variable) -> str:
    """The path (or, failing that, the name) that exclusion patterns are matched against."""
    return str(getattr(variable, "path", None) or getattr(variable, "name", ""))


def _is_excluded(variable, patterns: Sequence[str]) -> bool:
    """True if any pattern is a substring of the variable's path."""
    path = _variable_path(variable)
    return any(pattern in path for pattern in patterns)


def _check_patterns(name: str, patterns) -> tuple[str, ...] | None:
    """Normalises an exclusion list to a tuple of strings, refusing anything else."""
    if patterns is None:
        return None
    if isinstance(patterns, str) or not all(isinstance(p, str) and p for p in patterns):
        raise ValueError(f"LARS: {name} must be a list of non-empty strings, got {patterns!r}")
    return tuple(patterns)


@keras.saving.register_keras_serializable(package="medfound")
class LARS(keras.optimizers.Optimizer):
    """Layer-wise adaptive rate scaling with momentum: the optimizer SimCLR/REMEDIS pretrain with.

    Weight decay is applied here, inside the trust-ratio computation (not by the Keras base class).
    ``exclude_from_weight_decay`` / ``exclude_from_adaptation`` are substrings of variable paths;
    ``None`` means ``DEFAULT_EXCLUDE`` for weight decay, and the weight-decay list for adaptation
    (SimCLR's convention); pass ``[]`` to exclude nothing.
    """

    def __init__(self, learning_rate=0.1, momentum: float = 0.9, weight_decay: float = 1e-6,
                 eta: float = 0.001, nesterov: bool = False,
                 exclude_from_adaptation: Sequence[str] | None = None,
                 exclude_from_weight_decay: Sequence[str] | None = None,
                 name: str = "lars", **kwargs):
        if isinstance(learning_rate, (int, float)) and not (
                math.isfinite(learning_rate) and learning_rate >= 0):
            raise ValueError(
                f"LARS: learning_rate must be a finite number >= 0, got {learning_rate!r}")
        if not (isinstance(momentum, (int, float)) and 0.0 <= momentum < 1.0):
            raise ValueError(f"LARS: momentum must be in [0, 1), got {momentum!r}")
        if weight_decay is None:
            weight_decay = 0.0
        if not (isinstance(weight_decay, (int, float)) and math.isfinite(weight_decay)
                and weight_decay >= 0):
            raise ValueError(
                f"LARS: weight_decay must be a finite number >= 0, got {weight_decay!r}")
        if not (isinstance(eta, (int, float)) and math.isfinite(eta) and eta > 0):
            raise ValueError(
                f"LARS: eta (trust coefficient) must be a finite number > 0, got {eta!r}")
        # The base class would apply its own (decoupled) decay: keep it off.
        kwargs.pop("weight_decay", None)
        super().__init__(learning_rate=learning_rate, name=name, weight_decay=None, **kwargs)
        self.momentum = float(momentum)
        self.lars_weight_decay = float(weight_decay)
        self.eta = float(eta)
        self.nesterov = bool(nesterov)
        wd_patterns = _check_patterns("exclude_from_weight_decay", exclude_from_weight_decay)
        adapt_patterns = _check_patterns("exclude_from_adaptation", exclude_from_adaptation)
        self.exclude_from_weight_decay = DEFAULT_EXCLUDE if wd_patterns is None else wd_patterns
        self.exclude_from_adaptation = (self.exclude_from_weight_decay if adapt_patterns is None
                                        else adapt_patterns)

    def build(self, var_list) -> None:
        """Creates one momentum slot per variable and decides, once, which rules apply to each."""
        if self.built:
            return
        super().build(var_list)
        self.momentums = self.add_optimizer_variables(var_list, "momentum")
        self._decay_flags = [not _is_excluded(v, self.exclude_from_weight_decay) for v in var_list]
        self._adapt_flags = [not _is_excluded(v, self.exclude_from_adaptation) for v in var_list]

    def uses_weight_decay(self, variable) -> bool:
        """Whether ``variable`` gets weight decay (after ``build``)."""
        return self._decay_flags[self._get_variable_index(variable)]

    def uses_adaptation(self, variable) -> bool:
        """Whether ``variable`` gets a layer-wise trust ratio (after ``build``)."""
        return self._adapt_flags[self._get_variable_index(variable)]

    def update_step(self, gradient, variable, learning_rate) -> None:
        index = self._get_variable_index(variable)
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        grad = ops.cast(gradient, dtype)
        if self._decay_flags[index] and self.lars_weight_decay > 0:
            grad = grad + ops.cast(self.lars_weight_decay, dtype) * variable
        scaled_lr = lr
        if self._adapt_flags[index]:
            w_norm = ops.sqrt(ops.sum(ops.square(variable)))
            g_norm = ops.sqrt(ops.sum(ops.square(grad)))
            positive = ops.logical_and(w_norm > 0, g_norm > 0)
            safe_g_norm = ops.where(g_norm > 0, g_norm, ops.ones_like(g_norm))
            trust = ops.where(positive, ops.cast(self.eta, dtype) * w_norm / safe_g_norm,
                              ops.ones_like(w_norm))
            scaled_lr = lr * trust
        velocity = self.momentums[index]
        momentum = ops.cast(self.momentum, dtype)
        next_velocity = momentum * velocity + scaled_lr * grad
        self.assign(velocity, next_velocity)
        if self.nesterov:
            self.assign_sub(variable, momentum * next_velocity + scaled_lr * grad)
        else:
            self.assign_sub(variable, next_velocity)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(momentum=self.momentum, weight_decay=self.lars_weight_decay, eta=self.eta,
                      nesterov=self.nesterov,
                      exclude_from_adaptation=list(self.exclude_from_adaptation),
                      exclude_from_weight_decay=list(self.exclude_from_weight_decay))
        return config
