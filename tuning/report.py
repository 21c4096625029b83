"""python -m tuning.report: a study's pictures as HTML and PNG, and an index page with a summary.

The pictures are drawn by ``tuning.results.pictures``; this tool adds the index page that links them
under a summary of the study, its chosen configuration and its test result.
"""

from __future__ import annotations

import html
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

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
from tuning.results.files import (
    DEFAULT_OUT,
    best_config,
    metrics_path,
    write_atomically,
)
from tuning.results.holdout import find_metrics, recorded_test
from tuning.results.out_folder import check_out_folder
from tuning.results.pictures import CONFUSION_TITLE, Picture, draw_confusion, draw_study
from tuning.space.hyperparameters import LR_HIGH, LR_LOW
from tuning.study.baseline import finished_baseline, pruned_at
from tuning.study.errors import UsageError
from tuning.study.lifecycle import DEFAULT_STUDY_NAME, load_study
from tuning.study.names import check_file_name, file_name_problem
from tuning.study.storage import Location

PROG = "python -m tuning.report"
# The best lr counts as at the edge when it lies within this many decades of LR_LOW or LR_HIGH
# (0.2 decades: a factor of about 1.6, 5% of the four-decade range).
EDGE_DECADES = 0.2


@dataclass
class Report:
    """What ``write_report`` wrote and what it warns about."""

    index: Path
    pictures: list[Picture] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def lr_edge_warning(lr: float, low: float = LR_LOW, high: float = LR_HIGH) -> str | None:
    """A warning when ``lr`` lies at an edge of the log-uniform range [low, high], else None."""
    for edge, side in ((low, "lower"), (high, "upper")):
        if abs(math.log10(lr) - math.log10(edge)) <= EDGE_DECADES:
            return (
                f"the best learning rate {lr:.3g} lies at the {side} edge of the search range "
                f"{low:g}..{high:g}; the best value may lie outside it: widen the lr range of "
                "the search space (--space; docs/spaces.md) and search again."
            )
    return None


def write_report(study: optuna.Study, out: Path, metrics: dict[str, Any] | None,
                 metrics_file: Path | list[Path]) -> Report:
    """Write every picture of ``study`` (and of ``metrics``, if given) and index.html into ``out``.

    ``metrics_file``: where the test metrics were looked for, for the note when they are missing.

    Raises:
        StudyError: the study has no completed trial.
    """
    config = best_config(study)
    report = Report(index=out / "index.html")
    # The range the chosen trial drew its lr from (a space may give each optimizer its own).
    drawn = study.trials[config["trial_number"]].distributions.get("lr")
    edge = (lr_edge_warning(float(config["params"]["lr"]), drawn.low, drawn.high)
            if isinstance(drawn, FloatDistribution) and drawn.log else None)
    if edge:
        report.warnings.append(edge)
    if metrics is not None and metrics.get("trial_number") != config["trial_number"]:
        report.warnings.append(
            f"the test result is of trial {metrics.get('trial_number')}, but the study's best "
            f"trial is now {config['trial_number']}: run python -m tuning.train again."
        )
    report.pictures += draw_study(study, out)
    places = metrics_file if isinstance(metrics_file, list) else [metrics_file]
    looked = " or ".join(str(place) for place in places) or "no file is named after the study"
    if metrics is None and recorded_test(study) is not None:
        report.pictures.append(Picture(
            "confusion_matrix", CONFUSION_TITLE, written=False,
            why_not=f"the test result is recorded on the study, but its metrics file is not "
            f"here ({looked} is missing): pass --metrics with its path, or run python -m "
            f"tuning.train --study-name {study.study_name} again",
        ))
    elif metrics is None:
        report.pictures.append(Picture(
            "confusion_matrix", CONFUSION_TITLE, written=False,
            why_not=f"no retrained model yet ({looked} is missing): run python -m "
            f"tuning.train --study-name {study.study_name}",
        ))
    else:
        report.pictures.append(draw_confusion(metrics, out))
    write_atomically(report.index, index_html(study, config, metrics, report))
    return report


def _cell(value: Any) -> str:
    return html.escape(str(value))


