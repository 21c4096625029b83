"""Every file the suite writes and reads, each format's writer beside its reader.

``studies/<study>-best.json`` (the chosen configuration, by ``export``), ``<study>-trials.csv``
(every trial) and ``<study>-epochs.csv`` (their per-epoch curves; ``tuning.results.tables``),
``<study>-model.pt`` (the retrained weights) and ``<study>-test.json`` (the test
metrics, by ``train``). Every file is written atomically: an interrupted tool leaves the old
file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import optuna

from tuning.results.selection import chosen
from tuning.results.tables import epochs_table, trials_table
from tuning.space.hyperparameters import Hyperparameters
from tuning.study.errors import StudyError, UsageError
from tuning.study.lifecycle import DEFAULT_STUDY_NAME, count_states, load_study
from tuning.study.names import check_file_name, file_name_problem
from tuning.study.protocol import (
    HISTORY_KEYS,
    KERNEL_ATTR,
    PRECISION_ATTR,
    SEED_ATTR,
    SPACE_NAME_ATTR,
    THREADS_ATTR,
    configuration,
)
from tuning.study.secrets import storage_from
from tuning.study.storage import Location

DEFAULT_OUT = Path("studies")
# The one call that loads trained weights, of every space's networks (batch norm shifts the
# tutorial's state_dict keys, so NeuralNetwork().load_state_dict fits the tutorial's alone).
# NETWORK is the metrics JSON's "network" (the tutorial's: {}).
LOAD_CALL = "model.network.load_trained(NETWORK, PATH)"
_CONFIG_KEYS = ("study_name", "trial_number", "params", "validation_accuracy", "epochs",
                "data_split")  # what a retrain needs from a best-configuration file


def write_atomically(path: Path, text: str | bytes) -> None:
    """Write via a temporary file and a rename, so an interrupted tool leaves no half file.

    ``text`` is written as UTF-8; bytes (weights, pictures) are written as they are. The file
    gets the permissions a plain ``open`` would give it (the temporary file's are owner-only).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode("utf-8") if isinstance(text, str) else text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process's umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def library_versions() -> dict[str, str]:
    """Versions of Python and of the libraries that decide a trial's numbers.

    Read from the installed packages' metadata, not by importing them: tools that only read a
    study (export, report) never load torch (about 700 MB of memory and seconds to import).
    Where torch is loaded already, its own version string is used, which names the build
    (e.g. ``2.14.1+cu130``; the package metadata says ``2.14.1``).
    """
    versions = {name: version(name) for name in ("torch", "torchvision", "optuna", "pandas")}
    torch = sys.modules.get("torch")
    if torch is not None:
        versions["torch"] = torch.__version__
    return {"python": platform.python_version(), **versions}


def now() -> str:
    """The current UTC time as the files record it."""
    return datetime.now(UTC).isoformat(timespec="seconds")


# --- <study>-best.json and <study>-trials.csv ---------------------------------------------

def best_config(study: optuna.Study) -> dict[str, Any]:
    """The study's chosen trial and what is needed to reproduce it, as a JSON-ready dict.

    Raises:
        StudyError: the study has no completed trial.
    """
    choice = chosen(study)
    best, attrs = choice.trial, study.user_attrs
    return {
        "study_name": study.study_name,
        "trial_number": best.number,
        "params": configuration(best),
        "network": _network(configuration(best)),
        "space": attrs.get(SPACE_NAME_ATTR, "tutorial"),
        "validation_accuracy": best.value,
        "selected_by": choice.selected_by,
        "confirmation": choice.table,
        "epochs": attrs.get("epochs"),
        "seed": attrs.get("seed"),
        "sampler": attrs.get("sampler"),  # None: a study made before they were recorded
        "pruner": attrs.get("pruner"),
        "trial_seed": best.user_attrs.get(SEED_ATTR),
        "trial_threads": best.user_attrs.get(THREADS_ATTR),
        "trial_precision": best.user_attrs.get(PRECISION_ATTR),
        "trial_kernel": best.user_attrs.get(KERNEL_ATTR),
        "data_split": {key: attrs.get(key) for key in ("train_size", "val_size", "split_seed")},
        "history": {key: best.user_attrs.get(key) for key in HISTORY_KEYS},
        "trials": count_states(study),
        "versions": library_versions(),
        "exported_at": now(),
    }


def load_call(network: dict[str, Any], weights: Path) -> str:
    """The one call that loads ``weights`` trained as ``network``, whatever the space."""
    return LOAD_CALL.replace("NETWORK", repr(network)).replace("PATH", repr(str(weights)))


def _network(params: dict[str, Any]) -> dict[str, Any] | None:
    """The network ``params`` train (``model.network.load_trained`` reads it); None for a
    study whose trials cannot be trained (not the search's)."""
    try:
        return Hyperparameters.from_params(params).network()
    except UsageError:
        return None


def file_stem(study_name: str, prefix: str | None = None) -> str:
    """How a study's files begin: ``prefix`` where given, else the study's name.

    Raises:
        StudyError: that cannot be part of a file name (``tuning.study.names``).
    """
    return check_file_name(prefix, "--prefix") if prefix is not None else check_file_name(
        study_name, "study name")


def epochs_csv_path(out: Path, stem: str) -> Path:
    """Where ``export`` writes the per-epoch curves of the study whose files begin ``stem``."""
    return out / f"{stem}-epochs.csv"


def export(study: optuna.Study, out: Path, prefix: str | None = None
           ) -> tuple[Path, Path, dict[str, Any]]:
    """Write ``<study>-best.json``, ``<study>-trials.csv`` and ``<study>-epochs.csv`` into
    ``out`` (``<prefix>-...`` where ``prefix`` is given).

    Returns the first two paths (the third is ``epochs_csv_path``) and the configuration.

    Raises:
        StudyError: the study has no completed trial, or its name cannot name a file.
    """
    stem = file_stem(study.study_name, prefix)
    config = best_config(study)
    json_path = out / f"{stem}-best.json"
    csv_path = out / f"{stem}-trials.csv"
    write_atomically(json_path, json.dumps(config, indent=2) + "\n")
    write_atomically(csv_path, trials_table(study).to_csv(index=False))
    write_atomically(epochs_csv_path(out, stem),
                     epochs_table(study).to_csv(index=False))
    return json_path, csv_path, config


def read_best_config(path: Path) -> dict[str, Any]:
    """Read a best-configuration JSON written by ``export``.

    Raises:
        UsageError: the file is missing, is not JSON, or lacks what a retrain needs.
    """
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"--config {path} does not exist; python -m tuning.export "
                         "writes it (studies/<study>-best.json).") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"--config {path} is not a JSON file: {exc}.") from None
    missing = [key for key in _CONFIG_KEYS if not isinstance(config, dict) or key not in config]
    if missing:
        raise UsageError(f"--config {path} is not a best configuration from "
                         f"python -m tuning.export: it lacks {', '.join(missing)}.")
    split = config["data_split"]
    if not isinstance(split, dict) or not all(
        isinstance(split.get(key), int) for key in ("val_size", "split_seed")
    ):
        raise UsageError(f"--config {path} has no val_size and split_seed in its data_split; "
                         "export the study again with python -m tuning.export.")
    if not isinstance(config["epochs"], int) or config["epochs"] < 1:
        raise UsageError(f"--config {path} has epochs {config['epochs']!r}; export the study "
                         "again with python -m tuning.export.")
    return config


