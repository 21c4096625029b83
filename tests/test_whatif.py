"""python -m tuning.whatif replays a study's recorded curves under other pruners."""

from __future__ import annotations

import re

import optuna
from optuna.trial import TrialState, create_trial

from tests.conftest import run_main
from tuning.results.replay import curves, recorded_outcome, replay, settings, top_trials

# Six good trials, then a poor one, then one the study's pruner stopped after epoch 1.
CURVES = [[0.50, 0.60, 0.70], [0.80, 0.85, 0.90], [0.70, 0.75, 0.80], [0.60, 0.70, 0.75],
          [0.65, 0.72, 0.78], [0.75, 0.80, 0.86], [0.20, 0.30, 0.40]]
PRUNED = [0.10]


def _study(path):
    url = f"sqlite:///{path}"
    study = optuna.create_study(study_name="s", storage=url, direction="maximize")
    for acc in CURVES:
        study.add_trial(create_trial(value=max(acc), user_attrs={"val_accuracy": acc},
                                     intermediate_values=dict(enumerate(acc, 1))))
    study.add_trial(create_trial(state=TrialState.PRUNED, user_attrs={"val_accuracy": PRUNED},
                                 intermediate_values={1: PRUNED[0]}))
    study.add_trial(create_trial(value=0.5))  # no curve: not replayable
    return study, url


def test_the_replay_stops_what_the_pruner_would_and_says_what_is_unknown(tmp_path):
    study, _ = _study(tmp_path / "s.db")
    recorded, missing = curves(study)
    assert missing == [8] and len(recorded) == 8
    assert top_trials(recorded) == [1, 5, 2, 4, 3]
    none = replay(recorded, settings(3)["none"]())
    assert none.epochs_run == 7 * 3 + 1 and not none.stopped and none.unknown == [7]
    median = replay(recorded, settings(3)["median startup 5 warmup 0"]())
    # After 5 finished trials, trial 5 is above the median and trial 6 below from epoch 1;
    # trial 7's one recorded epoch is below it too.
    assert median.stopped == {6: 1, 7: 1} and median.top_stopped == [] and not median.unknown
    assert median.epochs_run == 6 * 3 + 1 + 1
    own = recorded_outcome(recorded)
    assert own.stopped == {7: 1} and own.epochs_run == 22


def test_the_whatif_tool_prints_a_row_per_pruner(tmp_path):
    _, url = _study(tmp_path / "s.db")
    result = run_main("tuning.whatif", "--study-name", "s", "--storage", url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "top 5 by value: trials 1, 5, 2, 4, 3" in out
    assert "Not replayable (no recorded curve): trials 8." in out
    assert re.search(r"^median startup 5 warmup 0 +20 +2 +2  none +-$", out, re.M)
    assert re.search(r"^none +22 +0 +0  none +1$", out, re.M)
    assert len(re.findall(r"^(median|successive-halving|hyperband|none|recorded)", out,
                          re.M)) == 12


def test_a_study_without_curves_is_one_line(tmp_path):
    url = f"sqlite:///{tmp_path / 'e.db'}"
    optuna.create_study(study_name="e", storage=url)
    result = run_main("tuning.whatif", "--study-name", "e", "--storage", url, cwd=tmp_path)
    assert result.returncode == 2
    assert "has no completed trial with a recorded curve yet" in result.stderr


def test_the_whatif_tool_reads_the_sessions_searched_study(searched, tmp_path):
    result = run_main("tuning.whatif", "--storage", searched.url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "recorded: the study's own pruner" in result.stdout
