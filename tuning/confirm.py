"""python -m tuning.confirm: train a study's best configurations again, from fresh seeds.

A trial's value is one seed's best validation accuracy over its epochs, so the best of sixty
trials is partly luck: the five best values of a 60-trial study lie within 0.1-0.3 points of
each other, no more than the 0.3-point standard error of 10,000 validation images, and a maximum
over ten noisy epochs favours noisy configurations. This module trains each of the ``top`` best
configurations ``seeds`` more times, from seeds the search never used, on the search's own split
and epochs, and records every run on the study. The configuration with the highest mean last-
epoch validation accuracy over those fresh runs is then the study's choice for ``python -m
tuning.export`` and ``python -m tuning.train``: the last epoch, because that is the epoch the
default retrain (train+val) ships, and fresh seeds only, so no run that won the search by luck
is counted.

Every finished run is stored at once, as a study user attribute per confirmed trial
(``confirm_trial_<number>``), so an interrupted confirmation resumes where it stopped.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shlex
import signal
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from model.data import (
    DEFAULT_DATA_DIR,
    DataError,
    TrainValSplit,
    load_searched_split,
    load_split,
    locate,
    split_train_val,
)
from model.loops import flush_denormals, warm_up_optimizers
from tuning.cli import (
    HelpFormatter,
    Parser,
    add_data_and_device_arguments,
    add_study_arguments,
    fail,
    quiet_optuna,
    resolve_device,
)
from tuning.objective import Diverged, retrain
from tuning.space import Hyperparameters
from tuning.study import DEFAULT_STUDY_NAME, StudyError, default_storage, load_study

PROG = "python -m tuning.confirm"
PLAN_ATTR = "confirm_plan"  # study user attribute: which trials, how many seeds, when
RUNS_PREFIX = "confirm_trial_"  # + trial number: that trial's fresh-seed runs
INTERRUPTED = 130


@dataclass(frozen=True)
class ConfirmSettings:
    """Everything a confirmation needs; the defaults are the CLI's defaults."""

    study_name: str = DEFAULT_STUDY_NAME
    storage: str | None = None  # None: sqlite:///studies/<study-name>.db
    top: int = 5  # how many of the best completed trials are trained again
    seeds: int = 3  # fresh seeds per configuration
    workers: int = 1  # processes, one torch thread each when more than one (CPU only)
    data_dir: Path = DEFAULT_DATA_DIR
    device: str = "auto"

    def check(self) -> None:
        """Raise ValueError naming the first flag whose value cannot work."""
        for flag, value in (("--top", self.top), ("--seeds", self.seeds),
                            ("--workers", self.workers)):
            if value < 1:
                raise ValueError(f"{flag} must be at least 1, but got {value}.")


@dataclass(frozen=True)
class Run:
    """One fresh-seed run of one trial's configuration."""

    trial: int
    seed: int
    last_val_accuracy: float
    best_val_accuracy: float
    seconds: float
    threads: int


@dataclass(frozen=True)
class Choice:
    """The confirmed configuration and what chose it."""

    trial: FrozenTrial
    mean_last_val_accuracy: float
    seeds: int
    table: list[dict[str, Any]]  # every confirmed trial, best mean first


def fresh_seed(study_seed: int, trial_number: int, k: int) -> int:
    """Seed ``k`` (from 1) for trial ``trial_number``; never the trial's own seed.

    The trial's own seed comes from ``SeedSequence([study_seed, trial_number])``; a third
    entry gives another stream for every ``k``.
    """
    return int(np.random.SeedSequence([study_seed, trial_number, k]).generate_state(1)[0])


def candidates(study: optuna.Study, top: int) -> list[FrozenTrial]:
    """The ``top`` best completed trials, one per distinct configuration."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    chosen: list[FrozenTrial] = []
    for trial in sorted(trials, key=lambda t: (-t.value, t.number)):
        if all(trial.params != other.params for other in chosen):
            chosen.append(trial)
        if len(chosen) == top:
            break
    return chosen


def recorded_runs(study: optuna.Study, trial_number: int) -> list[dict[str, Any]]:
    """The fresh-seed runs already recorded for ``trial_number`` (one dict per run)."""
    return list(study.user_attrs.get(f"{RUNS_PREFIX}{trial_number}", {}).get("runs", []))


def record_run(study: optuna.Study, trial: FrozenTrial, run: Run) -> None:
    """Append ``run`` to its trial's record on the study (read, extend, write back)."""
    runs = [r for r in recorded_runs(study, trial.number) if r["seed"] != run.seed]
    runs.append({"seed": run.seed, "last_val_accuracy": run.last_val_accuracy,
                 "best_val_accuracy": run.best_val_accuracy, "seconds": round(run.seconds, 3),
                 "torch_threads": run.threads})
    last = [r["last_val_accuracy"] for r in runs]
    study.set_user_attr(f"{RUNS_PREFIX}{trial.number}", {
        "params": trial.params,
        "search_value": trial.value,
        "mean_last_val_accuracy": statistics.fmean(last),
        "runs": runs,
    })


