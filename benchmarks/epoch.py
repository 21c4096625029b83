"""Training throughput: the tutorial's DataLoader loop against the suite's tensor loop.

For each batch size, the tutorial's own loop (torchvision dataset + ToTensor + DataLoader) and
the suite's ``model.loops.train_epoch`` in each precision it offers train a fresh network on
the same number of images, back to back, and the table shows images per second, the ratio to
the tutorial, the achieved GFLOP/s and its share of the machine's float32 peak. Repeats take
the median. Nothing here is a pass/fail test; the targets line only reports.

    python -m benchmarks.epoch            # full: 25,600 images per measurement, 3 repeats
    python -m benchmarks.epoch --quick    # a few minutes: 6,400 images, 1 repeat
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from benchmarks.tutorial import torchvision_root, train_loop, tutorial_dataset
from model.data import DEFAULT_DATA_DIR, Tensors, load_split, locate
from model.loops import PRECISIONS, flush_denormals, shuffle_buffer, train_epoch
from model.network import NeuralNetwork
from tuning.retrain import seeded_start
from tuning.space import BATCH_SIZES, TUTORIAL

# This project's CI machine: 2 vCPUs of an AMD EPYC (Zen 3) at 2.45 GHz, each with two 256-bit
# FMA pipes (2 x 8 lanes x 2 FLOP = 32 float32 FLOP per cycle): 2 x 2.45 x 32 = 157 GFLOP/s.
# Pass --peak-gflops for another machine (cores x GHz x FLOP/cycle).
DEFAULT_PEAK_GFLOPS = 157.0
FULL_IMAGES, QUICK_IMAGES = 25_600, 6_400
FULL_REPEATS, QUICK_REPEATS = 3, 1
WARMUP_BATCHES = 10  # untimed steps first: allocator and thread pools warm up
TARGETS = {64: (2.0, 3.0), 256: (None, 4.0)}  # batch -> (fp32 ratio, fastest-precision ratio)


def train_flops_per_image(model: nn.Module) -> int:
    """Forward + backward FLOPs of one training image: 6 per weight of each linear layer."""
    return sum(6 * m.in_features * m.out_features for m in model.modules()
               if isinstance(m, nn.Linear))


def _timed(run: Callable[[], int]) -> float:
    """Images per second of ``run`` (which returns how many images it trained on)."""
    start = time.perf_counter()
    images = run()
    return images / (time.perf_counter() - start)


def tutorial_rate(dataset, batch_size: int, images: int, seed: int) -> float:
    """Images/s of the tutorial's train_loop with its SGD, lr 1e-3."""
    torch.manual_seed(seed)
    model = NeuralNetwork()
    optimizer = torch.optim.SGD(model.parameters(), lr=TUTORIAL.lr)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True)
    loss_fn = nn.CrossEntropyLoss()
    train_loop(loader, model, loss_fn, optimizer, max_batches=WARMUP_BATCHES)
    batches = math.ceil(images / batch_size)
    return _timed(lambda: train_loop(loader, model, loss_fn, optimizer, max_batches=batches))


def suite_rate(data: Tensors, batch_size: int, precision: str, seed: int) -> float:
    """Images/s of the suite's train_epoch over ``data`` (SGD, lr 1e-3, as the tutorial)."""
    model, optimizer, generator = seeded_start(TUTORIAL, seed, torch.device("cpu"))
    buffer = shuffle_buffer(data)
    warm = Tensors(data.images[: WARMUP_BATCHES * batch_size],
                   data.labels[: WARMUP_BATCHES * batch_size])
    train_epoch(model, optimizer, warm, batch_size, generator, precision=precision)

    def run() -> int:
        train_epoch(model, optimizer, data, batch_size, generator, precision=precision,
                    buffer=buffer)
        return len(data)

    return _timed(run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.epoch",
        description="Training images per second: the tutorial's DataLoader loop against the "
        "suite's loop in each precision, per batch size, measured back to back.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_IMAGES} images per measurement and {QUICK_REPEATS} repeat")
    parser.add_argument("--images", type=int, default=None,
                        help=f"images per measurement (default {FULL_IMAGES})")
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"measurements per cell, median taken (default {FULL_REPEATS})")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(BATCH_SIZES))
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    parser.add_argument("--peak-gflops", type=float, default=DEFAULT_PEAK_GFLOPS,
                        help="float32 peak of this machine, for the share-of-peak column "
                        "(default: this project's 2-core AMD EPYC Zen 3 at 2.45 GHz)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    flush_denormals()  # as the search does; the tutorial's SGD meets no denormals either way
    images = args.images or (QUICK_IMAGES if args.quick else FULL_IMAGES)
    repeats = args.repeats or (QUICK_REPEATS if args.quick else FULL_REPEATS)
    source = locate(args.data_dir)
    train = load_split(source, "train")
    data = Tensors(train.images[:images].clone(), train.labels[:images].clone())
    flops = train_flops_per_image(NeuralNetwork())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}; {images} images per measurement, "
          f"median of {repeats}; {flops / 1e6:.2f} MFLOP per training image; float32 peak "
          f"{args.peak_gflops:.0f} GFLOP/s", flush=True)
    rates: dict[tuple[int, str], float] = {}
    with torchvision_root(source) as root:
        dataset = tutorial_dataset(root)
        for batch_size in args.batch_sizes:
            runs: dict[str, list[float]] = {"tutorial": []}
            for repeat in range(repeats):
                seed = args.seed + repeat
                runs["tutorial"].append(tutorial_rate(dataset, batch_size, images, seed))
                for precision in args.precisions:
                    runs.setdefault(precision, []).append(
                        suite_rate(data, batch_size, precision, seed))
            for name, values in runs.items():
                rates[batch_size, name] = statistics.median(values)
            print(f"  batch {batch_size}: " + ", ".join(
                f"{name} {rates[batch_size, name]:,.0f} img/s" for name in runs), flush=True)

    header = f"{'batch':>5} | {'tutorial img/s':>14}"
    for precision in args.precisions:
        header += f" | {precision + ' img/s':>11} {'x tut':>6} {'GFLOP/s':>7} {'% peak':>6}"
    print("\n" + header + "\n" + "-" * len(header))
    for batch_size in args.batch_sizes:
        base = rates[batch_size, "tutorial"]
        row = f"{batch_size:>5} | {base:>14,.0f}"
        for precision in args.precisions:
            rate = rates[batch_size, precision]
            gflops = rate * flops / 1e9
            row += (f" | {rate:>11,.0f} {rate / base:>5.2f}x {gflops:>7.1f} "
                    f"{100 * gflops / args.peak_gflops:>5.0f}%")
        print(row)
    print()
    for batch_size, (fp32_target, fastest_target) in TARGETS.items():
        if batch_size not in args.batch_sizes:
            continue
        base = rates[batch_size, "tutorial"]
        best = max(args.precisions, key=lambda p: rates[batch_size, p])
        if fp32_target and "fp32" in args.precisions:
            ratio = rates[batch_size, "fp32"] / base
            print(f"target fp32 at batch {batch_size}: {ratio:.2f}x the tutorial "
                  f"(target {fp32_target}x: {'met' if ratio >= fp32_target else 'missed'})")
        ratio = rates[batch_size, best] / base
        print(f"target fastest precision ({best}) at batch {batch_size}: {ratio:.2f}x the "
              f"tutorial (target {fastest_target}x: "
              f"{'met' if ratio >= fastest_target else 'missed'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
