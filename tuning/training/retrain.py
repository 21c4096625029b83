"""Train a configuration again the way a search trial did: seeded start and retrain.

``seeded_start`` fixes the order of the seeded draws for a trial and for every later run of its
configuration (``tuning.confirm``, ``tuning.train``), so the same seed replays the same run.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

from model.data import Tensors
from model.kernels import fp32_kernel
from model.loops import EpochResult, make_optimizer, run_epochs
from model.network import NetworkConfig, NeuralNetwork
from model.schedule import make_schedule
from model.stacked import StackedMLP, run_stacked_epochs
from tuning.space.hyperparameters import Hyperparameters

TRAIN_ON = ("train", "train+val")  # the search's training images; or those plus validation

def seeded_start(
    params: Hyperparameters, seed: int, device: torch.device
) -> tuple[NeuralNetwork, torch.optim.Optimizer, torch.Generator]:
    """A fresh network, its optimizer and the shuffling generator, all from ``seed``.

    The network's float32 products run on the kernel this hardware is fastest with
    (``model.kernels.fp32_kernel``: a rule on the hardware, so one machine replays a seed).
    """
    torch.manual_seed(seed)
    model = NeuralNetwork(NetworkConfig.from_dict(params.network()),
                          kernel=fp32_kernel(device).value).to(device)
    return model, optimizer_of(params, model.parameters()), torch.Generator().manual_seed(seed)


def optimizer_of(params: Hyperparameters, weights: Iterable[torch.Tensor]
                 ) -> torch.optim.Optimizer:
    """The optimizer ``params`` name, with their learning rate, weight decay and momentum."""
    return make_optimizer(params.optimizer, weights, params.lr, weight_decay=params.weight_decay,
                          momentum=params.momentum, nesterov=params.nesterov)


def recipe(params: Hyperparameters, train_size: int, epochs: int) -> dict[str, Any]:
    """How ``run_epochs`` trains ``params`` on ``train_size`` images for ``epochs``: the batch
    size, the step schedule (None where the learning rate stays constant), label smoothing,
    the mirroring of training images and the decay per step of the weight average (spanning
    ``ema_epochs`` epochs' steps, whatever the batch size; 0: none).
    """
    steps = math.ceil(train_size / params.batch_size)
    span = params.ema_epochs * steps  # the average's span in steps: decay 1 - 1 / span
    return {"batch_size": params.batch_size,
            "schedule": make_schedule(params.schedule, params.lr, epochs, steps,
                                      params.warmup_epochs),
            "label_smoothing": params.label_smoothing, "hflip": params.hflip,
            "ema_decay": 1 - 1 / span if span > 1 else 0.0}


def stackable(params: Hyperparameters) -> bool:
    """Whether ``retrain_seeds`` can stack ``params``'s seeds: ``model.stacked`` trains plain
    networks (no dropout, no schedule, no label smoothing, no mirroring, no weight average,
    no batch norm)."""
    plain = (params.dropout, params.input_dropout, params.label_smoothing, params.hflip,
             params.ema_epochs, params.batch_norm)
    return (not any(plain)
            and make_schedule(params.schedule, params.lr, 1, 1, params.warmup_epochs) is None)


class Diverged(ValueError):
    """A retrain's training loss turned NaN or infinite; ``history`` holds its epochs so far."""

    def __init__(self, message: str, history: dict[str, list[float]]) -> None:
        super().__init__(message)
        self.history = history


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
    on_epoch: Callable[[EpochResult], None] | None = None,
    precision: str = "fp32",
) -> Retrained:
    """Train a fresh network the way a search trial does; score ``val`` after each epoch.

    The network's weights and the shuffling come from ``seed`` (``seeded_start``), so the best
    trial's seed, data and epochs replay that trial. With ``val``, the returned model holds the
    weights of the epoch with the best validation accuracy (the epoch a trial's value comes
    from); without it, those of the last epoch (the weight average's, where ``params`` have
    one). Float32 by default: the final model is trained
    and scored at full precision (a confirmation run may ask for bf16).

    Raises:
        Diverged: the training loss turned NaN or infinite (a ``ValueError``).
    """
    train, val = train.to(device), val.to(device) if val is not None else None
    model, optimizer, shuffle = seeded_start(params, seed, device)
    history: dict[str, list[float]] = {"train_loss": [], "epoch_seconds": []}
    if val is not None:
        history |= {"val_loss": [], "val_accuracy": []}
    best_accuracy, kept_epoch, kept_state = -1.0, epochs, None
    scored: torch.nn.Module = model
    begin = time.perf_counter()
    for result in run_epochs(model, optimizer, train, val, epochs=epochs, generator=shuffle,
                             precision=precision, **recipe(params, len(train), epochs)):
        scored = result.scored or model
        history["train_loss"].append(round(result.train_loss, 6))
        history["epoch_seconds"].append(round(result.seconds, 3))
        if result.val_loss is not None and result.val_accuracy is not None:
            history["val_loss"].append(round(result.val_loss, 6))
            history["val_accuracy"].append(result.val_accuracy)
            if result.val_accuracy > best_accuracy:
                best_accuracy, kept_epoch = result.val_accuracy, result.epoch
                kept_state = copy.deepcopy(scored.state_dict())
        if on_epoch is not None:
            on_epoch(result)
        if not math.isfinite(result.train_loss):
            raise Diverged(f"the training loss turned {result.train_loss} in epoch "
                           f"{result.epoch} (lr {params.lr:.3g}); this configuration diverges "
                           f"from seed {seed}. Try another --seed.", history)
    seconds = time.perf_counter() - begin
    if kept_state is not None:
        model.load_state_dict(kept_state)
    elif scored is not model:
        model.load_state_dict(scored.state_dict())
    return Retrained(model, history, seconds, kept_epoch)


