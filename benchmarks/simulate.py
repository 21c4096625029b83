"""Replay search strategies on a recorded curve table: hundreds of searches in minutes.

Each simulated search is a real Optuna study (in memory) with a real sampler and pruner, asked
and told as ``tuning.search`` does, with 1..N workers running trials side by side
(asynchronously: each worker asks for its next trial the moment its last one ends). A trial's
per-epoch validation accuracy comes from the table (``benchmarks.landscape``: interpolated in
log10 lr, plus the recorded seed noise as a per-trial offset), and each epoch is charged its
recorded seconds, so simulated time is real time on the recording machine. The naive search
(random sampler, no pruning) is charged the tutorial loop's time per epoch instead, from the
images per second the table's header records for it.

For each strategy it prints, over ``--seeds`` searches: the median and quartiles of the minutes
to 88% and 89% validation accuracy, the best value at 5, 15 and 60 minutes, and the regret of
the final choice (the best recorded accuracy minus the noise-free accuracy of the configuration
the search would pick).

    python -m benchmarks.simulate --table benchmarks/curves/tutorial.csv
    python -m benchmarks.simulate --strategies naive suite tpe+median:startup=10,warmup=2
"""

from __future__ import annotations

import argparse
import heapq
import multiprocessing
import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import optuna
import pandas as pd

from benchmarks.landscape import Landscape, holdout_error
from tuning.space import BATCH_SIZES, TUTORIAL, TUTORIAL_OPTIMIZERS, suggest
from tuning.study import make_pruner, make_sampler

TARGETS = (0.88, 0.89)
BUDGETS_MIN = (5, 15, 60)
DEFAULT_TABLE = Path("benchmarks/curves/tutorial.csv")
TRAIN_IMAGES = 50_000


@dataclass
class Strategy:
    """A sampler and pruner (with settings), and how an epoch is charged."""

    name: str
    sampler: Callable[[int], optuna.samplers.BaseSampler]
    pruner: Callable[[], optuna.pruners.BasePruner]
    naive: bool = False  # charged the tutorial loop's time; no tutorial baseline trial


def _options(text: str) -> dict[str, float]:
    return {k: float(v) for k, v in (part.split("=") for part in text.split(",") if part)}


def strategy(spec: str, epochs: int) -> Strategy:
    """``naive``, ``suite`` (the search's defaults), or ``SAMPLER[:k=v,..]+PRUNER[:k=v,..]``."""
    if spec == "naive":
        return Strategy(spec, lambda s: optuna.samplers.RandomSampler(seed=s),
                        optuna.pruners.NopPruner, naive=True)
    if spec == "suite":
        return Strategy(spec, lambda s: make_sampler("tpe", s), lambda: make_pruner("median",
                                                                                   epochs))
    match = re.fullmatch(r"(\w+)(?::([\w=.,]+))?\+([\w-]+)(?::([\w=.,]+))?", spec)
    if not match:
        raise ValueError(f"strategy {spec!r}: write naive, suite, or SAMPLER[:k=v]+PRUNER[:k=v]")
    s_name, s_opts, p_name, p_opts = match.groups()
    so, po = _options(s_opts or ""), _options(p_opts or "")
    samplers = {"tpe": lambda seed: optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=int(so.get("startup", 10))),
        "random": lambda seed: optuna.samplers.RandomSampler(seed=seed)}
    pruners = {
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=int(po.get("startup", 5)),
                                                      n_warmup_steps=int(po.get("warmup", 0))),
        "successive-halving": lambda: optuna.pruners.SuccessiveHalvingPruner(
            min_resource=1, reduction_factor=int(po.get("rf", 3))),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=epochs, reduction_factor=int(po.get("rf", 3))),
        "none": optuna.pruners.NopPruner}
    if s_name not in samplers or p_name not in pruners:
        raise ValueError(f"strategy {spec!r}: samplers {', '.join(samplers)}; pruners "
                         f"{', '.join(pruners)}")
    return Strategy(spec, samplers[s_name], pruners[p_name])


@dataclass
class Search:
    """What one simulated search did: (minute, accuracy) per reported epoch, and its pick."""

    trace: list[tuple[float, float]] = field(default_factory=list)
    regret: float = float("nan")

    def minutes_to(self, target: float) -> float:
        return next((t for t, acc in self.trace if acc >= target), float("inf"))

    def best_at(self, minutes: float) -> float:
        return max((acc for t, acc in self.trace if t <= minutes), default=float("nan"))


