"""Record learning curves of a designed set of configurations: a table to replay searches on.

Trains each configuration of a grid over the tutorial space (learning rates on a log grid x
batch sizes x optimizers; a second seed for every ``--second-seed-every``-th configuration, to
measure seed noise) for ``--epochs`` on the search's own split, the way a search trial trains
(``tuning.training.retrain.retrain``: same seeded start, same loop, the suite's precision and
kernel),
and appends one row per epoch to a CSV: validation accuracy and loss, training loss and the
epoch's seconds. The file's header lines (``#``) name the machine, torch, the precision and
the command, so a simulation charges real costs and says whose. A rerun resumes: configurations
already in the file are skipped, and each configuration's rows are appended at once when it
ends, so an interruption loses at most the ones in flight.

A space other than the tutorial's (``--space extended``, or a space file) has too many knobs
for a grid: ``--configs`` configurations are drawn from it by Optuna's random sampler from
``--sample-seed`` (the same draws every run, so it resumes too), and the table names every
knob of each, in ``benchmarks/curves/SPACE.csv``.

    python -m benchmarks.curves                       # 16 lrs x 5 batch sizes x 3 optimizers
    python -m benchmarks.curves --space extended --configs 60 --workers 2
    python -m benchmarks.curves --quick               # 4 lrs x 2 batch sizes x 3, 2 epochs
    python -m benchmarks.curves --workers 2           # two processes, the cores split between them
"""

from __future__ import annotations

import argparse
import csv
import math
import multiprocessing
import shlex
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import optuna
import torch

from benchmarks.epoch import tutorial_rate
from benchmarks.tutorial import torchvision_root, tutorial_dataset
from model.data import DEFAULT_DATA_DIR, TrainValSplit, load_searched_split, locate
from model.kernels import cpu_name, fp32_kernel
from model.loops import flush_denormals, warm_up_optimizers
from tuning.space.file import Space, SpaceError, load_space
from tuning.space.hyperparameters import (
    BATCH_SIZES,
    LR_HIGH,
    LR_LOW,
    TUTORIAL_OPTIMIZERS,
    Hyperparameters,
)
from tuning.study.protocol import SPLIT_SEED, VAL_SIZE
from tuning.training.precision import choose_precision
from tuning.training.retrain import Diverged, retrain
from tuning.workers.cores import threads_per_worker

DEFAULT_OUT = Path("benchmarks/curves/tutorial.csv")
COLUMNS = ("lr", "batch_size", "optimizer", "seed", "epoch", "val_accuracy", "val_loss",
           "train_loss", "seconds")
FIRST_SEED, SECOND_SEED = 1, 2


@dataclass(frozen=True)
class Config:
    """One configuration and seed: a grid point of the tutorial space, or the ``index``-th
    configuration sampled from another space."""

    params: Hyperparameters
    seed: int
    index: int = -1  # -1: a grid point

    @property
    def key(self) -> tuple[object, ...]:
        if self.index >= 0:
            return (self.index, self.seed)
        p = self.params
        return (f"{p.lr:.6g}", p.batch_size, p.optimizer, self.seed)

    def row(self) -> dict[str, object]:
        """The columns that name the configuration in the table."""
        if self.index >= 0:
            return {"config": self.index} | asdict(self.params) | {"seed": self.seed}
        p = self.params
        return {"lr": p.lr, "batch_size": p.batch_size, "optimizer": p.optimizer,
                "seed": self.seed}


def lr_grid(n: int, low: float = LR_LOW, high: float = LR_HIGH) -> list[float]:
    """``n`` learning rates evenly spaced in log10 from ``low`` to ``high`` (6 digits)."""
    if n == 1:
        return [math.sqrt(low * high)]
    step = (math.log10(high) - math.log10(low)) / (n - 1)
    return [float(f"{10 ** (math.log10(low) + i * step):.6g}") for i in range(n)]


