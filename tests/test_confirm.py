"""python -m tuning.confirm: the best configurations trained again from fresh seeds."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import optuna
import pytest
import torch
from optuna.trial import TrialState

from benchmarks.synthetic import write_fashion_mnist
from model.data import load_split, locate, split_train_val
from tests.conftest import ROOT, Searched, run_cli, run_main, study_content
from tuning.results.selection import Run, record_run
from tuning.results.selection import confirmed as choice
from tuning.study.errors import UsageError
from tuning.study.protocol import CONFIRM_PLAN_ATTR as PLAN_ATTR
from tuning.study.protocol import CONFIRM_RUNS_PREFIX as RUNS_PREFIX
from tuning.study.protocol import derive_seed
from tuning.training.objective import Objective

STUDY = "fashion-mnist"
VAL_SIZE = 100  # the session study's --val-size
SEARCH_SEED = 0  # the session study's --seed: conftest's SEARCHED_ARGS leave the default
LONG_EPOCHS = 20  # the Ctrl-C tests' study: a run lasts ~1.5 s on one thread (40 before)


def _confirm(study: Searched, *args: str):
    return run_main("tuning.confirm", "--storage", study.url, "--data-dir", str(study.data),
                    *args, cwd=study.dir)


@pytest.mark.e2e
def test_confirm_records_fresh_seed_runs_and_export_takes_the_best_mean(searched, tmp_path):
    copy = searched.copy_to(tmp_path)
    url = copy.url
    result = run_cli("tuning.confirm", "--storage", url, "--data-dir", str(searched.data),
                     "--top", "2", "--seeds", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "4 run(s) to go" in result.stdout
    # one progress line per run
    assert len(re.findall(r"^\[ \d/4\] trial .*: last-epoch val acc", result.stdout, re.M)) == 4
    study = optuna.load_study(study_name=STUDY, storage=url)
    top2 = sorted(study.get_trials(states=(TrialState.COMPLETE,)),
                  key=lambda t: (-t.value, t.number))[:2]
    plan = study.user_attrs[PLAN_ATTR]
    assert plan["trials"] == [t.number for t in top2] and plan["seeds"] == 2
    for trial in top2:
        record = study.user_attrs[f"{RUNS_PREFIX}{trial.number}"]
        seeds = [r["seed"] for r in record["runs"]]
        assert sorted(seeds) == sorted(derive_seed(SEARCH_SEED, trial.number, k)
                                       for k in (1, 2))
        assert derive_seed(SEARCH_SEED, trial.number) not in seeds  # never the search's own run
        assert record["params"] == trial.params and record["search_value"] == trial.value
    chosen, why = choice(study)
    assert chosen is not None and why.startswith("confirmed")
    means = {row["trial"]: row["mean_last_val_accuracy"] for row in chosen.table}
    assert chosen.trial.number == max(means, key=lambda n: (means[n], -n))
    assert f"Chosen: trial {chosen.trial.number}" in result.stdout

    out = tmp_path / "out"
    result = run_main("tuning.export", "--storage", url, "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    config = json.loads((out / f"{STUDY}-best.json").read_text())
    assert config["trial_number"] == chosen.trial.number
    assert config["selected_by"].startswith("confirmed")
    assert [row["trial"] for row in config["confirmation"]] == [r["trial"] for r in chosen.table]


def test_a_confirmation_run_is_the_seeded_run_the_search_would_have_made(searched, tmp_path):
    copy = searched.copy_to(tmp_path)
    result = _confirm(copy, "--top", "1", "--seeds", "1")
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name=STUDY, storage=copy.url)
    best = study.best_trial
    run = study.user_attrs[f"{RUNS_PREFIX}{best.number}"]["runs"][0]
    # A search trial given that seed, split and epochs here: the same numbers.
    split = split_train_val(load_split(locate(searched.data, download=False), "train"),
                            VAL_SIZE, 0)
    replay = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    replay.enqueue_trial(best.params, user_attrs={"seed": run["seed"]})
    # In the precision the run recorded (auto: bf16 where the CPU has it, else fp32).
    replay.optimize(Objective(split, epochs=2, seed=0, device=torch.device("cpu"),
                              precision=run["precision"]), n_trials=1)
    curve = replay.trials[0].user_attrs["val_accuracy"]
    assert (run["last_val_accuracy"], run["best_val_accuracy"]) == (curve[-1], max(curve))
    assert run["trained_with_seeds"] == 1


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_seeds_stacked_into_one_model_record_the_runs_one_at_a_time_would(searched, tmp_path,
                                                                           precision):
    runs = {}
    for stack in ("yes", "no"):
        (tmp_path / stack).mkdir()
        copy = searched.copy_to(tmp_path / stack)
        result = _confirm(copy, "--top", "2", "--seeds", "3", "--stack-seeds", stack,
                          "--precision", precision)
        assert result.returncode == 0, result.stderr
        assert f"Precision {precision} (--precision {precision} was asked for); seeds " \
               f"stacked: {stack} (--stack-seeds {stack} was asked for)." in result.stdout
        study = optuna.load_study(study_name=STUDY, storage=copy.url)
        runs[stack] = {(key, r["seed"]): r for key, value in study.user_attrs.items()
                       if key.startswith(RUNS_PREFIX) for r in value["runs"]}
    assert set(runs["yes"]) == set(runs["no"]) and len(runs["yes"]) == 6
    for key, stacked in runs["yes"].items():
        alone = runs["no"][key]
        assert (stacked["trained_with_seeds"], alone["trained_with_seeds"]) == (3, 1)
        assert stacked["precision"] == alone["precision"] == precision
        # The same training up to float rounding: on 100 validation images, a prediction.
        assert stacked["last_val_accuracy"] == pytest.approx(alone["last_val_accuracy"],
                                                             abs=0.011)


def test_seeds_stack_by_default_on_a_gpu_only():
    from tuning.results.confirmation import stack_seeds

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert stack_seeds("auto", cpu).value == "no"
    assert stack_seeds("auto", cuda).value == "yes"
    assert stack_seeds("no", cuda).value == "no"
    assert stack_seeds("yes", cpu).value == "yes"
    with pytest.raises(UsageError, match="--stack-seeds must be one of auto, yes, no"):
        stack_seeds("maybe", cpu)


def test_a_rerun_resumes_and_more_seeds_add_only_the_missing_runs(searched, tmp_path):
    copy = searched.copy_to(tmp_path)
    assert _confirm(copy, "--top", "2", "--seeds", "1").returncode == 0
    before = study_content(copy.path)
    again = _confirm(copy, "--top", "2", "--seeds", "1")
    assert again.returncode == 0, again.stderr
    assert "0 run(s) to go" in again.stdout
    assert study_content(copy.path) == before  # nothing trained, nothing changed
    more = _confirm(copy, "--top", "2", "--seeds", "2")
    assert more.returncode == 0, more.stderr
    assert "2 run(s) to go" in more.stdout


def _hand_made_study(tmp_path) -> optuna.Study:
    """Three completed trials told by hand, with the attributes a search sets."""
    study = optuna.create_study(study_name="hand", storage=f"sqlite:///{tmp_path / 'h.db'}",
                                direction="maximize")
    for attr, value in (("epochs", 2), ("val_size", 100), ("split_seed", 0), ("seed", 0)):
        study.set_user_attr(attr, value)
    for lr, value in ((1e-3, 0.80), (2e-3, 0.82), (3e-3, 0.81)):
        study.enqueue_trial({"lr": lr, "batch_size": 32, "optimizer": "Adam"})
        trial = study.ask()
        trial.suggest_float("lr", 1e-5, 1e-1, log=True)
        trial.suggest_categorical("batch_size", (16, 32, 64, 128, 256))
        trial.suggest_categorical("optimizer", ("SGD", "Adam", "RMSprop"))
        study.tell(trial, value)
    return study


def _record(study: optuna.Study, number: int, k: int, last: float) -> None:
    trial = study.trials[number]
    record_run(study, trial, Run(number, derive_seed(0, number, k), last, last, 1.0, 1))


def test_the_choice_is_the_best_mean_of_fresh_runs_not_the_best_value(tmp_path):
    study = _hand_made_study(tmp_path)
    assert choice(study)[0] is None  # no confirmation yet: export takes the best value
    study.set_user_attr(PLAN_ATTR, {"trials": [1, 2], "seeds": 2, "study_seed": 0,
                                    "complete_trials": 3})
    for number, lasts in ((1, (0.79, 0.80)), (2, (0.81, 0.81))):
        for k, last in enumerate(lasts, start=1):
            _record(study, number, k, last)
    chosen, _ = choice(study)
    assert chosen.trial.number == 2  # trial 1 has the best value, trial 2 the best mean
    assert chosen.table[0]["mean_last_val_accuracy"] == pytest.approx(0.81)
    assert [row["trial"] for row in chosen.table] == [2, 1]


def test_an_unfinished_or_outdated_confirmation_is_not_used(tmp_path):
    study = _hand_made_study(tmp_path)
    study.set_user_attr(PLAN_ATTR, {"trials": [1, 2], "seeds": 2, "study_seed": 0,
                                    "complete_trials": 3})
    _record(study, 1, 1, 0.9)
    _record(study, 1, 2, 0.9)
    _record(study, 2, 1, 0.9)  # trial 2 lacks its second run
    chosen, why = choice(study)
    assert chosen is None and "unfinished (trial 2: 1 of 2 runs)" in why
    _record(study, 2, 2, 0.95)
    assert choice(study)[0].trial.number == 2
    study.enqueue_trial({"lr": 4e-3, "batch_size": 32, "optimizer": "Adam"})
    trial = study.ask()
    trial.suggest_float("lr", 1e-5, 1e-1, log=True)
    study.tell(trial, 0.5)  # a trial the confirmation never saw
    chosen, why = choice(study)
    assert chosen is None and "saw 3 completed trials, the study now has 4" in why


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--top", "0"), "--top must be at least 1, but got 0"),
        (("--seeds", "-1"), "--seeds must be at least 1, but got -1"),
        (("--study-name", "other"), "no study 'other'"),
        (("--storage", "sqlite:///{dir}/nope.db"), "no study database"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(searched, tmp_path, args, message):
    copy = searched.copy_to(tmp_path)
    before = study_content(copy.path)
    args = tuple(a.format(dir=tmp_path) for a in args)
    result = _confirm(copy, *args)
    assert result.returncode == 2
    assert message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert study_content(copy.path) == before
    assert not (tmp_path / "nope.db").exists()


@pytest.fixture(scope="module")
def long_searched(tmp_path_factory) -> Searched:
    """A 1-trial study of LONG_EPOCHS epochs (no pruning): each confirmation run lasts a moment.

    Its own settings: the session study's 2-epoch runs end too soon after one another for a
    Ctrl-C to land reliably between the first recorded run and the last.
    """
    tmp = tmp_path_factory.mktemp("long")
    study = Searched(tmp, tmp / "s.db", write_fashion_mnist(tmp / "fmnist"))
    result = run_main("tuning.search", "--storage", study.url, "--data-dir", str(study.data),
                      "--val-size", str(VAL_SIZE), "--n-trials", "1", "--epochs",
                      str(LONG_EPOCHS), "--pruner", "none", cwd=tmp)
    assert result.returncode == 0, result.stderr
    return study


@pytest.mark.faults
@pytest.mark.parametrize("workers", ["1", "2"])
def test_ctrl_c_keeps_the_finished_runs_and_a_rerun_does_the_rest(long_searched, tmp_path,
                                                                   workers):
    copy = long_searched.copy_to(tmp_path)
    url = copy.url
    args = ("--storage", url, "--data-dir", str(copy.data), "--top", "1", "--seeds", "4",
            "--workers", workers)
    # The interrupted run is a real process sent a real SIGINT. One torch thread (what each
    # of --workers 2's processes has anyway), whatever the caller's OMP_NUM_THREADS: two
    # threads on a busy 2-core machine make a run's length unpredictable.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "tuning.confirm", *args], cwd=tmp_path,
                               env=env, text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    for line in process.stdout:
        if line.startswith("[ 1/4]"):
            process.send_signal(signal.SIGINT)
            break
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err, err
    recorded = int(re.search(r"Interrupted: (\d) of 4 runs recorded", out)[1])
    study = optuna.load_study(study_name=STUDY, storage=url)
    runs = study.user_attrs[f"{RUNS_PREFIX}{study.best_trial.number}"]["runs"]
    assert 1 <= recorded == len(runs) < 4
    assert choice(study)[0] is None  # unfinished: export keeps the best trial by value
    # The rerun needs no signal: in-process (--workers 2 still starts its pool of processes).
    again = run_main("tuning.confirm", *args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"{4 - recorded} run(s) to go" in again.stdout
    assert choice(optuna.load_study(study_name=STUDY, storage=url))[0] is not None
