"""python -m benchmarks.chaos: a study under fire, on SQLite and on PostgreSQL.

Several search processes share one study, as machines of a cluster would (each a lone
``python -m tuning.search`` with the same flags). While they work, a driver kills one that is
in the middle of a trial with SIGKILL every few seconds and starts a replacement, and once
sends SIGTERM to all of them (a scheduler stopping the job) and starts them again. At the
end it prints:

- finished: complete and pruned trials, which must equal the target exactly;
- lost: trials seen finished during the run that are no longer finished (must be 0);
- running: trials left RUNNING (must be 0);
- retries: trials queued again after their process was killed (Optuna's heartbeat retry);
- trials per minute against an undisturbed run of the same processes, back to back.

Each process runs one torch thread, so the processes share the cores instead of spinning on
them. ``--quick`` is a smoke run (fewer trials and kills); the numbers in docs/scale-out.md come
from the full run.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import TrialState

from benchmarks.synthetic import write_fashion_mnist
from tuning.cli.common import HelpFormatter, Parser
from tuning.study.lifecycle import FINISHED

POLL_S = 0.5  # how often the driver looks at the study and its processes
POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@dataclass
class Outcome:
    """What one run of the processes on one study came to."""

    label: str
    seconds: float
    finished: int = 0
    lost: int = 0
    running: int = 0
    failed: int = 0
    retries: int = 0
    kills: int = 0  # each lands in the middle of a trial
    sigterms: int = 0
    exits: list[int] = field(default_factory=list)  # exit statuses of the processes

    @property
    def per_minute(self) -> float:
        return 60 * self.finished / self.seconds if self.seconds else 0.0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m benchmarks.chaos", description=__doc__.split("\n\n")[0],
                    formatter_class=HelpFormatter)
    parser.add_argument("--storage", choices=("sqlite", "postgresql", "both"), default="both",
                        help="where the study lives (postgresql: the server on "
                        "127.0.0.1:5432, database test)")
    parser.add_argument("--trials", type=int, default=60, help="the study's target")
    parser.add_argument("--processes", type=int, default=4, help="search processes at once")
    parser.add_argument("--kills", type=int, default=12, help="SIGKILLs to send")
    parser.add_argument("--kill-every", type=float, default=4.0,
                        help="seconds between kills (once the first trial has finished)")
    parser.add_argument("--epochs", type=int, default=8,
                        help="epochs per trial (of 500 synthetic images: a few seconds)")
    parser.add_argument("--heartbeat", type=int, default=2,
                        help="seconds between heartbeats: a killed trial is retried after 3")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="train on the FashionMNIST files found from this folder, as the "
                        "search does (default: small synthetic files, benchmarks.synthetic: "
                        "the question is survival, not accuracy)")
    parser.add_argument("--seed", type=int, default=0, help="seeds which process is killed")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 16 trials, 3 kills, SQLite only")
    return parser


class Fleet:
    """The search processes of one run; replaced as they are killed."""

    def __init__(self, command: list[str], size: int, logs: Path) -> None:
        self.command, self.size, self.logs = command, size, logs
        self.procs: list[subprocess.Popen] = []
        self.exits: list[int] = []
        self.started = 0
        # One torch thread each: several processes share the cores instead of spinning.
        self.env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}

    def start(self) -> None:
        self.started += 1
        log = (self.logs / f"process-{self.started}.log").open("w")
        self.procs.append(subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                           env=self.env))

    def fill(self) -> None:
        while len(self.live()) < self.size:
            self.start()

    def live(self) -> list[subprocess.Popen]:
        for proc in [p for p in self.procs if p.poll() is not None]:
            self.exits.append(proc.returncode)
            self.procs.remove(proc)
        return list(self.procs)

    def wait(self) -> None:
        for proc in self.procs:
            proc.wait()
        self.live()

    def kill(self) -> None:
        """End every process left (the driver itself failed): none may outlive the run."""
        for proc in self.procs:
            proc.kill()
            proc.wait()


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    except KeyError:  # not created yet
        return []


def _training(procs: list[subprocess.Popen], trials: list[optuna.trial.FrozenTrial]
              ) -> list[subprocess.Popen]:
    """The processes in the middle of a trial."""
    busy = {int(t.user_attrs["worker"].rsplit(":", 1)[1]) for t in trials
            if t.state == TrialState.RUNNING and "worker" in t.user_attrs}
    return [p for p in procs if p.pid in busy]


def run(url: str, args: argparse.Namespace, *, chaos: bool, logs: Path) -> Outcome:
    """Run the processes on a fresh study at ``url``; with ``chaos``, under fire."""
    name = f"chaos-{uuid.uuid4().hex[:8]}"
    command = [sys.executable, "-m", "tuning.search", "--storage", url, "--study-name", name,
               "--n-trials", str(args.trials), "--epochs", str(args.epochs), "--sampler",
               "random", "--heartbeat", str(args.heartbeat), "--data-dir", str(args.data_dir),
               "--val-size", str(args.val_size), "--pruner", "none",
               "--workers", "1"]  # each process one trial at a time: the driver kills processes
    fleet = Fleet(command, args.processes, logs)
    try:
        rng = random.Random(args.seed)
        outcome = Outcome("chaos" if chaos else "undisturbed", 0.0)
        seen: set[int] = set()  # numbers of trials seen finished at some point
        start = time.monotonic()
        fleet.start()  # one process creates the study; the others join once it exists
        first_log = logs / "process-1.log"
        while "Study " not in first_log.read_text():  # its first line: the study exists
            if not fleet.live():
                raise SystemExit(f"the first search process failed:\n{first_log.read_text()}")
            time.sleep(POLL_S)
        fleet.fill()
        next_kill = None
        while fleet.live():
            trials = _trials(url, name)
            seen |= {t.number for t in trials if t.state in FINISHED}
            if chaos and seen and next_kill is None:
                next_kill = time.monotonic() + args.kill_every
            if chaos and next_kill is not None and time.monotonic() >= next_kill:
                if outcome.kills == args.kills // 2 and not outcome.sigterms:
                    for proc in fleet.live():  # the scheduler stops the whole job...
                        proc.send_signal(signal.SIGTERM)
                    for proc in fleet.live():
                        proc.wait()
                    outcome.sigterms += 1
                    fleet.fill()  # ...and starts it again
                elif outcome.kills < args.kills and len(seen) < args.trials:
                    training = _training(fleet.live(), trials)
                    if not training:  # all are starting up or between trials: try again soon
                        time.sleep(POLL_S)
                        continue
                    rng.choice(training).kill()  # in the middle of a trial, its heartbeat running
                    outcome.kills += 1
                    fleet.fill()
                next_kill = time.monotonic() + args.kill_every
            time.sleep(POLL_S)
    except BaseException:
        fleet.kill()
        raise
    fleet.wait()
    outcome.seconds = time.monotonic() - start
    trials = _trials(url, name)
    finished = {t.number for t in trials if t.state in FINISHED}
    outcome.finished = len(finished)
    outcome.lost = len(seen - finished)
    outcome.running = sum(t.state == TrialState.RUNNING for t in trials)
    outcome.failed = sum(t.state == TrialState.FAIL for t in trials)
    outcome.retries = sum("failed_trial" in t.system_attrs for t in trials)
    outcome.exits = fleet.exits
    if url.startswith("postgresql"):
        optuna.delete_study(study_name=name, storage=url)
    return outcome


def report(storage: str, calm: Outcome, chaos: Outcome, target: int) -> bool:
    """Print both runs side by side; return whether the chaos run kept every promise."""
    print(f"\n{storage}: {target} trials, target {target}")
    print(f"{'run':<12} {'finished':>8} {'lost':>5} {'running':>8} {'failed':>7} {'retries':>8} "
          f"{'kills':>6} {'SIGTERM':>8} {'seconds':>8} {'trials/min':>11}")
    for o in (calm, chaos):
        print(f"{o.label:<12} {o.finished:>8} {o.lost:>5} {o.running:>8} {o.failed:>7} "
              f"{o.retries:>8} {o.kills:>6} {o.sigterms:>8} {o.seconds:>8.1f} "
              f"{o.per_minute:>11.2f}")
    ratio = chaos.per_minute / calm.per_minute if calm.per_minute else 0.0
    ok = chaos.finished == target and chaos.lost == 0 and chaos.running == 0
    print(f"chaos / undisturbed: {ratio:.2f}x trials per minute; exit statuses under chaos: "
          f"{sorted(chaos.exits)}")
    print(f"verdict: {'PASS' if ok else 'FAIL'} (finished = target, 0 lost, 0 running)")
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.trials, args.kills = 16, 3
        args.storage = "sqlite" if args.storage == "both" else args.storage
    print(f"{args.processes} processes, {args.trials} trials x {args.epochs} epochs, "
          f"{args.kills} SIGKILLs every {args.kill_every} s and one SIGTERM to all; heartbeat "
          f"{args.heartbeat} s; {os.cpu_count()} CPUs.", flush=True)
    stores = ("sqlite", "postgresql") if args.storage == "both" else (args.storage,)
    ok = True
    with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
        args.val_size = 10_000
        if args.data_dir is None:
            args.data_dir = write_fashion_mnist(Path(tmp) / "synthetic")
            args.val_size = 100
        print(f"data: {args.data_dir} ({args.val_size} validation images)", flush=True)
        for storage in stores:
            outcomes = []
            for chaos in (False, True):
                folder = Path(tmp) / f"{storage}-{'chaos' if chaos else 'calm'}"
                folder.mkdir()
                url = (f"sqlite:///{folder / 'study.db'}" if storage == "sqlite"
                       else POSTGRES_URL)
                outcomes.append(run(url, args, chaos=chaos, logs=folder))
            ok &= report(storage, *outcomes, args.trials)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
