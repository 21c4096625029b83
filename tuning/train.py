"""python -m tuning.train: retrain the chosen configuration, score it once on the test split.

The retrain starts from a fresh network seeded like the search's trial, trains on the search's
training and validation images together (the default; ``--train-on train``: on the training
images alone, which replays the trial) and only then reads the 10,000 test images, once. It
writes the weights as a ``state_dict`` and the test metrics as JSON, and records the test
accuracy on the study for the dashboard. docs/decisions.md says why train+val is the default.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch

from model.data import (
    DEFAULT_DATA_DIR,
    DataError,
    Source,
    Tensors,
    load_searched_split,
    load_split,
)
from model.loops import EpochResult, flush_denormals, warm_up_optimizers
from model.scoring import score
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
from tuning.results.files import (
    DEFAULT_OUT,
    LOAD_CALL,
    library_versions,
    load_call,
    metrics_path,
    now,
    retrain_source,
    weights_path,
    write_metrics,
    write_weights,
)
from tuning.results.holdout import record_on_study
from tuning.results.out_folder import check_out_folder
from tuning.space.hyperparameters import Hyperparameters, describe
from tuning.study.errors import StudyError
from tuning.study.lifecycle import DEFAULT_STUDY_NAME
from tuning.study.protocol import derive_seed
from tuning.training.device import resolve_device
from tuning.training.retrain import TRAIN_ON, Retrained, replays_trial, retrain
from tuning.workers.signals import deferred, exit_status, stop_reason

PROG = "python -m tuning.train"


@dataclass(frozen=True)
class TrainSettings:
    """Everything a retrain needs; the defaults are the CLI's defaults."""

    config: Path | None = None  # an exported <study>-best.json; None: read the study itself
    study_name: str | None = None  # None: the study --config names, else fashion-mnist
    storage: str | None = None  # None: sqlite:///studies/<study-name>.db
    epochs: int | None = None  # None: the study's epochs per trial
    seed: int | None = None  # None: the best trial's own seed, so the retrain replays it
    threads: int | None = None  # None: the best trial's torch thread count (CPU), if recorded
    train_on: str = "train+val"  # chosen by benchmarks.train_on: see docs/decisions.md
    out: Path = DEFAULT_OUT
    data_dir: Path = DEFAULT_DATA_DIR
    device: str = "auto"

    def check(self) -> None:
        """Raise ValueError naming the first flag whose value cannot work."""
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"--epochs must be at least 1, but got {self.epochs}.")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads must be at least 1, but got {self.threads}.")
        if self.train_on not in TRAIN_ON:
            raise ValueError(f"--train-on must be one of {', '.join(TRAIN_ON)}, "
                             f"but got {self.train_on!r}.")
        if self.study_name is not None and not self.study_name.strip():
            raise ValueError("--study-name must not be empty.")


def build_parser() -> argparse.ArgumentParser:
    d = TrainSettings()
    parser = Parser(
        prog=PROG,
        description=(
            "Retrain a study's best configuration from a fresh seeded start, then score it "
            "once on the 10,000 test images. Writes <study>-model.pt (a state_dict: "
            f"{LOAD_CALL}) and <study>-test.json (test accuracy and loss, per-class accuracy, "
            "confusion matrix, epochs, seconds, the configuration), and records the test "
            "accuracy on the study for the dashboard."
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
                        help="database URL of the study (default: sqlite:///studies/"
                        "<study-name>.db); with --config, the test result is recorded there if "
                        "given, else in the default file if it holds the study")
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


@dataclass(frozen=True)
class Job:
    """What one retrain does, resolved from the flags and the configuration."""

    config: dict[str, Any]
    study: optuna.Study | None  # where the test result is recorded
    recorded: str  # a line saying where (or why not)
    params: Hyperparameters
    epochs: int
    seed: int
    source: Source
    train: Tensors
    val: Tensors | None


def _prepare(settings: TrainSettings) -> Job:
    """Resolve the configuration, seed, threads and data; nothing is written yet.

    Raises:
        ValueError, DataError, StudyError: bad input, with the fix in the message.
    """
    settings.check()
    check_out_folder(settings.out)  # before minutes of training, not after
    config, study, recorded = retrain_source(settings.config, settings.study_name,
                                             settings.storage)
    params = Hyperparameters.from_params(config["params"])
    if settings.seed is not None:
        seed = settings.seed
    elif config.get("trial_seed") is not None:
        seed = int(config["trial_seed"])
    else:  # an export without it: derive it as the search did
        seed = derive_seed(int(config.get("seed") or 0), int(config["trial_number"]))
    split = config["data_split"]
    source, data = load_searched_split(settings.data_dir, int(split["val_size"]),
                                       int(split["split_seed"]), split.get("train_size"))
    # train: pick the best epoch on the validation images; train+val: train on both.
    train, val = (data.train, data.val) if settings.train_on == "train" else (data.joined(), None)
    return Job(config, study, recorded, params, settings.epochs or int(config["epochs"]), seed,
               source, train, val)


def _metrics(job: Job, settings: TrainSettings, result: Retrained, test: Tensors,
             device: torch.device, weights: Path) -> dict[str, Any]:
    config = job.config
    return {
        "study_name": config["study_name"],
        "trial_number": config["trial_number"],
        "params": config["params"],
        "validation_accuracy": config.get("validation_accuracy"),
        **score(result.model, test),
        "train_on": settings.train_on,
        "train_size": len(job.train),
        "epochs": job.epochs,
        "weights_from_epoch": result.kept_epoch,
        "seed": job.seed,
        "device": str(device),
        "torch_threads": torch.get_num_threads() if device.type == "cpu" else None,
        "seconds": round(result.seconds, 3),
        "history": result.history,
        "replays_trial": replays_trial(config, result.history, job.epochs, job.seed,
                                  settings.train_on),
        "weights": weights.name,
        "network": job.params.network(),
        "load_with": load_call(job.params.network(), weights),
        "config": config,
        "versions": library_versions(),
        "finished_at": now(),
    }


@stoppable(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    """Retrain, test and save; return the process exit status."""
    settings = parse_settings(argv)
    quiet_optuna()
    flush_denormals()  # as the search does: before torch starts its thread pool
    try:
        device = resolve_device(settings.device)
        job = _prepare(settings)
    except (ValueError, DataError, StudyError) as exc:
        return fail(PROG, str(exc))
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
            weights = weights_path(settings.out, config["study_name"])
            write_weights(weights, result.model.state_dict())
            # The test split is read here, after training, and scored exactly once.
            test = load_split(job.source, "test").to(device)
            metrics = _metrics(job, settings, result, test, device, weights)
            metrics_file = metrics_path(settings.out, config["study_name"])
            write_metrics(metrics_file, metrics)
            if job.study is not None:
                record_on_study(job.study, metrics)
            written = True
    except (ValueError, DataError, OSError) as exc:
        return fail(PROG, str(exc), status=EXIT_FAILED)
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP
        done = "its files were written first" if written else "nothing was written"
        print(f"\n{stop_reason(exc)} during the retrain; {done}.", file=sys.stderr)
        return exit_status(exc)
    _print_result(job, settings, result, metrics, weights, metrics_file)
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
    report = f"python -m tuning.report --study-name {shlex.quote(config['study_name'])}"
    if settings.storage is not None:
        report += f" --storage {shlex.quote(settings.storage)}"
    print(f"Report:   {report}")


if __name__ == "__main__":
    raise SystemExit(main())
