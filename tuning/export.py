"""python -m tuning.export: the chosen configuration as JSON, every trial as CSV."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tuning.cli.artifact_output import add_upload_arguments, artifacts_line
from tuning.cli.common import (
    EXIT_OK,
    HelpFormatter,
    Parser,
    add_study_arguments,
    fail,
    quiet_optuna,
    stoppable,
)
from tuning.results.artifacts import artifact_dir, open_store, publish
from tuning.results.files import DEFAULT_OUT, epochs_csv_path, export, file_stem
from tuning.results.out_folder import check_out_folder
from tuning.study.errors import UsageError
from tuning.study.lifecycle import DEFAULT_STUDY_NAME, load_study
from tuning.study.storage import Location

PROG = "python -m tuning.export"


@stoppable(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    """Export a study; return the process exit status."""
    parser = Parser(
        prog=PROG,
        description="Write a study's best configuration as JSON (parameters, validation "
        "accuracy, trial, epochs, seeds, data split, library versions), all its trials "
        "as CSV (one row each, a column per parameter) and their per-epoch curves as CSV (one "
        "row per trial and epoch). The best configuration is the one python -m tuning.confirm "
        "chose, where a finished confirmation covers the study, else the trial with the best "
        "value.",
        formatter_class=HelpFormatter,
    )
    add_study_arguments(parser, DEFAULT_STUDY_NAME)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="folder for <study>-best.json, <study>-trials.csv and "
                        "<study>-epochs.csv")
    parser.add_argument("--prefix", default=None,
                        help="begin the file names with this instead of the study's name (for "
                        "a study whose name cannot name a file)")
    add_upload_arguments(parser, "<study>-best.json")
    args = parser.parse_args(argv)
    quiet_optuna()
    try:
        check_out_folder(args.out)
        location = Location.of(args.storage, args.study_name)
        study = load_study(location, args.study_name)
        json_path, csv_path, config = export(study, args.out, args.prefix)
        if args.upload:
            folder = artifact_dir(location, args.artifact_dir)
            published = [publish(study, open_store(folder), json_path)]
    except (UsageError, OSError) as exc:
        return fail(PROG, str(exc), exc=exc)
    print(f"Best configuration: {json_path}  (trial {config['trial_number']}, "
          f"{config['selected_by']})")
    print(f"All trials:         {csv_path}")
    epochs_csv = epochs_csv_path(args.out, file_stem(study.study_name, args.prefix))
    print(f"Per-epoch curves:   {epochs_csv}")
    if args.upload:
        print(f"Artifacts:          {artifacts_line(published, folder, location.shown)}")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
