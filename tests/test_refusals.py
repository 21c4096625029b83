"""Studies the search must not write into, and more workers than cores: one line, no change."""

from __future__ import annotations

import optuna
import pytest

from tests.conftest import run_main, study_content
from tuning.workers.cores import cpu_cores


def _foreign(path, *, direction="maximize", log=True, attrs=True, extra=False) -> None:
    """A study made with plain Optuna, as a user's own script would."""
    study = optuna.create_study(study_name="fashion-mnist", storage=f"sqlite:///{path}",
                                direction=direction)
    trial = study.ask()
    trial.suggest_float("lr", 1e-5, 1e-1, log=log)
    if extra:
        trial.suggest_float("dropout", 0.0, 0.5)
    study.tell(trial, 0.5)
    if attrs:
        for key, value in (("epochs", 1), ("val_size", 100), ("split_seed", 0)):
            study.set_user_attr(key, value)


@pytest.mark.parametrize(("kind", "message"), [
    (dict(attrs=False), "was not made by python -m tuning.search: it has 1 trial(s) of its own "
                        "but no epochs, val_size, split_seed"),
    (dict(log=False), "sampled lr as FloatDistribution(high=0.1, log=False, low=1e-05, step=None)"
                      " (trial 0), this search space samples it as FloatDistribution(high=0.1, "
                      "log=True"),
    (dict(extra=True), "has a parameter 'dropout' that this search space lacks"),
    (dict(direction="minimize"), "minimizes its objective, but this search maximises"),
])
def test_a_study_that_is_not_ours_is_refused_and_left_as_it_was(tmp_path, idx_dir, kind,
                                                               message):
    path = tmp_path / "theirs.db"
    _foreign(path, **kind)
    before = study_content(path)
    result = run_main("tuning.search", "--storage", f"sqlite:///{path}", "--data-dir",
                      str(idx_dir), "--val-size", "100", "--epochs", "1", "--n-trials", "2",
                      cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"study 'fashion-mnist' in sqlite:///{path}" in lines[0]
    assert message in lines[0]
    assert study_content(path) == before  # no trial, no attribute written
    trials = optuna.load_study(study_name="fashion-mnist", storage=f"sqlite:///{path}").trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE]


@pytest.mark.parametrize("tool", ["tuning.search", "tuning.confirm"])
def test_more_workers_than_cores_is_refused_in_one_line(tmp_path, idx_dir, tool):
    too_many = cpu_cores() + 1
    result = run_main(tool, "--data-dir", str(idx_dir), "--workers", str(too_many),
                      cwd=tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"--workers {too_many} is more than the {cpu_cores()} CPU core(s)" in result.stderr
    assert f"Use --workers {cpu_cores()} or fewer" in result.stderr
    assert not (tmp_path / "studies").exists()  # no study file, not even its folder
