"""What a cluster engine costs a user here: Dask's distributed scheduler against Ray.

``python -m benchmarks.engines`` puts each engine in a fresh virtual environment of its own
(from the package index pip uses), then measures:

- the download: every wheel ``pip download`` fetches for it, dependencies included, and the
  engine's own wheel;
- the installed size: the environment's site-packages, less what an empty one holds;
- the import: ``import distributed`` / ``import ray`` in a new interpreter (median of 3);
- the start: from nothing to the first task's result on a local cluster of 2 worker processes
  (Dask: ``dask scheduler`` and ``dask worker --nworkers 2 --nthreads 1``, then a client;
  Ray: ``ray.init(num_cpus=2)``, which starts the head node), median of 3.

It needs the package index (or pip's cache) and about 1 GB of disk in a temporary folder.
docs/decisions.md#a-cluster-engine-dask quotes it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ENGINES = {"dask": "dask[distributed]", "ray": "ray"}
OWN_WHEEL = {"dask": "distributed-", "ray": "ray-"}
IMPORT = {"dask": "distributed", "ray": "ray"}

# The start, as a script run by the engine's environment; it prints the seconds.
DASK_START = """
import socket, subprocess, sys, time
from distributed import Client
sock = socket.socket(); sock.bind(("127.0.0.1", 0)); port = sock.getsockname()[1]; sock.close()
start = time.perf_counter()
py = sys.executable
procs = [subprocess.Popen([py, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                           "--port", str(port), "--no-dashboard"], stderr=subprocess.DEVNULL),
         subprocess.Popen([py, "-m", "distributed.cli.dask_worker", f"tcp://127.0.0.1:{port}",
                           "--nworkers", "2", "--nthreads", "1", "--no-dashboard"],
                          stderr=subprocess.DEVNULL)]
with Client(f"tcp://127.0.0.1:{port}", timeout=60) as client:
    client.wait_for_workers(2, timeout=60)
    assert client.submit(sum, [1, 2]).result() == 3
    print(time.perf_counter() - start)
for proc in procs:
    proc.terminate(); proc.wait()
"""
RAY_START = """
import time
start = time.perf_counter()
import ray
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
@ray.remote
def add(a, b):
    return a + b
assert ray.get(add.remote(1, 2)) == 3
print(time.perf_counter() - start)
ray.shutdown()
"""
START = {"dask": DASK_START, "ray": RAY_START}


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def _site(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def _timed(python: Path, code: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        out = subprocess.run([str(python), "-c", code], capture_output=True, text=True,
                             check=True, timeout=300,
                             env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(times)


def measure(engine: str, folder: Path, repeats: int) -> str:
    wheels = folder / f"{engine}-wheels"
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "-d", str(wheels),
                    ENGINES[engine]], check=True)
    files = list(wheels.iterdir())
    own = sum(f.stat().st_size for f in files if f.name.lower().startswith(OWN_WHEEL[engine]))
    venv = folder / f"{engine}-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    empty = _du(_site(venv))
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-index", "--find-links",
                    str(wheels), ENGINES[engine]], check=True)
    installed = _du(_site(venv)) - empty
    imported = _timed(python, "import time; t = time.perf_counter(); import "
                      f"{IMPORT[engine]}; print(time.perf_counter() - t)", repeats)
    started = _timed(python, START[engine], repeats)
    mb = 1e6
    return (f"{engine:>4}: download {sum(f.stat().st_size for f in files) / mb:6.1f} MB in "
            f"{len(files)} wheels (its own {own / mb:5.1f} MB), installed {installed / mb:6.1f} "
            f"MB, import {imported:4.2f} s, local cluster of 2 workers to a first result "
            f"{started:4.2f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.engines", description=__doc__
                                     .split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--engines", nargs="+", choices=list(ENGINES), default=list(ENGINES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="Dask only, one repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.engines, args.repeats = ["dask"], 1
    with tempfile.TemporaryDirectory(prefix="engines-") as tmp:
        for engine in args.engines:
            print(measure(engine, Path(tmp), args.repeats), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