def retrain_source(config_path: Path | None, study_name: str | None, storage: str | None
                   ) -> tuple[dict[str, Any], optuna.Study | None, str]:
    """The configuration to retrain, the study to record its test result on, and a line.

    From the best-configuration file ``config_path`` where given (recorded on its study in
    ``storage``, else in the default file if that holds it), else from the study itself.

    Raises:
        UsageError: the file or study cannot be read, or they disagree.
    """
    storage = storage_from(storage)
    if config_path is None:
        name = study_name or DEFAULT_STUDY_NAME
        location = Location.of(storage, name)
        study = load_study(location, name)
        return best_config(study), study, f"recorded on study {name!r} in {location.shown}"
    config = read_best_config(config_path)
    name = config["study_name"]
    if study_name is not None and study_name != name:
        raise UsageError(f"--study-name {study_name!r} does not match the study "
                         f"{name!r} that --config {config_path} names; leave it out.")
    if storage is None and file_name_problem(name) is not None:
        return config, None, (f"not recorded on a study: study {name!r} has no default "
                              "storage (its name cannot name a file); pass --storage")
    if storage is not None:  # asked for: it must be there
        location = Location.parse(storage)
        study = load_study(location, name)
        return config, study, f"recorded on study {name!r} in {location.shown}"
    location = Location.default(name)
    try:
        study = load_study(location, name)
    except StudyError:
        return config, None, (f"not recorded on a study: {location.shown} holds no study "
                              f"{name!r} (pass --storage to record it)")
    return config, study, f"recorded on study {name!r} in {location.shown}"


# --- <study>-model.pt and <study>-test.json ------------------------------------------------

def weights_path(out: Path, study_name: str) -> Path:
    """Where the retrained ``state_dict`` of ``study_name`` lands."""
    return out / f"{study_name}-model.pt"


def write_weights(path: Path, state_dict: dict[str, Any]) -> None:
    """Save a ``state_dict`` (moved to the CPU) with ``torch.save``; load it with LOAD_CALL."""
    import io

    import torch  # here, not at the top: the tools that only read a study never need it

    buffer = io.BytesIO()
    torch.save({key: value.cpu() for key, value in state_dict.items()}, buffer)
    write_atomically(path, buffer.getvalue())


def metrics_path(out: Path, study_name: str) -> Path:
    """Where the test metrics JSON of ``study_name`` lands."""
    return out / f"{study_name}-test.json"


def write_metrics(path: Path, metrics: dict[str, Any]) -> None:
    """Write the test metrics of a retrain."""
    write_atomically(path, json.dumps(metrics, indent=2) + "\n")


def read_metrics(path: Path, study_name: str) -> dict[str, Any]:
    """Read a test metrics JSON written by ``python -m tuning.train`` for ``study_name``.

    Raises:
        UsageError: the file is not JSON, or is of another study.
    """
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"cannot read the test metrics {path}: {exc}.") from None
    if not isinstance(metrics, dict) or "confusion_matrix" not in metrics:
        raise UsageError(f"{path} is not a test metrics file of python -m tuning.train.")
    if metrics.get("study_name") != study_name:
        raise UsageError(f"{path} holds the test result of study {metrics.get('study_name')!r}, "
                         f"not of {study_name!r}; pass the right --metrics.")
    return metrics

