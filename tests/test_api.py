"""tuning.api: the pipeline from Python, in-process, with the commands' defaults and checks."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import optuna
import pytest

from benchmarks.synthetic import synthetic_split, write_idx
from model.data import load_split, locate
from model.network import NeuralNetwork
from model.scoring import score
from tests.conftest import ROOT
from tuning import api
from tuning.cli.search_settings import SearchSettings
from tuning.results.artifacts import current_ids
from tuning.results.retraining import TrainSettings
from tuning.study.errors import UsageError

API_DOC = ROOT / "docs" / "api.md"


def test_a_small_search_confirm_export_and_train_in_process(idx_dir, no_system_data, tmp_path,
                                                            capsys):
    url = f"sqlite:///{tmp_path / 'nb.db'}"
    study = api.search("nb", storage=url, data_dir=idx_dir, n_trials=3, epochs=2, val_size=100,
                       precision="fp32")
    assert isinstance(study, optuna.Study)
    assert len(study.trials) == 3 and study.user_attrs["epochs"] == 2
    config = api.confirm("nb", url, top=1, seeds=1, data_dir=idx_dir, precision="fp32")
    assert config["selected_by"].startswith("confirmed: ") and len(config["confirmation"]) == 1
    exported = api.export("nb", url, out=tmp_path)
    assert json.loads((tmp_path / "nb-best.json").read_text())["params"] == exported["params"]
    assert exported["trial_number"] == config["trial_number"]
    metrics = api.train("nb", url, data_dir=idx_dir, out=tmp_path / "out", epochs=1)
    assert metrics["trial_number"] == config["trial_number"]
    assert metrics == json.loads((tmp_path / "out" / "nb-test.json").read_text())
    assert sorted(current_ids(api.get_study("nb", url))) == [
        "confusion_matrix.png", "nb-model.pt", "nb-test.json"]
    model = api.load_model("nb", url)
    assert isinstance(model, NeuralNetwork) and not model.training
    test = load_split(locate(idx_dir, download=False), "test")
    assert score(model, test)["test_accuracy"] == metrics["test_accuracy"]
    assert capsys.readouterr().out == ""  # values returned, nothing printed


@pytest.mark.parametrize(("call", "message"), [
    (lambda url: api.search("nb", storage=url, epochs=0), "--epochs must be at least 1, but "
     "got 0."),
    (lambda url: api.search("nb", storage=url, workers=2), "workers must be 1 here"),
    (lambda url: api.train("nb", url, train_on="test"), "--train-on must be one of"),
    (lambda url: api.confirm("nb", url, top=0), "--top must be at least 1, but got 0."),
])
def test_bad_input_raises_the_commands_message_and_writes_nothing(tmp_path, call, message):
    url = f"sqlite:///{tmp_path / 'nb.db'}"
    with pytest.raises(UsageError, match=re.escape(message)):
        call(url)
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_keyword_is_refused_by_name(tmp_path):
    with pytest.raises(TypeError, match="n_trails"):
        api.search("nb", storage=f"sqlite:///{tmp_path / 'nb.db'}", n_trails=3)


def test_the_api_defaults_are_the_commands(monkeypatch):
    from tuning import confirm, train

    assert train.parse_settings([]) == TrainSettings()  # the one settings class, shared
    parsed = vars(confirm.build_parser().parse_args([]))
    assert (parsed["top"], parsed["seeds"]) == (api.CONFIRM_TOP, api.CONFIRM_SEEDS)
    assert {f.name for f in fields(SearchSettings)} >= {"n_trials", "epochs", "space"}


def _many_images(folder: Path) -> Path:
    """Synthetic IDX files with 10,600 training images: the default 10,000 validate."""
    folder.mkdir(parents=True)
    for prefix, n, seed in (("train", 10_600, 1), ("t10k", 100, 2)):
        images, labels = synthetic_split(n, seed)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images.astype(np.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels.astype(np.uint8))
    return folder


@pytest.mark.e2e
def test_the_notebook_example_in_docs_api_md_runs_as_pasted(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", API_DOC.read_text(), re.S)
    assert len(blocks) == 1, "docs/api.md shows one example"
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "FASHION_MNIST_DIR": str(_many_images(tmp_path / "fmnist"))}
    done = subprocess.run([sys.executable, "-c", blocks[0]], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "4 trials, best validation accuracy" in done.stdout
    assert "NeuralNetwork in eval mode: True" in done.stdout
    assert (tmp_path / "studies" / "notebook-artifacts").is_dir()
    # docs/pipeline.md's download with Optuna's own calls, on the study just made.
    pipeline = (ROOT / "docs" / "pipeline.md").read_text()
    download = next(b for b in re.findall(r"```python\n(.*?)```", pipeline, re.S)
                    if "download_artifact" in b)
    done = subprocess.run([sys.executable, "-c", download.replace("quick", "notebook")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "notebook-model.pt").read_bytes() == (
        tmp_path / "studies" / "notebook-model.pt").read_bytes()
