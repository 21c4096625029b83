"""A point of a search space (``Hyperparameters``), the hard-wired tutorial space, and how a
point is written for people. Spaces as files: ``tuning.space.file``."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, NamedTuple

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution

from tuning.study.errors import UsageError

LR_LOW, LR_HIGH = 1e-5, 1e-1  # sampled log-uniformly
BATCH_SIZES = (16, 32, 64, 128, 256)
# The keys of model.loops.OPTIMIZERS, written out so that tools which only read a study
# (export, report, dashboard) need not import torch; a test keeps the two equal.
OPTIMIZER_NAMES = ("SGD", "Adam", "AdamW", "RMSprop")
TUTORIAL_OPTIMIZERS = ("SGD", "Adam", "RMSprop")  # the tutorial space's choices
CORE = ("lr", "batch_size", "optimizer")  # every point has these; the rest default


class _Knob(NamedTuple):
    """What a knob of the network or loops takes (``KNOBS``; space files are checked on it)."""

    kind: str  # "float", "int", "bool" or "str": the kind of value the network or loops take
    allowed: str  # the legal values, in words, for error messages
    legal: Callable[[Any], bool]  # called only on a value of the right kind


_FRACTION = _Knob("float", "a number in [0, 1)", lambda v: 0 <= v < 1)
_COUNT = _Knob("int", "an integer >= 1", lambda v: v >= 1)
_NON_NEGATIVE = _Knob("float", "a number >= 0", lambda v: v >= 0)
# The keys of model.schedule.SCHEDULES, written out for the same reason (a test keeps them).
SCHEDULE_NAMES = ("constant", "cosine", "onecycle")
KNOBS: dict[str, _Knob] = {  # what the network and training loops take, by parameter name
    "lr": _Knob("float", "a number > 0", lambda v: v > 0),
    "batch_size": _COUNT,
    "optimizer": _Knob("str", f"one of {', '.join(OPTIMIZER_NAMES)}",
                       lambda v: v in OPTIMIZER_NAMES),
    "momentum": _FRACTION,
    "nesterov": _Knob("bool", "true or false", lambda v: True),
    "weight_decay": _NON_NEGATIVE,
    "dropout": _FRACTION,
    "input_dropout": _FRACTION,
    "hidden_layers": _COUNT,
    "hidden_width": _COUNT,
    "schedule": _Knob("str", f"one of {', '.join(SCHEDULE_NAMES)}",
                      lambda v: v in SCHEDULE_NAMES),
    "warmup_epochs": _NON_NEGATIVE,
    "label_smoothing": _FRACTION,
    "hflip": _Knob("float", "a probability in [0, 1]", lambda v: 0 <= v <= 1),
    "ema_epochs": _NON_NEGATIVE,
    "batch_norm": _Knob("bool", "true or false", lambda v: True),
}


@dataclass(frozen=True)
class Hyperparameters:
    """One point of the search space; field names are the study's parameter names."""

    lr: float
    batch_size: int
    optimizer: str
    # The other knobs; the defaults are the tutorial's, so a point without them trains as the
    # tutorial does (``tuning.space.check.KNOBS`` names the same knobs; a test keeps them equal).
    momentum: float = 0.0  # SGD's
    nesterov: bool = False  # SGD's, with momentum
    weight_decay: float = 0.0  # decoupled for Adam and AdamW
    dropout: float = 0.0  # after each hidden layer
    input_dropout: float = 0.0  # on the pixels
    hidden_layers: int = 2
    hidden_width: int = 512
    schedule: str = "constant"  # per step: constant, cosine or onecycle
    warmup_epochs: float = 0.0  # linear warm-up (constant and cosine)
    label_smoothing: float = 0.0
    hflip: float = 0.0  # chance that a training image is mirrored left to right
    ema_epochs: float = 0.0  # span of the moving average of the weights that is scored
    batch_norm: bool = False  # in each hidden layer, before the ReLU

    def as_params(self) -> dict[str, Any]:
        """The point as parameters: the three core ones, and any other knob not at its default.

        The tutorial's configuration is therefore ``{"lr", "batch_size", "optimizer"}`` as it
        always was, e.g. for ``study.enqueue_trial``.
        """
        defaults = Hyperparameters(self.lr, self.batch_size, self.optimizer)
        return {key: value for key, value in asdict(self).items()
                if key in CORE or value != getattr(defaults, key)}

    def network(self) -> dict[str, Any]:
        """The network this point trains, as ``model.network.NetworkConfig.from_dict`` reads it
        (the rest of the config keeps its defaults: 784 inputs, 10 classes)."""
        return {"hidden": [self.hidden_width] * self.hidden_layers, "dropout": self.dropout,
                "input_dropout": self.input_dropout, "batch_norm": self.batch_norm}

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Hyperparameters:
        """Read a point back from stored or exported parameters, checking it can train.

        Raises:
            UsageError: a parameter is missing, garbled or cannot be trained with.
        """
        kinds = {f.name: type(getattr(TUTORIAL, f.name)) for f in fields(cls)}
        unknown = [key for key in params if key not in kinds]
        if unknown:
            raise UsageError(f"the configuration's params {dict(params)} hold "
                             f"{', '.join(unknown)}, which the network and loops do not have.")
        try:
            point = cls(lr=float(params["lr"]), batch_size=int(params["batch_size"]),
                        optimizer=str(params["optimizer"]),
                        **{key: kinds[key](value) for key, value in params.items()
                           if key not in CORE})
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"the configuration's params {dict(params)} lack or garble {exc}; "
                             "it needs lr, batch_size and optimizer.") from None
        if not (math.isfinite(point.lr) and point.lr > 0) or point.batch_size < 1:
            raise UsageError(f"the configuration's params {dict(params)} cannot be trained with.")
        if point.optimizer not in OPTIMIZER_NAMES:
            raise UsageError(f"the configuration's optimizer {point.optimizer!r} is not one of "
                             f"{', '.join(OPTIMIZER_NAMES)}.")
        return point