def choice(study: optuna.Study) -> tuple[Choice | None, str]:
    """The confirmed choice of ``study``, or None, and a line saying why.

    None where no confirmation was run, where it is unfinished (a planned trial lacks runs),
    or where the study has completed trials that the confirmation did not see.
    """
    plan = study.user_attrs.get(PLAN_ATTR)
    if not plan:
        return None, "no confirmation: the best trial by value"
    seeds, planned = int(plan["seeds"]), [int(n) for n in plan["trials"]]
    trials = {t.number: t for t in study.get_trials(deepcopy=False,
                                                    states=(TrialState.COMPLETE,))}
    rerun = f"run python -m tuning.confirm --study-name {study.study_name} again"
    if len(trials) != plan["complete_trials"]:
        return None, (f"the confirmation saw {plan['complete_trials']} completed trials, the "
                      f"study now has {len(trials)}: the best trial by value ({rerun})")
    table = []
    for number in planned:
        runs = [r for r in recorded_runs(study, number)
                if r["seed"] in {fresh_seed(plan["study_seed"], number, k)
                                 for k in range(1, seeds + 1)}]
        if len(runs) < seeds:
            return None, (f"the confirmation is unfinished (trial {number}: {len(runs)} of "
                          f"{seeds} runs): the best trial by value ({rerun})")
        last = [r["last_val_accuracy"] for r in runs]
        table.append({"trial": number, "params": trials[number].params,
                      "search_value": trials[number].value,
                      "mean_last_val_accuracy": statistics.fmean(last),
                      "stdev_last_val_accuracy": statistics.stdev(last) if seeds > 1 else None,
                      "runs": len(runs)})
    table.sort(key=lambda row: (-row["mean_last_val_accuracy"], row["trial"]))
    best = table[0]
    return (Choice(trials[best["trial"]], best["mean_last_val_accuracy"], seeds, table),
            f"confirmed: the highest mean last-epoch validation accuracy over {seeds} fresh "
            f"seeds among the {len(table)} best trials")


# A worker process's data and device (set once by _start_worker, or by main for one process).
_WORKER: dict[str, Any] = {}


def _use(data: TrainValSplit, device: torch.device) -> None:
    _WORKER.update(data=TrainValSplit(data.train.to(device), data.val.to(device), data.seed),
                   device=device)
    warm_up_optimizers()


def _start_worker(data_dir: Path, val_size: int, split_seed: int) -> None:
    # Ctrl-C is the parent's to handle: it keeps what is recorded and stops the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    flush_denormals()
    torch.set_num_threads(1)  # the machine's threads are shared out between the workers
    _use(split_train_val(load_split(locate(data_dir, download=False), "train"), val_size,
                         split_seed), torch.device("cpu"))


def _run(task: tuple[int, dict[str, Any], int, int]) -> Run:
    number, params, seed, epochs = task
    data, start = _WORKER["data"], time.perf_counter()
    try:
        history = retrain(Hyperparameters(**params), data.train, data.val, epochs, seed,
                          _WORKER["device"]).history
    except Diverged as exc:  # a run that diverges scores what its network still scores
        history = exc.history
    accuracies = history["val_accuracy"]
    return Run(number, seed, accuracies[-1], max(accuracies), time.perf_counter() - start,
               torch.get_num_threads())


def run_all(tasks: list[tuple[int, dict[str, Any], int, int]], workers: int,
            init: tuple[Any, ...]) -> Iterator[Run]:
    """Run ``tasks`` here (data set by ``_use``) or in ``workers`` processes, as they end."""
    if workers == 1:
        yield from map(_run, tasks)
        return
    pool = multiprocessing.get_context("spawn").Pool(workers, _start_worker, init)
    try:
        yield from pool.imap_unordered(_run, tasks)
        pool.close()
    finally:
        pool.terminate()
        pool.join()


def build_parser() -> argparse.ArgumentParser:
    d = ConfirmSettings()
    parser = Parser(
        prog=PROG,
        description="Train the study's best configurations again from fresh seeds, on the "
        "search's split and epochs, and record each run's validation accuracy on the study. "
        "Export and train then take the configuration with the best mean last-epoch "
        "validation accuracy instead of the single luckiest trial. Rerunning resumes.",
        formatter_class=HelpFormatter,
    )
    add_study_arguments(parser, d.study_name)
    parser.add_argument("--top", type=int, default=d.top,
                        help="how many of the best completed trials (distinct configurations)")
    parser.add_argument("--seeds", type=int, default=d.seeds,
                        help="fresh seeds per configuration")
    parser.add_argument("--workers", type=int, default=d.workers,
                        help="processes on this machine, one torch thread each if more than 1")
    add_data_and_device_arguments(parser, d.data_dir, d.device)
    return parser


