"""A recorded curve table (``benchmarks.curves``) as a landscape a simulated search can query.

``Landscape.curve(lr, batch_size, optimizer)`` answers any point of the tutorial space with a
per-epoch validation accuracy and per-epoch seconds. Between two recorded learning rates it
interpolates linearly in log10(lr), epoch by epoch (accuracy and seconds alike); outside the
recorded range it takes the nearest recorded learning rate. Where a configuration was recorded
from several seeds, their mean curve is used, and the seed noise (the standard deviation of
one run's accuracy about that mean, pooled over the epochs of the configurations recorded
twice) is what a simulation adds to each trial to stand for its own seed. The noise is pooled
by how good the configuration is (``NOISE_BANDS`` of its best mean accuracy): a learning rate
at the edge of diverging differs from seed to seed by tens of points, a good configuration by
under one, and one figure for both would let noise carry weak trials past good ones.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import pandas as pd

from tuning.space.hyperparameters import Hyperparameters, suggest

# Lower edges of the bands of a configuration's best accuracy that the seed noise is pooled in.
NOISE_BANDS = (0.0, 0.7, 0.8, 0.85)


def _read(path: Path) -> tuple[pd.DataFrame, list[str]]:
    """A curve table's rows and its header lines (``#``)."""
    header = [line for line in path.read_text().splitlines() if line.startswith("#")]
    return pd.read_csv(path, comment="#"), header


def _noise_in_band(noise: Sequence[float], best: float) -> float:
    """The seed noise (per band of ``NOISE_BANDS``) of a configuration whose best noise-free
    accuracy is ``best``."""
    return noise[bisect.bisect_right(NOISE_BANDS, best) - 1]


@dataclass(frozen=True)
class Recorded:
    """The curves of one (batch size, optimizer): learning rates ascending, and per lr the
    mean accuracy and seconds per epoch."""

    log_lrs: list[float]
    accuracy: np.ndarray  # [lrs, epochs]
    seconds: np.ndarray  # [lrs, epochs]


class Landscape:
    """The table's configurations, for interpolation."""

    def __init__(self, rows: pd.DataFrame, header: list[str]) -> None:
        self.header = header
        self.epochs = int(rows["epoch"].max())
        self.groups: dict[tuple[int, str], Recorded] = {}
        means = rows.groupby(["batch_size", "optimizer", "lr", "epoch"])[
            ["val_accuracy", "seconds"]].mean().reset_index()
        for (batch, optimizer), group in means.groupby(["batch_size", "optimizer"]):
            lrs = sorted(group["lr"].unique())
            acc = np.full((len(lrs), self.epochs), np.nan)
            sec = np.full((len(lrs), self.epochs), np.nan)
            for i, lr in enumerate(lrs):
                part = group[group["lr"] == lr].sort_values("epoch")
                n = len(part)
                acc[i, :n], sec[i, :n] = part["val_accuracy"], part["seconds"]
                if n < self.epochs:  # a diverged run stopped: it stays where it ended
                    acc[i, n:], sec[i, n:] = acc[i, n - 1], sec[i, n - 1]
            self.groups[int(batch), str(optimizer)] = Recorded(
                [math.log10(lr) for lr in lrs], acc, sec)
        self.noise = _seed_noise(rows)  # per band of NOISE_BANDS

    @classmethod
    def read(cls, path: Path) -> Landscape:
        rows, header = _read(path)
        if rows.empty:
            raise ValueError(f"{path} holds no recorded curve; run python -m benchmarks.curves")
        if "config" in rows.columns:
            raise ValueError(f"{path} holds configurations sampled from a larger space, which "
                             "cannot be interpolated in lr: read it with Drawn.read")
        return cls(rows, header)

    def draw(self, trial: optuna.Trial) -> tuple[np.ndarray, np.ndarray, Hyperparameters]:
        """Let ``trial`` sample the tutorial space; its curve (accuracy, seconds) and point."""
        params = suggest(trial)
        return (*self.curve(params.lr, params.batch_size, params.optimizer), params)

    def curve(self, lr: float, batch_size: int, optimizer: str) -> tuple[np.ndarray, np.ndarray]:
        """(accuracy per epoch, seconds per epoch) at ``lr``, interpolated in log10(lr)."""
        try:
            recorded = self.groups[batch_size, optimizer]
        except KeyError:
            raise ValueError(f"the table has no curves for batch size {batch_size} with "
                             f"{optimizer}") from None
        x, xs = math.log10(lr), recorded.log_lrs
        i = bisect.bisect_left(xs, x)
        if i == 0 or len(xs) == 1:
            return recorded.accuracy[0], recorded.seconds[0]
        if i == len(xs):
            return recorded.accuracy[-1], recorded.seconds[-1]
        w = (x - xs[i - 1]) / (xs[i] - xs[i - 1])
        return ((1 - w) * recorded.accuracy[i - 1] + w * recorded.accuracy[i],
                (1 - w) * recorded.seconds[i - 1] + w * recorded.seconds[i])

    def noise_for(self, best: float) -> float:
        """The seed noise of a configuration whose best (noise-free) accuracy is ``best``."""
        return _noise_in_band(self.noise, best)

    def best(self) -> float:
        """The best accuracy any recorded configuration reached (mean over its seeds)."""
        return max(float(np.nanmax(r.accuracy)) for r in self.groups.values())


