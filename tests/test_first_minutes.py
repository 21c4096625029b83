"""Issue 28: what a new user meets in the first ten minutes, each point against real SQLite.

The search records its sampler, pruner and seed and refuses a resume with others; a study made
beforehand by ``optuna create-study`` is adopted at once; the next steps the search prints work
in a fresh shell; tools refuse abbreviated flags; the dashboard refuses a study name that is
not in its storage; spacetool reports like the search; a bad ``--out`` is one line.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from tests.conftest import run_main
from tuning.cli.search_output import next_steps
from tuning.study.lifecycle import SETUP_WAIT_S

SMALL = ("--val-size", "100", "--n-trials", "2", "--epochs", "1", "--precision", "fp32")
TOOLS = ("search", "confirm", "export", "train", "report", "dashboard", "whatif")


def _search(tmp_path: Path, idx_dir: Path, *args: str):
    return run_main("tuning.search", "--storage", f"sqlite:///{tmp_path / 's.db'}",
                    "--data-dir", str(idx_dir), *SMALL, *args, cwd=tmp_path)


@pytest.mark.parametrize("flag, value", [("--sampler", "random"), ("--pruner", "median"),
                                         ("--seed", "7")])
def test_a_resume_with_another_sampler_pruner_or_seed_is_refused_in_one_line(
    tmp_path, idx_dir, flag, value
):
    first = _search(tmp_path, idx_dir)
    assert first.returncode == 0, first.stderr
    study = optuna.load_study(study_name="fashion-mnist", storage=f"sqlite:///{tmp_path / 's.db'}")
    attrs = study.user_attrs
    assert (attrs["sampler"], attrs["pruner"], attrs["seed"]) == ("tpe", "successive-halving", 0)
    before = len(study.trials)
    result = _search(tmp_path, idx_dir, "--n-trials", "3", flag, value)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    recorded = {"--sampler": "tpe", "--pruner": "successive-halving", "--seed": "0"}[flag]
    assert f"rerun with {flag} {recorded} to resume it" in result.stderr
    assert len(study.trials) == before  # nothing run


def test_the_export_records_the_sampler_pruner_and_seed(searched):
    config = json.loads(searched.config.read_text())
    assert (config["sampler"], config["pruner"], config["seed"]) == (
        "tpe", "successive-halving", 0)


def test_a_study_made_by_optuna_create_study_is_adopted_at_once(tmp_path, idx_dir):
    url = f"sqlite:///{tmp_path / 's.db'}"
    # What `optuna create-study --direction maximize` does (its CLI calls this, nothing more).
    optuna.create_study(study_name="fashion-mnist", storage=url, direction="maximize")
    started = time.monotonic()
    result = _search(tmp_path, idx_dir)
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert took < SETUP_WAIT_S / 2, f"waited {took:.0f} s before adopting the study"
    assert "(new)" in result.stdout
    study = optuna.load_study(study_name="fashion-mnist", storage=url)
    assert study.user_attrs["epochs"] == 1 and study.user_attrs["sampler"] == "tpe"
    assert len(study.trials) == 2


@pytest.mark.e2e
def test_the_optuna_command_line_create_study_is_adopted_at_once(tmp_path, idx_dir):
    url = f"sqlite:///{tmp_path / 's.db'}"
    optuna_cli = Path(sys.executable).parent / "optuna"
    subprocess.run([str(optuna_cli), "create-study", "--study-name", "fashion-mnist",
                    "--storage", url, "--direction", "maximize"], check=True,
                   capture_output=True)
    started = time.monotonic()
    result = _search(tmp_path, idx_dir)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < SETUP_WAIT_S / 2


def test_the_next_steps_start_with_this_folder_and_the_venv_then_the_pipeline(
    tmp_path, monkeypatch
):
    venv = tmp_path / ".venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text("")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "prefix", str(venv))
    monkeypatch.setattr(sys, "base_prefix", "/usr")
    lines = next_steps("sqlite:///studies/quick.db", "quick")
    commands = [line.split("  #")[0].strip() for line in lines[1:]]
    assert commands == [
        f"cd {tmp_path} && source .venv/bin/activate",
        "python -m tuning.confirm --study-name quick",
        "python -m tuning.export --study-name quick",
        "python -m tuning.train --config studies/quick-best.json",
        "python -m tuning.report --study-name quick",
        "optuna-dashboard sqlite:///studies/quick.db --artifact-dir studies/quick-artifacts",
    ]
    other = next_steps("sqlite:////data/x.db", "quick")
    assert "python -m tuning.confirm --study-name quick --storage sqlite:////data/x.db" in (
        "\n".join(other))
    secret = "\n".join(next_steps("postgresql+psycopg://tuner:sekrit99@db:5432/x", "quick"))
    assert "sekrit99" not in secret and "tuner:***@db" in secret


def test_the_printed_next_steps_run_in_a_fresh_shell(tmp_path, idx_dir):
    # The search run as scripts/search.sh runs it: the venv's python, not activated.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    search = subprocess.run(
        [sys.executable, "-m", "tuning.search", "--study-name", "quick", "--data-dir",
         str(idx_dir), *SMALL], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=300)
    assert search.returncode == 0, search.stderr
    steps = search.stdout.split("Next steps")[1].splitlines()[1:]
    setup, export = steps[0].split("#")[0], steps[2].split("#")[0]
    assert setup.strip().startswith("cd ") and "activate" in setup
    # A fresh shell elsewhere, with no venv: the printed lines as they are.
    shell = subprocess.run(["bash", "-c", f"{setup}\n{export}"], cwd="/", capture_output=True,
                           env=env, text=True, timeout=300)
    assert shell.returncode == 0, shell.stderr
    assert (tmp_path / "studies" / "quick-best.json").exists()


@pytest.mark.parametrize("tool", TOOLS)
def test_no_tool_takes_an_abbreviated_flag(tool, tmp_path):
    result = run_main(f"tuning.{tool}", "--study-nam", "x", cwd=tmp_path)
    assert result.returncode == 2
    assert "unrecognized arguments: --study-nam" in result.stderr


def test_search_refuses_n_tri(tmp_path):
    result = run_main("tuning.search", "--n-tri", "3", cwd=tmp_path)
    assert result.returncode == 2 and "--n-tri" in result.stderr
    assert not (tmp_path / "studies").exists()


def test_the_dashboard_refuses_a_study_name_its_storage_lacks(searched, tmp_path):
    with socket.socket() as taken:  # were the name not checked, it would fail on the port
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = run_main("tuning.dashboard", "--study-name", "typo", "--storage", searched.url,
                          "--port", str(taken.getsockname()[1]), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "there is no study 'typo'" in result.stderr and "fashion-mnist" in result.stderr


def test_spacetool_check_reports_problems_on_stderr_with_status_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[lr]\ntype = "float"\nlow = 0\nhigh = 1\nlog = true\n')
    result = run_main("tuning.spacetool", "check", str(bad), cwd=tmp_path)
    assert result.returncode == 2
    assert "lr: log needs low > 0" in result.stderr and result.stdout == ""
    search = run_main("tuning.search", "--space", str(bad), cwd=tmp_path)
    assert search.returncode == result.returncode


@pytest.mark.parametrize("tool", ["export", "report", "train"])
def test_an_out_under_a_regular_file_is_one_clear_line(tool, searched, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    args = ["--storage", searched.url, "--out", str(afile / "sub")]
    result = run_main(f"tuning.{tool}", *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"{afile} is a file, not a folder" in result.stderr
    assert "Errno" not in result.stderr
