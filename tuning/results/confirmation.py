"""Train a study's best configurations again from fresh seeds: the plan and the runs.

``tuning.results.selection`` explains why (a trial's value is partly luck) and reads the result;
this module plans the runs (the ``top`` best distinct configurations x ``seeds`` seeds the search
never used, on the search's own split and epochs) and trains them, in this process or in a
pool of worker processes. The caller records each run as it ends (``selection.record_run``),
so an interrupted confirmation resumes where it stopped.
"""

from __future__ import annotations

import multiprocessing
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from model.data import TrainValSplit, load_searched_split
from model.kernels import HardwareChoice
from model.loops import EpochResult, flush_denormals, warm_up_optimizers
from tuning.results.selection import Run, candidates, recorded_runs
from tuning.space.hyperparameters import Hyperparameters
from tuning.study.errors import StudyError, UsageError
from tuning.study.protocol import CONFIRM_PLAN_ATTR, StudyRecord, configuration, derive_seed
from tuning.training.retrain import retrain_one, retrain_seeds
from tuning.workers.cluster import Outcome, TaskEnd, connect, run_tasks, stop_requested
from tuning.workers.cores import fork_is_safe
from tuning.workers.signals import Stopped


@dataclass(frozen=True)
class Task:
    """One fresh-seed run to make."""

    trial: int
    params: dict[str, Any]
    seed: int
    epochs: int


@dataclass(frozen=True)
class Plan:
    """The trials to confirm, the runs still missing, and the plan as the study records it."""

    trials: list[FrozenTrial]
    tasks: list[Task]
    record: dict[str, Any]  # stored as the study's confirm_plan attribute


def plan(study: optuna.Study, record: StudyRecord, top: int, seeds: int) -> Plan:
    """Plan the confirmation of ``study``: what to train, skipping runs already recorded.

    Raises:
        StudyError: the study has no completed trial.
    """
    chosen = candidates(study, top)
    if not chosen:
        raise StudyError(f"study {study.study_name!r} has no completed trial yet; run "
                         f"python -m tuning.search --study-name {study.study_name} first.")
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    tasks = []
    for trial in chosen:
        done = {r["seed"] for r in recorded_runs(study, trial.number)}
        for k in range(1, seeds + 1):
            seed = derive_seed(record.seed, trial.number, k)
            if seed not in done:
                tasks.append(Task(trial.number, configuration(trial), seed, record.epochs))
    return Plan(chosen, tasks, {"trials": [t.number for t in chosen], "seeds": seeds,
                                "study_seed": record.seed, "complete_trials": complete})


def save_plan(study: optuna.Study, planned: Plan) -> None:
    """Record the plan on the study: a choice is only made once all of it has run."""
    study.set_user_attr(CONFIRM_PLAN_ATTR, planned.record)


STACK_CHOICES = ("auto", "yes", "no")  # --stack-seeds


def stack_seeds(requested: str, device: torch.device) -> HardwareChoice:
    """Whether a configuration's seeds train together as one stacked model, and why.

    ``auto`` stacks them on CUDA, where one batched product in place of several small ones
    saves kernel launches. On the CPU it does not pay: ``python -m benchmarks.confirm`` on a
    2-core Zen 5 EPYC measured stacked seeds at 0.80x the time-per-run of one at a time in
    float32 (CPU batched products are MKL's, not the faster oneDNN kernel a single network
    uses) and 0.93x in bf16 (at small batches the optimizer's per-weight work, which
    stacking does not shrink, dominates), so CPU runs train one seed at a time.
    """
    if requested in ("yes", "no"):
        return HardwareChoice(requested, f"--stack-seeds {requested} was asked for")
    if requested != "auto":
        raise UsageError(f"--stack-seeds must be one of {', '.join(STACK_CHOICES)}, but got "
                         f"{requested!r}.")
    if device.type == "cuda":
        return HardwareChoice("yes", "auto: on a GPU one batched product replaces several "
                              "small ones")
    return HardwareChoice("no", f"auto: stacked seeds measured no faster on {device.type}")


def jobs(tasks: list[Task], stacked: bool) -> list[list[Task]]:
    """What one call trains: all of a configuration's missing seeds (stacked), or one run."""
    if not stacked:  # (retrain_seeds trains seeds one at a time where they cannot stack)
        return [[task] for task in tasks]
    groups: dict[int, list[Task]] = {}
    for task in tasks:
        groups.setdefault(task.trial, []).append(task)
    return list(groups.values())


# A worker process's data, device and precision (set by _start_worker, or by use()).
_WORKER: dict[str, Any] = {}


def use(data: TrainValSplit, device: torch.device, precision: str = "fp32") -> None:
    """Train this process's runs on ``data`` and ``device`` (``run_all`` with one worker)."""
    _WORKER.update(data=TrainValSplit(data.train.to(device), data.val.to(device), data.seed),
                   device=device, precision=precision)
    warm_up_optimizers()


