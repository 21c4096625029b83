"""The cluster recipes in scripts/cluster/ run the command they promise, here, on tiny data.

Neither Slurm nor Kubernetes runs on this machine; what can run does: the Slurm array script
itself, two tasks at once as two nodes would, and the Kubernetes Job's container command, two
pods at once, each against one study, which must end exactly at its target.
"""

from __future__ import annotations

import os
import subprocess
import sys

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from tests.conftest import ROOT

CLUSTER = ROOT / "scripts" / "cluster"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
TINY = ("--val-size", "100", "--epochs", "1")


def _together(commands: list[list[str]], env: dict[str, str], cwd) -> None:
    procs = [subprocess.Popen(command, cwd=cwd, env=env, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for command in commands]
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, out + err


def _trials(url: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="shared", storage=url).trials


@pytest.mark.e2e
def test_the_slurm_array_script_runs_its_tasks_on_one_study(tmp_path, idx_dir):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FASHION_TUNE_STORAGE": url,
           "SLURM_SUBMIT_DIR": str(ROOT), "N_TRIALS": "6"}
    script = CLUSTER / "slurm-array.sh"
    _together([["bash", str(script), "--data-dir", str(idx_dir), *TINY],
               ["bash", str(script), "--data-dir", str(idx_dir), *TINY]], env, tmp_path)
    trials = _trials(url)
    assert len(trials) == 6 and all(t.state in FINISHED for t in trials)
    unset = {k: v for k, v in env.items() if k != "FASHION_TUNE_STORAGE"}
    refused = subprocess.run(["bash", str(script)], env=unset, capture_output=True, text=True)
    assert refused.returncode != 0 and "set it to the database URL of the study" in refused.stderr


@pytest.mark.e2e
def test_the_kubernetes_job_runs_the_same_command_in_every_pod(tmp_path, idx_dir):
    job = yaml.safe_load((CLUSTER / "kubernetes-job.yaml").read_text())
    assert job["kind"] == "Job" and job["spec"]["parallelism"] == job["spec"]["completions"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    (variable,) = container["env"]
    assert variable["name"] == "FASHION_TUNE_STORAGE" and "secretKeyRef" in variable["valueFrom"]
    command = container["command"]
    assert command[:3] == ["python", "-m", "tuning.search"]
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FASHION_TUNE_STORAGE": url}
    pod = [sys.executable, *command[1:], "--n-trials", "6", "--data-dir", str(idx_dir), *TINY]
    _together([pod, pod], env, tmp_path)
    trials = _trials(url)
    assert len(trials) == 6 and all(t.state in FINISHED for t in trials)
