"""The search CLI against SQLite files in tmp_path: in-process through main([...]), except the
smoke test (``python -m tuning.search`` as a user runs it) and Ctrl-C (a real SIGINT)."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from benchmarks.synthetic import write_fashion_mnist
from tests.conftest import ROOT, run_cli, run_main

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def _search(tmp_path: Path, idx_dir: Path, *args: str, db: str = "s.db"):
    return run_main(
        "tuning.search", "--storage", f"sqlite:///{tmp_path / db}", "--data-dir", str(idx_dir),
        "--val-size", "100", *args, cwd=tmp_path,
    )


def _load(tmp_path: Path, db: str = "s.db", name: str = "fashion-mnist") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / db}")


@pytest.mark.e2e
def test_search_runs_a_study_that_ends_with_the_tutorial(tmp_path, idx_dir):
    result = run_cli(
        "tuning.search", "--storage", f"sqlite:///{tmp_path / 's.db'}", "--data-dir",
        str(idx_dir), "--val-size", "100", "--n-trials", "3", "--epochs", "2", cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    study = _load(tmp_path)
    assert len(study.get_trials(states=FINISHED)) == 3
    # 3 trials leave no room for 10 start-up trials: the tutorial's comes last
    last = study.trials[-1]
    assert last.params == {"lr": 1e-3, "batch_size": 64, "optimizer": "SGD"}
    assert last.user_attrs["baseline"] == "tutorial"
    assert not any(t.user_attrs.get("baseline") for t in study.trials[:-1])
    assert study.user_attrs["epochs"] == 2 and study.user_attrs["val_size"] == 100
    out = result.stdout
    assert "trial   0" in out and "Best trial" in out
    assert f"optuna-dashboard sqlite:///{tmp_path / 's.db'}" in out
    assert "python -m tuning.export" in out


def test_bf16_precision_is_used_and_recorded_on_every_trial(tmp_path, idx_dir, searched):
    result = _search(tmp_path, idx_dir, "--n-trials", "2", "--epochs", "1", "--precision",
                     "bf16")
    assert result.returncode == 0, result.stderr
    assert "precision bf16" in result.stdout
    trials = _load(tmp_path).get_trials(states=FINISHED)
    assert [t.user_attrs["precision"] for t in trials] == ["bf16", "bf16"]
    # The session's study was searched with --precision fp32.
    default = optuna.load_study(study_name=searched.name, storage=searched.url)
    assert default.trials[0].user_attrs["precision"] == "fp32"


def test_default_storage_is_a_sqlite_file_under_studies(tmp_path, idx_dir):
    result = run_main("tuning.search", "--n-trials", "1", "--epochs", "1", "--val-size", "100",
                      "--data-dir", str(idx_dir), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "studies" / "fashion-mnist.db").is_file()


def test_rerun_resumes_toward_the_same_target(tmp_path, searched):
    study = searched.copy_to(tmp_path)  # 4 finished trials of 2 epochs
    result = _search(tmp_path, study.data, "--n-trials", "6", "--epochs", "2")
    assert result.returncode == 0, result.stderr
    assert "resumed" in result.stdout and "4 of 6 trials finished" in result.stdout
    resumed = _load(tmp_path)
    assert len(resumed.get_trials(states=FINISHED)) == 6
    assert sum(t.user_attrs.get("baseline") == "tutorial" for t in resumed.trials) == 1
    again = _search(tmp_path, study.data, "--n-trials", "6", "--epochs", "2")
    assert again.returncode == 0 and "already reached its target" in again.stdout
    assert len(_load(tmp_path).trials) == len(resumed.trials)


def test_same_seed_same_trials_and_values(tmp_path, idx_dir):
    runs = []
    for db in ("a.db", "b.db"):
        result = _search(tmp_path, idx_dir, "--n-trials", "4", "--epochs", "2", "--seed", "7",
                         "--sampler", "random", "--workers", "1", db=db)
        assert result.returncode == 0, result.stderr
        runs.append([(t.params, t.value, t.state) for t in _load(tmp_path, db).trials])
    assert runs[0] == runs[1]


def test_resuming_with_other_epochs_is_refused(tmp_path, searched):
    study = searched.copy_to(tmp_path)  # searched with --epochs 2
    result = _search(tmp_path, study.data, "--n-trials", "5", "--epochs", "3")
    assert result.returncode != 0
    assert "--epochs 2" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("sampler", ["tpe", "random", "qmc"])
@pytest.mark.parametrize("pruner", ["median", "hyperband", "successive-halving", "none"])
def test_every_sampler_and_pruner_runs(tmp_path, idx_dir, sampler, pruner):
    result = _search(tmp_path, idx_dir, "--n-trials", "2", "--epochs", "2",
                     "--sampler", sampler, "--pruner", pruner)
    assert result.returncode == 0, result.stderr
    assert len(_load(tmp_path).get_trials(states=FINISHED)) == 2


@pytest.mark.faults
def test_ctrl_c_keeps_finished_trials_and_a_rerun_completes_the_target(tmp_path, idx_dir):
    # 20 epochs (60 before): the second trial (seed 0, random: batch 16) still trains for
    # seconds on a CPU, well past the half second after the first trial's line when SIGINT
    # arrives (on a GPU both remaining trials might end within it, hence --device cpu).
    args = ["--storage", f"sqlite:///{tmp_path / 's.db'}", "--data-dir", str(idx_dir),
            "--val-size", "100", "--n-trials", "3", "--epochs", "20", "--pruner", "none",
            "--sampler", "random", "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "tuning.search", *args], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    line = ""
    while "[  1/3]" not in line and time.monotonic() < deadline:  # first trial finished
        line = proc.stdout.readline()
        assert line or proc.poll() is None, proc.stderr.read()
    time.sleep(0.5)  # now inside the second trial
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Run the same command again" in stderr and "Traceback" not in stderr
    with sqlite3.connect(tmp_path / "s.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
    study = _load(tmp_path)
    done = len(study.get_trials(states=FINISHED))
    assert 1 <= done < 3
    assert [t.state for t in study.trials].count(TrialState.RUNNING) == 0
    rerun = run_main("tuning.search", *args, cwd=tmp_path)  # the same command, again
    assert rerun.returncode == 0, rerun.stderr
    assert len(_load(tmp_path).get_trials(states=FINISHED)) == 3


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--n-trials", "-1"], "--n-trials must be at least 1"),
        (["--sampler", "grid"], "invalid choice: 'grid'"),
        (["--pruner", "patient"], "invalid choice: 'patient'"),
        (["--storage", "foo://x/y.db"], "unknown scheme 'foo'"),
        (["--storage", "studies/plain-path.db"], "not a database URL"),
        (["--val-size", "600"], "--val-size must be between 1 and 599"),
        (["--val-size", "0"], "--val-size must be at least 1"),
        (["--timeout", "-5"], "--timeout must be a positive"),
        (["--epochs", "three"], "invalid int value"),
        (["--precision", "fp16"], "invalid choice: 'fp16'"),
    ],
)
def test_bad_input_gets_one_line_and_no_study_file(tmp_path, idx_dir, args, expected):
    before = set(tmp_path.rglob("*"))
    result = run_main("tuning.search", "--data-dir", str(idx_dir), *args, cwd=tmp_path)
    assert result.returncode != 0
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert set(tmp_path.rglob("*")) == before  # no study file, no studies/ folder


def test_a_storage_file_that_is_not_sqlite_stays_byte_for_byte(tmp_path, idx_dir):
    target = tmp_path / "thesis.db"
    target.write_bytes(os.urandom(4096))
    digest = _sha(target)
    result = _search(tmp_path, idx_dir, "--n-trials", "1", "--epochs", "1", db="thesis.db")
    assert result.returncode != 0
    assert "not a SQLite database" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert _sha(target) == digest


@pytest.mark.parametrize("damage", ["truncate", "garble"])
def test_a_corrupt_data_dir_stops_before_any_study_exists(tmp_path, damage):
    folder = write_fashion_mnist(tmp_path / "bad", compress=False)
    images = folder / "train-images-idx3-ubyte"
    raw = images.read_bytes()
    images.write_bytes(raw[:1000] if damage == "truncate" else b"\xff" * 4 + raw[4:])
    result = _search(tmp_path, folder, "--n-trials", "1", "--epochs", "1")
    assert result.returncode != 0
    assert "train-images-idx3-ubyte" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "s.db").exists()


def test_the_search_never_reads_the_test_split(tmp_path, idx_dir):
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (idx_dir / name).write_bytes(b"unreadable: the search must not open this")
    result = _search(tmp_path, idx_dir, "--n-trials", "1", "--epochs", "1")
    assert result.returncode == 0, result.stderr


def test_missing_accelerator_is_a_clear_error(tmp_path, idx_dir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA, so --device cuda is valid here")
    result = _search(tmp_path, idx_dir, "--device", "cuda")
    assert result.returncode != 0 and "--device cpu" in result.stderr
    assert not (tmp_path / "s.db").exists()


def test_help_shows_every_flag_with_its_default(tmp_path):
    result = run_main("tuning.search", "--help", cwd=tmp_path)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for flag in ("--study-name", "--storage", "--n-trials", "--timeout", "--epochs", "--sampler",
                 "--pruner", "--seed", "--data-dir", "--device", "--val-size"):
        assert flag in text
    assert "(default: 10)" in text and "(default: fashion-mnist)" in text
    assert "instead of adding a fresh batch" in text
