"""Trials toward a study-wide target, however many processes work on the study.

Every process that runs trials (a lone ``python -m tuning.search``, each worker of
``--workers N``, the same command on other machines) runs them through ``run_trials``: before
each trial it counts the study's finished and running trials and starts one only while they
fall short of ``--n-trials``, so any number of processes stop together at the target.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuning.study.lifecycle import FINISHED
from tuning.study.protocol import WORKER_ATTR
from tuning.study.stale import TAKEN, close_left_running, fail_stale_trials
from tuning.workers.signals import STOP_SIGNALS, Stopped

POLL_S = 0.2  # how often a process waiting for others' last trials checks for a stop signal
RECOUNT_S = 1.0  # how often it counts the study's trials again

Callback = Callable[[optuna.Study, FrozenTrial], None]


class _StartGate:
    """A lock shared by every process of this machine that works on one study.

    Held from counting the study's trials until the next trial exists as RUNNING, so two
    workers never both take the last missing trial. A file lock in the temporary folder:
    it needs no server, and the operating system frees it when its holder dies.
    """

    def __init__(self, key: str) -> None:
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        self.path = Path(tempfile.gettempdir()) / f"fashion-tune-{digest}.lock"
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        self._handle = self.path.open("a")
        fcntl.flock(self._handle, fcntl.LOCK_EX)

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the file drops the lock
            self._handle = None


class _DeferredInterrupt:
    """Lets a stop signal end a trial's training at once, and anything else at a safe point.

    Ctrl-C, SIGTERM and SIGHUP alike (``signals.STOP_SIGNALS``). Inside the objective Optuna
    catches the KeyboardInterrupt and marks the trial failed. Landing in Optuna's own storage
    calls (asking for a trial, telling its result) it would leave a trial RUNNING for good, so
    there it only records the signal in ``pending``, and ``check`` raises once no trial is open.
    """

    def __init__(self) -> None:
        self.pending: int | None = None
        self.in_objective = False
        self.trial_id: int | None = None  # this process's latest trial, to close after a stop
        self.stop: KeyboardInterrupt | None = None  # the stop that ended that trial, if one did
        self.taken = False  # that trial was finished by another process while it ran here
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _DeferredInterrupt:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)

    def _raise(self, signum: int) -> None:
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, None)  # e.g. quiet_optuna's: hush, then raise Stopped
        raise Stopped(signum)

    def _on_signal(self, signum: int, frame: object) -> None:
        if self.in_objective:
            self._raise(signum)
        self.pending = signum

    def check(self) -> None:
        """Raise ``Stopped`` if a stop signal came while it could not be raised."""
        if self.pending is not None:
            signum, self.pending = self.pending, None
            self._raise(signum)


def run_trials(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    target: int,
    *,
    storage_url: str,
    heartbeat: int | None,
    timeout: float | None = None,
    callbacks: Sequence[Callback] = (),
    before_trial: Callable[[], object] | None = None,
) -> None:
    """Run trials one at a time until ``study`` holds ``target`` finished trials.

    A trial starts only while finished plus running trials fall short of ``target``. When the
    last missing trials run in other processes, this one waits for them if the storage keeps
    heartbeats (``heartbeat`` seconds apart): should their worker die, the trial is failed
    after the grace period and queued again, and this process runs it. Without heartbeats
    (journal files) it returns instead.

    Args:
        study: the study, opened on a storage every worker shares.
        objective: trains one trial and returns its value.
        target: finished (complete or pruned) trials the study should hold in total.
        storage_url: where the study lives; with the study name it names the lock that the
            processes of this machine take turns on to start trials.
        heartbeat: the storage's heartbeat interval in seconds, or None if it has none.
        timeout: seconds after which no new trial starts; None: no limit.
        callbacks: called with each trial this process finished, as in ``study.optimize``.
        before_trial: called just before each trial this process starts, while it holds the
            machine's start gate (so no other process of this machine starts one meanwhile).

    Raises:
        KeyboardInterrupt: Ctrl-C; the running trial is marked failed first (by Optuna).
        Exception: a trial failed with an error; it is marked failed first. Not raised for a
            trial that another process failed as stale meanwhile: this one leaves it.
    """
    gate = _StartGate(f"{storage_url}|{study.study_name}")
    worker = f"{socket.gethostname()}:{os.getpid()}"
    interrupt = _DeferredInterrupt()

    def gated(trial: optuna.Trial) -> float:
        gate.release()  # the trial is RUNNING now: others may count it
        interrupt.trial_id = trial._trial_id
        interrupt.in_objective = True
        try:
            interrupt.check()
            trial.set_user_attr(WORKER_ATTR, worker)
            value = objective(trial)
            if trial.storage.get_trial(trial._trial_id).state.is_finished():
                interrupt.taken = True  # failed elsewhere after its last write (see below)
                raise optuna.TrialPruned(TAKEN)
            return value
        except KeyboardInterrupt as exc:
            interrupt.stop = exc
            raise
        except optuna.exceptions.UpdateFinishedTrialError:
            # Failed as stale elsewhere (silent past the grace, as while a database restarts)
            # and queued again. Pruned ends log no traceback; their tell fails; the loop goes on.
            interrupt.taken = True
            raise optuna.TrialPruned(TAKEN) from None
        finally:
            interrupt.in_objective = False

    with interrupt:
        _loop(study, gated, target, gate, interrupt, heartbeat, timeout, callbacks,
              before_trial)


def _loop(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    target: int,
    gate: _StartGate,
    interrupt: _DeferredInterrupt,
    heartbeat: int | None,
    timeout: float | None,
    callbacks: Sequence[Callback],
    before_trial: Callable[[], object] | None,
) -> None:
    started = time.monotonic()
    try:
        while timeout is None or time.monotonic() - started < timeout:
            interrupt.check()
            gate.acquire()
            if heartbeat is not None:
                fail_stale_trials(study)
            trials = study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
            finished = sum(t.state in FINISHED for t in trials)
            if finished >= target:
                return
            if len(trials) >= target:  # the last missing trials run elsewhere
                gate.release()
                if heartbeat is None:
                    return
                # Look again soon: the others' last trials may end any moment (and a stale
                # one is failed only once its heartbeats stop, found at the next count).
                until = time.monotonic() + min(heartbeat, RECOUNT_S)
                while time.monotonic() < until:
                    interrupt.check()
                    time.sleep(POLL_S)
                continue
            interrupt.stop = None
            interrupt.taken = False
            try:
                if before_trial is not None:
                    before_trial()
                study.optimize(objective, n_trials=1, callbacks=list(callbacks))
            except BaseException as exc:
                if interrupt.trial_id is not None:
                    close_left_running(study, interrupt.trial_id)
                if interrupt.stop is not None and exc is not interrupt.stop:
                    # Optuna's write of the failure failed and it raised about that; the
                    # caller must still hear of the stop (exit 128 + signal, "run again").
                    raise interrupt.stop from None
                if interrupt.taken and isinstance(exc, Exception):
                    continue  # Optuna could not tell a trial that another process had failed
                raise
            finally:
                gate.release()
        interrupt.check()
    finally:
        gate.release()