def _start_worker(data_dir: Path, val_size: int, split_seed: int, precision: str,
                  threads: int) -> None:
    """A fresh worker process (spawned): its threads, then the split read from disk."""
    _start_forked(threads)
    use(load_searched_split(data_dir, val_size, split_seed, download=False)[1],
        torch.device("cpu"), precision)


def _start_forked(threads: int) -> None:
    """A worker process (forked: it has this process's data already): its threads."""
    # Ctrl-C is the parent's to handle: it keeps what is recorded and stops the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The pool ends its workers with SIGTERM. A fork inherits the tool's handler, which would
    # raise inside the pool's own code (holding its queue's lock) instead of ending the worker.
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    flush_denormals()
    torch.set_num_threads(threads)  # the machine's cores are shared out between the workers


def _run(job: list[Task], on_epoch: Callable[[EpochResult], None] | None = None) -> list[Run]:
    data, device, precision = _WORKER["data"], _WORKER["device"], _WORKER["precision"]
    params = Hyperparameters.from_params(job[0].params)
    start = time.perf_counter()
    # A run that diverges scores what its network still scores (its history so far).
    if len(job) == 1:
        runs = [retrain_one(params, data.train, data.val, job[0].epochs, job[0].seed, device,
                            precision, on_epoch)]
    else:
        runs = retrain_seeds(params, data.train, data.val, job[0].epochs,
                             [t.seed for t in job], device, precision)
    histories = [run.history for run in runs]
    seconds = (time.perf_counter() - start) / len(job)  # each run's share of the wall time
    return [Run(task.trial, task.seed, history["val_accuracy"][-1],
                max(history["val_accuracy"]), seconds, torch.get_num_threads(), precision,
                len(job))
            for task, history in zip(job, histories, strict=True)]


def run_all(tasks: list[Task], workers: int, data_dir: Path, record: StudyRecord,
            precision: str = "fp32", stacked: bool = False, *, threads: int = 1,
            data: TrainValSplit | None = None) -> Iterator[Run]:
    """Run ``tasks`` here (data set by ``use``) or in ``workers`` processes, as they end.

    With ``stacked``, a configuration's seeds train together as one model (``retrain_seeds``)
    and end together. Each worker process trains with ``threads`` torch threads (the cores
    shared out between them). Workers are forked with ``data`` (loaded once, here) where a fork
    is safe (``fork_is_safe``); otherwise each is a fresh process that reads the split from
    ``data_dir`` itself.
    """
    todo = jobs(tasks, stacked)
    if workers == 1:
        for job in todo:
            yield from _run(job)
        return
    if data is not None and fork_is_safe(threads):
        use(data, torch.device("cpu"), precision)  # the workers inherit it
        pool = multiprocessing.get_context("fork").Pool(workers, _start_forked, (threads,))
    else:
        init = (data_dir, record.val_size, record.split_seed, precision, threads)
        pool = multiprocessing.get_context("spawn").Pool(workers, _start_worker, init)
    try:
        for runs in pool.imap_unordered(_run, todo):
            yield from runs
        pool.close()
    finally:
        pool.terminate()
        pool.join()


def cluster_job(job: list[Task], data_dir: Path, val_size: int, split_seed: int,
                precision: str, stop: Any) -> list[Run]:
    """A Dask task (``--cluster``): ``job`` on this Dask worker, one torch thread, the split
    read once per worker process; nothing if the command asked its tasks to stop."""
    flush_denormals()
    torch.set_num_threads(1)
    key = (str(data_dir), val_size, split_seed, precision)
    if _WORKER.get("key") != key:
        use(load_searched_split(data_dir, val_size, split_seed, download=False)[1],
            torch.device("cpu"), precision)
        _WORKER["key"] = key

    def check(result: EpochResult) -> None:
        if stop_requested(stop):
            raise Stopped(signal.SIGTERM)

    try:
        return _run(job, check)
    except KeyboardInterrupt:  # stopped: the command records nothing of it
        return []


def run_on_cluster(address: str, tasks: list[Task], data_dir: Path, record: StudyRecord,
                   precision: str, stacked: bool, on_runs: Callable[[list[Run]], None]
                   ) -> Outcome:
    """Run ``tasks`` as Dask tasks on the cluster at ``address``; ``on_runs`` gets each job's
    runs as it ends (the caller records them). Raises UsageError where no cluster answers."""
    client = connect(address)
    folder = data_dir.resolve() if data_dir.exists() else data_dir

    def ended(end: TaskEnd) -> None:
        if end.error is None and end.value:
            on_runs(end.value)

    try:
        args = [(job, folder, record.val_size, record.split_seed, precision)
                for job in jobs(tasks, stacked)]
        return run_tasks(client, cluster_job, args, name="confirm", on_end=ended)
    finally:
        client.close()
