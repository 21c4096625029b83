"""Storage, sampler and pruner from names; create a study or resume it."""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import socket
import sqlite3
import tempfile
import time
import warnings
import weakref
from collections.abc import Mapping
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from tuning.space import TUTORIAL

DEFAULT_STUDY_NAME = "fashion-mnist"
SAMPLERS = ("tpe", "random", "qmc")
PRUNERS = ("median", "hyperband", "successive-halving", "none")
METRIC_NAME = "val_accuracy"  # what a trial's value is: its best validation accuracy
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)  # what counts toward --n-trials
BASELINE_ATTRS = {"baseline": "tutorial"}  # user attributes that mark the tutorial's trial
# States in which the tutorial baseline trial needs no second copy in the queue.
_BASELINE_KEPT = (*FINISHED, TrialState.WAITING, TrialState.RUNNING)

MEDIAN_STARTUP_TRIALS = 5  # trials that finish unpruned before the median pruner judges others
MEDIAN_WARMUP_EPOCHS = 0  # a trial may be pruned from its first reported epoch on
HALVING_REDUCTION = 3  # successive halving / hyperband keep about a third at each rung
SQLITE_TIMEOUT_S = 60  # wait this long for a SQLite lock instead of failing at once
HEARTBEAT_S = 10  # default --heartbeat: a running trial records that it is alive this often
GRACE_HEARTBEATS = 3  # silent for this many heartbeats: its worker is dead, fail and retry it
MAX_RETRIES = 2  # a trial whose worker died this often is left failed: it may be the cause
JOURNAL_SUFFIX = ".log"  # a --storage path ending so is an Optuna journal file
MIN_FREE_BYTES = 16 * 2**20  # a study database of thousands of trials stays well below this

# Study user attributes that fix what a trial's value means; a resume must match them.
BINDING_ATTRS = ("epochs", "val_size", "split_seed")
# A study found without its binding attributes is being set up by another process right now:
# wait this long for it to finish (its tutorial trial is queued by then), polling this often.
SETUP_WAIT_S = 30
SETUP_POLL_S = 0.2

# SQLAlchemy driver name -> the pip package that provides it.
_DRIVER_PACKAGES = {
    "psycopg": "psycopg[binary]",
    "psycopg2": "psycopg2-binary",
    "pymysql": "pymysql",
    "mysqldb": "mysqlclient",
    "mysqlconnector": "mysql-connector-python",
}
_SQLITE_MAGIC = b"SQLite format 3\x00"
_URL_EXAMPLES = (
    "sqlite:///studies/NAME.db, postgresql+psycopg://USER@HOST/DB or studies/NAME.log (journal)"
)


class StudyError(Exception):
    """The study cannot be opened as asked; the message says what to do instead."""


def default_storage(study_name: str) -> str:
    """The embedded default: a SQLite file per study under studies/."""
    return f"sqlite:///studies/{study_name}.db"


