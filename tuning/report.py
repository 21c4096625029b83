"""python -m tuning.report: a study's pictures as HTML and PNG, and an index page with a summary.

Every picture is written twice: as a self-contained HTML page (plotly, its JavaScript inlined, so
it opens from disk without a server) and as a PNG drawn by Optuna's matplotlib plots (for papers
and for viewers without JavaScript). ``index.html`` links them and sums the study up.
"""

from __future__ import annotations

import html
import io
import json
import math
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: never open a window, work on machines without a display

import optuna
import optuna.visualization as vis
import optuna.visualization.matplotlib as mvis
import plotly.graph_objects as go
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from optuna.trial import TrialState

from tuning.cli import HelpFormatter, Parser, add_study_arguments, fail, quiet_optuna
from tuning.export import DEFAULT_OUT, best_config, write_atomically
from tuning.space import LR_HIGH, LR_LOW
from tuning.study import DEFAULT_STUDY_NAME, StudyError, default_storage, is_baseline, load_study
from tuning.train import metrics_path

PROG = "python -m tuning.report"
PLOTTED_PARAMS = ["lr", "batch_size", "optimizer"]  # the slice and parallel-coordinate axes
# The best lr counts as at the edge when it lies within this many decades of LR_LOW or LR_HIGH
# (0.2 decades: a factor of about 1.6, 5% of the four-decade range).
EDGE_DECADES = 0.2
PNG_DPI = 150
MAX_LEGEND_TRIALS = 12  # a per-epoch PNG of more trials than this drops its legend

Plot = Callable[[optuna.Study], Any]


@dataclass(frozen=True)
class Picture:
    """One picture of the report: its files, or why it could not be drawn."""

    stem: str  # file name without suffix
    title: str
    written: bool
    why_not: str = ""


@dataclass
class Report:
    """What ``write_report`` wrote and what it warns about."""

    index: Path
    pictures: list[Picture] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _intermediate_values_png(study: optuna.Study) -> Any:
    """Optuna's matplotlib per-epoch plot, without its legend of one entry per trial when the
    study has more than ``MAX_LEGEND_TRIALS``: 60 entries dwarf the plot (the HTML version
    names a trial on hover)."""
    ax = mvis.plot_intermediate_values(study)
    legend = ax.get_legend()
    trials = len(study.get_trials(deepcopy=False))
    if legend is not None and trials > MAX_LEGEND_TRIALS:
        legend.remove()
        ax.set_title(f"{ax.get_title()} ({trials} trials)")
    return ax


# stem, title, plotly function, matplotlib function: the study's own pictures, in page order.
STUDY_PLOTS: tuple[tuple[str, str, Plot, Plot], ...] = (
    ("optimization_history", "Optimization history: validation accuracy per trial",
     vis.plot_optimization_history, mvis.plot_optimization_history),
    ("intermediate_values", "Validation accuracy per epoch (pruned trials stop early)",
     vis.plot_intermediate_values, _intermediate_values_png),
    ("param_importances", "Parameter importances",
     vis.plot_param_importances, mvis.plot_param_importances),
    ("slice", "Validation accuracy against lr, batch size and optimizer",
     lambda s: vis.plot_slice(s, params=PLOTTED_PARAMS),
     lambda s: mvis.plot_slice(s, params=PLOTTED_PARAMS)),
    ("parallel_coordinate", "Parallel coordinates of lr, batch size and optimizer",
     lambda s: vis.plot_parallel_coordinate(s, params=PLOTTED_PARAMS),
     lambda s: mvis.plot_parallel_coordinate(s, params=PLOTTED_PARAMS)),
)


def lr_edge_warning(lr: float, low: float = LR_LOW, high: float = LR_HIGH) -> str | None:
    """A warning when ``lr`` lies at an edge of the log-uniform range [low, high], else None."""
    for edge, side in ((low, "lower"), (high, "upper")):
        if abs(math.log10(lr) - math.log10(edge)) <= EDGE_DECADES:
            return (
                f"the best learning rate {lr:.3g} lies at the {side} edge of the search range "
                f"{low:g}..{high:g}; the best value may lie outside it: widen LR_LOW/LR_HIGH "
                "in tuning/space.py and search again."
            )
    return None


def read_metrics(path: Path, study_name: str) -> dict[str, Any]:
    """Read a test metrics JSON written by ``python -m tuning.train`` for ``study_name``.

    Raises:
        ValueError: the file is not JSON, or is of another study.
    """
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read the test metrics {path}: {exc}.") from None
    if not isinstance(metrics, dict) or "confusion_matrix" not in metrics:
        raise ValueError(f"{path} is not a test metrics file of python -m tuning.train.")
    if metrics.get("study_name") != study_name:
        raise ValueError(f"{path} holds the test result of study {metrics.get('study_name')!r}, "
                         f"not of {study_name!r}; pass the right --metrics.")
    return metrics


