"""Stop signals: Ctrl-C, a scheduler's SIGTERM and a closed terminal's SIGHUP, handled alike.

Schedulers (Slurm, Kubernetes, systemd, CI runners) stop a job with SIGTERM, wait a grace
period, then SIGKILL; a terminal that closes sends SIGHUP. Each of them raises ``Stopped``
where it lands, a ``KeyboardInterrupt``, so Optuna marks the running trial failed exactly as
for Ctrl-C, and each tool exits with 128 + the signal's number, as a shell reports it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType

# The signals that stop a tool cleanly; SIGHUP does not exist on Windows.
STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)
SUPERVISOR_ENV = "FASHION_TUNE_SUPERVISOR"  # a --workers worker's supervisor's pid
# A lost stop comes back this much later: the finaliser it landed in has returned by then (they
# take microseconds), and a user does not notice the wait.
REDELIVER_S = 0.05
_PR_SET_PDEATHSIG = 1  # Linux prctl option: a signal sent to this process when its parent dies


class Stopped(KeyboardInterrupt):
    """A stop signal arrived; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_status(exc: BaseException) -> int:
    """The shell's exit status for a process stopped by ``exc``: 128 + the signal."""
    return 128 + int(getattr(exc, "signum", signal.SIGINT))


def stop_reason(exc: BaseException) -> str:
    """How a stop is described to the user: 'Interrupted' or 'Stopped by SIGTERM'."""
    signum = int(getattr(exc, "signum", signal.SIGINT))
    return "Interrupted" if signum == signal.SIGINT else f"Stopped by {signal.Signals(signum).name}"


def raise_on_stop_signals(before: Callable[[], None] | None = None) -> None:
    """From now on every stop signal raises ``Stopped`` where it lands (main thread only).

    ``before`` runs first, e.g. to hush a library's logging of the interruption.
    """
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread

    def on_stop(signum: int, frame: FrameType | None) -> None:
        if before is not None:
            before()
        raise Stopped(signum)

    for signum in STOP_SIGNALS:
        signal.signal(signum, on_stop)



def redeliver(signum: int) -> None:
    """Send ``signum`` to this process again, from another thread, ``REDELIVER_S`` from now.

    For a stop that landed where Python cannot let an exception out (a finaliser, a weakref
    callback: it reports the exception as unraisable and goes on). By the time the signal comes
    back, the caller (the unraisable hook, the finaliser) has long returned, so its handler
    raises where the program is, and the stop is not lost.
    """
    timer = threading.Timer(REDELIVER_S, os.kill, args=(os.getpid(), signum))
    timer.daemon = True
    timer.start()

@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold stop signals back for the block (a set of files written together); then deliver.

    Where the platform cannot block signals, the block runs unprotected.
    """
    block = getattr(signal, "pthread_sigmask", None)
    if block is None:
        yield
        return
    previous = block(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        block(signal.SIG_SETMASK, previous)


def die_with_parent(parent: int) -> None:
    """Have this process receive SIGTERM when ``parent`` (its supervisor) dies, however.

    On Linux the kernel sends it (a parent-death signal, set here); it is handled like any stop
    signal. If the parent is gone already, the SIGTERM is sent at once. Elsewhere, callers
    check ``parent_gone`` between epochs.
    """
    libc_name = ctypes.util.find_library("c") if sys.platform.startswith("linux") else None
    if libc_name is not None:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent:  # it died before the signal was set
        os.kill(os.getpid(), signal.SIGTERM)


def parent_gone(parent: int) -> bool:
    """Whether ``parent`` is no longer this process's parent (it died; we were adopted)."""
    return os.getppid() != parent


def supervisor_pid() -> int | None:
    """The pid of the --workers supervisor that started this process, if one did."""
    value = os.environ.get(SUPERVISOR_ENV)
    return int(value) if value and value.isdigit() else None
