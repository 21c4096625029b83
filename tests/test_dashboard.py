"""optuna-dashboard serves a study from a short search: per-epoch curves, params, attributes.

It runs as a user runs it, a server in its own process (e2e), on the session's read-only
``searched`` study (4 trials of 2 epochs; trial 2 pruned after its first epoch).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import SEARCHED_ARGS, study_content

pytestmark = pytest.mark.e2e

EPOCHS = int(SEARCHED_ARGS[SEARCHED_ARGS.index("--epochs") + 1])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


@pytest.fixture
def dashboard(searched):
    """Base URL of optuna-dashboard serving the finished 4-trial, 2-epoch ``searched`` study."""
    url, before = searched.url, study_content(searched.path)
    executable = Path(sys.executable).parent / "optuna-dashboard"
    command = [str(executable)] if executable.exists() else [shutil.which("optuna-dashboard")]
    port = _free_port()
    server = subprocess.Popen([*command, url, "--host", "127.0.0.1", "--port", str(port),
                               "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _get(f"{base}/api/meta")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"optuna-dashboard did not start: {server.stderr.read()}")
                time.sleep(0.3)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert study_content(searched.path) == before  # the shared study stays as it was


def test_dashboard_shows_epochs_params_and_trial_attributes(dashboard):
    studies = json.loads(_get(f"{dashboard}/api/studies"))["study_summaries"]
    assert [s["study_name"] for s in studies] == ["fashion-mnist"]
    detail = json.loads(_get(f"{dashboard}/api/studies/{studies[0]['study_id']}"))
    trials = detail["trials"]
    assert len(trials) == 4
    # successive halving (rf 4) lets a quarter on after epoch 1; trial 3 is the tutorial's
    assert [t["state"] for t in trials] == ["Complete", "Pruned", "Complete", "Pruned"]
    for trial in trials:
        steps = [point["step"] for point in trial["intermediate_values"]]
        epochs = 1 if trial["state"] == "Pruned" else EPOCHS  # pruned after its first epoch
        assert steps == list(range(1, epochs + 1))  # one curve point per epoch
        assert {p["name"] for p in trial["params"]} == {"lr", "batch_size", "optimizer"}
        attrs = {a["key"] for a in trial["user_attrs"]}
        assert {"train_loss", "val_loss", "val_accuracy", "epoch_seconds", "seed"} <= attrs
    assert detail["has_intermediate_values"] is True
    assert b"<html" in _get(dashboard + "/dashboard").lower()
