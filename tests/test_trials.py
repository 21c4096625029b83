"""The trial loop's promise after a stop: no trial of this process is left RUNNING.

Optuna marks a trial failed when its objective raises; if that one write fails (the storage
errs as every stopped worker writes its failure at once; seen once in CI as a trial left
RUNNING after its supervisor was killed), ``run_trials`` closes the trial itself. The storage
here is a real SQLite study whose first write of a failure is refused, as a busy one would.
"""

from __future__ import annotations

import signal

import optuna
import pytest
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from tuning.signals import Stopped
from tuning.trials import close_left_running, run_trials

pytestmark = pytest.mark.fast


class RefusesFirstFailure(RDBStorage):
    """A real SQLite storage whose first ``refusals`` writes of FAIL raise, as a broken one."""

    def __init__(self, url: str, refusals: int = 1) -> None:
        super().__init__(url)
        self.refusals = refusals

    def set_trial_state_values(self, trial_id, state, values=None):  # type: ignore[override]
        if state == TrialState.FAIL and self.refusals > 0:
            self.refusals -= 1
            raise optuna.exceptions.StorageInternalError("database is locked (injected)")
        return super().set_trial_state_values(trial_id, state, values)


def _study(tmp_path, refusals: int) -> optuna.Study:
    storage = RefusesFirstFailure(f"sqlite:///{tmp_path / 's.db'}", refusals)
    return optuna.create_study(study_name="s", storage=storage, direction="maximize")


def _stopped_in_training(trial: optuna.Trial) -> float:
    trial.report(0.5, 1)
    raise Stopped(signal.SIGTERM)


def test_a_stopped_trial_whose_failure_optunas_write_lost_is_closed_by_the_loop(tmp_path):
    study = _study(tmp_path, refusals=1)
    with pytest.raises(Stopped):  # the stop, not Optuna's complaint about its lost write
        run_trials(study, _stopped_in_training, 3, storage_url="sqlite:///x", heartbeat=None)
    assert [t.state for t in study.trials] == [TrialState.FAIL]
    assert study.trials[0].intermediate_values == {1: 0.5}


def test_without_the_loops_close_the_trial_would_stay_running(tmp_path):
    # The fault is real: Optuna alone leaves the trial RUNNING when its write of FAIL fails.
    study = _study(tmp_path, refusals=1)
    with pytest.raises(AssertionError):  # Optuna's "Should not reach." for a RUNNING trial
        study.optimize(_stopped_in_training, n_trials=1)
    assert [t.state for t in study.trials] == [TrialState.RUNNING]
    assert close_left_running(study, study.trials[0]._trial_id) is True
    assert [t.state for t in study.trials] == [TrialState.FAIL]


def test_close_retries_a_failing_storage_and_leaves_finished_trials_alone(tmp_path):
    study = _study(tmp_path, refusals=3)
    trial = study.ask()
    assert close_left_running(study, trial._trial_id) is True  # after 3 refusals
    assert study.trials[0].state == TrialState.FAIL
    assert close_left_running(study, trial._trial_id) is False
    done = study.ask()
    study.tell(done, 0.9)
    assert close_left_running(study, done._trial_id) is False
    assert study.trials[1].state == TrialState.COMPLETE and study.trials[1].value == 0.9


def test_a_stop_in_training_fails_the_trial_and_reaches_the_caller(tmp_path):
    study = _study(tmp_path, refusals=0)
    with pytest.raises(Stopped):
        run_trials(study, _stopped_in_training, 3, storage_url="sqlite:///x", heartbeat=None)
    assert [t.state for t in study.trials] == [TrialState.FAIL]
