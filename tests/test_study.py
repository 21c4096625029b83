from __future__ import annotations

import dataclasses
import hashlib
import re
import sqlite3
import sys
import threading
import time
import warnings

import optuna
import pytest

import tuning.study.lifecycle
from tuning.cli.search_output import summary
from tuning.study.baseline import BASELINE_AFTER, queue_baseline_if_due, tutorial_params
from tuning.study.errors import StudyError
from tuning.study.lifecycle import create_or_resume
from tuning.study.protocol import StudyRecord
from tuning.study.samplers import PRUNERS, SAMPLERS, make_pruner, make_sampler
from tuning.study.storage import Location
from tuning.study.storage import open_storage as open_location
from tuning.study.storage_checks import check_existing

RECORD = StudyRecord(epochs=3, val_size=100, split_seed=0, train_size=500, seed=0,
                     sampler="tpe", pruner="median")
ATTRS = {"epochs": 3, "val_size": 100, "split_seed": 0, "train_size": 500, "seed": 0,
         "sampler": "tpe", "pruner": "median"}  # as create_or_resume records them below


def check_storage(url: str, *, must_exist: bool = False) -> None:
    """Parse ``url`` and check its file, as every tool does before opening a study."""
    check_existing(Location.parse(url), must_exist=must_exist)


def open_storage(url: str, **kwargs):
    return open_location(Location.parse(url), **kwargs)


def test_the_record_round_trips_through_study_attributes():
    assert RECORD.to_attrs() == ATTRS
    assert StudyRecord.from_attrs(ATTRS, "s") == RECORD
    with pytest.raises(StudyError, match="lacks val_size"):
        StudyRecord.from_attrs({"epochs": 3, "split_seed": 0}, "s")


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("url", ["foo://bar", "redis2://localhost/0"])
def test_unknown_scheme_is_rejected(url):
    with pytest.raises(StudyError, match="unknown scheme"):
        check_storage(url)


def test_a_path_without_scheme_is_rejected_with_an_example():
    with pytest.raises(StudyError, match="sqlite:///"):
        check_storage("studies/x.db")


def test_in_memory_sqlite_is_rejected():
    with pytest.raises(StudyError, match="in-memory"):
        check_storage("sqlite://")


def test_a_file_that_is_not_sqlite_is_left_byte_for_byte_unchanged(tmp_path):
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are my notes, not a database\n" * 50)
    before = _digest(path)
    with pytest.raises(StudyError, match="not a SQLite database"):
        check_storage(f"sqlite:///{path}")
    assert _digest(path) == before


def test_another_programs_sqlite_database_is_not_taken_over(tmp_path):
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER)")
    conn.close()
    before = _digest(path)
    with pytest.raises(StudyError, match="another program"):
        check_storage(f"sqlite:///{path}")
    assert _digest(path) == before


def test_must_exist_refuses_a_missing_file_without_creating_it(tmp_path):
    path = tmp_path / "absent.db"
    with pytest.raises(StudyError, match="no study database"):
        check_storage(f"sqlite:///{path}", must_exist=True)
    assert not path.exists()


def test_sqlite_path_is_none_for_server_databases():
    assert Location.parse("postgresql+psycopg://user@localhost/test").path is None
    assert str(Location.parse("sqlite:///studies/a.db").path) == "studies/a.db"


def test_open_storage_creates_missing_folders(tmp_path):
    url = f"sqlite:///{tmp_path / 'deep' / 'er' / 's.db'}"
    open_storage(url)
    assert (tmp_path / "deep" / "er" / "s.db").is_file()
    check_storage(url, must_exist=True)  # now an Optuna database: accepted


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_sampler_name_builds_a_sampler(name):
    assert isinstance(make_sampler(name, seed=1), optuna.samplers.BaseSampler)


@pytest.mark.parametrize("name", PRUNERS)
def test_every_pruner_name_builds_a_pruner(name):
    assert isinstance(make_pruner(name, epochs=5), optuna.pruners.BasePruner)


