"""Database servers that go away and come back: connections and calls that wait for them.

A PostgreSQL (or MySQL) server that restarts, as a managed database fails over, must not fail
the study: a new connection waits for the server (``connect_patiently``), and a storage call
whose connection broke mid-query is repeated on a fresh one (``PatientRDBStorage``).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import optuna
from sqlalchemy.exc import OperationalError

# A database server that goes away (a restart, a fail-over) is waited for this long, trying to
# reconnect every RECONNECT_POLL_S, before the storage call fails.
RECONNECT_WAIT_S = 120
RECONNECT_POLL_S = 1.0


def _lost_connection(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a connection to the server that broke."""
    cause = exc.__cause__ if isinstance(exc, optuna.exceptions.StorageInternalError) else exc
    return isinstance(cause, OperationalError) or getattr(cause, "connection_invalidated", False)


def _patient(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` retried while the server is away, for up to RECONNECT_WAIT_S."""

    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + RECONNECT_WAIT_S
        while True:
            try:
                return method(*args, **kwargs)
            except (optuna.exceptions.StorageInternalError, OperationalError) as exc:
                if not _lost_connection(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(RECONNECT_POLL_S)

    return call


class PatientRDBStorage(optuna.storages.RDBStorage):
    """Optuna's database storage whose every call outlasts a server restart.

    A query in flight when the server stops fails with a broken connection; the call is
    repeated on a fresh connection (``_connect_patiently`` waits for the server). Optuna's
    writes are upserts or state changes keyed by trial, so a repeat changes nothing twice.
    The exception: a new trial whose commit reached the server just as the connection broke
    is created twice, and the copy stays RUNNING (it has no heartbeat); this has not been seen.
    """


for _name, _method in vars(optuna.storages.RDBStorage).items():
    if callable(_method) and not _name.startswith("_"):
        setattr(PatientRDBStorage, _name, _patient(_method))


def connect_patiently(dialect: Any, record: Any, cargs: Any, cparams: Any) -> Any:
    """Connect to the database server, waiting up to RECONNECT_WAIT_S while it is away.

    SQLAlchemy calls this for every new connection after the first (the storage's own start
    fails at once, with a clear error). With ``pool_pre_ping``, a server that restarted is
    found out when a pooled connection is next used, and the replacement connection waits
    here until the server answers again, instead of failing the trial.
    """
    deadline = time.monotonic() + RECONNECT_WAIT_S
    while True:
        try:
            return dialect.connect(*cargs, **cparams)
        except dialect.loaded_dbapi.OperationalError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(RECONNECT_POLL_S)
