"""python -m tuning.dashboard in a real browser: Debian's headless Chromium renders its pages.

Where no chromium is installed the browser tests skip, except under CI (CI=true), whose .ci/run
installs it, so a missing browser there is a failure. The browser tests serve a copy of the
session's ``searched`` study (retraining records a test result on it). Ctrl-C (a real signal to
the server process) and the one-line errors (in-process) are tested without a browser.
"""

from __future__ import annotations

import html
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest

from tests.conftest import ROOT, run_main
from tuning.study.baseline import finished_baseline

STUDY = "e2e-fashion"  # the hand-made small study's
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--virtual-time-budget=10000",  # let the single-page app fetch and render its data
)


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have Debian's chromium for the dashboard test (.ci/run "
                        "installs it with apt-get install chromium)")
        pytest.skip("no chromium on PATH; apt-get install chromium to run the dashboard "
                    "browser test")
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _read_lines(process: subprocess.Popen, prefixes: tuple[str, ...],
                timeout: float) -> list[str]:
    """The first stdout line of ``process`` starting with each of ``prefixes``, in order."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout],
                     daemon=True).start()
    found: list[str] = []
    deadline = time.monotonic() + timeout
    while len(found) < len(prefixes) and time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            if process.poll() is not None:
                break
            continue
        if line.startswith(prefixes[len(found)]):
            found.append(line.strip())
    if len(found) < len(prefixes):
        process.kill()
        pytest.fail(f"tuning.dashboard printed no {prefixes[len(found)]!r} line: "
                    f"{process.stderr.read()}")
    return found


@pytest.fixture(scope="module")
def served(tmp_path_factory, chromium, searched) -> dict:
    """A dashboard process serving a real 4-trial study whose best trial was retrained.

    A copy of the session's ``searched`` study: train records its test result on the study.
    """
    tmp = tmp_path_factory.mktemp("e2e")
    study = searched.copy_to(tmp)
    name = study.name
    common = ("--study-name", name, "--storage", study.url)
    result = run_main("tuning.train", *common, "--data-dir", str(study.data), "--out",
                      str(tmp / "out"), cwd=tmp)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp / "out" / f"{name}-test.json").read_text())
    baseline = finished_baseline(optuna.load_study(study_name=name, storage=study.url))
    assert baseline is not None, "the 4-trial search ran no tutorial trial"
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tuning.dashboard", *common, "--port", str(port)],
        cwd=tmp, env={**os.environ, "PYTHONPATH": str(ROOT)}, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        lines = _read_lines(server, ("Dashboard of", f"Study {name!r}"), timeout=60)
        start, study_page = (line.split(": ")[-1] for line in lines)
        assert start == f"http://127.0.0.1:{port}/dashboard/"
        yield {"start": start, "study": study_page, "metrics": metrics, "name": name,
               "baseline": baseline.number, "profile": tmp / "chromium-profile",
               "out": tmp / "out", "url": study.url, "data": study.data}
    finally:
        server.terminate()
        server.wait(timeout=10)


def _rendered_text(chromium: str, url: str, profile: Path) -> str:
    """The visible text of ``url`` after headless Chromium ran its scripts."""
    result = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    dom = re.sub(r"<(script|style)\b[^>]*>.*?</\1>", " ", result.stdout, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", dom)).split())


@pytest.mark.browser
def test_the_start_page_lists_the_study(chromium, served):
    text = _rendered_text(chromium, served["start"], served["profile"])
    assert f"1. {served['name']}" in text, text[:2000]
    assert "Direction: MAXIMIZE" in text


@pytest.mark.browser
def test_the_trials_page_shows_every_trial_with_its_parameters(chromium, served):
    # ?numbers=N selects trial N in the list: the tutorial's trial, the last of a 4-trial search.
    text = _rendered_text(chromium, f"{served['study']}/trials?numbers={served['baseline']}",
                          served["profile"])
    assert "4 Trials" in text, text[:2000]
    for number in range(4):
        assert f"Trial {number}" in text
    # The tutorial's configuration, with its named parameters and curve.
    assert "lr 0.001 batch_size 64 optimizer SGD" in text, text[:3000]
    assert "Intermediate Values" in text and "baseline tutorial" in text


@pytest.mark.browser
def test_the_note_page_shows_the_test_accuracy_beside_the_validation_one(chromium, served):
    metrics = served["metrics"]
    text = _rendered_text(chromium, served["study"] + "/note", served["profile"])
    assert f"test accuracy {metrics['test_accuracy']:.4f}" in text, text[:2000]
    assert f"validation accuracy in the search: {metrics['validation_accuracy']:.4f}" in text


@pytest.fixture
def small_study(tmp_path) -> str:
    """A SQLite study with one finished trial, told by hand: enough to serve."""
    url = f"sqlite:///{tmp_path / 'small.db'}"
    study = optuna.create_study(study_name=STUDY, storage=url, direction="maximize")
    study.tell(study.ask({"lr": optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True)}),
               0.5)
    return url


def _start(url: str, port: int, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tuning.dashboard", "--study-name", STUDY, "--storage", url,
         "--port", str(port)],
        cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT)}, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


@pytest.mark.faults
def test_ctrl_c_stops_the_dashboard_with_status_130_and_no_traceback(small_study, tmp_path):
    server = _start(small_study, _free_port(), tmp_path)
    try:
        _read_lines(server, ("Dashboard of",), timeout=60)
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=30) == 130
    finally:
        server.kill()
    stderr = server.stderr.read()
    assert "Traceback" not in stderr and "Dashboard stopped." in stderr


def test_a_port_in_use_and_a_missing_study_are_one_line_errors(small_study, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_main("tuning.dashboard", "--study-name", STUDY, "--storage", small_study,
                          "--port", str(port), cwd=tmp_path)
    assert result.returncode == 2
    assert f"port {port} on 127.0.0.1 is in use" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = run_main("tuning.dashboard", "--study-name", "nowhere", cwd=tmp_path)
    assert result.returncode == 2
    assert "no study database at studies/nowhere.db" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "studies").exists()
