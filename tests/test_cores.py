"""The claims on this machine's CPU cores, and the warning a tool prints when they are full."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_main
from tuning.workers import cores
from tuning.workers.cores import Claim, claim, cpu_cores, crowding

pytestmark = pytest.mark.e2e  # the other claimant is a real process

SMALL = ("--n-trials", "1", "--epochs", "1", "--val-size", "100")


def _holder(folder: Path, threads: int) -> subprocess.Popen:
    """Another process that claims ``threads`` cores in ``folder`` and keeps them until killed."""
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from tuning.workers.cores import claim
        claim("python -m tuning.confirm", {threads}, Path({str(folder)!r}))
        print("claimed", flush=True)
        time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None and proc.stdout.readline() == "claimed\n"
    return proc


def test_a_live_process_is_seen_and_its_claim_goes_with_it_even_when_killed(tmp_path):
    proc = _holder(tmp_path, 2)
    try:
        assert claim("python -m tuning.search", 1, tmp_path) == [
            Claim(proc.pid, "python -m tuning.confirm", 2)]
    finally:
        cores.release_all()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # kill -9 leaves its file behind, but not its lock: nobody is counted.
    assert claim("python -m tuning.search", 1, tmp_path) == []
    cores.release_all()


def test_this_process_does_not_count_itself_and_a_released_claim_is_gone(tmp_path):
    assert claim("a", 2, tmp_path) == []
    assert claim("b", 2, tmp_path) == []  # its own earlier claim is not another process
    cores.release_all()
    proc = _holder(tmp_path, 1)
    try:
        assert [c.pid for c in claim("c", 1, tmp_path)] == [proc.pid]  # not "a" or "b"
    finally:
        cores.release_all()
        proc.kill()
        proc.wait()


def test_the_warning_names_the_others_and_only_comes_when_the_cores_are_full():
    other = Claim(123, "python -m tuning.confirm", 2)
    assert crowding([], 2, 2) is None
    assert crowding([Claim(9, "python -m tuning.search", 1)], 1, 2) is None  # 1 + 1 fits
    warning = crowding([other], 2, 2)
    assert warning is not None
    assert warning.startswith("1 other fashion-tune process(es) already train on this "
                              "machine's 2 CPU core(s): pid 123 (python -m tuning.confirm, "
                              "2 thread(s)). With this one's 2 thread(s) that is 4 threads")
    assert "Ctrl-C" in warning


def test_an_unusable_folder_leaves_the_tool_running_without_the_check(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert claim("a", 2, blocker / "cores") == []


def test_a_search_beside_a_busy_machine_warns_and_still_runs(tmp_path, idx_dir,
                                                             own_cores_folder):
    proc = _holder(own_cores_folder, cpu_cores())
    try:
        busy = run_main("tuning.search", "--storage", f"sqlite:///{tmp_path / 's.db'}",
                        "--data-dir", str(idx_dir), *SMALL, cwd=tmp_path)
    finally:
        proc.kill()
        proc.wait()
    assert busy.returncode == 0, busy.stderr
    assert (f"python -m tuning.search: warning: 1 other fashion-tune process(es) already train "
            f"on this machine's {cpu_cores()} CPU core(s): pid {proc.pid} "
            "(python -m tuning.confirm") in busy.stderr
    # Alone, the same command (resumed with one trial more) says nothing of the kind.
    alone = run_main("tuning.search", "--storage", f"sqlite:///{tmp_path / 's.db'}",
                     "--data-dir", str(idx_dir), *SMALL[2:], "--n-trials", "2", cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr
    assert "warning" not in alone.stderr
