"""The flags of python -m tuning.search, parsed into one frozen SearchSettings, and the study
and data they open (``SearchSettings.prepare``): the command and ``tuning.api.search`` both
start there."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import optuna
import torch

from model.data import DEFAULT_DATA_DIR, Source, TrainValSplit, load_searched_split
from model.kernels import HardwareChoice
from model.loops import EpochResult
from tuning.cli.common import (
    HelpFormatter,
    Parser,
    add_data_and_device_arguments,
    add_study_arguments,
)
from tuning.space.file import Space, load_space
from tuning.study.baseline import queue_baseline_if_due, tutorial_params
from tuning.study.errors import UsageError
from tuning.study.lifecycle import DEFAULT_STUDY_NAME, create_or_resume
from tuning.study.protocol import EPOCHS, SPLIT_SEED, VAL_SIZE, StudyRecord
from tuning.study.samplers import DEFAULT_PRUNER, DEFAULT_SAMPLER, PRUNERS, SAMPLERS
from tuning.study.storage import HEARTBEAT_S, Location, open_storage
from tuning.study.storage_checks import check_existing, check_writable
from tuning.training.device import resolve_device
from tuning.training.objective import Objective
from tuning.training.precision import DEFAULT_PRECISION, PRECISION_CHOICES, choose_precision
from tuning.workers.cluster import require_dask
from tuning.workers.cores import AUTO, check_workers, workers_arg
from tuning.workers.supervisor import WORKER_FLAG

PROG = "python -m tuning.search"


@dataclass(frozen=True)
class SearchSettings:
    """Everything a search run needs; the defaults are the CLI's defaults."""

    study_name: str = DEFAULT_STUDY_NAME
    storage: str | None = field(default=None, repr=False)  # None: Location.of's default
    n_trials: int = 20  # finished (complete or pruned) trials the study should reach in total
    timeout: float | None = None  # seconds for this run; None: no limit
    epochs: int = EPOCHS
    sampler: str = DEFAULT_SAMPLER
    pruner: str = DEFAULT_PRUNER
    seed: int = 0
    data_dir: Path = DEFAULT_DATA_DIR
    device: str = "auto"
    val_size: int = VAL_SIZE
    split_seed: int = SPLIT_SEED
    precision: str = DEFAULT_PRECISION  # auto: bf16 where native (docs/decisions.md)
    space: str = "tutorial"  # a built-in space's name or a space file's path
    # Processes on this machine sharing the study; they split the CPU threads. auto: as many as
    # pay on this hardware (tuning.workers.cores.resolve_workers; docs/decisions.md).
    workers: int | str = AUTO
    heartbeat: int = HEARTBEAT_S  # seconds between a running trial's heartbeats (databases)
    # A Dask scheduler's address: the worker loops run as tasks on its cluster (--workers
    # counts them; auto: one per Dask worker thread). None: on this machine.
    cluster: str | None = None
    worker: int = 0  # set by --workers in each worker it starts (1..N); 0: not a worker

    def location(self) -> Location:
        """Where the study lives (raises StudyError for a bad --storage)."""
        return Location.of(self.storage, self.study_name)

    def prepare(self, on_wait: Callable[[str], None] | None = None,
                loaded: tuple[Source, TrainValSplit] | None = None) -> Prepared:
        """Check every input, load the data, then create or resume the study (in that order).

        The command and ``tuning.api.search`` both start here. ``on_wait`` gets a line when
        the study is being set up by another process right now. ``loaded``: the data a
        supervisor loaded before it forked this worker, used instead of reading it again.

        Raises:
            UsageError, DataError: bad input; nothing was written.
        """
        self.check()
        space = load_space(self.space)  # a bad file fails before anything is written
        device = resolve_device(self.device)
        location = self.location()
        check_existing(location)
        check_writable(location)  # a read-only or full disk fails before training
        # Data first: a bad data folder must fail before any study file is created.
        source, data = loaded or load_searched_split(self.data_dir, self.val_size,
                                                     self.split_seed)
        storage = open_storage(location, heartbeat=self.heartbeat, write_ahead_log=True)
        record = StudyRecord(epochs=self.epochs, val_size=self.val_size,
                             split_seed=self.split_seed, train_size=len(data.train),
                             seed=self.seed, space=space.text, space_name=space.name)
        study, resumed = create_or_resume(
            storage, self.study_name, sampler_name=self.sampler,
            pruner_name=self.pruner, seed=self.seed, record=record, worker=self.worker,
            where=location.shown, on_wait=on_wait,
        )
        return Prepared(self, location, study, storage, resumed, source, data, device,
                        choose_precision(self.precision, device), space)

    def check(self) -> None:
        """Raise UsageError naming the first flag whose value cannot work."""
        if not self.study_name.strip():
            raise UsageError("--study-name must not be empty.")
        if self.epochs < 1:
            raise UsageError(f"--epochs must be at least 1, but got {self.epochs}.")
        if self.n_trials < 1:
            raise UsageError(f"--n-trials must be at least 1, but got {self.n_trials}.")
        if self.timeout is not None and self.timeout <= 0:
            raise UsageError(f"--timeout must be a positive number of seconds, got {self.timeout}.")
        if self.precision not in PRECISION_CHOICES:
            raise UsageError(f"--precision must be one of {', '.join(PRECISION_CHOICES)}, but "
                             f"got {self.precision!r}.")
        if self.val_size < 1:
            raise UsageError(f"--val-size must be at least 1, but got {self.val_size}.")
        if self.workers != AUTO:
            if not isinstance(self.workers, int) or self.workers < 1:
                raise UsageError(f"--workers must be at least 1 or auto, but got "
                                 f"{self.workers!r}.")
            if self.cluster is None:  # on a cluster, the loops use the nodes' cores
                check_workers(self.workers)
        if self.cluster is not None:
            require_dask()
        if self.heartbeat < 1:
            raise UsageError(
                f"--heartbeat must be at least 1 second, but got {self.heartbeat}."
            )


