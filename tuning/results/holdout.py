"""The test result on the study: user attributes and a section of the study's note.

The dashboard shows both: the attributes in the study's list, the note section beside the
validation accuracy. Only ``python -m tuning.train`` writes them, after scoring the test split
once.
"""

from __future__ import annotations

import re
from typing import Any

import optuna
from optuna_dashboard import get_note, save_note

from tuning.space.hyperparameters import describe
from tuning.study.protocol import TEST_ATTRS

NOTE_HEADING = "## Test split (python -m tuning.train)"  # the study note section this owns


def record_on_study(study: optuna.Study, metrics: dict[str, Any]) -> None:
    """Store the test result as study user attributes and as a section of the study's note."""
    values = (metrics["test_accuracy"], metrics["test_loss"], metrics["trial_number"],
              metrics["train_on"], metrics["epochs"], metrics["seed"])
    for key, value in zip(TEST_ATTRS, values, strict=True):
        study.set_user_attr(key, value)
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