@dataclass(frozen=True)
class SeedRun:
    """One seed's run among several trained together (``retrain_seeds``)."""

    seed: int
    history: dict[str, list[float]]  # val_loss, val_accuracy, train_loss: up to divergence
    diverged: bool


def retrain_seeds(params: Hyperparameters, train: Tensors, val: Tensors, epochs: int,
                  seeds: list[int], device: torch.device, precision: str = "fp32"
                  ) -> list[SeedRun]:
    """``retrain`` from each of ``seeds``, all at once as one stacked model (model.stacked).

    Each seed starts from the weights and shuffling ``seeded_start`` gives it, so each run is
    the separate run from that seed up to float rounding. A seed whose training loss turns NaN
    or infinite keeps its history up to that epoch, as ``Diverged`` carries it for one run.
    """
    if not stackable(params):
        return [retrain_one(params, train, val, epochs, seed, device, precision)
                for seed in seeds]
    train, val = train.to(device), val.to(device)
    starts = [seeded_start(params, seed, device) for seed in seeds]
    model = StackedMLP([net for net, _, _ in starts]).to(device)
    optimizer = optimizer_of(params, model.parameters())
    histories: list[dict[str, list[float]]] = [
        {"train_loss": [], "val_loss": [], "val_accuracy": []} for _ in seeds]
    diverged = [False] * len(seeds)
    for stacked in run_stacked_epochs(model, optimizer, train, val, epochs=epochs,
                                      batch_size=params.batch_size,
                                      generators=[g for _, _, g in starts],
                                      precision=precision):
        for k, result in enumerate(stacked.results):
            if diverged[k]:
                continue
            histories[k]["train_loss"].append(round(result.train_loss, 6))
            histories[k]["val_loss"].append(round(result.val_loss or 0.0, 6))
            histories[k]["val_accuracy"].append(result.val_accuracy or 0.0)
            diverged[k] = not math.isfinite(result.train_loss)
        if all(diverged):
            break
    return [SeedRun(seed, history, flag)
            for seed, history, flag in zip(seeds, histories, diverged, strict=True)]


def retrain_one(params: Hyperparameters, train: Tensors, val: Tensors, epochs: int, seed: int,
                device: torch.device, precision: str = "fp32",
                on_epoch: Callable[[EpochResult], None] | None = None) -> SeedRun:
    """``retrain`` from one seed as a ``SeedRun``: a divergence keeps its history so far."""
    try:
        history = retrain(params, train, val, epochs, seed, device, precision=precision,
                          on_epoch=on_epoch).history
    except Diverged as exc:
        return SeedRun(seed, exc.history, True)
    return SeedRun(seed, history, False)


def replays_trial(config: dict[str, Any], history: dict[str, list[float]], epochs: int, seed: int,
             train_on: str) -> bool | None:
    """Whether a retrain's validation curve equals its trial's; None where not comparable.

    Comparable only when it retrained the trial's own images (``train_on`` "train") from the
    trial's seed for the study's epochs, as recorded in the exported ``config``, and the trial
    trained in float32 as a retrain does (exports from before precisions were recorded count
    as float32, the default then).
    """
    searched = (config.get("history") or {}).get("val_accuracy")
    if train_on != "train" or not searched or seed != config.get("trial_seed"):
        return None
    if (config.get("trial_precision") or "fp32") != "fp32":
        return None
    if epochs != config.get("epochs"):
        return None
    return history["val_accuracy"] == searched
