"""python -m tuning.train: retrain the best configuration, score it once on the test split.

The retrain starts from a fresh network seeded like the search's trial, trains on the search's
training and validation images together (the default; ``--train-on train``: on the training
images alone, which replays the trial) and only then reads the 10,000 test images, once. It
writes the weights as a ``state_dict`` and the test metrics as JSON, and records the test
accuracy on the study for the dashboard.

Why train+val by default: ``python -m benchmarks.train_on`` asks the question one level down,
without the test split (train on 40,000 keeping the best epoch, or on 50,000 keeping the last,
both scored on the search's 10,000 validation images). On a 60-trial study's three best
configurations x 3 seeds, the larger set scored 0.48 points higher (standard error 0.15).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna_dashboard import get_note, save_note

from model.data import (
    CLASSES,
    DEFAULT_DATA_DIR,
    DataError,
    Tensors,
    load_searched_split,
    load_split,
)
from model.loops import OPTIMIZERS, evaluate, flush_denormals, warm_up_optimizers
from tuning.cli import (
    HelpFormatter,
    Parser,
    add_data_and_device_arguments,
    fail,
    library_versions,
    quiet_optuna,
    resolve_device,
)
from tuning.export import DEFAULT_OUT, best_config, write_atomically
from tuning.objective import EpochLine, retrain, trial_seed
from tuning.space import Hyperparameters
from tuning.study import DEFAULT_STUDY_NAME, StudyError, default_storage, load_study

PROG = "python -m tuning.train"
TRAIN_ON = ("train", "train+val")  # the search's training images; or those plus validation
LOAD_CALL = "NeuralNetwork().load_state_dict(torch.load(PATH, weights_only=True))"
# Study user attributes the test result is recorded under (flat, so the dashboard lists them).
TEST_ATTRS = ("test_accuracy", "test_loss", "test_trial", "test_train_on", "test_epochs",
              "test_seed")
NOTE_HEADING = "## Test split (python -m tuning.train)"  # the study note section this owns


@dataclass(frozen=True)
class TrainSettings:
    """Everything a retrain needs; the defaults are the CLI's defaults."""

    config: Path | None = None  # an exported <study>-best.json; None: read the study itself
    study_name: str | None = None  # None: the study --config names, else fashion-mnist
    storage: str | None = None  # None: sqlite:///studies/<study-name>.db
    epochs: int | None = None  # None: the study's epochs per trial
    seed: int | None = None  # None: the best trial's own seed, so the retrain replays it
    threads: int | None = None  # None: the best trial's torch thread count (CPU), if recorded
    train_on: str = "train+val"  # see the module docstring: benchmarks.train_on chose it
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


def weights_path(out: Path, study_name: str) -> Path:
    """Where the retrained ``state_dict`` of ``study_name`` lands."""
    return out / f"{study_name}-model.pt"


def metrics_path(out: Path, study_name: str) -> Path:
    """Where the test metrics JSON of ``study_name`` lands."""
    return out / f"{study_name}-test.json"


def read_config(path: Path) -> dict[str, Any]:
    """Read a best-configuration JSON written by ``python -m tuning.export``.

    Raises:
        ValueError: the file is missing, is not JSON, or lacks what a retrain needs.
    """
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"--config {path} does not exist; python -m tuning.export "
                         "writes it (studies/<study>-best.json).") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"--config {path} is not a JSON file: {exc}.") from None
    needed = ("study_name", "trial_number", "params", "validation_accuracy", "epochs",
              "data_split")
    missing = [key for key in needed if not isinstance(config, dict) or key not in config]
    if missing:
        raise ValueError(f"--config {path} is not a best configuration from "
                         f"python -m tuning.export: it lacks {', '.join(missing)}.")
    split = config["data_split"]
    if not isinstance(split, dict) or not all(
        isinstance(split.get(key), int) for key in ("val_size", "split_seed")
    ):
        raise ValueError(f"--config {path} has no val_size and split_seed in its data_split; "
                         "export the study again with python -m tuning.export.")
    if not isinstance(config["epochs"], int) or config["epochs"] < 1:
        raise ValueError(f"--config {path} has epochs {config['epochs']!r}; export the study "
                         "again with python -m tuning.export.")
    return config


