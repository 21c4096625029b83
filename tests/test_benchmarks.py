"""The benchmark scripts run end to end on tiny data and print what they promise.

These check the machinery only (tables, ratios, the targets line, the Spearman line); the
numbers themselves come from full runs on the real data, quoted in README "Performance".
"""

from __future__ import annotations

import re

from tests.conftest import run_cli


def test_epoch_benchmark_prints_rates_ratios_and_targets_per_batch_size(tmp_path, idx_dir):
    result = run_cli("benchmarks.epoch", "--data-dir", str(idx_dir), "--images", "128",
                     "--repeats", "1", "--batch-sizes", "32", "64", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {int(m[1]): m[0] for m in re.finditer(r"^\s+(\d+) \|.*$", result.stdout, re.M)}
    assert set(rows) == {32, 64}
    # tutorial img/s, then img/s, ratio, GFLOP/s and % of peak for fp32 and bf16
    assert len(re.findall(r"\d\.\d\dx", rows[64])) == 2
    assert re.search(r"target fp32 at batch 64: \d+\.\d\dx the tutorial \(target 2\.0x: "
                     r"(met|missed)\)", result.stdout)


def test_precision_benchmark_reports_spearman_speedup_and_a_verdict(tmp_path, idx_dir):
    result = run_cli("benchmarks.precision", "--data-dir", str(idx_dir), "--val-size", "100",
                     "--configs", "4", "--epochs", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(re.findall(r"^ ?\d+ lr=.* fp32 [01]\.\d{4} .* bf16 [01]\.\d{4} ", result.stdout,
                          re.M)) == 4
    assert re.search(r"Spearman rank correlation of validation accuracies: -?\d\.\d{3}",
                     result.stdout)
    assert re.search(r"verdict: bf16 (may be the search default|stays opt-in)", result.stdout)


def test_search_benchmark_runs_both_searches_and_reads_their_progress(tmp_path, idx_dir):
    result = run_cli("benchmarks.search", "--data-dir", str(idx_dir), "--val-size", "100",
                     "--budget", "40", "--seeds", "3", "--target", "0.3",
                     "--keep", str(tmp_path / "kept"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    line = re.search(r"seed 3: suite (\d+) trials, (\d+) epochs.*naive (\d+) trials, (\d+) "
                     r"epochs", result.stdout)
    assert line, result.stdout
    suite_epochs, naive_epochs = int(line[2]), int(line[4])
    assert suite_epochs >= 1 and naive_epochs >= 1, result.stdout
    assert (tmp_path / "kept" / "suite-3.db").exists()
    assert "speedup to target" in result.stdout
    assert re.search(r"peak memory \(max RSS\): suite \d+ MB, naive \d+ MB", result.stdout)


def test_storage_benchmark_times_both_sqlite_modes_and_prints_the_ratio(tmp_path):
    result = run_cli("benchmarks.storage", "--rounds", "1", "--epochs", "3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.search(r"rollback journal +\d+\.\d\d ms per epoch", result.stdout)
    assert re.search(r"write-ahead log +\d+\.\d\d ms per epoch", result.stdout)
    assert re.search(r"write-ahead log vs rollback journal: \d+\.\d\dx cheaper", result.stdout)
