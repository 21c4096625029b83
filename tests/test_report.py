"""python -m tuning.report: pictures as HTML and PNG, an index page, warnings."""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import run_cli, run_main, study_content
from tuning.report import lr_edge_warning
from tuning.results.pictures import MAX_LEGEND_TRIALS, _draw, _intermediate_values_png
from tuning.space.hyperparameters import LR_HIGH, LR_LOW

STUDY = "fashion-mnist"
STUDY_PICTURES = ("optimization_history", "intermediate_values", "param_importances", "slice",
                  "parallel_coordinate")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_picture(folder, stem):
    page = (folder / f"{stem}.html").read_text()
    # Self-contained: plotly.js is inlined, nothing is fetched from a server.
    assert "<script" in page and "src=\"http" not in page and len(page) > 1_000_000
    png = (folder / f"{stem}.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 5_000


@pytest.mark.e2e
def test_report_before_training_draws_the_study_and_says_the_test_is_missing(searched,
                                                                             tmp_path):
    out = tmp_path / "report"
    # From tmp_path: no studies/fashion-mnist-test.json there for the report to pick up.
    result = run_cli("tuning.report", "--storage", searched.url, "--out", str(out),
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for stem in STUDY_PICTURES:
        _assert_picture(out, stem)
    assert not (out / "confusion_matrix.png").exists()
    index = (out / "index.html").read_text()
    assert "run python -m tuning.train" in index
    assert "2 complete, 2 pruned, 0 failed" in index
    study = optuna.load_study(study_name=STUDY, storage=searched.url)
    assert study.get_trials(states=(TrialState.PRUNED,)), "the study needs a pruned trial"
    assert f"{study.best_value:.4f}" in index
    assert all(f'href="{stem}.html"' in index and f'src="{stem}.png"' in index
               for stem in STUDY_PICTURES)
    # The per-epoch plot holds every trial with intermediate values, the pruned one too.
    curves = (out / "intermediate_values.html").read_text()
    assert all(f"Trial{t.number}" in curves for t in study.trials)
    assert f"Report: {out / 'index.html'}" in result.stdout


def test_report_after_training_adds_the_confusion_matrix_and_test_accuracy(searched,
                                                                          tmp_path):
    copy = searched.copy_to(tmp_path)  # train records its test result on the study
    common = ("--storage", copy.url)
    result = run_main("tuning.train", *common, "--data-dir", str(copy.data), "--out",
                      str(tmp_path), "--epochs", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    metrics_file = tmp_path / f"{STUDY}-test.json"
    metrics = json.loads(metrics_file.read_text())
    out = tmp_path / "report"
    result = run_main("tuning.report", *common, "--out", str(out), "--metrics",
                      str(metrics_file), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    _assert_picture(out, "confusion_matrix")
    index = (out / "index.html").read_text()
    assert f"{metrics['test_accuracy']:.4f} (loss {metrics['test_loss']:.4f})" in index
    assert "Ankle boot" in index  # the per-class table names the classes


def test_report_defaults_to_the_studies_folder(searched, tmp_path):
    studies = tmp_path / "studies"
    studies.mkdir()
    searched.copy_to(tmp_path).path.rename(studies / f"{STUDY}.db")
    result = run_main("tuning.report", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (studies / f"{STUDY}-report" / "index.html").is_file()


def test_a_best_learning_rate_at_the_edge_of_the_range_is_warned_about(tmp_path):
    url = f"sqlite:///{tmp_path / 'edge.db'}"
    study = optuna.create_study(study_name="edge", storage=url, direction="maximize")
    # Trials told by hand: only their parameters and values matter to the report.
    for lr, value in ((0.095, 0.9), (1e-3, 0.5), (1e-2, 0.7)):
        trial = study.ask()
        trial.suggest_float("lr", LR_LOW, LR_HIGH, log=True)
        study.tell(trial, state=TrialState.FAIL)
        study.enqueue_trial({"lr": lr, "batch_size": 64, "optimizer": "Adam"})
        trial = study.ask()
        trial.suggest_float("lr", LR_LOW, LR_HIGH, log=True)
        trial.suggest_categorical("batch_size", (16, 32, 64, 128, 256))
        trial.suggest_categorical("optimizer", ("SGD", "Adam", "RMSprop"))
        trial.report(value, 1)
        study.tell(trial, value)
    result = run_main("tuning.report", "--storage", url, "--study-name", "edge", "--out",
                      str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "warning: the best learning rate 0.095 lies at the upper edge" in result.stderr
    assert "upper edge" in (tmp_path / "out" / "index.html").read_text()
    assert "3 complete, 0 pruned, 3 failed" in (tmp_path / "out" / "index.html").read_text()


def test_the_edge_warning_marks_only_the_ends_of_the_range():
    assert "lower edge" in lr_edge_warning(1.2e-5)
    assert "upper edge" in lr_edge_warning(0.08)
    assert lr_edge_warning(1e-3) is None and lr_edge_warning(0.05) is None


def test_a_study_that_sampled_only_lr_plots_lr_alone(tmp_path):
    # One trial that sampled only lr: the slice plot shows lr, and asks for nothing else
    # (it used to ask for the tutorial's batch size and optimizer, and was not drawn).
    url = f"sqlite:///{tmp_path / 'one.db'}"
    study = optuna.create_study(study_name="one", storage=url, direction="maximize")
    trial = study.ask()
    trial.suggest_float("lr", LR_LOW, LR_HIGH, log=True)
    study.tell(trial, 0.5)
    result = run_main("tuning.report", "--storage", url, "--study-name", "one", "--out",
                      str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Not drawn: slice" not in result.stdout
    assert (tmp_path / "out" / "slice.png").read_bytes().startswith(PNG_MAGIC)
    assert (tmp_path / "out" / "optimization_history.png").read_bytes().startswith(PNG_MAGIC)


def test_a_picture_that_cannot_be_drawn_becomes_a_note(searched, tmp_path):
    def cannot(study, params):
        raise ValueError("Parameter batch_size does not exist in your study.")

    study = optuna.load_study(study_name=STUDY, storage=searched.url)
    picture = _draw(study, tmp_path, "slice", "Slice", cannot, cannot, ["lr"])
    assert not picture.written and picture.why_not.startswith("Parameter batch_size")
    assert not (tmp_path / "slice.png").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--study-name", "other"), "no study 'other'"),
        (("--metrics", "missing.json"), "does not exist"),
        (("--metrics", "{other}"), "not of 'fashion-mnist'"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(searched, tmp_path, args, message):
    other = tmp_path / "other-test.json"
    other.write_text(json.dumps({"study_name": "other", "confusion_matrix": {}}))
    before = study_content(searched.path)
    args = tuple(a.format(other=other) for a in args)
    result = run_main("tuning.report", "--storage", searched.url, "--out",
                      str(tmp_path / "out"), *args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    assert study_content(searched.path) == before


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.parametrize("trials, legend", [(3, True), (MAX_LEGEND_TRIALS + 1, False)])
def test_the_per_epoch_png_drops_its_legend_only_when_there_are_many_trials(
    tmp_path, trials, legend
):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", direction="maximize")
    for number in range(trials):
        trial = study.ask()
        for epoch in (1, 2):
            trial.report(0.5 + number / 100 + epoch / 10, epoch)
        study.tell(trial, 0.7 + number / 100)
    ax = _intermediate_values_png(study)
    try:
        assert (ax.get_legend() is not None) is legend
    finally:
        ax.get_figure().clf()