def grid(lrs: int, batch_sizes: Sequence[int], optimizers: Sequence[str],
         second_seed_every: int) -> list[Config]:
    """The designed configurations, each with seed 1, and every k-th also with seed 2."""
    configs = [Config(Hyperparameters(lr, b, o), FIRST_SEED) for o in optimizers
               for b in batch_sizes for lr in lr_grid(lrs)]
    return configs + _second_seeds(configs, second_seed_every)


def sampled(space: Space, n: int, sample_seed: int, second_seed_every: int) -> list[Config]:
    """``n`` configurations of ``space`` drawn by Optuna's random sampler from ``sample_seed``
    (the same draws on every run, so a rerun resumes), each with seed 1, every k-th also with
    seed 2."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=sample_seed))
    configs = []
    for index in range(n):
        trial = study.ask()
        configs.append(Config(Hyperparameters.from_params(space.suggest(trial)), FIRST_SEED,
                              index))
        study.tell(trial, 0.0)
    return configs + _second_seeds(configs, second_seed_every)


def _second_seeds(configs: list[Config], every: int) -> list[Config]:
    return [replace(c, seed=SECOND_SEED) for i, c in enumerate(configs)
            if every and i % every == 0]


def columns(grid: bool) -> tuple[str, ...]:
    """The table's columns: a grid names lr, batch size and optimizer, a sample every knob."""
    if grid:
        return COLUMNS
    return ("config", *(f.name for f in fields(Hyperparameters)), *COLUMNS[3:])


def done_keys(path: Path) -> set[tuple[object, ...]]:
    """The configurations the table already holds (keys as ``Config.key``)."""
    if not path.exists():
        return set()
    rows = csv.DictReader(line for line in path.open() if not line.startswith("#"))
    return {(int(r["config"]), int(r["seed"])) if "config" in r else
            (f"{float(r['lr']):.6g}", int(r["batch_size"]), r["optimizer"], int(r["seed"]))
            for r in rows}


TUTORIAL_IMAGES = 6_400  # images per batch size to time the tutorial's loop on


def tutorial_rates(args: argparse.Namespace) -> str:
    """The tutorial loop's images per second per batch size on this machine, for the naive
    search a simulation charges (``benchmarks.simulate``)."""
    source = locate(args.data_dir, download=False)
    with torchvision_root(source) as root:
        dataset = tutorial_dataset(root)
        rates = {b: tutorial_rate(dataset, b, TUTORIAL_IMAGES, 0) for b in args.batch_sizes}
    return " ".join(f"{b}={rate:.0f}" for b, rate in rates.items())


def header(args: argparse.Namespace, precision: str, argv: Sequence[str], space: Space | None
           ) -> list[str]:
    cpu = torch.device("cpu")
    # As record() sets them: the search's rule (tuning.workers.cores.threads_per_worker).
    threads = torch.get_num_threads() if args.workers == 1 else threads_per_worker(args.workers)
    what = ([f"# space: {space.name}, {args.configs} configurations drawn by Optuna's random "
             f"sampler (seed {args.sample_seed})"] if space else [])
    return [*what, f"# tutorial img/s: {tutorial_rates(args)}",
            f"# machine: {cpu_name()}, {args.workers} process(es) x {threads} torch "
            f"thread(s), CPU capability "
            f"{torch.backends.cpu.get_cpu_capability()}, float32 kernel {fp32_kernel(cpu).value}",
            f"# torch {torch.__version__}; precision {precision}; {args.epochs} epochs; split "
            f"val_size {args.val_size}, split_seed {SPLIT_SEED}",
            "# command: python -m benchmarks.curves " + shlex.join(argv)]


_WORKER: dict[str, object] = {}


def _start(data_dir: Path, val_size: int, threads: int, precision: str) -> None:
    flush_denormals()
    torch.set_num_threads(threads)
    _WORKER.update(split=load_searched_split(data_dir, val_size, SPLIT_SEED,
                                             download=False)[1], precision=precision)
    warm_up_optimizers()


