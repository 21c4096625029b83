"""Which trial a study stands for: the best by value, or the confirmed best mean.

A trial's value is one seed's best validation accuracy over its epochs, so the best of sixty
trials is partly luck: the five best values of a 60-trial study lie within 0.1-0.3 points of
each other, no more than the 0.3-point standard error of 10,000 validation images, and a maximum
over ten noisy epochs favours noisy configurations. ``python -m tuning.confirm`` therefore
trains the best configurations again from fresh seeds and records every run on the study;
where that confirmation is finished and covers the study's trials, the configuration with the
highest mean last-epoch validation accuracy is the study's choice (the last epoch, because that
is the epoch the default retrain on train+val ships). Export, train, report and the benchmarks
all ask this module.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuning.study.errors import StudyError
from tuning.study.protocol import CONFIRM_PLAN_ATTR, confirm_runs_key, derive_seed

BY_VALUE = "no confirmation: the best trial by value"  # how the unconfirmed choice is named


@dataclass(frozen=True)
class Run:
    """One fresh-seed run of one trial's configuration."""

    trial: int
    seed: int
    last_val_accuracy: float
    best_val_accuracy: float
    seconds: float  # its share of the wall time where seeds trained together
    threads: int
    precision: str = "fp32"
    together: int = 1  # seeds trained as one stacked model with it, itself included


@dataclass(frozen=True)
class Choice:
    """The trial a study stands for, and what chose it."""

    trial: FrozenTrial
    selected_by: str  # a line saying how it was chosen
    table: list[dict[str, Any]] | None  # every confirmed trial, best mean first; None: by value


def candidates(study: optuna.Study, top: int) -> list[FrozenTrial]:
    """The ``top`` best completed trials, one per distinct configuration."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    chosen: list[FrozenTrial] = []
    for trial in sorted(trials, key=lambda t: (-(t.value or 0.0), t.number)):
        if all(trial.params != other.params for other in chosen):
            chosen.append(trial)
        if len(chosen) == top:
            break
    return chosen


def recorded_runs(study: optuna.Study, trial_number: int) -> list[dict[str, Any]]:
    """The fresh-seed runs already recorded for ``trial_number`` (one dict per run)."""
    return list(study.user_attrs.get(confirm_runs_key(trial_number), {}).get("runs", []))


def record_run(study: optuna.Study, trial: FrozenTrial, run: Run) -> None:
    """Append ``run`` to its trial's record on the study (read, extend, write back)."""
    runs = [r for r in recorded_runs(study, trial.number) if r["seed"] != run.seed]
    runs.append({"seed": run.seed, "last_val_accuracy": run.last_val_accuracy,
                 "best_val_accuracy": run.best_val_accuracy, "seconds": round(run.seconds, 3),
                 "torch_threads": run.threads, "precision": run.precision,
                 "trained_with_seeds": run.together})
    last = [r["last_val_accuracy"] for r in runs]
    study.set_user_attr(confirm_runs_key(trial.number), {
        "params": trial.params,
        "search_value": trial.value,
        "mean_last_val_accuracy": statistics.fmean(last),
        "runs": runs,
    })


def confirmed(study: optuna.Study) -> tuple[Choice | None, str]:
    """The confirmed choice of ``study``, or None, and a line saying why.

    None where no confirmation was run, where it is unfinished (a planned trial lacks runs),
    or where the study has completed trials that the confirmation did not see.
    """
    plan = study.user_attrs.get(CONFIRM_PLAN_ATTR)
    if not plan:
        return None, BY_VALUE
    seeds, planned = int(plan["seeds"]), [int(n) for n in plan["trials"]]
    trials = {t.number: t for t in study.get_trials(deepcopy=False,
                                                    states=(TrialState.COMPLETE,))}
    rerun = f"run python -m tuning.confirm --study-name {study.study_name} again"
    if len(trials) != plan["complete_trials"]:
        return None, (f"the confirmation saw {plan['complete_trials']} completed trials, the "
                      f"study now has {len(trials)}: the best trial by value ({rerun})")
    table: list[dict[str, Any]] = []
    for number in planned:
        fresh = {derive_seed(plan["study_seed"], number, k) for k in range(1, seeds + 1)}
        runs = [r for r in recorded_runs(study, number) if r["seed"] in fresh]
        if len(runs) < seeds:
            return None, (f"the confirmation is unfinished (trial {number}: {len(runs)} of "
                          f"{seeds} runs): the best trial by value ({rerun})")
        last = [r["last_val_accuracy"] for r in runs]
        table.append({"trial": number, "params": trials[number].params,
                      "search_value": trials[number].value,
                      "mean_last_val_accuracy": statistics.fmean(last),
                      "stdev_last_val_accuracy": statistics.stdev(last) if seeds > 1 else None,
                      "runs": len(runs)})
    table.sort(key=lambda row: (-row["mean_last_val_accuracy"], row["trial"]))
    why = (f"confirmed: the highest mean last-epoch validation accuracy over {seeds} fresh "
           f"seeds among the {len(table)} best trials")
    return Choice(trials[table[0]["trial"]], why, table), why


def chosen(study: optuna.Study) -> Choice:
    """The trial the study stands for: confirmed where possible, else the best by value.

    Raises:
        StudyError: the study has no completed trial.
    """
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise StudyError(
            f"study {study.study_name!r} has no completed trial yet; run "
            f"python -m tuning.search --study-name {study.study_name} first."
        )
    choice, why = confirmed(study)
    return choice if choice is not None else Choice(study.best_trial, why, None)
