"""Where a study lives: a storage URL parsed once into a ``Location``, and opening it.

Four kinds of storage: a SQLite file (the default, ``studies/<study>.db``), an Optuna journal
file (a path ending in ``.log``, for file systems that several machines mount), a database
server (PostgreSQL, MySQL: any URL SQLAlchemy and Optuna accept) and Optuna's gRPC storage
proxy in front of any of them (``grpc://HOST:PORT``, started by ``python -m tuning.proxy``),
which lets hundreds of workers share a study without a database connection each.
``tuning.study.storage_checks`` checks a location before anything is written to it.
"""

from __future__ import annotations

import atexit
import sqlite3
import time
import warnings
import weakref
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalStorage
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import (
    ArgumentError,
    IntegrityError,
    NoSuchModuleError,
    OperationalError,
    ProgrammingError,
)

from tuning.study.errors import StudyError
from tuning.study.grpc_proxy import PROXY_SCHEME, open_proxy, proxy_address
from tuning.study.names import check_file_name
from tuning.study.reconnect import PatientRDBStorage, connect_patiently
from tuning.study.secrets import masked, remember, scrub, storage_from

SQLITE_TIMEOUT_S = 60  # wait this long for a SQLite lock instead of failing at once
HEARTBEAT_S = 10  # default --heartbeat: a running trial records that it is alive this often
GRACE_HEARTBEATS = 3  # silent for this many heartbeats: its worker is dead, fail and retry it
MAX_RETRIES = 2  # a trial whose worker died this often is left failed: it may be the cause
JOURNAL_SUFFIX = ".log"  # a --storage path ending so is an Optuna journal file
CREATE_ATTEMPTS = 4  # tries to open a new database whose tables another process is creating

# SQLAlchemy driver name -> the pip package that provides it.
_DRIVER_PACKAGES = {
    "psycopg": "psycopg[binary]",
    "psycopg2": "psycopg2-binary",
    "pymysql": "pymysql",
    "mysqldb": "mysqlclient",
    "mysqlconnector": "mysql-connector-python",
}
_URL_EXAMPLES = (
    "sqlite:///studies/NAME.db, postgresql+psycopg://USER@HOST/DB, studies/NAME.log (journal) "
    "or grpc://HOST:PORT (a storage proxy)"
)


@dataclass(frozen=True)
class Location:
    """A storage URL, checked and classified once."""

    url: str = field(repr=False)  # as given (or the default), to connect with; shown: ``shown``
    kind: Literal["sqlite", "journal", "server", "proxy"]
    path: Path | None  # the file of a SQLite or journal storage; None for a server or proxy
    driver: str = ""  # SQLAlchemy's driver name (a server's, e.g. "psycopg")

    @classmethod
    def parse(cls, url: str) -> Location:
        """Classify ``url`` without touching anything.

        Raises:
            StudyError: not a database URL, an unknown scheme, or an in-memory SQLite.
        """
        remember(url)  # its password, if any, is scrubbed from every message from now on
        if "://" not in url and url.endswith(JOURNAL_SUFFIX):
            return cls(url, "journal", Path(url))
        if url.startswith(PROXY_SCHEME):
            proxy_address(url)  # raises for a malformed address
            return cls(url, "proxy", None, "grpc")
        try:
            parsed = make_url(url)
        except (ArgumentError, ValueError):  # ValueError: e.g. a port that is no number
            raise StudyError(
                f"--storage {masked(url)!r} is not a database URL; use e.g. {_URL_EXAMPLES}."
            ) from None
        try:
            parsed.get_dialect()
        except NoSuchModuleError:
            raise StudyError(
                f"--storage {masked(url)!r} has an unknown scheme {parsed.drivername!r}; "
                f"use e.g. {_URL_EXAMPLES}."
            ) from None
        if parsed.get_backend_name() != "sqlite":
            return cls(url, "server", None, parsed.get_driver_name())
        if not parsed.database or parsed.database == ":memory:":
            raise StudyError(
                f"--storage {masked(url)!r} is an in-memory database that keeps nothing; "
                "give a file, e.g. sqlite:///studies/NAME.db."
            )
        return cls(url, "sqlite", Path(parsed.database), parsed.get_driver_name())

    @property
    def shown(self) -> str:
        """The URL as messages, commands and files show it: its password masked."""
        return masked(self.url)

    @classmethod
    def default(cls, study_name: str) -> Location:
        """The embedded default: a SQLite file per study under studies/.

        Raises:
            StudyError: ``study_name`` cannot name a file (``tuning.study.names``).
        """
        return cls.parse(f"sqlite:///studies/{check_file_name(study_name)}.db")

    @classmethod
    def of(cls, storage: str | None, study_name: str) -> Location:
        """The location a tool's ``--storage`` flag (else ``$FASHION_TUNE_STORAGE``) names, or
        the study's default."""
        storage = storage_from(storage)
        return cls.parse(storage) if storage is not None else cls.default(study_name)


