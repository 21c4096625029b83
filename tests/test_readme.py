"""The README's commands, taken from README.md itself, run one after another as printed.

In a copy of the working tree (its .venv linked in) on synthetic data big enough for the
defaults (10,600 training images: the default 10,000 for validation and 600 to train on), in
one bash session, so ``source .venv/bin/activate`` holds for the lines after it. Two lines are
not run as they are: ``bash scripts/test.sh`` (this suite itself) is left out, and the two
dashboards, which serve until Ctrl-C, are started, asked for a page, then stopped; where port
8080 is taken on this machine, they get a free ``--port`` instead.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import optuna
import pytest

from benchmarks.synthetic import synthetic_split, write_idx
from tests.conftest import ROOT

pytestmark = pytest.mark.e2e

SKIPPED = ("bash scripts/test.sh",)  # the whole suite, this test included
SERVERS = {"optuna-dashboard ": "/", "python -m tuning.dashboard": "/dashboard/"}
DEFAULT_PORT = 8080


def readme_commands(text: str) -> list[str]:
    """Every command line of the README's bash blocks, in order, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            command = line.split(" #")[0].strip()
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _served(command: str, path: str) -> str:
    """Bash that starts ``command``, waits until ``path`` answers, and stops it."""
    port = DEFAULT_PORT
    if not _port_free(port):
        port = _free_port()
        command += f" --port {port}"
    url = f"http://127.0.0.1:{port}{path}"
    return (f"{command} >server.log 2>&1 & server=$!\n"
            f"for _ in $(seq 300); do curl -sf {url} >/dev/null && break; sleep 0.2; done\n"
            f"curl -sf {url} >/dev/null && echo 'served {url}' >>served.txt\n"
            "kill $server; wait $server || true\n")  # SIGTERM: a background job ignores SIGINT


def _copy_tree(target: Path) -> None:
    """The files git tracks or would track (not .venv, studies, data), and a link to .venv."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, check=True, capture_output=True, text=True).stdout
    for name in listed.splitlines():
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    (target / ".venv").symlink_to(ROOT / ".venv")
    # The linked .venv is ROOT's. Were the copy's pyproject.toml newer than the venv's stamp,
    # the copy's scripts/setup.sh would reinstall, pointing ROOT's editable install at this
    # temporary copy (gone after the run, and every later run's imports with it).
    stamp = ROOT / ".venv" / ".installed"
    if not stamp.is_file():
        pytest.fail(f"{stamp} is missing: run bash scripts/setup.sh, which makes it, first")
    os.utime(target / "pyproject.toml", ns=(stamp.stat().st_atime_ns, stamp.stat().st_mtime_ns))


def _data(folder: Path) -> Path:
    folder.mkdir()
    for prefix, n, seed in (("train", 10_600, 1), ("t10k", 100, 2)):
        images, labels = synthetic_split(n, seed)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels)
    return folder


def test_the_readmes_commands_run_one_after_another_as_printed(tmp_path):
    commands = readme_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    assert commands[0] == "bash scripts/search.sh"
    assert "source .venv/bin/activate" in commands
    clone = tmp_path / "clone"
    _copy_tree(clone)
    script = ["set -euo pipefail"]
    for command in commands:
        if command in SKIPPED:
            continue
        server = next((path for prefix, path in SERVERS.items() if command.startswith(prefix)),
                      None)
        script.append(command if server is None else _served(command, server))
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path),
           "FASHION_MNIST_DIR": str(_data(tmp_path / "fmnist")), "OMP_NUM_THREADS": "1",
           "FASHION_TUNE_CORES_DIR": os.environ["FASHION_TUNE_CORES_DIR"]}
    result = subprocess.run(["bash", "-c", "\n".join(script)], cwd=clone, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    studies = clone / "studies"
    demo = optuna.load_study(study_name="demo", storage=f"sqlite:///{studies / 'demo.db'}")
    assert len(demo.trials) == 24 and demo.user_attrs["epochs"] == 2
    study = optuna.load_study(study_name="fashion-mnist",
                              storage=f"sqlite:///{studies / 'fashion-mnist.db'}")
    assert len(study.trials) == 20 and study.user_attrs["epochs"] == 10
    assert any(key.startswith("confirm_trial_") for key in study.user_attrs)
    assert "test_accuracy" in study.user_attrs
    for name in ("fashion-mnist-best.json", "fashion-mnist-trials.csv", "fashion-mnist-model.pt",
                 "fashion-mnist-test.json", "fashion-mnist-report/index.html"):
        assert (studies / name).is_file(), name
    served = (clone / "served.txt").read_text().splitlines()
    assert len(served) == 2, served
    assert "Next steps" in result.stdout and "Traceback" not in result.stderr
