"""python -m tuning.export: the chosen configuration as JSON, every trial as CSV."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tuning.cli.common import (
    EXIT_OK,
    HelpFormatter,
    Parser,
    add_study_arguments,
    fail,
    quiet_optuna,
    stoppable,
)
from tuning.results.files import DEFAULT_OUT, export
from tuning.results.out_folder import check_out_folder
from tuning.study.errors import StudyError
from tuning.study.lifecycle import DEFAULT_STUDY_NAME, load_study
from tuning.study.storage import Location

PROG = "python -m tuning.export"


@stoppable(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    """Export a study; return the process exit status."""
    parser = Parser(
        prog=PROG,
        description="Write a study's best configuration as JSON (parameters, validation "
        "accuracy, trial, epochs, seeds, data split, library versions) and all its trials "
        "as CSV. The best configuration is the one python -m tuning.confirm chose, where a "
        "finished confirmation covers the study, else the trial with the best value.",
        formatter_class=HelpFormatter,
    )
    add_study_arguments(parser, DEFAULT_STUDY_NAME)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="folder for <study>-best.json and <study>-trials.csv")
    args = parser.parse_args(argv)
    quiet_optuna()
    try:
        check_out_folder(args.out)
        study = load_study(Location.of(args.storage, args.study_name), args.study_name)
        json_path, csv_path, config = export(study, args.out)
    except (StudyError, ValueError, OSError) as exc:
        return fail(PROG, str(exc))
    print(f"Best configuration: {json_path}  (trial {config['trial_number']}, "
          f"{config['selected_by']})")
    print(f"All trials:         {csv_path}")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
