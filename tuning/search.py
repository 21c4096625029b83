"""python -m tuning.search: run or resume an Optuna study of the tutorial network.

One process runs the trials itself; with ``--workers N`` it creates or resumes the study, then
supervises N copies of itself (``--worker k``), which run the trials.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch

from model.data import (
    DEFAULT_DATA_DIR,
    DataError,
    Source,
    TrainValSplit,
    load_searched_split,
)
from model.loops import PRECISIONS, flush_denormals
from tuning.cli import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    HelpFormatter,
    Parser,
    add_data_and_device_arguments,
    add_study_arguments,
    fail,
    quiet_optuna,
)
from tuning.device import resolve_device
from tuning.errors import StudyError
from tuning.objective import Objective
from tuning.protocol import StudyRecord
from tuning.search_output import Progress, interrupted, summary
from tuning.storage import HEARTBEAT_S, Location, heartbeat_of, open_storage
from tuning.storage_checks import check_existing, check_writable
from tuning.study import DEFAULT_STUDY_NAME, PRUNERS, SAMPLERS, count_finished, create_or_resume
from tuning.supervisor import WORKER_FLAG, WorkerExit, supervise
from tuning.trials import run_trials, threads_per_worker

PROG = "python -m tuning.search"


@dataclass(frozen=True)
class SearchSettings:
    """Everything a search run needs; the defaults are the CLI's defaults."""

    study_name: str = DEFAULT_STUDY_NAME
    storage: str | None = None  # None: sqlite:///studies/<study_name>.db
    n_trials: int = 20  # finished (complete or pruned) trials the study should reach in total
    timeout: float | None = None  # seconds for this run; None: no limit
    epochs: int = 10  # as in the tutorial
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int = 0
    data_dir: Path = DEFAULT_DATA_DIR
    device: str = "auto"
    val_size: int = 10_000  # taken from the 60,000 training images
    split_seed: int = 0  # fixes which images are validation, the same for every study
    precision: str = "fp32"  # bf16 is slower on CPUs without bf16: docs/decisions.md
    workers: int = 1  # processes on this machine sharing the study; they split the CPU threads
    heartbeat: int = HEARTBEAT_S  # seconds between a running trial's heartbeats (databases)
    worker: int = 0  # set by --workers in each worker it starts (1..N); 0: not a worker

    def location(self) -> Location:
        """Where the study lives (raises StudyError for a bad --storage)."""
        return Location.of(self.storage, self.study_name)

    def check(self) -> None:
        """Raise ValueError naming the first flag whose value cannot work."""
        if not self.study_name.strip():
            raise ValueError("--study-name must not be empty.")
        if self.epochs < 1:
            raise ValueError(f"--epochs must be at least 1, but got {self.epochs}.")
        if self.n_trials < 1:
            raise ValueError(f"--n-trials must be at least 1, but got {self.n_trials}.")
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError(f"--timeout must be a positive number of seconds, got {self.timeout}.")
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"--precision must be one of {', '.join(PRECISIONS)}, but got {self.precision!r}."
            )
        if self.val_size < 1:
            raise ValueError(f"--val-size must be at least 1, but got {self.val_size}.")
        if self.workers < 1:
            raise ValueError(f"--workers must be at least 1, but got {self.workers}.")
        if self.heartbeat < 1:
            raise ValueError(
                f"--heartbeat must be at least 1 second, but got {self.heartbeat}."
            )