def _plan(study: optuna.Study, settings: ConfirmSettings) -> tuple[list[FrozenTrial], dict]:
    """The trials to confirm and the plan to record, checking the study can be confirmed."""
    chosen = candidates(study, settings.top)
    if not chosen:
        raise StudyError(f"study {study.study_name!r} has no completed trial yet; run "
                         f"python -m tuning.search --study-name {study.study_name} first.")
    attrs = study.user_attrs
    missing = [key for key in ("epochs", "val_size", "split_seed") if key not in attrs]
    if missing:
        raise StudyError(f"study {study.study_name!r} lacks {', '.join(missing)}: it was not "
                         "made by python -m tuning.search, so its split is unknown.")
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    plan = {"trials": [t.number for t in chosen], "seeds": settings.seeds,
            "study_seed": int(attrs.get("seed") or 0), "complete_trials": complete}
    return chosen, plan


def main(argv: Sequence[str] | None = None) -> int:
    """Confirm a study's best configurations; return the process exit status."""
    settings = ConfirmSettings(**vars(build_parser().parse_args(argv)))
    quiet_optuna()
    flush_denormals()  # as the search does: before torch starts its thread pool
    url = settings.storage or default_storage(settings.study_name)
    try:
        settings.check()
        device = resolve_device(settings.device)
        if settings.workers > 1 and device.type != "cpu":
            raise ValueError(f"--workers {settings.workers} is for the CPU; on {device} "
                             "use --workers 1.")
        study = load_study(url, settings.study_name)
        chosen, plan = _plan(study, settings)
        attrs = study.user_attrs
        source, data = load_searched_split(settings.data_dir, int(attrs["val_size"]),
                                           int(attrs["split_seed"]), attrs.get("train_size"))
    except (ValueError, DataError, StudyError) as exc:
        return fail(PROG, str(exc))

    epochs = int(attrs["epochs"])
    tasks = []
    for trial in chosen:
        done = {r["seed"] for r in recorded_runs(study, trial.number)}
        for k in range(1, settings.seeds + 1):
            seed = fresh_seed(plan["study_seed"], trial.number, k)
            if seed not in done:
                tasks.append((trial.number, trial.params, seed, epochs))
    study.set_user_attr(PLAN_ATTR, plan)
    print(f"Confirming the {len(chosen)} best trials of study {settings.study_name!r} in "
          f"{url}: {settings.seeds} fresh seed(s) each, {epochs} epochs, "
          f"{len(tasks)} run(s) to go; {settings.workers} process(es), device {device}.",
          flush=True)
    by_number = {t.number: t for t in chosen}
    init = (source.folder, int(attrs["val_size"]), int(attrs["split_seed"]))
    if settings.workers == 1:
        _use(data, device)
    del data  # each worker process loads its own copy
    done_count = 0
    try:
        for run in run_all(tasks, settings.workers, init):
            record_run(study, by_number[run.trial], run)
            done_count += 1
            _print_run(run, by_number[run.trial], done_count, len(tasks))
    except KeyboardInterrupt:
        print(f"\nInterrupted: {done_count} of {len(tasks)} runs recorded; run the same "
              "command again to finish the rest.", flush=True)
        return INTERRUPTED
    except (DataError, OSError) as exc:
        return fail(PROG, str(exc), status=1)

    confirmed, why = choice(study)
    print(f"\n{'trial':>5}  {'configuration':<30} {'search value':>12}  "
          f"{'mean last-epoch val acc':>23}")
    for row in (confirmed.table if confirmed else []):
        spread = (f" ± {row['stdev_last_val_accuracy']:.4f}"
                  if row["stdev_last_val_accuracy"] is not None else "")
        print(f"{row['trial']:>5}  {_params_text(row['params']):<30} "
              f"{row['search_value']:>12.4f}  {row['mean_last_val_accuracy']:>14.4f}{spread}")
    if confirmed is None:
        return fail(PROG, why, status=1)
    best_by_value = study.best_trial.number
    print(f"Chosen: trial {confirmed.trial.number} ({why}); the best trial by value is "
          f"{best_by_value}.")
    storage_flag = f" --storage {shlex.quote(settings.storage)}" if settings.storage else ""
    print(f"Export it:  python -m tuning.export --study-name "
          f"{shlex.quote(settings.study_name)}{storage_flag}")
    return 0


def _params_text(params: dict[str, Any]) -> str:
    return f"{params['optimizer']} lr {params['lr']:.3g} batch {params['batch_size']}"


def _print_run(run: Run, trial: FrozenTrial, count: int, total: int) -> None:
    print(f"[{count:>2}/{total}] trial {trial.number:>3} ({_params_text(trial.params)}), seed "
          f"{run.seed:>10}: last-epoch val acc {run.last_val_accuracy:.4f} (best "
          f"{run.best_val_accuracy:.4f}), {run.seconds:.1f} s", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
