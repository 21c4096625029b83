"""The test result on the study: user attributes and a section of the study's note.

The dashboard shows both: the attributes in the study's list, the note section beside the
validation accuracy. Only ``python -m tuning.train`` writes them, after scoring the test split
once.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import optuna
from optuna_dashboard import get_note, save_note

from tuning.results.files import read_metrics
from tuning.space.hyperparameters import describe
from tuning.study.errors import UsageError
from tuning.study.protocol import TEST_ATTRS, TEST_FILE_ATTR

NOTE_HEADING = "## Test split (python -m tuning.train)"  # the study note section this owns


def record_on_study(study: optuna.Study, metrics: dict[str, Any],
                    metrics_file: Path | None = None) -> None:
    """Store the test result as study user attributes and as a section of the study's note;
    ``metrics_file``, where given, is recorded too, so the report finds it from anywhere."""
    values = (metrics["test_accuracy"], metrics["test_loss"], metrics["trial_number"],
              metrics["train_on"], metrics["epochs"], metrics["seed"])
    for key, value in zip(TEST_ATTRS, values, strict=True):
        study.set_user_attr(key, value)
    if metrics_file is not None:
        study.set_user_attr(TEST_FILE_ATTR, str(metrics_file.resolve()))
    section = "\n".join([
        NOTE_HEADING,
        "",
        f"Trial {metrics['trial_number']} ({describe(metrics['params'])}) retrained "
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


def recorded_test(study: optuna.Study) -> dict[str, Any] | None:
    """The test result ``record_on_study`` stored, keyed as the metrics JSON keys it (test
    accuracy and loss, trial number, train_on, epochs, seed); None if the study has none."""
    attrs = study.user_attrs
    if "test_accuracy" not in attrs:
        return None
    keys = ("test_accuracy", "test_loss", "trial_number", "train_on", "epochs", "seed")
    return {key: attrs.get(attr) for key, attr in zip(keys, TEST_ATTRS, strict=True)}


def recorded_metrics_file(study: optuna.Study) -> Path | None:
    """Where the test metrics JSON was written when the test result was recorded (it may be
    gone since, or on another machine); None for a study without it."""
    path = study.user_attrs.get(TEST_FILE_ATTR)
    return None if path is None else Path(path)


def find_metrics(study: optuna.Study, asked: Path | None, default: Path | None
                 ) -> tuple[dict[str, Any] | None, list[Path]]:
    """The test metrics JSON of ``study`` and every place looked for it, in order.

    ``asked`` (--metrics) must exist; else ``default`` (studies/<study>-test.json here; None
    for a study whose name cannot name a file), else the file recorded on the study when the
    test result was (``recorded_metrics_file``).

    Raises:
        UsageError: ``asked`` is missing, or a file is not the study's test metrics.
    """
    if asked is not None:
        if not asked.exists():
            raise UsageError(f"--metrics {asked} does not exist; python -m tuning.train "
                             "writes it.")
        return read_metrics(asked, study.study_name), [asked]
    places = [] if default is None else [default]
    recorded = recorded_metrics_file(study)
    if recorded is not None and (default is None or recorded.resolve() != default.resolve()):
        places.append(recorded)
    for place in places:
        if place.exists():
            return read_metrics(place, study.study_name), places
    return None, places
