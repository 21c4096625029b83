"""python -m tuning.confirm: train a study's best configurations again, from fresh seeds.

Trains each of the ``--top`` best configurations ``--seeds`` more times, from seeds the search
never used, on the search's own split and epochs, and records every run on the study at once
(so an interrupted confirmation resumes where it stopped). Export and train then take the
configuration with the highest mean last-epoch validation accuracy (``tuning.results.selection``
says why) instead of the single luckiest trial.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import optuna
import torch

from model.data import DEFAULT_DATA_DIR, DataError, load_searched_split
from model.loops import flush_denormals
from tuning.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    HelpFormatter,
    Parser,
    add_data_and_device_arguments,
    add_study_arguments,
    claim_cores,
    fail,
    quiet_optuna,
    stoppable,
)
from tuning.cli.suggest import next_command
from tuning.results import confirmation
from tuning.results.selection import Choice, Run, confirmed, record_run
from tuning.space.hyperparameters import describe
from tuning.study.errors import UsageError
from tuning.study.lifecycle import DEFAULT_STUDY_NAME, load_study
from tuning.study.protocol import StudyRecord
from tuning.study.storage import Location
from tuning.training.device import resolve_device
from tuning.training.precision import DEFAULT_PRECISION, PRECISION_CHOICES, choose_precision
from tuning.workers.cluster import require_dask
from tuning.workers.cores import AUTO, check_workers, resolve_workers, workers_arg
from tuning.workers.signals import deferred, exit_status, stop_reason

PROG = "python -m tuning.confirm"


@dataclass(frozen=True)
class ConfirmSettings:
    """Everything a confirmation needs; the defaults are the CLI's defaults."""

    study_name: str = DEFAULT_STUDY_NAME
    storage: str | None = field(default=None, repr=False)  # None: Location.of's default
    top: int = 5  # how many of the best completed trials are trained again
    seeds: int = 3  # fresh seeds per configuration
    # Runs side by side, each in a process with its share of the cores (CPU only). auto: one
    # per core with one thread, as the search (tuning.workers.cores.resolve_workers).
    workers: int | str = AUTO
    data_dir: Path = DEFAULT_DATA_DIR
    device: str = "auto"
    precision: str = DEFAULT_PRECISION  # auto: bf16 where native; runs are compared, not shipped
    stack_seeds: str = "auto"  # a configuration's seeds as one stacked model (auto: on CUDA)
    cluster: str | None = None  # a Dask scheduler's address: the runs as tasks on its cluster

    def check(self) -> None:
        """Raise UsageError naming the first flag whose value cannot work."""
        for flag, value in (("--top", self.top), ("--seeds", self.seeds)):
            if value < 1:
                raise UsageError(f"{flag} must be at least 1, but got {value}.")
        if self.workers != AUTO:
            if not isinstance(self.workers, int) or self.workers < 1:
                raise UsageError(f"--workers must be at least 1 or auto, but got "
                                 f"{self.workers!r}.")
            check_workers(self.workers)
        if self.cluster is not None:
            require_dask()


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
    parser.add_argument("--workers", type=workers_arg, default=d.workers, metavar="N|auto",
                        help="runs side by side, each in a process with its share of the CPU "
                        "cores; auto: one per core with one torch thread each, as the search "
                        "(docs/decisions.md), one process on a GPU")
    add_data_and_device_arguments(parser, d.data_dir, d.device)
    parser.add_argument("--precision", choices=PRECISION_CHOICES, default=d.precision,
                        help="arithmetic of the forward pass, as in the search: auto is bf16 "
                        "where the CPU or GPU computes bf16 natively, fp32 elsewhere")
    parser.add_argument("--stack-seeds", choices=confirmation.STACK_CHOICES,
                        default=d.stack_seeds,
                        help="train a configuration's seeds together as one stacked model "
                        "(same runs, batched products); auto: on CUDA, where it pays")
    parser.add_argument("--cluster", default=d.cluster, metavar="ADDRESS",
                        help="train the runs as tasks on the Dask cluster whose scheduler is at "
                        "ADDRESS (tcp://HOST:8786), one torch thread each, instead of "
                        "--workers on this machine; a run whose Dask worker dies is run again; "
                        "needs pip install -e '.[cluster]' (docs/scale-out.md)")
    return parser


