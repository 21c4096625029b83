"""The study: create or resume (its record checked), adopt, counts."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import optuna
from optuna.trial import TrialState

from tuning.space.file import check_resume
from tuning.space.hyperparameters import distributions
from tuning.study.baseline import FINISHED, is_baseline
from tuning.study.errors import StudyError
from tuning.study.protocol import (
    BINDING_KEYS,
    METRIC_NAME,
    SEARCH_KEYS,
    SPACE_NAME_ATTR,
    StudyRecord,
    space_text,
    write_space,
)
from tuning.study.samplers import make_pruner, make_sampler, own_stream
from tuning.study.storage import Location, open_storage
from tuning.study.storage_checks import check_existing

DEFAULT_STUDY_NAME = "fashion-mnist"
# A study found with this suite's metric name but without its binding attributes is being set
# up by another process right now: wait this long for it to finish, polling this often.
SETUP_WAIT_S = 30
SETUP_POLL_S = 0.2


def load_study(location: Location, study_name: str) -> optuna.Study:
    """Load an existing study without creating anything.

    Raises:
        StudyError: there is no study file at ``location``, or no study of that name in it.
    """
    check_existing(location, must_exist=True)
    storage = open_storage(location)
    names = optuna.get_all_study_names(storage)
    if study_name not in names:
        raise StudyError(
            f"there is no study {study_name!r} in {location.shown}; studies there: "
            f"{', '.join(names) or 'none'}."
        )
    return optuna.load_study(study_name=study_name, storage=storage)


def count_states(study: optuna.Study) -> dict[str, int]:
    """Trials per end state: {"complete": n, "pruned": n, "fail": n}."""
    states = [t.state for t in study.get_trials(deepcopy=False)]
    return {
        state.name.lower(): states.count(state)
        for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    }


def count_finished(study: optuna.Study) -> int:
    """Trials that count toward the target: completed or pruned."""
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def create_or_resume(
    storage: optuna.storages.BaseStorage,
    study_name: str,
    *,
    sampler_name: str,
    pruner_name: str,
    seed: int,
    record: StudyRecord,
    worker: int = 0,
    creator: bool = True,
    where: str = "this storage",
    on_wait: Callable[[str], None] | None = None,
) -> tuple[optuna.Study, bool]:
    """Create the study, or load it if it exists; return it and whether it was resumed.

    A new study stores ``record`` as study user attributes (the tutorial's own configuration
    is queued later, by ``baseline.queue_baseline_if_due``), with the sampler, pruner and seed
    it is searched with. A resumed study must have been created with the same binding settings
    (``protocol.BINDING_KEYS``), else its trials would not be comparable, and the same sampler,
    pruner and seed (``protocol.SEARCH_KEYS``, where recorded), else the study would no longer
    say what it was searched with.

    An existing study without the record is adopted at once where nothing of this suite was
    written on it (``optuna create-study``, the usual first step of a distributed run: it is
    then new, not resumed); one whose creator is writing its record now is waited for, and
    ``on_wait`` gets a line saying so.

    A ``worker`` (from 1) of a parallel run, a process that finds the study created by another
    machine a moment ago (``creator`` False) and any that finds trials of others
    running get a sampler stream of their own (``own_stream``).

    Raises:
        StudyError: the existing study was not made by this suite, samples its parameters
            otherwise than this search space (``where`` names its storage in the message;
            nothing is written then), or was created with other binding settings or
            another sampler, pruner or seed.
    """
    record = replace(record, sampler=sampler_name, pruner=pruner_name, seed=seed)
    attrs = record.to_attrs()
    pruner = make_pruner(pruner_name, record.epochs)
    if study_name in optuna.get_all_study_names(storage):
        study = optuna.load_study(study_name=study_name, storage=storage, pruner=pruner)
        refuse_foreign(study, where)
        stored = _wait_for_setup(study, attrs, on_wait)
        adopted = stored is None
        if stored is None:  # made empty beforehand, or its creator died half-way: set it up
            _set_up(study, attrs, record.space)
            stored = study.user_attrs
            creator = True
        check_resume(study_name, (space_text(study), stored.get(SPACE_NAME_ATTR)),
                     (record.space, record.space_name))
        for key in (*BINDING_KEYS, *SEARCH_KEYS):
            if key in stored and key in attrs and stored[key] != attrs[key]:
                flag = "--" + key.replace("_", "-")
                raise StudyError(
                    f"study {study_name!r} was created with {key}={stored[key]}, but this run "
                    f"asks for {attrs[key]}; rerun with {flag} {stored[key]} to resume it, or "
                    "pick another --study-name."
                )
        trials = study.get_trials(deepcopy=False)
        # Alone on the study, a run is reproducible; beside other workers it never is, and
        # then it must not draw what they draw.
        # A study without trials may have been created a moment ago by a process that starts
        # beside this one (the same command on two machines): both would draw the same points.
        shared = (worker or not creator or not trials
                  or any(t.state == TrialState.RUNNING for t in trials))
        stream = own_stream(worker) if shared else ()
        study.sampler = make_sampler(sampler_name, seed, len(trials), stream)
        return study, not adopted
    try:
        study = optuna.create_study(
            study_name=study_name,
            storage=storage,
            sampler=make_sampler(sampler_name, seed),
            pruner=pruner,
            direction="maximize",
        )
    except optuna.exceptions.DuplicatedStudyError:  # another machine created it just now
        return create_or_resume(storage, study_name, sampler_name=sampler_name,
                                pruner_name=pruner_name, seed=seed, record=record, worker=worker,
                                creator=False, where=where, on_wait=on_wait)
    _set_up(study, attrs, record.space)
    return study, False


def refuse_foreign(study: optuna.Study, where: str) -> None:
    """Refuse a study this search must not add trials to, before anything is written.

    A study made by other means (plain Optuna, another tool) has trials but lacks the record
    the search writes first; one whose trials sampled a parameter otherwise (another range, no
    log scale, other choices) or that minimises would fail or mislead every trial added to it.
    A study with no trial (or only the tutorial's, which studies made before it was deferred
    queued first) is being set up by another process right now and is waited for instead
    (``_wait_for_setup``).

    Raises:
        StudyError: one line naming the study, ``where`` it is and what differs.
    """
    name = f"study {study.study_name!r} in {where}"
    fix = "pick another --study-name (or --storage) for this search."
    if study.directions != [optuna.study.StudyDirection.MAXIMIZE]:
        raise StudyError(f"{name} {'/'.join(d.name.lower() for d in study.directions)}s "
                         f"its objective, but this search maximises validation accuracy; {fix}")
    trials = study.get_trials(deepcopy=False)
    missing = [key for key in BINDING_KEYS if key not in study.user_attrs]
    own = [t for t in trials if not is_baseline(t)]
    if missing and own:
        raise StudyError(f"{name} was not made by python -m tuning.search: it has {len(own)} "
                         f"trial(s) of its own but no {', '.join(missing)}; {fix}")
    if space_text(study) is not None:
        return  # a study with its space on record: create_or_resume compares the spaces
    expected = distributions()  # older studies were all searched in the tutorial space
    for trial in trials:
        for param, dist in trial.distributions.items():
            if param not in expected:
                raise StudyError(f"{name} has a parameter {param!r} that this search space "
                                 f"lacks (trial {trial.number}); {fix}")
            if dist != expected[param]:
                raise StudyError(f"{name} sampled {param} as {dist} (trial {trial.number}), "
                                 f"this search space samples it as {expected[param]}; {fix}")


def _set_up(study: optuna.Study, attrs: dict[str, Any], space: str | None = None) -> None:
    """Record ``attrs`` and the ``space`` file's text, the binding attributes last: another
    process that loads the study meanwhile waits for those (``_wait_for_setup``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([METRIC_NAME])  # the dashboard's axis label
    if space is not None:
        write_space(study, space)
    for key, value in sorted(attrs.items(), key=lambda item: item[0] in BINDING_KEYS):
        study.set_user_attr(key, value)


def _wait_for_setup(study: optuna.Study, attrs: dict[str, Any],
                    on_wait: Callable[[str], None] | None = None) -> dict[str, Any] | None:
    """The study's user attributes once its creator has recorded the binding ones.

    Returns None at once for a study that nothing of this suite was written on (no metric name:
    ``_set_up`` writes that first), which the caller adopts; and None if the binding attributes
    are still missing after ``SETUP_WAIT_S`` (the creator died during set-up). A study that
    already has trials of its own never gets here without them: ``refuse_foreign`` refused it
    first.
    """
    wanted = [key for key in BINDING_KEYS if key in attrs]
    deadline = time.monotonic() + SETUP_WAIT_S
    told = False
    while True:
        stored = study.user_attrs
        if all(key in stored for key in wanted):
            return stored
        trials = study.get_trials(deepcopy=False)
        if any(not is_baseline(t) for t in trials):
            return stored
        if study.metric_names is None:  # made by optuna create-study or the like: adopt it
            return None
        if time.monotonic() >= deadline:
            return None
        if on_wait is not None and not told:
            on_wait(f"study {study.study_name!r} has no settings recorded yet: waiting up to "
                    f"{SETUP_WAIT_S} s for the process creating it to record them.")
            told = True
        time.sleep(SETUP_POLL_S)
