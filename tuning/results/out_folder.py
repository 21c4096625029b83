"""The --out folder of export, train and report: checked before any work, in one line."""

from __future__ import annotations

import os
from pathlib import Path

from tuning.study.errors import UsageError


def check_out_folder(out: Path, flag: str = "--out") -> None:
    """Raise UsageError (one line, with the remedy) where no file can be written into ``out``.

    Checked before a tool works, so a retrain of minutes never ends in a raw ``[Errno 20]``:
    ``out``, or a folder it would be created in, is a file; or the nearest folder that exists
    cannot be written.
    """
    existing = out
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():  # a dangling link: mkdir would fail on it
            raise UsageError(f"{flag} {out}: {existing} is a broken link; pass another folder.")
        existing = existing.parent
    if not existing.exists():  # a relative path whose every part is missing: the cwd holds it
        existing = Path(".")
    if not existing.is_dir():
        raise UsageError(f"{flag} {out}: {existing} is a file, not a folder; pass a folder "
                         "(it is created if missing).")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {out}: cannot write into {existing} (permission denied); pass "
                         "a folder you can write to.")
