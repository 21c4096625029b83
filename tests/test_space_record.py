"""A study keeps its space file's text out of `optuna studies`, and older studies that hold it
as a user attribute are still read."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from tests.conftest import Searched
from tuning.space.check import SpaceError
from tuning.space.file import builtin_path
from tuning.study.baseline import tutorial_params
from tuning.study.lifecycle import create_or_resume
from tuning.study.protocol import SPACE_ATTR, StudyRecord, space_text

RECORD = StudyRecord(epochs=2, val_size=100, split_seed=0, train_size=500, seed=0)


def test_the_space_text_is_not_a_user_attribute(searched_extended: Searched) -> None:
    study = optuna.load_study(study_name="fashion-mnist", storage=searched_extended.url)
    assert SPACE_ATTR not in study.user_attrs
    assert study.user_attrs["space_name"] == "extended"
    assert space_text(study) == builtin_path("extended").read_text()
    summary = optuna.get_all_study_summaries(searched_extended.url)[0]
    assert all("\n" not in str(value) for value in summary.user_attrs.values())


@pytest.mark.e2e
def test_optuna_studies_prints_no_space_file(searched_extended: Searched, tmp_path: Path
                                             ) -> None:
    optuna_cli = Path(sys.executable).with_name("optuna")  # Optuna's own command
    done = subprocess.run([str(optuna_cli), "studies", "--storage", searched_extended.url],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "space_name" in done.stdout and "[batch_norm]" not in done.stdout
    assert len(done.stdout.splitlines()) < 10  # one row, not a TOML file per row


def _older_study(tmp_path: Path) -> optuna.Study:
    """A study as searches before 2026-12 left it: the extended space's text a user attribute."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    study = optuna.create_study(study_name="old", storage=url, direction="maximize")
    for key, value in {**RECORD.to_attrs(), SPACE_ATTR: builtin_path("extended").read_text(),
                       "space_name": "extended"}.items():
        study.set_user_attr(key, value)
    return study


def test_an_older_study_keeps_its_space(tmp_path: Path) -> None:
    study = _older_study(tmp_path)
    assert space_text(study) == builtin_path("extended").read_text()
    assert tutorial_params(study) is None  # the extended space's SGD range lacks lr 1e-3
    storage = study._storage
    extended = builtin_path("extended").read_text()
    resumed, was = create_or_resume(
        storage, "old", sampler_name="random", pruner_name="none", seed=0,
        record=StudyRecord(**{**RECORD.__dict__, "space": extended, "space_name": "extended"}))
    assert was and space_text(resumed) == extended
    tutorial = builtin_path("tutorial").read_text()
    with pytest.raises(SpaceError, match="searched in the space 'extended'"):
        create_or_resume(
            storage, "old", sampler_name="random", pruner_name="none", seed=0,
            record=StudyRecord(**{**RECORD.__dict__, "space": tutorial,
                                  "space_name": "tutorial"}))
