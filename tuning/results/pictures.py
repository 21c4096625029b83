"""A study's pictures: each drawn as plotly HTML and as a matplotlib PNG, or a note why not.

Every picture is written twice: as a self-contained HTML page (plotly, its JavaScript inlined, so
it opens from disk without a server) and as a PNG drawn by Optuna's matplotlib plots (for papers
and for viewers without JavaScript).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
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

from tuning.results.files import write_atomically
from tuning.space.file import in_space_order

PNG_DPI = 150
MAX_LEGEND_TRIALS = 12  # a per-epoch PNG of more trials than this drops its legend
INCHES_PER_AXIS = 1.3  # parallel coordinates: room for an axis and its tick labels
CONFUSION_TITLE = "Confusion matrix of the retrained model on the test split"
# Optuna's axis titles, and what they are in a study of this suite: a trial's value is its
# best validation accuracy (the dashboard's metric name is val_accuracy), a step is an epoch.
VALUE = "validation accuracy"  # Optuna's target_name: its axes, legends and colour bars
AXIS_WORDS = {  # the titles Optuna's plots give without a target_name
    "Objective Value": VALUE,
    "val_accuracy": VALUE,
    "Intermediate Value": VALUE,
    "Step": "epoch",
    "Trial": "trial",
    "Hyperparameter Importance": "importance for validation accuracy",
    "Hyperparameter": "parameter",
    "Intermediate Values Plot": "Validation accuracy per epoch",  # titles
    "Hyperparameter Importances": "Parameter importances for validation accuracy",
}

Plot = Callable[[optuna.Study, list[str]], Any]  # a study and the parameters to plot


@dataclass(frozen=True)
class Picture:
    """One picture of the report: its files, or why it could not be drawn."""

    stem: str  # file name without suffix
    title: str
    written: bool
    why_not: str = ""


def plotted_params(study: optuna.Study) -> list[str]:
    """The parameters the study's completed trials sampled, in its space file's order: the
    slice and parallel-coordinate axes. Optuna plots completed trials only (and refuses a
    parameter they lack, such as SGD's momentum where only pruned trials used SGD); fixed
    values of the space (not sampled) have nothing to plot."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return in_space_order(study, {name for trial in complete for name in trial.params})


def _intermediate_values_png(study: optuna.Study) -> Any:
    """Optuna's matplotlib per-epoch plot, without its legend of one entry per trial when the
    study has more than ``MAX_LEGEND_TRIALS``: 60 entries dwarf the plot (the HTML version
    names a trial on hover)."""
    ax = mvis.plot_intermediate_values(study)
    ax.set_title(AXIS_WORDS.get(ax.get_title(), ax.get_title()))
    legend = ax.get_legend()
    trials = len(study.get_trials(deepcopy=False))
    if legend is not None and trials > MAX_LEGEND_TRIALS:
        legend.remove()
        ax.set_title(f"{ax.get_title()} ({trials} trials)")
    return ax


def _parallel_coordinate_png(study: optuna.Study, params: list[str]) -> Any:
    """Optuna's matplotlib parallel coordinates, widened by ``INCHES_PER_AXIS`` per axis: at
    its default width the extended space's dozen axes print their ticks over each other."""
    ax = mvis.plot_parallel_coordinate(study, params=params, target_name=VALUE)
    figure = _figure_of(ax)
    width, height = figure.get_size_inches()
    figure.set_size_inches(max(width, INCHES_PER_AXIS * (len(params) + 1)), height)
    return ax


# stem, title, plotly function, matplotlib function: the study's own pictures, in page order.
STUDY_PLOTS: tuple[tuple[str, str, Plot, Plot], ...] = (
    ("optimization_history", "Optimization history: validation accuracy per trial",
     lambda s, _: vis.plot_optimization_history(s, target_name=VALUE),
     lambda s, _: mvis.plot_optimization_history(s, target_name=VALUE)),
    ("intermediate_values", "Validation accuracy per epoch (pruned trials stop early)",
     lambda s, _: vis.plot_intermediate_values(s), lambda s, _: _intermediate_values_png(s)),
    ("param_importances", "Parameter importances for validation accuracy",
     lambda s, _: vis.plot_param_importances(s, target_name=VALUE),
     lambda s, _: mvis.plot_param_importances(s, target_name=VALUE)),
    ("slice", "Validation accuracy against each parameter the study searched",
     lambda s, params: vis.plot_slice(s, params=params, target_name=VALUE),
     lambda s, params: mvis.plot_slice(s, params=params, target_name=VALUE)),
    ("parallel_coordinate", "Parallel coordinates of the parameters the study searched",
     lambda s, params: vis.plot_parallel_coordinate(s, params=params, target_name=VALUE),
     lambda s, params: _parallel_coordinate_png(s, params)),
)


def _plotly_words(figure: go.Figure) -> go.Figure:
    """``figure`` with Optuna's axis titles (``AXIS_WORDS``) said in this suite's words."""
    if figure.layout.title.text in AXIS_WORDS:
        figure.layout.title.text = AXIS_WORDS[figure.layout.title.text]
    for axis in [*figure.select_xaxes(), *figure.select_yaxes()]:
        text = axis.title.text
        if text in AXIS_WORDS:
            axis.title.text = AXIS_WORDS[text]
    for trace in figure.data:  # legend entries; a parallel-coordinate plot's dimensions
        if getattr(trace, "name", None) in AXIS_WORDS:
            trace.name = AXIS_WORDS[trace.name]
        for dimension in getattr(trace, "dimensions", None) or ():
            if dimension.label in AXIS_WORDS:
                dimension.label = AXIS_WORDS[dimension.label]
    return figure


def _matplotlib_words(figure: Figure) -> Figure:
    """``figure`` with Optuna's axis labels and titles (``AXIS_WORDS``) in this suite's words."""
    for ax in figure.axes:
        for get, set_ in ((ax.get_xlabel, ax.set_xlabel), (ax.get_ylabel, ax.set_ylabel)):
            if get() in AXIS_WORDS:
                set_(AXIS_WORDS[get()])
        for loc in ("center", "left"):  # Optuna puts some titles on the left
            if ax.get_title(loc=loc) in AXIS_WORDS:
                ax.set_title(AXIS_WORDS[ax.get_title(loc=loc)], loc=loc)
        legend = ax.get_legend()
        for text in legend.get_texts() if legend is not None else ():
            if text.get_text() in AXIS_WORDS:
                text.set_text(AXIS_WORDS[text.get_text()])
    return figure


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
          matplotlib_plot: Plot, params: list[str]) -> Picture:
    """Draw one study plot both ways; a plot the study cannot support yet becomes a note."""
    figure = None
    try:
        with warnings.catch_warnings():
            # Optuna marks its matplotlib plots experimental and warns on sparse studies; the
            # picture (or the note below) is what a reader needs.
            warnings.simplefilter("ignore")
            plotly_fig = _plotly_words(plotly_plot(study, params))
            figure = _matplotlib_words(_figure_of(matplotlib_plot(study, params)))
        _write_picture(out, stem, plotly_fig, figure)
    except (ValueError, RuntimeError, ZeroDivisionError, IndexError) as exc:
        return Picture(stem, title, written=False, why_not=" ".join(str(exc).split()))
    finally:
        if figure is not None:
            plt.close(figure)
    return Picture(stem, title, written=True)


def draw_study(study: optuna.Study, out: Path) -> list[Picture]:
    """Draw every picture of ``study`` into ``out``; one that cannot be drawn is a note."""
    out.mkdir(parents=True, exist_ok=True)
    params = plotted_params(study)
    return [_draw(study, out, stem, title, plotly_plot, matplotlib_plot, params)
            for stem, title, plotly_plot, matplotlib_plot in STUDY_PLOTS]


def draw_confusion(metrics: dict[str, Any], out: Path) -> Picture:
    """Draw the retrained model's test confusion matrix into ``out``."""
    plotly_fig, figure = confusion_figures(metrics)
    try:
        _write_picture(out, "confusion_matrix", plotly_fig, figure)
    finally:
        plt.close(figure)
    return Picture("confusion_matrix", CONFUSION_TITLE, written=True)
