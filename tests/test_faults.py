"""Faults for real: a worker killed with SIGKILL, Ctrl-C, a read-only or full studies/ disk.

The kill and Ctrl-C tests run once on SQLite and once on the PostgreSQL server of
tests/postgres.py (skipped where none answers, a failure in CI; marked ``postgres`` too).
A file where the studies folder should be is a bad input, not a fault: it runs in-process.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from tests import postgres
from tests.conftest import ROOT, run_main

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
T = TypeVar("T")
# Epochs per trial in the kill and Ctrl-C tests. A signal is sent only while its trials are
# MARGIN or more epochs from their end, so it lands mid-trial: MARGIN epochs take far longer
# than reading the study and sending the signal.
EPOCHS, MARGIN = 100, 50
TARGET = 8  # trials of the Ctrl-C test: one finished, then both workers caught busy


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request, tmp_path) -> Iterator[tuple[str, str]]:
    """(storage URL, study name): a SQLite file in tmp_path, or a fresh PostgreSQL study."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 's.db'}", "faults"
        return
    names = postgres.fresh_study("faults")
    yield postgres.URL, next(names)
    next(names, None)  # deletes the study


def _command(url: str, name: str, idx_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "tuning.search", "--storage", url, "--study-name", name,
            "--data-dir", str(idx_dir), "--val-size", "100", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _start(command: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=cwd, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _trials(url: str, name: str) -> list[FrozenTrial]:
    try:
        return optuna.load_study(study_name=name, storage=url).trials
    except KeyError:  # not created yet
        return []


def _wait_for(condition: Callable[[], T | None], proc: subprocess.Popen, seconds: float) -> T:
    """Poll ``condition`` until it returns something; fail if ``proc`` ends or time runs out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = condition()
        if found is not None:
            return found
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the search ended early ({proc.returncode}):\n{out}\n{err}")
        time.sleep(0.3)
    proc.kill()
    out, err = proc.communicate()
    pytest.fail(f"waited {seconds} s in vain:\n{out}\n{err}")


def assert_retried_once(trials: list[FrozenTrial], killed_number: int, target: int) -> None:
    """The trial whose worker was killed failed, ran again once from scratch with its
    parameters and seed, and the study still ends at ``target`` with nothing left running."""
    killed = trials[killed_number]
    assert killed.state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1 and retries[0].state in FINISHED
    assert retries[0].params == killed.params
    assert retries[0].user_attrs["seed"] == killed.user_attrs["seed"]  # the same run again
    assert len(retries[0].intermediate_values) == EPOCHS  # retried from scratch, to the end
    assert sum(t.state in FINISHED for t in trials) == target
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]


@pytest.mark.faults
def test_a_worker_killed_mid_trial_is_failed_after_the_grace_period_and_retried(
    tmp_path, idx_dir, store
):
    url, name = store
    # Trials long enough that the kill lands mid-trial; heartbeat 2 s: grace 6 s.
    command = _command(url, name, idx_dir, "--workers", "2", "--heartbeat", "2",
                       "--n-trials", "4", "--epochs", str(EPOCHS), "--pruner", "none",
                       "--sampler", "random")
    proc = _start(command, tmp_path)

    def a_trial_in_progress() -> FrozenTrial | None:
        running = [t for t in _trials(url, name) if t.state == TrialState.RUNNING
                   and 3 <= len(t.intermediate_values) < EPOCHS - MARGIN
                   and "worker" in t.user_attrs]
        return running[0] if running else None

    victim = _wait_for(a_trial_in_progress, proc, 240)
    os.kill(int(victim.user_attrs["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, out + err
    assert "was killed by SIGKILL" in err and "Traceback" not in err

    trials = _trials(url, name)
    assert_retried_once(trials, victim.number, 4)
    assert [t.number for t in trials if t.state == TrialState.FAIL] == [victim.number]
    assert sum(t.user_attrs.get("baseline") == "tutorial" and t.state in FINISHED
               for t in trials) == 1


@pytest.mark.faults
def test_ctrl_c_stops_every_worker_and_the_same_command_completes_the_study(
    tmp_path, idx_dir, store
):
    url, name = store
    # TARGET trials: pairs enough that one is caught busy however fast the machine trains (an
    # Intel Xeon with AMX ran 4 trials of 100 epochs in 7 s, and the poll missed every pair).
    # Heartbeat 5 s (grace 15 s): a worker starved of the CPU by a loaded machine is not failed
    # as stale before the signal; one waiting for the other's last trial still looks every 1 s.
    command = _command(url, name, idx_dir, "--workers", "2", "--heartbeat", "5",
                       "--n-trials", str(TARGET), "--epochs", str(EPOCHS), "--pruner", "none",
                       "--sampler", "random")
    proc = _start(command, tmp_path)

    def both_workers_busy_after_a_finished_trial() -> bool | None:
        # Busy: both running trials are MARGIN or more epochs from their end, so neither
        # worker is between trials (or out of trials to start) when Ctrl-C reaches it. If the
        # other trial is that close to its end when the first one finishes, the next pair
        # qualifies unless the new trial ran EPOCHS - MARGIN epochs meanwhile: 3x faster epochs
        # than the first pair's (batch 32 and 32 with seed 0's random draws; batch 256 is
        # ~2x). 40 epochs (2-6 s a trial) let a loaded machine miss every pair; 100 do not.
        trials = _trials(url, name)
        done = sum(t.state in FINISHED for t in trials)
        running = [t for t in trials if t.state == TrialState.RUNNING]
        busy = len(running) == 2 and all(
            len(t.intermediate_values) < EPOCHS - MARGIN for t in running)
        return True if done >= 1 and busy else None

    _wait_for(both_workers_busy_after_a_finished_trial, proc, 300)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    stopped_after = time.monotonic() - sent
    assert proc.returncode == 130, out + err
    assert stopped_after < 30, f"took {stopped_after:.1f} s to stop"
    assert "Run the same command again" in err
    assert "Traceback" not in err + out and "KeyboardInterrupt" not in err + out
    trials = _trials(url, name)
    done = sum(t.state in FINISHED for t in trials)
    assert 1 <= done < TARGET and f"{done} of {TARGET} trials are finished" in err
    states = [(t.number, t.state.name, len(t.intermediate_values), t.user_attrs.get("worker"))
              for t in trials]
    assert [t.state for t in trials].count(TrialState.RUNNING) == 0, (
        f"stopped after {stopped_after:.1f} s; trials {states}\n{out}{err}")
    # One per worker that Ctrl-C caught in a trial: both, unless one's trial ended in the moment
    # between the last poll and the signal (MARGIN epochs: under a second on a fast CPU), and
    # a worker between trials has none to fail.
    assert [t.state for t in trials].count(TrialState.FAIL) in (1, 2)
    if url.startswith("sqlite"):
        with sqlite3.connect(tmp_path / "s.db") as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        conn.close()

    rerun = subprocess.run(command, cwd=tmp_path, env=_env(), capture_output=True, text=True,
                           timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    trials = _trials(url, name)
    assert sum(t.state in FINISHED for t in trials) == TARGET
    assert sum(t.user_attrs.get("baseline") == "tutorial" and t.state in FINISHED
               for t in trials) == 1


def _in_private_mount(options: str, folder: Path, command: list[str]) -> list[str]:
    """``command`` run in a user and mount namespace with a tmpfs mounted on ``folder``.

    Tests run as root, for whom chmod never blocks a write; a read-only or tiny mount does.
    """
    script = (f'mount -t tmpfs -o {options} tmpfs "$1" && shift && exec "$@"')
    return ["unshare", "-rm", "sh", "-c", script, "sh", str(folder), *command]


def _private_mounts_work(tmp_path: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    folder = tmp_path / "probe"
    folder.mkdir()
    probe = subprocess.run(_in_private_mount("size=1m", folder, ["true"]), capture_output=True)
    return probe.returncode == 0


@pytest.mark.faults
@pytest.mark.parametrize("options, expected", [
    ("ro", "Read-only file system"),
    ("size=4m", "free on the disk"),
])
def test_a_read_only_or_full_studies_disk_fails_before_any_training(
    tmp_path, idx_dir, options, expected
):
    if not _private_mounts_work(tmp_path):
        pytest.skip("this machine lets no process mount a private tmpfs (unshare -rm)")
    studies = tmp_path / "studies"
    studies.mkdir()
    search = [sys.executable, "-m", "tuning.search", "--storage", f"sqlite:///{studies}/s.db",
              "--data-dir", str(idx_dir), "--val-size", "100", "--n-trials", "1",
              "--epochs", "1"]
    result = subprocess.run(_in_private_mount(options, studies, search), cwd=tmp_path,
                            env=_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert expected in result.stderr and "--storage" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "trial" not in result.stdout and "Data:" not in result.stdout


def test_a_file_where_the_studies_folder_should_be_is_a_clear_error(tmp_path, idx_dir):
    (tmp_path / "studies").write_text("not a folder\n")
    result = run_main("tuning.search", "--data-dir", str(idx_dir), "--val-size", "100",
                      cwd=tmp_path)
    assert result.returncode == 2
    assert "is a file, not a folder" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert (tmp_path / "studies").read_text() == "not a folder\n"