def hyperparameters(config: dict[str, Any]) -> Hyperparameters:
    """The configuration's parameters as a checked ``Hyperparameters``.

    Raises:
        ValueError: a parameter is missing or cannot be trained with.
    """
    params = config["params"]
    try:
        hp = Hyperparameters(lr=float(params["lr"]), batch_size=int(params["batch_size"]),
                             optimizer=str(params["optimizer"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"the configuration's params {params} lack or garble {exc}; "
                         "it needs lr, batch_size and optimizer.") from None
    if not (math.isfinite(hp.lr) and hp.lr > 0) or hp.batch_size < 1:
        raise ValueError(f"the configuration's params {params} cannot be trained with.")
    if hp.optimizer not in OPTIMIZERS:
        raise ValueError(f"the configuration's optimizer {hp.optimizer!r} is not one of "
                         f"{', '.join(OPTIMIZERS)}.")
    return hp


@torch.inference_mode()
def score_on_test(model: torch.nn.Module, test: Tensors) -> dict[str, Any]:
    """Loss, accuracy, per-class accuracy and confusion matrix of ``model`` on ``test``."""
    loss, accuracy = evaluate(model, test)
    model.eval()
    predicted = model(test.images).argmax(dim=1)
    n = len(CLASSES)
    counts = torch.bincount(test.labels * n + predicted, minlength=n * n).reshape(n, n).cpu()
    per_class = {
        name: (int(counts[k, k]) / int(counts[k].sum())) if int(counts[k].sum()) else None
        for k, name in enumerate(CLASSES)
    }
    return {
        "test_accuracy": accuracy,
        "test_loss": loss,
        "test_size": len(test),
        "per_class_accuracy": per_class,
        "confusion_matrix": {
            "classes": list(CLASSES),
            "rows": "true class",
            "columns": "predicted class",
            "counts": counts.tolist(),
        },
    }


def state_dict_bytes(model: torch.nn.Module) -> bytes:
    """The model's ``state_dict`` on the CPU, serialised by ``torch.save``."""
    buffer = io.BytesIO()
    torch.save({key: value.cpu() for key, value in model.state_dict().items()}, buffer)
    return buffer.getvalue()


def record_on_study(study: optuna.Study, metrics: dict[str, Any]) -> None:
    """Store the test result as study user attributes and as a section of the study's note."""
    values = (metrics["test_accuracy"], metrics["test_loss"], metrics["trial_number"],
              metrics["train_on"], metrics["epochs"], metrics["seed"])
    for key, value in zip(TEST_ATTRS, values, strict=True):
        study.set_user_attr(key, value)
    section = "\n".join([
        NOTE_HEADING,
        "",
        f"Trial {metrics['trial_number']} ({_params_text(metrics['params'])}) retrained "
        f"for {metrics['epochs']} epochs on {metrics['train_size']} images "
        f"({metrics['train_on']}), seed {metrics['seed']}, then scored once on the "
        f"{metrics['test_size']} test images:",
        "",
        f"- **test accuracy {metrics['test_accuracy']:.4f}** (loss {metrics['test_loss']:.4f})",
        f"- validation accuracy in the search: {metrics['validation_accuracy']:.4f}",
        f"- recorded {metrics['finished_at']}",
    ])
    save_note(study, _replace_section(get_note(study), section))


def _replace_section(note: str, section: str) -> str:
    """``note`` with this module's section replaced (or appended), other text kept as it was."""
    pattern = re.compile(rf"^{re.escape(NOTE_HEADING)}\n.*?(?=^#{{1,2}} |\Z)", re.M | re.S)
    if pattern.search(note):
        return pattern.sub(lambda _: section + "\n\n", note, count=1).rstrip() + "\n"
    return (note.rstrip() + "\n\n" + section if note.strip() else section) + "\n"


def _params_text(params: dict[str, Any]) -> str:
    return f"lr {params['lr']:.3g}, batch {params['batch_size']}, {params['optimizer']}"


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
                        "epoch's weights (scored 0.48 points higher on unseen images in "
                        "python -m benchmarks.train_on); train: the training images alone, "
                        "best validation epoch's weights, which replays the search's trial")
    parser.add_argument("--out", type=Path, default=d.out,
                        help="folder for <study>-model.pt and <study>-test.json")
    add_data_and_device_arguments(parser, d.data_dir, d.device)
    return parser


def parse_settings(argv: Sequence[str] | None) -> TrainSettings:
    # Every flag's dest is a settings field: a flag cannot be parsed and then dropped.
    return TrainSettings(**vars(build_parser().parse_args(argv)))


def _source_config(settings: TrainSettings) -> tuple[dict[str, Any], optuna.Study | None, str]:
    """The configuration to retrain, the study to record on (if any) and a line saying so."""
    if settings.config is None:
        name = settings.study_name or DEFAULT_STUDY_NAME
        url = settings.storage or default_storage(name)
        study = load_study(url, name)
        return best_config(study), study, f"recorded on study {name!r} in {url}"
    config = read_config(settings.config)
    name = config["study_name"]
    if settings.study_name is not None and settings.study_name != name:
        raise ValueError(f"--study-name {settings.study_name!r} does not match the study "
                         f"{name!r} that --config {settings.config} names; leave it out.")
    if settings.storage is not None:  # asked for: it must be there
        study = load_study(settings.storage, name)
        return config, study, f"recorded on study {name!r} in {settings.storage}"
    url = default_storage(name)
    try:
        study = load_study(url, name)
    except StudyError:
        return config, None, (f"not recorded on a study: {url} holds no study {name!r} "
                              "(pass --storage to record it)")
    return config, study, f"recorded on study {name!r} in {url}"


def _print_epoch(line: EpochLine) -> None:
    text = (f"epoch {line.epoch:>2}/{line.epochs}: train loss {line.train_loss:.4f}")
    if line.val_loss is not None:
        text += f", val loss {line.val_loss:.4f}, val acc {line.val_accuracy:.4f}"
    print(f"{text}, {line.seconds:.1f} s", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Retrain, test and save; return the process exit status."""
    settings = parse_settings(argv)
    quiet_optuna()
    flush_denormals()  # as the search does: before torch starts its thread pool
    try:
        settings.check()
        device = resolve_device(settings.device)
        config, study, recorded = _source_config(settings)
        params = hyperparameters(config)
        epochs = settings.epochs or int(config["epochs"])
        if settings.seed is not None:
            seed = settings.seed
        elif config.get("trial_seed") is not None:
            seed = int(config["trial_seed"])
        else:  # an export without it: derive it as the search did
            seed = trial_seed(int(config.get("seed") or 0), int(config["trial_number"]))
        threads = settings.threads or config.get("trial_threads")
        if threads is not None and device.type == "cpu":
            torch.set_num_threads(int(threads))
        split = config["data_split"]
        source, data = load_searched_split(settings.data_dir, int(split["val_size"]),
                                           int(split["split_seed"]), split.get("train_size"))
    except (ValueError, DataError, StudyError) as exc:
        return fail(PROG, str(exc))

    if settings.train_on == "train":
        train, val = data.train, data.val
    else:
        train = Tensors(torch.cat([data.train.images, data.val.images]),
                        torch.cat([data.train.labels, data.val.labels]))
        val = None
    print(
        f"Retraining trial {config['trial_number']} of study {config['study_name']!r} "
        f"({_params_text(config['params'])}; validation accuracy "
        f"{config['validation_accuracy']:.4f} in the search): {epochs} epochs "
        f"on {len(train)} images ({settings.train_on}), seed {seed}, device {device}"
        + (f", {torch.get_num_threads()} torch thread(s)" if device.type == "cpu" else "")
        + ".",
        flush=True,
    )
    warm_up_optimizers()  # so the printed training seconds are the training's own
    try:
        result = retrain(params, train, val, epochs, seed, device, _print_epoch)
        weights = weights_path(settings.out, config["study_name"])
        write_atomically(weights, state_dict_bytes(result.model))
        # The test split is read here, after training, and scored exactly once.
        test = load_split(source, "test").to(device)
        metrics = {
            "study_name": config["study_name"],
            "trial_number": config["trial_number"],
            "params": config["params"],
            "validation_accuracy": config.get("validation_accuracy"),
            **score_on_test(result.model, test),
            "train_on": settings.train_on,
            "train_size": len(train),
            "epochs": epochs,
            "weights_from_epoch": result.kept_epoch,
            "seed": seed,
            "device": str(device),
            "torch_threads": torch.get_num_threads() if device.type == "cpu" else None,
            "seconds": round(result.seconds, 3),
            "history": result.history,
            "replays_trial": _replays(config, result.history, epochs, seed, settings.train_on),
            "weights": weights.name,
            "load_with": LOAD_CALL.replace("PATH", repr(str(weights))),
            "config": config,
            "versions": library_versions(),
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        metrics_file = metrics_path(settings.out, config["study_name"])
        write_atomically(metrics_file, json.dumps(metrics, indent=2) + "\n")
        if study is not None:
            record_on_study(study, metrics)
    except (ValueError, DataError, OSError) as exc:
        return fail(PROG, str(exc), status=1)

    if metrics["replays_trial"] is not None:
        print("Validation accuracy per epoch "
              + ("matches" if metrics["replays_trial"] else "differs from")
              + f" trial {config['trial_number']} of the search"
              + ("." if metrics["replays_trial"] else
                 " (another device, thread count, precision or library version?)."))
    if val is not None:
        print(f"Kept the weights of epoch {result.kept_epoch}, the best on validation "
              f"({max(result.history['val_accuracy']):.4f}), as a trial's value is its best "
              "epoch.")
    print(f"Test accuracy {metrics['test_accuracy']:.4f} (loss {metrics['test_loss']:.4f}) on "
          f"{metrics['test_size']} test images, after {result.seconds:.1f} s of training.")
    print(f"Weights:  {weights}  (load: {LOAD_CALL.replace('PATH', repr(str(weights)))})")
    print(f"Metrics:  {metrics_file}")
    print(f"Test result {recorded}.")
    report = f"python -m tuning.report --study-name {shlex.quote(config['study_name'])}"
    if settings.storage is not None:
        report += f" --storage {shlex.quote(settings.storage)}"
    print(f"Report:   {report}")
    return 0


def _replays(config: dict[str, Any], history: dict[str, list[float]], epochs: int, seed: int,
             train_on: str) -> bool | None:
    """Whether the retrain's validation curve equals the trial's; None where not comparable."""
    searched = (config.get("history") or {}).get("val_accuracy")
    if train_on != "train" or not searched or seed != config.get("trial_seed"):
        return None
    if epochs != config.get("epochs"):
        return None
    return history["val_accuracy"] == searched


if __name__ == "__main__":
    raise SystemExit(main())