def build_parser() -> argparse.ArgumentParser:
    d = SearchSettings()
    parser = Parser(
        prog=PROG,
        description=(
            "Tune the learning rate, batch size and optimizer (SGD, Adam, RMSprop) of the "
            "PyTorch 'Learn the Basics' FashionMNIST network with Optuna. Every trial trains "
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
                        help="epochs per trial (a pruned trial stops earlier)")
    parser.add_argument("--sampler", choices=SAMPLERS, default=d.sampler,
                        help="how the next hyperparameters are chosen")
    parser.add_argument("--pruner", choices=PRUNERS, default=d.pruner,
                        help="how weak trials are stopped early")
    parser.add_argument("--seed", type=int, default=d.seed,
                        help="seeds the sampler and each trial's weights and shuffling: same "
                        "seed, same machine, one worker -> same trials and values")
    add_data_and_device_arguments(parser, d.data_dir, d.device)
    parser.add_argument("--val-size", type=int, default=d.val_size,
                        help="training images held out for validation")
    parser.add_argument(
        "--precision", choices=PRECISIONS, default=d.precision,
        help="arithmetic of the forward pass: fp32, or bf16 autocast (weights stay float32; "
        "faster only where the CPU or GPU has native bf16, see docs/decisions.md)",
    )
    parser.add_argument(
        "--workers", type=int, default=d.workers,
        help="worker processes on this machine, sharing the study and the CPU threads; "
        "together they stop at --n-trials",
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


def _prepare(settings: SearchSettings) -> Prepared:
    """Check every input, load the data, then create or resume the study (in that order).

    Raises:
        ValueError, DataError, StudyError: bad input; nothing was written.
    """
    settings.check()
    device = resolve_device(settings.device)
    location = settings.location()
    check_existing(location)
    check_writable(location)  # a read-only or full disk fails before training
    # Data first: a bad data folder must fail before any study file is created.
    source, data = load_searched_split(settings.data_dir, settings.val_size, settings.split_seed)
    storage = open_storage(location, heartbeat=settings.heartbeat, write_ahead_log=True)
    record = StudyRecord(epochs=settings.epochs, val_size=settings.val_size,
                         split_seed=settings.split_seed, train_size=len(data.train),
                         seed=settings.seed)
    study, resumed = create_or_resume(
        storage, settings.study_name, sampler_name=settings.sampler,
        pruner_name=settings.pruner, seed=settings.seed, record=record, worker=settings.worker,
    )
    return Prepared(settings, location, study, storage, resumed, source, data, device)


def _announce(run: Prepared) -> None:
    settings, data = run.settings, run.data
    assert data is not None
    threads = f"torch threads {torch.get_num_threads()}"
    if settings.worker:
        print(f"worker {settings.worker} of {settings.workers}: pid {os.getpid()}, {threads}.",
              flush=True)
        return
    if settings.workers > 1:
        threads = (f"{settings.workers} workers x {threads_per_worker(settings.workers)} "
                   "torch threads")
    print(
        f"Study {settings.study_name!r} in {run.location.url} "
        f"({'resumed' if run.resumed else 'new'}): {count_finished(run.study)} of "
        f"{settings.n_trials} trials finished."
    )
    print(
        f"Data: {len(data.train)} train / {len(data.val)} validation images from "
        f"{run.source.folder} ({run.source.how}); device {run.device}, {threads}, "
        f"precision {settings.precision}; {settings.epochs} epochs per trial, sampler "
        f"{settings.sampler}, pruner {settings.pruner}, seed {settings.seed}.",
        flush=True,
    )


def _run_here(run: Prepared) -> int:
    """Run trials in this process until the study reaches its target."""
    settings = run.settings
    assert run.data is not None
    progress = Progress(settings.n_trials, live=sys.stderr.isatty())
    objective = Objective(run.data, settings.epochs, settings.seed, run.device, progress.epoch,
                          precision=settings.precision)
    try:
        run_trials(run.study, objective, settings.n_trials, storage_url=run.location.url,
                   heartbeat=heartbeat_of(run.storage), timeout=settings.timeout,
                   callbacks=[progress.trial])
    except KeyboardInterrupt:
        if not settings.worker:  # a worker's supervisor reports
            interrupted(run.study, settings.n_trials, run.location.url, settings.workers)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a trial failed for a reason other than divergence
        return fail(PROG, f"a trial failed and the search stopped: {exc!r}", status=EXIT_FAILED)
    return EXIT_OK


def _supervise(run: Prepared, argv: Sequence[str] | None) -> int:
    """Run --workers copies of this command on the study, wait for them, say how it ended."""
    settings = run.settings
    command = [sys.executable, "-m", "tuning.search", *(sys.argv[1:] if argv is None else argv)]

    def warn(worker: WorkerExit) -> None:
        print(f"{PROG}: warning: {worker.describe()}.", file=sys.stderr, flush=True)

    outcome = supervise(command, settings.workers, on_exit=warn)
    if outcome.interrupted:
        interrupted(run.study, settings.n_trials, run.location.url, settings.workers)
        return EXIT_INTERRUPTED
    finished = count_finished(run.study)
    if finished < settings.n_trials:
        failed = "; ".join(w.describe() for w in outcome.failed) or "no worker failed"
        return fail(
            PROG,
            f"the workers stopped with {finished} of {settings.n_trials} trials finished "
            f"({failed}); their output above says why. Run the same command again to finish "
            "the rest.",
            status=EXIT_FAILED,
        )
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the search; return the process exit status."""
    settings = parse_settings(argv)
    quiet_optuna()  # our own lines report each trial
    flush_denormals()  # before torch starts its thread pool, which inherits it
    if settings.worker:  # before torch starts its thread pool
        torch.set_num_threads(threads_per_worker(settings.workers))
    try:
        run = _prepare(settings)
    except (ValueError, DataError, StudyError) as exc:
        return fail(PROG, str(exc))
    _announce(run)
    if count_finished(run.study) >= settings.n_trials:
        if settings.worker:
            return EXIT_OK
        print("The study already reached its target; raise --n-trials to run more.")
    elif settings.workers > 1 and not settings.worker:
        run.data = None  # each worker loads its own copy
        status = _supervise(run, argv)
        if status != EXIT_OK:
            return status
    else:
        status = _run_here(run)
        if status != EXIT_OK or settings.worker:
            return status  # a worker's supervisor prints the summary
    print(summary(run.study, run.location.url, settings.study_name))
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