# The tutorial's own configuration: a trial of every study (tuning.study.baseline), the one to beat.
TUTORIAL = Hyperparameters(lr=1e-3, batch_size=64, optimizer="SGD")

# How describe() names a parameter, and the order it writes them in; others follow as stored.
_SHORT_NAMES = {"optimizer": "", "lr": "lr", "batch_size": "batch"}


def describe(params: Mapping[str, Any]) -> str:
    """A configuration in a few words, e.g. ``Adam lr 0.000294 batch 16``.

    Every tool writes configurations this way. Parameters beyond the tutorial space's are
    appended as ``name value``; a missing one is simply left out.
    """
    words = []
    ordered = [key for key in _SHORT_NAMES if key in params]
    ordered += [key for key in params if key not in _SHORT_NAMES]
    for key in ordered:
        value = params[key]
        text = f"{value:.3g}" if isinstance(value, float) else str(value)
        name = _SHORT_NAMES.get(key, key)
        words.append(f"{name} {text}" if name else text)
    return " ".join(words)


def distributions() -> dict[str, BaseDistribution]:
    """The space as Optuna distributions, by parameter name: what ``suggest`` samples."""
    return {
        "lr": FloatDistribution(LR_LOW, LR_HIGH, log=True),
        "batch_size": CategoricalDistribution(BATCH_SIZES),
        "optimizer": CategoricalDistribution(TUTORIAL_OPTIMIZERS),
    }


def suggest(trial: optuna.Trial) -> Hyperparameters:
    """Sample (or take the enqueued) hyperparameters for ``trial``."""
    return Hyperparameters(
        lr=trial.suggest_float("lr", LR_LOW, LR_HIGH, log=True),
        batch_size=trial.suggest_categorical("batch_size", BATCH_SIZES),
        optimizer=trial.suggest_categorical("optimizer", TUTORIAL_OPTIMIZERS),
    )
