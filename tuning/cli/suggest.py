"""The next commands a tool suggests, with the storage URL's password masked."""

from __future__ import annotations

import shlex

from tuning.study.secrets import masked


def next_command(tool: str, study_name: str, storage: str | None, *extra: str) -> str:
    """``python -m tuning.<tool> --study-name NAME [--storage URL] [extra...]``, ready to copy.

    ``storage`` is the tool's own ``--storage`` flag: None (the default file, or
    ``$FASHION_TUNE_STORAGE``, which the next command reads too) adds none. A password in it is
    shown as ``***``: the user puts it back, or better keeps it out of the URL
    (docs/scale-out.md).
    """
    words = ["python", "-m", f"tuning.{tool}", "--study-name", study_name]
    if storage is not None:
        words += ["--storage", masked(storage)]
    return shlex.join([*words, *extra])
