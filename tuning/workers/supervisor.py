"""The --workers supervisor: N worker processes on one study, their output, their end.

``supervise`` starts the worker processes of one machine, prefixes their lines with
``[w1]``, ``[w2]``, ... and passes Ctrl-C, SIGTERM and SIGHUP on to them. A worker is either a
fork of the supervisor (``Forked``: it starts at once with the data the supervisor loaded and
the modules it imported) or a fresh interpreter running a command (``subprocess.Popen``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Protocol

from tuning.workers.signals import STOP_SIGNALS, SUPERVISOR_ENV, Stopped, exit_status

WORKER_FLAG = "--worker"  # hidden flag: "you are worker k", added to each worker's command line
POLL_S = 0.2  # how often the supervisor looks at its workers
# After a stop signal, how long workers get to mark their trial failed and exit before they are
# killed: well inside the grace period a scheduler gives (Kubernetes: 30 s); they need about 1 s.
INTERRUPT_WAIT_S = 20


def without_flag(argv: Sequence[str], flag: str) -> list[str]:
    """``argv`` without ``flag`` and its value (``--flag V``, ``--flag=V`` or a prefix of it
    that argparse would take, e.g. ``--stor V``), for a worker that receives it otherwise."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        name = arg.split("=", 1)[0]
        if skip:
            skip = False
        elif len(name) > 4 and flag.startswith(name):
            skip = "=" not in arg  # the value follows as the next word
        else:
            kept.append(arg)
    return kept


class Process(Protocol):
    """What the supervisor needs of a worker process: ``subprocess.Popen`` has it all."""

    pid: int
    returncode: int | None
    stdout: IO[str] | None
    stderr: IO[str] | None

    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def send_signal(self, sig: int) -> None: ...
    def kill(self) -> None: ...


class Forked:
    """A worker forked from this process, running ``work()`` and exiting with what it returns.

    It shares the memory of everything this process loaded before the fork (copy on write), so
    it skips the start-up a fresh interpreter pays: importing torch, reading the data. The
    caller makes the fork safe: no database connection open in this process (each worker opens
    its own) and no thread pool of torch's started with more than one thread (GNU OpenMP cannot
    run a pool in the child of a process that had one). The child writes to pipes read here,
    as a subprocess's would be, in a session of its own, and leaves with ``os._exit``: nothing
    of this process's (its atexit handlers, its connections' finalisers) runs twice.
    """

    def __init__(self, work: Callable[[], int], env: Mapping[str, str]) -> None:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # or the child writes this process's buffered lines again
        pid = os.fork()
        if pid == 0:  # the worker: never returns
            os.close(out_r)
            os.close(err_r)
            _child(work, env, out_w, err_w)
        os.close(out_w)
        os.close(err_w)
        self.pid = pid
        self.returncode: int | None = None
        self.stdout: IO[str] | None = open(out_r, encoding="utf-8", errors="replace")  # noqa: SIM115
        self.stderr: IO[str] | None = open(err_r, encoding="utf-8", errors="replace")  # noqa: SIM115

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)  # -N: killed by signal N
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"worker pid {self.pid}", timeout or 0.0)
            time.sleep(0.02)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            # It may have ended a moment ago: the next poll collects it.
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _child(work: Callable[[], int], env: Mapping[str, str], out: int, err: int) -> None:
    """Run a forked worker's ``work`` with its output on the pipes ``out``/``err``; exit."""
    status = 1
    try:
        os.setsid()  # a Ctrl-C at the terminal reaches the supervisor only, which passes it on
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.close(out)
        os.close(err)
        # New streams on the pipes: the inherited ones may be a test's capture, or locked by a
        # thread of the supervisor that does not exist here.
        old = (sys.stdout, sys.stderr)
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)
        _redirect_log_handlers(old, (sys.stdout, sys.stderr))
        os.environ.update(env)
        status = work()
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    except KeyboardInterrupt as exc:  # a stop before the worker could catch it: no traceback
        status = exit_status(exc)
    except BaseException:  # whatever it was, the worker says so and exits
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(status)


