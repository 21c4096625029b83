"""Does changing one knob help? Paired runs of configurations with and without the change.

Each configuration (``--params``: a JSON object of parameters, or an exported ``-best.json``)
is trained on the search's own split from each ``--seeds`` seed twice: as given, and with
``--change`` applied (e.g. ``hflip=0.5``); the two runs of a pair share the seed (initial
weights and order), so their difference is the change's plus what the change does to the
draws. Prints each pair's validation accuracy after the last epoch, then the mean difference,
how many pairs gained, and whether the gain passes ``--min-gain`` in at least
``--min-share`` of the pairs (the rule, written down before a run in docs/results.md).

    python -m benchmarks.knobs --params '{"lr": 1e-3, "batch_size": 64, "optimizer": "Adam"}' \\
        --change hflip=0.5 --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from model.data import DEFAULT_DATA_DIR, TrainValSplit, load_searched_split
from model.loops import flush_denormals
from tuning.space.hyperparameters import KNOBS, Hyperparameters, describe
from tuning.study.errors import UsageError
from tuning.study.protocol import EPOCHS, SPLIT_SEED, VAL_SIZE
from tuning.training.retrain import Diverged, retrain
from tuning.workers.cores import threads_per_worker

_split: TrainValSplit | None = None  # each worker process loads the split once


def _load(data_dir: Path, val_size: int, threads: int) -> None:
    global _split
    torch.set_num_threads(threads)  # the search's rule: the cores split among the workers
    flush_denormals()
    _split = load_searched_split(data_dir, val_size, SPLIT_SEED)[1]


def _run(params: Hyperparameters, seed: int, epochs: int, precision: str) -> float:
    """Validation accuracy after the last epoch (0.0 where the run diverged)."""
    assert _split is not None
    try:
        result = retrain(params, _split.train, _split.val, epochs, seed, torch.device("cpu"),
                         precision=precision)
    except Diverged:
        return 0.0
    return result.history["val_accuracy"][-1]


def _run_all(jobs: list[tuple[int, int, bool]], variants: tuple[list[Hyperparameters], ...],
             args: argparse.Namespace) -> list[float]:
    """Each job's accuracy, in job order; progress printed as runs finish. A job is
    (configuration, seed, changed): ``variants[changed][configuration]`` from ``seed``."""
    accuracies = [0.0] * len(jobs)
    finished: list[int] = []

    def done(k: int, accuracy: float) -> None:
        accuracies[k] = accuracy
        finished.append(k)
        i, seed, changed = jobs[k]
        side = "changed " if changed else "as given"
        print(f"[{len(finished):>2}/{len(jobs)}] config {i} seed {seed} "
              f"{side} val acc {accuracy:.4f}", flush=True)

    threads = threads_per_worker(args.workers)
    if args.workers == 1:
        _load(args.data_dir, args.val_size, threads)
        for k, (i, seed, changed) in enumerate(jobs):
            done(k, _run(variants[changed][i], seed, args.epochs, args.precision))
        return accuracies
    with ProcessPoolExecutor(args.workers, initializer=_load,
                             initargs=(args.data_dir, args.val_size, threads)) as pool:
        futures = {pool.submit(_run, variants[changed][i], seed, args.epochs, args.precision): k
                   for k, (i, seed, changed) in enumerate(jobs)}
        for future in as_completed(futures):
            done(futures[future], future.result())
    return accuracies


def read_params(text: str) -> Hyperparameters:
    """A configuration from a JSON object or a JSON file (an export's ``params``)."""
    path = Path(text)
    data: Any = json.loads(path.read_text() if path.suffix == ".json" else text)
    try:
        return Hyperparameters.from_params(data.get("params", data))
    except UsageError as exc:  # argparse reports an ArgumentTypeError as --params' error
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_change(text: str) -> dict[str, Any]:
    """``name=value`` pairs, comma-separated, with JSON values: ``hflip=0.5``."""
    change = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"--change {text!r}: write name=value")
        change[name.strip()] = json.loads(value)
    return change


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.knobs",
        description="Train configurations with and without a knob change from the same seeds "
        "and print the paired validation accuracies and the mean gain.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--params", action="append", required=True, type=read_params,
                        help="a configuration: a JSON object or an exported JSON file "
                        "(repeat for more)")
    parser.add_argument("--change", required=True, type=parse_change,
                        help="the knobs to change, name=value[,name=value]")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="bf16",
                        help="bf16 as the search trains where the CPU has it")
    parser.add_argument("--workers", type=int, default=2,
                        help="processes, the cores split between them (1: in this process)")
    parser.add_argument("--min-gain", type=float, default=0.0015,
                        help="the mean gain in validation accuracy the change must reach")
    parser.add_argument("--min-share", type=float, default=2 / 3,
                        help="the share of pairs that must gain")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--val-size", type=int, default=VAL_SIZE)
    args = parser.parse_args(argv)
    for name, value in args.change.items():
        if name in KNOBS and not KNOBS[name].legal(value):
            parser.error(f"--change {name}={value}: {name} takes {KNOBS[name].allowed}")
    try:
        changed = [replace(p, **args.change) for p in args.params]
        for p in changed:
            Hyperparameters.from_params(p.as_params())
    except (TypeError, ValueError, UsageError) as exc:
        parser.error(f"--change {args.change}: {exc}")
    jobs = [(i, seed, side) for i in range(len(args.params)) for seed in args.seeds
            for side in (False, True)]
    print(f"{len(args.params)} configurations x {len(args.seeds)} seeds x 2 = {len(jobs)} runs "
          f"of {args.epochs} epochs ({args.precision}, {args.workers} workers); change "
          f"{describe(args.change)}", flush=True)
    accuracies = _run_all(jobs, (args.params, changed), args)
    gains = []
    for k in range(0, len(jobs), 2):
        i, seed, _ = jobs[k]
        base, new = accuracies[k], accuracies[k + 1]
        gains.append(new - base)
        print(f"config {i} seed {seed}: {base:.4f} -> {new:.4f} ({new - base:+.4f})  "
              f"{describe(args.params[i].as_params())}", flush=True)
    mean, share = statistics.mean(gains), sum(g > 0 for g in gains) / len(gains)
    passed = mean >= args.min_gain and share >= args.min_share
    print(f"mean gain {mean:+.4f} (rule: >= {args.min_gain:+.4f}); {share:.0%} of pairs gained "
          f"(rule: >= {args.min_share:.0%}) -> {'the change helps' if passed else 'no'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