def build_parser() -> argparse.ArgumentParser:
    d = SearchSettings()
    parser = Parser(
        prog=PROG,
        description=(
            "Tune the PyTorch 'Learn the Basics' FashionMNIST network with Optuna: by default "
            "its learning rate, batch size and optimizer (SGD, Adam, RMSprop); with --space, "
            "whatever a space file samples (depth, width, dropout, schedule, ...). Every "
            "trial trains "
            "on the training split, is scored on the validation split each epoch (weak trials "
            "are pruned) and is stored in the study; the test split is never read. Rerunning "
            "the same command resumes the study."
        ),
        formatter_class=HelpFormatter,
    )
    add_study_arguments(parser, d.study_name)
    parser.add_argument(
        "--n-trials", type=int, default=d.n_trials,
        help="total number of finished (complete or pruned) trials the study should reach; "
        "a rerun after an interruption completes this same target instead of adding a "
        "fresh batch",
    )
    parser.add_argument("--timeout", type=float, default=d.timeout,
                        help="stop starting new trials after this many seconds of this run "
                        "(default: no limit)")
    parser.add_argument("--epochs", type=int, default=d.epochs,
                        help="epochs per trial (a pruned trial stops earlier); a study keeps "
                        "it, and resuming with another is refused")
    parser.add_argument("--space", default=d.space, metavar="NAME|PATH",
                        help="the search space: a built-in one (tutorial: lr, batch size and "
                        "optimizer; extended: also depth, width, dropout, batch norm, weight "
                        "decay, AdamW, momentum, schedule, label smoothing) or a TOML file of "
                        "your own (docs/spaces.md); a study remembers it, and resuming with "
                        "another is refused")
    parser.add_argument("--sampler", choices=SAMPLERS, default=d.sampler,
                        help="how the next hyperparameters are chosen; a study records it, and "
                        "resuming with another is refused")
    parser.add_argument("--pruner", choices=PRUNERS, default=d.pruner,
                        help="how weak trials are stopped early; a study records it, and "
                        "resuming with another is refused")
    parser.add_argument("--seed", type=int, default=d.seed,
                        help="seeds the sampler and each trial's weights and shuffling: same "
                        "seed, same machine and --workers 1 -> same trials and values (side "
                        "by side, which trial gets which draw depends on timing); a study "
                        "records it, and resuming with another is refused")
    add_data_and_device_arguments(parser, d.data_dir, d.device)
    parser.add_argument("--val-size", type=int, default=d.val_size,
                        help="training images held out for validation")
    parser.add_argument(
        "--precision", choices=PRECISION_CHOICES, default=d.precision,
        help="arithmetic of the forward pass: fp32, bf16 autocast (weights stay float32), or "
        "auto: bf16 where the CPU or GPU computes bf16 natively, fp32 elsewhere (see "
        "docs/decisions.md)",
    )
    parser.add_argument(
        "--workers", type=workers_arg, default=d.workers, metavar="N|auto",
        help="trials run side by side, each in a worker process sharing the study and the "
        "CPU cores; together they stop at --n-trials. auto: one worker per CPU core with one "
        "torch thread each (measured to train 1.5-1.7x the images per second of one process "
        "on every core; docs/decisions.md), one process on a GPU. --workers 1 runs the "
        "trials in this process, one at a time: the exact replay of a --seed needs it",
    )
    parser.add_argument(
        "--cluster", default=d.cluster, metavar="ADDRESS",
        help="run the worker loops as tasks on the Dask cluster whose scheduler is at ADDRESS "
        "(tcp://HOST:8786; scripts/cluster/dask-cluster.sh starts one): --workers of them "
        "(auto: one per Dask worker thread), one torch thread each; a loop whose Dask worker "
        "dies is rescheduled and its trial run again; needs pip install -e '.[cluster]' and a "
        "--storage every node reaches (docs/scale-out.md)",
    )
    parser.add_argument(
        "--heartbeat", type=int, default=d.heartbeat,
        help="seconds between heartbeats of a running trial on a database storage; a trial "
        "whose worker died is marked failed after 3 missed heartbeats and run again",
    )
    parser.add_argument(WORKER_FLAG, type=int, default=d.worker, help=argparse.SUPPRESS)
    return parser


def parse_settings(argv: Sequence[str] | None) -> SearchSettings:
    # Every flag's dest is a settings field: a flag cannot be parsed and then dropped.
    return SearchSettings(**vars(build_parser().parse_args(argv)))


@dataclass
class Prepared:
    """A search ready to run: its study, where it lives, and the data (None once handed off)."""

    settings: SearchSettings
    location: Location
    study: optuna.Study
    storage: optuna.storages.BaseStorage
    resumed: bool
    source: Source
    data: TrainValSplit | None
    device: torch.device
    precision: HardwareChoice  # --precision resolved on this hardware
    space: Space

    def objective(self, on_epoch: Callable[[int, EpochResult], None] | None = None
                  ) -> Objective:
        """The objective every trial of this process runs, on the data loaded once."""
        assert self.data is not None
        return Objective(self.data, self.settings.epochs, self.settings.seed, self.device,
                         on_epoch, precision=self.precision.value, space=self.space)

    def before_trial(self) -> Callable[[], object] | None:
        """What runs before each trial: the tutorial's configuration queued when it is due."""
        tutorial = tutorial_params(self.study)  # the space is read once, not before every trial
        return (None if tutorial is None else
                partial(queue_baseline_if_due, self.study, self.settings.n_trials, tutorial))

