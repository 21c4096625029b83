"""A study's results as Optuna artifacts: train uploads, report and export on request, reruns.

Real SQLite studies, a real FileSystemArtifactStore, downloads through Optuna's own API.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import torch
from optuna.artifacts import FileSystemArtifactStore, download_artifact, get_all_artifact_meta

from model.data import load_split, locate
from model.network import load_trained
from model.scoring import score
from tests.conftest import SEARCHED_ARGS, Searched, run_main
from tuning.results.artifacts import (
    artifact_dir,
    current_artifacts,
    current_ids,
    default_artifact_dir,
    fetch,
)
from tuning.study.storage import Location

STUDY = "fashion-mnist"
RETRAINED = (f"{STUDY}-model.pt", f"{STUDY}-test.json", "confusion_matrix.png")


def _study(copy: Searched) -> optuna.Study:
    return optuna.load_study(study_name=STUDY, storage=copy.url)


def _train(copy: Searched, out: Path, *args: str):
    result = run_main("tuning.train", "--storage", copy.url, "--data-dir", str(copy.data),
                      "--out", str(out), "--epochs", "1", *args, cwd=copy.dir)
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture
def retrained(searched: Searched, tmp_path: Path) -> tuple[Searched, Path]:
    """A copy of the session's study, retrained once: its store beside it, the default."""
    copy = searched.copy_to(tmp_path)
    _train(copy, tmp_path / "out")
    return copy, tmp_path / "out"


def test_train_uploads_weights_metrics_and_picture_to_the_store_beside_the_study(retrained):
    copy, out = retrained
    store_dir = copy.path.with_name("s-artifacts")  # studies/<name>.db -> <name>-artifacts
    current = current_artifacts(_study(copy))
    assert sorted(current) == sorted(RETRAINED)
    assert len(list(store_dir.iterdir())) == 3
    store = FileSystemArtifactStore(store_dir)
    for name in RETRAINED[:2]:  # downloaded with Optuna's own call: the very bytes written
        target = out / "downloaded" / name
        target.parent.mkdir(exist_ok=True)
        download_artifact(artifact_store=store, file_path=str(target),
                          artifact_id=current[name].artifact_id)
        assert target.read_bytes() == (out / name).read_bytes()
    assert current["confusion_matrix.png"].mimetype == "image/png"


def test_a_model_loads_from_the_downloaded_weights_and_scores_as_recorded(retrained, tmp_path):
    copy, _ = retrained
    store = FileSystemArtifactStore(copy.path.with_name("s-artifacts"))
    study = _study(copy)
    weights = fetch(study, store, f"{STUDY}-model.pt", tmp_path / "fetched")
    metrics = json.loads(fetch(study, store, f"{STUDY}-test.json", tmp_path / "fetched")
                         .read_text())
    model = load_trained(metrics["network"], weights)
    test = load_split(locate(copy.data, download=False), "test")
    assert score(model, test)["test_accuracy"] == metrics["test_accuracy"]
    assert isinstance(model.state_dict()[next(iter(model.state_dict()))], torch.Tensor)


def test_a_rerun_makes_its_files_current_and_uploads_no_unchanged_copy(retrained):
    copy, out = retrained
    before = current_ids(_study(copy))
    result = _train(copy, out)
    after = current_ids(_study(copy))
    # Same seed, same data: the same weights and picture, so no second copy of either; the
    # metrics JSON records when it finished, so a new one, which the study now names current.
    assert after[f"{STUDY}-model.pt"] == before[f"{STUDY}-model.pt"]
    assert after["confusion_matrix.png"] == before["confusion_matrix.png"]
    assert after[f"{STUDY}-test.json"] != before[f"{STUDY}-test.json"]
    assert "(1 uploaded, 2 unchanged)" in result.stdout
    listed = [m.filename for m in get_all_artifact_meta(_study(copy))]
    assert sorted(listed) == sorted([*RETRAINED, f"{STUDY}-test.json"])  # the old one: history


def test_report_and_export_upload_only_when_asked(retrained, tmp_path):
    copy, _ = retrained
    store_dir = tmp_path / "elsewhere"
    common = ("--storage", copy.url, "--artifact-dir", str(store_dir))
    result = run_main("tuning.export", *common, "--out", str(tmp_path / "x"), cwd=copy.dir)
    assert result.returncode == 0, result.stderr
    assert not store_dir.exists() and "Artifacts" not in result.stdout
    result = run_main("tuning.export", *common, "--out", str(tmp_path / "x"), "--upload",
                      cwd=copy.dir)
    assert result.returncode == 0, result.stderr
    assert f"{STUDY}-best.json on the study in {store_dir}" in result.stdout
    result = run_main("tuning.report", *common, "--out", str(tmp_path / "r"), "--upload",
                      "--metrics", str(tmp_path / "out" / f"{STUDY}-test.json"), cwd=copy.dir)
    assert result.returncode == 0, result.stderr
    current = current_ids(_study(copy))
    pngs = sorted(p.name for p in (tmp_path / "r").glob("*.png"))
    assert "confusion_matrix.png" in pngs and "optimization_history.png" in pngs
    assert set(pngs) <= set(current) and f"{STUDY}-best.json" in current
    store = FileSystemArtifactStore(store_dir)
    target = tmp_path / "dl.png"
    download_artifact(artifact_store=store, file_path=str(target),
                      artifact_id=current["optimization_history.png"])
    assert target.read_bytes() == (tmp_path / "r" / "optimization_history.png").read_bytes()


def test_the_dashboard_refuses_an_artifact_dir_that_is_not_there(retrained, tmp_path):
    copy, _ = retrained
    result = run_main("tuning.dashboard", "--storage", copy.url, "--artifact-dir",
                      str(tmp_path / "nowhere"), "--port", "1", cwd=copy.dir)
    assert result.returncode == 2
    assert "there is no artifact folder" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_search_names_the_artifact_dir_for_optuna_dashboard(searched, tmp_path):
    copy = searched.copy_to(tmp_path)  # a resumed search at its target trains nothing
    result = run_main("tuning.search", "--storage", copy.url, "--data-dir", str(copy.data),
                      *SEARCHED_ARGS, "--n-trials", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (f"optuna-dashboard {copy.url} --artifact-dir "
            f"{copy.path.with_name('s-artifacts')}") in result.stdout


@pytest.mark.parametrize(("url", "folder"), [
    ("sqlite:///studies/fashion-mnist.db", "studies/fashion-mnist-artifacts"),
    ("sqlite:////shared/s/quick.db", "/shared/s/quick-artifacts"),
    ("/shared/studies/big.log", "/shared/studies/big-artifacts"),
    ("postgresql+psycopg://me@db/tune", "studies/artifacts"),
])
def test_the_store_sits_beside_the_study(url, folder):
    assert default_artifact_dir(Location.parse(url)) == Path(folder)
    assert artifact_dir(Location.parse(url), Path("elsewhere")) == Path("elsewhere")
