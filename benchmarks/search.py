"""Time to a good configuration: the suite's default search against a naive search.

For each seed, back to back with the same wall-clock budget:
- the suite: ``python -m tuning.search`` with its defaults (TPE, median pruning, 10 epochs per
  trial, the tensor loop) on a fresh SQLite study;
- the naive search: ``python -m benchmarks.naive`` (the tutorial's DataLoader loop, random
  sampler, no pruning, 10 epochs per trial).
Each runs in its own process, is stopped with Ctrl-C when the budget is spent, and is read back
afterwards: the minute at which some trial first reported the target validation accuracy, and
the best validation accuracy reached within the budget. The table shows both per seed and the
medians, plus the suite's Optuna + SQLite overhead as a share of trial time and the peak memory
(max RSS) of each search process.

    python -m benchmarks.search             # 3 seeds x 2 searches x 3 minutes: about 20 minutes
    python -m benchmarks.search --quick     # 3 seeds x 2 searches x 45 seconds
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import optuna

from model.data import DEFAULT_DATA_DIR
from tuning.study.lifecycle import FINISHED
from tuning.study.protocol import HISTORY_KEYS

ROOT = Path(__file__).resolve().parents[1]
FULL_BUDGET_S, QUICK_BUDGET_S = 180.0, 45.0
DEFAULT_TARGET = 0.88
STOP_GRACE_S = 60  # after Ctrl-C, wait this long for a clean exit before SIGKILL
STUDY = "bench"
POLL_S = 2.0  # with --stop-at-target, how often a search's progress is read
VAL_ACCURACY, EPOCH_SECONDS = HISTORY_KEYS[2], HISTORY_KEYS[3]


@dataclass(frozen=True)
class Epoch:
    """One reported epoch: when (seconds since the process started) and what it scored."""

    seconds: float
    val_accuracy: float


@dataclass(frozen=True)
class Run:
    """What one search did within its budget."""

    epochs: list[Epoch]
    trials: int
    max_rss_mb: float
    overhead: float | None  # share of trial time spent outside the epochs (suite only)
    startup: float = math.nan  # seconds from the process's start to its first trial's

    def time_to(self, target: float, budget: float) -> float:
        """Seconds until an epoch first reached ``target``; inf if none did within budget."""
        hits = [e.seconds for e in self.epochs if e.val_accuracy >= target and
                e.seconds <= budget]
        return min(hits, default=math.inf)

    def best(self, budget: float) -> float:
        return max((e.val_accuracy for e in self.epochs if e.seconds <= budget), default=0.0)


def run_for(cmd: list[str], budget: float, log: Path,
            done: Callable[[], bool] | None = None) -> tuple[float, float]:
    """Run ``cmd`` for ``budget`` seconds (or until ``done()``, asked every
    ``POLL_S``), then Ctrl-C it; return (start time, max RSS in MB)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.time()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        stop_at, kill_at, poll_at = start + budget, math.inf, start + POLL_S
        while True:
            pid, _status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = 0  # reaped here; keeps Popen from waiting again
                return start, usage.ru_maxrss / 1024
            now = time.time()
            if done is not None and now >= poll_at:
                poll_at = now + POLL_S
                if done():
                    stop_at = now
            if now >= stop_at and kill_at == math.inf:
                proc.send_signal(signal.SIGINT)
                kill_at = now + STOP_GRACE_S
            elif now >= kill_at:
                proc.kill()
            time.sleep(0.2)


def _study_reached(db: Path, target: float) -> bool:
    """Whether any epoch in the SQLite study ``db`` reported ``target`` or more (read-only)."""
    if not db.exists():
        return False
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1.0) as con:
            row = con.execute("SELECT MAX(intermediate_value) FROM "
                              "trial_intermediate_values").fetchone()
    except sqlite3.Error:  # not created yet, or busy: ask again at the next poll
        return False
    return row is not None and row[0] is not None and row[0] >= target


def _events_reached(events: Path, target: float) -> bool:
    if not events.exists():
        return False
    return any(json.loads(line)["val_accuracy"] >= target
               for line in events.read_text().splitlines() if line.endswith("}"))


