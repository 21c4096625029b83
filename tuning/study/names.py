"""Study names that become file names: checked, so a name never becomes a path.

A study's default storage (``studies/<name>.db``), its exported files, its retrained weights
and metrics, and its report folder are all named after the study. A name that holds a path
separator, ``..`` or a leading dot would put them outside their folder (or hide them), and
control characters would garble the terminal, so such names are refused there, before anything
is written. Optuna itself accepts any string: a study made elsewhere with such a name can still
be read by every tool given its ``--storage``, and written out by giving the output names
explicitly (``--prefix`` of export and train, ``--out`` and ``--metrics`` of report).
"""

from __future__ import annotations

import unicodedata

from tuning.study.errors import StudyError

MAX_NAME_CHARS = 100  # well under any file system's 255-byte limit, with suffixes and UTF-8
ALLOWED = (f"at most {MAX_NAME_CHARS} characters, no / or \\, no '..', no leading dot and no "
           "control characters")


def file_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be part of a file name, or None where it can."""
    if not name.strip():
        return "it is empty"
    if len(name) > MAX_NAME_CHARS:
        return f"it has {len(name)} characters"
    if "/" in name or "\\" in name:
        return "it holds a path separator"
    if ".." in name:
        return "it holds '..'"
    if name.startswith("."):
        return "it starts with a dot"
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in name):
        return "it holds a control character"
    return None


def check_file_name(name: str, what: str = "--study-name") -> str:
    """Return ``name`` if it can be part of a file name.

    Raises:
        StudyError: one line saying what is wrong with it and what is allowed.
    """
    problem = file_name_problem(name)
    if problem is not None:
        raise StudyError(
            f"{what} {name!r} cannot name a file ({problem}): use {ALLOWED}. A study with "
            "such a name can still be read with --storage (and --prefix, --out; docs/flags.md)."
        )
    return name
