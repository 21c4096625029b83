"""The search space, in one place, and how a point of it is written for people."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution

LR_LOW, LR_HIGH = 1e-5, 1e-1  # sampled log-uniformly
BATCH_SIZES = (16, 32, 64, 128, 256)
# The keys of model.loops.OPTIMIZERS, written out so that tools which only read a study
# (export, report, dashboard) need not import torch; a test keeps the two equal.
OPTIMIZER_NAMES = ("SGD", "Adam", "RMSprop")


@dataclass(frozen=True)
class Hyperparameters:
    """One point of the search space; field names are the study's parameter names."""

    lr: float
    batch_size: int
    optimizer: str

    def as_params(self) -> dict[str, Any]:
        """The point as Optuna parameters, e.g. for ``study.enqueue_trial``."""
        return asdict(self)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Hyperparameters:
        """Read a point back from stored or exported parameters, checking it can train.

        Raises:
            ValueError: a parameter is missing, garbled or cannot be trained with.
        """
        try:
            point = cls(lr=float(params["lr"]), batch_size=int(params["batch_size"]),
                        optimizer=str(params["optimizer"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"the configuration's params {dict(params)} lack or garble {exc}; "
                             "it needs lr, batch_size and optimizer.") from None
        if not (math.isfinite(point.lr) and point.lr > 0) or point.batch_size < 1:
            raise ValueError(f"the configuration's params {dict(params)} cannot be trained with.")
        if point.optimizer not in OPTIMIZER_NAMES:
            raise ValueError(f"the configuration's optimizer {point.optimizer!r} is not one of "
                             f"{', '.join(OPTIMIZER_NAMES)}.")
        return point


# The tutorial's own configuration: the first trial of every new study, the baseline to beat.
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
        "optimizer": CategoricalDistribution(OPTIMIZER_NAMES),
    }


def suggest(trial: optuna.Trial) -> Hyperparameters:
    """Sample (or take the enqueued) hyperparameters for ``trial``."""
    return Hyperparameters(
        lr=trial.suggest_float("lr", LR_LOW, LR_HIGH, log=True),
        batch_size=trial.suggest_categorical("batch_size", BATCH_SIZES),
        optimizer=trial.suggest_categorical("optimizer", OPTIMIZER_NAMES),
    )