def open_storage(
    location: Location, *, heartbeat: int | None = None, write_ahead_log: bool = False
) -> optuna.storages.BaseStorage:
    """Open (creating if needed) the storage at ``location``; SQLite waits on locks.

    Args:
        location: where the study lives.
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
    if location.kind == "proxy":
        return open_proxy(location.url)
    if location.kind == "journal":
        assert location.path is not None
        try:
            location.path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(location.path)))
        except OSError as exc:
            raise StudyError(f"cannot open the journal {location.path}: {exc.strerror}.") from None
    engine_kwargs: dict[str, Any] = {}
    in_wal_mode = False  # a SQLite file this call switched to (or found in) WAL mode
    if location.path is not None:
        location.path.parent.mkdir(parents=True, exist_ok=True)
        in_wal_mode = write_ahead_log and _use_write_ahead_log(location.path)
        engine_kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT_S}
    else:  # a server: test each pooled connection before use, so a restart is noticed
        engine_kwargs["pool_pre_ping"] = True
    beat: dict[str, Any] = {}
    if heartbeat is not None:
        beat = {
            "heartbeat_interval": heartbeat,
            "grace_period": GRACE_HEARTBEATS * heartbeat,
            "heartbeat_stale_trial_callback": retry_stale_trial,
        }
    try:
        storage = _rdb_storage(location.url, engine_kwargs, beat)
    except ImportError:
        package = _DRIVER_PACKAGES.get(location.driver, location.driver)
        raise StudyError(
            f"cannot open --storage {location.shown!r}: its database driver {location.driver!r} "
            f"is not installed; pip install '{package}' into this environment."
        ) from None
    except Exception as exc:  # SQLAlchemy's errors for unreachable servers and the like
        # Drivers' errors may embed the connection string: scrubbed of the password first.
        message = " ".join(scrub(str(exc)).split())[:300]
        raise StudyError(f"cannot open --storage {location.shown!r}: {message}") from None
    if location.path is not None:
        _close_at_exit(storage.engine)
    else:
        event.listen(storage.engine, "do_connect", connect_patiently)
    if in_wal_mode:
        # In WAL mode, NORMAL syncs at checkpoints instead of at every commit. A killed
        # process still loses nothing committed; only a power cut may drop the last commits.
        event.listen(storage.engine, "connect",
                     lambda conn, _: conn.execute("PRAGMA synchronous=NORMAL"))
        storage.engine.dispose()  # connections opened before the listener: closed, reopened
    return storage


RACE_SIGNS = ("already exists", "duplicate key", "UNIQUE constraint failed")


def _rdb_storage(url: str, engine_kwargs: dict[str, Any], beat: dict[str, Any]
                 ) -> optuna.storages.RDBStorage:
    """Optuna's database storage; a process that loses the race to create its tables retries.

    Processes started together on a new database (two ``--workers`` commands, machines of a
    cluster) each create Optuna's tables if missing; all but one then meet "already exists".
    By the retry the tables are there, and the storage opens as on any existing database.
    """
    for attempt in range(1, CREATE_ATTEMPTS + 1):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental": nothing to act on
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                cls = (optuna.storages.RDBStorage if url.startswith("sqlite")
                       else PatientRDBStorage)
                return cls(url, engine_kwargs=engine_kwargs, **beat)
        except (OperationalError, ProgrammingError, IntegrityError) as exc:
            # "already exists" (a table), "duplicate key" (PostgreSQL) or "UNIQUE constraint
            # failed" (SQLite: both inserted Optuna's schema version) all mean another won.
            lost_race = any(sign in str(exc) for sign in RACE_SIGNS)
            if not lost_race or attempt == CREATE_ATTEMPTS:
                raise
            time.sleep(0.5 * attempt)
    raise AssertionError("unreachable")


def retry_stale_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Queue a trial whose worker died again, with its parameters, seed and baseline mark.

    Optuna calls this once for each trial whose heartbeat went stale, after marking it failed.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)(study, trial)


def heartbeat_of(storage: optuna.storages.BaseStorage) -> int | None:
    """The storage's heartbeat interval in seconds, or None where it keeps no heartbeats."""
    get = getattr(storage, "get_heartbeat_interval", None)
    return get() if get is not None else None


def _close_at_exit(engine: Engine) -> None:
    """Close the engine's pooled SQLite connections when the process exits.

    Interpreter shutdown need not close them, and the last connection to close is what folds a
    write-ahead log back into the database file and removes it. Without this, a tool that wrote
    to a WAL-mode study leaves its commits in ``<file>-wal``, and the next reader folds them in:
    correct, but then a read-only tool changes the file's bytes.
    """
    ref = weakref.ref(engine)

    def dispose() -> None:
        alive = ref()
        if alive is not None:
            alive.dispose()

    atexit.register(dispose)


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


def release_connections(storage: optuna.storages.BaseStorage) -> None:
    """Close the storage's pooled database connections; the pool opens new ones when needed.

    Called before forking workers: a database connection (a SQLite file's locks, a server's
    socket) must not be shared by two processes, so none is inherited, and each worker opens
    its own.
    """
    engine = getattr(getattr(storage, "_backend", storage), "engine", None)
    if engine is not None:
        engine.dispose()

