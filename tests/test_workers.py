"""--workers N on one machine: one study, one target, readable output; journal files; seeds.

A run with --workers starts worker processes, so those tests are e2e: the 40-trial one runs
``python -m tuning.search`` as a user would, the others run the supervisor in-process through
main([...]) (its workers are still real processes). Flags, streams and storage checks run
in-process only.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import ROOT, SEARCHED_ARGS, run_main
from tuning.study.errors import StudyError
from tuning.study.samplers import make_sampler
from tuning.study.storage import Location
from tuning.study.storage_checks import check_existing
from tuning.workers.cores import threads_per_worker

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def _search(tmp_path, idx_dir, storage: str, *args: str):
    return run_main("tuning.search", "--storage", storage, "--data-dir", str(idx_dir),
                    "--val-size", "100", *args, cwd=tmp_path)


def _trials(storage, name: str = "fashion-mnist") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=storage).trials


@pytest.mark.e2e
def test_four_workers_on_sqlite_finish_forty_trials_and_no_more(tmp_path, idx_dir):
    # Four workers on a 2-core machine: two `--workers 2` commands started together on one
    # new SQLite file, as two machines sharing a study would (--workers 4 is refused there).
    storage = f"sqlite:///{tmp_path / 's.db'}"
    command = [sys.executable, "-m", "tuning.search", "--storage", storage, "--data-dir",
               str(idx_dir), "--val-size", "100", "--workers", "2", "--n-trials", "40",
               "--epochs", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [proc.communicate(timeout=600) for proc in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out + err
        assert "locked" not in out + err and "Traceback" not in err
    trials = _trials(storage)
    assert len(trials) == 40 and all(t.state in FINISHED for t in trials)  # none lost, none extra
    assert sum(t.user_attrs.get("baseline") == "tutorial" for t in trials) == 1
    sampled = [(t.params["lr"], t.params["batch_size"]) for t in trials
               if "baseline" not in t.user_attrs]
    assert len(set(sampled)) == len(sampled)  # each worker draws from its own stream
    assert len({t.user_attrs["worker"] for t in trials}) == 4
    threads = threads_per_worker(2)
    trial_lines = []
    for out, _ in outputs:
        for k in (1, 2):
            assert f"[w{k}] worker {k} of 2: pid" in out and f"torch threads {threads}." in out
        trial_lines += [line for line in out.splitlines()
                        if " trial " in line and "val acc" in line]
        assert out.count("Trials: ") == 1 and "Best trial" in out  # one summary per command
    assert len(trial_lines) == 40
    assert all(re.match(r"\[w[12]\] \[ *\d+/40\] trial ", line) for line in trial_lines)


@pytest.mark.e2e
def test_workers_resume_toward_the_same_study_wide_target(tmp_path, searched):
    study = searched.copy_to(tmp_path)  # 4 finished trials of 2 epochs
    again = _search(tmp_path, study.data, study.url, "--workers", "2", "--n-trials", "6",
                    "--epochs", "2")
    assert again.returncode == 0, again.stderr
    assert "4 of 6 trials finished" in again.stdout
    trials = _trials(study.url)
    assert len(trials) == 6 and all(t.state in FINISHED for t in trials)
    done = _search(tmp_path, study.data, study.url, "--workers", "2", "--n-trials", "6",
                   "--epochs", "2")
    assert done.returncode == 0 and "already reached its target" in done.stdout
    assert "[w1]" not in done.stdout  # no worker started for nothing


def test_one_worker_same_seed_same_trials_and_values_with_the_default_sampler(
    tmp_path, searched
):
    # --workers 1 runs the trials in this process. The session's study is the first run: the
    # same flags (default sampler, --workers 1).
    storage = f"sqlite:///{tmp_path / 'b.db'}"
    result = _search(tmp_path, searched.data, storage, "--workers", "1", *SEARCHED_ARGS)
    assert result.returncode == 0, result.stderr
    runs = [[(t.params, t.value, t.state, t.user_attrs["seed"]) for t in _trials(url)]
            for url in (searched.url, storage)]
    assert runs[0] == runs[1]


def test_worker_streams_differ_and_a_lone_run_keeps_its_seed():
    def draws(sampler: optuna.samplers.BaseSampler) -> list[float]:
        study = optuna.create_study(sampler=sampler)
        return [study.ask().suggest_float("x", 0, 1) for _ in range(3)]

    lone = draws(make_sampler("random", 5, 2))
    assert lone == draws(optuna.samplers.RandomSampler(seed=7))  # seed + trials so far
    assert draws(make_sampler("random", 5, 2, (1, 9, 9))) != draws(
        make_sampler("random", 5, 2, (2, 9, 9)))


@pytest.mark.e2e
def test_a_journal_file_holds_a_study_of_several_workers_and_exports(tmp_path, idx_dir):
    journal = tmp_path / "studies" / "j.log"
    result = _search(tmp_path, idx_dir, str(journal), "--workers", "2", "--n-trials", "4",
                     "--epochs", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"optuna-dashboard {journal}" in result.stdout
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal)))
    trials = _trials(storage)
    assert len(trials) == 4 and all(t.state in FINISHED for t in trials)
    export = run_main("tuning.export", "--storage", str(journal), "--out", str(tmp_path / "out"),
                      cwd=tmp_path)
    assert export.returncode == 0, export.stderr
    best = json.loads((tmp_path / "out" / "fashion-mnist-best.json").read_text())
    assert best["trials"]["complete"] + best["trials"]["pruned"] == 4


def test_a_log_file_that_is_not_a_journal_is_left_untouched(tmp_path):
    path = tmp_path / "server.log"
    path.write_text("2026-11-24 12:00:00 server started\n")
    with pytest.raises(StudyError, match="not an Optuna journal"):
        check_existing(Location.parse(str(path)))
    assert path.read_text() == "2026-11-24 12:00:00 server started\n"


@pytest.mark.parametrize("args, expected", [
    (["--workers", "0"], "--workers must be at least 1"),
    (["--heartbeat", "0"], "--heartbeat must be at least 1 second"),
    (["--workers", "two"], "expected 'auto' or a whole number of processes"),
])
def test_bad_worker_flags_get_one_line_and_no_study_file(tmp_path, idx_dir, args, expected):
    result = run_main("tuning.search", "--data-dir", str(idx_dir), *args, cwd=tmp_path)
    assert result.returncode == 2
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "studies").exists()


def test_help_explains_workers_and_heartbeat_but_not_the_internal_flag(tmp_path):
    result = run_main("tuning.search", "--help", cwd=tmp_path)
    text = " ".join(result.stdout.split())
    assert "--workers" in text and "--heartbeat" in text and "(default: 10)" in text
    assert "--worker " not in text
