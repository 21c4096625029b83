"""The Optuna objective: train the tutorial network with sampled hyperparameters.

``retrain`` trains a configuration again the way a trial did, for ``tuning.train`` and
``tuning.confirm``; ``seeded_start`` fixes the seeded draws for both.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import optuna
import torch

from model.data import Tensors, TrainValSplit
from model.loops import (
    evaluate,
    make_optimizer,
    shuffle_buffer,
    train_epoch,
    warm_up_optimizers,
)
from model.network import NeuralNetwork
from tuning.space import Hyperparameters, suggest

# Per-epoch histories stored as trial user attributes (lists, one entry per epoch).
HISTORY_KEYS = ("train_loss", "val_loss", "val_accuracy", "epoch_seconds")
THREADS_ATTR = "torch_threads"  # the trial's torch.get_num_threads(), for a faithful replay
DIVERGED = "diverged"  # how the pruned_reason of a NaN or infinite run begins


@dataclass(frozen=True)
class EpochReport:
    """What one finished epoch of one trial measured; handed to the progress callback."""

    trial: int
    epoch: int
    epochs: int
    params: Hyperparameters
    train_loss: float
    val_loss: float
    val_accuracy: float
    seconds: float


def trial_seed(study_seed: int, trial_number: int) -> int:
    """A 32-bit seed for one trial, distinct for every (study seed, trial number) pair."""
    return int(np.random.SeedSequence([study_seed, trial_number]).generate_state(1)[0])


def seeded_start(
    params: Hyperparameters, seed: int, device: torch.device
) -> tuple[NeuralNetwork, torch.optim.Optimizer, torch.Generator]:
    """A fresh network, its optimizer and the shuffling generator, all from ``seed``.

    The one place that fixes the order of the seeded draws: a trial and a retrain of it
    (``tuning.train``) start from here, so the same seed replays the same run.
    """
    torch.manual_seed(seed)
    model = NeuralNetwork().to(device)
    optimizer = make_optimizer(params.optimizer, model.parameters(), params.lr)
    return model, optimizer, torch.Generator().manual_seed(seed)


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
        on_epoch: Callable[[EpochReport], None] | None = None,
        precision: str = "fp32",
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

    def __call__(self, trial: optuna.Trial) -> float:
        params = suggest(trial)
        # A trial queued again after its worker died carries its seed: it replays that run.
        seed = trial.user_attrs.get("seed", trial_seed(self.seed, trial.number))
        trial.set_user_attr("seed", seed)
        trial.set_user_attr("precision", self.precision)
        # CPU results depend on the thread count (it splits the sums): a replay needs it too.
        trial.set_user_attr(THREADS_ATTR, torch.get_num_threads())
        model, optimizer, shuffle = seeded_start(params, seed, self.device)
        history: dict[str, list[float]] = {key: [] for key in HISTORY_KEYS}
        best = 0.0
        for epoch in range(1, self.epochs + 1):
            start = time.perf_counter()
            train_loss = train_epoch(
                model, optimizer, self.train, params.batch_size, shuffle,
                precision=self.precision, buffer=self.buffer,
            )
            val_loss, val_accuracy = evaluate(model, self.val, precision=self.precision)
            seconds = time.perf_counter() - start
            if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
                # A diverged run teaches the sampler nothing more; stop it, say why, go on.
                reason = (
                    f"{DIVERGED} in epoch {epoch}: train loss {train_loss}, "
                    f"validation loss {val_loss} (lr {params.lr:.3g})"
                )
                trial.set_user_attr("pruned_reason", reason)
                raise optuna.TrialPruned(reason)
            # Rounded for reading in the dashboard; float32 losses carry no more digits anyway.
            measured = (round(train_loss, 6), round(val_loss, 6), val_accuracy, round(seconds, 3))
            for key, value in zip(HISTORY_KEYS, measured, strict=True):
                history[key].append(value)
                trial.set_user_attr(key, history[key])
            trial.report(val_accuracy, epoch)
            best = max(best, val_accuracy)
            if self.on_epoch is not None:
                self.on_epoch(
                    EpochReport(trial.number, epoch, self.epochs, params, train_loss,
                                val_loss, val_accuracy, seconds)
                )
            if trial.should_prune():
                reason = f"pruner stopped it after epoch {epoch} (val accuracy {val_accuracy:.4f})"
                trial.set_user_attr("pruned_reason", reason)
                raise optuna.TrialPruned(reason)
        return best


class Diverged(ValueError):
    """A retrain's training loss turned NaN or infinite; ``history`` holds its epochs so far."""

    def __init__(self, message: str, history: dict[str, list[float]]) -> None:
        super().__init__(message)
        self.history = history


@dataclass(frozen=True)
class EpochLine:
    """What one retrain epoch measured; validation numbers are None with train+val."""

    epoch: int
    epochs: int
    train_loss: float
    val_loss: float | None
    val_accuracy: float | None
    seconds: float


@dataclass(frozen=True)
class Retrained:
    """The retrained network and its per-epoch history."""

    model: NeuralNetwork
    history: dict[str, list[float]]
    seconds: float
    kept_epoch: int  # the epoch whose weights ``model`` holds


def retrain(
    params: Hyperparameters,
    train: Tensors,
    val: Tensors | None,
    epochs: int,
    seed: int,
    device: torch.device,
    on_epoch: Callable[[EpochLine], None] | None = None,
) -> Retrained:
    """Train a fresh network the way a search trial does; score ``val`` after each epoch.

    The network's weights and the shuffling come from ``seed`` in the same order as in
    ``Objective``, so the best trial's seed, data and epochs replay that trial.
    With ``val``, the returned model holds the weights of the epoch with the best validation
    accuracy (the epoch a trial's value comes from); without it, those of the last epoch.

    Raises:
        Diverged: the training loss turned NaN or infinite (a ``ValueError``).
    """
    train, val = train.to(device), val.to(device) if val is not None else None
    model, optimizer, shuffle = seeded_start(params, seed, device)
    buffer = shuffle_buffer(train)
    history: dict[str, list[float]] = {"train_loss": [], "epoch_seconds": []}
    if val is not None:
        history |= {"val_loss": [], "val_accuracy": []}
    best_accuracy, kept_epoch, kept_state = -1.0, epochs, None
    begin = time.perf_counter()
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        # float32 on purpose: the final model is trained and scored at full precision.
        train_loss = train_epoch(model, optimizer, train, params.batch_size, shuffle,
                                 buffer=buffer)
        val_loss, val_accuracy = evaluate(model, val) if val is not None else (None, None)
        seconds = time.perf_counter() - start
        history["train_loss"].append(round(train_loss, 6))
        history["epoch_seconds"].append(round(seconds, 3))
        if val_loss is not None:
            history["val_loss"].append(round(val_loss, 6))
            history["val_accuracy"].append(val_accuracy)
            if val_accuracy > best_accuracy:
                best_accuracy, kept_epoch = val_accuracy, epoch
                kept_state = copy.deepcopy(model.state_dict())
        if on_epoch is not None:
            on_epoch(EpochLine(epoch, epochs, train_loss, val_loss, val_accuracy, seconds))
        if not math.isfinite(train_loss):
            raise Diverged(f"the training loss turned {train_loss} in epoch {epoch} "
                           f"(lr {params.lr:.3g}); this configuration diverges from seed "
                           f"{seed}. Try another --seed.", history)
    seconds = time.perf_counter() - begin
    if kept_state is not None:
        model.load_state_dict(kept_state)
    return Retrained(model, history, seconds, kept_epoch)
