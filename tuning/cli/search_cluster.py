"""python -m tuning.search --cluster ADDRESS: the search's worker loops as tasks on a Dask cluster.

The command prepares the study as it always does, then submits one task per worker loop
(``tuning.workers.cluster.run_tasks``). Each task is a worker of ``--workers``: it opens the
study itself, loads the data (once per Dask worker process), and runs trials through
``run_trials`` until the study holds ``--n-trials``, stopping between epochs when the command
asks. The command prints each trial as the study records it, whoever ran it.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
import torch
from optuna.trial import TrialState

from model.data import DataError, Source, TrainValSplit
from model.loops import EpochResult, flush_denormals
from tuning.cli.common import EXIT_FAILED, EXIT_OK, fail, quiet_optuna
from tuning.cli.search_output import Progress, interrupted
from tuning.cli.search_settings import PROG, Prepared, SearchSettings
from tuning.study.errors import UsageError
from tuning.study.lifecycle import FINISHED, count_finished
from tuning.study.storage import Location, heartbeat_of
from tuning.workers.cluster import (
    TaskEnd,
    run_tasks,
    stop_requested,
    wait_for_workers,
    worker_threads,
)
from tuning.workers.cores import AUTO
from tuning.workers.signals import Stopped, exit_status, stop_reason
from tuning.workers.trial_loop import run_trials

if TYPE_CHECKING:
    from distributed import Client, Event

# How long the command waits for the first Dask worker to join a scheduler that has none yet.
WORKERS_WAIT_S = 30

# A Dask worker process's data, read by its first task and kept for the next (a task that
# Dask reschedules onto this process after a lost worker, or the next search's).
_LOADED: dict[tuple[str, int, int], tuple[Source, TrainValSplit]] = {}


@dataclass(frozen=True)
class TaskResult:
    """What a task tells the command: its exit status and, if it failed, why (one line)."""

    status: int
    message: str = ""
    where: str = ""  # host:pid of the Dask worker process


def portable(settings: SearchSettings, location: Location) -> SearchSettings:
    """``settings`` as a task on any node needs them: files as absolute paths."""
    storage = settings.storage
    if location.kind == "sqlite" and location.path is not None:
        storage = f"sqlite:///{location.path.resolve()}"
    elif location.kind == "journal" and location.path is not None:
        storage = str(location.path.resolve())
    elif storage is None:  # $FASHION_TUNE_STORAGE: the tasks' environment may not have it
        storage = location.url
    data_dir = settings.data_dir.resolve() if settings.data_dir.exists() else settings.data_dir
    # One worker of --workers as far as its checks go: the loops are counted by the command.
    return replace(settings, storage=storage, data_dir=Path(data_dir), cluster=None, workers=1)


def search_task(settings: SearchSettings, stop: Event) -> TaskResult:
    """One worker loop, run by a Dask worker: trials until the study reaches its target."""
    where = f"{socket.gethostname()}:{os.getpid()}"
    quiet_optuna()
    flush_denormals()
    torch.set_num_threads(1)  # one worker loop per Dask worker thread, one core each
    key = (str(settings.data_dir), settings.val_size, settings.split_seed)
    try:
        run = settings.prepare(loaded=_LOADED.get(key))
    except (UsageError, DataError) as exc:
        return TaskResult(2, str(exc), where)
    assert run.source is not None and run.data is not None
    _LOADED[key] = (run.source, run.data)

    def on_epoch(trial: int, result: EpochResult) -> None:
        if stop_requested(stop):
            raise Stopped(signal.SIGTERM)  # the trial is marked failed, the loop ends

    before = run.before_trial()

    def before_trial() -> None:
        if stop_requested(stop):
            raise Stopped(signal.SIGTERM)
        if before is not None:
            before()

    try:
        run_trials(run.study, run.objective(on_epoch), settings.n_trials,
                   storage_url=run.location.shown, heartbeat=heartbeat_of(run.storage),
                   timeout=settings.timeout, before_trial=before_trial)
    except KeyboardInterrupt as exc:
        return TaskResult(exit_status(exc), "stopped", where)
    except Exception as exc:  # a trial failed for a reason other than divergence
        return TaskResult(EXIT_FAILED, f"a trial failed: {exc!r}", where)
    return TaskResult(EXIT_OK, "", where)


class _Watcher:
    """Prints each trial the study finishes, whoever ran it, once; and Dask workers that leave
    or join the cluster (a lost one's loop is rescheduled by Dask)."""

    def __init__(self, study: optuna.Study, target: int, client: Client,
                 workers: dict[str, int]) -> None:
        self.study, self.progress, self.client = study, Progress(target, live=False), client
        self.seen = {t.number for t in study.get_trials(deepcopy=False, states=FINISHED)}
        self.workers = set(workers)

    def __call__(self) -> None:
        try:
            trials = self.study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.FAIL))
            workers = set(worker_threads(self.client))
        except Exception:  # the storage or the scheduler is away for a moment: next poll
            return
        for address in sorted(self.workers - workers):
            print(f"Dask worker {address} left the cluster; its loop is rescheduled, and its "
                  "trial runs again once its heartbeats stop.", flush=True)
        for address in sorted(workers - self.workers):
            print(f"Dask worker {address} joined the cluster.", flush=True)
        self.workers = workers
        for trial in sorted(trials, key=lambda t: t.number):
            if trial.number in self.seen:
                continue
            self.seen.add(trial.number)
            if trial.state == TrialState.FAIL:
                print(f"  trial {trial.number} failed (worker "
                      f"{trial.user_attrs.get('worker', '?')}: lost, stopped or broken)",
                      flush=True)
            else:
                self.progress.trial(self.study, trial)


