"""What the tools print about a study's artifacts (``tuning.results.artifacts``)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from tuning.results.artifacts import Published
from tuning.study.grpc_proxy import PROXY_SCHEME
from tuning.study.secrets import masked


def artifacts_line(published: list[Published], folder: Path, storage_url: str) -> str:
    """One line: which files are the study's current artifacts, what was new, where they are."""
    names = ", ".join(p.filename for p in published)
    new = sum(p.uploaded for p in published)
    return (f"{names} on the study in {folder} ({new} uploaded, {len(published) - new} "
            f"unchanged); browse: {dashboard_command(storage_url, folder)}")


def dashboard_command(storage_url: str, folder: Path, study_name: str | None = None) -> str:
    """optuna-dashboard started by hand on ``storage_url`` (password masked), with its store.

    A storage proxy (``grpc://``), which optuna-dashboard's command does not open, is served
    by ``python -m tuning.dashboard`` (``study_name``: the study it opens).
    """
    shown = shlex.quote(masked(storage_url))
    if storage_url.startswith(PROXY_SCHEME):
        name = f" --study-name {shlex.quote(study_name)}" if study_name else ""
        return (f"python -m tuning.dashboard --storage {shown}{name} "
                f"--artifact-dir {shlex.quote(str(folder))}")
    return f"optuna-dashboard {shown} --artifact-dir {shlex.quote(str(folder))}"


def add_upload_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """--upload and --artifact-dir of the tools that only read a study unless asked."""
    parser.add_argument("--upload", action="store_true",
                        help=f"also upload {what} as Optuna artifacts of the study, which "
                        "optuna-dashboard lists (the one write to the study this tool makes)")
    parser.add_argument("--artifact-dir", type=Path, default=None,
                        help="artifact store for --upload (default: beside the study, "
                        "studies/<study-name>-artifacts for the default storage)")
