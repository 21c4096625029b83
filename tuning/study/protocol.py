"""The study's record: binding metadata, trial attribute names and seeds, in one place.

A study written by ``python -m tuning.search`` is a complete record that later tools (confirm,
export, train, report) read back. This module is the only one that knows the keys under
which that record is stored, so a tool asks for ``StudyRecord.from_attrs(study.user_attrs)``
instead of knowing ``"val_size"`` by heart. The keys are part of the file format: studies
written by earlier versions must keep loading, so they never change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial

from tuning.study.errors import StudyError

# Study user attributes whose values fix what a trial's value means; a resume must match them.
BINDING_KEYS = ("epochs", "val_size", "split_seed")
# What a study was searched with, recorded at creation: a resume must match these too, where the
# study records them (studies made before they were recorded lack sampler and pruner). Unlike
# the binding keys, their absence does not make a study foreign.
SEARCH_KEYS = ("sampler", "pruner", "seed")
# Their defaults: the search's, and every benchmark's that trains as a search trial does.
EPOCHS = 10  # as in the tutorial
VAL_SIZE = 10_000  # validation images taken from the 60,000 training images
SPLIT_SEED = 0  # fixes which images are validation, the same for every study
METRIC_NAME = "val_accuracy"  # what a trial's value is: its best validation accuracy

# Trial user attributes.
SEED_ATTR = "seed"  # the trial's own seed: weights and shuffling
PRECISION_ATTR = "precision"  # fp32 or bf16, the arithmetic it trained in
THREADS_ATTR = "torch_threads"  # its torch.get_num_threads(): CPU sums depend on it
KERNEL_ATTR = "fp32_kernel"  # aten or onednn: where its float32 products ran
FIXED_PARAMS_ATTR = "fixed_params"  # the space's fixed values it trained with (not Optuna's)
# The text of the space file a study was searched in: a study *system* attribute, kept out of
# the user attributes that `optuna studies` and the dashboard print in full (studies from
# before 2026-12 hold it as a user attribute, and are still read).
SPACE_ATTR = "space"
SPACE_NAME_ATTR = "space_name"  # and the space's name (tutorial, extended or a file's stem)
WORKER_ATTR = "worker"  # host:pid of the process that ran it
PRUNED_REASON_ATTR = "pruned_reason"  # why a pruned trial stopped
DIVERGED = "diverged"  # how the pruned_reason of a NaN or infinite run begins
# Per-epoch histories (lists, one entry per epoch), stored as trial user attributes.
HISTORY_KEYS = ("train_loss", "val_loss", "val_accuracy", "epoch_seconds")
BASELINE_ATTRS = {"baseline": "tutorial"}  # marks the tutorial configuration's trial

# Study user attributes of the confirmation (python -m tuning.confirm).
CONFIRM_PLAN_ATTR = "confirm_plan"  # which trials, how many seeds, the study's size then
CONFIRM_RUNS_PREFIX = "confirm_trial_"  # + trial number: that trial's fresh-seed runs

# Study user attributes of the test result (python -m tuning.train); flat, so the dashboard
# lists them.
TEST_ATTRS = ("test_accuracy", "test_loss", "test_trial", "test_train_on", "test_epochs",
              "test_seed")
TEST_FILE_ATTR = "test_metrics_file"  # the absolute path of the test metrics JSON written then
# Study user attribute prefix: "artifact:<file name>" -> the id of that file's current Optuna
# artifact (tuning.results.artifacts); flat, so the dashboard lists them beside the test result.
ARTIFACT_ATTR_PREFIX = "artifact:"


@dataclass(frozen=True)
class StudyRecord:
    """What a study was searched with: recorded at creation, read by every later tool."""

    epochs: int  # epochs per trial
    val_size: int  # training images held out for validation
    split_seed: int  # the seed of the train/validation permutation
    train_size: int | None = None  # images trained on; None in a record that lacks it
    seed: int = 0  # the search's --seed: trial seeds derive from it
    space: str | None = None  # the space file's text (``space_text``); None: the tutorial's
    space_name: str | None = None
    sampler: str | None = None  # --sampler: tpe, random or qmc; None in a record that lacks it
    pruner: str | None = None  # --pruner: median, hyperband, successive-halving or none

    def to_attrs(self) -> dict[str, Any]:
        """The record as study user attributes; the space's text is not one (``write_space``)."""
        return {key: value for key, value in asdict(self).items()
                if value is not None and key != SPACE_ATTR}

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any], study_name: str) -> StudyRecord:
        """Read the record back from a study's user attributes.

        Raises:
            StudyError: a binding attribute is missing: the study was not made by the search.
        """
        missing = [key for key in BINDING_KEYS if key not in attrs]
        if missing:
            raise StudyError(
                f"study {study_name!r} lacks {', '.join(missing)}: it was not made by "
                "python -m tuning.search, so its split is unknown."
            )
        train_size = attrs.get("train_size")
        return cls(
            epochs=int(attrs["epochs"]), val_size=int(attrs["val_size"]),
            split_seed=int(attrs["split_seed"]),
            train_size=None if train_size is None else int(train_size),
            seed=int(attrs.get("seed") or 0),
            space=attrs.get(SPACE_ATTR), space_name=attrs.get(SPACE_NAME_ATTR),
            sampler=attrs.get("sampler"), pruner=attrs.get("pruner"),
        )


def write_space(study: optuna.Study, text: str) -> None:
    """Record the text of the space file ``study`` is searched in, as a system attribute."""
    # Optuna's Study has no public setter for system attributes; its storage has.
    study._storage.set_study_system_attr(study._study_id, SPACE_ATTR, text)


def space_text(study: optuna.Study) -> str | None:
    """The text of the space file ``study`` was searched in; None for studies from before
    spaces were files (all searched in the tutorial space)."""
    system = study._storage.get_study_system_attrs(study._study_id)
    text = system.get(SPACE_ATTR, study.user_attrs.get(SPACE_ATTR))  # older: a user attribute
    return None if text is None else str(text)


def configuration(trial: FrozenTrial) -> dict[str, Any]:
    """Everything ``trial`` trained with: its sampled params and its space's fixed values."""
    return {**trial.params, **trial.user_attrs.get(FIXED_PARAMS_ATTR, {})}


def derive_seed(study_seed: int, trial_number: int, k: int = 0) -> int:
    """A 32-bit seed for trial ``trial_number`` of a study seeded ``study_seed``.

    ``k`` = 0 gives the trial's own seed (the search's); ``k`` = 1, 2, ... give the fresh
    seeds of its confirmation runs, independent streams that never repeat the trial's own.
    """
    entropy = [study_seed, trial_number] + ([k] if k else [])
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def confirm_runs_key(trial_number: int) -> str:
    """The study user attribute that holds ``trial_number``'s confirmation runs."""
    return f"{CONFIRM_RUNS_PREFIX}{trial_number}"
