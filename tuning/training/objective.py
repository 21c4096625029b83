"""The Optuna objective: train the tutorial network with sampled hyperparameters."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NoReturn

import optuna
import torch

from model.data import TrainValSplit
from model.loops import EpochResult, run_epochs, shuffle_buffer, warm_up_optimizers
from tuning.space.file import Space, load_space
from tuning.space.hyperparameters import Hyperparameters
from tuning.study.protocol import (
    DIVERGED,
    FIXED_PARAMS_ATTR,
    HISTORY_KEYS,
    KERNEL_ATTR,
    PRECISION_ATTR,
    PRUNED_REASON_ATTR,
    SEED_ATTR,
    THREADS_ATTR,
    derive_seed,
)
from tuning.training.retrain import recipe, seeded_start

# Called after every epoch of every trial with the trial's number and the epoch's numbers.
EpochCallback = Callable[[int, EpochResult], None]


class Objective:
    """Callable objective holding the data, so every trial of a process shares one copy.

    Each trial builds a fresh network from a seed derived from the study seed and the trial
    number, trains it for up to ``epochs`` epochs, reports validation accuracy after every
    epoch (step = epoch number, from 1) and returns the best validation accuracy reached.
    """

    def __init__(
        self,
        data: TrainValSplit,
        epochs: int,
        seed: int,
        device: torch.device,
        on_epoch: EpochCallback | None = None,
        precision: str = "fp32",
        space: Space | None = None,
    ) -> None:
        # On an accelerator the data moves there once and stays for the whole study.
        self.train = data.train.to(device)
        self.val = data.val.to(device)
        self.buffer = shuffle_buffer(self.train)  # reused by every epoch of every trial
        warm_up_optimizers()  # the first trial's time (and share of overhead) is its own
        self.epochs = epochs
        self.seed = seed
        self.device = device
        self.on_epoch = on_epoch
        self.precision = precision
        self.space = space or load_space("tutorial")

    def __call__(self, trial: optuna.Trial) -> float:
        values = self.space.suggest(trial)
        fixed = {key: value for key, value in values.items() if key not in trial.params}
        if fixed:  # not Optuna's to know; recorded so that every tool sees the whole point
            trial.set_user_attr(FIXED_PARAMS_ATTR, fixed)
        params = Hyperparameters.from_params(values)
        # A trial queued again after its worker died carries its seed: it replays that run.
        seed = trial.user_attrs.get(SEED_ATTR, derive_seed(self.seed, trial.number))
        trial.set_user_attr(SEED_ATTR, seed)
        trial.set_user_attr(PRECISION_ATTR, self.precision)
        # CPU results depend on the thread count (it splits the sums): a replay needs it too.
        trial.set_user_attr(THREADS_ATTR, torch.get_num_threads())
        model, optimizer, shuffle = seeded_start(params, seed, self.device)
        trial.set_user_attr(KERNEL_ATTR, model.kernel)
        history: dict[str, list[float]] = {key: [] for key in HISTORY_KEYS}
        best = 0.0
        for result in run_epochs(model, optimizer, self.train, self.val, epochs=self.epochs,
                                 generator=shuffle, precision=self.precision,
                                 buffer=self.buffer,
                                 **recipe(params, len(self.train), self.epochs)):
            assert result.val_loss is not None and result.val_accuracy is not None
            epoch, val_accuracy = result.epoch, result.val_accuracy
            if not (math.isfinite(result.train_loss) and math.isfinite(result.val_loss)):
                # A diverged run teaches the sampler nothing more; stop it, say why, go on.
                self._prune(trial, f"{DIVERGED} in epoch {epoch}: train loss "
                            f"{result.train_loss}, validation loss {result.val_loss} "
                            f"(lr {params.lr:.3g})")
            # Rounded for reading in the dashboard; float32 losses carry no more digits anyway.
            measured = (round(result.train_loss, 6), round(result.val_loss, 6), val_accuracy,
                        round(result.seconds, 3))
            for key, value in zip(HISTORY_KEYS, measured, strict=True):
                history[key].append(value)
                trial.set_user_attr(key, history[key])
            trial.report(val_accuracy, epoch)
            best = max(best, val_accuracy)
            if self.on_epoch is not None:
                self.on_epoch(trial.number, result)
            if trial.should_prune():
                self._prune(trial, f"pruner stopped it after epoch {epoch} "
                            f"(val accuracy {val_accuracy:.4f})")
        return best

    @staticmethod
    def _prune(trial: optuna.Trial, reason: str) -> NoReturn:
        trial.set_user_attr(PRUNED_REASON_ATTR, reason)
        raise optuna.TrialPruned(reason)
