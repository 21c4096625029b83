"""Finished trials per minute with 1 and with 2 workers on the same short study.

Every run trains exactly the same trials: the script creates each fresh SQLite study itself and
queues the same fixed configurations (batch 64, 128 and 256 in turn, three optimizers, learning
rates spread over the space) behind the tutorial's own, then runs

    python -m tuning.search --workers K --n-trials <all of them> --pruner none

on the real data, once with K = 1 and once with K = 2, back to back, and reads the study back.
Throughput is counted two ways: over the whole command (start-up, data loading and process
spawning included) and over the study's span (first trial start to last trial end). A third
run, one process with one torch thread (OMP_NUM_THREADS=1), shows how much of the gain comes
from the workers' one thread each rather than from running two trials at once: on a busy
machine a process with 2 threads can lose far more to waiting for its second thread.

    python -m benchmarks.workers            # 12 trials x 2 epochs per run, 3 runs
    python -m benchmarks.workers --quick    # 6 trials x 1 epoch per run
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna

from model.data import DEFAULT_DATA_DIR
from tuning.space.hyperparameters import BATCH_SIZES, OPTIMIZER_NAMES, TUTORIAL
from tuning.study.lifecycle import FINISHED, create_or_resume
from tuning.study.protocol import StudyRecord
from tuning.study.storage import Location, open_storage
from tuning.workers.cores import cpu_cores

ROOT = Path(__file__).resolve().parents[1]
STUDY = "bench-workers"
VAL_SIZE = 10_000
FAST_BATCHES = tuple(b for b in BATCH_SIZES if b >= TUTORIAL.batch_size)  # 64, 128, 256
LRS = (3e-4, 1e-3, 3e-3)  # none diverges: every trial runs all its epochs


@dataclass(frozen=True)
class Run:
    """One timed search."""

    workers: int
    threads: str  # "auto": torch's default
    trials: int
    wall_s: float  # the whole command
    span_s: float  # first trial start to last trial end

    def per_minute(self, seconds: float) -> float:
        return 60.0 * self.trials / seconds


def configurations(n: int) -> list[dict]:
    """``n`` fixed configurations, cycling batch sizes, optimizers and learning rates."""
    return [
        {"lr": LRS[i % len(LRS)], "batch_size": FAST_BATCHES[i % len(FAST_BATCHES)],
         "optimizer": OPTIMIZER_NAMES[(i // len(FAST_BATCHES)) % len(OPTIMIZER_NAMES)]}
        for i in range(n)
    ]


def prepare(url: str, epochs: int, queued: list[dict]) -> None:
    """Create the study as the search would, then queue ``queued`` behind the tutorial."""
    study, _ = create_or_resume(
        open_storage(Location.parse(url)), STUDY, sampler_name="random", pruner_name="none",
        seed=0, record=StudyRecord(epochs=epochs, val_size=VAL_SIZE, split_seed=0),
    )
    for params in queued:
        study.enqueue_trial(params)


def timed_search(
    url: str, workers: int, trials: int, epochs: int, data_dir: Path, one_thread: bool = False
) -> Run:
    command = [sys.executable, "-m", "tuning.search", "--storage", url, "--study-name", STUDY,
               "--workers", str(workers), "--n-trials", str(trials), "--epochs", str(epochs),
               "--pruner", "none", "--sampler", "random", "--val-size", str(VAL_SIZE),
               "--data-dir", str(data_dir)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if one_thread:
        env["OMP_NUM_THREADS"] = "1"
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"the search failed:\n{result.stdout}\n{result.stderr}")
    done = optuna.load_study(study_name=STUDY, storage=url).get_trials(states=FINISHED)
    span = (max(t.datetime_complete for t in done) -
            min(t.datetime_start for t in done)).total_seconds()
    return Run(workers, "1" if one_thread else "auto", len(done), wall, span)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.workers",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="6 trials x 1 epoch per run")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" lines
    trials, epochs = (6, 1) if args.quick else (12, 2)
    queued = configurations(trials - 1)  # the tutorial's configuration is the first trial
    print(f"{trials} trials x {epochs} epochs on the real data, batch sizes {FAST_BATCHES}, "
          f"no pruning; {cpu_cores()} CPU cores, load average {os.getloadavg()[0]:.1f}; "
          f"optuna {optuna.__version__}", flush=True)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (workers, one_thread) in enumerate(((1, False), (2, False), (1, True))):
            url = f"sqlite:///{Path(tmp) / f'run{i}.db'}"
            prepare(url, epochs, queued)
            run = timed_search(url, workers, trials, epochs, args.data_dir, one_thread)
            runs.append(run)
            threads = "1 thread" if one_thread else "default threads"
            print(f"{workers} worker(s), {threads}: {run.trials} trials in {run.wall_s:6.1f} s "
                  f"({run.per_minute(run.wall_s):5.2f}/min whole command), study span "
                  f"{run.span_s:6.1f} s ({run.per_minute(run.span_s):5.2f}/min)", flush=True)
    one, two, single = runs
    print(f"2 workers / 1 worker: {one.wall_s / two.wall_s:.2f}x trials per minute (whole "
          f"command), {one.span_s / two.span_s:.2f}x (study span); against 1 worker with 1 "
          f"thread: {single.wall_s / two.wall_s:.2f}x, {single.span_s / two.span_s:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
