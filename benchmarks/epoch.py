"""Training throughput: the tutorial's DataLoader loop against the suite's tensor loop.

For each batch size, the tutorial's own loop (torchvision dataset + ToTensor + DataLoader) and
the suite's ``model.loops.train_epoch`` in each precision and float32 kernel it offers train a
fresh network on the same number of images, back to back, and the table shows images per
second, the ratio to the tutorial, the achieved GFLOP/s and its share of the machine's peak.
The peaks are measured here (the best rate of large oneDNN matrix products, float32 and
bf16) unless given. The first lines say which kernel and precision the suite chooses on this
machine and why. Repeats take the median. Nothing here is a pass/fail test; the targets lines
only report.

    python -m benchmarks.epoch            # full: 25,600 images per measurement, 3 repeats
    python -m benchmarks.epoch --quick    # a few minutes: 6,400 images, 1 repeat
    python -m benchmarks.epoch --threads 1 --precisions bf16   # this process on 1 thread

``--side-by-side PxT ...`` measures instead how a machine is best shared: for each layout, P
processes of T torch threads each train the suite's loop at once (they start each batch size
together, at a barrier), and the table shows one process's images/s and the sum of all P, the
figure that decides how many trials ``--workers auto`` runs side by side
(docs/decisions.md#trials-side-by-side):

    python -m benchmarks.epoch --side-by-side 1x2 1x1 2x1 --batch-sizes 16 64 256 \
        --precisions bf16
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from benchmarks.tutorial import torchvision_root, train_loop, tutorial_dataset
from model.data import DEFAULT_DATA_DIR, Tensors, load_split, locate
from model.kernels import KERNELS, cpu_name, fp32_kernel, native_bf16
from model.loops import PRECISIONS, flush_denormals, shuffle_buffer, train_epoch
from model.network import NeuralNetwork
from tuning.space.hyperparameters import BATCH_SIZES, TUTORIAL
from tuning.training.precision import choose_precision
from tuning.training.retrain import seeded_start

FULL_IMAGES, QUICK_IMAGES = 25_600, 6_400
FULL_REPEATS, QUICK_REPEATS = 3, 1
WARMUP_BATCHES = 10  # untimed steps first: allocator and thread pools warm up
TARGETS = {64: (2.0, 3.0), 256: (None, 4.0)}  # batch -> (fp32 ratio, fastest-precision ratio)
PEAK_TARGET = 0.6  # share of the peak the chosen kernel should reach at batch 256
PEAK_SIZES = (1024, 2048)  # square matrix products that measure the peak
PEAK_SECONDS = 0.5  # per size and dtype


@dataclass(frozen=True)
class Variant:
    """One column of the table: a precision, and for float32 the kernel."""

    precision: str
    kernel: str

    @property
    def label(self) -> str:
        return f"{self.precision} {self.kernel}" if self.precision == "fp32" else self.precision


def measure_peak(dtype: torch.dtype) -> float:
    """GFLOP/s of the best large square matrix product on oneDNN (``aten`` without it).

    A compute-bound product is as close to the cores' fused multiply-add peak as software
    gets; it stands for "cores x clock x FLOP per cycle" where the clock under a hypervisor
    is unknown.
    """
    best = 0.0
    onednn = torch.backends.mkldnn.is_available()
    for n in PEAK_SIZES:
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)

        def product(a: torch.Tensor = a, b: torch.Tensor = b) -> object:
            if onednn:
                return torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")
            return a @ b.t()

        product()
        runs, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < PEAK_SECONDS:
            product()
            runs += 1
        best = max(best, 2 * n**3 * runs / elapsed / 1e9)
    return best


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


def suite_rate(data: Tensors, batch_size: int, variant: Variant, seed: int) -> float:
    """Images/s of the suite's train_epoch over ``data`` (SGD, lr 1e-3, as the tutorial)."""
    model, optimizer, generator = seeded_start(TUTORIAL, seed, torch.device("cpu"))
    model.use_kernel(variant.kernel)
    precision = variant.precision
    buffer = shuffle_buffer(data)
    warm = Tensors(data.images[: WARMUP_BATCHES * batch_size],
                   data.labels[: WARMUP_BATCHES * batch_size])
    train_epoch(model, optimizer, warm, batch_size, generator, precision=precision)

    def run() -> int:
        train_epoch(model, optimizer, data, batch_size, generator, precision=precision,
                    buffer=buffer)
        return len(data)

    return _timed(run)


@dataclass(frozen=True)
class Layout:
    """``processes`` copies of the suite's loop at once, ``threads`` torch threads each."""

    processes: int
    threads: int

    @property
    def label(self) -> str:
        return f"{self.processes}x{self.threads}"


def layout(text: str) -> Layout:
    """``PxT`` (e.g. ``2x1``: two processes of one thread) as a Layout."""
    match = re.fullmatch(r"([1-9][0-9]*)x([1-9][0-9]*)", text)
    if not match:
        raise argparse.ArgumentTypeError(
            f"a layout is PROCESSESxTHREADS, e.g. 2x1, but got {text!r}")
    return Layout(int(match[1]), int(match[2]))