def confusion_figures(metrics: dict[str, Any]) -> tuple[go.Figure, Figure]:
    """The retrained model's test confusion matrix as a plotly and a matplotlib figure."""
    matrix = metrics["confusion_matrix"]
    counts, classes = matrix["counts"], matrix["classes"]
    title = (f"Test confusion matrix: accuracy {metrics['test_accuracy']:.4f} on "
             f"{metrics['test_size']} images (trial {metrics['trial_number']})")
    plotly_fig = go.Figure(go.Heatmap(
        z=counts, x=classes, y=classes, colorscale="Blues", text=counts,
        texttemplate="%{text}", hovertemplate="true %{y}<br>predicted %{x}: %{z}<extra></extra>",
    ))
    plotly_fig.update_layout(title=title, xaxis_title="predicted class",
                             yaxis_title="true class", yaxis_autorange="reversed",
                             width=800, height=700)
    figure = Figure(figsize=(8, 7))
    ax = figure.add_subplot()
    ax.grid(False)  # Optuna's matplotlib plots switch on the ggplot style, grid included
    image = ax.imshow(counts, cmap="Blues")
    figure.colorbar(image, ax=ax)
    peak = max(max(row) for row in counts) or 1
    for i, row in enumerate(counts):
        for j, count in enumerate(row):
            ax.text(j, i, str(count), ha="center", va="center", fontsize=8,
                    color="white" if count > peak / 2 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=10)
    figure.tight_layout()
    return plotly_fig, figure


def _png_bytes(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # A figure whose tick labels leave no room for tight_layout keeps its own layout;
        # bbox_inches="tight" still crops the picture to everything drawn.
        warnings.filterwarnings("ignore", "Tight layout not applied", UserWarning)
        figure.savefig(buffer, format="png", dpi=PNG_DPI, bbox_inches="tight")
    return buffer.getvalue()


def _figure_of(axes: Any) -> Figure:
    """The figure of what an Optuna matplotlib plot returns (one Axes or an array of them)."""
    first = axes.flat[0] if hasattr(axes, "flat") else axes
    return first.get_figure()


def _write_picture(out: Path, stem: str, plotly_fig: go.Figure, figure: Figure) -> None:
    write_atomically(out / f"{stem}.html",
                      plotly_fig.to_html(include_plotlyjs=True, full_html=True))
    write_atomically(out / f"{stem}.png", _png_bytes(figure))


def _draw(study: optuna.Study, out: Path, stem: str, title: str, plotly_plot: Plot,
          matplotlib_plot: Plot) -> Picture:
    """Draw one study plot both ways; a plot the study cannot support yet becomes a note."""
    figure = None
    try:
        with warnings.catch_warnings():
            # Optuna marks its matplotlib plots experimental and warns on sparse studies; the
            # picture (or the note below) is what a reader needs.
            warnings.simplefilter("ignore")
            plotly_fig = plotly_plot(study)
            figure = _figure_of(matplotlib_plot(study))
        _write_picture(out, stem, plotly_fig, figure)
    except (ValueError, RuntimeError, ZeroDivisionError, IndexError) as exc:
        return Picture(stem, title, written=False, why_not=" ".join(str(exc).split()))
    finally:
        if figure is not None:
            plt.close(figure)
    return Picture(stem, title, written=True)


def write_report(study: optuna.Study, out: Path, metrics: dict[str, Any] | None,
                 metrics_file: Path) -> Report:
    """Write every picture of ``study`` (and of ``metrics``, if given) and index.html into ``out``.

    Raises:
        StudyError: the study has no completed trial.
    """
    config = best_config(study)
    report = Report(index=out / "index.html")
    edge = lr_edge_warning(float(config["params"]["lr"])) if "lr" in config["params"] else None
    if edge:
        report.warnings.append(edge)
    if metrics is not None and metrics.get("trial_number") != config["trial_number"]:
        report.warnings.append(
            f"the test result is of trial {metrics.get('trial_number')}, but the study's best "
            f"trial is now {config['trial_number']}: run python -m tuning.train again."
        )
    out.mkdir(parents=True, exist_ok=True)
    for stem, title, plotly_plot, matplotlib_plot in STUDY_PLOTS:
        report.pictures.append(_draw(study, out, stem, title, plotly_plot, matplotlib_plot))
    title = "Confusion matrix of the retrained model on the test split"
    if metrics is None:
        report.pictures.append(Picture(
            "confusion_matrix", title, written=False,
            why_not=f"no retrained model yet ({metrics_file} is missing): run python -m "
            f"tuning.train --study-name {study.study_name}",
        ))
    else:
        plotly_fig, figure = confusion_figures(metrics)
        _write_picture(out, "confusion_matrix", plotly_fig, figure)
        report.pictures.append(Picture("confusion_matrix", title, written=True))
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
    baseline = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if is_baseline(t)]
    if baseline:
        rows.append(("Validation accuracy (tutorial configuration, trial "
                     f"{baseline[0].number})", f"{baseline[0].value:.4f}"))
    if metrics is None:
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
                        "studies/<study-name>-test.json, left out of the report if missing)")
    args = parser.parse_args(argv)
    url = args.storage or default_storage(args.study_name)
    out = args.out or DEFAULT_OUT / f"{args.study_name}-report"
    metrics_file = args.metrics or metrics_path(DEFAULT_OUT, args.study_name)
    quiet_optuna()
    try:
        study = load_study(url, args.study_name)
        metrics = None
        if args.metrics is not None or metrics_file.exists():
            if not metrics_file.exists():
                raise ValueError(f"--metrics {metrics_file} does not exist; python -m "
                                 "tuning.train writes it.")
            metrics = read_metrics(metrics_file, args.study_name)
        report = write_report(study, out, metrics, metrics_file)
    except (StudyError, ValueError, OSError) as exc:
        return fail(PROG, str(exc))
    for warning in report.warnings:
        print(f"{PROG}: warning: {warning}", file=sys.stderr)
    drawn = [p for p in report.pictures if p.written]
    for picture in report.pictures:
        if not picture.written:
            print(f"Not drawn: {picture.stem}: {picture.why_not}")
    print(f"{len(drawn)} pictures (HTML and PNG) in {out}")
    print(f"Report: {report.index}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
