"""The report reads the study: its own parameters plotted, axes in the study's words, the
test result found from the study wherever the report runs."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import Searched, run_main
from tuning.results.pictures import STUDY_PLOTS, _figure_of, _matplotlib_words, plotted_params

STUDY = "fashion-mnist"
OPTUNA_WORDS = ("Objective Value", "Intermediate Value", "Hyperparameter Importance",
                "val_accuracy")


def figure_json(page: str) -> str:
    """The figure a plotly page draws (its data and layout), without the inlined plotly.js."""
    return page[page.rindex("Plotly.newPlot("):]


@pytest.fixture(scope="module")
def extended_report(searched_extended: Searched, tmp_path_factory: pytest.TempPathFactory
                    ) -> Path:
    out = tmp_path_factory.mktemp("report") / "report"
    result = run_main("tuning.report", "--storage", searched_extended.url, "--out", str(out),
                      cwd=searched_extended.dir)
    assert result.returncode == 0, result.stderr
    return out


def test_an_extended_study_plots_its_own_parameters(searched_extended: Searched,
                                                    extended_report: Path) -> None:
    study = optuna.load_study(study_name=STUDY, storage=searched_extended.url)
    sampled = {name for trial in study.trials if trial.state == TrialState.COMPLETE
               for name in trial.params}
    assert set(plotted_params(study)) == sampled
    assert {"hidden_width", "dropout", "weight_decay"} <= sampled  # more than the tutorial's 3
    slice_figure = figure_json((extended_report / "slice.html").read_text())
    parallel = figure_json((extended_report / "parallel_coordinate.html").read_text())
    # Optuna draws parallel coordinates as lines over an axis per parameter, named by ticks.
    ticks = json.loads(re.search(r'"ticktext":(\[[^\]]*\])', parallel).group(1))
    assert ticks[0] == "validation accuracy"
    for name in sampled:
        assert re.search(rf'"title":\{{"text":"{name}"', slice_figure), f"slice lacks {name}"
        assert name in ticks, f"parallel coordinates lack {name}"


def test_the_tutorial_study_plots_its_three(searched: Searched) -> None:
    study = optuna.load_study(study_name=STUDY, storage=searched.url)
    assert plotted_params(study) == ["lr", "batch_size", "optimizer"]


def test_every_axis_says_validation_accuracy_and_epoch(extended_report: Path) -> None:
    for stem, *_ in STUDY_PLOTS:
        figure = figure_json((extended_report / f"{stem}.html").read_text())
        assert not [w for w in OPTUNA_WORDS if w in figure], stem
        assert '"text":"Step"' not in figure, stem
        assert "validation accuracy" in figure, stem
    curves = figure_json((extended_report / "intermediate_values.html").read_text())
    assert '"xaxis":{"title":{"text":"epoch"}' in curves.replace(" ", "")
    assert '"yaxis":{"title":{"text":"validation accuracy"}' in curves


def test_the_png_axes_say_validation_accuracy_and_epoch(searched_extended: Searched) -> None:
    study = optuna.load_study(study_name=STUDY, storage=searched_extended.url)
    params = plotted_params(study)
    for stem, _, _, matplotlib_plot in STUDY_PLOTS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna's matplotlib plots are experimental
            figure = _matplotlib_words(_figure_of(matplotlib_plot(study, params)))
        labels = [label for ax in figure.axes for label in (ax.get_xlabel(), ax.get_ylabel())]
        assert not [w for w in (*OPTUNA_WORDS, "Step") if w in labels], (stem, labels)
        if stem == "intermediate_values":
            assert labels[:2] == ["epoch", "validation accuracy"]
        elif stem in ("optimization_history", "slice"):
            assert "validation accuracy" in labels, (stem, labels)


def test_the_report_finds_the_test_result_from_the_study(searched: Searched,
                                                         tmp_path: Path) -> None:
    copy = searched.copy_to(tmp_path)
    elsewhere = tmp_path / "trained-here"
    result = run_main("tuning.train", "--storage", copy.url, "--data-dir", str(copy.data),
                      "--out", str(elsewhere), "--epochs", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    metrics_file = elsewhere / f"{STUDY}-test.json"
    metrics = json.loads(metrics_file.read_text())
    other = tmp_path / "another-folder"  # no studies/ here: the study says where the file is
    other.mkdir()
    result = run_main("tuning.report", "--storage", copy.url, "--out", str(other / "r"),
                      cwd=other)
    assert result.returncode == 0, result.stderr
    index = (other / "r" / "index.html").read_text()
    assert "no retrained model yet" not in index
    assert f"{metrics['test_accuracy']:.4f} (loss {metrics['test_loss']:.4f})" in index
    assert (other / "r" / "confusion_matrix.png").is_file()

    metrics_file.unlink()  # gone (or on another machine): the study's record still shows
    result = run_main("tuning.report", "--storage", copy.url, "--out", str(other / "r2"),
                      cwd=other)
    assert result.returncode == 0, result.stderr
    index = (other / "r2" / "index.html").read_text()
    assert "no retrained model yet" not in index
    assert f"{metrics['test_accuracy']:.4f} (loss {metrics['test_loss']:.4f})" in index
    assert str(metrics_file.resolve()) in index  # says where it looked
    assert not (other / "r2" / "confusion_matrix.png").exists()


def test_a_parameter_only_pruned_trials_sampled_is_not_asked_for(tmp_path: Path) -> None:
    # Optuna plots completed trials only: SGD's momentum, sampled by a pruned SGD trial alone,
    # would make the slice and parallel-coordinate plots fail (seen on a real extended search).
    url = f"sqlite:///{tmp_path / 'p.db'}"
    study = optuna.create_study(study_name="p", storage=url, direction="maximize")
    for optimizer, state in (("Adam", TrialState.COMPLETE), ("SGD", TrialState.PRUNED),
                             ("Adam", TrialState.COMPLETE)):
        trial = study.ask()
        trial.suggest_categorical("optimizer", ["SGD", "Adam"])
        trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        if optimizer == "SGD":
            trial.suggest_float("momentum", 0.8, 0.99)
        trial.report(0.5, 1)
        study.tell(trial, 0.5 if state == TrialState.COMPLETE else None, state=state)
    assert "momentum" not in plotted_params(study)
    result = run_main("tuning.report", "--storage", url, "--study-name", "p", "--out",
                      str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Not drawn: slice" not in result.stdout
    assert "Not drawn: parallel_coordinate" not in result.stdout
