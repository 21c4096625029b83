"""A recorded curve table (``benchmarks.curves``) as a landscape a simulated search can query.

``Landscape.curve(lr, batch_size, optimizer)`` answers any point of the tutorial space with a
per-epoch validation accuracy and per-epoch seconds. Between two recorded learning rates it
interpolates linearly in log10(lr), epoch by epoch (accuracy and seconds alike); outside the
recorded range it takes the nearest recorded learning rate. Where a configuration was recorded
from several seeds, their mean curve is used, and the seed noise (the standard deviation of
one run's accuracy about that mean, per epoch, pooled over the pairs) is what a simulation adds
to each trial to stand for its own seed.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd


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
        self.noise = _seed_noise(rows)

    @classmethod
    def read(cls, path: Path) -> Landscape:
        lines = path.read_text().splitlines()
        header = [line for line in lines if line.startswith("#")]
        rows = pd.read_csv(path, comment="#")
        if rows.empty:
            raise ValueError(f"{path} holds no recorded curve; run python -m benchmarks.curves")
        return cls(rows, header)

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

    def best(self) -> float:
        """The best accuracy any recorded configuration reached (mean over its seeds)."""
        return max(float(np.nanmax(r.accuracy)) for r in self.groups.values())


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


def _seed_noise(rows: pd.DataFrame) -> float:
    """One run's standard deviation about the mean of its configuration's seeds, pooled."""
    keys = ["batch_size", "optimizer", "lr", "epoch"]
    spread = rows.groupby(keys)["val_accuracy"].agg(["std", "count"])
    pairs = spread[spread["count"] > 1]
    if pairs.empty:
        return 0.0
    return float(np.sqrt(np.mean(pairs["std"] ** 2)))