def _parse(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StudyError(
            f"--storage {url!r} is not a database URL; use e.g. {_URL_EXAMPLES}."
        ) from None
    try:
        parsed.get_dialect()
    except NoSuchModuleError:
        raise StudyError(
            f"--storage {url!r} has an unknown scheme {parsed.drivername!r}; "
            f"use e.g. {_URL_EXAMPLES}."
        ) from None
    return parsed


def journal_path(url: str) -> Path | None:
    """The file of a journal storage (a plain path ending in .log), or None for a database URL."""
    if "://" in url or not url.endswith(JOURNAL_SUFFIX):
        return None
    return Path(url)


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL, or None for other databases."""
    if journal_path(url) is not None:
        return None
    parsed = _parse(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    if not parsed.database or parsed.database == ":memory:":
        raise StudyError(
            f"--storage {url!r} is an in-memory database that keeps nothing; "
            "give a file, e.g. sqlite:///studies/NAME.db."
        )
    return Path(parsed.database)


def check_storage(url: str, *, must_exist: bool = False) -> None:
    """Validate a storage URL without creating or changing anything.

    Raises:
        StudyError: the URL is malformed or of an unknown scheme, or its SQLite or journal
            file is something else than an Optuna study (or is missing, with ``must_exist``).
    """
    if journal_path(url) is not None:
        _check_journal(journal_path(url), must_exist)
        return
    path = sqlite_path(url)
    if path is None:
        return
    if not path.exists():
        if must_exist:
            raise StudyError(
                f"there is no study database at {path}; run python -m tuning.search first, "
                "or pass the --storage it used."
            )
        return
    if not path.is_file():
        raise StudyError(f"--storage points at {path}, which is not a file.")
    if path.stat().st_size == 0:
        return  # SQLite treats an empty file as an empty database
    with path.open("rb") as handle:
        if handle.read(len(_SQLITE_MAGIC)) != _SQLITE_MAGIC:
            raise StudyError(
                f"{path} exists but is not a SQLite database; it was left untouched. "
                "Pick another --storage path or move that file away."
            )
    # Read-only peek: a SQLite file of another program must not gain Optuna's tables.
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    except sqlite3.DatabaseError as exc:
        raise StudyError(f"{path} is not a readable SQLite database ({exc}).") from None
    if tables and "studies" not in tables:
        raise StudyError(
            f"{path} is a SQLite database of another program (no Optuna tables); it was left "
            "untouched. Pick another --storage path."
        )


def _check_journal(path: Path, must_exist: bool) -> None:
    if not path.exists():
        if must_exist:
            raise StudyError(
                f"there is no study journal at {path}; run python -m tuning.search first, "
                "or pass the --storage it used."
            )
        return
    if not path.is_file():
        raise StudyError(f"--storage points at {path}, which is not a file.")
    with path.open("rb") as handle:
        first = handle.readline()
    try:
        ok = not first or isinstance(json.loads(first), dict)
    except ValueError:  # json's decode error, and bytes that are no text at all
        ok = False
    if not ok:
        raise StudyError(
            f"{path} exists but is not an Optuna journal; it was left untouched. Pick another "
            "--storage path or move that file away."
        )


def storage_file(url: str) -> Path | None:
    """The local file a study lives in (SQLite or journal), or None for a database server."""
    return journal_path(url) or sqlite_path(url)


def check_writable(url: str) -> None:
    """Make sure the study file can be written and its disk has room, creating nothing.

    Runs before any data is loaded or any trial trains, so a read-only or full disk is one
    clear error instead of a failure after the first trial.

    Raises:
        StudyError: the file or its folder cannot be written, or the disk is nearly full.
    """
    path = storage_file(url)
    if path is None:
        return  # a database server looks after its own disk
    folder = path.parent.resolve()
    while not folder.exists():  # open_storage creates the missing folders later
        folder = folder.parent
    if not folder.is_dir():
        raise StudyError(
            f"cannot store the study at {path}: {folder} is a file, not a folder; "
            "pick another --storage path."
        )
    try:
        # A real write, not os.access: root passes access checks on read-only mounts too.
        with tempfile.TemporaryFile(dir=folder):
            pass
        if path.exists():
            with path.open("r+b"):
                pass
    except OSError as exc:
        raise StudyError(
            f"cannot write the study at {path}: {exc.strerror} ({exc.filename or folder}); "
            "make that folder writable or pick another --storage path."
        ) from None
    free = shutil.disk_usage(folder).free
    if free < MIN_FREE_BYTES:
        raise StudyError(
            f"only {free // 1024} KiB free on the disk of {folder}; a study needs at least "
            f"{MIN_FREE_BYTES // 2**20} MiB. Free some space or pick another --storage path."
        )


def load_study(url: str, study_name: str) -> optuna.Study:
    """Load an existing study without creating anything.

    Raises:
        StudyError: there is no database at ``url``, or no study of that name in it.
    """
    check_storage(url, must_exist=True)
    storage = open_storage(url)
    names = optuna.get_all_study_names(storage)
    if study_name not in names:
        raise StudyError(
            f"there is no study {study_name!r} in {url}; studies there: "
            f"{', '.join(names) or 'none'}."
        )
    return optuna.load_study(study_name=study_name, storage=storage)


def retry_stale_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Queue a trial whose worker died again, with its parameters, seed and baseline mark.

    Optuna calls this once for each trial whose heartbeat went stale, after marking it failed.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)(study, trial)


def open_storage(
    url: str, *, heartbeat: int | None = None, write_ahead_log: bool = False
) -> optuna.storages.BaseStorage:
    """Open (creating if needed) the storage at ``url``; SQLite waits on locks.

    Args:
        url: a SQLAlchemy database URL, or a path ending in .log for a journal file.
        heartbeat: on a database, each running trial records a heartbeat every this many
            seconds; one silent for ``GRACE_HEARTBEATS`` of them is failed and queued again
            (``retry_stale_trial``). None: no heartbeats. Journal files have none in Optuna 5.
        write_ahead_log: switch a SQLite file to write-ahead logging first, with commits
            that do not wait for the disk (the search's many small commits get cheaper, most
            of all on a busy machine). Off for tools that only read or write once: they leave
            the file's bytes as they found them.

    Raises:
        StudyError: the storage cannot be opened (driver missing, server down, ...).
    """
    journal = journal_path(url)
    if journal is not None:
        try:
            journal.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(journal)))
        except OSError as exc:
            raise StudyError(f"cannot open the journal {journal}: {exc.strerror}.") from None
    path = sqlite_path(url)
    engine_kwargs: dict[str, Any] = {}
    in_wal_mode = False  # a SQLite file this call switched to (or found in) WAL mode
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        in_wal_mode = write_ahead_log and _use_write_ahead_log(path)
        engine_kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT_S}
    beat: dict[str, Any] = {}
    if heartbeat is not None:
        beat = {
            "heartbeat_interval": heartbeat,
            "grace_period": GRACE_HEARTBEATS * heartbeat,
            "heartbeat_stale_trial_callback": retry_stale_trial,
        }
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental": nothing to act on
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **beat)
    except ImportError:
        driver = _parse(url).get_driver_name()
        package = _DRIVER_PACKAGES.get(driver, driver)
        raise StudyError(
            f"cannot open --storage {url!r}: its database driver {driver!r} is not installed; "
            f"pip install '{package}' into this environment."
        ) from None
    except Exception as exc:  # SQLAlchemy's errors for unreachable servers and the like
        message = " ".join(str(exc).split())[:300]
        raise StudyError(f"cannot open --storage {url!r}: {message}") from None
    if path is not None:
        _close_at_exit(storage.engine)
    if in_wal_mode:
        # In WAL mode, NORMAL syncs at checkpoints instead of at every commit. A killed
        # process still loses nothing committed; only a power cut may drop the last commits.
        event.listen(storage.engine, "connect",
                     lambda conn, _: conn.execute("PRAGMA synchronous=NORMAL"))
        storage.engine.dispose()  # connections opened before the listener: closed, reopened
    return storage


def _close_at_exit(engine: Engine) -> None:
    """Close the engine's pooled SQLite connections when the process exits.

    Interpreter shutdown need not close them, and the last connection to close is what folds a
    write-ahead log back into the database file and removes it. Without this, a tool that wrote
    to a WAL-mode study leaves its commits in ``<file>-wal``, and the next reader folds them in:
    correct, but then a read-only tool changes the file's bytes.
    """
    ref = weakref.ref(engine)
    atexit.register(lambda: (engine := ref()) is not None and engine.dispose())


def _use_write_ahead_log(path: Path) -> bool:
    """Switch the SQLite file at ``path`` (created if missing) to write-ahead logging.

    Returns whether the file is in WAL mode now. The mode is stored in the file, so every later
    connection (other workers, the dashboard) uses it; readers no longer block writers, and a
    commit no longer waits for the disk (see ``open_storage`` and ``benchmarks/storage.py``).
    Where the mode cannot be set (a read-only file, a file system without shared memory), the
    default journal stays: slower, equally correct.
    """
    try:
        with closing(sqlite3.connect(path, timeout=SQLITE_TIMEOUT_S)) as conn:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    except sqlite3.Error:
        return False
    return str(mode).lower() == "wal"


def own_stream(worker: int = 0) -> tuple[int, ...]:
    """Entropy that sets this process's sampler apart from the others working on a study."""
    host = int.from_bytes(hashlib.sha256(socket.gethostname().encode()).digest()[:4], "big")
    return (worker, host, os.getpid())


def make_sampler(
    name: str, seed: int, n_trials_so_far: int = 0, stream: tuple[int, ...] = ()
) -> optuna.samplers.BaseSampler:
    """Sampler by name, seeded.

    A resumed run offsets the TPE and random seeds by the trials already in the study, so it
    does not replay the first run's random draws; QMC keeps its seed and continues its
    sequence, whose position Optuna stores in the study. A process that shares the study
    with others passes a ``stream`` (``own_stream()``) that is mixed into those seeds, else
    processes started together would all sample the same points.
    """
    run_seed = seed + n_trials_so_far
    if stream:
        entropy = np.random.SeedSequence([seed, n_trials_so_far, *stream])
        run_seed = int(entropy.generate_state(1)[0])
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=run_seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=run_seed)
    if name == "qmc":
        with warnings.catch_warnings():  # "experimental" says nothing a user can act on
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.QMCSampler(
                seed=seed,
                scramble=True,
                # Batch size and optimizer are categorical: QMC leaves them to a random sampler.
                independent_sampler=optuna.samplers.RandomSampler(seed=run_seed),
                warn_independent_sampling=False,
            )
    raise StudyError(f"unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}.")


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    """Pruner by name; resources are epochs."""
    if name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=MEDIAN_WARMUP_EPOCHS
        )
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=epochs, reduction_factor=HALVING_REDUCTION
        )
    if name == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=1, reduction_factor=HALVING_REDUCTION
        )
    if name == "none":
        return optuna.pruners.NopPruner()
    raise StudyError(f"unknown pruner {name!r}; choose from {', '.join(PRUNERS)}.")


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


