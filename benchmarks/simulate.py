"""Replay search strategies on a recorded curve table: hundreds of searches in minutes.

Each simulated search is a real Optuna study (in memory) with a real sampler and pruner, asked
and told as ``tuning.search`` does, with 1..N workers running trials side by side
(asynchronously: each worker asks for its next trial the moment its last one ends). A trial's
per-epoch validation accuracy comes from the table (``benchmarks.landscape``: interpolated in
log10 lr, plus the recorded seed noise as a per-trial offset), and each epoch is charged its
recorded seconds, so simulated time is real time on the recording machine. The naive search
(random sampler, no pruning) is charged the tutorial loop's time per epoch instead, from the
images per second the table's header records for it.

A table of configurations drawn from a larger space (``benchmarks.curves --space extended``)
has nothing to interpolate: there each trial draws one of its configurations at random (only
``random+PRUNER`` strategies make sense, and there is no tutorial trial), which compares
pruners on that space's own curves.

The pruner ``oracle`` is no real pruner but a bound: it stops after its first epoch every
trial whose curve (its seed noise included) never reaches 88%, and lets every other trial run
on, so it is the soonest to 88% that any pruner could be with the same sampler's draws.

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

from benchmarks.landscape import NOISE_BANDS, Drawn, Landscape, holdout_error, read_table
from tuning.space.hyperparameters import BATCH_SIZES, TUTORIAL, TUTORIAL_OPTIMIZERS
from tuning.study.baseline import BASELINE_AFTER
from tuning.study.samplers import DEFAULT_PRUNER, DEFAULT_SAMPLER, make_pruner, make_sampler

TARGETS = (0.88, 0.89)
BUDGETS_MIN = (5, 15, 60)
DEFAULT_TABLE = Path("benchmarks/curves/tutorial.csv")
TRAIN_IMAGES = 50_000


BASELINES = ("first", "protected", "none")  # or a trial number


@dataclass
class Strategy:
    """A sampler and pruner (with settings), how an epoch is charged, and the baseline.

    ``baseline``: ``first`` queues the tutorial's configuration as trial 0, judged by the pruner
    like any trial (the search's behaviour); ``protected`` queues it first and never prunes it;
    a number N queues it once N trials have started (it is trial N, judged like any trial);
    ``none`` leaves it out.
    """

    name: str
    sampler: Callable[[int], optuna.samplers.BaseSampler]
    pruner: Callable[[], optuna.pruners.BasePruner]
    naive: bool = False  # charged the tutorial loop's time
    baseline: str = "first"
    oracle: bool = False  # stops after epoch 1 every trial that will not reach TARGETS[0]


def _options(text: str, spec: str, allowed: Sequence[str]) -> dict[str, float]:
    options: dict[str, float] = {}
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        if key not in allowed:
            raise ValueError(f"strategy {spec!r}: unknown setting {key!r}; here: "
                             f"{', '.join(allowed) or 'none'}")
        options[key] = float(value)
    return options


# Settings each sampler and pruner takes in a strategy, e.g. tpe:startup=5,multivariate=0.
SAMPLER_SETTINGS = {"tpe": ("startup", "multivariate", "liar", "candidates"), "random": ()}
PRUNER_SETTINGS = {"median": ("startup", "warmup"), "percentile": ("p", "startup", "warmup"),
                   "successive-halving": ("rf", "min"), "hyperband": ("rf", "min"),
                   "none": (), "oracle": ()}


def _sampler(name: str, o: dict[str, float]) -> Callable[[int], optuna.samplers.BaseSampler]:
    if name == "random":
        return lambda seed: optuna.samplers.RandomSampler(seed=seed)
    return lambda seed: optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=int(o.get("startup", 10)),
        multivariate=bool(o.get("multivariate", 1)), constant_liar=bool(o.get("liar", 1)),
        n_ei_candidates=int(o.get("candidates", 24)))


def _pruner(name: str, o: dict[str, float], epochs: int
            ) -> Callable[[], optuna.pruners.BasePruner]:
    startup, warmup = int(o.get("startup", 5)), int(o.get("warmup", 0))
    rf, low = int(o.get("rf", 3)), int(o.get("min", 1))
    return {
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=startup,
                                                      n_warmup_steps=warmup),
        "percentile": lambda: optuna.pruners.PercentilePruner(
            o.get("p", 50.0), n_startup_trials=startup, n_warmup_steps=warmup),
        "successive-halving": lambda: optuna.pruners.SuccessiveHalvingPruner(
            min_resource=low, reduction_factor=rf),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(
            min_resource=low, max_resource=epochs, reduction_factor=rf),
        "none": optuna.pruners.NopPruner, "oracle": optuna.pruners.NopPruner}[name]


def strategy(spec: str, epochs: int) -> Strategy:
    """``naive``, ``suite`` (the search's defaults), or
    ``SAMPLER[:k=v,..]+PRUNER[:k=v,..][+baseline=first|protected|none|N]``."""
    if spec == "naive":
        return Strategy(spec, lambda s: optuna.samplers.RandomSampler(seed=s),
                        optuna.pruners.NopPruner, naive=True, baseline="none")
    if spec == "suite":  # the search's defaults, as they are in the code now
        return Strategy(spec, lambda s: make_sampler(DEFAULT_SAMPLER, s),
                        lambda: make_pruner(DEFAULT_PRUNER, epochs),
                        baseline=str(BASELINE_AFTER))
    match = re.fullmatch(r"(\w+)(?::([\w=.,]+))?\+([\w-]+)(?::([\w=.,]+))?"
                         r"(?:\+baseline=(\w+))?", spec)
    if not match:
        raise ValueError(f"strategy {spec!r}: write naive, suite, or SAMPLER[:k=v,..]+"
                         "PRUNER[:k=v,..][+baseline=first|protected|none|N]")
    s_name, s_opts, p_name, p_opts, baseline = match.groups()
    if s_name not in SAMPLER_SETTINGS or p_name not in PRUNER_SETTINGS:
        raise ValueError(f"strategy {spec!r}: samplers {', '.join(SAMPLER_SETTINGS)}; pruners "
                         f"{', '.join(PRUNER_SETTINGS)}")
    if baseline and baseline not in BASELINES and not baseline.isdigit():
        raise ValueError(f"strategy {spec!r}: baseline is first, protected, none or a trial "
                         "number")
    so = _options(s_opts or "", spec, SAMPLER_SETTINGS[s_name])
    po = _options(p_opts or "", spec, PRUNER_SETTINGS[p_name])
    return Strategy(spec, _sampler(s_name, so), _pruner(p_name, po, epochs),
                    baseline=baseline or "first", oracle=p_name == "oracle")


@dataclass
class Search:
    """What one simulated search did: (minute, accuracy) per reported epoch, and its pick."""

    trace: list[tuple[float, float]] = field(default_factory=list)
    regret: float = float("nan")
    trials: int = 0  # started
    pruned: int = 0
    epochs: int = 0  # trained, over all trials
    baseline: int = -1  # the tutorial configuration's trial number; -1: not started
    baseline_epochs: int = 0  # epochs it trained before it ended (0: still running or none)

    def minutes_to(self, target: float) -> float:
        return next((t for t, acc in self.trace if acc >= target), float("inf"))

    def best_at(self, minutes: float) -> float:
        return max((acc for t, acc in self.trace if t <= minutes), default=float("nan"))


def run(land: Landscape | Drawn, plan: Strategy, seed: int, *, workers: int, budget_min: float,
        tutorial_rate: dict[int, float]) -> Search:
    """One simulated search of ``budget_min`` minutes."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=plan.sampler(seed),
                                pruner=plan.pruner())
    queue_at = {"first": 0, "protected": 0, "none": -1}.get(plan.baseline)
    if queue_at is None:
        queue_at = int(plan.baseline)
    if isinstance(land, Drawn):  # the tutorial's point is not among the drawn ones
        queue_at = -1
    rng, out, true_value = np.random.default_rng(seed), Search(), {}
    events: list[tuple[float, int, int]] = []  # (seconds, order, trial number)
    running: dict[int, tuple[optuna.Trial, np.ndarray, np.ndarray, int]] = {}

    def start(now: float) -> None:
        if out.trials == queue_at:
            study.enqueue_trial(TUTORIAL.as_params())
        trial = study.ask()
        out.trials += 1
        acc, sec, params = land.draw(trial)
        if params == TUTORIAL:
            out.baseline = trial.number
        true_value[trial.number] = float(np.max(acc))
        noisy = np.clip(acc + rng.normal(0.0, land.noise_for(true_value[trial.number])),
                        0.0, 1.0)
        if plan.naive and params is not None:
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
        protected = plan.baseline == "protected" and number == out.baseline
        out.epochs += 1
        foreseen = plan.oracle and epoch == 0 and float(np.max(acc)) < TARGETS[0]
        if not protected and (foreseen or trial.should_prune()):
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            out.pruned += 1
            if number == out.baseline:
                out.baseline_epochs = epoch + 1
        elif epoch + 1 == len(acc):
            study.tell(trial, float(np.max(acc)))
            if number == out.baseline:
                out.baseline_epochs = epoch + 1
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


def _bind(land: Landscape | Drawn, plan: Strategy, args: argparse.Namespace
          ) -> Callable[[int], Search]:
    """``run`` of one strategy with everything but the seed fixed."""
    # The naive search is what a user of the tutorial runs: one process, whatever --workers.
    workers = 1 if plan.naive else args.workers
    return partial(run, land, plan, workers=workers, budget_min=args.budget_min,
                   tutorial_rate=tutorial_rates(land.header))


def _start(args: argparse.Namespace, spec: str, epochs: int) -> None:
    land = read_table(args.table)
    _POOL["run"] = _bind(land, strategy(spec, epochs), args)


def _one(seed: int) -> Search:
    return _POOL["run"](seed)


def searches(args: argparse.Namespace, land: Landscape | Drawn, spec: str, plan: Strategy
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
    parser.add_argument("--workers", type=int, default=1,
                        help="trials side by side (the naive search always runs one at a time)")
    parser.add_argument("--budget-min", type=float, default=max(BUDGETS_MIN))
    parser.add_argument("--processes", type=int, default=1,
                        help="simulate seeds in this many processes (cores)")
    args = parser.parse_args(argv)
    try:
        land = read_table(args.table)
        plans = [strategy(spec, land.epochs) for spec in args.strategies]
    except (OSError, ValueError) as exc:
        parser.error(str(exc))
    bands = ", ".join(f">={low:g} {sd:.4f}" for low, sd in zip(NOISE_BANDS, land.noise,
                                                                 strict=True))
    runs = (f"{args.seeds} seeds x {args.budget_min:g} minutes, {args.workers} worker(s) "
            "(the naive search: 1)")
    if isinstance(land, Drawn):
        guided = [spec for spec in args.strategies if not spec.startswith("random+")]
        if guided:
            parser.error(f"{args.table} holds configurations drawn from a larger space: a "
                         "simulated trial can only draw one of them at random, so give "
                         f"random+PRUNER strategies, not {', '.join(guided)}")
        print(f"{args.table}: {len(land.configs)} drawn configurations, {land.epochs} epochs, "
              f"seed noise by best accuracy {bands}; each trial draws one at random (no "
              f"tutorial trial); {runs}", flush=True)
    else:
        missing = [f"{b} {o}" for b in BATCH_SIZES for o in TUTORIAL_OPTIMIZERS
                   if (b, o) not in land.groups]
        if missing:
            parser.error(f"{args.table} lacks curves for {', '.join(missing)}: record the "
                         "whole tutorial space with python -m benchmarks.curves")
        error, held_out = holdout_error(pd.read_csv(args.table, comment="#"))
        print(f"{args.table}: {len(land.groups)} (batch size, optimizer) groups, {land.epochs} "
              f"epochs, seed noise by best accuracy {bands}; interpolation in log10 lr, "
              f"checked on {held_out} held-out recorded curves: mean |error| {error:.4f}; "
              f"{runs}", flush=True)
    medians: dict[str, float] = {}
    for spec, plan in zip(args.strategies, plans, strict=True):
        if plan.naive and not tutorial_rates(land.header):
            parser.error("the table's header has no tutorial img/s line for the naive search")
        done = searches(args, land, spec, plan)
        to = {t: [s.minutes_to(t) for s in done] for t in TARGETS}
        medians[spec] = statistics.median(to[TARGETS[0]])
        budgets = [b for b in BUDGETS_MIN if b < args.budget_min] + [args.budget_min]
        best = "  ".join(f"{b:g} min {statistics.median([s.best_at(b) for s in done]):.4f}"
                         for b in budgets)
        regret = statistics.median(s.regret for s in done)
        trials = statistics.mean(s.trials for s in done)
        pruned = sum(s.pruned for s in done) / max(1, sum(s.trials for s in done))
        per_trial = sum(s.epochs for s in done) / max(1, sum(s.trials for s in done))
        ran = [s.baseline_epochs for s in done if s.baseline >= 0]
        baseline = f"{statistics.median(ran):g}" if ran else "-"
        print(f"{spec:<34} to {TARGETS[0]}: {_quartiles(to[TARGETS[0]])} min | to "
              f"{TARGETS[1]}: {_quartiles(to[TARGETS[1]])} min | best at {best} | "
              f"regret {regret:.4f} | {trials:.0f} trials, {100 * pruned:.0f}% pruned, "
              f"{per_trial:.1f} epochs/trial, baseline {baseline} epochs", flush=True)
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
