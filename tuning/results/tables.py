"""A study's trials as two tidy tables: one row per trial, and one row per trial and epoch.

``<study>-trials.csv`` (``trials_table``) holds each trial's number, state, value, times, every
parameter of the study's space as a column of its own type (the space's fixed values too) and
what the trial recorded (seed, precision, threads, worker, epochs run); ``<study>-epochs.csv``
(``epochs_table``) holds the per-epoch curves in long format. Both load with a plain
``pandas.read_csv``: no JSON in a cell, no Optuna-internal columns. docs/pipeline.md lists the
columns.
"""

from __future__ import annotations

from typing import Any

import optuna
import pandas as pd

from tuning.space.file import in_space_order
from tuning.study.baseline import is_baseline
from tuning.study.protocol import (
    HISTORY_KEYS,
    KERNEL_ATTR,
    METRIC_NAME,
    PRECISION_ATTR,
    PRUNED_REASON_ATTR,
    SEED_ATTR,
    THREADS_ATTR,
    WORKER_ATTR,
    configuration,
)

# Trial user attributes that become columns, under these names.
RECORDED = {SEED_ATTR: "seed", PRECISION_ATTR: "precision", THREADS_ATTR: "torch_threads",
            KERNEL_ATTR: "fp32_kernel", WORKER_ATTR: "worker",
            PRUNED_REASON_ATTR: "pruned_reason"}
TRIAL_COLUMNS = ("number", "state", METRIC_NAME, "epochs_run", "best_epoch", "baseline",
                 "datetime_start", "datetime_complete", "duration_s")
EPOCH_COLUMNS = ("number", "epoch", *HISTORY_KEYS)


def param_columns(study: optuna.Study) -> list[str]:
    """Every parameter a trial of ``study`` trained with, in its space file's order."""
    return in_space_order(study, {name for trial in study.get_trials(deepcopy=False)
                                  for name in configuration(trial)})


def _time(value: Any) -> str | None:
    return None if value is None else value.isoformat(timespec="seconds")


def _trial_row(trial: optuna.trial.FrozenTrial, params: list[str]) -> dict[str, Any]:
    accuracies = trial.user_attrs.get("val_accuracy") or []
    duration = trial.duration
    row: dict[str, Any] = {
        "number": trial.number,
        "state": trial.state.name.lower(),
        METRIC_NAME: trial.value,
        "epochs_run": len(accuracies),
        "best_epoch": 1 + accuracies.index(max(accuracies)) if accuracies else None,
        "baseline": is_baseline(trial),
        "datetime_start": _time(trial.datetime_start),
        "datetime_complete": _time(trial.datetime_complete),
        "duration_s": None if duration is None else round(duration.total_seconds(), 3),
    }
    values = configuration(trial)
    row |= {name: values.get(name) for name in params}
    row |= {column: trial.user_attrs.get(key) for key, column in RECORDED.items()}
    return row


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: ``TRIAL_COLUMNS``, the space's parameters, then ``RECORDED``.

    A parameter a trial did not have (a condition of the space was off) is empty.
    """
    params = param_columns(study)
    rows = [_trial_row(trial, params) for trial in study.get_trials(deepcopy=False)]
    return _typed(rows, [*TRIAL_COLUMNS, *params, *RECORDED.values()])


def epochs_table(study: optuna.Study) -> pd.DataFrame:
    """One row per trial and epoch it trained (epochs from 1): ``EPOCH_COLUMNS``."""
    rows: list[dict[str, Any]] = []
    for trial in study.get_trials(deepcopy=False):
        history = {key: trial.user_attrs.get(key) or [] for key in HISTORY_KEYS}
        for i in range(max(len(values) for values in history.values())):
            rows.append({"number": trial.number, "epoch": i + 1, **{
                key: values[i] if i < len(values) else None for key, values in history.items()}})
    return _typed(rows, list(EPOCH_COLUMNS))


def _typed(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    """``rows`` as a table whose columns have the type of their values: integers stay integers
    where a cell is empty (pandas' nullable Int64, written without ".0"), floats stay floats
    where every value happens to be whole, True/False stay booleans."""
    table = pd.DataFrame(rows, columns=columns, dtype=object)
    for column in columns:
        values = [v for v in table[column] if v is not None]
        if values and all(isinstance(v, bool) for v in values):
            table[column] = table[column].astype("boolean")
        elif values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            table[column] = table[column].astype("Int64")
        elif values and all(isinstance(v, int | float) and not isinstance(v, bool)
                            for v in values):
            table[column] = table[column].astype("Float64")
    return table
