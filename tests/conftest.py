"""Shared fixtures: tiny synthetic FashionMNIST-format IDX files, and running the CLIs.

Tests come in tiers, by marker (pyproject.toml registers them): ``e2e`` runs a tool in a
subprocess as a user would, ``faults`` sends real signals or breaks a disk, ``postgres`` needs
the PostgreSQL server, ``browser`` drives Chromium, ``realdata`` reads the real FashionMNIST.
Every other test is ``fast``: in-process, tiny synthetic data, real SQLite in tmp_path.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from benchmarks.synthetic import write_fashion_mnist

if TYPE_CHECKING:
    from model.data import TrainValSplit

# The tests train tiny networks on tiny data, where torch's OpenMP threads mostly spin waiting
# for each other, and on a busy 2-core machine that is ruinous: 2 trials of 60 epochs on 500
# images took 148 s of CPU with 2 threads and 14 s with 1. So every test process, and every
# tool it starts, trains with one thread unless a test says otherwise (set before torch loads).
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def own_cores_folder(tmp_path_factory: pytest.TempPathFactory,
                     monkeypatch: pytest.MonkeyPatch) -> Path:
    """The folder where this test's tools claim CPU cores (tuning/workers/cores.py), its own.

    The suite runs 3 tests at once; with one folder each, a tool in one test does not warn about
    a tool in another, as if each test had a machine to itself.
    """
    folder = tmp_path_factory.mktemp("cores")
    monkeypatch.setenv("FASHION_TUNE_CORES_DIR", str(folder))
    return folder


@pytest.fixture(autouse=True)
def no_storage_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A $FASHION_TUNE_STORAGE of the user's must not send the tests' studies elsewhere."""
    monkeypatch.delenv("FASHION_TUNE_STORAGE", raising=False)


@pytest.fixture
def idx_dir(tmp_path: Path) -> Path:
    """A folder holding synthetic gzipped FashionMNIST files (600 train, 100 test images)."""
    return write_fashion_mnist(tmp_path / "fmnist")


@pytest.fixture
def no_system_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Hide Debian's system copy and $FASHION_MNIST_DIR from the data finder."""
    import model.data

    monkeypatch.setattr(model.data, "SYSTEM_DIR", tmp_path / "no-system-copy")
    monkeypatch.delenv(model.data.ENV_VAR, raising=False)


@pytest.fixture
def split(idx_dir: Path, no_system_data: None) -> TrainValSplit:
    """The synthetic training images split as a search splits them: 100 for validation."""
    from model.data import load_split, locate, split_train_val

    return split_train_val(load_split(locate(idx_dir, download=False), "train"), 100, seed=0)


SLOW_TIERS = ("e2e", "faults", "postgres", "browser", "realdata")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test of no slower tier ``fast``, so ``-m fast`` selects the everyday tier."""
    for item in items:
        if not any(item.get_closest_marker(tier) for tier in SLOW_TIERS):
            item.add_marker(pytest.mark.fast)


@contextlib.contextmanager
def _environment(env: dict[str, str] | None, cwd: Path) -> Iterator[None]:
    """``env`` added to os.environ and ``cwd`` as the working folder, both undone afterwards."""
    saved, here = dict(os.environ), Path.cwd()
    os.environ.update(env or {})
    os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(here)
        os.environ.clear()
        os.environ.update(saved)


def run_main(
    module: str, *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``module``'s ``main(args)`` in this process, from ``cwd``, with ``env`` added.

    What ``run_cli`` does without starting Python again: the tool's exit status (argparse's
    SystemExit included), its stdout and its stderr, in a CompletedProcess. The torch thread
    count, which a tool may set, is restored afterwards.
    """
    import torch

    from tuning.workers import cores

    threads = torch.get_num_threads()
    out, err = io.StringIO(), io.StringIO()
    with (_environment(env, cwd), contextlib.redirect_stdout(out),
          contextlib.redirect_stderr(err)):
        try:
            status = importlib.import_module(module).main(list(args))
        except SystemExit as exc:  # --help and argparse's errors
            status = exc.code if isinstance(exc.code, int) else 1
        finally:
            torch.set_num_threads(threads)
            cores.release_all()  # as the tool's process would on exit
    return subprocess.CompletedProcess([module, *args], status, out.getvalue(), err.getvalue())


