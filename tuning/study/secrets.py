"""Storage passwords: shown masked, never printed, logged or written.

A database URL may carry a password (``postgresql+psycopg://tuner:PASSWORD@host/db``). Every
place that shows a URL shows ``masked(url)`` instead; ``remember(url)`` notes its password so
that ``scrub`` can take it out of text this process did not compose itself (driver errors,
which may embed the connection string, Optuna's and SQLAlchemy's log records, warnings and
tracebacks). ``install_scrubber`` routes all of those through ``scrub`` once per process.

The URL itself can stay off the command line: ``STORAGE_ENV`` holds it for every tool (and is
how ``--workers`` hands it to its workers), and PostgreSQL's own ``PGPASSWORD`` or
``~/.pgpass`` supply the password to a URL without one (docs/scale-out.md).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import traceback
import warnings
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, quote_plus

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

STORAGE_ENV = "FASHION_TUNE_STORAGE"  # the whole storage URL, for when --storage is not given
MASK = "***"  # what a password is shown as (SQLAlchemy's hide_password shows the same)
# user:password@ in a URL SQLAlchemy cannot parse: its password is masked all the same.
_USERINFO = re.compile(r"(://[^/@:\s]*:)[^@\s]*@")

# A shorter password is still masked in every URL shown, but not scrubbed from other text:
# replacing every "ab" would garble all output, and such a password protects little anyway.
MIN_SCRUBBED_CHARS = 4
_known: set[str] = set()  # passwords this process has seen, in every spelling a text may hold
_lock = threading.Lock()


def storage_from(flag: str | None) -> str | None:
    """The storage a tool uses: its ``--storage`` flag if given, else ``$STORAGE_ENV``."""
    if flag is not None:
        return flag
    return os.environ.get(STORAGE_ENV) or None


def password_of(url: str) -> str | None:
    """The password in ``url``, or None (no password, or not a URL)."""
    try:
        password = make_url(url).password
    except (ArgumentError, ValueError):
        match = _USERINFO.search(url)
        return match.group(0)[len(match.group(1)):-1] or None if match else None
    return None if password is None else str(password) or None


def masked(url: str) -> str:
    """``url`` with its password replaced by ``***``; anything else unchanged."""
    if password_of(url) is None:
        return url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return _USERINFO.sub(lambda m: m.group(1) + MASK + "@", url)


def remember(url: str) -> None:
    """Note ``url``'s password, so that ``scrub`` removes it from any text from now on."""
    password = password_of(url)
    if password is None:
        return
    raw = _USERINFO.search(url)
    spellings = {password, quote(password, safe=""), quote_plus(password)}
    if raw is not None:  # as typed, percent-encoded or not
        spellings.add(raw.group(0)[len(raw.group(1)):-1])
    with _lock:
        _known.update(s for s in spellings if len(s) >= MIN_SCRUBBED_CHARS)


def scrub(text: str) -> str:
    """``text`` with every remembered password replaced by ``***``."""
    with _lock:
        secrets = sorted(_known, key=len, reverse=True)  # longest first: no half-replaced one
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


def install_scrubber() -> None:
    """Scrub every log record, warning and uncaught traceback of this process (idempotent).

    Tools show URLs masked themselves; this is the net under text they do not compose: a
    driver's error in Optuna's "trial failed" record, SQLAlchemy's pool warnings, a traceback.
    """
    factory = logging.getLogRecordFactory()
    if getattr(factory, "scrubs", False):
        return
    logging.setLogRecordFactory(_scrubbing_records(factory))
    formatwarning = warnings.formatwarning
    warnings.formatwarning = lambda *a, **k: scrub(formatwarning(*a, **k))
    sys.excepthook = _scrubbing_excepthook
    threading.excepthook = _scrubbing_thread_hook  # e.g. a heartbeat thread's storage error


def _scrubbing_records(factory: Callable[..., logging.LogRecord]
                       ) -> Callable[..., logging.LogRecord]:
    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        if not _known:
            return record
        try:
            record.msg, record.args = scrub(record.getMessage()), None
        except (TypeError, ValueError):  # a malformed record: logging reports it as ever
            return record
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = scrub("".join(traceback.format_exception(*record.exc_info)))
            record.exc_text = record.exc_text.rstrip("\n")
        return record

    make.scrubs = True  # type: ignore[attr-defined]
    return make


def _scrubbing_excepthook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
    sys.stderr.write(scrub("".join(traceback.format_exception(kind, value, tb))))


def _scrubbing_thread_hook(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "a thread"
    text = "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))
    sys.stderr.write(scrub(f"Exception in thread {name}:\n{text}"))