def run(land: Landscape, plan: Strategy, seed: int, *, workers: int, budget_min: float,
        tutorial_rate: dict[int, float]) -> Search:
    """One simulated search of ``budget_min`` minutes."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=plan.sampler(seed),
                                pruner=plan.pruner())
    if not plan.naive:
        study.enqueue_trial(TUTORIAL.as_params())
    rng, out, true_value = np.random.default_rng(seed), Search(), {}
    events: list[tuple[float, int, int]] = []  # (seconds, order, trial number)
    running: dict[int, tuple[optuna.Trial, np.ndarray, np.ndarray, int]] = {}

    def start(now: float) -> None:
        trial = study.ask()
        params = suggest(trial)
        acc, sec = land.curve(params.lr, params.batch_size, params.optimizer)
        true_value[trial.number] = float(np.max(acc))
        noisy = np.clip(acc + rng.normal(0.0, land.noise), 0.0, 1.0)
        if plan.naive:
            sec = np.full_like(sec, TRAIN_IMAGES / tutorial_rate[params.batch_size])
        running[trial.number] = (trial, noisy, sec, 0)
        heapq.heappush(events, (now + float(sec[0]), trial.number, trial.number))

    for _ in range(workers):
        start(0.0)
    budget_s = budget_min * 60
    while events:
        now, _, number = heapq.heappop(events)
        if now > budget_s:
            break
        trial, acc, sec, epoch = running[number]
        trial.report(float(acc[epoch]), epoch + 1)
        out.trace.append((now / 60, float(acc[epoch])))
        if trial.should_prune():
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        elif epoch + 1 == len(acc):
            study.tell(trial, float(np.max(acc)))
        else:
            running[number] = (trial, acc, sec, epoch + 1)
            heapq.heappush(events, (now + float(sec[epoch + 1]), number, number))
            continue
        start(now)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    if complete:
        chosen = max(complete, key=lambda t: t.value or 0.0)
        out.regret = land.best() - true_value[chosen.number]
    return out


_POOL: dict[str, Callable[[int], Search]] = {}  # a pool process's run, seed -> search


def _bind(land: Landscape, plan: Strategy, args: argparse.Namespace) -> Callable[[int], Search]:
    """``run`` of one strategy with everything but the seed fixed."""
    return partial(run, land, plan, workers=args.workers, budget_min=args.budget_min,
                   tutorial_rate=tutorial_rates(land.header))


def _start(args: argparse.Namespace, spec: str, epochs: int) -> None:
    land = Landscape.read(args.table)
    _POOL["run"] = _bind(land, strategy(spec, epochs), args)


def _one(seed: int) -> Search:
    return _POOL["run"](seed)


def searches(args: argparse.Namespace, land: Landscape, spec: str, plan: Strategy
             ) -> list[Search]:
    """``args.seeds`` simulated searches of one strategy, over ``args.processes`` processes."""
    if args.processes == 1:
        return list(map(_bind(land, plan, args), range(args.seeds)))
    init = (args, spec, land.epochs)
    with multiprocessing.get_context("spawn").Pool(args.processes, _start, init) as pool:
        return pool.map(_one, range(args.seeds))


def tutorial_rates(header: Sequence[str]) -> dict[int, float]:
    """The tutorial loop's images per second by batch size, from the table's header."""
    for line in header:
        if line.startswith("# tutorial img/s:"):
            return {int(k): float(v) for k, v in re.findall(r"(\d+)=([\d.]+)", line)}
    return {}


def _quartiles(values: list[float]) -> str:
    finite = [v for v in values if v != float("inf")]
    if len(finite) < len(values) / 2:
        return f"never in {len(values) - len(finite)}/{len(values)}"
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return f"{q[1]:5.2f} [{q[0]:.2f}-{q[2]:.2f}]" + (
        f" ({len(values) - len(finite)} never)" if len(finite) < len(values) else "")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.simulate",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--table", type=Path, default=DEFAULT_TABLE)
    parser.add_argument("--strategies", nargs="+", default=["naive", "suite"])
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--workers", type=int, default=1, help="trials side by side")
    parser.add_argument("--budget-min", type=float, default=max(BUDGETS_MIN))
    parser.add_argument("--processes", type=int, default=1,
                        help="simulate seeds in this many processes (cores)")
    args = parser.parse_args(argv)
    try:
        land = Landscape.read(args.table)
        plans = [strategy(spec, land.epochs) for spec in args.strategies]
    except (OSError, ValueError) as exc:
        parser.error(str(exc))
    missing = [f"{b} {o}" for b in BATCH_SIZES for o in TUTORIAL_OPTIMIZERS
               if (b, o) not in land.groups]
    if missing:
        parser.error(f"{args.table} lacks curves for {', '.join(missing)}: record the whole "
                     "tutorial space with python -m benchmarks.curves")
    rates = tutorial_rates(land.header)
    error, held_out = holdout_error(pd.read_csv(args.table, comment="#"))
    print(f"{args.table}: {len(land.groups)} (batch size, optimizer) groups, {land.epochs} "
          f"epochs, seed noise {land.noise:.4f}; interpolation in log10 lr, checked on "
          f"{held_out} held-out recorded curves: mean |error| {error:.4f}; {args.seeds} seeds "
          f"x {args.budget_min:g} minutes, {args.workers} worker(s)", flush=True)
    medians: dict[str, float] = {}
    for spec, plan in zip(args.strategies, plans, strict=True):
        if plan.naive and not rates:
            parser.error("the table's header has no tutorial img/s line for the naive search")
        done = searches(args, land, spec, plan)
        to = {t: [s.minutes_to(t) for s in done] for t in TARGETS}
        medians[spec] = statistics.median(to[TARGETS[0]])
        budgets = [b for b in BUDGETS_MIN if b < args.budget_min] + [args.budget_min]
        best = "  ".join(f"{b:g} min {statistics.median([s.best_at(b) for s in done]):.4f}"
                         for b in budgets)
        regret = statistics.median(s.regret for s in done)
        print(f"{spec:<34} to {TARGETS[0]}: {_quartiles(to[TARGETS[0]])} min | to "
              f"{TARGETS[1]}: {_quartiles(to[TARGETS[1]])} min | best at {best} | "
              f"regret {regret:.4f}", flush=True)
    naive = medians.get("naive", float("inf"))
    for spec, minutes in medians.items():
        if spec == "naive" or "naive" not in medians:
            continue
        if naive == float("inf") or minutes == float("inf"):
            print(f"{spec}: no ratio to the naive search: one of them reached {TARGETS[0]} in "
                  "under half the seeds; give a longer --budget-min")
        else:
            print(f"{spec}: {naive / minutes:.1f}x sooner to {TARGETS[0]} than the naive "
                  "search (median minutes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