def _record(job: tuple[Config, int]) -> list[dict[str, object]]:
    config, epochs = job
    split = _WORKER["split"]
    assert isinstance(split, TrainValSplit)
    try:
        history = retrain(config.params, split.train, split.val, epochs, config.seed,
                          torch.device("cpu"), precision=str(_WORKER["precision"])).history
    except Diverged as exc:  # a diverging run is part of the landscape: keep what it did
        history = exc.history
    return [config.row() | {"epoch": e + 1, "val_accuracy": history["val_accuracy"][e],
                              "val_loss": history["val_loss"][e],
                              "train_loss": history["train_loss"][e],
                              "seconds": history["epoch_seconds"][e]}
            for e in range(len(history["val_accuracy"]))]


def record(todo: list[Config], args: argparse.Namespace, precision: str
           ) -> Iterator[list[dict[str, object]]]:
    """Each configuration's rows as it ends, in this process or ``--workers`` processes."""
    jobs = [(config, args.epochs) for config in todo]
    if args.workers == 1:
        _start(args.data_dir, args.val_size, torch.get_num_threads(), precision)
        yield from map(_record, jobs)
        return
    init = (args.data_dir, args.val_size, threads_per_worker(args.workers), precision)
    with multiprocessing.get_context("spawn").Pool(args.workers, _start, init) as pool:
        yield from pool.imap_unordered(_record, jobs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.curves", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="4 learning rates x batch sizes 64 and 256 x 3 optimizers, "
                        "2 epochs")
    parser.add_argument("--space", default="tutorial", metavar="NAME|PATH",
                        help="the tutorial space is recorded on a grid; any other space (a "
                        "built-in name or a TOML file, as the search's --space) by --configs "
                        "configurations drawn at random")
    parser.add_argument("--configs", type=int, default=60,
                        help="configurations drawn from a space other than the tutorial's")
    parser.add_argument("--sample-seed", type=int, default=0,
                        help="seed of the draws (keep it to resume a table)")
    parser.add_argument("--lrs", type=int, default=16, help="learning rates on the log grid")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(BATCH_SIZES))
    parser.add_argument("--optimizers", nargs="+", default=list(TUTORIAL_OPTIMIZERS))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--second-seed-every", type=int, default=4,
                        help="every k-th configuration also runs from a second seed (0: none)")
    parser.add_argument("--precision", default="auto", help="as the search's --precision")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None,
                        help=f"the table (default: {DEFAULT_OUT.parent}/SPACE.csv)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--val-size", type=int, default=VAL_SIZE)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.quick:
        args.lrs, args.batch_sizes, args.epochs = 4, [64, 256], 2
    precision = choose_precision(args.precision, torch.device("cpu")).value
    try:
        space = load_space(args.space)
    except SpaceError as exc:  # an unknown name or a bad file: one line says which
        build_parser().error(str(exc))
    args.out = args.out or DEFAULT_OUT.with_name(f"{space.name}.csv")
    on_grid = args.space == "tutorial"  # the built-in one; a file of that name is sampled
    if on_grid:
        configs = grid(args.lrs, args.batch_sizes, args.optimizers, args.second_seed_every)
    else:
        configs = sampled(space, args.configs, args.sample_seed, args.second_seed_every)
    done = done_keys(args.out)
    todo = [c for c in configs if c.key not in done]
    print(f"{len(configs)} configurations x {args.epochs} epochs, {len(configs) - len(todo)} "
          f"already in {args.out}; {len(todo)} to record in {precision}, {args.workers} "
          "process(es).", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not args.out.exists():
        lines = header(args, precision, argv, None if on_grid else space)
        args.out.write_text("\n".join([*lines, ",".join(columns(on_grid))]) + "\n")
    start = time.perf_counter()
    for count, rows in enumerate(record(todo, args, precision), start=1):
        with args.out.open("a", newline="") as file:
            csv.DictWriter(file, columns(on_grid)).writerows(rows)
        last = rows[-1] if rows else {}
        what = f"config {last['config']} " if "config" in last else ""
        print(f"[{count}/{len(todo)}] {what}{last.get('optimizer')} lr {last.get('lr')} batch "
              f"{last.get('batch_size')} seed {last.get('seed')}: val acc "
              f"{last.get('val_accuracy', float('nan')):.4f} after {len(rows)} epochs "
              f"({time.perf_counter() - start:.0f} s so far)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
