"""Does bf16 rank configurations like float32, and is it faster here? The evidence for --precision.

Samples configurations from the search space (Optuna's random sampler, seeded), trains each one
in float32 and in bf16 autocast from the same seed for the same epochs, back to back, and
prints both validation accuracies, both times, the Spearman rank correlation of the accuracies
and the median speedup. bf16 may be the search default only where the correlation is at least
0.9 and the speedup is real on the hardware at hand (docs/performance.md).

    python -m benchmarks.precision                 # 16 configurations x 1 epoch
    python -m benchmarks.precision --quick         # 4 configurations x 1 epoch of 10,000 images
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import optuna
import torch
from scipy.stats import spearmanr

from model.data import DEFAULT_DATA_DIR, Tensors, TrainValSplit, load_searched_split
from model.loops import evaluate, flush_denormals, run_epochs
from tuning.space.file import load_space
from tuning.space.hyperparameters import Hyperparameters, describe
from tuning.study.protocol import SPLIT_SEED, VAL_SIZE
from tuning.training.retrain import recipe, seeded_start

RANK_THRESHOLD = 0.9  # the Spearman correlation bf16 must reach to be the search default


def searched_split(data_dir: Path, val_size: int, train_images: int | None) -> TrainValSplit:
    """The search's split, its training part cut to the first ``train_images`` (None: all)."""
    split = load_searched_split(data_dir, val_size, SPLIT_SEED)[1]
    if not train_images:
        return split
    train = Tensors(split.train.images[:train_images], split.train.labels[:train_images])
    return TrainValSplit(train, split.val, split.seed)


def sample_configs(n: int, seed: int, space: str = "tutorial") -> list[Hyperparameters]:
    """``n`` points of a search space (``--space``) from a seeded random sampler."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    sampled = load_space(space)
    configs = []
    for _ in range(n):
        trial = study.ask()
        configs.append(Hyperparameters.from_params(sampled.suggest(trial)))
        study.tell(trial, 0.0)
    return configs


def train_once(split: TrainValSplit, params: Hyperparameters, epochs: int, precision: str,
               seed: int) -> tuple[float, float]:
    """(validation accuracy after ``epochs``, seconds of training) in ``precision``."""
    model, optimizer, generator = seeded_start(params, seed, torch.device("cpu"))
    start = time.perf_counter()
    *_, last = run_epochs(model, optimizer, split.train, None, epochs=epochs,
                          generator=generator, precision=precision,
                          **recipe(params, len(split.train), epochs))
    seconds = time.perf_counter() - start
    # Scored in float32 either way: the question is how good the trained weights are.
    return evaluate(last.scored or model, split.val)[1], seconds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.precision",
        description="Train sampled configurations in fp32 and bf16; print the Spearman rank "
        "correlation of their validation accuracies and the speedup.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true",
                        help="4 configurations x 1 epoch of 10,000 training images")
    parser.add_argument("--train-images", type=int, default=None,
                        help="train on only this many of the training images (default: all)")
    parser.add_argument("--configs", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--space", default="tutorial",
                        help="the search space to sample: a built-in one or a file")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--val-size", type=int, default=VAL_SIZE)
    args = parser.parse_args(argv)
    flush_denormals()  # as the search does
    n, epochs = (4, 1) if args.quick else (args.configs, args.epochs)
    limit = args.train_images or (10_000 if args.quick else None)

    split = searched_split(args.data_dir, args.val_size, limit)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}; {n} configurations x {epochs} epochs, "
          f"{len(split.train)} training images", flush=True)
    rows = []
    for i, params in enumerate(sample_configs(n, args.seed, args.space)):
        fp32_acc, fp32_s = train_once(split, params, epochs, "fp32", args.seed + i)
        bf16_acc, bf16_s = train_once(split, params, epochs, "bf16", args.seed + i)
        rows.append((params, fp32_acc, bf16_acc, fp32_s, bf16_s))
        extra = {k: v for k, v in params.as_params().items()
                 if k not in ("lr", "batch_size", "optimizer")}
        print(f"{i:>2} lr={params.lr:.2e} batch={params.batch_size:>3} {params.optimizer:<7} "
              f"fp32 {fp32_acc:.4f} in {fp32_s:6.1f} s | bf16 {bf16_acc:.4f} in {bf16_s:6.1f} s "
              f"| bf16 speedup {fp32_s / bf16_s:.2f}x" + (f" | {describe(extra)}" if extra else ""),
              flush=True)
    rho = spearmanr([r[1] for r in rows], [r[2] for r in rows]).statistic
    top_fp32 = max(range(len(rows)), key=lambda i: rows[i][1])
    top_bf16 = max(range(len(rows)), key=lambda i: rows[i][2])
    # Noise: the standard error of the difference of two accuracies on these images.
    p = rows[top_fp32][1]
    noise = math.sqrt(2 * p * (1 - p) / len(split.val))
    top_gap = rows[top_fp32][1] - rows[top_bf16][1]
    print(f"\ntop by fp32: configuration {top_fp32} (fp32 {rows[top_fp32][1]:.4f}); top by "
          f"bf16: configuration {top_bf16}, whose fp32 accuracy is {rows[top_bf16][1]:.4f}: "
          f"{top_gap:.4f} below the fp32 top ({'within' if top_gap <= noise else 'beyond'} "
          f"the noise of {noise:.4f}, one standard error of a difference on "
          f"{len(split.val)} images)")
    speedup = statistics.median(r[3] / r[4] for r in rows)
    gap = statistics.median(abs(r[1] - r[2]) for r in rows)
    print(f"Spearman rank correlation of validation accuracies: {rho:.3f} "
          f"(threshold {RANK_THRESHOLD})")
    print(f"median bf16 speedup over fp32: {speedup:.2f}x; median |accuracy gap|: {gap:.4f}")
    verdict = rho >= RANK_THRESHOLD and top_gap <= noise and speedup > 1.0
    print("verdict: " + ("bf16 ranks configurations as fp32 does and is faster here, as "
                         "--precision auto assumes where bf16 is native" if verdict else
                         "bf16 does not pay here (rank, top or speed): fp32 is the choice"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
