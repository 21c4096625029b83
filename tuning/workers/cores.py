"""Which other fashion-tune processes train on this machine's CPU cores right now.

Two processes of 2 torch threads each on 2 cores do not each run at half speed: their OpenMP
threads spin waiting for each other, and runs took 5-10 times as long as alone (a confirmation
run 47.7 s alone and 234.9 s beside a search on a Zen 5 EPYC, 106 s and 568-801 s beside the
test suite on a Zen 4, a search trial 38.6 s and 386 s beside a search; 2 vCPUs each;
docs/scale-out.md). A user who starts a second search, confirm or retrain beside a first one
would get that silently. So every tool that trains on the CPU claims the threads it will use for
as long as it runs, and a tool that finds the cores already claimed says so before it starts.

A claim is a file in a folder of the temporary directory, locked with ``flock``: the operating
system drops the lock however the process ends (even ``kill -9``), so no claim outlives its
process and nothing needs cleaning up. The file says which process holds it and how many
threads it uses. The check only warns: results do not depend on it.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tuning.study.errors import UsageError

# Where the claims live; a test gives each case a folder of its own, as if on its own machine.
DIR_ENV = "FASHION_TUNE_CORES_DIR"
MAX_CLAIMS = 64  # claim files looked at; more processes than this on one machine go uncounted

_held: list[IO[str]] = []  # this process's claims: open, locked, kept until it exits


def cpu_cores() -> int:
    """CPU cores this process may run on (its affinity set where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def check_workers(workers: int, cores: int | None = None) -> None:
    """Refuse more worker processes than this process has cores.

    Each worker is a process that imports torch and loads the data (0.5-1.5 GB of memory); on
    a CPU, more of them than cores only take turns on the same cores (see docs/scale-out.md).

    Raises:
        UsageError: ``workers`` exceeds the cores, with what to use instead.
    """
    cores = cores or cpu_cores()
    if workers > cores:
        raise UsageError(
            f"--workers {workers} is more than the {cores} CPU core(s) this process may use: "
            "each worker is a process that imports torch and loads the data (0.5-1.5 GB), "
            f"and more workers than cores only wait on each other. Use --workers {cores} or "
            "fewer; to add machines, run the same command on each of them."
        )


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """Torch threads for each of ``workers`` processes that train at once: the cores split
    evenly, at least 1. Every tool that trains follows it (one process: every core)."""
    return max(1, (cores or cpu_cores()) // workers)


# Set (to anything but 0): workers start as fresh interpreters, never forked, each importing
# torch and reading the data itself; for a platform where forking misbehaves.
FRESH_ENV = "FASHION_TUNE_FRESH_WORKERS"


def fork_is_safe(threads: int) -> bool:
    """Whether workers of ``threads`` torch threads each may be forked from this process.

    GNU OpenMP (torch's thread pool on Linux) hangs in the child of a process whose pool had
    started threads, unless the child keeps to one thread. A pool's threads are native: this
    process has more threads than Python knows of (/proc/self/task) once one started. No fork
    where there is no fork or no /proc to ask, or where ``$FASHION_TUNE_FRESH_WORKERS`` says so.
    """
    if not hasattr(os, "fork") or os.environ.get(FRESH_ENV, "0") != "0":
        return False
    if threads == 1:
        return True
    try:
        native = len(os.listdir("/proc/self/task"))
    except OSError:
        return False
    return native <= threading.active_count()


AUTO = "auto"  # --workers auto: as many trials side by side as pays on this hardware
# What one more worker costs in memory beyond what forked workers share (the data, torch's
# code): its network, optimizer, batches and allocator, 0.3-0.6 GB measured by
# benchmarks.workers (docs/performance.md). Auto starts no more workers than the memory
# available holds at this much each, with room to spare.
WORKER_MEMORY_BYTES = 1 << 30


def workers_arg(text: str) -> int | str:
    """``--workers``' type: ``auto`` or a whole number (checked later, with the remedy)."""
    if text == AUTO:
        return AUTO
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 'auto' or a whole number of processes, but got {text!r}") from None


@dataclass(frozen=True)
class Layout:
    """How a tool's trials or runs share the machine."""

    workers: int  # processes training at once
    threads: int  # torch threads of each
    reason: str  # why, in a few words for the tool's first lines

    def describe(self) -> str:
        """E.g. '2 workers x 1 torch thread (auto: one per CPU core)'."""
        processes = "1 process" if self.workers == 1 else f"{self.workers} workers"
        plural = "s" if self.threads > 1 else ""
        return f"{processes} x {self.threads} torch thread{plural} ({self.reason})"


def available_memory() -> int | None:
    """Bytes of memory available to new processes (Linux's MemAvailable), None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def resolve_workers(requested: int | str, device_type: str, remaining: int | None = None,
                    *, cores: int | None = None, memory: int | None = None) -> Layout:
    """The processes and threads of ``--workers requested`` on this hardware.

    The rule (docs/decisions.md#trials-side-by-side): on a CPU, ``auto`` runs one worker per
    core with one torch thread each, because two one-thread processes trained 1.5-1.7x the
    images per second of one two-thread process at every batch size of the space; on a GPU
    it runs one process (trials sharing one GPU were not measured). Never more workers than
    ``remaining`` trials, nor than the memory holds at ``WORKER_MEMORY_BYTES`` each. An
    explicit number is checked against the cores (``check_workers``) and split the cores
    evenly. One process uses every core.

    Raises:
        UsageError: a number below 1 or above the cores.
    """
    cores = cores or cpu_cores()
    if requested == AUTO:
        if device_type != "cpu":
            workers, reason = 1, f"auto: one process drives the {device_type} device"
        else:
            memory = memory if memory is not None else available_memory()
            fits = cores if memory is None else max(1, memory // WORKER_MEMORY_BYTES)
            workers = min(cores, fits)
            reason = ("auto: one per CPU core" if workers == cores else
                      f"auto: {workers} of {cores} cores, as many as the free memory holds")
    else:
        workers = int(requested)
        if workers < 1:
            raise UsageError(f"--workers must be at least 1 or auto, but got {workers}.")
        check_workers(workers, cores)
        reason = f"--workers {workers}"
    if remaining is not None and 0 < remaining < workers:
        workers, reason = remaining, f"{reason}; {remaining} trial(s) left to run"
    return Layout(workers, threads_per_worker(workers, cores), reason)


@dataclass(frozen=True)
class Claim:
    """A process that trains on this machine's cores."""

    pid: int
    tool: str  # the tool's command, e.g. "python -m tuning.confirm"
    threads: int  # torch threads it trains with, all of its processes together


def claims_dir() -> Path:
    """The folder of this machine's claims: $FASHION_TUNE_CORES_DIR, else one under /tmp."""
    override = os.environ.get(DIR_ENV)
    return Path(override) if override else Path(tempfile.gettempdir()) / "fashion-tune-cores"


def claim(tool: str, threads: int, folder: Path | None = None) -> list[Claim]:
    """Claim ``threads`` cores for this process until it exits; return the others' claims.

    Never raises for a folder it cannot use (another user's, a read-only disk): the check is
    advice, and the tool runs without it, returning no claims.
    """
    folder = folder or claims_dir()
    others: list[Claim] = []
    mine = False
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for slot in range(MAX_CLAIMS):
            path = folder / f"claim-{slot}.json"
            if mine and not path.exists():
                break  # files are made in order and never removed: nobody is further on
            # Not a with-block: a claim's file stays open, as its lock lives as long as the file.
            handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # held by a live process: read what it holds
                handle.seek(0)
                found = _parse(handle.read())
                handle.close()
                if found is not None and found.pid != os.getpid() and _alive(found.pid):
                    others.append(found)
                continue
            if mine:  # a free slot after this process's own: nobody holds it
                handle.close()
                continue
            handle.seek(0)
            handle.truncate()
            json.dump({"pid": os.getpid(), "tool": tool, "threads": threads}, handle)
            handle.flush()
            _held.append(handle)
            mine = True
    except OSError:
        pass  # advice only: what was seen before the folder failed is still true
    return others


def release_all() -> None:
    """Drop this process's claims (they also go when it exits)."""
    while _held:
        handle = _held.pop()
        handle.truncate(0)  # so nobody who locks the file next reads this process as live
        handle.close()


def crowding(others: list[Claim], threads: int, cores: int) -> str | None:
    """A warning when this process's ``threads`` and the others' exceed ``cores``, else None."""
    taken = sum(c.threads for c in others)
    if not others or taken + threads <= cores:
        return None
    who = ", ".join(f"pid {c.pid} ({c.tool}, {c.threads} thread(s))" for c in others)
    return (
        f"{len(others)} other fashion-tune process(es) already train on this machine's "
        f"{cores} CPU core(s): {who}. With this one's {threads} thread(s) that is "
        f"{taken + threads} threads on {cores} cores, and each process runs several times "
        "slower than alone (5-10x measured on 2 cores; docs/scale-out.md), with the same "
        "results. For speed, run one at a time: stop this one (Ctrl-C) and start it again "
        "when they have finished (a search or confirm keeps what it has recorded, and the "
        "same command carries on from there)."
    )


def _parse(text: str) -> Claim | None:
    try:
        data = json.loads(text)
        return Claim(int(data["pid"]), str(data["tool"]), int(data["threads"]))
    except (ValueError, KeyError, TypeError):
        return None  # being written this instant, or a stale file a prober just locked


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True