def heartbeat_of(storage: optuna.storages.BaseStorage) -> int | None:
    """The storage's heartbeat interval in seconds, or None where it keeps no heartbeats."""
    get = getattr(storage, "get_heartbeat_interval", None)
    return get() if get is not None else None


def create_or_resume(
    storage: optuna.storages.BaseStorage,
    study_name: str,
    *,
    sampler_name: str,
    pruner_name: str,
    seed: int,
    attrs: Mapping[str, Any],
    worker: int = 0,
    queue_baseline: bool = True,
) -> tuple[optuna.Study, bool]:
    """Create the study, or load it if it exists; return it and whether it was resumed.

    A new study records ``attrs`` as study user attributes and gets the tutorial's own
    configuration enqueued as its first trial. A resumed study must have been created with the
    same ``BINDING_ATTRS``, else its trials would not be comparable.

    A ``worker`` (from 1) of a parallel run leaves the tutorial's queueing to the process that
    started it, so the baseline runs once however many workers there are; so does a process
    that finds the study created by another machine a moment ago (``queue_baseline`` False).
    Such processes, and any that finds trials of others running, get a sampler stream of
    their own (``own_stream``).

    Raises:
        StudyError: the existing study was created with other binding settings.
    """
    epochs = int(attrs["epochs"])
    pruner = make_pruner(pruner_name, epochs)
    if study_name in optuna.get_all_study_names(storage):
        study = optuna.load_study(study_name=study_name, storage=storage, pruner=pruner)
        stored = _wait_for_setup(study, attrs)
        if stored is None:  # its creator died half-way: finish the setup here, as a creator
            _set_up(study, attrs)
            stored = study.user_attrs
            queue_baseline = True
        for key in BINDING_ATTRS:
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
        shared = (worker or not queue_baseline
                  or any(t.state == TrialState.RUNNING for t in trials))
        stream = own_stream(worker) if shared else ()
        study.sampler = make_sampler(sampler_name, seed, len(trials), stream)
        if worker or not queue_baseline:
            return study, True
        if not any(is_baseline(t) and t.state in _BASELINE_KEPT for t in trials):
            _enqueue_tutorial(study)  # its first run was interrupted: queue it again
        return study, True
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
                                pruner_name=pruner_name, seed=seed, attrs=attrs, worker=worker,
                                queue_baseline=False)
    _set_up(study, attrs)
    return study, False


