"""--cluster ADDRESS: worker loops placed, restarted and stopped by a Dask cluster.

A search (or confirm) connects to a Dask scheduler and submits one task per worker loop; Dask
places the tasks on its workers (one thread, one torch thread each), reschedules a task whose
worker process died (its Nanny starts the process again), and ``run_tasks`` stops them all on
Ctrl-C, SIGTERM or SIGHUP through a Dask ``Event`` that every task checks between epochs. Dask
is an optional extra (``pip install -e '.[cluster]'``); ``connect`` says how to install it.
Why Dask and not Ray: docs/decisions.md#a-cluster-engine-dask.
"""

from __future__ import annotations

import contextlib
import signal
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tuning.study.errors import UsageError
from tuning.workers.signals import STOP_SIGNALS, Stopped

if TYPE_CHECKING:
    from distributed import Client, Event, Future

INSTALL = "pip install -e '.[cluster]'"
CONNECT_TIMEOUT_S = 10  # a scheduler that does not answer in this long is not there
POLL_S = 0.5  # how often the command looks at its tasks (and, through on_poll, the study)
# After a stop, how long tasks get to mark their trial failed and return: each checks the
# stop between epochs, so this bounds one epoch (seconds on a CPU), well inside a scheduler's
# grace period (Kubernetes: 30 s).
STOP_WAIT_S = 20


