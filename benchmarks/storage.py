"""What the study storage costs per epoch: SQLite with its default journal against WAL.

Every epoch of a trial writes to the study exactly what
``tuning.training.objective.Objective`` writes:
the four history attributes (``HISTORY_KEYS``), the intermediate value (``trial.report``), and
one pruning check (``trial.should_prune``). This script replays those calls, with no training
in between, on fresh SQLite studies opened as the tools open them: once as before (the default
rollback journal, ``open_storage(location)``) and once as the search now does
(``open_storage(location, write_ahead_log=True)``), alternating the two modes round by round in one
process, and prints the median milliseconds per epoch and their ratio. (The heartbeat, one
more commit every 10 s while a trial runs, is left out: it is the same in both modes.)

    python -m benchmarks.storage              # 5 rounds x 40 epochs per mode
    python -m benchmarks.storage --quick      # 2 rounds x 10 epochs

With ``--clients``, it measures instead how each storage holds up under many workers at once
(``benchmarks/storage_clients.py``): SQLite, PostgreSQL and Optuna's gRPC proxy in front of it,

    python -m benchmarks.storage --clients 1 8 32 128

Divide the milliseconds by an epoch's seconds (docs/performance.md: about 2 s at batch 64
with 2 threads here) for the storage's share of trial time.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import optuna

from benchmarks.storage_clients import POSTGRES, STORAGES, measure
from tuning.cli.common import HelpFormatter, Parser
from tuning.study.protocol import HISTORY_KEYS
from tuning.study.storage import Location, open_storage

MODES = {"rollback journal": False, "write-ahead log": True}


def epoch_writes_ms(folder: Path, wal: bool, epochs: int, round_: int) -> float:
    """Milliseconds per epoch of a trial's storage calls on a fresh study."""
    url = f"sqlite:///{folder / f'{int(wal)}-{round_}.db'}"
    storage = open_storage(Location.parse(url), write_ahead_log=wal)
    study = optuna.create_study(study_name="bench-storage", storage=storage,
                                direction="maximize")
    trial = study.ask()
    history: dict[str, list[float]] = {key: [] for key in HISTORY_KEYS}
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        for key in HISTORY_KEYS:
            history[key].append(0.5)
            trial.set_user_attr(key, history[key])
        trial.report(0.5, epoch)
        trial.should_prune()
    seconds = time.perf_counter() - start
    study.tell(trial, 0.5)
    return 1000.0 * seconds / epochs


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = Parser(prog="python -m benchmarks.storage", description=__doc__.split("\n")[0],
                    formatter_class=HelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="measurements per mode")
    parser.add_argument("--epochs", type=int, default=40, help="epochs of writes per round")
    parser.add_argument("--quick", action="store_true", help="2 rounds x 10 epochs")
    parser.add_argument("--clients", type=int, nargs="+", default=None,
                        help="instead: this many processes at once doing the trial protocol, "
                        "per storage (e.g. 1 8 32 128)")
    parser.add_argument("--storages", nargs="+", choices=STORAGES, default=list(STORAGES),
                        help="with --clients: the storages to measure")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="with --clients: how long each run's clients work")
    parser.add_argument("--postgres", default=POSTGRES,
                        help="with --clients: the PostgreSQL database (the proxy serves it too)")
    args = parser.parse_args(argv)
    if args.clients is not None and (min(args.clients) < 1 or args.seconds <= 0):
        parser.error("--clients must be at least 1 and --seconds positive")
    if args.quick:
        args.rounds, args.epochs = 2, 10
    if args.rounds < 1 or args.epochs < 1:
        parser.error("--rounds and --epochs must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.clients is not None:
        return measure(args.storages, args.clients, args.seconds, args.postgres)
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp:
        for round_ in range(args.rounds):
            for mode, wal in MODES.items():
                times[mode].append(epoch_writes_ms(Path(tmp), wal, args.epochs, round_))
    print(f"storage calls of one epoch (4 attributes, report, should_prune), "
          f"median of {args.rounds} x {args.epochs} epochs:")
    for mode, values in times.items():
        print(f"  {mode:<17} {statistics.median(values):7.2f} ms per epoch   "
              f"(rounds: {', '.join(f'{v:.1f}' for v in values)})")
    before, after = (statistics.median(times[mode]) for mode in MODES)
    print(f"write-ahead log vs rollback journal: {before / after:.2f}x cheaper")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
