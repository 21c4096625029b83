"""The tutorial's own configuration as a trial of every study: when it is queued, how it is known.

A new study runs the tutorial's configuration (SGD, lr 1e-3, batch 64) once, so every study
shows how far tuning moved from it. It is queued once the study holds ``BASELINE_AFTER``
trials (the sampler's random start-up ones), or earlier when the run's target leaves room for
only one more trial, so a short search still has it. The pruner judges it like any trial: the
defaults were chosen on recorded curves, where a first, unprunable baseline cost about a tenth
of the time to 88% (docs/decisions.md, "Search defaults chosen on recorded learning curves").
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import optuna
from optuna.trial import TrialState

from tuning.space.file import study_space
from tuning.space.hyperparameters import TUTORIAL
from tuning.study.protocol import BASELINE_ATTRS

BASELINE_AFTER = 10  # trials before the tutorial's: as many as TPE's random start-up trials
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)  # what counts toward --n-trials
# States in which the tutorial baseline trial needs no second copy in the queue.
KEPT = (*FINISHED, TrialState.WAITING, TrialState.RUNNING)


def is_baseline(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether ``trial`` is the tutorial's own configuration, queued by this module."""
    return all(trial.user_attrs.get(key) == value for key, value in BASELINE_ATTRS.items())


def tutorial_params(study: optuna.Study) -> dict[str, Any] | None:
    """The tutorial's configuration as the study's parameters, or None where its space
    (``study_space``) does not hold it (the extended space's SGD range, for one)."""
    return study_space(study).baseline(TUTORIAL.as_params(), asdict(TUTORIAL))


def queue_baseline_if_due(study: optuna.Study, target: int, params: dict[str, Any]) -> bool:
    """Queue ``params`` (``tutorial_params``) if due and not in the study yet; say if queued.

    Due: the study holds ``BASELINE_AFTER`` finished or running trials, or all but one of
    ``target``. A baseline that failed (its worker died) is queued again. The search calls
    this under its start gate, just before it starts a trial, so the processes of one machine
    never queue it twice.
    """
    trials = study.get_trials(deepcopy=False)
    if any(is_baseline(t) and t.state in KEPT for t in trials):
        return False
    counted = sum(t.state in (*FINISHED, TrialState.RUNNING) for t in trials)
    if counted < min(BASELINE_AFTER, target - 1):
        return False
    study.enqueue_trial(params, user_attrs=dict(BASELINE_ATTRS))
    return True


def finished_baseline(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The tutorial's trial once it completed or was pruned; None before (or never queued)."""
    return next((t for t in study.get_trials(deepcopy=False, states=FINISHED)
                 if is_baseline(t)), None)


def pruned_at(trial: optuna.trial.FrozenTrial) -> tuple[int, float] | None:
    """(epoch, validation accuracy) where the pruner stopped ``trial``; None if it reported
    nothing."""
    step = trial.last_step
    return None if step is None else (step, trial.intermediate_values[step])
