"""Optuna's gRPC storage proxy as --storage grpc://HOST:PORT, started by python -m tuning.proxy.

A real proxy process in front of a real SQLite file: the search, export and the dashboard go
through it, and it stops on SIGTERM. Bad addresses and storages are one line each.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import tuning.study.grpc_proxy
from tests.conftest import ROOT, run_main
from tests.pgserver import free_port
from tuning.study.grpc_proxy import open_proxy

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def _start(tool: str, *args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", tool, *args], cwd=cwd, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _first_line(process: subprocess.Popen, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    line = process.stdout.readline()  # the tool prints it once it is about to serve
    assert line, process.communicate()
    assert time.monotonic() < deadline
    return line


@pytest.fixture
def proxy(tmp_path):
    """A proxy serving a new SQLite file; yields (its grpc:// URL, the file's URL, process)."""
    database = f"sqlite:///{tmp_path / 'behind.db'}"
    port = free_port()
    process = _start("tuning.proxy", "--storage", database, "--port", str(port), cwd=tmp_path)
    try:
        line = _first_line(process)
        assert f"on grpc://127.0.0.1:{port}" in line
        open_proxy(f"grpc://127.0.0.1:{port}")  # waits until it answers
        yield f"grpc://127.0.0.1:{port}", database, process
    finally:
        process.kill()
        process.wait()


@pytest.mark.e2e
def test_search_export_and_dashboard_go_through_the_proxy(proxy, tmp_path, idx_dir):
    url, database, _ = proxy
    result = run_main("tuning.search", "--storage", url, "--data-dir", str(idx_dir),
                      "--val-size", "100", "--n-trials", "5", "--epochs", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Study 'fashion-mnist' in {url} (new)" in result.stdout
    assert f"python -m tuning.dashboard --storage {url} --study-name fashion-mnist" in (
        result.stdout)
    trials = optuna.load_study(study_name="fashion-mnist", storage=database).trials
    assert len(trials) == 5 and all(t.state in FINISHED for t in trials)  # in the database
    exported = run_main("tuning.export", "--storage", url, "--out", str(tmp_path / "out"),
                        cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    best = json.loads((tmp_path / "out" / "fashion-mnist-best.json").read_text())
    assert best["trial_number"] in {t.number for t in trials}
    port = free_port()
    dashboard = _start("tuning.dashboard", "--storage", url, "--port", str(port), cwd=tmp_path)
    try:
        assert url in _first_line(dashboard)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=30) as page:
            studies = json.load(page)["study_summaries"]
        assert [s["study_name"] for s in studies] == ["fashion-mnist"]
    finally:
        dashboard.send_signal(signal.SIGINT)
        dashboard.wait(timeout=30)


@pytest.mark.faults
def test_sigterm_stops_the_proxy_with_one_line(proxy):
    _, _, process = proxy
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 128 + signal.SIGTERM
    stderr = process.stderr.read()
    assert "Storage proxy stopped." in stderr and "Traceback" not in stderr


def test_bad_proxy_addresses_and_storages_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(tuning.study.grpc_proxy, "PROXY_WAIT_S", 1)
    cases = [
        (("tuning.export", "--storage", "grpc://127.0.0.1"), "not a storage proxy address"),
        (("tuning.export", "--storage", "grpc://127.0.0.1:99999"), "grpc://HOST:PORT"),
        (("tuning.export", "--storage", f"grpc://127.0.0.1:{free_port()}"),
         "no storage proxy answered at grpc://127.0.0.1:"),
        (("tuning.proxy",), "--storage is required"),
        (("tuning.proxy", "--storage", "studies/x.log"), "journal file"),
        (("tuning.proxy", "--storage", "grpc://127.0.0.1:1"), "is a proxy already"),
        (("tuning.proxy", "--storage", "sqlite:///x.db", "--port", "0"), "--port must be"),
    ]
    for (tool, *args), expected in cases:
        result = run_main(tool, *args, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        assert expected in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "studies").exists()