def suite_run(workdir: Path, seed: int, budget: float, data_dir: Path, extra: list[str],
              stop_at: float | None = None) -> Run:
    """The suite's search; with ``stop_at``, stopped once an epoch reached that accuracy."""
    db = workdir / f"suite-{seed}.db"
    url = f"sqlite:///{db}"
    cmd = [sys.executable, "-m", "tuning.search", "--storage", url, "--study-name", STUDY,
           "--seed", str(seed), "--n-trials", "100000", "--data-dir", str(data_dir), *extra]
    done = None if stop_at is None else partial(_study_reached, db, stop_at)
    start, rss = run_for(cmd, budget, workdir / f"suite-{seed}.log", done)
    trials = [t for t in optuna.load_study(study_name=STUDY, storage=url).get_trials(
        deepcopy=False) if t.datetime_start is not None]  # not a trial still waiting
    epochs, inside, total, gaps = [], 0.0, 0.0, 0.0
    previous_end = None
    for t in sorted(trials, key=lambda t: t.datetime_start):
        t0 = t.datetime_start.timestamp() - start
        elapsed = t0
        for seconds, accuracy in zip(t.user_attrs.get(EPOCH_SECONDS, []),
                                     t.user_attrs.get(VAL_ACCURACY, []), strict=False):
            elapsed += seconds
            epochs.append(Epoch(elapsed, accuracy))
        if t.datetime_complete is not None and t.state in FINISHED:
            duration = (t.datetime_complete - t.datetime_start).total_seconds()
            inside += duration - sum(t.user_attrs.get(EPOCH_SECONDS, []))
            total += duration
            if previous_end is not None:
                gaps += max(0.0, t.datetime_start.timestamp() - previous_end)
            previous_end = t.datetime_complete.timestamp()
    overhead = (inside + gaps) / (total + gaps) if total else None
    startup = min((t.datetime_start.timestamp() - start for t in trials), default=math.nan)
    return Run(epochs, len(trials), rss, overhead, startup)


def naive_run(workdir: Path, seed: int, budget: float, data_dir: Path, extra: list[str],
              stop_at: float | None = None) -> Run:
    """The naive search; with ``stop_at``, stopped once an epoch reached that accuracy."""
    events = workdir / f"naive-{seed}.jsonl"
    cmd = [sys.executable, "-m", "benchmarks.naive", "--events", str(events), "--seed",
           str(seed), "--data-dir", str(data_dir), *extra]
    done = None if stop_at is None else partial(_events_reached, events, stop_at)
    _, rss = run_for(cmd, budget, workdir / f"naive-{seed}.log", done)
    rows = [json.loads(line) for line in events.read_text().splitlines()] if events.exists() \
        else []
    epochs = [Epoch(r["seconds"], r["val_accuracy"]) for r in rows]
    startup = rows[0]["seconds"] - rows[0]["epoch_seconds"] if rows else math.nan
    return Run(epochs, len({r["trial"] for r in rows}), rss, None, startup)


