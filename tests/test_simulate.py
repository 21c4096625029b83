"""The search simulator's strategies, on a small synthetic curve table; the search benchmark's
stop-at-target readers on a real SQLite study and a real event file."""

from __future__ import annotations

import json
import re

import numpy as np
import optuna
import pandas as pd
import pytest

from benchmarks.landscape import Drawn, Landscape, read_table
from benchmarks.search import _events_reached, _study_reached
from benchmarks.simulate import main, run, strategy
from tuning.space.hyperparameters import BATCH_SIZES, TUTORIAL, TUTORIAL_OPTIMIZERS


def _table() -> Landscape:
    """Every (batch size, optimizer) of the tutorial space at 3 learning rates, 4 epochs: the
    middle lr learns best, SGD at lr 1e-3 (the tutorial's) learns slowly."""
    rows = []
    for b in BATCH_SIZES:
        for o in TUTORIAL_OPTIMIZERS:
            for lr, top in ((1e-5, 0.5), (1e-3, 0.9 if o != "SGD" else 0.6), (1e-1, 0.1)):
                for seed in (1, 2) if lr == 1e-3 else (1,):
                    for e in range(1, 5):
                        rows.append({"lr": lr, "batch_size": b, "optimizer": o, "seed": seed,
                                     "epoch": e, "val_accuracy": top * e / 4 + 0.001 * seed,
                                     "val_loss": 1.0, "train_loss": 1.0,
                                     "seconds": 256 / b})
    return Landscape(pd.DataFrame(rows), ["# tutorial img/s: " + " ".join(
        f"{b}=1000" for b in BATCH_SIZES)])


RATES = {b: 1000.0 for b in BATCH_SIZES}


def test_strategies_take_the_settings_of_their_sampler_and_pruner():
    plan = strategy("tpe:startup=3,multivariate=0,liar=0+percentile:p=25,startup=2,warmup=1"
                    "+baseline=protected", 4)
    sampler, pruner = plan.sampler(0), plan.pruner()
    assert isinstance(sampler, optuna.samplers.TPESampler)
    assert sampler._n_startup_trials == 3 and not sampler._multivariate
    assert not sampler._constant_liar
    assert isinstance(pruner, optuna.pruners.PercentilePruner)
    assert pruner._percentile == 25 and pruner._n_warmup_steps == 1
    assert plan.baseline == "protected"
    halving = strategy("random+successive-halving:rf=4,min=2", 4).pruner()
    assert halving._reduction_factor == 4 and halving._min_resource == 2
    assert strategy("random+none+baseline=7", 4).baseline == "7"


@pytest.mark.parametrize("spec, message", [
    ("tpe:warmup=2+median", "unknown setting 'warmup'"),
    ("tpe+median:rf=3", "unknown setting 'rf'"),
    ("cmaes+median", "samplers tpe, random"),
    ("tpe+median+baseline=later", "baseline is first, protected, none or a trial number"),
    ("tpe+median+baseline=N", "baseline is first, protected, none or a trial number"),
    ("tpe", "write naive, suite, or SAMPLER"),
])
def test_a_bad_strategy_is_one_line_that_says_what_is_allowed(spec, message):
    with pytest.raises(ValueError, match=message):
        strategy(spec, 4)


def _search(spec: str, seed: int = 0, workers: int = 1):
    return run(_table(), strategy(spec, 4), seed, workers=workers, budget_min=5,
               tutorial_rate=RATES)


def test_the_baseline_runs_first_later_or_never_as_the_strategy_says():
    first = _search("random+none")
    assert first.baseline == 0 and first.baseline_epochs == 4 and first.pruned == 0
    later = _search("random+none+baseline=5")
    assert later.baseline == 5 and later.baseline_epochs == 4
    assert _search("random+none+baseline=none").baseline == -1
    assert _search("naive").baseline == -1  # a first script has no baseline trial
    assert first.trials >= 6 and first.epochs == sum(1 for _ in first.trace)


def test_a_protected_baseline_is_never_pruned_and_an_unprotected_one_may_be():
    # Three workers start together: trials 1 and 2 reach each rung with the baseline, and
    # successive halving (rf 3) keeps only the best of three, never the slow SGD baseline.
    pruned = [_search("random+successive-halving:rf=3+baseline=first", s, 3) for s in range(5)]
    assert any(0 < s.baseline_epochs < 4 for s in pruned)
    kept = [_search("random+successive-halving:rf=3+baseline=protected", s, 3)
            for s in range(5)]
    assert all(s.baseline_epochs in (0, 4) for s in kept)


