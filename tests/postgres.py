"""The PostgreSQL server the multi-machine tests share, and a fresh study name per test."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import optuna
import pytest

HOST, PORT, DATABASE, USER = "127.0.0.1", 5432, "test", "postgres"
URL = f"postgresql+psycopg://{USER}@{HOST}:{PORT}/{DATABASE}"


def server_problem() -> str | None:
    """Why the test server cannot be used, or None when it answers."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed; pip install -e '.[test]' installs it"
    try:
        with psycopg.connect(host=HOST, port=PORT, user=USER, dbname=DATABASE,
                             connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"no PostgreSQL answers on {HOST}:{PORT} database {DATABASE!r} ({exc})"
    return None


def require_server() -> None:
    """Skip the test where no server answers; in CI (CI=true) that is a failure instead."""
    problem = server_problem()
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI runs the PostgreSQL tests, but {problem}")
    pytest.skip(problem)


def fresh_study(prefix: str) -> Iterator[str]:
    """A study name no other test uses; the study is deleted afterwards."""
    require_server()
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    yield name
    with contextlib.suppress(KeyError):  # KeyError: the test failed before it existed
        optuna.delete_study(study_name=name, storage=URL)
