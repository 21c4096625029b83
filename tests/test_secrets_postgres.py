"""A storage password against real PostgreSQL servers that ask for it: in no output, no file,
no record and no worker's argument list; and ways to keep it off the command line.

Each test starts a server of its own with password authentication (the shared test server
trusts everyone, so it cannot refuse a wrong password); it skips where PostgreSQL's binaries
are missing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests import pgserver
from tests.conftest import ROOT, run_main
from tests.test_secrets import TOOLS, hidden, tiny
from tuning.study import reconnect
from tuning.study.secrets import STORAGE_ENV
from tuning.workers.cores import FRESH_ENV

pytestmark = [pytest.mark.postgres]
PASSWORD = f"Pg-{uuid.uuid4().hex[:10]}@x%"  # needs percent-encoding in a URL
TINY = ("--val-size", "100", "--sampler", "random", "--pruner", "none", "--precision", "fp32")


def _server(folder: Path) -> Iterator[pgserver.Server]:
    with pgserver.running(folder, password=PASSWORD) as server:
        yield server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pgserver.Server]:
    yield from _server(tmp_path_factory.mktemp("pgpw"))


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """The folder the tools run in: every file they write lands under it."""
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


def _search(url: str, name: str, data: Path, work: Path, *extra: str,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    storage = ("--storage", url) if url else ()
    return run_main("tuning.search", *storage, "--study-name", name, "--data-dir", str(data),
                    *TINY, *extra, cwd=work, env=env)


@pytest.mark.parametrize("tool", TOOLS)
def test_a_wrong_password_is_refused_without_showing_it(server: pgserver.Server, tool: str,
                                                        work: Path, idx_dir: Path) -> None:
    wrong = f"Wrong-{uuid.uuid4().hex[:8]}"
    result = run_main(f"tuning.{tool}", "--storage", server.url_with(wrong),
                      *tiny(tool, idx_dir), cwd=work)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "password authentication failed" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    hidden(wrong, result.stdout, result.stderr, folder=work)
    hidden(PASSWORD, result.stdout, result.stderr, folder=work)


def test_the_whole_pipeline_keeps_the_password_out_of_output_files_and_records(
        server: pgserver.Server, work: Path, idx_dir: Path) -> None:
    url, name = server.url_with(PASSWORD), "pipeline"
    out = work / "out"
    study = ("--study-name", name, "--storage", url)
    results = [
        _search(url, name, idx_dir, work, "--n-trials", "3", "--epochs", "2"),
        run_main("tuning.confirm", *study, "--top", "1", "--seeds", "1", "--data-dir",
                 str(idx_dir), cwd=work),
        run_main("tuning.export", *study, "--out", str(out), cwd=work),
        run_main("tuning.train", *study, "--epochs", "1", "--data-dir", str(idx_dir),
                 "--out", str(out), cwd=work),
        run_main("tuning.report", *study, "--out", str(out / "report"), "--metrics",
                 str(out / f"{name}-test.json"), cwd=work),
        run_main("tuning.whatif", *study, cwd=work),
    ]
    for result in results:
        assert result.returncode == 0, [*result.args[:1], result.stdout, result.stderr]
    assert (out / "report" / "index.html").exists() and (out / f"{name}-test.json").exists()
    assert "postgres:***@127.0.0.1" in results[0].stdout  # shown, masked
    hidden(PASSWORD, *(r.stdout + r.stderr for r in results), folder=work)
    # Every record the study holds (attributes, notes, trials): the whole database, dumped.
    dump = subprocess.run([str(server.bin / "pg_dump"), "-h", "127.0.0.1", "-p",
                           str(server.port), "-U", "postgres", "postgres"],
                          env={**os.environ, "PGPASSWORD": PASSWORD}, capture_output=True,
                          text=True, timeout=120, check=True).stdout
    assert "test_accuracy" in dump  # train's record is in it
    hidden(PASSWORD, dump)
    _dashboard_hides_it(url, name, work)


def _dashboard_hides_it(url: str, name: str, work: Path) -> None:
    command = [sys.executable, "-m", "tuning.dashboard", "--storage", url, "--study-name", name,
               "--port", str(pgserver.free_port())]
    proc = subprocess.Popen(command, cwd=work, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("Dashboard of postgresql+psycopg://postgres:***@"), first
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    hidden(PASSWORD, first, out, err)


def test_pgpassword_pgpass_and_the_storage_variable_keep_it_off_the_command_line(
        server: pgserver.Server, work: Path, idx_dir: Path) -> None:
    env = {STORAGE_ENV: server.url, "PGPASSWORD": PASSWORD}  # a URL without a password
    result = _search("", "from-env", idx_dir, work, "--n-trials", "1", "--epochs", "1", env=env)
    assert result.returncode == 0, result.stderr
    assert f"in {server.url} (new)" in result.stdout
    pgpass = work.parent / "pgpass"
    pgpass.write_text(f"127.0.0.1:{server.port}:*:postgres:{PASSWORD}\n")
    pgpass.chmod(0o600)  # libpq ignores a password file that others may read
    result = run_main("tuning.whatif", "--study-name", "from-env", "--storage", server.url,
                      cwd=work, env={"PGPASSFILE": str(pgpass)})
    assert result.returncode == 0, result.stderr
    os.environ.pop("PGPASSWORD", None)  # (run_main restores os.environ; this is belt and braces)
    result = run_main("tuning.whatif", "--study-name", "from-env", "--storage", server.url,
                      cwd=work, env={"PGPASSFILE": str(work / "none")})
    assert result.returncode == 2 and "password" in result.stderr


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def _two_workers(proc: subprocess.Popen) -> list[int]:
    """The pids of the two workers of the search ``proc``, once both started."""
    deadline = time.monotonic() + 120
    while len(workers := _children(proc.pid)) < 2:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the workers never started"
        time.sleep(0.2)
    return workers


@pytest.mark.e2e
def test_fresh_workers_get_the_url_in_their_environment_not_their_argument_lists(
        server: pgserver.Server, work: Path, idx_dir: Path) -> None:
    # Workers that are fresh interpreters (not forks): the supervisor writes their command lines.
    url = server.url_with(PASSWORD)
    command = [sys.executable, "-m", "tuning.search", "--storage", url, "--study-name", "ps",
               "--data-dir", str(idx_dir), *TINY, "--n-trials", "4", "--epochs", "400",
               "--workers", "2"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), FRESH_ENV: "1"}
    proc = subprocess.Popen(command, cwd=work, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        workers = _two_workers(proc)
        for pid in workers:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            assert b"--worker" in argv and b"--storage" not in argv, argv
            hidden(PASSWORD, b" ".join(argv).decode())
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            assert f"{STORAGE_ENV}={url}".encode() in environ
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    hidden(PASSWORD, out, err)
    assert "postgres:***@" in err, err  # the stop message names where the trials are kept


@pytest.mark.e2e
def test_forked_workers_show_no_password_the_command_did_not(
        server: pgserver.Server, work: Path, idx_dir: Path) -> None:
    # The default: workers forked from the supervisor have its command line, and no other.
    url = server.url_with(PASSWORD)
    command = [sys.executable, "-m", "tuning.search", "--study-name", "ps", "--data-dir",
               str(idx_dir), *TINY, "--n-trials", "4", "--epochs", "400", "--workers", "2"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), STORAGE_ENV: url}
    proc = subprocess.Popen(command, cwd=work, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        workers = _two_workers(proc)
        own = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        for pid in workers:
            assert Path(f"/proc/{pid}/cmdline").read_bytes() == own
            hidden(PASSWORD, own.replace(b"\0", b" ").decode())
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    hidden(PASSWORD, out, err)


@pytest.mark.faults
def test_a_server_stopped_mid_search_fails_it_without_showing_the_password(
        tmp_path: Path, work: Path, idx_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reconnect, "RECONNECT_WAIT_S", 3)  # give up soon, not after 2 minutes
    folder = tmp_path / "pg"
    folder.mkdir()
    servers = _server(folder)
    server = next(servers)
    url = server.url_with(PASSWORD)

    def stop_when_training() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            # Never creates the tables itself: that would race with the search creating them.
            with contextlib.suppress(Exception):  # not created yet, not set up yet
                storage = optuna.storages.RDBStorage(url, skip_table_creation=True)
                trials = optuna.load_study(study_name="stopped", storage=storage).trials
                if any(t.state == TrialState.RUNNING and t.intermediate_values for t in trials):
                    server.stop()
                    return
            time.sleep(0.2)

    stopper = threading.Thread(target=stop_when_training, daemon=True)
    stopper.start()
    try:
        result = _search(url, "stopped", idx_dir, work, "--n-trials", "2", "--epochs", "5000",
                         "--heartbeat", "1")
    finally:
        stopper.join(timeout=130)
        with contextlib.suppress(StopIteration):
            next(servers)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "the search stopped" in result.stderr
    hidden(PASSWORD, result.stdout, result.stderr, folder=work)
    for tool in TOOLS:  # and every tool on the server that stays away
        later = run_main(f"tuning.{tool}", "--storage", url, "--study-name", "stopped",
                         *tiny(tool, idx_dir), cwd=work)
        assert later.returncode == 2 and "Connection refused" in later.stderr, later.stderr
        hidden(PASSWORD, later.stdout, later.stderr, folder=work)