def run_cli(
    module: str, *args: str, cwd: Path, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``python -m module args`` the way a user would, from ``cwd``, with ``env`` added."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )


def study_content(path: Path) -> str:
    """A digest of everything a SQLite study file holds, as SQL.

    Not of its bytes: a study the search switched to write-ahead logging may hold commits in
    ``<file>-wal`` that the next connection to close folds into the file; that changes the
    bytes, never the content.
    """
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return hashlib.sha256("\n".join(conn.iterdump()).encode()).hexdigest()
    finally:
        conn.close()


@dataclass(frozen=True)
class Searched:
    """A finished study on synthetic data, and where its pieces are."""

    dir: Path  # the folder it was made in (and exported to)
    path: Path  # its SQLite file
    data: Path  # the synthetic IDX folder it was searched on
    name: str = "fashion-mnist"

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path}"

    @property
    def config(self) -> Path:
        """Its exported best configuration."""
        return self.dir / f"{self.name}-best.json"

    def copy_to(self, folder: Path) -> Searched:
        """A copy of the study (its data and export shared) that a test may change.

        SQLite's backup copies what the write-ahead log holds too, which a file copy misses.
        """
        path = folder / self.path.name
        with contextlib.closing(sqlite3.connect(self.path)) as source, \
                contextlib.closing(sqlite3.connect(path)) as target:
            source.backup(target)
        if self.config.exists():
            (folder / self.config.name).write_bytes(self.config.read_bytes())
        return Searched(folder, path, self.data, self.name)


# fp32 whatever the machine: a float32 retrain replays its trials (auto would pick bf16 on a
# CPU with avx512_bf16). One process: the same trials every run (side by side, timing decides
# which trial gets which draw). With seed 0, its third trial is pruned after epoch 1.
SEARCHED_ARGS = ("--val-size", "100", "--n-trials", "4", "--epochs", "2", "--pruner",
                 "successive-halving", "--precision", "fp32", "--workers", "1")


@pytest.fixture(scope="session")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Searched:
    """One finished 4-trial, 2-epoch study for every test that reads one, exported.

    Made once per session, in-process. Treat it as read-only: a test that writes to the study
    (confirm, train, a new trial) works on ``searched.copy_to(tmp_path)``.
    """
    tmp = tmp_path_factory.mktemp("searched")
    study = Searched(tmp, tmp / "s.db", write_fashion_mnist(tmp / "fmnist"))
    result = run_main("tuning.search", "--storage", study.url, "--data-dir", str(study.data),
                      *SEARCHED_ARGS, cwd=tmp)
    assert result.returncode == 0, result.stderr
    result = run_main("tuning.export", "--storage", study.url, "--out", str(tmp), cwd=tmp)
    assert result.returncode == 0, result.stderr
    return study


@pytest.fixture(scope="session")
def searched_extended(tmp_path_factory: pytest.TempPathFactory) -> Searched:
    """A finished 4-trial, 2-epoch study of the extended space (batch norm on), exported, and
    its chosen trial retrained for 1 epoch: ``<dir>/fashion-mnist-model.pt`` and ``-test.json``.

    Made once per session, in-process. Read-only, as ``searched``.
    """
    tmp = tmp_path_factory.mktemp("extended")
    study = Searched(tmp, tmp / "s.db", write_fashion_mnist(tmp / "fmnist"))
    result = run_main("tuning.search", "--storage", study.url, "--data-dir", str(study.data),
                      *SEARCHED_ARGS, "--space", "extended", cwd=tmp)
    assert result.returncode == 0, result.stderr
    for tool, *args in (("tuning.export",), ("tuning.train", "--data-dir", str(study.data),
                                             "--epochs", "1")):
        result = run_main(tool, "--storage", study.url, "--out", str(tmp), *args, cwd=tmp)
        assert result.returncode == 0, result.stderr
    return study
