"""Trials left RUNNING: a dead worker's, failed as stale, and this process's own, closed.

A trial stays RUNNING in the study until someone writes its end. A worker that died cannot:
``fail_stale_trials`` fails the trials whose heartbeats stopped (Optuna queues them again). A
worker that was stopped normally has Optuna write its failure, but that one write can fail;
``close_left_running`` writes it then. ``TAKEN`` is what a worker logs when it finds that
another process failed its live trial as stale (its heartbeats could not be written while the
database was away): it leaves the trial to the queued copy.
"""

from __future__ import annotations

import time
import warnings

import optuna
from optuna.trial import TrialState

# Tries to mark this process's trial failed where Optuna's write of that failed, and the first
# pause (doubling: 3 s in all, inside the supervisor's INTERRUPT_WAIT_S and a grace period).
CLOSE_ATTEMPTS = 5
CLOSE_PAUSE_S = 0.2
TAKEN = ("another process failed this trial as stale while this one could not write its "
         "heartbeats (was the database away?); its queued copy runs instead")


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail the running trials whose worker stopped sending heartbeats; they are queued again.

    Optuna does this itself when a trial starts; doing it before counting trials makes a
    dead worker's trial count as missing, not as running.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def close_left_running(study: optuna.Study, trial_id: int) -> bool:
    """Mark trial ``trial_id`` failed if it is still RUNNING; whether this call had to.

    Optuna marks a trial failed when its objective raises, but when that one write fails
    (a storage error as a stop lands, while every worker writes its own failure at once) the
    trial would stay RUNNING until its heartbeats go stale, or for good where there are none.
    Tried ``CLOSE_ATTEMPTS`` times; ``tuning.workers.trial_loop`` holds stop signals meanwhile.
    """
    storage = study._storage
    pause = CLOSE_PAUSE_S
    for attempt in range(1, CLOSE_ATTEMPTS + 1):
        try:
            if storage.get_trial(trial_id).state != TrialState.RUNNING:
                return False
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
            return True
        except optuna.exceptions.UpdateFinishedTrialError:
            return False  # another process (a stale-trial check) closed it meanwhile
        except Exception:  # the storage is still failing: wait, then try again
            if attempt == CLOSE_ATTEMPTS:
                return False  # its heartbeats stop with this process; it goes stale then
            time.sleep(pause)
            pause *= 2
    return False