@stoppable(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    """Confirm a study's best configurations; return the process exit status."""
    settings = ConfirmSettings(**vars(build_parser().parse_args(argv)))
    quiet_optuna()
    flush_denormals()  # as the search does: before torch starts its thread pool
    own_threads = torch.get_num_threads()
    if settings.workers != 1:
        # Workers may be forked from this process: one torch thread until then (GNU OpenMP
        # cannot run a thread pool in the child of a process that had one).
        torch.set_num_threads(1)
    try:
        settings.check()
        device = resolve_device(settings.device)
        if settings.workers not in (1, AUTO) and device.type != "cpu":
            raise UsageError(f"--workers {settings.workers} is for the CPU; on {device} "
                             "use --workers 1.")
        location = Location.of(settings.storage, settings.study_name)
        study = load_study(location, settings.study_name)
        record = StudyRecord.from_attrs(study.user_attrs, settings.study_name)
        planned = confirmation.plan(study, record, settings.top, settings.seeds)
        precision = choose_precision(settings.precision, device)
        stacked = confirmation.stack_seeds(settings.stack_seeds, device)
        source, data = load_searched_split(settings.data_dir, record.val_size,
                                           record.split_seed, record.train_size)
        layout = resolve_workers(1 if settings.cluster else settings.workers, device.type,
                                 len(confirmation.jobs(planned.tasks, stacked.value == "yes")))
    except (UsageError, DataError) as exc:
        return fail(PROG, str(exc), exc=exc)
    if layout.workers == 1:
        torch.set_num_threads(own_threads)  # one process: every core, as torch sets it
        layout = replace(layout, threads=own_threads)

    confirmation.save_plan(study, planned)
    tasks = planned.tasks
    print(f"Confirming the {len(planned.trials)} best trials of study {settings.study_name!r} "
          f"in {location.shown}: {settings.seeds} fresh seed(s) each, {record.epochs} epochs, "
          f"{len(tasks)} run(s) to go; device {device}, "
          f"{_where(settings.cluster) or layout.describe()}.", flush=True)
    print(f"Precision {precision.value} ({precision.reason}); seeds stacked: {stacked.value} "
          f"({stacked.reason}).", flush=True)
    by_number = {t.number: t for t in planned.trials}
    done = 0

    def keep(run: Run) -> None:
        nonlocal done
        with deferred():  # a stop lands before or after both: the count says what is recorded
            record_run(study, by_number[run.trial], run)
            done += 1
        _print_run(run, by_number[run.trial].params, done, len(tasks))

    def keep_all(runs: list[Run]) -> None:
        for run in runs:
            keep(run)

    def stopped(exc: BaseException) -> int:
        print(f"\n{stop_reason(exc)}: {done} of {len(tasks)} runs recorded; run the same "
              "command again to finish the rest.", flush=True)
        return exit_status(exc)

    if settings.cluster is not None:
        try:
            outcome = confirmation.run_on_cluster(
                settings.cluster, tasks, source.folder, record, precision.value,
                stacked.value == "yes", keep_all)
        except UsageError as exc:
            return fail(PROG, str(exc), exc=exc)
        if outcome.interrupted is not None:
            return stopped(outcome.interrupted)
        if outcome.failed:
            why = "; ".join(f"task {end.index}: {end.error}" for end in outcome.failed)
            return fail(PROG, f"{len(outcome.failed)} run(s) failed on the cluster ({why}); run "
                        "the same command again to retry them.", status=EXIT_FAILED)
        return _choose(study, settings)
    claim_cores(PROG, device.type, layout.workers * layout.threads)
    if layout.workers == 1:
        confirmation.use(data, device, precision.value)
    try:
        for run in confirmation.run_all(tasks, layout.workers, source.folder, record,
                                        precision.value, stacked.value == "yes",
                                        threads=layout.threads, data=data):
            keep(run)
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP
        return stopped(exc)
    except (DataError, OSError) as exc:
        return fail(PROG, str(exc), status=EXIT_FAILED, exc=exc)
    return _choose(study, settings)


def _where(cluster: str | None) -> str | None:
    return None if cluster is None else f"tasks on the Dask cluster at {cluster}"


def _choose(study: optuna.Study, settings: ConfirmSettings) -> int:
    """The confirmed choice, its table and the next command."""
    choice, why = confirmed(study)
    _print_table(choice)
    if choice is None:
        return fail(PROG, why, status=EXIT_FAILED)
    print(f"Chosen: trial {choice.trial.number} ({why}); the best trial by value is "
          f"{study.best_trial.number}.")
    print(f"Export it:  {next_command('export', settings.study_name, settings.storage)}")
    return EXIT_OK


def _print_table(choice: Choice | None) -> None:
    print(f"\n{'trial':>5}  {'configuration':<30} {'search value':>12}  "
          f"{'mean last-epoch val acc':>23}")
    for row in (choice.table or [] if choice else []):
        spread = (f" ± {row['stdev_last_val_accuracy']:.4f}"
                  if row["stdev_last_val_accuracy"] is not None else "")
        print(f"{row['trial']:>5}  {describe(row['params']):<30} "
              f"{row['search_value']:>12.4f}  {row['mean_last_val_accuracy']:>14.4f}{spread}")


def _print_run(run: Run, params: dict, count: int, total: int) -> None:
    print(f"[{count:>2}/{total}] trial {run.trial:>3} ({describe(params)}), seed "
          f"{run.seed:>10}: last-epoch val acc {run.last_val_accuracy:.4f} (best "
          f"{run.best_val_accuracy:.4f}), {run.seconds:.1f} s", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
