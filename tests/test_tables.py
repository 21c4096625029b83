"""The exported trials and per-epoch CSVs load into pandas as tidy, typed tables."""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
import pytest
from pandas.api import types

from tests.conftest import Searched, run_main
from tuning.study.protocol import HISTORY_KEYS, configuration

STUDY = "fashion-mnist"


@pytest.fixture(scope="module")
def exported(searched_extended: Searched, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export")
    result = run_main("tuning.export", "--storage", searched_extended.url, "--out", str(out),
                      cwd=out)
    assert result.returncode == 0, result.stderr
    assert str(out / f"{STUDY}-epochs.csv") in result.stdout
    return out


def test_one_row_per_trial_with_the_spaces_parameters_as_typed_columns(
        searched_extended: Searched, exported: Path) -> None:
    study = optuna.load_study(study_name=STUDY, storage=searched_extended.url)
    table = pd.read_csv(exported / f"{STUDY}-trials.csv")
    assert list(table["number"]) == [t.number for t in study.trials]
    assert not [c for c in table.columns
                if c.startswith(("params_", "user_attrs_", "system_attrs_", "value_"))]
    assert not table.map(lambda cell: isinstance(cell, str) and cell.startswith("[")).any().any()
    used = {name for trial in study.trials for name in configuration(trial)}
    assert used <= set(table.columns)  # sampled and fixed (batch_norm) parameters alike
    for column in ("number", "epochs_run", "batch_size", "hidden_layers", "hidden_width",
                   "seed", "torch_threads"):
        assert types.is_integer_dtype(table[column]), (column, table[column].dtype)
    for column in ("val_accuracy", "lr", "dropout", "weight_decay", "duration_s"):
        assert types.is_float_dtype(table[column]), (column, table[column].dtype)
    assert types.is_bool_dtype(table["baseline"]) and types.is_bool_dtype(table["batch_norm"])
    assert set(table["state"]) <= {"complete", "pruned", "fail", "running", "waiting"}
    for trial, row in zip(study.trials, table.itertuples(), strict=True):
        assert row.val_accuracy == pytest.approx(trial.value) or pd.isna(row.val_accuracy)
        assert row.optimizer == trial.params["optimizer"]
        assert pd.isna(row.momentum) == ("momentum" not in trial.params)  # a condition's gap
    times = pd.read_csv(exported / f"{STUDY}-trials.csv", parse_dates=["datetime_start"])
    assert types.is_datetime64_any_dtype(times["datetime_start"])


def test_the_per_epoch_curves_are_a_long_table(searched_extended: Searched,
                                               exported: Path) -> None:
    study = optuna.load_study(study_name=STUDY, storage=searched_extended.url)
    curves = pd.read_csv(exported / f"{STUDY}-epochs.csv")
    assert list(curves.columns) == ["number", "epoch", *HISTORY_KEYS]
    assert len(curves) == sum(len(t.user_attrs["val_accuracy"]) for t in study.trials)
    for trial in study.trials:
        rows = curves[curves["number"] == trial.number]
        assert list(rows["epoch"]) == list(range(1, len(rows) + 1))
        for key in HISTORY_KEYS:
            assert list(rows[key]) == pytest.approx(trial.user_attrs[key])
    wide = curves.pivot(index="epoch", columns="number", values="val_accuracy")
    assert list(wide.columns) == [t.number for t in study.trials]
