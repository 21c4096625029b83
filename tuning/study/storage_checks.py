"""Checks of a storage location before anything is written to it.

A study file must never damage what it would replace: a file of another program at the
``--storage`` path is refused and left byte for byte as it was, and a read-only or full disk
is one clear error before any data is loaded or any trial trains.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path

from tuning.study.errors import StudyError
from tuning.study.storage import Location

MIN_FREE_BYTES = 16 * 2**20  # a study database of thousands of trials stays well below this
_SQLITE_MAGIC = b"SQLite format 3\x00"


def check_existing(location: Location, *, must_exist: bool = False) -> None:
    """Make sure the file at ``location`` is an Optuna study, without changing anything.

    Raises:
        StudyError: its SQLite or journal file is something else than an Optuna study (or is
            missing, with ``must_exist``).
    """
    path = location.path
    if path is None:
        return  # a server: its tables are Optuna's business
    if not path.exists():
        if must_exist:
            what = "study journal" if location.kind == "journal" else "study database"
            raise StudyError(
                f"there is no {what} at {path}; run python -m tuning.search first, "
                "or pass the --storage it used."
            )
        return
    if not path.is_file():
        raise StudyError(f"--storage points at {path}, which is not a file.")
    if location.kind == "journal":
        _check_journal(path)
    else:
        _check_sqlite(path)


def _check_sqlite(path: Path) -> None:
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


def _check_journal(path: Path) -> None:
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


def check_writable(location: Location) -> None:
    """Make sure the study file can be written and its disk has room, creating nothing.

    Runs before any data is loaded or any trial trains, so a read-only or full disk is one
    clear error instead of a failure after the first trial.

    Raises:
        StudyError: the file or its folder cannot be written, or the disk is nearly full.
    """
    path = location.path
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
