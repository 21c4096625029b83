"""The retrain of a study's chosen configuration, scored once on the test split, as steps.

``python -m tuning.train`` and ``tuning.api.train`` both run them: ``prepare`` resolves the
configuration, seed and data (nothing written yet); ``tuning.training.retrain.retrain`` trains;
``finish`` writes the weights, reads and scores the test split once, writes the metrics,
records the test result on the study and publishes all three as the study's artifacts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch

from model.data import DEFAULT_DATA_DIR, Source, Tensors, load_searched_split, load_split
from model.scoring import score
from tuning.results.artifacts import Published, artifact_dir, open_store, publish_retrain
from tuning.results.files import (
    DEFAULT_OUT,
    file_stem,
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
from tuning.space.hyperparameters import Hyperparameters
from tuning.study.errors import UsageError
from tuning.study.protocol import derive_seed
from tuning.study.storage import Location
from tuning.training.retrain import TRAIN_ON, Retrained, replays_trial


@dataclass(frozen=True)
class TrainSettings:
    """Everything a retrain needs; the defaults are python -m tuning.train's defaults."""

    config: Path | None = None  # an exported <study>-best.json; None: read the study itself
    study_name: str | None = None  # None: the study --config names, else fashion-mnist
    storage: str | None = field(default=None, repr=False)  # None: Location.of's default
    epochs: int | None = None  # None: the study's epochs per trial
    seed: int | None = None  # None: the best trial's own seed, so the retrain replays it
    threads: int | None = None  # None: the best trial's torch thread count (CPU), if recorded
    train_on: str = "train+val"  # chosen by benchmarks.train_on: see docs/decisions.md
    out: Path = DEFAULT_OUT
    prefix: str | None = None  # None: the files are named after the study
    artifact_dir: Path | None = None  # None: beside the study (tuning.results.artifacts)
    data_dir: Path = DEFAULT_DATA_DIR
    device: str = "auto"

    def check(self) -> None:
        """Raise UsageError naming the first flag whose value cannot work."""
        if self.epochs is not None and self.epochs < 1:
            raise UsageError(f"--epochs must be at least 1, but got {self.epochs}.")
        if self.threads is not None and self.threads < 1:
            raise UsageError(f"--threads must be at least 1, but got {self.threads}.")
        if self.train_on not in TRAIN_ON:
            raise UsageError(f"--train-on must be one of {', '.join(TRAIN_ON)}, "
                             f"but got {self.train_on!r}.")
        if self.study_name is not None and not self.study_name.strip():
            raise UsageError("--study-name must not be empty.")


@dataclass(frozen=True)
class Job:
    """What one retrain does, resolved from the flags and the configuration."""

    config: dict[str, Any]
    study: optuna.Study | None  # where the test result is recorded
    recorded: str  # a line saying where (or why not)
    params: Hyperparameters
    stem: str  # the files' names begin with it: the study's name or --prefix
    epochs: int
    seed: int
    source: Source
    train: Tensors
    val: Tensors | None


def prepare(settings: TrainSettings) -> Job:
    """Resolve the configuration, seed and data; nothing is written yet.

    Raises:
        UsageError, DataError: bad input, with the fix in the message.
    """
    settings.check()
    check_out_folder(settings.out)  # before minutes of training, not after
    config, study, recorded = retrain_source(settings.config, settings.study_name,
                                             settings.storage)
    stem = file_stem(config["study_name"], settings.prefix)  # refused before any training
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
    return Job(config, study, recorded, params, stem, settings.epochs or int(config["epochs"]),
               seed, source, train, val)


def test_metrics(job: Job, settings: TrainSettings, result: Retrained, test: Tensors,
                 device: torch.device, weights: Path) -> dict[str, Any]:
    """The metrics JSON of a retrain: the test score and everything that reproduces it."""
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


@dataclass(frozen=True)
class Finished:
    """What ``finish`` wrote: the files, the metrics, and the study's artifacts."""

    weights: Path
    metrics_file: Path
    metrics: dict[str, Any]
    artifact_dir: Path | None  # None: no study to publish on
    published: list[Published]


def finish(job: Job, settings: TrainSettings, result: Retrained,
           device: torch.device) -> Finished:
    """Write the weights, score the test split once, write the metrics, record and publish.

    Raises:
        DataError, OSError: the test split or a file; StudyError: the store.
    """
    name = job.config["study_name"]
    weights = weights_path(settings.out, job.stem)
    write_weights(weights, result.model.state_dict())
    # The test split is read here, after training, and scored exactly once.
    test = load_split(job.source, "test").to(device)
    metrics = test_metrics(job, settings, result, test, device, weights)
    metrics_file = metrics_path(settings.out, job.stem)
    write_metrics(metrics_file, metrics)
    if job.study is None:
        return Finished(weights, metrics_file, metrics, None, [])
    record_on_study(job.study, metrics, metrics_file)
    folder = artifact_dir(Location.of(settings.storage, name), settings.artifact_dir)
    published = publish_retrain(job.study, open_store(folder), weights, metrics_file, metrics)
    return Finished(weights, metrics_file, metrics, folder, published)
