"""The signals a scheduler sends, for real: SIGTERM, SIGHUP, and SIGKILL to a supervisor.

Each stop must mark the running trial failed (nothing stays RUNNING), exit with 128 + the
signal, leave no worker process behind, and let the same command complete the target exactly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from tests.conftest import ROOT

pytestmark = pytest.mark.faults
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
STOP_WITHIN_S = 15  # the issue aims at 5 s; a loaded 2-core CI machine gets some slack
# Epochs per trial. A signal is sent only while the trials are in their first half, so none
# ends between the poll and the signal (a fast CPU trains 60 epochs of the tiny data in 2 s).
EPOCHS = 100


def _command(url: str, idx_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "tuning.search", "--storage", url, "--data-dir", str(idx_dir),
            "--val-size", "100", "--pruner", "none", "--sampler", "random", *args]


def _start(command: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _trials(url: str) -> list[FrozenTrial]:
    try:
        return optuna.load_study(study_name="fashion-mnist", storage=url).trials
    except KeyError:
        return []


def _wait_until_training(url: str, proc: subprocess.Popen, running: int) -> None:
    """Until ``running`` trials are RUNNING, in the first half of their epochs."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        busy = [t for t in _trials(url) if t.state == TrialState.RUNNING
                and 1 <= len(t.intermediate_values) < EPOCHS // 2]
        if len(busy) >= running:
            return
        if proc.poll() is not None:
            pytest.fail(f"the search ended early: {proc.communicate()}")
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"no {running} trial(s) in progress after 180 s: {proc.communicate()}")


def _workers_of(supervisor: int) -> list[int]:
    """The pids of the processes whose parent is ``supervisor`` (its workers)."""
    result = subprocess.run(["ps", "-o", "pid=", "--ppid", str(supervisor)],
                            capture_output=True, text=True)
    return [int(pid) for pid in result.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie has ended, only not been reaped
        return stat.read().split()[2] != "Z"


def _stop(proc: subprocess.Popen, signum: int) -> tuple[str, str, float]:
    sent = time.monotonic()
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    return out, err, time.monotonic() - sent


def _rerun_completes(command: list[str], cwd: Path, url: str, target: int) -> None:
    rerun = subprocess.run(command, cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT)},
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    trials = _trials(url)
    assert sum(t.state in FINISHED for t in trials) == target
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_to_a_lone_search_fails_its_trial_and_a_rerun_completes(
    tmp_path, idx_dir, signum
):
    url = f"sqlite:///{tmp_path / 's.db'}"
    # One trial: the signal fails it, and the rerun must still train one to complete the study.
    command = _command(url, idx_dir, "--n-trials", "1", "--epochs", str(EPOCHS))
    proc = _start(command, tmp_path)
    _wait_until_training(url, proc, 1)
    out, err, seconds = _stop(proc, signum)
    assert proc.returncode == 128 + signum, out + err
    assert seconds < STOP_WITHIN_S, f"took {seconds:.1f} s to stop"
    name = signal.Signals(signum).name
    assert f"Stopped by {name}. 0 of 1 trials are finished" in err
    assert "Run the same command again" in err and "Traceback" not in err
    assert [t.state for t in _trials(url)] == [TrialState.FAIL]
    _rerun_completes(command, tmp_path, url, 1)


def test_sigterm_to_the_supervisor_reaches_every_worker_and_a_rerun_completes(
    tmp_path, idx_dir
):
    url = f"sqlite:///{tmp_path / 's.db'}"
    command = _command(url, idx_dir, "--n-trials", "3", "--epochs", str(EPOCHS), "--workers", "2")
    proc = _start(command, tmp_path)
    _wait_until_training(url, proc, 2)
    workers = _workers_of(proc.pid)
    assert len(workers) == 2
    out, err, seconds = _stop(proc, signal.SIGTERM)
    assert proc.returncode == 143, out + err
    assert seconds < STOP_WITHIN_S, f"took {seconds:.1f} s to stop"
    assert "Stopped by SIGTERM" in err and "Traceback" not in err + out
    assert not [pid for pid in workers if _alive(pid)], "a worker outlived its supervisor"
    states = [t.state for t in _trials(url)]
    assert states.count(TrialState.RUNNING) == 0 and states.count(TrialState.FAIL) == 2
    _rerun_completes(command, tmp_path, url, 3)


