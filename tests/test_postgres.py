"""Multi-process studies on the PostgreSQL server of tests/postgres.py, as on many machines.

Skipped where no server answers on 127.0.0.1:5432 (a failure in CI, where one is expected).
Each run starts several search processes, so these stay subprocesses. Heartbeat 2 s: a process
done with its trials looks for the others' last ones every heartbeat (default 10 s).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import optuna
import pytest
from optuna.trial import TrialState

from tests import postgres
from tests.conftest import ROOT, run_cli

pytestmark = pytest.mark.postgres

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@pytest.fixture
def study_name() -> Iterator[str]:
    yield from postgres.fresh_study("pg")


def _command(study_name: str, idx_dir, *args: str) -> list[str]:
    return ["--storage", postgres.URL, "--study-name", study_name, "--data-dir", str(idx_dir),
            "--val-size", "100", "--heartbeat", "2", *args]


def _trials(study_name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study_name, storage=postgres.URL).trials


def test_three_workers_share_one_postgres_study_and_stop_at_its_target(
    tmp_path, idx_dir, study_name
):
    result = run_cli("tuning.search", *_command(study_name, idx_dir, "--workers", "2",
                                                "--n-trials", "12", "--epochs", "1"),
                     cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    trials = _trials(study_name)
    assert len(trials) == 12 and all(t.state in FINISHED for t in trials)
    assert sum(t.user_attrs.get("baseline") == "tutorial" for t in trials) == 1
    assert f"optuna-dashboard {postgres.URL}" in result.stdout


def test_the_same_command_started_twice_at_once_shares_the_study_like_two_machines(
    tmp_path, idx_dir, study_name
):
    command = [sys.executable, "-m", "tuning.search",
               *_command(study_name, idx_dir, "--n-trials", "8", "--epochs", "1",
                         "--sampler", "random")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    machines = [subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for machine in machines:
        out, err = machine.communicate(timeout=600)
        assert machine.returncode == 0, out + err
    trials = _trials(study_name)
    assert len(trials) == 8 and all(t.state in FINISHED for t in trials)
    assert sum(t.user_attrs.get("baseline") == "tutorial" for t in trials) == 1
    sampled = [t.params["lr"] for t in trials if "baseline" not in t.user_attrs]
    assert len(set(sampled)) == len(sampled)  # the two did not draw the same points
