"""python -m tuning.export on real SQLite studies."""

from __future__ import annotations

import hashlib
import json
import os
import stat

import optuna
import pandas as pd
import pytest

from tests.conftest import run_cli, study_content
from tuning.artifacts import best_config
from tuning.errors import StudyError


@pytest.fixture
def searched(tmp_path, idx_dir):
    """A finished 3-trial study in tmp_path/s.db."""
    result = run_cli(
        "tuning.search", "--storage", f"sqlite:///{tmp_path / 's.db'}", "--data-dir",
        str(idx_dir), "--val-size", "100", "--n-trials", "3", "--epochs", "2", "--seed", "3",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    return tmp_path


def test_export_writes_the_best_config_and_every_trial(searched):
    url = f"sqlite:///{searched / 's.db'}"
    result = run_cli("tuning.export", "--storage", url, "--out", str(searched / "out"),
                     cwd=searched)
    assert result.returncode == 0, result.stderr
    config = json.loads((searched / "out" / "fashion-mnist-best.json").read_text())
    study = optuna.load_study(study_name="fashion-mnist", storage=url)
    best = study.best_trial
    assert config["trial_number"] == best.number
    assert config["params"] == best.params
    assert config["validation_accuracy"] == best.value
    assert config["study_name"] == "fashion-mnist"
    assert config["epochs"] == 2 and config["seed"] == 3
    assert config["data_split"] == {"train_size": 500, "val_size": 100, "split_seed": 0}
    assert set(config["versions"]) >= {"python", "torch", "torchvision", "optuna"}
    assert len(config["history"]["val_accuracy"]) >= 1
    trials = pd.read_csv(searched / "out" / "fashion-mnist-trials.csv")
    assert list(trials["number"]) == [t.number for t in study.trials]
    assert {"params_lr", "params_batch_size", "params_optimizer", "state",
            "user_attrs_val_loss"} <= set(trials.columns)
    assert str(searched / "out" / "fashion-mnist-best.json") in result.stdout


def test_exported_files_get_the_permissions_of_a_plain_open_not_owner_only(searched):
    url = f"sqlite:///{searched / 's.db'}"
    result = run_cli("tuning.export", "--storage", url, "--out", str(searched / "perm"),
                     cwd=searched, env={})  # the test process's umask, inherited
    assert result.returncode == 0, result.stderr
    mask = os.umask(0o022)
    os.umask(mask)
    for name in ("fashion-mnist-best.json", "fashion-mnist-trials.csv"):
        assert stat.S_IMODE((searched / "perm" / name).stat().st_mode) == 0o666 & ~mask
    assert not list((searched / "perm").glob(".*"))  # no temporary file left behind


def test_export_defaults_to_the_studies_folder(searched):
    (searched / "studies").mkdir()
    (searched / "s.db").rename(searched / "studies" / "fashion-mnist.db")
    result = run_cli("tuning.export", cwd=searched)
    assert result.returncode == 0, result.stderr
    assert (searched / "studies" / "fashion-mnist-best.json").is_file()
    assert (searched / "studies" / "fashion-mnist-trials.csv").is_file()


def test_export_of_a_missing_database_creates_nothing(tmp_path):
    result = run_cli("tuning.export", "--storage", f"sqlite:///{tmp_path / 'nope.db'}",
                     cwd=tmp_path)
    assert result.returncode != 0
    assert "no study database" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_export_of_an_unknown_study_name_lists_the_studies_there(searched):
    db = searched / "s.db"
    before = study_content(db)
    result = run_cli("tuning.export", "--storage", f"sqlite:///{db}", "--study-name", "other",
                     cwd=searched)
    assert result.returncode != 0
    assert "no study 'other'" in result.stderr and "fashion-mnist" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert study_content(db) == before


def test_export_of_a_study_without_completed_trials_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    study = optuna.create_study(study_name="empty", storage=url, direction="maximize")
    study.tell(study.ask(), state=optuna.trial.TrialState.PRUNED)
    before = hashlib.sha256((tmp_path / "empty.db").read_bytes()).hexdigest()
    result = run_cli("tuning.export", "--storage", url, "--study-name", "empty",
                     "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode != 0
    assert "no completed trial" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert hashlib.sha256((tmp_path / "empty.db").read_bytes()).hexdigest() == before
    assert not (tmp_path / "out").exists()
    with pytest.raises(StudyError):
        best_config(study)