def _side_worker(data_dir: Path, images: int, threads: int, batch_sizes: list[int],
                 column: Variant, seed: int, barrier: object) -> list[float]:
    """One process of a layout: images/s per batch size, each started at the barrier."""
    torch.set_num_threads(threads)  # before any parallel work: the pool is made this size
    flush_denormals()
    train = load_split(locate(data_dir), "train")
    data = Tensors(train.images[:images].clone(), train.labels[:images].clone())
    rates = []
    for batch_size in batch_sizes:
        barrier.wait()  # type: ignore[attr-defined]
        rates.append(suite_rate(data, batch_size, column, seed))
    return rates


def side_by_side(args: argparse.Namespace, images: int, repeats: int) -> int:
    """Print, per batch size and layout, one process's images/s and the sum of the layout's."""
    column = variants(args.precisions, args.kernels)[-1]
    layouts: list[Layout] = args.side_by_side
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}"
          f", {cpu_name()}; suite loop in {column.label}; {images} images per process per "
          f"measurement, median of {repeats}; layouts (processes x threads): "
          f"{' '.join(x.label for x in layouts)}", flush=True)
    context = multiprocessing.get_context("spawn")  # a fresh torch per process, as a worker's
    sums: dict[tuple[int, str], list[float]] = {}
    each: dict[tuple[int, str], list[float]] = {}
    for repeat in range(repeats):
        for lay in layouts:  # layouts alternate within a repeat: back to back, same conditions
            barrier = context.Manager().Barrier(lay.processes)
            with context.Pool(lay.processes) as pool:
                results = pool.starmap(_side_worker, [
                    (args.data_dir, images, lay.threads, args.batch_sizes, column,
                     args.seed + repeat, barrier)] * lay.processes)
            for i, batch_size in enumerate(args.batch_sizes):
                rates = [r[i] for r in results]
                sums.setdefault((batch_size, lay.label), []).append(sum(rates))
                each.setdefault((batch_size, lay.label), []).append(statistics.mean(rates))
            print(f"  repeat {repeat + 1}, {lay.label}: " + ", ".join(
                f"batch {b} {sums[b, lay.label][-1]:,.0f} img/s" for b in args.batch_sizes),
                flush=True)
    base = layouts[0].label
    header = f"{'batch':>5}" + "".join(
        f" | {x.label + ' one':>10} {x.label + ' sum':>10} {'x ' + base:>7}" for x in layouts)
    print("\n" + header + "\n" + "-" * len(header))
    for batch_size in args.batch_sizes:
        first = statistics.median(sums[batch_size, base])
        row = f"{batch_size:>5}"
        for lay in layouts:
            total = statistics.median(sums[batch_size, lay.label])
            row += (f" | {statistics.median(each[batch_size, lay.label]):>10,.0f} "
                    f"{total:>10,.0f} {total / first:>6.2f}x")
        print(row)
    print(f"\n'one': images/s of one process (the mean of the layout's); 'sum': all of them "
          f"together; 'x {base}': the sum against the first layout's.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.epoch",
        description="Training images per second: the tutorial's DataLoader loop against the "
        "suite's loop in each precision and float32 kernel, per batch size, back to back.",
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
    parser.add_argument("--kernels", nargs="+", choices=KERNELS, default=None,
                        help="float32 kernels to measure (default: torch's own, and oneDNN "
                        "where this torch has it)")
    parser.add_argument("--peak-gflops", type=float, default=None,
                        help="float32 peak of this machine (cores x GHz x FLOP per cycle); "
                        "default: measured here on large matrix products")
    parser.add_argument("--bf16-peak-gflops", type=float, default=None,
                        help="bf16 peak of this machine; default: measured here")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of this process (default: torch's own, one per "
                        "core)")
    parser.add_argument("--side-by-side", type=layout, nargs="+", default=None,
                        metavar="PxT",
                        help="instead of the table: P processes of T threads at once per "
                        "layout, e.g. 1x2 1x1 2x1, with their sum (the suite's loop in the "
                        "last of --precisions)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def variants(precisions: Sequence[str], kernels: Sequence[str] | None) -> list[Variant]:
    """The table's columns: float32 on each kernel, then bf16 (autocast picks its kernel)."""
    if kernels is None:
        kernels = KERNELS if torch.backends.mkldnn.is_available() else ("aten",)
    chosen = fp32_kernel(torch.device("cpu")).value
    out = [Variant("fp32", k) for k in kernels if "fp32" in precisions]
    out += [Variant(p, chosen) for p in precisions if p != "fp32"]
    return out


def print_choices(flops: int, images: int, repeats: int, peaks: dict[str, float]) -> None:
    """The run's first lines: the machine, and what the suite chooses on it and why."""
    cpu = torch.device("cpu")
    kernel = fp32_kernel(cpu)
    precision = choose_precision("auto", cpu)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}; {images} images per measurement, "
          f"median of {repeats}; {flops / 1e6:.2f} MFLOP per training image", flush=True)
    print(f"float32 kernel chosen here: {kernel.value} ({kernel.reason})")
    print(f"precision auto chooses here: {precision.value} ({precision.reason}; "
          f"native bf16: {native_bf16(cpu)[0]})")
    print("peaks: " + ", ".join(f"{name} {gflops:.0f} GFLOP/s" for name, gflops in
                               peaks.items()), flush=True)