def require_dask() -> None:
    """Raise UsageError saying how to install Dask where it is missing."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise UsageError(
            "--cluster needs Dask's distributed scheduler, an optional extra: install it with "
            f"{INSTALL} (or pip install 'dask[distributed]'), on this machine and the nodes."
        ) from None


def connect(address: str, timeout: float = CONNECT_TIMEOUT_S) -> Client:
    """A client of the Dask scheduler at ``address`` (``tcp://HOST:8786``).

    Raises:
        UsageError: Dask is missing, or no scheduler answers there; with what to do.
    """
    require_dask()
    from distributed import Client

    try:
        return Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise UsageError(
            f"no Dask scheduler answers at --cluster {address} ({type(exc).__name__}: {exc}). "
            "Start one (scripts/cluster/dask-cluster.sh; docs/scale-out.md) or give its "
            "address as tcp://HOST:PORT."
        ) from None


def worker_threads(client: Client) -> dict[str, int]:
    """Each Dask worker's address and task threads (its ``--nthreads``)."""
    workers = client.scheduler_info(n_workers=-1)["workers"]
    return {address: int(info["nthreads"]) for address, info in workers.items()}


def wait_for_workers(client: Client, address: str, seconds: float) -> dict[str, int]:
    """``worker_threads`` once at least one worker is there.

    Raises:
        UsageError: none joined the scheduler in ``seconds``.
    """
    deadline = time.monotonic() + seconds
    while not (found := worker_threads(client)):
        if time.monotonic() >= deadline:
            raise UsageError(
                f"the Dask scheduler at {address} has no workers; start some "
                "with `dask worker ADDRESS --nthreads 1 --nworkers N` on each node "
                "(scripts/cluster/dask-cluster.sh worker ADDRESS)."
            )
        time.sleep(POLL_S)
    return found


def stop_requested(event: Event) -> bool:
    """In a task: whether the command asked its tasks to stop, or dropped them.

    Dropped: the command's client went away (killed, say), so the scheduler released the task;
    a running task cannot be interrupted by Dask, so it asks here. Errors of the asking count
    as no stop: a scheduler that cannot answer cannot place new work either.
    """
    try:
        if event.is_set():
            return True
        from distributed import get_worker

        worker = get_worker()
        state = worker.state.tasks.get(worker.get_current_task())
        return state is not None and state.state == "cancelled"
    except Exception:
        return False


@dataclass
class TaskEnd:
    """How one task ended: its return value, or why it has none."""

    index: int  # 1-based, as the search's [wk]
    value: Any = None
    error: str | None = None  # an exception, or the engine's giving up on it (a lost worker)


@dataclass
class Outcome:
    """What became of a command's tasks."""

    ends: list[TaskEnd] = field(default_factory=list)
    interrupted: Stopped | None = None  # the stop signal that reached the command

    @property
    def failed(self) -> list[TaskEnd]:
        return [end for end in self.ends if end.error is not None]


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """A second Ctrl-C waits too, while the tasks mark their trials failed."""
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_tasks(
    client: Client,
    task: Callable[..., Any],
    args: Sequence[tuple[Any, ...]],
    *,
    name: str,
    on_poll: Callable[[], None] | None = None,
    on_end: Callable[[TaskEnd], None] | None = None,
    spread: dict[str, int] | None = None,
) -> Outcome:
    """Run ``task(*args[k], event)`` for every k on the cluster and wait for all of them.

    ``event`` is the run's stop ``Event``: a task passes it to ``stop_requested`` between
    epochs. Dask reschedules a task whose worker died, up to its ``allowed-failures``, and
    gives up after that (the task's ``error`` says so). ``on_poll`` runs every ``POLL_S`` (the
    caller prints progress from the study), ``on_end`` as soon as a task ends. ``spread``
    (each worker's threads, ``worker_threads``) places task k on the k-th thread of the
    cluster, one task per thread, instead of leaving it to Dask's queue; a task whose worker
    is lost may still go to any other. On Ctrl-C,
    SIGTERM or SIGHUP the event is set and the tasks get ``STOP_WAIT_S`` to return; the rest
    are cancelled.
    """
    from distributed import Event

    event = Event(f"fashion-tune-stop-{name}-{uuid.uuid4().hex[:8]}", client=client)
    slots = [address for address, n in sorted((spread or {}).items()) for _ in range(n)]
    futures: dict[int, Future] = {
        k: client.submit(task, *task_args, event, key=f"fashion-tune-{name}-w{k}-"
                         f"{uuid.uuid4().hex[:8]}", pure=False, retries=0,
                         **({"workers": [slots[(k - 1) % len(slots)]],
                             "allow_other_workers": True} if slots else {}))
        for k, task_args in enumerate(args, start=1)
    }
    outcome = Outcome()
    pending = dict(futures)
    try:
        while pending:
            _collect(pending, outcome, on_end)
            if on_poll is not None:
                on_poll()
            if pending:
                time.sleep(POLL_S)
    except KeyboardInterrupt as exc:
        outcome.interrupted = exc if isinstance(exc, Stopped) else Stopped(signal.SIGINT)
        with _signals_held():
            event.set()
            deadline = time.monotonic() + STOP_WAIT_S
            while pending and time.monotonic() < deadline:
                _collect(pending, outcome, None)
                time.sleep(POLL_S / 5)
            if pending:
                client.cancel(list(pending.values()))
                for k in pending:
                    outcome.ends.append(TaskEnd(k, error=f"still running after {STOP_WAIT_S} "
                                                "s; cancelled"))
    finally:
        with contextlib.suppress(Exception):
            event.clear()  # the scheduler forgets an event nobody holds
    outcome.ends.sort(key=lambda end: end.index)
    return outcome


def _collect(pending: dict[int, Future], outcome: Outcome,
             on_end: Callable[[TaskEnd], None] | None) -> None:
    for k, future in list(pending.items()):
        if not future.done():
            continue
        del pending[k]
        if future.status == "finished":
            end = TaskEnd(k, value=future.result())
        else:  # "error" (its exception, or KilledWorker) or "cancelled"
            try:
                error = future.exception()
                why = f"{type(error).__name__}: {error}"
            except Exception as exc:  # cancelled: no exception to fetch
                why = f"{type(exc).__name__}: {exc}"
            end = TaskEnd(k, error=why)
        outcome.ends.append(end)
        if on_end is not None:
            on_end(end)