def test_unknown_sampler_and_pruner_names_are_errors():
    with pytest.raises(StudyError, match="unknown sampler"):
        make_sampler("grid", 0)
    with pytest.raises(StudyError, match="unknown pruner"):
        make_pruner("patient", 3)


def test_a_new_study_gets_its_settings_and_the_tutorial_trial_once_it_is_due(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study, resumed = create_or_resume(storage, "s", sampler_name="tpe", pruner_name="median",
                                      seed=0, record=RECORD)
    assert not resumed
    assert study.user_attrs == ATTRS
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert study.metric_names == ["val_accuracy"]
    assert study.trials == []  # the sampler's random start-up trials come first
    for number in range(BASELINE_AFTER):
        assert not queue_baseline_if_due(study, 20, tutorial_params(study)), number
        study.tell(study.ask(), 0.5)
    assert queue_baseline_if_due(study, 20, tutorial_params(study))
    # queued: never a second copy
    assert not queue_baseline_if_due(study, 20, tutorial_params(study))
    trial = study.ask()
    assert trial.number == BASELINE_AFTER and trial.params == {}
    assert study.trials[-1].system_attrs["fixed_params"] == {
        "lr": 1e-3, "batch_size": 64, "optimizer": "SGD"}


def test_a_short_search_runs_the_tutorial_trial_as_its_last(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study, _ = create_or_resume(storage, "s", sampler_name="tpe", pruner_name="median", seed=0,
                                record=RECORD)
    assert not queue_baseline_if_due(study, 3, tutorial_params(study))
    study.tell(study.ask(), 0.5)
    running = study.ask()  # another worker's, still running: it counts
    assert queue_baseline_if_due(study, 3, tutorial_params(study))
    assert running.number == 1 and len(_baselines(study)) == 1


def test_resuming_queues_nothing(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    create_or_resume(storage, "s", sampler_name="tpe", pruner_name="median", seed=0, record=RECORD)
    study, resumed = create_or_resume(storage, "s", sampler_name="tpe", pruner_name="median",
                                      seed=0, record=RECORD)
    assert resumed and study.trials == []


def test_resuming_with_other_epochs_is_refused_with_the_fix(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    create_or_resume(storage, "s", sampler_name="tpe", pruner_name="median", seed=0, record=RECORD)
    with pytest.raises(StudyError, match="--epochs 3"):
        create_or_resume(storage, "s", sampler_name="tpe", pruner_name="median", seed=0,
                         record=dataclasses.replace(RECORD, epochs=5))


def test_an_interrupted_tutorial_trial_is_queued_again(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study, _ = create_or_resume(storage, "s", sampler_name="tpe", pruner_name="median", seed=0,
                                record=RECORD)
    assert queue_baseline_if_due(study, 1, tutorial_params(study))
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)  # as Ctrl-C leaves it
    study, _ = create_or_resume(storage, "s", sampler_name="tpe", pruner_name="median", seed=0,
                                record=RECORD)
    assert queue_baseline_if_due(study, 1, tutorial_params(study))
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert [t.user_attrs.get("baseline") for t in waiting] == ["tutorial"]


def _bare_study(storage, name="s"):
    """A study as its creator leaves it between ``create_study`` and recording its settings:
    its metric name written first (a study without it is adopted at once, as made beforehand)."""
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    with warnings.catch_warnings():  # "experimental": nothing a test can act on
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["val_accuracy"])
    return study


def _baselines(study):
    return [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("baseline")]


def test_a_process_that_loads_the_study_while_another_sets_it_up_waits_for_its_settings(
    tmp_path,
):
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    creating = _bare_study(storage)
    creator = threading.Timer(1.0, tuning.study.lifecycle._set_up, args=(creating, ATTRS))
    creator.start()
    try:
        study, resumed = create_or_resume(storage, "s", sampler_name="tpe",
                                          pruner_name="median", seed=0, record=RECORD)
    finally:
        creator.join()
    assert resumed and study.user_attrs == ATTRS
    assert _baselines(study) == []


def test_a_process_that_arrives_during_set_up_with_other_epochs_is_still_refused(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    creating = _bare_study(storage)
    creator = threading.Timer(1.0, tuning.study.lifecycle._set_up, args=(creating, ATTRS))
    creator.start()
    try:
        with pytest.raises(StudyError, match="--epochs 3"):
            create_or_resume(storage, "s", sampler_name="tpe", pruner_name="median", seed=0,
                             record=dataclasses.replace(RECORD, epochs=5))
    finally:
        creator.join()


def test_a_study_whose_creator_died_during_set_up_is_set_up_by_the_next_run(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(tuning.study.lifecycle, "SETUP_WAIT_S", 0.5)
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    _bare_study(storage)
    study, _ = create_or_resume(storage, "s", sampler_name="tpe", pruner_name="median", seed=0,
                                record=RECORD)
    assert study.user_attrs == ATTRS
    assert _baselines(study) == []


def test_a_study_with_trials_of_its_own_is_refused_without_waiting(tmp_path, monkeypatch):
    # Made by plain Optuna: trials, but none of the record the search writes first. Before,
    # the search resumed it and added trials; now it is refused at once and left untouched.
    monkeypatch.setattr(tuning.study.lifecycle, "SETUP_WAIT_S", 600)
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    foreign = _bare_study(storage)
    foreign.tell(foreign.ask(), 0.5)
    started = time.monotonic()
    with pytest.raises(StudyError, match=r"was not made by python -m tuning\.search: it has 1 "
                                         r"trial"):
        create_or_resume(storage, "s", sampler_name="tpe", pruner_name="median", seed=0,
                         record=RECORD, where="here")
    assert time.monotonic() - started < 60  # never waited for a set-up
    assert len(foreign.trials) == 1 and not foreign.user_attrs  # nothing queued or written


@pytest.mark.parametrize("url, package", [
    ("postgresql+psycopg://postgres@127.0.0.1/test", "psycopg[binary]"),
    ("mysql+pymysql://root@127.0.0.1/test", "pymysql"),
])
def test_a_missing_database_driver_names_the_package_to_install(url, package, monkeypatch):
    driver = url.split("+")[1].split(":")[0]
    monkeypatch.setitem(sys.modules, driver, None)  # as if not installed: importing it fails
    with pytest.raises(StudyError, match=rf"pip install '{re.escape(package)}'"):
        open_storage(url)


def test_the_search_switches_a_sqlite_study_to_write_ahead_logging_and_resumes_an_old_one(
    tmp_path,
):
    path = tmp_path / "s.db"
    create_or_resume(open_storage(f"sqlite:///{path}"), "s", sampler_name="tpe",
                     pruner_name="median", seed=0, record=RECORD)  # as tools before this made it

    def mode():
        conn = sqlite3.connect(path)
        try:
            return conn.execute("PRAGMA journal_mode").fetchone()[0]
        finally:
            conn.close()

    assert mode() == "delete"
    storage = open_storage(f"sqlite:///{path}", write_ahead_log=True)
    study, resumed = create_or_resume(storage, "s", sampler_name="tpe", pruner_name="median",
                                      seed=0, record=RECORD)
    assert resumed and mode() == "wal"
    with storage.engine.connect() as conn:  # commits wait for checkpoints, not for the disk
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    study.tell(study.ask(), 0.5)
    assert [t.state for t in optuna.load_study(study_name="s", storage=f"sqlite:///{path}")
            .trials] == [optuna.trial.TrialState.COMPLETE]


def test_the_summary_says_where_the_pruner_stopped_the_tutorial_trial(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study, _ = create_or_resume(storage, "s", sampler_name="tpe", pruner_name="median", seed=0,
                                record=RECORD)
    study.tell(study.ask(), 0.9)
    assert queue_baseline_if_due(study, 2, tutorial_params(study))
    tutorial = study.ask()
    tutorial.report(0.4613, 1)
    study.tell(tutorial, state=optuna.trial.TrialState.PRUNED)
    text = summary(study, "sqlite:///s.db", "s")
    assert "Tutorial configuration (trial 1): pruned after epoch 1 at validation accuracy " \
           "0.4613 (behind the trials that went on)" in text
