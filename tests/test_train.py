"""python -m tuning.train: retrain the best configuration, score it once on the test split."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import torch
from optuna_dashboard import get_note, save_note

from benchmarks.synthetic import N_TEST, N_TRAIN, write_fashion_mnist, write_idx
from model.data import CLASSES, load_split, locate, split_train_val
from model.loops import evaluate
from model.network import NeuralNetwork
from tests.conftest import Searched, run_cli, run_main
from tuning.results.holdout import NOTE_HEADING, record_on_study

STUDY = "fashion-mnist"
VAL_SIZE = 100  # the session study's --val-size


def _train(study: Searched, out: Path, *args: str):
    return run_main("tuning.train", "--data-dir", str(study.data), "--out", str(out), *args,
                    cwd=study.dir)


def _metrics(out: Path) -> dict:
    return json.loads((out / f"{STUDY}-test.json").read_text())


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """This process starts each tool with ``count`` torch threads inside the block."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.mark.e2e
def test_train_from_an_exported_config_writes_loadable_weights_and_test_metrics(searched,
                                                                                 tmp_path):
    copy = searched.copy_to(tmp_path)  # train records its test result on the study
    result = run_cli("tuning.train", "--data-dir", str(copy.data), "--out", str(tmp_path),
                     "--config", str(copy.config), "--storage", copy.url, "--train-on", "train",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    config = json.loads(copy.config.read_text())
    metrics = _metrics(tmp_path)
    # The documented one-call load into model/'s network, weights_only.
    model = NeuralNetwork()
    model.load_state_dict(torch.load(tmp_path / f"{STUDY}-model.pt", weights_only=True))
    assert metrics["trial_number"] == config["trial_number"]
    assert metrics["params"] == config["params"] and metrics["config"] == config
    assert metrics["epochs"] == 2 and metrics["seed"] == config["trial_seed"]
    assert metrics["train_on"] == "train" and metrics["train_size"] == N_TRAIN - VAL_SIZE
    assert metrics["test_size"] == N_TEST
    counts = metrics["confusion_matrix"]["counts"]
    assert metrics["confusion_matrix"]["classes"] == list(CLASSES)
    assert sum(map(sum, counts)) == N_TEST
    assert sum(counts[k][k] for k in range(10)) / N_TEST == metrics["test_accuracy"]
    assert list(metrics["per_class_accuracy"]) == list(CLASSES)
    assert len(metrics["history"]["train_loss"]) == 2 and metrics["seconds"] > 0
    # Same seed, data and epochs as the best trial: the retrain replays its validation curve.
    assert metrics["replays_trial"] is True
    assert metrics["history"]["val_accuracy"] == config["history"]["val_accuracy"]
    # What train printed is what the JSON holds.
    assert f"Test accuracy {metrics['test_accuracy']:.4f}" in result.stdout
    assert result.stdout.count("epoch ") >= 2  # one progress line per epoch
    study = optuna.load_study(study_name=STUDY, storage=copy.url)
    assert study.user_attrs["test_accuracy"] == metrics["test_accuracy"]
    assert study.user_attrs["test_trial"] == config["trial_number"]
    assert f"test accuracy {metrics['test_accuracy']:.4f}" in get_note(study)


def test_the_retrain_uses_the_best_trials_thread_count_so_it_replays_it(tmp_path):
    # CPU sums depend on how many threads split them: a search worker with 1 thread and a
    # retrain with torch's default would train two different networks from one seed.
    # In-process, torch.set_num_threads stands in for OMP_NUM_THREADS (which torch reads
    # once, at start-up) as each tool's starting count; run_main restores it after each.
    idx_dir = write_fashion_mnist(tmp_path / "fmnist")
    url = f"sqlite:///{tmp_path / 's.db'}"
    with torch_threads(1):
        result = run_main("tuning.search", "--storage", url, "--data-dir", str(idx_dir),
                          "--val-size", str(VAL_SIZE), "--n-trials", "1", "--epochs", "2",
                          "--precision", "fp32", cwd=tmp_path)  # as the retrain
    assert result.returncode == 0, result.stderr
    trials = optuna.load_study(study_name=STUDY, storage=url).trials
    assert {t.user_attrs["torch_threads"] for t in trials} == {1}
    with torch_threads(2):
        result = run_main("tuning.train", "--storage", url, "--data-dir", str(idx_dir),
                          "--out", str(tmp_path), "--train-on", "train", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "1 torch thread(s)" in result.stdout
    metrics = _metrics(tmp_path)
    assert metrics["torch_threads"] == 1 and metrics["config"]["trial_threads"] == 1
    assert metrics["replays_trial"] is True
    with torch_threads(1):
        result = run_main("tuning.train", "--storage", url, "--data-dir", str(idx_dir),
                          "--out", str(tmp_path / "two"), "--threads", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert _metrics(tmp_path / "two")["torch_threads"] == 2


def test_a_rerun_with_the_same_config_and_seed_gives_the_same_test_result(searched, tmp_path):
    copy = searched.copy_to(tmp_path)
    first, second = tmp_path / "first", tmp_path / "second"
    for out in (first, second):
        result = _train(copy, out, "--storage", copy.url, "--seed", "7", "--epochs", "1")
        assert result.returncode == 0, result.stderr
    a, b = _metrics(first), _metrics(second)
    assert (a["test_accuracy"], a["test_loss"]) == (b["test_accuracy"], b["test_loss"])
    assert a["confusion_matrix"] == b["confusion_matrix"] and a["seed"] == 7
    weights = [torch.load(out / f"{STUDY}-model.pt", weights_only=True)
               for out in (first, second)]
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])
    # Another seed starts from other weights.
    third = tmp_path / "third"
    result = _train(copy, third, "--storage", copy.url, "--seed", "8", "--epochs", "1")
    assert result.returncode == 0, result.stderr
    other = torch.load(third / f"{STUDY}-model.pt", weights_only=True)
    assert not torch.equal(other["linear_relu_stack.0.weight"],
                           weights[0]["linear_relu_stack.0.weight"])


def test_by_default_the_retrain_trains_on_every_training_image(searched, tmp_path):
    # The default, chosen on validation images only: python -m benchmarks.train_on.
    copy = searched.copy_to(tmp_path)
    result = _train(copy, tmp_path, "--storage", copy.url, "--epochs", "1")
    assert result.returncode == 0, result.stderr
    metrics = _metrics(tmp_path)
    assert metrics["train_on"] == "train+val" and metrics["train_size"] == N_TRAIN
    assert set(metrics["history"]) == {"train_loss", "epoch_seconds"}  # nothing to validate on
    assert metrics["replays_trial"] is None
    assert "val acc" not in result.stdout
    assert metrics["weights_from_epoch"] == 1  # no validation: the last epoch's weights


def test_the_saved_weights_are_those_of_the_best_validation_epoch(searched, tmp_path):
    copy = searched.copy_to(tmp_path)
    result = _train(copy, tmp_path, "--storage", copy.url, "--epochs", "4", "--seed", "11",
                    "--train-on", "train")
    assert result.returncode == 0, result.stderr
    metrics = _metrics(tmp_path)
    curve = metrics["history"]["val_accuracy"]
    assert metrics["weights_from_epoch"] == curve.index(max(curve)) + 1
    assert f"Kept the weights of epoch {metrics['weights_from_epoch']}" in result.stdout
    model = NeuralNetwork()
    model.load_state_dict(torch.load(tmp_path / f"{STUDY}-model.pt", weights_only=True))
    source = locate(searched.data, download=False)
    split = split_train_val(load_split(source, "train"), VAL_SIZE, 0)
    assert evaluate(model, split.val)[1] == max(curve)


def test_a_config_without_its_study_database_trains_but_says_it_was_not_recorded(searched,
                                                                                  tmp_path):
    # Run from tmp_path, whose studies/ (the default database's folder) does not exist.
    result = run_main("tuning.train", "--data-dir", str(searched.data), "--out", str(tmp_path),
                      "--config", str(searched.config), "--epochs", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "not recorded on a study" in result.stdout
    assert (tmp_path / f"{STUDY}-test.json").is_file()


def test_the_test_split_is_read_only_after_training(searched, tmp_path):
    copy = searched.copy_to(tmp_path)  # where a broken train would record its result
    data = tmp_path / "data"
    write_fashion_mnist(data)
    # A test-image file of the wrong shape: training must finish before anything notices.
    write_idx(data / "t10k-images-idx3-ubyte", torch.zeros(5, 2, 2, dtype=torch.uint8).numpy())
    result = run_main("tuning.train", "--data-dir", str(data), "--out", str(tmp_path / "out"),
                      "--storage", copy.url, "--epochs", "1", cwd=tmp_path)
    assert result.returncode == 1
    assert "epoch  1/1" in result.stdout  # trained first
    assert "t10k-images" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert (tmp_path / "out" / f"{STUDY}-model.pt").is_file()
    assert not (tmp_path / "out" / f"{STUDY}-test.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--config", "missing.json"), "does not exist"),
        (("--epochs", "0"), "--epochs must be at least 1, but got 0"),
        (("--study-name", "other"), "no study 'other'"),
        (("--config", "{config}", "--study-name", "other"), "does not match the study"),
        (("--config", "{garbled}"), "is not a best configuration"),
        (("--config", "{config}", "--storage", "sqlite:///{dir}/nope.db"), "no study database"),
        (("--train-on", "test"), "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(searched, tmp_path, args, message):
    copy = searched.copy_to(tmp_path)  # where a train that went ahead would record
    garbled = tmp_path / "garbled.json"
    garbled.write_text(json.dumps({"params": {"lr": 0.1}}))
    args = tuple(a.format(config=copy.config, garbled=garbled, dir=copy.dir) for a in args)
    result = _train(copy, tmp_path / "out", "--storage", copy.url, *args)
    assert result.returncode == 2
    assert message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    assert not (copy.dir / "nope.db").exists()


def test_data_of_another_size_than_the_search_used_is_refused(searched, tmp_path):
    config = json.loads(searched.config.read_text())
    config["data_split"]["train_size"] = 999
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(config))
    result = run_main("tuning.train", "--data-dir", str(searched.data), "--out",
                      str(tmp_path / "out"), "--config", str(edited), cwd=tmp_path)
    assert result.returncode == 2
    assert "searched on 999 training images" in result.stderr
    assert not (tmp_path / "out").exists()


def test_recording_twice_replaces_its_note_section_and_keeps_the_users_text(tmp_path):
    study = optuna.create_study(study_name="noted", storage=f"sqlite:///{tmp_path / 'n.db'}",
                                direction="maximize")
    save_note(study, "# My notes\n\nKeep this line.\n")
    base = {"trial_number": 4, "params": {"lr": 0.01, "batch_size": 64, "optimizer": "Adam"},
            "epochs": 3, "train_size": 500, "train_on": "train", "seed": 1, "test_size": 100,
            "test_loss": 0.3, "validation_accuracy": 0.9, "finished_at": "now"}
    record_on_study(study, {**base, "test_accuracy": 0.81})
    record_on_study(study, {**base, "test_accuracy": 0.83})
    note = get_note(study)
    assert note.startswith("# My notes\n\nKeep this line.\n")
    assert note.count(NOTE_HEADING) == 1
    assert "test accuracy 0.8300" in note and "0.8100" not in note
    assert study.user_attrs["test_accuracy"] == 0.83