def run_on_cluster(run: Prepared, client: Client, address: str) -> int:
    """Run the search's worker loops as tasks on the Dask cluster of ``client``."""
    settings = run.settings
    try:
        threads = wait_for_workers(client, address, WORKERS_WAIT_S)
    except UsageError as exc:
        return fail(PROG, str(exc), exc=exc)
    slots = sum(threads.values())
    left = settings.n_trials - count_finished(run.study)
    loops = min(slots if settings.workers == AUTO else int(settings.workers), left)
    if heartbeat_of(run.storage) is None:
        print(f"{PROG}: warning: a {run.location.kind} storage keeps no heartbeats, so a trial "
              "whose Dask worker is lost stays RUNNING and is not run again; SQLite and "
              "PostgreSQL keep them.", file=sys.stderr, flush=True)
    print(f"Cluster {address}: {len(threads)} Dask worker(s), {slots} thread(s); {loops} "
          "worker loop(s), one torch thread each.", flush=True)
    task_settings = portable(settings, run.location)

    def said(end: TaskEnd) -> None:
        if end.error is not None:
            print(f"{PROG}: warning: worker loop w{end.index}: {end.error}", file=sys.stderr,
                  flush=True)
        elif end.value.status != EXIT_OK and end.value.message != "stopped":
            print(f"{PROG}: warning: worker loop w{end.index} on {end.value.where}: "
                  f"{end.value.message}", file=sys.stderr, flush=True)

    args = [(replace(task_settings, worker=k),) for k in range(1, loops + 1)]
    outcome = run_tasks(client, search_task, args, name=settings.study_name,
                        on_poll=_Watcher(run.study, settings.n_trials, client, threads),
                        on_end=said, spread=threads)
    if outcome.interrupted is not None:
        interrupted(run.study, settings.n_trials, run.location.shown, loops,
                    stop_reason(outcome.interrupted))
        return exit_status(outcome.interrupted)
    finished = count_finished(run.study)
    if finished < settings.n_trials:
        return fail(PROG, f"the cluster's worker loops stopped with {finished} of "
                    f"{settings.n_trials} trials finished (the warnings above say why). Run "
                    "the same command again to finish the rest.", status=EXIT_FAILED)
    return EXIT_OK