def _set_up(study: optuna.Study, attrs: Mapping[str, Any]) -> None:
    """Queue the tutorial trial and record ``attrs``, the binding ones last.

    Another process that loads the study meanwhile waits for the binding attributes
    (``_wait_for_setup``); once it sees them, the tutorial trial is already queued, so it never
    queues a second one.
    """
    if not any(is_baseline(t) for t in study.get_trials(deepcopy=False)):
        _enqueue_tutorial(study)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([METRIC_NAME])  # the dashboard's axis label
    for key, value in sorted(attrs.items(), key=lambda item: item[0] in BINDING_ATTRS):
        study.set_user_attr(key, value)


def _wait_for_setup(study: optuna.Study, attrs: Mapping[str, Any]) -> dict[str, Any] | None:
    """The study's user attributes once its creator has recorded the binding ones.

    Returns None if they are still missing after ``SETUP_WAIT_S`` (the creator died during
    set-up). A study that already has trials of its own is never waited for: it was made by
    other means (plain Optuna, say) and is resumed as it is.
    """
    wanted = [key for key in BINDING_ATTRS if key in attrs]
    deadline = time.monotonic() + SETUP_WAIT_S
    while True:
        stored = study.user_attrs
        if all(key in stored for key in wanted):
            return stored
        trials = study.get_trials(deepcopy=False)
        if any(not is_baseline(t) for t in trials):
            return stored
        if time.monotonic() >= deadline:
            return None
        time.sleep(SETUP_POLL_S)


def is_baseline(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether ``trial`` is the tutorial's own configuration, queued by this module."""
    return all(trial.user_attrs.get(key) == value for key, value in BASELINE_ATTRS.items())


def _enqueue_tutorial(study: optuna.Study) -> None:
    study.enqueue_trial(TUTORIAL.as_params(), user_attrs=dict(BASELINE_ATTRS))
