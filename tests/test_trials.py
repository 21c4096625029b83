"""The trial loop's promise after a stop: no trial of this process is left RUNNING.

Optuna marks a trial failed when its objective raises; if that one write fails (the storage
errs as every stopped worker writes its failure at once; seen once in CI as a trial left
RUNNING after its supervisor was killed), ``run_trials`` closes the trial itself. The storage
here is a real SQLite study whose first write of a failure is refused, as a busy one would.
And a trial that another process failed as stale meanwhile (its heartbeats went silent while a
database server restarted) is left to its queued copy: the loop goes on, with no traceback.
"""

from __future__ import annotations

import signal

import optuna
import pytest
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from tuning.study.stale import close_left_running
from tuning.workers.signals import Stopped
from tuning.workers.trial_loop import run_trials

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


def test_a_trial_another_process_failed_as_stale_is_left_and_the_loop_goes_on(tmp_path, caplog):
    # As after a database restart longer than the heartbeat grace: another worker's stale-trial
    # check fails this worker's live trial (and queues a copy); its next write is refused.
    study = _study(tmp_path, refusals=0)
    other = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 's.db'}")

    def objective(trial: optuna.Trial) -> float:
        if trial.number == 0:
            other._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            trial.report(0.5, 1)  # refused: the trial is finished
        return 0.9

    run_trials(study, objective, 2, storage_url="sqlite:///x", heartbeat=None)
    assert [t.state for t in study.trials] == [TrialState.FAIL, *[TrialState.COMPLETE] * 2]
    failures = [r for r in caplog.records if "Trial 0 failed" in r.getMessage()]
    assert failures and not [r for r in failures if r.exc_info], "no traceback for it"
    assert "another process failed this trial as stale" in failures[0].getMessage()


def test_any_other_error_in_a_trial_still_ends_the_loop(tmp_path):
    study = _study(tmp_path, refusals=0)

    def objective(trial: optuna.Trial) -> float:
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        run_trials(study, objective, 2, storage_url="sqlite:///x", heartbeat=None)
    assert [t.state for t in study.trials] == [TrialState.FAIL]


def test_a_trial_failed_elsewhere_after_its_last_write_is_left_too(tmp_path):
    study = _study(tmp_path, refusals=0)
    other = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 's.db'}")

    def objective(trial: optuna.Trial) -> float:
        trial.report(0.5, 1)
        if trial.number == 0:  # failed as stale between its last report and Optuna's tell
            other._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        return 0.9

    run_trials(study, objective, 1, storage_url="sqlite:///x", heartbeat=None)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]
