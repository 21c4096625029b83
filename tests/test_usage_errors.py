"""Users' mistakes are one line and exit status 2; bugs are not disguised as them; --debug and
$FASHION_TUNE_DEBUG show the traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

import tuning.report
from tests.conftest import ROOT, Searched, run_main
from tuning.space.check import SpaceError
from tuning.study.errors import StudyError, UsageError


def test_the_library_errors_are_usage_errors_and_value_errors_are_not() -> None:
    assert issubclass(StudyError, UsageError) and issubclass(SpaceError, UsageError)
    assert not issubclass(UsageError, ValueError)


def _missing(tmp_path: Path) -> tuple[str, ...]:
    return ("--storage", f"sqlite:///{tmp_path / 'nope.db'}")


@pytest.mark.parametrize("tool", ["export", "report", "whatif", "dashboard", "confirm",
                                  "train"])
def test_a_users_mistake_is_one_line_with_exit_status_2(tool: str, tmp_path: Path) -> None:
    result = run_main(f"tuning.{tool}", *_missing(tmp_path), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("how", ["--debug", "env"])
def test_debug_shows_the_traceback_after_the_line(how: str, tmp_path: Path) -> None:
    args, env = ((*_missing(tmp_path), "--debug"), None) if how == "--debug" else (
        _missing(tmp_path), {"FASHION_TUNE_DEBUG": "1"})
    result = run_main("tuning.report", *args, cwd=tmp_path, env=env)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0].startswith("python -m tuning.report: error: ") and "no study" in lines[0]
    assert lines[1] == "Traceback (most recent call last):"
    assert "StudyError" in lines[-1]


def test_a_bug_is_not_reported_as_bad_input(searched: Searched, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    def slip(*args: object, **kwargs: object) -> None:
        raise ValueError("a slip in the code")

    monkeypatch.setattr(tuning.report, "write_report", slip)
    with pytest.raises(ValueError, match="a slip in the code"):  # its traceback, not exit 2
        run_main("tuning.report", "--storage", searched.url, "--out", str(tmp_path / "r"),
                 cwd=tmp_path)


def test_flag_checks_raise_usage_errors(tmp_path: Path) -> None:
    result = run_main("tuning.train", "--epochs", "0", *_missing(tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == ("python -m tuning.train: error: --epochs must be at "
                                     "least 1, but got 0.")


def test_the_readme_says_when_the_tutorials_trial_runs(searched: Searched) -> None:
    import optuna

    from tuning.study.baseline import BASELINE_AFTER, is_baseline

    readme = " ".join((ROOT / "README.md").read_text().split())
    study = optuna.load_study(study_name="fashion-mnist", storage=searched.url)
    baseline = [t.number for t in study.trials if is_baseline(t)]
    assert baseline == [len(study.trials) - 1]  # 4 trials: the tutorial's runs last
    assert f"as trial {BASELINE_AFTER}," in readme
    assert f"in a search of fewer than {BASELINE_AFTER + 1} trials, as its last" in readme