def test_workers_stop_by_themselves_when_their_supervisor_is_killed(tmp_path, idx_dir):
    url = f"sqlite:///{tmp_path / 's.db'}"
    command = _command(url, idx_dir, "--n-trials", "3", "--epochs", str(EPOCHS), "--workers", "2",
                       "--heartbeat", "2")
    proc = _start(command, tmp_path)
    _wait_until_training(url, proc, 2)
    workers = _workers_of(proc.pid)
    assert len(workers) == 2
    proc.kill()  # SIGKILL: the supervisor can pass nothing on
    # The workers share its pipes: what they print on their way out is in these.
    out, err = proc.communicate(timeout=30)
    deadline = time.monotonic() + STOP_WITHIN_S
    while [pid for pid in workers if _alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in workers if _alive(pid)], "orphaned workers kept training"
    time.sleep(3 * 2 + 1)  # the heartbeat grace: 3 heartbeats of 2 s
    states = [t.state for t in _trials(url)]
    assert states.count(TrialState.RUNNING) == 0, f"{states}\n{out}{err}"
    _rerun_completes(command, tmp_path, url, 3)


def test_after_a_stop_the_storages_pool_and_finalisers_print_no_traceback(monkeypatch, caplog):
    """A stop landing in SQLAlchemy's pool as it returns a connection made the pool log its
    traceback (seen in CI once, under load); after a stop those reports are dropped."""
    import logging
    import types

    from tuning.cli.common import quiet_optuna
    from tuning.workers.signals import STOP_SIGNALS, Stopped

    pool = logging.getLogger("sqlalchemy.pool")
    monkeypatch.setattr(pool, "disabled", False)
    reported: list[BaseException] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: reported.append(u.exc_value))
    saved = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}

    def unraisable(exc: BaseException) -> types.SimpleNamespace:
        return types.SimpleNamespace(exc_type=type(exc), exc_value=exc, exc_traceback=None,
                                     err_msg="Exception ignored in", object=None)

    try:
        quiet_optuna()
        pool.error("before a stop")
        assert [r.message for r in caplog.records] == ["before a stop"]  # reported until a stop
        with pytest.raises(Stopped):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        try:
            raise Stopped(signal.SIGINT)
        except Stopped:
            pool.error("Exception during reset or similar", exc_info=True)
        assert [r.message for r in caplog.records] == ["before a stop"]
        real = ValueError("a real one")
        with pytest.raises(Stopped):  # not reported, but delivered again (next test)
            sys.unraisablehook(unraisable(Stopped(signal.SIGINT)))  # type: ignore[arg-type]
            time.sleep(1)
        sys.unraisablehook(unraisable(real))  # type: ignore[arg-type]
        assert reported == [real]  # the stop's dropped, anything else reported as before
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def test_a_stop_that_lands_in_a_finaliser_is_not_lost():
    """Python cannot raise out of a finaliser: it reports the exception as unraisable and goes
    on. A stop landing there (seen as a lone search that trained its trial to the end after
    SIGTERM, and a worker that ignored Ctrl-C until its supervisor killed it, its trial left
    RUNNING) is delivered again, and raised where the program is."""
    from tuning.cli.common import quiet_optuna
    from tuning.workers.signals import STOP_SIGNALS, Stopped

    saved = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    saved_hook = sys.unraisablehook

    class Finalised:
        def __del__(self) -> None:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.5)  # the handler runs in here and raises Stopped inside __del__

    try:
        quiet_optuna()
        with pytest.raises(Stopped) as stopped:
            Finalised()  # dropped at once: its __del__ runs now
            time.sleep(5)
        assert stopped.value.signum == signal.SIGTERM
    finally:
        sys.unraisablehook = saved_hook
        for signum, handler in saved.items():
            signal.signal(signum, handler)
