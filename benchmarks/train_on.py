"""Should the retrain train on train or on train + validation? Decided without the test split.

``python -m tuning.train`` can retrain the best configuration on the search's 50,000 training
images (keeping the weights of the epoch that was best on validation, as the trial did) or on
those plus the 10,000 validation images (no validation left, so the last epoch's weights).
Which one scores better on unseen images cannot be asked of the test split without spending it,
so this script asks the same question one level down, on the training images only:

- the search's validation images (the "outer" validation) stand in for the test split and
  are used for nothing but the final score;
- the search's training images are split again, 40,000 to train on and 10,000 "inner"
  validation images, by a fixed permutation (inner split seed 1);
- "train": train on the 40,000 and keep the epoch best on the inner validation images;
  "train+val": train on all 50,000 for the same epochs and keep the last epoch;
- both are scored on the outer validation images, for each configuration and seed (the same
  seed for both, a paired comparison).

The configurations are a study's best completed trials (``--top``), or ones given with
``--params``. It prints one line per run, then the mean paired difference with its standard
error, and a verdict: train+val is the better default only where its gain exceeds twice that
standard error.

    python -m benchmarks.train_on --study-name fashion-mnist --top 3 --seeds 3 --workers 2
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from model.data import DEFAULT_DATA_DIR, Tensors, load_searched_split, split_train_val
from model.loops import OPTIMIZERS, evaluate, flush_denormals
from tuning.results.selection import candidates
from tuning.space.hyperparameters import Hyperparameters
from tuning.study.errors import StudyError
from tuning.study.lifecycle import DEFAULT_STUDY_NAME, load_study
from tuning.study.protocol import EPOCHS, SPLIT_SEED, VAL_SIZE, derive_seed
from tuning.study.storage import Location
from tuning.training.retrain import TRAIN_ON, retrain
from tuning.workers.cores import threads_per_worker

INNER_SPLIT_SEED = 1  # the inner 40,000 / 10,000 split; the search's own split uses seed 0
MARGIN_IN_SE = 2.0  # train+val must beat train by this many standard errors to be the default


@dataclass(frozen=True)
class Run:
    """One (configuration, seed, train_on) retrain, scored on the outer validation images."""

    config: int
    seed: int
    train_on: str
    accuracy: float
    kept_epoch: int
    seconds: float


def parse_params(text: str) -> Hyperparameters:
    """``OPTIMIZER,LR,BATCH`` (e.g. ``Adam,2.4e-4,16``) as hyperparameters."""
    try:
        optimizer, lr, batch = (part.strip() for part in text.split(","))
        params = Hyperparameters(lr=float(lr), batch_size=int(batch), optimizer=optimizer)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--params wants OPTIMIZER,LR,BATCH such as Adam,2.4e-4,16, not {text!r}"
        ) from None
    if optimizer not in OPTIMIZERS or not params.lr > 0 or params.batch_size < 1:
        raise argparse.ArgumentTypeError(f"--params {text!r} cannot be trained with; the "
                                         f"optimizer is one of {', '.join(OPTIMIZERS)}")
    return params


def top_configs(location: Location, study_name: str, k: int
                ) -> tuple[list[Hyperparameters], int | None]:
    """The ``k`` best distinct configurations of a study, and its epochs per trial."""
    study = load_study(location, study_name)
    configs = [Hyperparameters(**trial.params) for trial in candidates(study, k)]
    return configs, study.user_attrs.get("epochs")


# Each worker process loads the data once (module globals, set by _start_worker).
_DATA: dict[str, Tensors] = {}


def _start_worker(data_dir: Path, val_size: int, threads: int) -> None:
    flush_denormals()
    torch.set_num_threads(threads)
    outer = load_searched_split(data_dir, val_size, SPLIT_SEED,
                                download=False)[1]
    inner = split_train_val(outer.train, val_size, INNER_SPLIT_SEED)
    _DATA.update(all_train=outer.train, inner_train=inner.train, inner_val=inner.val,
                 outer_val=outer.val)


def _run(task: tuple[int, Hyperparameters, int, str, int]) -> Run:
    index, params, seed, train_on, epochs = task
    device = torch.device("cpu")
    if train_on == "train":
        result = retrain(params, _DATA["inner_train"], _DATA["inner_val"], epochs, seed, device)
    else:
        result = retrain(params, _DATA["all_train"], None, epochs, seed, device)
    accuracy = evaluate(result.model, _DATA["outer_val"])[1]
    return Run(index, seed, train_on, accuracy, result.kept_epoch, result.seconds)


def compare(runs: Sequence[Run]) -> tuple[float, float, int]:
    """Mean paired difference train+val - train, its standard error, and the number of pairs."""
    by_key = {(r.config, r.seed, r.train_on): r.accuracy for r in runs}
    diffs = [by_key[c, s, "train+val"] - acc for (c, s, on), acc in by_key.items()
             if on == "train" and (c, s, "train+val") in by_key]
    if not diffs:
        return math.nan, math.nan, 0
    se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else math.inf
    return statistics.fmean(diffs), se, len(diffs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.train_on",
        description="Compare retraining on train (best epoch) with train+val (last epoch), "
        "scored on validation images the retrain never sees, never on the test split.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--study-name", default=DEFAULT_STUDY_NAME,
                        help="the study whose best configurations are compared")
    parser.add_argument("--storage", default=None,
                        help="its database URL (default: $FASHION_TUNE_STORAGE if set, else "
                        "sqlite:///studies/<study-name>.db)")
    parser.add_argument("--top", type=int, default=3, help="how many best configurations")
    parser.add_argument("--params", type=parse_params, action="append", default=None,
                        metavar="OPT,LR,BATCH",
                        help="compare this configuration instead of a study's (repeatable)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per configuration")
    parser.add_argument("--seed", type=int, default=0, help="derives the seeds")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs per retrain (default: the study's, else 10)")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes, each with one torch thread (1: torch's default)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--val-size", type=int, default=VAL_SIZE,
                        help="outer and inner validation images each")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.top < 1 or args.seeds < 1 or args.workers < 1:
        parser.error("--top, --seeds and --workers must be at least 1")
    epochs = args.epochs
    if args.params:
        configs = args.params
    else:
        try:
            configs, study_epochs = top_configs(
                Location.of(args.storage, args.study_name), args.study_name, args.top)
        except StudyError as exc:
            parser.error(str(exc))
        if not configs:
            parser.error(f"study {args.study_name!r} has no completed trial to compare")
        epochs = epochs or study_epochs
    epochs = epochs or EPOCHS
    seeds = [derive_seed(args.seed, k) for k in range(args.seeds)]
    tasks = [(i, params, seed, train_on, epochs)
             for i, params in enumerate(configs) for seed in seeds for train_on in TRAIN_ON]
    # The search's rule: the cores split among the processes (one: torch's own, every core).
    threads = threads_per_worker(args.workers) if args.workers > 1 else torch.get_num_threads()
    sides = " / ".join(TRAIN_ON)
    print(f"{len(configs)} configuration(s) x {len(seeds)} seed(s) x {sides}, {epochs} epochs "
          f"each; {args.workers} process(es) x {threads} torch thread(s)", flush=True)
    for i, params in enumerate(configs):
        print(f"  config {i}: {params.optimizer} lr={params.lr:.3g} batch={params.batch_size}")

    begin = time.perf_counter()
    runs: list[Run] = []
    init = (args.data_dir, args.val_size, threads)
    if args.workers == 1:
        _start_worker(*init)
        results = map(_run, tasks)
    else:
        pool = multiprocessing.get_context("spawn").Pool(args.workers, _start_worker, init)
        results = pool.imap_unordered(_run, tasks)
    for run in results:
        runs.append(run)
        print(f"[{len(runs):>2}/{len(tasks)}] config {run.config} seed {run.seed:>10} "
              f"{run.train_on:<9} outer val acc {run.accuracy:.4f} (weights of epoch "
              f"{run.kept_epoch}) {run.seconds:6.1f} s", flush=True)
    if args.workers > 1:
        pool.close()
        pool.join()

    print(f"\n{'config':<28} {'train (best epoch)':>19} {'train+val (last)':>17}")
    for i, params in enumerate(configs):
        means = [statistics.fmean(r.accuracy for r in runs if r.config == i and r.train_on == on)
                 for on in TRAIN_ON]
        label = f"{i} {params.optimizer} {params.lr:.3g} b{params.batch_size}"
        print(f"{label:<28} {means[0]:>19.4f} {means[1]:>17.4f}")
    diff, se, pairs = compare(runs)
    print(f"\ntrain+val - train: {diff * 100:+.2f} points (standard error {se * 100:.2f}, "
          f"{pairs} pairs), in {time.perf_counter() - begin:.0f} s")
    better = diff > 0 and diff > MARGIN_IN_SE * se
    print("verdict: " + ("train+val is the better retrain default here" if better else
                         f"train stays the retrain default (train+val's gain is not above "
                         f"{MARGIN_IN_SE:g} standard errors)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
