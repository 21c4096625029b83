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

from tuning.results.files import write_atomically

PLOTTED_PARAMS = ["lr", "batch_size", "optimizer"]  # the slice and parallel-coordinate axes
PNG_DPI = 150
MAX_LEGEND_TRIALS = 12  # a per-epoch PNG of more trials than this drops its legend
CONFUSION_TITLE = "Confusion matrix of the retrained model on the test split"

Plot = Callable[[optuna.Study], Any]


@dataclass(frozen=True)
class Picture:
    """One picture of the report: its files, or why it could not be drawn."""

    stem: str  # file name without suffix
    title: str
    written: bool
    why_not: str = ""


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


def draw_study(study: optuna.Study, out: Path) -> list[Picture]:
    """Draw every picture of ``study`` into ``out``; one that cannot be drawn is a note."""
    out.mkdir(parents=True, exist_ok=True)
    return [_draw(study, out, stem, title, plotly_plot, matplotlib_plot)
            for stem, title, plotly_plot, matplotlib_plot in STUDY_PLOTS]


def draw_confusion(metrics: dict[str, Any], out: Path) -> Picture:
    """Draw the retrained model's test confusion matrix into ``out``."""
    plotly_fig, figure = confusion_figures(metrics)
    try:
        _write_picture(out, "confusion_matrix", plotly_fig, figure)
    finally:
        plt.close(figure)
    return Picture("confusion_matrix", CONFUSION_TITLE, written=True)