def test_the_oracle_stops_after_one_epoch_only_trials_that_never_reach_the_target():
    reached = 0
    for seed in range(5):
        oracle = _search("random+oracle+baseline=none", seed)
        kept = oracle.trials - oracle.pruned  # each ran its 4 epochs, the last maybe unfinished
        assert oracle.pruned > 0
        assert oracle.pruned + 4 * (kept - 1) <= oracle.epochs <= oracle.pruned + 4 * kept
        for other in ("random+none", "random+successive-halving:rf=3", "random+median"):
            assert oracle.minutes_to(0.88) <= _search(other + "+baseline=none", seed).minutes_to(
                0.88)
        reached += oracle.minutes_to(0.88) < float("inf")
    assert reached >= 2


def test_the_naive_search_is_charged_the_tutorial_loop_and_the_suite_the_table():
    naive, suite = _search("naive"), _search("random+none")
    # the table charges 256/b s per epoch, the tutorial loop 50,000/1000 = 50 s per epoch
    assert naive.trace[0][0] == pytest.approx(50 / 60)
    assert suite.trace[0][0] == pytest.approx(256 / TUTORIAL.batch_size / 60)


def test_stop_at_target_reads_a_study_while_it_runs_and_an_event_file(tmp_path):
    db = tmp_path / "s.db"
    assert not _study_reached(db, 0.5)  # not created yet
    study = optuna.create_study(storage=f"sqlite:///{db}", direction="maximize")
    trial = study.ask()
    trial.report(0.4, 1)
    assert not _study_reached(db, 0.5)
    trial.report(0.6, 2)
    assert _study_reached(db, 0.5)
    events = tmp_path / "e.jsonl"
    assert not _events_reached(events, 0.5)
    events.write_text(json.dumps({"val_accuracy": 0.4}) + "\n" + '{"val_accur')  # mid-write
    assert not _events_reached(events, 0.5)
    events.write_text(json.dumps({"val_accuracy": 0.4}) + "\n" + json.dumps(
        {"val_accuracy": 0.7}) + "\n")
    assert _events_reached(events, 0.5)


def _drawn_table(path):
    """Three configurations drawn from a larger space, 3 epochs; config 1 twice (seed noise)."""
    rows = []
    for config, seed, curve in ((0, 1, [0.5, 0.6, 0.7]), (1, 1, [0.8, 0.85, 0.9]),
                                (1, 2, [0.8, 0.86, 0.88]), (2, 1, [0.3, 0.2, 0.1])):
        for epoch, acc in enumerate(curve, start=1):
            rows.append({"config": config, "lr": 0.01, "batch_size": 64, "optimizer": "AdamW",
                         "schedule": "cosine", "seed": seed, "epoch": epoch,
                         "val_accuracy": acc, "val_loss": 1.0, "train_loss": 1.0,
                         "seconds": 2.0})
    path.write_text("# space: extended, 3 configurations\n" + pd.DataFrame(rows).to_csv(
        index=False))
    return path


def test_a_table_of_drawn_configurations_is_replayed_by_random_draws(tmp_path, capsys):
    table = _drawn_table(tmp_path / "extended.csv")
    land = read_table(table)
    assert isinstance(land, Drawn) and len(land.configs) == 3 and land.best() == 0.89
    # config 1's seeds differ by 0, 0.01 and 0.02 over its epochs: pooled, one run's spread
    spread = np.sqrt(np.mean([np.std(pair, ddof=1) ** 2
                              for pair in ((0.8, 0.8), (0.85, 0.86), (0.9, 0.88))]))
    assert land.noise_for(0.89) == pytest.approx(spread)
    assert main(["--table", str(table), "--seeds", "4", "--budget-min", "1", "--strategies",
                 "random+successive-halving:rf=2", "random+none"]) == 0
    out = capsys.readouterr().out
    assert "3 drawn configurations, 3 epochs" in out and "no tutorial trial" in out
    assert len(re.findall(r"^random\+(successive-halving:rf=2|none) +to 0\.88: .* "
                          r"baseline - epochs$", out, re.M)) == 2
    with pytest.raises(SystemExit):
        main(["--table", str(table), "--strategies", "naive", "tpe+median"])
    assert "give random+PRUNER strategies, not naive, tpe+median" in capsys.readouterr().err
