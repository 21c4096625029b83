"""Finished trials per minute: the search's default (``--workers auto``) against one process.

Every run trains exactly the same trials: the script creates each fresh SQLite study itself and
queues the same fixed configurations (batch 64, 128 and 256 in turn, three optimizers, learning
rates spread over the space) behind the tutorial's own, then runs

    python -m tuning.search --workers W --n-trials <all of them> --pruner none

on the real data, once with the default (``auto``: here one worker per core, one torch thread
each) and once with ``--workers 1`` (one process, torch's default threads), back to back, and
reads the study back. It prints, per run: trials per minute over the whole command (start-up,
data loading and workers included) and over the study's span (first trial start to last trial
end); the start-up (process start to the first trial's start); and the peak memory, sampled
every 0.2 s as the proportional set size (PSS: memory a forked worker shares with its
supervisor counts once, split between them) of the command's processes, per process and in
total.

    python -m benchmarks.workers            # 12 trials x 2 epochs per run
    python -m benchmarks.workers --quick    # 6 trials x 1 epoch per run
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna

from model.data import DEFAULT_DATA_DIR
from model.kernels import cpu_name
from tuning.space.hyperparameters import BATCH_SIZES, TUTORIAL, TUTORIAL_OPTIMIZERS
from tuning.study.lifecycle import FINISHED, create_or_resume
from tuning.study.protocol import StudyRecord
from tuning.study.storage import Location, open_storage
from tuning.workers.cores import AUTO, cpu_cores, resolve_workers

ROOT = Path(__file__).resolve().parents[1]
STUDY = "bench-workers"
VAL_SIZE = 10_000
FAST_BATCHES = tuple(b for b in BATCH_SIZES if b >= TUTORIAL.batch_size)  # 64, 128, 256
SAMPLE_S = 0.2  # how often the memory of the processes is read
LRS = (3e-4, 1e-3, 3e-3)  # none diverges: every trial runs all its epochs


@dataclass(frozen=True)
class Run:
    """One timed search."""

    workers: str  # as passed: "auto" or a number
    trials: int
    wall_s: float  # the whole command
    span_s: float  # first trial start to last trial end
    startup_s: float  # process start to first trial start
    peak_total_mb: float  # PSS of all its processes together, at its highest
    peak_each_mb: list[float]  # each process's highest PSS: the supervisor first

    def per_minute(self, seconds: float) -> float:
        return 60.0 * self.trials / seconds


def _pss_mb(pid: int) -> float | None:
    """Proportional set size of ``pid`` in MB (Linux), None once it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as kids:
            return [int(k) for k in kids.read().split()]
    except OSError:
        return []


class MemorySampler:
    """Samples the PSS of a process and its children until stopped (a thread)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak_total = pid, 0.0
        self.peak_each: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            total = 0.0
            for pid in [self.pid, *_children(self.pid)]:
                mb = _pss_mb(pid)
                if mb is not None:
                    total += mb
                    self.peak_each[pid] = max(self.peak_each.get(pid, 0.0), mb)
            self.peak_total = max(self.peak_total, total)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def configurations(n: int) -> list[dict]:
    """``n`` fixed configurations, cycling batch sizes, optimizers and learning rates."""
    return [
        {"lr": LRS[i % len(LRS)], "batch_size": FAST_BATCHES[i % len(FAST_BATCHES)],
         "optimizer": TUTORIAL_OPTIMIZERS[(i // len(FAST_BATCHES)) % len(TUTORIAL_OPTIMIZERS)]}
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


def timed_search(url: str, workers: str, trials: int, epochs: int, data_dir: Path) -> Run:
    command = [sys.executable, "-m", "tuning.search", "--storage", url, "--study-name", STUDY,
               "--workers", workers, "--n-trials", str(trials), "--epochs", str(epochs),
               "--pruner", "none", "--sampler", "random", "--val-size", str(VAL_SIZE),
               "--data-dir", str(data_dir)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.time()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    memory = MemorySampler(proc.pid)
    out, err = proc.communicate()
    wall = time.time() - start
    memory.stop()
    if proc.returncode != 0:
        raise SystemExit(f"the search failed:\n{out}\n{err}")
    done = optuna.load_study(study_name=STUDY, storage=url).get_trials(states=FINISHED)
    first = min(t.datetime_start.timestamp() for t in done)
    span = max(t.datetime_complete.timestamp() for t in done) - first
    each = [memory.peak_each[pid] for pid in sorted(memory.peak_each)]
    return Run(workers, len(done), wall, span, first - start, memory.peak_total, each)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.workers",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="6 trials x 1 epoch per run")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" lines
    trials, epochs = (6, 1) if args.quick else (12, 2)
    queued = configurations(trials - 1)  # the tutorial's configuration is the first trial
    layout = resolve_workers(AUTO, "cpu", trials)
    print(f"{trials} trials x {epochs} epochs on the real data, batch sizes {FAST_BATCHES}, "
          f"no pruning; {cpu_name()}, {cpu_cores()} CPU cores, load average "
          f"{os.getloadavg()[0]:.1f}; the default here: {layout.describe()}; optuna "
          f"{optuna.__version__}", flush=True)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, workers in enumerate((AUTO, "1")):
            url = f"sqlite:///{Path(tmp) / f'run{i}.db'}"
            prepare(url, epochs, queued)
            run = timed_search(url, workers, trials, epochs, args.data_dir)
            runs.append(run)
            each = " ".join(f"{mb:.0f}" for mb in run.peak_each_mb)
            print(f"--workers {workers:>4}: {run.trials} trials in {run.wall_s:6.1f} s "
                  f"({run.per_minute(run.wall_s):5.2f}/min whole command), study span "
                  f"{run.span_s:6.1f} s ({run.per_minute(run.span_s):5.2f}/min), start-up "
                  f"{run.startup_s:4.1f} s, peak PSS {run.peak_total_mb:,.0f} MB in total "
                  f"(per process, supervisor first: {each} MB)", flush=True)
    auto, one = runs
    print(f"--workers auto / --workers 1: {one.wall_s / auto.wall_s:.2f}x trials per minute "
          f"(whole command), {one.span_s / auto.span_s:.2f}x (study span); start-up "
          f"{auto.startup_s:.1f} s against {one.startup_s:.1f} s; peak memory "
          f"{auto.peak_total_mb / one.peak_total_mb:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
