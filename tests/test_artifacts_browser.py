"""The retrained study's artifacts in optuna-dashboard, rendered by headless Chromium.

Uses the dashboard e2e module's ``served`` study: a copy of the session's study, retrained by
``python -m tuning.train`` (which uploads beside it) and served by ``python -m tuning.dashboard``
(which finds the store there). The screenshot lands in the test's temporary folder
(``--basetemp`` keeps it) so that a person can look at it.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

import optuna
import pytest

from tests.conftest import run_main
from tests.test_dashboard_e2e import (  # noqa: F401 (fixtures)
    CHROMIUM_FLAGS,
    _rendered_text,
    chromium,
    served,
)
from tuning.results.artifacts import current_artifacts

RETRAINED = ("fashion-mnist-model.pt", "fashion-mnist-test.json", "confusion_matrix.png")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.browser
def test_the_study_page_lists_the_retrained_artifacts(chromium, served, tmp_path: Path):  # noqa: F811
    text = _rendered_text(chromium, served["study"], served["profile"])
    assert "Study Artifacts" in text, text[:3000]
    for name in RETRAINED:
        assert name in text, text[:3000]
    shot = tmp_path / "study-artifacts.png"
    done = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={served['profile']}",
         "--window-size=1400,3800", f"--screenshot={shot}", served["study"]],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.read_bytes().startswith(PNG_MAGIC)


@pytest.mark.browser
def test_the_dashboard_serves_each_artifact_byte_for_byte(served):  # noqa: F811
    """Through optuna-dashboard's own download route, the very bytes train wrote."""
    base = served["start"].removesuffix("/dashboard/")
    study_id = served["study"].rstrip("/").rsplit("/", 1)[-1]
    out = Path(served["out"])
    attrs = optuna.load_study(study_name=served["name"], storage=served["url"]).user_attrs
    for name in RETRAINED[:2]:
        artifact_id = attrs[f"artifact:{name}"]
        with urllib.request.urlopen(f"{base}/artifacts/{study_id}/{artifact_id}",
                                    timeout=30) as response:
            assert response.read() == (out / name).read_bytes()
    metrics = json.loads((out / RETRAINED[1]).read_text())
    assert metrics["test_accuracy"] == served["metrics"]["test_accuracy"]


@pytest.mark.browser
def test_an_artifact_deleted_in_the_dashboard_is_no_longer_current(served):  # noqa: F811
    """optuna-dashboard's delete leaves a null record, which Optuna's own listing cannot read;
    the study's current artifacts leave it out, and the next retrain uploads it again."""
    base = served["start"].removesuffix("/dashboard/")
    study_id = served["study"].rstrip("/").rsplit("/", 1)[-1]
    study = optuna.load_study(study_name=served["name"], storage=served["url"])
    model_id = study.user_attrs[f"artifact:{RETRAINED[0]}"]
    request = urllib.request.Request(f"{base}/api/artifacts/{study_id}/{model_id}",
                                     method="DELETE")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 204
    assert sorted(current_artifacts(study)) == sorted(RETRAINED[1:])
    store = served["url"].removeprefix("sqlite:///").removesuffix(".db") + "-artifacts"
    target = Path(served["out"]) / "again"
    result = run_main("tuning.train", "--storage", served["url"], "--data-dir",
                      str(served["data"]), "--out", str(target), cwd=target.parent)
    assert result.returncode == 0, result.stderr
    # The weights again (their bytes were deleted), new metrics; the picture is unchanged.
    assert "(2 uploaded, 1 unchanged)" in result.stdout and Path(store).is_dir()
    assert sorted(current_artifacts(study)) == sorted(RETRAINED)
