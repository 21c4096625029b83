"""The search space, in one place."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import optuna

from model.loops import OPTIMIZERS

LR_LOW, LR_HIGH = 1e-5, 1e-1  # sampled log-uniformly
BATCH_SIZES = (16, 32, 64, 128, 256)
OPTIMIZER_NAMES = tuple(OPTIMIZERS)  # ("SGD", "Adam", "RMSprop")


@dataclass(frozen=True)
class Hyperparameters:
    """One point of the search space; field names are the study's parameter names."""

    lr: float
    batch_size: int
    optimizer: str

    def as_params(self) -> dict[str, Any]:
        """The point as Optuna parameters, e.g. for ``study.enqueue_trial``."""
        return asdict(self)


# The tutorial's own configuration: the first trial of every new study, the baseline to beat.
TUTORIAL = Hyperparameters(lr=1e-3, batch_size=64, optimizer="SGD")


def suggest(trial: optuna.Trial) -> Hyperparameters:
    """Sample (or take the enqueued) hyperparameters for ``trial``."""
    return Hyperparameters(
        lr=trial.suggest_float("lr", LR_LOW, LR_HIGH, log=True),
        batch_size=trial.suggest_categorical("batch_size", BATCH_SIZES),
        optimizer=trial.suggest_categorical("optimizer", OPTIMIZER_NAMES),
    )
