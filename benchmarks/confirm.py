"""Seeds one at a time against seeds stacked into one model: what confirm's runs cost.

Samples configurations from the search space (Optuna's random sampler, seeded, plus the
tutorial's), and for each one trains ``--seeds`` fresh seeds for ``--epochs`` on the
search's split, first one seed at a time (``tuning.training.retrain.retrain``), then all
seeds as one stacked model (``tuning.training.retrain.retrain_seeds``), back to back in this
process, in each precision asked for. It prints both wall times, their ratio, and how far the
stacked runs' validation accuracies lie from the separate runs' (float rounding only, so within
seed noise). ``tuning.confirm --stack-seeds auto`` stacks where this shows a gain.

    python -m benchmarks.confirm                       # 4 configurations x 3 seeds x 1 epoch
    python -m benchmarks.confirm --quick               # 2 configurations, 10,000 images
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from benchmarks.precision import sample_configs, searched_split
from model.data import DEFAULT_DATA_DIR, TrainValSplit
from model.kernels import fp32_kernel
from model.loops import PRECISIONS, flush_denormals, warm_up_optimizers
from tuning.space.hyperparameters import TUTORIAL, Hyperparameters, describe
from tuning.study.protocol import VAL_SIZE
from tuning.training.retrain import retrain, retrain_seeds

CPU = torch.device("cpu")


def one_at_a_time(split: TrainValSplit, params: Hyperparameters, epochs: int,
                  seeds: list[int], precision: str) -> tuple[float, list[float]]:
    """(seconds, last-epoch validation accuracy per seed), one retrain per seed."""
    start, accuracies = time.perf_counter(), []
    for seed in seeds:
        history = retrain(params, split.train, split.val, epochs, seed, CPU,
                          precision=precision).history
        accuracies.append(history["val_accuracy"][-1])
    return time.perf_counter() - start, accuracies


def stacked(split: TrainValSplit, params: Hyperparameters, epochs: int, seeds: list[int],
            precision: str) -> tuple[float, list[float]]:
    """(seconds, last-epoch validation accuracy per seed), all seeds as one model."""
    start = time.perf_counter()
    runs = retrain_seeds(params, split.train, split.val, epochs, seeds, CPU, precision)
    return time.perf_counter() - start, [r.history["val_accuracy"][-1] for r in runs]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.confirm",
        description="Train fresh seeds of sampled configurations one at a time and stacked "
        "into one model, back to back; print both times, the ratio and the accuracy gaps.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true",
                        help="2 configurations, 10,000 training images")
    parser.add_argument("--configs", type=int, default=4,
                        help="configurations: the tutorial's, then random ones")
    parser.add_argument("--seeds", type=int, default=3, help="fresh seeds per configuration")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS,
                        default=list(PRECISIONS))
    parser.add_argument("--train-images", type=int, default=None,
                        help="train on only this many of the training images (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--val-size", type=int, default=VAL_SIZE)
    args = parser.parse_args(argv)
    flush_denormals()  # as the tools do
    warm_up_optimizers()
    n = 2 if args.quick else args.configs
    limit = args.train_images or (10_000 if args.quick else None)
    split = searched_split(args.data_dir, args.val_size, limit)
    configs = [TUTORIAL, *sample_configs(n - 1, args.seed)][:n]
    seeds = [1000 + k for k in range(args.seeds)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, float32 kernel "
          f"{fp32_kernel(CPU).value}; {len(configs)} configurations x {len(seeds)} seeds x "
          f"{args.epochs} epoch(s), {len(split.train)} training images", flush=True)
    for precision in args.precisions:
        ratios, gaps, total = [], [], [0.0, 0.0]
        for params in configs:
            alone_s, alone = one_at_a_time(split, params, args.epochs, seeds, precision)
            stack_s, together = stacked(split, params, args.epochs, seeds, precision)
            gap = max(abs(a - b) for a, b in zip(alone, together, strict=True))
            ratios.append(alone_s / stack_s)
            gaps.append(gap)
            total[0] += alone_s
            total[1] += stack_s
            print(f"{precision} {describe(params.as_params()):<32} one at a time "
                  f"{alone_s:6.1f} s | stacked {stack_s:6.1f} s | {alone_s / stack_s:.2f}x | "
                  f"largest accuracy gap {gap:.4f}", flush=True)
        print(f"{precision}: all configurations {total[0]:.1f} s one at a time, {total[1]:.1f} s "
              f"stacked -> {total[0] / total[1]:.2f}x (median per configuration "
              f"{statistics.median(ratios):.2f}x); largest accuracy gap {max(gaps):.4f}\n",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
