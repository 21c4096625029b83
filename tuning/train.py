"""python -m tuning.train: retrain the chosen configuration, score it once on the test split.

The retrain starts from a fresh network seeded like the search's trial, trains on the search's
training and validation images together (the default; ``--train-on train``: on the training
images alone, which replays the trial) and only then reads the 10,000 test images, once. It
writes the weights as a ``state_dict`` and the test metrics as JSON, and records the test
accuracy on the study for the dashboard. docs/decisions.md says why train+val is the default.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from model.data import DataError
from model.loops import EpochResult, flush_denormals, warm_up_optimizers
from tuning.cli.artifact_output import artifacts_line
from tuning.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    HelpFormatter,
    Parser,
    add_data_and_device_arguments,
    claim_cores,
    fail,
    quiet_optuna,
    stoppable,
)
from tuning.cli.suggest import next_command
from tuning.results.files import LOAD_CALL, load_call
from tuning.results.retraining import Job, TrainSettings, finish, prepare
from tuning.space.hyperparameters import describe
from tuning.study.errors import UsageError
from tuning.study.lifecycle import DEFAULT_STUDY_NAME
from tuning.study.secrets import STORAGE_ENV
from tuning.study.storage import Location
from tuning.training.device import resolve_device
from tuning.training.retrain import TRAIN_ON, Diverged, Retrained, retrain
from tuning.workers.signals import deferred, exit_status, stop_reason

PROG = "python -m tuning.train"


def build_parser() -> argparse.ArgumentParser:
    d = TrainSettings()
    parser = Parser(
        prog=PROG,
        description=(
            "Retrain a study's best configuration from a fresh seeded start, then score it "
            "once on the 10,000 test images. Writes <study>-model.pt (a state_dict) and "
            "<study>-test.json (test accuracy and loss, per-class accuracy, confusion matrix, "
            "epochs, seconds, the configuration, the network), and records the test accuracy "
            "on the study for the dashboard. Load the model, of any space, with "
            + LOAD_CALL.replace("NETWORK", 'metrics["network"]')
            + ", metrics being <study>-test.json read as JSON (README.md shows it whole)."
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--config", type=Path, default=d.config,
                        help="a best configuration written by python -m tuning.export "
                        "(studies/<study>-best.json); without it the study's best trial is read")
    parser.add_argument("--study-name", default=d.study_name,
                        help=f"the study (default: the one --config names, else "
                        f"{DEFAULT_STUDY_NAME})")
    parser.add_argument("--storage", default=d.storage,
                        help=f"database URL of the study (default: ${STORAGE_ENV} if set, "
                        "else sqlite:///studies/<study-name>.db); with --config, the test result "
                        "is recorded there if given, else in the default file if it holds it")
    parser.add_argument("--epochs", type=int, default=d.epochs,
                        help="epochs to train (default: the study's epochs per trial)")
    parser.add_argument("--seed", type=int, default=d.seed,
                        help="seeds the weights and shuffling (default: the best trial's seed, "
                        "which replays that trial with --train-on train)")
    parser.add_argument("--threads", type=int, default=d.threads,
                        help="torch threads on the CPU (default: as many as the best trial "
                        "had, since CPU results depend on it; else torch's default)")
    parser.add_argument("--train-on", choices=TRAIN_ON, default=d.train_on,
                        help="train+val: the search's training and validation images, last "
                        "epoch's weights (why this is the default: docs/decisions.md); "
                        "train: the training images alone, best validation epoch's weights, "
                        "which replays the search's trial")
    parser.add_argument("--out", type=Path, default=d.out,
                        help="folder for <study>-model.pt and <study>-test.json")
    parser.add_argument("--artifact-dir", type=Path, default=d.artifact_dir,
                        help="Optuna artifact store for the weights, metrics and confusion "
                        "matrix, uploaded to the study (default: beside the study, "
                        "studies/<study-name>-artifacts for the default storage)")
    parser.add_argument("--prefix", default=d.prefix, help="begin the file names with this "
                        "instead of the study's name (for a name that cannot name a file)")
    add_data_and_device_arguments(parser, d.data_dir, d.device)
    return parser


def parse_settings(argv: Sequence[str] | None) -> TrainSettings:
    # Every flag's dest is a settings field: a flag cannot be parsed and then dropped.
    return TrainSettings(**vars(build_parser().parse_args(argv)))


def _print_epoch(result: EpochResult) -> None:
    text = f"epoch {result.epoch:>2}/{result.epochs}: train loss {result.train_loss:.4f}"
    if result.val_loss is not None:
        text += f", val loss {result.val_loss:.4f}, val acc {result.val_accuracy:.4f}"
    print(f"{text}, {result.seconds:.1f} s", flush=True)


@stoppable(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    """Retrain, test and save; return the process exit status."""
    settings = parse_settings(argv)
    quiet_optuna()
    flush_denormals()  # as the search does: before torch starts its thread pool
    try:
        device = resolve_device(settings.device)
        job = prepare(settings)
    except (UsageError, DataError) as exc:
        return fail(PROG, str(exc), exc=exc)
    threads = settings.threads or job.config.get("trial_threads")
    if threads is not None and device.type == "cpu":
        torch.set_num_threads(int(threads))
    config = job.config
    print(
        f"Retraining trial {config['trial_number']} of study {config['study_name']!r} "
        f"({describe(config['params'])}; validation accuracy "
        f"{config['validation_accuracy']:.4f} in the search): {job.epochs} epochs "
        f"on {len(job.train)} images ({settings.train_on}), seed {job.seed}, device {device}"
        + (f", {torch.get_num_threads()} torch thread(s)" if device.type == "cpu" else "")
        + ".",
        flush=True,
    )
    claim_cores(PROG, device.type, torch.get_num_threads())
    warm_up_optimizers()  # so the printed training seconds are the training's own
    written = False
    try:
        result = retrain(job.params, job.train, job.val, job.epochs, job.seed, device,
                         _print_epoch)
        with deferred():  # a stop signal waits until weights, metrics and record are written
            done = finish(job, settings, result, device)
            written = True
    except (Diverged, UsageError, DataError, OSError) as exc:
        return fail(PROG, str(exc), status=EXIT_FAILED, exc=exc)
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP
        kept = "its files were written first" if written else "nothing was written"
        print(f"\n{stop_reason(exc)} during the retrain; {kept}.", file=sys.stderr)
        return exit_status(exc)
    _print_result(job, settings, result, done.metrics, done.weights, done.metrics_file)
    if done.artifact_dir is not None:
        url = Location.of(settings.storage, config["study_name"]).shown
        print(f"Artifacts: {artifacts_line(done.published, done.artifact_dir, url)}")
    return EXIT_OK


def _print_result(job: Job, settings: TrainSettings, result: Retrained, metrics: dict[str, Any],
                  weights: Path, metrics_file: Path) -> None:
    config = job.config
    if metrics["replays_trial"] is not None:
        print("Validation accuracy per epoch "
              + ("matches" if metrics["replays_trial"] else "differs from")
              + f" trial {config['trial_number']} of the search"
              + ("." if metrics["replays_trial"] else
                 " (another device, thread count, precision or library version?)."))
    if job.val is not None:
        print(f"Kept the weights of epoch {result.kept_epoch}, the best on validation "
              f"({max(result.history['val_accuracy']):.4f}), as a trial's value is its best "
              "epoch.")
    print(f"Test accuracy {metrics['test_accuracy']:.4f} (loss {metrics['test_loss']:.4f}) on "
          f"{metrics['test_size']} test images, after {result.seconds:.1f} s of training.")
    print(f"Weights:  {weights}  (load: {load_call(job.params.network(), weights)})")
    print(f"Metrics:  {metrics_file}")
    print(f"Test result {job.recorded}.")
    explicit = () if settings.prefix is None else (
        "--metrics", str(metrics_file), "--out", str(settings.out / f"{job.stem}-report"))
    print(f"Report:   {next_command('report', config['study_name'], settings.storage, *explicit)}")


if __name__ == "__main__":
    raise SystemExit(main())
