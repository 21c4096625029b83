"""python -m tuning.export: the best configuration as JSON, every trial as CSV."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna

from tuning import confirm
from tuning.cli import (
    HelpFormatter,
    Parser,
    add_study_arguments,
    fail,
    library_versions,
    quiet_optuna,
)
from tuning.objective import HISTORY_KEYS, THREADS_ATTR
from tuning.study import DEFAULT_STUDY_NAME, StudyError, count_states, default_storage, load_study

PROG = "python -m tuning.export"
DEFAULT_OUT = Path("studies")


def best_config(study: optuna.Study) -> dict[str, Any]:
    """The study's chosen trial and what is needed to reproduce it, as a JSON-ready dict.

    The chosen trial is the one ``python -m tuning.confirm`` picked where a finished
    confirmation covers the study's trials, else the trial with the best value.

    Raises:
        StudyError: the study has no completed trial.
    """
    counts = count_states(study)
    if not counts["complete"]:
        raise StudyError(
            f"study {study.study_name!r} has no completed trial yet; run "
            f"python -m tuning.search --study-name {study.study_name} first."
        )
    confirmed, selected_by = confirm.choice(study)
    best = confirmed.trial if confirmed is not None else study.best_trial
    attrs = study.user_attrs
    return {
        "study_name": study.study_name,
        "trial_number": best.number,
        "params": best.params,
        "validation_accuracy": best.value,
        "selected_by": selected_by,
        "confirmation": confirmed.table if confirmed is not None else None,
        "epochs": attrs.get("epochs"),
        "seed": attrs.get("seed"),
        "trial_seed": best.user_attrs.get("seed"),
        "trial_threads": best.user_attrs.get(THREADS_ATTR),
        "data_split": {
            "train_size": attrs.get("train_size"),
            "val_size": attrs.get("val_size"),
            "split_seed": attrs.get("split_seed"),
        },
        "history": {key: best.user_attrs.get(key) for key in HISTORY_KEYS},
        "trials": counts,
        "versions": library_versions(),
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_atomically(path: Path, text: str | bytes) -> None:
    """Write via a temporary file and a rename, so an interrupted export leaves no half file.

    ``text`` is written as UTF-8; bytes (weights, pictures) are written as they are. The file
    gets the permissions a plain ``open`` would give it (the temporary file's are owner-only).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode("utf-8") if isinstance(text, str) else text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process's umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def export(study: optuna.Study, out: Path) -> tuple[Path, Path, dict[str, Any]]:
    """Write ``<study>-best.json`` and ``<study>-trials.csv`` into ``out``.

    Returns both paths and the configuration written.
    """
    config = best_config(study)
    json_path = out / f"{study.study_name}-best.json"
    csv_path = out / f"{study.study_name}-trials.csv"
    write_atomically(json_path, json.dumps(config, indent=2) + "\n")
    write_atomically(csv_path, study.trials_dataframe(multi_index=False).to_csv(index=False))
    return json_path, csv_path, config


def main(argv: Sequence[str] | None = None) -> int:
    """Export a study; return the process exit status."""
    parser = Parser(
        prog=PROG,
        description="Write a study's best configuration as JSON (parameters, validation "
        "accuracy, trial, epochs, seeds, data split, library versions) and all its trials "
        "as CSV.",
        formatter_class=HelpFormatter,
    )
    add_study_arguments(parser, DEFAULT_STUDY_NAME)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="folder for <study>-best.json and <study>-trials.csv")
    args = parser.parse_args(argv)
    url = args.storage or default_storage(args.study_name)
    quiet_optuna()
    try:
        study = load_study(url, args.study_name)
        json_path, csv_path, config = export(study, args.out)
    except (StudyError, OSError) as exc:
        return fail(PROG, str(exc))
    print(f"Best configuration: {json_path}  (trial {config['trial_number']}, "
          f"{config['selected_by']})")
    print(f"All trials:         {csv_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
