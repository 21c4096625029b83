"""python -m tuning.search: run or resume an Optuna study of the tutorial network."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from model.data import DEFAULT_DATA_DIR, DataError, load_split, locate, split_train_val
from model.loops import PRECISIONS, flush_denormals
from tuning.cli import (
    HelpFormatter,
    Parser,
    add_data_and_device_arguments,
    add_study_arguments,
    fail,
    quiet_optuna,
    resolve_device,
)
from tuning.objective import DIVERGED, EpochReport, Objective
from tuning.study import (
    DEFAULT_STUDY_NAME,
    HEARTBEAT_S,
    PRUNERS,
    SAMPLERS,
    StudyError,
    check_storage,
    check_writable,
    count_finished,
    count_states,
    create_or_resume,
    default_storage,
    heartbeat_of,
    is_baseline,
    open_storage,
)
from tuning.workers import WORKER_FLAG, WorkerExit, run_trials, supervise, threads_per_worker

PROG = "python -m tuning.search"
EXIT_INTERRUPTED = 130  # the shell's status for a process ended by Ctrl-C (128 + SIGINT)


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
    precision: str = "fp32"  # see README "Performance": bf16 is slower on CPUs without bf16
    workers: int = 1  # processes on this machine sharing the study; they split the CPU threads
    heartbeat: int = HEARTBEAT_S  # seconds between a running trial's heartbeats (databases)
    worker: int = 0  # set by --workers in each worker it starts (1..N); 0: not a worker

    @property
    def storage_url(self) -> str:
        return self.storage or default_storage(self.study_name)

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
        "faster only where the CPU or GPU has native bf16, see README 'Performance')",
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


def _params_text(params: dict) -> str:
    return (
        f"lr={params.get('lr', float('nan')):.2e} batch={params.get('batch_size', '?'):>3} "
        f"{params.get('optimizer', '?'):<7}"
    )


class Progress:
    """Prints a line per finished trial; on a terminal, also a live line per epoch."""

    def __init__(self, target: int, live: bool) -> None:
        self.target = target
        self.live = live

    def epoch(self, report: EpochReport) -> None:
        if self.live:
            print(
                f"\r  trial {report.trial} epoch {report.epoch}/{report.epochs}: "
                f"val acc {report.val_accuracy:.4f}, {report.seconds:.1f} s/epoch   ",
                end="", file=sys.stderr, flush=True,
            )

    def trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if self.live:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
        finished = count_finished(study)
        seconds = trial.duration.total_seconds() if trial.duration else 0.0
        state = trial.state.name
        if trial.state == TrialState.PRUNED:
            diverged = trial.user_attrs.get("pruned_reason", "").startswith(DIVERGED)
            state += " nan" if diverged else f" @{trial.last_step}"
        value = "  -   " if trial.value is None else f"{trial.value:.4f}"
        try:
            best = f"{study.best_value:.4f}"
        except ValueError:  # no completed trial yet
            best = "  -   "
        print(
            f"[{finished:>3}/{self.target}] trial {trial.number:>3}  {_params_text(trial.params)} "
            f"{state:<11} val acc {value}  best {best}  {seconds:6.1f} s",
            flush=True,
        )


def _summary(study: optuna.Study, storage_url: str, study_name: str) -> str:
    counts = count_states(study)
    lines = [
        f"Trials: {counts['complete']} complete, {counts['pruned']} pruned, "
        f"{counts['fail']} failed."
    ]
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if completed:
        best = study.best_trial
        lines.append(f"Best trial {best.number}: validation accuracy {best.value:.4f}")
        lines += [f"  {key}: {value}" for key, value in best.params.items()]
        baseline = [t for t in completed if is_baseline(t)]
        if baseline:
            lines.append(
                f"Tutorial configuration (trial {baseline[0].number}): "
                f"validation accuracy {baseline[0].value:.4f}"
            )
    quoted = shlex.quote(storage_url)
    lines += [
        f"Browse it:  optuna-dashboard {quoted}",
        f"Confirm it: python -m tuning.confirm --study-name {shlex.quote(study_name)} "
        f"--storage {quoted}   (the best configurations again, from fresh seeds)",
        f"Export it:  python -m tuning.export --study-name {shlex.quote(study_name)} "
        f"--storage {quoted}",
    ]
    return "\n".join(lines)


def _interrupted(study: optuna.Study, settings: SearchSettings) -> int:
    print(
        f"\nInterrupted. {count_finished(study)} of {settings.n_trials} trials are "
        f"finished and saved in {settings.storage_url}; the interrupted "
        f"{'ones are' if settings.workers > 1 else 'one is'} marked failed. Run the same "
        "command again to finish the rest.",
        file=sys.stderr,
    )
    return EXIT_INTERRUPTED


def _run_workers(settings: SearchSettings, argv: Sequence[str] | None, study: optuna.Study) -> int:
    """Run --workers copies of this command on the study, wait for them, say how it ended."""
    command = [sys.executable, "-m", "tuning.search", *(sys.argv[1:] if argv is None else argv)]

    def warn(worker: WorkerExit) -> None:
        print(f"{PROG}: warning: {worker.describe()}.", file=sys.stderr, flush=True)

    run = supervise(command, settings.workers, on_exit=warn)
    if run.interrupted:
        return _interrupted(study, settings)
    finished = count_finished(study)
    if finished < settings.n_trials:
        failed = "; ".join(w.describe() for w in run.failed) or "no worker failed"
        return fail(
            PROG,
            f"the workers stopped with {finished} of {settings.n_trials} trials finished "
            f"({failed}); their output above says why. Run the same command again to finish "
            "the rest.",
            status=1,
        )
    print(_summary(study, settings.storage_url, settings.study_name))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the search; return the process exit status."""
    settings = parse_settings(argv)
    quiet_optuna()  # our own lines report each trial
    flush_denormals()  # before torch starts its thread pool, which inherits it
    if settings.worker:  # before torch starts its thread pool
        torch.set_num_threads(threads_per_worker(settings.workers))
    try:
        settings.check()
        device = resolve_device(settings.device)
        check_storage(settings.storage_url)
        check_writable(settings.storage_url)  # a read-only or full disk fails before training
        # Data first: a bad data folder must fail before any study file is created.
        source = locate(settings.data_dir)
        data = split_train_val(load_split(source, "train"), settings.val_size, settings.split_seed)
        storage = open_storage(settings.storage_url, heartbeat=settings.heartbeat,
                               write_ahead_log=True)
        study, resumed = create_or_resume(
            storage, settings.study_name, sampler_name=settings.sampler,
            pruner_name=settings.pruner, seed=settings.seed,
            attrs={
                "epochs": settings.epochs, "val_size": settings.val_size,
                "train_size": len(data.train), "split_seed": settings.split_seed,
                "seed": settings.seed,
            },
            worker=settings.worker,
        )
    except (ValueError, DataError, StudyError) as exc:
        return fail(PROG, str(exc))

    finished = count_finished(study)
    remaining = settings.n_trials - finished
    threads = f"torch threads {torch.get_num_threads()}"
    if settings.workers > 1 and not settings.worker:
        per_worker = threads_per_worker(settings.workers)
        threads = f"{settings.workers} workers x {per_worker} torch threads"
    if settings.worker:
        print(f"worker {settings.worker} of {settings.workers}: pid {os.getpid()}, {threads}.",
              flush=True)
    else:
        print(
            f"Study {settings.study_name!r} in {settings.storage_url} "
            f"({'resumed' if resumed else 'new'}): {finished} of {settings.n_trials} trials "
            "finished."
        )
        print(
            f"Data: {len(data.train)} train / {len(data.val)} validation images from "
            f"{source.folder} ({source.how}); device {device}, {threads}, "
            f"precision {settings.precision}; "
            f"{settings.epochs} epochs per trial, sampler "
            f"{settings.sampler}, pruner {settings.pruner}, seed {settings.seed}.",
            flush=True,
        )
    if remaining > 0 and settings.workers > 1 and not settings.worker:
        del data  # each worker loads its own copy
        return _run_workers(settings, argv, study)
    if remaining > 0:
        progress = Progress(settings.n_trials, live=sys.stderr.isatty())
        objective = Objective(data, settings.epochs, settings.seed, device, progress.epoch,
                              precision=settings.precision)
        try:
            run_trials(
                study, objective, settings.n_trials, storage_url=settings.storage_url,
                heartbeat=heartbeat_of(storage), timeout=settings.timeout,
                callbacks=[progress.trial],
            )
        except KeyboardInterrupt:
            if settings.worker:
                return EXIT_INTERRUPTED  # the process that started it reports
            return _interrupted(study, settings)
        except Exception as exc:  # a trial failed for a reason other than divergence
            return fail(PROG, f"a trial failed and the search stopped: {exc!r}", status=1)
    elif not settings.worker:
        print("The study already reached its target; raise --n-trials to run more.")
    if settings.worker:
        return 0  # the process that started it prints the summary
    print(_summary(study, settings.storage_url, settings.study_name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
