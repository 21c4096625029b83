"""Study storage at scale: many lightweight clients doing the trial protocol, no training.

``python -m benchmarks.storage --clients 1 8 32 128`` runs, for each storage and each number of
clients, that many processes at once for ``--seconds``; each runs trials back to back exactly as
a search's trial writes to the study (``ask``; per epoch the four history attributes, ``report``
and ``should_prune``; ``tell``) with no training in between, and records each call's latency.
Printed per run: finished trials per second (all clients together), the median and 95th
percentile of ``ask``, one epoch's writes and ``tell``, and the clients that failed (e.g.
refused connections) with the first error. The storages:

- ``sqlite``: one SQLite file in write-ahead-log mode, as the search opens it;
- ``postgresql``: a PostgreSQL database (``--postgres``), each client with its own connection;
- ``proxy``: Optuna's gRPC storage proxy (``python -m tuning.proxy``) in front of that same
  database, the clients talking gRPC to it.

Clients are forked from this process, which imports everything first and holds no connection
(nor any gRPC channel) when it forks.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from tuning.study.protocol import HISTORY_KEYS
from tuning.study.storage import Location, open_storage, release_connections

STORAGES = ("sqlite", "postgresql", "proxy")
POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
EPOCHS = 3  # epochs of writes per trial: a pruned trial has 1, a kept one 10
START_S = 3.0  # time the clients get to connect before they start together (plus per client)
JOIN_EXTRA_S = 90.0  # a client still inside a call when time is up gets this long to finish
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Result:
    """What one client (or all clients of a run, merged) did."""

    trials: int = 0
    ask: list[float] = field(default_factory=list)  # seconds per call
    epoch: list[float] = field(default_factory=list)
    tell: list[float] = field(default_factory=list)
    failed: int = 0  # clients that stopped on an error
    error: str = ""  # the first error

    def merge(self, other: Result) -> None:
        self.trials += other.trials
        self.ask += other.ask
        self.epoch += other.epoch
        self.tell += other.tell
        self.failed += other.failed
        self.error = self.error or other.error


def _client(url: str, name: str, start_at: float, stop_at: float, out: object) -> None:
    result = Result()
    try:
        storage = open_storage(Location.parse(url), write_ahead_log=url.startswith("sqlite"))
        study = optuna.load_study(study_name=name, storage=storage)
        time.sleep(max(0.0, start_at - time.time()))
        while time.time() < stop_at:
            t0 = time.perf_counter()
            trial = study.ask()
            result.ask.append(time.perf_counter() - t0)
            history: dict[str, list[float]] = {key: [] for key in HISTORY_KEYS}
            for epoch in range(1, EPOCHS + 1):
                t0 = time.perf_counter()
                for key in HISTORY_KEYS:
                    history[key].append(0.5)
                    trial.set_user_attr(key, history[key])
                trial.report(0.5, epoch)
                trial.should_prune()
                result.epoch.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            study.tell(trial, 0.5)
            result.tell.append(time.perf_counter() - t0)
            result.trials += 1
    except Exception as exc:  # a refused connection, a lock timeout: counted, not raised
        result.failed, result.error = 1, f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    out.put(result)  # type: ignore[attr-defined]


def run(url: str, clients: int, seconds: float) -> Result:
    """``clients`` processes on a new study at ``url`` for ``seconds``; their merged result."""
    name = f"bench-clients-{uuid.uuid4().hex[:8]}"
    direct = url if not url.startswith("grpc://") else POSTGRES_FOR_PROXY[url]
    storage = open_storage(Location.parse(direct))
    optuna.create_study(study_name=name, storage=storage, direction="maximize")
    release_connections(storage)  # no connection crosses the fork
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    start_at = time.time() + START_S + 0.05 * clients
    stop_at = start_at + seconds
    procs = [context.Process(target=_client, args=(url, name, start_at, stop_at, queue))
             for _ in range(clients)]
    for proc in procs:
        proc.start()
    merged = Result()
    deadline = stop_at + JOIN_EXTRA_S
    for _ in procs:
        merged.merge(queue.get(timeout=max(1.0, deadline - time.time())))
    for proc in procs:
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
    return merged


POSTGRES_FOR_PROXY: dict[str, str] = {}  # a proxy's grpc:// URL -> the database it serves


def start_proxy(database: str, log: Path) -> tuple[str, subprocess.Popen]:
    """``python -m tuning.proxy`` in front of ``database``; its URL once it listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "tuning.proxy", "--storage", database, "--port", str(port)],
        stdout=log.open("w"), stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None:
                raise SystemExit(f"the proxy did not start; see {log}") from None
            time.sleep(0.2)
    url = f"grpc://127.0.0.1:{port}"
    POSTGRES_FOR_PROXY[url] = database
    return url, process


def _ms(values: list[float], q: float) -> str:
    if not values:
        return "     -"
    ordered = sorted(values)
    return f"{1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]:6.1f}"


def measure(storages: list[str], clients: list[int], seconds: float, postgres: str) -> int:
    """Print the table of every storage at every number of clients."""
    from model.kernels import cpu_name

    print(f"{cpu_name()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
          f"{seconds:g} s per run, {EPOCHS} epochs of writes per trial; optuna "
          f"{optuna.__version__}", flush=True)
    print(f"{'storage':<10} {'clients':>7} {'trials/s':>9} | {'ask p50':>7} {'p95':>6} | "
          f"{'epoch p50':>9} {'p95':>6} | {'tell p50':>8} {'p95':>6} ms | failed", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-clients-") as tmp:
        proxy: subprocess.Popen | None = None
        try:
            for kind in storages:
                for count in clients:
                    if kind == "sqlite":
                        url = f"sqlite:///{Path(tmp) / f'{count}.db'}"
                    elif kind == "postgresql":
                        url = postgres
                    else:
                        if proxy is None:
                            url_proxy, proxy = start_proxy(postgres, Path(tmp) / "proxy.log")
                        url = url_proxy
                    r = run(url, count, seconds)
                    print(f"{kind:<10} {count:>7} {r.trials / seconds:>9.1f} | "
                          f"{_ms(r.ask, .5):>7} {_ms(r.ask, .95)} | {_ms(r.epoch, .5):>9} "
                          f"{_ms(r.epoch, .95)} | {_ms(r.tell, .5):>8} {_ms(r.tell, .95)}    | "
                          f"{r.failed}{' (' + r.error[-100:] + ')' if r.failed else ''}",
                          flush=True)
        finally:
            if proxy is not None:
                proxy.terminate()
                proxy.wait(timeout=30)
    print("trials/s: finished trials of all clients together per second; ask, epoch (4 "
          "attributes, report, should_prune) and tell: latency of one call, median and 95th "
          "percentile over every call of every client.")
    return 0