def _minutes(seconds: float) -> str:
    return "  never" if math.isinf(seconds) else f"{seconds / 60:7.2f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.search", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help=f"a {QUICK_BUDGET_S:.0f} s budget per search instead of "
                        f"{FULL_BUDGET_S / 60:.0f} minutes")
    parser.add_argument("--budget", type=float, default=None, help="seconds per search")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--target", type=float, default=DEFAULT_TARGET,
                        help="validation accuracy whose first time is measured")
    parser.add_argument("--stop-at-target", action="store_true",
                        help="stop each search once it reached --target (its best value is "
                        "then the value at that moment): many seeds in little time")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--suite-args", default="",
                        help="extra flags for tuning.search, e.g. '--workers 2'")
    parser.add_argument("--val-size", type=int, default=None,
                        help="validation images (default: the suite's 10,000)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep the studies, event files and logs in this folder")
    args = parser.parse_args(argv)
    budget = args.budget or (QUICK_BUDGET_S if args.quick else FULL_BUDGET_S)
    extra = shlex.split(args.suite_args)
    if args.val_size:
        extra += ["--val-size", str(args.val_size)]
    data_dir = args.data_dir.resolve()
    stop_at = args.target if args.stop_at_target else None
    print(f"budget {budget:.0f} s per search{' (or until the target)' if stop_at else ''}, "
          f"seeds {args.seeds}, target validation accuracy {args.target}; suite flags: "
          f"{' '.join(extra) or '(defaults)'}", flush=True)

    rows: list[tuple[int, Run, Run]] = []
    with tempfile.TemporaryDirectory(prefix="fashion-tune-bench-") as tmp:
        if args.keep:
            args.keep = args.keep.resolve()  # the searches run from the project's root
            tmp = str(args.keep)
            args.keep.mkdir(parents=True, exist_ok=True)
        for seed in args.seeds:
            suite = suite_run(Path(tmp), seed, budget, data_dir, extra, stop_at)
            naive = naive_run(Path(tmp), seed, budget, data_dir,
                              ["--val-size", str(args.val_size)] if args.val_size else [],
                              stop_at)
            rows.append((seed, suite, naive))
            print(f"seed {seed}: suite {suite.trials} trials, {len(suite.epochs)} epochs, "
                  f"best {suite.best(budget):.4f}; naive {naive.trials} trials, "
                  f"{len(naive.epochs)} epochs, best {naive.best(budget):.4f}", flush=True)

    print(f"\n{'seed':>4} | {'min to target':>13} {'':>7} | {'best val acc':>12} {'':>6} | "
          f"{'trials':>6} {'':>5} | {'max RSS MB':>10} {'':>6}")
    print(f"{'':>4} | {'suite':>13} {'naive':>7} | {'suite':>12} {'naive':>6} | "
          f"{'suite':>6} {'naive':>5} | {'suite':>10} {'naive':>6}")
    for seed, suite, naive in rows:
        print(f"{seed:>4} | {_minutes(suite.time_to(args.target, budget)):>13} "
              f"{_minutes(naive.time_to(args.target, budget)):>7} | "
              f"{suite.best(budget):>12.4f} {naive.best(budget):>6.4f} | "
              f"{suite.trials:>6} {naive.trials:>5} | {suite.max_rss_mb:>10.0f} "
              f"{naive.max_rss_mb:>6.0f}")
    suite_t = statistics.median(s.time_to(args.target, budget) for _, s, _ in rows)
    naive_t = statistics.median(n.time_to(args.target, budget) for _, _, n in rows)
    print(f"\nmedian minutes to {args.target}: suite {_minutes(suite_t).strip()}, naive "
          f"{_minutes(naive_t).strip()}")
    if math.isinf(suite_t):
        print("speedup to target: not measurable (the suite did not reach it in budget)")
    elif math.isinf(naive_t):
        print(f"speedup to target: more than {budget / suite_t:.1f}x (the naive search did "
              f"not reach it within the {budget / 60:.1f}-minute budget)")
    else:
        print(f"speedup to target: {naive_t / suite_t:.1f}x")
    print(f"median best validation accuracy within budget: suite "
          f"{statistics.median(s.best(budget) for _, s, _ in rows):.4f}, naive "
          f"{statistics.median(n.best(budget) for _, _, n in rows):.4f}")
    def from_first(run: Run) -> str:  # what benchmarks.simulate charges: no start-up
        return _minutes(run.time_to(args.target, budget) - run.startup).strip()

    print(f"minutes to {args.target} from each search's first trial (the start-up taken off), "
          "per seed: suite " + " ".join(from_first(s) for _, s, _ in rows) + "; naive "
          + " ".join(from_first(n) for _, _, n in rows))
    print(f"median start-up (process start to first trial): suite "
          f"{statistics.median(s.startup for _, s, _ in rows):.1f} s, naive "
          f"{statistics.median(n.startup for _, _, n in rows):.1f} s")
    overheads = [s.overhead for _, s, _ in rows if s.overhead is not None]
    if overheads:
        print(f"suite Optuna + SQLite overhead: {100 * statistics.median(overheads):.2f}% of "
              "trial time (median over seeds; everything outside the timed epochs)")
    print(f"peak memory (max RSS): suite {max(s.max_rss_mb for _, s, _ in rows):.0f} MB, naive "
          f"{max(n.max_rss_mb for _, _, n in rows):.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