def _redirect_log_handlers(old: tuple[IO[str], IO[str]], new: tuple[IO[str], IO[str]]) -> None:
    """Point logging handlers (Optuna's among them) that wrote to ``old`` streams at ``new``."""
    loggers = [logging.getLogger(), *(logger for logger in logging.Logger.manager.loggerDict
                                      .values() if isinstance(logger, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler):
                for before, after in zip(old, new, strict=True):
                    if handler.stream is before:
                        handler.setStream(after)


@dataclass(frozen=True)
class WorkerExit:
    """How one worker process ended."""

    index: int  # 1-based, as in the [w1] prefix
    pid: int
    status: int  # its exit status; negative: killed by that signal, as subprocess reports it

    def describe(self) -> str:
        """E.g. 'worker w2 (pid 4711) was killed by SIGKILL'."""
        who = f"worker w{self.index} (pid {self.pid})"
        if self.status < 0:
            return f"{who} was killed by {signal.Signals(-self.status).name}"
        return f"{who} exited with status {self.status}"


@dataclass
class Supervision:
    """What became of the workers of one run."""

    exits: list[WorkerExit] = field(default_factory=list)
    interrupted: Stopped | None = None  # the stop signal that reached the supervisor, passed on

    @property
    def failed(self) -> list[WorkerExit]:
        """Workers that ended for another reason than finishing or being interrupted."""
        ok = (0, exit_status(self.interrupted)) if self.interrupted else (0,)
        return [e for e in self.exits if e.status not in ok]


def _relay(stream: IO[str], prefix: str, out: IO[str], lock: threading.Lock) -> None:
    for line in stream:
        with lock:
            out.write(f"{prefix}{line}")
            out.flush()


def supervise(
    start: Sequence[str] | Callable[[int, Mapping[str, str]], Process],
    workers: int,
    *,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
    on_exit: Callable[[WorkerExit], None] | None = None,
    env: Mapping[str, str] | None = None,
) -> Supervision:
    """Start ``workers`` workers and wait for all of them.

    ``start`` is a command, run plus ``--worker k`` for worker k, or a function that starts
    worker k with an environment (e.g. as a ``Forked`` process). Every worker is started
    before any of their output is read: a fork then copies no thread of this process's but
    its own.

    Each worker's stdout and stderr lines are written to ``out`` and ``err`` (default: this
    process's) prefixed ``[wk] ``. The workers run in their own process group, so a Ctrl-C
    at the terminal reaches only this process, which passes it on to each worker once and
    gives them ``INTERRUPT_WAIT_S`` seconds to mark their trial failed and exit (then kills
    them); SIGTERM and SIGHUP likewise. Each worker learns this process's pid (in
    ``SUPERVISOR_ENV``) and stops by itself should this process die, even by SIGKILL.
    ``on_exit`` is called as soon as a worker ends with a status other than 0. ``env`` is
    added to the workers' environment: what must not show in their argument lists, which any
    user of the machine can read (``ps``), such as a storage URL with its password.

    Returns:
        How each worker ended, and whether the run was interrupted.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1",
           SUPERVISOR_ENV: str(os.getpid())}
    lock = threading.Lock()
    procs: list[Process] = []
    relays: list[threading.Thread] = []
    result = Supervision()

    def popen(k: int, env: Mapping[str, str]) -> Process:
        assert not callable(start)
        return subprocess.Popen(
            [*start, WORKER_FLAG, str(k)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=env, start_new_session=True,
        )

    starter = start if callable(start) else popen
    try:
        for k in range(1, workers + 1):
            procs.append(starter(k, env))
        for k, proc in enumerate(procs, start=1):
            for stream, sink in ((proc.stdout, out), (proc.stderr, err)):
                relay = threading.Thread(target=_relay, args=(stream, f"[w{k}] ", sink, lock),
                                         daemon=True)
                relay.start()
                relays.append(relay)
        pending = dict(enumerate(procs, start=1))
        while pending:
            for k, proc in list(pending.items()):
                if (status := proc.poll()) is not None:
                    del pending[k]
                    result.exits.append(WorkerExit(k, proc.pid, status))
                    if status != 0 and on_exit is not None:
                        on_exit(result.exits[-1])
            time.sleep(POLL_S)
    except KeyboardInterrupt as exc:
        stop = exc if isinstance(exc, Stopped) else Stopped(signal.SIGINT)
        result.interrupted = stop
        # A second signal waits too: the workers are marking their trials failed.
        previous = {s: signal.signal(s, signal.SIG_IGN) for s in STOP_SIGNALS}
        try:
            _interrupt(procs, result, stop.signum)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
    finally:
        for proc in procs:  # only reached with live workers if this process itself failed
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for relay in relays:
            relay.join(timeout=5)
    result.exits.sort(key=lambda e: e.index)
    return result


def _interrupt(procs: list[Process], result: Supervision, signum: int) -> None:
    done = {e.index for e in result.exits}
    live = [(k, p) for k, p in enumerate(procs, start=1) if k not in done]
    for _, proc in live:
        if proc.poll() is None:
            proc.send_signal(signum)
    deadline = time.monotonic() + INTERRUPT_WAIT_S
    for k, proc in live:
        try:
            status = proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            status = proc.wait()
        result.exits.append(WorkerExit(k, proc.pid, status))
