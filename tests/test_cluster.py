"""--cluster ADDRESS on a real Dask cluster: scripts/cluster/dask-cluster.sh's local mode starts a
scheduler and two Dask worker processes (each with its nanny) on this machine.

A search on it stops exactly at its target, survives a Dask worker killed with SIGKILL mid-trial
(its trial is failed after the grace period and run again with its parameters and seed), and
stops every task on SIGTERM; confirm runs its runs there too. Without Dask, or without a
scheduler at the address, the flag is one line.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

import tuning.workers.cluster
from tests.conftest import ROOT, run_main
from tests.test_faults import EPOCHS, MARGIN, _start, _wait_for, assert_retried_once
from tuning.study.protocol import CONFIRM_RUNS_PREFIX

distributed = pytest.importorskip("distributed", reason="the cluster extra is not installed")

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
SCRIPT = ROOT / "scripts" / "cluster" / "dask-cluster.sh"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[str]:
    """The address of a running local Dask cluster of two worker processes (the recipe)."""
    port = _free_port()
    log = (tmp_path / "dask.log").open("w")
    proc = subprocess.Popen(["bash", str(SCRIPT), "local"], cwd=tmp_path, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            env={**_env(), "DASK_PORT": str(port), "NWORKERS": "2",
                                 "PYTHON": sys.executable})
    address = f"tcp://127.0.0.1:{port}"
    try:
        with distributed.Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield address
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _search(address: str, url: str, idx_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "tuning.search", "--cluster", address, "--storage", url,
            "--data-dir", str(idx_dir), "--val-size", "100", *args]


def _trials(url: str) -> list[FrozenTrial]:
    try:
        return optuna.load_study(study_name="fashion-mnist", storage=url).trials
    except KeyError:
        return []


def _in_progress(url: str) -> list[FrozenTrial]:
    return [t for t in _trials(url) if t.state == TrialState.RUNNING and "worker" in t.user_attrs
            and 3 <= len(t.intermediate_values) < EPOCHS - MARGIN]


def test_without_dask_the_flag_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed: ImportError
    for tool in ("tuning.search", "tuning.confirm"):
        result = run_main(tool, "--cluster", "tcp://127.0.0.1:8786", cwd=tmp_path)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "pip install -e '.[cluster]'" in result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "studies").exists()


def test_no_scheduler_at_the_address_is_one_line_and_no_study(tmp_path, idx_dir, monkeypatch):
    monkeypatch.setattr(tuning.workers.cluster, "CONNECT_TIMEOUT_S", 2)
    address = f"tcp://127.0.0.1:{_free_port()}"
    result = run_main("tuning.search", "--cluster", address, "--data-dir", str(idx_dir),
                      "--val-size", "100", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"no Dask scheduler answers at --cluster {address}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "studies").exists()


@pytest.mark.e2e
def test_a_search_on_the_cluster_stops_exactly_at_its_target(tmp_path, idx_dir, cluster):
    url = f"sqlite:///{tmp_path / 's.db'}"
    result = subprocess.run(_search(cluster, url, idx_dir, "--n-trials", "6", "--epochs", "2"),
                            cwd=tmp_path, env=_env(), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Cluster {cluster}: 2 Dask worker(s), 2 thread(s); 2 worker loop(s)" in result.stdout
    trials = _trials(url)
    assert len(trials) == 6 and all(t.state in FINISHED for t in trials)
    assert result.stdout.count("] trial ") == 6  # each finished trial printed once
    where = {t.user_attrs["worker"] for t in trials}
    assert str(os.getpid()) not in {w.rsplit(":", 1)[1] for w in where}
    assert {t.user_attrs["torch_threads"] for t in trials} == {1}


@pytest.mark.e2e
@pytest.mark.faults
def test_a_dask_worker_killed_mid_trial_has_its_trial_run_again(tmp_path, idx_dir, cluster):
    url = f"sqlite:///{tmp_path / 's.db'}"
    command = _search(cluster, url, idx_dir, "--heartbeat", "2", "--n-trials", "4",
                      "--epochs", str(EPOCHS), "--pruner", "none", "--sampler", "random")
    proc = _start(command, tmp_path)
    victim = _wait_for(lambda: _in_progress(url) or None, proc, 240)[0]
    os.kill(int(victim.user_attrs["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, out + err
    assert "left the cluster" in out and "Traceback" not in err

    assert_retried_once(_trials(url), victim.number, 4)


@pytest.mark.e2e
@pytest.mark.faults
def test_sigterm_stops_every_task_on_the_cluster(tmp_path, idx_dir, cluster):
    url = f"sqlite:///{tmp_path / 's.db'}"
    command = _search(cluster, url, idx_dir, "--heartbeat", "5", "--n-trials", "8",
                      "--epochs", str(EPOCHS), "--pruner", "none", "--sampler", "random")
    proc = _start(command, tmp_path)
    _wait_for(lambda: len(_in_progress(url)) == 2 or None, proc, 240)  # both loops mid-trial
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out + err
    assert "Stopped by SIGTERM" in err and "Traceback" not in err
    trials = _trials(url)
    assert not [t for t in trials if t.state == TrialState.RUNNING]  # each marked failed
    assert sum(t.state == TrialState.FAIL for t in trials) == 2
    with distributed.Client(cluster, timeout=30) as client:
        assert not any(client.processing().values())  # no task left on the cluster
    # Nothing trains on: a moment later the study has not moved.
    time.sleep(3)
    assert [t.state for t in _trials(url)] == [t.state for t in trials]


@pytest.mark.e2e
def test_confirm_runs_its_runs_on_the_cluster(tmp_path, searched, cluster):
    study = searched.copy_to(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "tuning.confirm", "--cluster", cluster, "--storage", study.url,
         "--data-dir", str(study.data), "--top", "2", "--seeds", "1"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"tasks on the Dask cluster at {cluster}" in result.stdout
    attrs = optuna.load_study(study_name="fashion-mnist", storage=study.url).user_attrs
    runs = [run for key, value in attrs.items() if key.startswith(CONFIRM_RUNS_PREFIX)
            for run in value["runs"]]
    assert len(runs) == 2 and {run["torch_threads"] for run in runs} == {1}
