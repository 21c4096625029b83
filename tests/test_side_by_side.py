"""--workers auto, the default of search and confirm: how it resolves, and trials side by side.

How ``auto`` resolves is plain arithmetic on the cores, the memory and the trials left, tested
for machines this one is not (one core, eight cores, little memory, a GPU). The searches run
in-process through main([...]) on tiny data; their workers are real forked processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import tuning.cli.search_settings
from tests.conftest import ROOT, run_cli, run_main
from tuning.study.errors import UsageError
from tuning.study.protocol import CONFIRM_RUNS_PREFIX
from tuning.workers.cores import (
    AUTO,
    FRESH_ENV,
    WORKER_MEMORY_BYTES,
    cpu_cores,
    fork_is_safe,
    resolve_workers,
    workers_arg,
)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
PLENTY = 64 * WORKER_MEMORY_BYTES  # memory enough for any worker count below


@pytest.mark.parametrize(("cores", "workers"), [(1, 1), (2, 2), (8, 8)])
def test_auto_is_one_worker_per_core_with_one_thread_on_a_cpu(cores, workers):
    layout = resolve_workers(AUTO, "cpu", cores=cores, memory=PLENTY)
    assert (layout.workers, layout.threads) == (workers, 1)
    assert "auto: one per CPU core" in layout.describe()


def test_auto_starts_no_more_workers_than_the_memory_holds_and_gives_them_the_cores():
    layout = resolve_workers(AUTO, "cpu", cores=8, memory=3 * WORKER_MEMORY_BYTES)
    assert (layout.workers, layout.threads) == (3, 2)
    assert "as many as the free memory holds" in layout.reason
    tiny = resolve_workers(AUTO, "cpu", cores=8, memory=WORKER_MEMORY_BYTES // 2)
    assert (tiny.workers, tiny.threads) == (1, 8)


def test_auto_runs_one_process_on_a_gpu_and_never_more_workers_than_trials_left():
    assert resolve_workers(AUTO, "cuda", cores=16, memory=PLENTY).workers == 1
    last = resolve_workers(AUTO, "cpu", 1, cores=8, memory=PLENTY)
    assert (last.workers, last.threads) == (1, 8)
    assert "1 trial(s) left" in last.reason
    assert resolve_workers(AUTO, "cpu", 3, cores=8, memory=PLENTY).workers == 3


def test_a_number_of_workers_splits_the_cores_and_above_the_cores_is_refused():
    layout = resolve_workers(2, "cpu", cores=8)
    assert (layout.workers, layout.threads) == (2, 4)
    with pytest.raises(UsageError, match=r"--workers 3 is more than the 2 CPU core\(s\).*"
                       r"Use --workers 2 or fewer"):
        resolve_workers(3, "cpu", cores=2)
    with pytest.raises(UsageError, match="at least 1 or auto"):
        resolve_workers(0, "cpu", cores=2)


def test_the_flag_takes_auto_or_a_number_and_says_so_otherwise(tmp_path):
    assert workers_arg("auto") == AUTO and workers_arg("3") == 3
    for tool in ("tuning.search", "tuning.confirm"):
        result = run_main(tool, "--workers", "many", cwd=tmp_path)
        assert result.returncode == 2
        assert "expected 'auto' or a whole number of processes, but got 'many'" in result.stderr
        assert "Traceback" not in result.stderr
    above = run_main("tuning.search", "--workers", str(cpu_cores() + 1), cwd=tmp_path)
    assert above.returncode == 2 and f"Use --workers {cpu_cores()} or fewer" in above.stderr


def test_a_fork_is_safe_until_torch_started_a_wider_thread_pool():
    code = (
        "import torch\n"
        "from tuning.workers.cores import fork_is_safe\n"
        "torch.set_num_threads(1); a = torch.randn(600, 600); a @ a\n"
        "print(fork_is_safe(1), fork_is_safe(2))\n"
        "torch.set_num_threads(2); a @ a\n"
        "print(fork_is_safe(1), fork_is_safe(2))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert result.stdout.split() == ["True", "True", "True", "False"], result.stderr
    assert fork_is_safe(1)


def _loads_counted(monkeypatch, log: Path) -> None:
    """Write a line to ``log`` (with the pid) each time a process loads the searched split."""
    real = tuning.cli.search_settings.load_searched_split

    def counted(*args, **kwargs):
        with open(log, "a", encoding="utf-8") as out:
            out.write(f"{os.getpid()}\n")
        return real(*args, **kwargs)

    monkeypatch.setattr(tuning.cli.search_settings, "load_searched_split", counted)


@pytest.mark.skipif(cpu_cores() < 2, reason="auto runs one process on one core")
def test_the_default_search_runs_trials_side_by_side_on_data_loaded_once(
    tmp_path, idx_dir, monkeypatch
):
    loads = tmp_path / "loads.txt"
    _loads_counted(monkeypatch, loads)
    storage = f"sqlite:///{tmp_path / 's.db'}"
    result = run_main("tuning.search", "--storage", storage, "--data-dir", str(idx_dir),
                      "--val-size", "100", "--n-trials", "7", "--epochs", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    workers = resolve_workers(AUTO, "cpu", 7).workers
    assert f"{workers} workers x 1 torch thread (auto: one per CPU core)" in result.stdout
    trials = optuna.load_study(study_name="fashion-mnist", storage=storage).trials
    assert len(trials) == 7 and all(t.state in FINISHED for t in trials)  # exactly the target
    pids = {t.user_attrs["worker"].rsplit(":", 1)[1] for t in trials}  # host:pid
    assert len(pids) == workers and str(os.getpid()) not in pids
    assert {t.user_attrs["torch_threads"] for t in trials} == {1}
    assert [f"[w{k}] worker {k} of {workers}: pid" in result.stdout
            for k in range(1, workers + 1)] == [True] * workers
    assert result.stdout.count("Trials: ") == 1  # one summary, the supervisor's
    assert loads.read_text().split() == [str(os.getpid())]  # the workers got it by the fork


def test_one_trial_left_runs_in_this_process_with_every_core(tmp_path, idx_dir):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    result = run_main("tuning.search", "--storage", storage, "--data-dir", str(idx_dir),
                      "--val-size", "100", "--n-trials", "1", "--epochs", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "[w1]" not in result.stdout and "1 process x" in result.stdout
    (trial,) = optuna.load_study(study_name="fashion-mnist", storage=storage).trials
    assert trial.user_attrs["worker"].endswith(f":{os.getpid()}")


@pytest.mark.skipif(cpu_cores() < 2, reason="auto runs one process on one core")
def test_confirm_runs_side_by_side_by_default(tmp_path, searched):
    study = searched.copy_to(tmp_path)
    result = run_main("tuning.confirm", "--storage", study.url, "--data-dir", str(study.data),
                      "--top", "2", "--seeds", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 workers x 1 torch thread (auto: one per CPU core)" in result.stdout
    attrs = optuna.load_study(study_name="fashion-mnist", storage=study.url).user_attrs
    runs = [run for key, value in attrs.items() if key.startswith(CONFIRM_RUNS_PREFIX)
            for run in value["runs"]]
    assert len(runs) == 2 and {run["torch_threads"] for run in runs} == {1}


@pytest.mark.e2e
def test_fresh_interpreters_as_workers_finish_exactly_at_the_target(tmp_path, idx_dir):
    # Where a fork is not safe (or $FASHION_TUNE_FRESH_WORKERS says so), each worker is a new
    # `python -m tuning.search --worker k` that reads the data itself.
    storage = f"sqlite:///{tmp_path / 's.db'}"
    result = run_cli("tuning.search", "--storage", storage, "--data-dir", str(idx_dir),
                     "--val-size", "100", "--n-trials", "5", "--epochs", "1", "--workers", "2",
                     cwd=tmp_path, env={FRESH_ENV: "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    trials = optuna.load_study(study_name="fashion-mnist", storage=storage).trials
    assert len(trials) == 5 and all(t.state in FINISHED for t in trials)
    assert "[w1] worker 1 of 2" in result.stdout and "[w2] worker 2 of 2" in result.stdout
    assert "Data: 500 train" in result.stdout  # the supervisor's line, once