class Drawn:
    """A table of configurations drawn from a larger space (``benchmarks.curves --space``):
    nothing to interpolate, so a simulated trial draws one of them (the ``config`` parameter,
    uniform for the random sampler) and gets its mean curve, plus its seed noise."""

    def __init__(self, rows: pd.DataFrame, header: list[str]) -> None:
        self.header = header
        self.epochs = int(rows["epoch"].max())
        means = rows.groupby(["config", "epoch"])[["val_accuracy", "seconds"]].mean()
        self.configs: list[tuple[np.ndarray, np.ndarray]] = []
        for _, part in means.groupby(level="config"):
            acc, sec = part["val_accuracy"].to_numpy(), part["seconds"].to_numpy()
            pad = self.epochs - len(acc)  # a diverged run stays where it ended
            self.configs.append((np.pad(acc, (0, pad), mode="edge"),
                                 np.pad(sec, (0, pad), mode="edge")))
        self.noise = _seed_noise(rows, ["config"])

    @classmethod
    def read(cls, path: Path) -> Drawn:
        rows, header = _read(path)
        if rows.empty or "config" not in rows.columns:
            raise ValueError(f"{path} holds no drawn configurations; run python -m "
                             "benchmarks.curves --space NAME")
        return cls(rows, header)

    def draw(self, trial: optuna.Trial) -> tuple[np.ndarray, np.ndarray, None]:
        acc, sec = self.configs[trial.suggest_int("config", 0, len(self.configs) - 1)]
        return acc, sec, None

    def noise_for(self, best: float) -> float:
        return _noise_in_band(self.noise, best)

    def best(self) -> float:
        return max(float(np.max(acc)) for acc, _ in self.configs)


def read_table(path: Path) -> Landscape | Drawn:
    """A grid of the tutorial space as a Landscape, a table of drawn configurations as Drawn."""
    with path.open() as file:
        columns = next((line for line in file if not line.startswith("#")), "")
    return Drawn.read(path) if columns.startswith("config,") else Landscape.read(path)


def holdout_error(rows: pd.DataFrame) -> tuple[float, int]:
    """How well interpolation predicts a recorded configuration it was not given.

    For every learning rate strictly inside its (batch size, optimizer) grid, the curve
    interpolated from the table without that learning rate is compared with the recorded one:
    returns the mean absolute accuracy error over those curves' epochs, and how many curves.
    """
    errors: list[float] = []
    for (batch, optimizer), group in rows.groupby(["batch_size", "optimizer"]):
        lrs = sorted(group["lr"].unique())
        for lr in lrs[1:-1]:
            rest = Landscape(rows[~((rows["batch_size"] == batch)
                                    & (rows["optimizer"] == optimizer)
                                    & (rows["lr"] == lr))], [])
            predicted = rest.curve(lr, int(batch), str(optimizer))[0]
            actual = group[group["lr"] == lr].groupby("epoch")["val_accuracy"].mean()
            n = min(len(actual), len(predicted))
            errors.append(float(np.mean(np.abs(predicted[:n] - actual.to_numpy()[:n]))))
    return (float(np.mean(errors)) if errors else float("nan")), len(errors)


def _seed_noise(rows: pd.DataFrame,
                keys: Sequence[str] = ("batch_size", "optimizer", "lr")) -> list[float]:
    """One run's standard deviation about the mean of its configuration's seeds, pooled over
    the epochs of the configurations recorded more than once whose best mean accuracy lies in
    each band of ``NOISE_BANDS``; a band with none takes the pool of all of them (0 if none)."""
    keys = list(keys)
    spread = rows.groupby([*keys, "epoch"])["val_accuracy"].agg(["std", "count", "mean"])
    pairs = spread[spread["count"] > 1].reset_index()
    if pairs.empty:
        return [0.0] * len(NOISE_BANDS)
    pairs["var"] = pairs["std"] ** 2
    configs = pairs.groupby(keys).agg(best=("mean", "max"), var=("var", "mean"))
    overall = float(np.sqrt(configs["var"].mean()))
    band = np.searchsorted(NOISE_BANDS, configs["best"].to_numpy(), side="right") - 1
    return [float(np.sqrt(configs["var"][band == i].mean())) if (band == i).any() else overall
            for i in range(len(NOISE_BANDS))]
