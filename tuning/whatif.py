"""python -m tuning.whatif: would another pruner have saved epochs, or lost a good trial?

Replays a finished study's recorded per-epoch validation curves under other pruners and
settings (``tuning.results.replay``), at no training cost, and prints for each: the epochs the
search would have trained, how many it saves against no pruning, the trials it would have stopped,
and whether it would have stopped any trial that ended in the study's top 5. It answers "is
my pruner too aggressive?" from the study's own data.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from tuning.cli.common import (
    EXIT_OK,
    HelpFormatter,
    Parser,
    add_study_arguments,
    fail,
    quiet_optuna,
)
from tuning.results.replay import (
    TOP,
    Outcome,
    curves,
    recorded_outcome,
    replay,
    settings,
    top_trials,
)
from tuning.study.errors import UsageError
from tuning.study.lifecycle import DEFAULT_STUDY_NAME, load_study
from tuning.study.storage import Location

PROG = "python -m tuning.whatif"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="Replay a study's recorded learning curves under other pruners and "
        "settings: epochs each would have trained and saved, and whether it would have "
        f"stopped a trial that ended in the top {TOP}. Trains nothing.",
        formatter_class=HelpFormatter,
    )
    add_study_arguments(parser, DEFAULT_STUDY_NAME)
    return parser


def _row(name: str, outcome: Outcome, unpruned: int) -> str:
    saved = unpruned - outcome.epochs_run
    top = ", ".join(map(str, outcome.top_stopped)) or "none"
    unknown = f"{len(outcome.unknown)}" if outcome.unknown else "-"
    return (f"{name:<40} {outcome.epochs_run:>6} {saved:>6} {len(outcome.stopped):>7}  "
            f"{top:<16} {unknown:>7}")


def main(argv: Sequence[str] | None = None) -> int:
    """Print the what-if table; return the process exit status."""
    args = build_parser().parse_args(argv)
    quiet_optuna()
    try:
        study = load_study(Location.of(args.storage, args.study_name), args.study_name)
    except UsageError as exc:
        return fail(PROG, str(exc), exc=exc)
    recorded, missing = curves(study)
    if not any(c.complete for c in recorded):
        return fail(PROG, f"study {args.study_name!r} has no completed trial with a recorded "
                    "curve yet; run python -m tuning.search first.")
    epochs = max(len(c.accuracies) for c in recorded)
    unpruned = replay(recorded, settings(epochs)["none"]()).epochs_run
    truncated = [c.number for c in recorded if not c.complete]
    print(f"Study {args.study_name!r}: {len(recorded)} trials with curves ({epochs} epochs at "
          f"most), top {TOP} by value: trials {', '.join(map(str, top_trials(recorded)))}.")
    print(f"{len(truncated)} trial(s) were pruned in the study: their curves end early, so "
          "where another pruner would let them run on, what came next is unknown (column "
          "'unknown'); they count only the epochs recorded." if truncated else
          "No trial was pruned in the study: every curve is whole.")
    if missing:
        print(f"Not replayable (no recorded curve): trials {', '.join(map(str, missing))}.")
    print(f"\n{'pruner':<40} {'epochs':>6} {'saved':>6} {'stopped':>7}  "
          f"{'top-5 stopped':<16} {'unknown':>7}")
    print(_row("recorded: the study's own pruner", recorded_outcome(recorded), unpruned))
    for name, make in settings(epochs).items():
        print(_row(name, replay(recorded, make()), unpruned))
    print("\nepochs: epochs trained (of what is recorded); saved: against no pruning; stopped: "
          f"trials stopped early; top-5 stopped: trials of the top {TOP} it would have lost. "
          "Trials are replayed one after another, in the order they started.")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