def index_html(study: optuna.Study, config: dict[str, Any], metrics: dict[str, Any] | None,
               report: Report) -> str:
    """The index page: summary table, warnings, then every picture with its two files."""
    counts = config["trials"]
    params = config["params"]
    rows = [
        ("Study", study.study_name),
        ("Trials", f"{counts['complete']} complete, {counts['pruned']} pruned, "
                   f"{counts['fail']} failed"),
        ("Epochs per trial", config["epochs"]),
        ("Chosen trial", f"{config['trial_number']}: " + ", ".join(
            f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
            for key, value in params.items())),
        ("Chosen by", config.get("selected_by") or "the best value"),
        ("Validation accuracy (chosen trial)", f"{config['validation_accuracy']:.4f}"),
    ]
    trial = finished_baseline(study)
    if trial is not None:
        stop = pruned_at(trial)
        rows.append((f"Validation accuracy (tutorial configuration, trial {trial.number})",
                     f"{trial.value:.4f}" if trial.state == TrialState.COMPLETE else
                     f"{stop[1]:.4f} when pruned after epoch {stop[0]}" if stop else
                     "pruned before it reported an epoch"))
    recorded = recorded_test(study)
    if metrics is None and recorded is not None:
        rows.append(("Test accuracy (retrained, scored once; recorded on the study)",
                     f"{recorded['test_accuracy']:.4f} (loss {recorded['test_loss']:.4f}); "
                     f"trial {recorded['trial_number']} trained {recorded['epochs']} epochs "
                     f"({recorded['train_on']}), seed {recorded['seed']}"))
    elif metrics is None:
        rows.append(("Test accuracy", "not measured yet: run python -m tuning.train"))
    else:
        rows.append(("Test accuracy (retrained, scored once)",
                     f"{metrics['test_accuracy']:.4f} (loss {metrics['test_loss']:.4f}) on "
                     f"{metrics['test_size']} images; trial {metrics['trial_number']} trained "
                     f"{metrics['epochs']} epochs on {metrics['train_size']} images "
                     f"({metrics['train_on']}), seed {metrics['seed']}"))
    table = "\n".join(f"<tr><th>{_cell(k)}</th><td>{_cell(v)}</td></tr>" for k, v in rows)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Study {_cell(study.study_name)}: report</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:.3em .6em;"
        "text-align:left}.warning{background:#fff3cd;padding:.5em 1em;border-left:4px solid "
        "#e0a800}img{max-width:100%;border:1px solid #eee}</style>",
        "</head><body>",
        f"<h1>Study {_cell(study.study_name)}</h1>",
        f"<table>\n{table}\n</table>",
    ]
    parts += [f'<p class="warning">Warning: {_cell(w)}</p>' for w in report.warnings]
    if metrics is not None:
        per_class = "\n".join(
            f"<tr><td>{_cell(name)}</td><td>{'-' if acc is None else f'{acc:.4f}'}</td></tr>"
            for name, acc in metrics["per_class_accuracy"].items()
        )
        parts.append("<h2>Test accuracy per class</h2>\n<table><tr><th>class</th>"
                     f"<th>accuracy</th></tr>\n{per_class}\n</table>")
    for picture in report.pictures:
        parts.append(f"<h2>{_cell(picture.title)}</h2>")
        if picture.written:
            parts.append(
                f'<p><a href="{picture.stem}.html">interactive (HTML)</a> · '
                f'<a href="{picture.stem}.png">picture (PNG)</a></p>'
                f'<a href="{picture.stem}.html"><img src="{picture.stem}.png" '
                f'alt="{_cell(picture.title)}"></a>'
            )
        else:
            parts.append(f"<p>Not drawn: {_cell(picture.why_not)}</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


@stoppable(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    """Write the report; return the process exit status."""
    parser = Parser(
        prog=PROG,
        description="Draw a study's optimization history, per-epoch validation curves, "
        "parameter importances, slice and parallel-coordinate plots, and the retrained model's "
        "test confusion matrix, as self-contained HTML and PNG, with an index.html summary.",
        formatter_class=HelpFormatter,
    )
    add_study_arguments(parser, DEFAULT_STUDY_NAME)
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the report (default: studies/<study-name>-report)")
    parser.add_argument("--metrics", type=Path, default=None,
                        help="test metrics of python -m tuning.train (default: "
                        "studies/<study-name>-test.json, else the file the study recorded when "
                        "train ran; left out of the report if missing)")
    add_upload_arguments(parser, "the PNG pictures")
    args = parser.parse_args(argv)
    quiet_optuna()
    try:
        # The defaults are named after the study: a name that cannot name a file needs --out
        # (and is reported without a test result unless --metrics names one or the study
        # recorded where train wrote it).
        out = args.out or DEFAULT_OUT / f"{check_file_name(args.study_name)}-report"
        check_out_folder(out)
        named = file_name_problem(args.study_name) is None
        location = Location.of(args.storage, args.study_name)
        study = load_study(location, args.study_name)
        metrics, looked = find_metrics(
            study, args.metrics, metrics_path(DEFAULT_OUT, args.study_name) if named else None)
        report = write_report(study, out, metrics, looked)
        if args.upload:
            folder = artifact_dir(location, args.artifact_dir)
            pngs = [out / f"{p.stem}.png" for p in report.pictures if p.written]
            published = [publish(study, open_store(folder), png) for png in pngs]
    except (UsageError, OSError) as exc:
        return fail(PROG, str(exc), exc=exc)
    for warning in report.warnings:
        print(f"{PROG}: warning: {warning}", file=sys.stderr)
    drawn = [p for p in report.pictures if p.written]
    for picture in report.pictures:
        if not picture.written:
            print(f"Not drawn: {picture.stem}: {picture.why_not}")
    print(f"{len(drawn)} pictures (HTML and PNG) in {out}")
    print(f"Report: {report.index}")
    if args.upload:
        print(f"Artifacts: {artifacts_line(published, folder, location.shown)}")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
