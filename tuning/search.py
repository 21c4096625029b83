"""python -m tuning.search: run or resume an Optuna study of the tutorial network.

One process runs the trials itself; with ``--workers N`` it creates or resumes the study, then
supervises N copies of itself (``--worker k``), which run the trials.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import optuna
import torch

from model.data import (
    DataError,
    Source,
    TrainValSplit,
    load_searched_split,
)
from model.kernels import HardwareChoice, fp32_kernel
from model.loops import EpochResult, flush_denormals
from tuning.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    claim_cores,
    fail,
    quiet_optuna,
    stoppable,
)
from tuning.cli.search_output import Progress, interrupted, summary
from tuning.cli.search_settings import PROG, SearchSettings, parse_settings
from tuning.space.file import Space, load_space
from tuning.study.baseline import queue_baseline_if_due, tutorial_params
from tuning.study.errors import UsageError
from tuning.study.lifecycle import count_finished, create_or_resume
from tuning.study.protocol import StudyRecord
from tuning.study.secrets import STORAGE_ENV
from tuning.study.storage import Location, heartbeat_of, open_storage
from tuning.study.storage_checks import check_existing, check_writable
from tuning.training.device import resolve_device
from tuning.training.objective import Objective
from tuning.training.precision import choose_precision
from tuning.workers.cores import threads_per_worker
from tuning.workers.signals import (
    Stopped,
    die_with_parent,
    exit_status,
    parent_gone,
    stop_reason,
    supervisor_pid,
)
from tuning.workers.supervisor import WorkerExit, supervise, without_flag
from tuning.workers.trial_loop import run_trials


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


def _prepare(settings: SearchSettings) -> Prepared:
    """Check every input, load the data, then create or resume the study (in that order).

    Raises:
        UsageError, DataError: bad input; nothing was written.
    """
    settings.check()
    space = load_space(settings.space)  # a bad file fails before anything is written
    device = resolve_device(settings.device)
    location = settings.location()
    check_existing(location)
    check_writable(location)  # a read-only or full disk fails before training
    # Data first: a bad data folder must fail before any study file is created.
    source, data = load_searched_split(settings.data_dir, settings.val_size, settings.split_seed)
    storage = open_storage(location, heartbeat=settings.heartbeat, write_ahead_log=True)
    record = StudyRecord(epochs=settings.epochs, val_size=settings.val_size,
                         split_seed=settings.split_seed, train_size=len(data.train),
                         seed=settings.seed, space=space.text, space_name=space.name)
    study, resumed = create_or_resume(
        storage, settings.study_name, sampler_name=settings.sampler,
        pruner_name=settings.pruner, seed=settings.seed, record=record, worker=settings.worker,
        where=location.shown, on_wait=lambda line: print(f"{PROG}: {line}", file=sys.stderr,
                                                         flush=True),
    )
    return Prepared(settings, location, study, storage, resumed, source, data, device,
                    choose_precision(settings.precision, device), space)


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
        f"Study {settings.study_name!r} in {run.location.shown} "
        f"({'resumed' if run.resumed else 'new'}): {count_finished(run.study)} of "
        f"{settings.n_trials} trials finished."
    )
    print(
        f"Data: {len(data.train)} train / {len(data.val)} validation images from "
        f"{run.source.folder} ({run.source.how}); device {run.device}, {threads}, "
        f"precision {run.precision.value}; {settings.epochs} epochs per trial, sampler "
        f"{settings.sampler}, pruner {settings.pruner}, seed {settings.seed}, space "
        f"{run.space.name}.",
        flush=True,
    )
    kernel = fp32_kernel(run.device)
    print(f"Precision {run.precision.value}: {run.precision.reason}. Float32 products on "
          f"{kernel.value}: {kernel.reason}.", flush=True)


def _run_here(run: Prepared) -> int:
    """Run trials in this process until the study reaches its target."""
    settings = run.settings
    assert run.data is not None
    progress = Progress(settings.n_trials, live=sys.stderr.isatty())
    on_epoch = progress.epoch
    parent = supervisor_pid() if settings.worker else None
    if parent is not None:

        def on_epoch(trial: int, result: EpochResult) -> None:
            # Where no parent-death signal exists (not Linux): notice an orphaning here.
            if parent_gone(parent):
                raise Stopped(signal.SIGTERM)
            progress.epoch(trial, result)

    objective = Objective(run.data, settings.epochs, settings.seed, run.device, on_epoch,
                          precision=run.precision.value, space=run.space)
    tutorial = tutorial_params(run.study)  # the space is read once, not before every trial
    queue = (None if tutorial is None else
             partial(queue_baseline_if_due, run.study, settings.n_trials, tutorial))
    try:
        run_trials(run.study, objective, settings.n_trials, storage_url=run.location.shown,
                   heartbeat=heartbeat_of(run.storage), timeout=settings.timeout,
                   callbacks=[progress.trial], before_trial=queue)
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP: signals.Stopped
        if not settings.worker:  # a worker's supervisor reports
            interrupted(run.study, settings.n_trials, run.location.shown, settings.workers,
                        stop_reason(exc))
        return exit_status(exc)
    except Exception as exc:  # a trial failed for a reason other than divergence
        return fail(PROG, f"a trial failed and the search stopped: {exc!r}", status=EXIT_FAILED)
    return EXIT_OK


def _supervise(run: Prepared, argv: Sequence[str] | None) -> int:
    """Run --workers copies of this command on the study, wait for them, say how it ended."""
    settings = run.settings
    # The storage URL reaches the workers in their environment, not their argument lists,
    # which any user of the machine can read (ps): it may hold a password.
    args = without_flag(sys.argv[1:] if argv is None else argv, "--storage")
    command = [sys.executable, "-m", "tuning.search", *args]

    def warn(worker: WorkerExit) -> None:
        print(f"{PROG}: warning: {worker.describe()}.", file=sys.stderr, flush=True)

    outcome = supervise(command, settings.workers, on_exit=warn,
                        env={STORAGE_ENV: run.location.url})
    if outcome.interrupted is not None:
        interrupted(run.study, settings.n_trials, run.location.shown, settings.workers,
                    stop_reason(outcome.interrupted))
        return exit_status(outcome.interrupted)
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


@stoppable(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    """Run the search; return the process exit status."""
    settings = parse_settings(argv)
    quiet_optuna()  # our own lines report each trial
    flush_denormals()  # before torch starts its thread pool, which inherits it
    if settings.worker:  # before torch starts its thread pool
        torch.set_num_threads(threads_per_worker(settings.workers))
        parent = supervisor_pid()
        if parent is not None:
            die_with_parent(parent)  # no orphan keeps training after its supervisor died
    try:
        run = _prepare(settings)
    except (UsageError, DataError) as exc:
        return fail(PROG, str(exc), exc=exc)
    _announce(run)
    if count_finished(run.study) >= settings.n_trials:
        if settings.worker:
            return EXIT_OK
        print("The study already reached its target; raise --n-trials to run more.")
    elif settings.workers > 1 and not settings.worker:
        # The supervisor claims its workers' threads; the workers claim nothing themselves.
        claim_cores(PROG, run.device.type, settings.workers * threads_per_worker(settings.workers))
        run.data = None  # each worker loads its own copy
        status = _supervise(run, argv)
        if status != EXIT_OK:
            return status
    else:
        if not settings.worker:
            claim_cores(PROG, run.device.type, torch.get_num_threads())
        status = _run_here(run)
        if status != EXIT_OK or settings.worker:
            return status  # a worker's supervisor prints the summary
    print(summary(run.study, run.location.shown, settings.study_name))
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
