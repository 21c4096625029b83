"""The --workers supervisor: N worker processes on one study, their output, their end.

``supervise`` starts the worker processes of one machine, prefixes their lines with
``[w1]``, ``[w2]``, ... and passes Ctrl-C, SIGTERM and SIGHUP on to them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO

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
    command: Sequence[str],
    workers: int,
    *,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
    on_exit: Callable[[WorkerExit], None] | None = None,
    env: Mapping[str, str] | None = None,
) -> Supervision:
    """Run ``workers`` copies of ``command`` plus ``--worker k`` and wait for all of them.

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
    procs: list[subprocess.Popen] = []
    relays: list[threading.Thread] = []
    result = Supervision()
    try:
        for k in range(1, workers + 1):
            proc = subprocess.Popen(
                [*command, WORKER_FLAG, str(k)], stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True, env=env, start_new_session=True,
            )
            procs.append(proc)
            for stream, sink in ((proc.stdout, out), (proc.stderr, err)):
                relay = threading.Thread(target=_relay, args=(stream, f"[w{k}] ", sink, lock),
                                         daemon=True)
                relay.start()
                relays.append(relay)
        pending = dict(enumerate(procs, start=1))
        while pending:
            for k, proc in list(pending.items()):
                if proc.poll() is not None:
                    del pending[k]
                    result.exits.append(WorkerExit(k, proc.pid, proc.returncode))
                    if proc.returncode != 0 and on_exit is not None:
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


def _interrupt(procs: list[subprocess.Popen], result: Supervision, signum: int) -> None:
    done = {e.index for e in result.exits}
    live = [(k, p) for k, p in enumerate(procs, start=1) if k not in done]
    for _, proc in live:
        if proc.poll() is None:
            proc.send_signal(signum)
    deadline = time.monotonic() + INTERRUPT_WAIT_S
    for k, proc in live:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        result.exits.append(WorkerExit(k, proc.pid, proc.returncode))
