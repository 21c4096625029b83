"""Replay a finished study's recorded learning curves under another pruner, at no training cost.

Every trial of a study the search wrote holds its per-epoch validation accuracies (the
``val_accuracy`` attribute). ``replay`` feeds them, trial by trial in the order the trials
started, to a real Optuna pruner on an in-memory study, exactly as the search reports them
(step = epoch), and notes where that pruner would have stopped each trial. What it cannot know
it says: a trial the study's own pruner stopped has no curve past its last epoch, so where
the other pruner would let it run on, its continuation is unknown (``unknown``); such a trial
then ends as pruned in the replay too, as it did in the study, so that later trials are judged
against what was really known. Trials ran one after another in the replay, so a study that
ran trials side by side (``--workers``) is replayed as if it had not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import optuna
from optuna.trial import TrialState

from tuning.study.protocol import METRIC_NAME

TOP = 5  # "would it have stopped a trial that ended in the top 5?"


@dataclass(frozen=True)
class Curve:
    """One recorded trial: its number, its validation accuracies per epoch, how it ended."""

    number: int
    accuracies: list[float]
    complete: bool  # ran all its epochs (not pruned, not failed)


@dataclass
class Outcome:
    """What a pruner would have done with a study's recorded curves."""

    epochs_run: int = 0  # epochs the replayed search trains (what is known of them)
    stopped: dict[int, int] = field(default_factory=dict)  # trial -> epoch it would stop after
    top_stopped: list[int] = field(default_factory=list)  # top-5 trials it would stop
    unknown: list[int] = field(default_factory=list)  # let past their recorded curve


def curves(study: optuna.Study) -> tuple[list[Curve], list[int]]:
    """The study's replayable curves in start order, and the trials without a curve."""
    trials = sorted(study.get_trials(deepcopy=False),
                    key=lambda t: (t.datetime_start is None, t.datetime_start, t.number))
    out, missing = [], []
    for trial in trials:
        accuracies = trial.user_attrs.get(METRIC_NAME)
        if trial.state in (TrialState.COMPLETE, TrialState.PRUNED) and accuracies:
            out.append(Curve(trial.number, [float(a) for a in accuracies],
                             trial.state == TrialState.COMPLETE))
        elif trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
            missing.append(trial.number)
    return out, missing


def top_trials(recorded: Sequence[Curve], top: int = TOP) -> list[int]:
    """The ``top`` completed trials by value (best accuracy over their epochs)."""
    done = sorted((c for c in recorded if c.complete),
                  key=lambda c: (-max(c.accuracies), c.number))
    return [c.number for c in done[:top]]


def replay(recorded: Sequence[Curve], pruner: optuna.pruners.BasePruner) -> Outcome:
    """Run ``recorded`` through ``pruner``; see the module's docstring for what is known."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", pruner=pruner,
                                sampler=optuna.samplers.RandomSampler(seed=0))
    best = set(top_trials(recorded))
    outcome = Outcome()
    for curve in recorded:
        trial = study.ask()
        stopped_at = None
        for epoch, accuracy in enumerate(curve.accuracies, start=1):
            trial.report(accuracy, epoch)
            outcome.epochs_run += 1
            if trial.should_prune():
                stopped_at = epoch
                break
        if stopped_at is not None:
            outcome.stopped[curve.number] = stopped_at
            if curve.number in best:
                outcome.top_stopped.append(curve.number)
            study.tell(trial, state=TrialState.PRUNED)
        elif curve.complete:
            study.tell(trial, max(curve.accuracies))
        else:  # stopped in the study, not by this pruner: what came next is unknown
            outcome.unknown.append(curve.number)
            study.tell(trial, state=TrialState.PRUNED)
    return outcome


def recorded_outcome(recorded: Sequence[Curve]) -> Outcome:
    """What the study's own pruner did, in the same terms (its pruned trials stopped where
    their curves end)."""
    best = set(top_trials(recorded))
    outcome = Outcome(epochs_run=sum(len(c.accuracies) for c in recorded))
    for curve in recorded:
        if not curve.complete:
            outcome.stopped[curve.number] = len(curve.accuracies)
            if curve.number in best:
                outcome.top_stopped.append(curve.number)
    return outcome


def settings(epochs: int) -> dict[str, Callable[[], optuna.pruners.BasePruner]]:
    """The pruners and settings a what-if compares, by the name it prints."""
    out: dict[str, Callable[[], optuna.pruners.BasePruner]] = {
        "none": optuna.pruners.NopPruner}
    for startup in (5, 10):
        for warmup in (0, 2, 3):  # steps are epochs from 1: a warm-up of 1 prunes as 0 does
            out[f"median startup {startup} warmup {warmup}"] = partial(
                optuna.pruners.MedianPruner, n_startup_trials=startup, n_warmup_steps=warmup)
    for factor in (2, 3, 4):
        out[f"successive-halving reduction {factor}"] = partial(
            optuna.pruners.SuccessiveHalvingPruner, min_resource=1, reduction_factor=factor)
    out["hyperband reduction 3"] = partial(optuna.pruners.HyperbandPruner, min_resource=1,
                                           max_resource=epochs, reduction_factor=3)
    return out