def measure(args: argparse.Namespace, data: Tensors, columns: list[Variant], images: int,
            repeats: int) -> dict[tuple[int, str], float]:
    """Median images/s per (batch size, column label), the tutorial's included."""
    rates: dict[tuple[int, str], float] = {}
    with torchvision_root(locate(args.data_dir)) as root:
        dataset = tutorial_dataset(root)
        for batch_size in args.batch_sizes:
            runs: dict[str, list[float]] = {"tutorial": []}
            for repeat in range(repeats):
                seed = args.seed + repeat
                runs["tutorial"].append(tutorial_rate(dataset, batch_size, images, seed))
                for column in columns:
                    runs.setdefault(column.label, []).append(
                        suite_rate(data, batch_size, column, seed))
            for name, values in runs.items():
                rates[batch_size, name] = statistics.median(values)
            print(f"  batch {batch_size}: " + ", ".join(
                f"{name} {rates[batch_size, name]:,.0f} img/s" for name in runs), flush=True)
    return rates


def print_table(args: argparse.Namespace, columns: list[Variant], rates: dict, flops: int,
                peaks: dict[str, float]) -> None:
    header = f"{'batch':>5} | {'tutorial img/s':>14}"
    for column in columns:
        header += f" | {column.label + ' img/s':>17} {'x tut':>6} {'GFLOP/s':>7} {'% peak':>6}"
    print("\n" + header + "\n" + "-" * len(header))
    for batch_size in args.batch_sizes:
        base = rates[batch_size, "tutorial"]
        row = f"{batch_size:>5} | {base:>14,.0f}"
        for column in columns:
            rate = rates[batch_size, column.label]
            gflops = rate * flops / 1e9
            row += (f" | {rate:>17,.0f} {rate / base:>5.2f}x {gflops:>7.1f} "
                    f"{100 * gflops / peaks[column.precision]:>5.0f}%")
        print(row)
    print()


def print_targets(args: argparse.Namespace, columns: list[Variant], rates: dict, flops: int,
                  peaks: dict[str, float]) -> None:
    labels = [c.label for c in columns]
    fp32 = Variant("fp32", fp32_kernel(torch.device("cpu")).value)
    for batch_size, (fp32_target, fastest_target) in TARGETS.items():
        if batch_size not in args.batch_sizes:
            continue
        base = rates[batch_size, "tutorial"]
        if fp32_target and fp32.label in labels:
            ratio = rates[batch_size, fp32.label] / base
            print(f"target fp32 at batch {batch_size}: {ratio:.2f}x the tutorial "
                  f"(target {fp32_target}x: {'met' if ratio >= fp32_target else 'missed'})")
        best = max(labels, key=lambda label: rates[batch_size, label])
        ratio = rates[batch_size, best] / base
        print(f"target fastest ({best}) at batch {batch_size}: {ratio:.2f}x the "
              f"tutorial (target {fastest_target}x: "
              f"{'met' if ratio >= fastest_target else 'missed'})")
    if 256 not in args.batch_sizes:
        return
    for column in columns:
        if column.precision == "fp32" and column != fp32:
            continue  # the share-of-peak target is the chosen kernel's
        share = rates[256, column.label] * flops / 1e9 / peaks[column.precision]
        print(f"target {column.label} at batch 256: {100 * share:.0f}% of the "
              f"{column.precision} peak (target {100 * PEAK_TARGET:.0f}%: "
              f"{'met' if share >= PEAK_TARGET else 'missed'})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1, but got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)  # before torch's pool starts
    flush_denormals()  # as the search does; the tutorial's SGD meets no denormals either way
    images = args.images or (QUICK_IMAGES if args.quick else FULL_IMAGES)
    repeats = args.repeats or (QUICK_REPEATS if args.quick else FULL_REPEATS)
    if args.side_by_side:
        return side_by_side(args, images, repeats)
    train = load_split(locate(args.data_dir), "train")
    data = Tensors(train.images[:images].clone(), train.labels[:images].clone())
    flops = train_flops_per_image(NeuralNetwork())
    columns = variants(args.precisions, args.kernels)
    peaks = {"fp32": args.peak_gflops or measure_peak(torch.float32)}
    if "bf16" in args.precisions:
        peaks["bf16"] = args.bf16_peak_gflops or measure_peak(torch.bfloat16)
    print_choices(flops, images, repeats, peaks)
    rates = measure(args, data, columns, images, repeats)
    print_table(args, columns, rates, flops, peaks)
    print_targets(args, columns, rates, flops, peaks)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
