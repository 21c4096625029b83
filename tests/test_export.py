"""python -m tuning.export on real SQLite studies."""

from __future__ import annotations

import hashlib
import json
import os
import stat

import optuna
import pandas as pd
import pytest

from tests.conftest import run_cli, run_main, study_content
from tuning.results.files import best_config
from tuning.study.errors import StudyError


@pytest.mark.e2e
def test_export_writes_the_best_config_and_every_trial(searched, tmp_path):
    out = tmp_path / "out"
    result = run_cli("tuning.export", "--storage", searched.url, "--out", str(out),
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    config = json.loads((out / "fashion-mnist-best.json").read_text())
    study = optuna.load_study(study_name="fashion-mnist", storage=searched.url)
    best = study.best_trial
    assert config["trial_number"] == best.number
    assert config["params"] == best.params
    assert config["validation_accuracy"] == best.value
    assert config["study_name"] == "fashion-mnist"
    # conftest's SEARCHED_ARGS: --epochs 2, --seed left at its default 0
    assert config["epochs"] == 2 and config["seed"] == 0
    assert config["data_split"] == {"train_size": 500, "val_size": 100, "split_seed": 0}
    assert set(config["versions"]) >= {"python", "torch", "torchvision", "optuna"}
    assert len(config["history"]["val_accuracy"]) >= 1
    trials = pd.read_csv(out / "fashion-mnist-trials.csv")
    assert list(trials["number"]) == [t.number for t in study.trials]
    assert {"lr", "batch_size", "optimizer", "state", "val_accuracy"} <= set(trials.columns)
    curves = pd.read_csv(out / "fashion-mnist-epochs.csv")
    assert {"number", "epoch", "val_loss"} <= set(curves.columns)
    assert str(out / "fashion-mnist-best.json") in result.stdout


def test_exported_files_get_the_permissions_of_a_plain_open_not_owner_only(searched, tmp_path):
    result = run_main("tuning.export", "--storage", searched.url, "--out",
                      str(tmp_path / "perm"), cwd=tmp_path)  # in-process: this umask
    assert result.returncode == 0, result.stderr
    mask = os.umask(0o022)
    os.umask(mask)
    for name in ("fashion-mnist-best.json", "fashion-mnist-trials.csv",
                 "fashion-mnist-epochs.csv"):
        assert stat.S_IMODE((tmp_path / "perm" / name).stat().st_mode) == 0o666 & ~mask
    assert not list((tmp_path / "perm").glob(".*"))  # no temporary file left behind


def test_export_defaults_to_the_studies_folder(searched, tmp_path):
    copy = searched.copy_to(tmp_path)  # its exported JSON lands in tmp_path, not in studies/
    studies = tmp_path / "studies"
    studies.mkdir()
    copy.path.rename(studies / "fashion-mnist.db")
    assert not (studies / "fashion-mnist-best.json").exists()
    result = run_main("tuning.export", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (studies / "fashion-mnist-best.json").is_file()
    assert (studies / "fashion-mnist-trials.csv").is_file()


def test_export_of_a_missing_database_creates_nothing(tmp_path):
    result = run_main("tuning.export", "--storage", f"sqlite:///{tmp_path / 'nope.db'}",
                      cwd=tmp_path)
    assert result.returncode != 0
    assert "no study database" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_export_of_an_unknown_study_name_lists_the_studies_there(searched, tmp_path):
    before = study_content(searched.path)
    result = run_main("tuning.export", "--storage", searched.url, "--study-name", "other",
                      cwd=tmp_path)
    assert result.returncode != 0
    assert "no study 'other'" in result.stderr and "fashion-mnist" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert study_content(searched.path) == before


def test_export_of_a_study_without_completed_trials_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    study = optuna.create_study(study_name="empty", storage=url, direction="maximize")
    study.tell(study.ask(), state=optuna.trial.TrialState.PRUNED)
    before = hashlib.sha256((tmp_path / "empty.db").read_bytes()).hexdigest()
    result = run_main("tuning.export", "--storage", url, "--study-name", "empty",
                      "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode != 0
    assert "no completed trial" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert hashlib.sha256((tmp_path / "empty.db").read_bytes()).hexdigest() == before
    assert not (tmp_path / "out").exists()
    with pytest.raises(StudyError):
        best_config(study)
