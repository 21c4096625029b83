"""The benchmark scripts run end to end on tiny data and print what they promise.

These check the machinery only (tables, ratios, the targets line, the Spearman line); the
numbers themselves come from full runs on the real data, quoted in docs/performance.md.
They run in-process, except where the benchmark starts processes of its own (e2e): the search
benchmark runs both searches as subprocesses, and ``--workers 2`` starts a process pool.
"""

from __future__ import annotations

import re

import pandas as pd
import pytest
import torch

from tests.conftest import run_cli, run_main, study_content


def test_confirm_benchmark_times_seeds_one_at_a_time_and_stacked(tmp_path, idx_dir):
    result = run_main("benchmarks.confirm", "--data-dir", str(idx_dir), "--val-size", "100",
                      "--configs", "2", "--seeds", "2", "--precisions", "fp32", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(re.findall(r"^fp32 .* one at a time +\d+\.\d s \| stacked +\d+\.\d s \| "
                          r"\d+\.\d\dx \| largest accuracy gap 0\.\d{4}$", result.stdout,
                          re.M)) == 2
    assert re.search(r"^fp32: all configurations .* -> \d+\.\d\dx", result.stdout, re.M)


def test_epoch_benchmark_prints_rates_ratios_and_targets_per_batch_size(tmp_path, idx_dir):
    result = run_main("benchmarks.epoch", "--data-dir", str(idx_dir), "--images", "128",
                      "--repeats", "1", "--batch-sizes", "32", "64", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {int(m[1]): m[0] for m in re.finditer(r"^\s+(\d+) \|.*$", result.stdout, re.M)}
    assert set(rows) == {32, 64}
    # tutorial img/s, then img/s, ratio, GFLOP/s and % of peak for fp32 on each kernel, bf16
    kernels = 2 if torch.backends.mkldnn.is_available() else 1
    assert len(re.findall(r"\d\.\d\dx", rows[64])) == kernels + 1
    # What the suite chooses on this machine, and the measured peaks, come first.
    assert re.search(r"^float32 kernel chosen here: (aten|onednn) \(.+\)$", result.stdout, re.M)
    assert re.search(r"^precision auto chooses here: (fp32|bf16) \(auto: .+\)$", result.stdout,
                     re.M)
    assert re.search(r"^peaks: fp32 \d+ GFLOP/s, bf16 \d+ GFLOP/s$", result.stdout, re.M)
    assert re.search(r"target fp32 at batch 64: \d+\.\d\dx the tutorial \(target 2\.0x: "
                     r"(met|missed)\)", result.stdout)


@pytest.mark.parametrize("space", ["tutorial", "extended"])
def test_precision_benchmark_reports_spearman_speedup_and_a_verdict(tmp_path, idx_dir, space):
    result = run_main("benchmarks.precision", "--data-dir", str(idx_dir), "--val-size", "100",
                      "--configs", "4", "--epochs", "1", "--space", space, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(re.findall(r"^ ?\d+ lr=.* fp32 [01]\.\d{4} .* bf16 [01]\.\d{4} ", result.stdout,
                          re.M)) == 4
    assert re.search(r"Spearman rank correlation of validation accuracies: -?\d\.\d{3}",
                     result.stdout)
    assert re.search(r"^top by fp32: configuration \d+ .* \((within|beyond) the noise of "
                     r"0\.\d{4}, one standard error of a difference on 100 images\)$",
                     result.stdout, re.M)
    assert re.search(r"verdict: (bf16 ranks configurations as fp32 does|bf16 does not pay)",
                     result.stdout)


@pytest.mark.e2e
def test_search_benchmark_runs_both_searches_and_reads_their_progress(tmp_path, idx_dir):
    # Each search's budget must cover starting Python, torch and the data, and one epoch: the
    # suite's first epoch ended 7 s in at a load of 7 on 2 cores, 11 s in at a load of 11, and
    # once not within 20 s in a full test run. So: a long budget, each search stopped as soon
    # as it reached the target (the benchmark polls its study or event file).
    result = run_main("benchmarks.search", "--data-dir", str(idx_dir), "--val-size", "100",
                      "--budget", "120", "--stop-at-target", "--seeds", "3", "--target", "0.3",
                      "--keep", str(tmp_path / "kept"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    line = re.search(r"seed 3: suite (\d+) trials, (\d+) epochs.*naive (\d+) trials, (\d+) "
                     r"epochs", result.stdout)
    assert line, result.stdout
    suite_epochs, naive_epochs = int(line[2]), int(line[4])
    assert suite_epochs >= 1 and naive_epochs >= 1, result.stdout
    assert (tmp_path / "kept" / "suite-3.db").exists()
    assert "speedup to target" in result.stdout and "(or until the target)" in result.stdout
    assert re.search(r"^   3 \| +\d+\.\d\d +\d+\.\d\d \|", result.stdout, re.M)  # both reached it
    assert re.search(r"median start-up \(process start to first trial\): suite \d+\.\d s",
                     result.stdout)
    assert re.search(r"peak memory \(max RSS\): suite \d+ MB, naive \d+ MB", result.stdout)


@pytest.mark.e2e
def test_chaos_benchmark_kills_searches_mid_trial_and_checks_the_study(tmp_path):
    # A small run of the real thing: search processes on one SQLite study, one SIGKILL in the
    # middle of a trial, one SIGTERM to all, then the counts the benchmark promises. 15 epochs:
    # with 6, a loaded machine once finished every trial before a kill could land in one.
    result = run_main("benchmarks.chaos", "--storage", "sqlite", "--trials", "5",
                      "--processes", "2", "--kills", "2", "--kill-every", "1", "--epochs", "15",
                      cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {words[0]: words[1:] for words in map(str.split, result.stdout.splitlines())
            if len(words) > 1 and words[0] in ("undisturbed", "chaos") and words[1].isdigit()}
    finished, lost, running, _, _, kills, sigterms = (int(x) for x in rows["chaos"][:7])
    assert (finished, lost, running) == (5, 0, 0)
    assert kills >= 1 and sigterms == 1  # --kills 2: a kill, the SIGTERM to all, maybe a kill
    assert rows["undisturbed"][:3] == ["5", "0", "0"]
    assert "verdict: PASS" in result.stdout


def test_storage_benchmark_times_both_sqlite_modes_and_prints_the_ratio(tmp_path):
    result = run_main("benchmarks.storage", "--rounds", "1", "--epochs", "3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.search(r"rollback journal +\d+\.\d\d ms per epoch", result.stdout)
    assert re.search(r"write-ahead log +\d+\.\d\d ms per epoch", result.stdout)
    assert re.search(r"write-ahead log vs rollback journal: \d+\.\d\dx cheaper", result.stdout)


@pytest.mark.e2e
def test_storage_benchmark_runs_clients_on_sqlite_and_the_proxy(tmp_path):
    # The proxy serves a SQLite file of the test's own here (no PostgreSQL server needed).
    database = f"sqlite:///{tmp_path / 'behind.db'}"
    result = run_main("benchmarks.storage", "--clients", "1", "3", "--seconds", "1",
                      "--storages", "sqlite", "proxy", "--postgres", database, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = re.findall(r"^(sqlite|proxy) +(\d+) +(\d+\.\d) \|.*\| (\d+)", result.stdout, re.M)
    assert [(kind, int(n)) for kind, n, _, _ in rows] == [
        ("sqlite", 1), ("sqlite", 3), ("proxy", 1), ("proxy", 3)]
    assert all(float(rate) > 0 and failed == "0" for _, _, rate, failed in rows), result.stdout


def test_train_on_benchmark_pairs_both_retrains_per_seed_and_gives_a_verdict(tmp_path, idx_dir):
    result = run_main("benchmarks.train_on", "--data-dir", str(idx_dir), "--val-size", "100",
                      "--params", "Adam,1e-3,32", "--params", "SGD,0.05,64", "--seeds", "2",
                      "--epochs", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = re.findall(r"^\[ ?\d+/8\] config (\d) seed +(\d+) (train\+val|train) +outer val acc "
                       r"[01]\.\d{4} \(weights of epoch ([12])\)", result.stdout, re.M)
    assert len(lines) == 8, result.stdout
    # every (config, seed) ran once per side; train+val keeps its last epoch
    assert len({(c, s, on) for c, s, on, _ in lines}) == 8
    assert all(epoch == "2" for _, _, on, epoch in lines if on == "train+val")
    assert re.search(r"train\+val - train: [+-]\d+\.\d\d points \(standard error \d+\.\d\d, "
                     r"4 pairs\)", result.stdout)
    assert re.search(r"verdict: train(\+val is the better| stays the) retrain default",
                     result.stdout)


@pytest.mark.e2e
def test_train_on_benchmark_takes_a_studys_best_configurations(tmp_path, searched):
    before = study_content(searched.path)
    result = run_cli("benchmarks.train_on", "--storage", searched.url, "--data-dir",
                     str(searched.data), "--val-size", "100", "--top", "2", "--seeds", "1",
                     "--workers", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "2 configuration(s) x 1 seed(s)" in result.stdout
    assert "2 epochs each; 2 process(es) x 1 torch thread(s)" in result.stdout  # the study's
    assert len(re.findall(r"^\[ \d/4\] config", result.stdout, re.M)) == 4
    assert study_content(searched.path) == before  # it only read the shared study


def test_train_on_benchmark_refuses_a_missing_study_in_one_line(tmp_path):
    result = run_main("benchmarks.train_on", "--storage", f"sqlite:///{tmp_path / 'no.db'}",
                      cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "no.db" in result.stderr


def test_paired_difference_of_train_on_runs():
    from benchmarks.train_on import Run, compare

    runs = [Run(0, 1, "train", 0.80, 5, 1.0), Run(0, 1, "train+val", 0.83, 10, 1.0),
            Run(1, 1, "train", 0.70, 5, 1.0), Run(1, 1, "train+val", 0.71, 10, 1.0),
            Run(1, 2, "train", 0.60, 5, 1.0)]  # no partner: left out
    diff, se, pairs = compare(runs)
    assert pairs == 2
    assert abs(diff - 0.02) < 1e-12
    assert abs(se - 0.01) < 1e-12  # stdev(0.03, 0.01) / sqrt(2)


def test_curves_benchmark_records_a_resumable_table_with_its_header(tmp_path, idx_dir):
    out = tmp_path / "curves.csv"
    args = ("benchmarks.curves", "--data-dir", str(idx_dir), "--val-size", "100", "--lrs", "2",
            "--batch-sizes", "64", "--optimizers", "SGD", "Adam", "--epochs", "2",
            "--second-seed-every", "2", "--precision", "fp32", "--out", str(out))
    result = run_main(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "6 configurations x 2 epochs, 0 already in" in result.stdout  # 4 + 2 second seeds
    lines = out.read_text().splitlines()
    assert re.fullmatch(r"# tutorial img/s: 64=\d+", lines[0])
    assert lines[1].startswith("# machine: ") and "precision fp32; 2 epochs" in lines[2]
    assert lines[3].startswith("# command: python -m benchmarks.curves --data-dir")
    assert lines[4] == "lr,batch_size,optimizer,seed,epoch,val_accuracy,val_loss,train_loss,seconds"
    rows = lines[5:]
    assert len(rows) == 6 * 2
    assert {row.split(",")[0] for row in rows} == {"1e-05", "0.1"}
    again = run_main(*args, cwd=tmp_path)
    assert "6 already in" in again.stdout and "0 to record" in again.stdout
    assert out.read_text().splitlines() == lines  # nothing recorded twice


def test_curves_of_a_larger_space_are_drawn_at_random_and_name_every_knob(tmp_path, idx_dir):
    out = tmp_path / "extended.csv"
    args = ("benchmarks.curves", "--space", "extended", "--configs", "3", "--data-dir",
            str(idx_dir), "--val-size", "100", "--batch-sizes", "64", "--epochs", "1",
            "--second-seed-every", "3", "--precision", "fp32", "--out", str(out))
    result = run_main(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "4 configurations x 1 epochs, 0 already in" in result.stdout  # 3 + 1 second seed
    lines = out.read_text().splitlines()
    assert lines[0] == ("# space: extended, 3 configurations drawn by Optuna's random sampler "
                        "(seed 0)")
    table = pd.read_csv(out, comment="#")
    assert list(table.columns[:4]) == ["config", "lr", "batch_size", "optimizer"]
    assert {"hidden_layers", "schedule", "label_smoothing", "seconds"} <= set(table.columns)
    pairs = sorted(zip(table["config"], table["seed"], strict=True))
    assert pairs == [(0, 1), (0, 2), (1, 1), (2, 1)]
    assert table.groupby("config")["lr"].nunique().max() == 1  # seed 2 trains config 0 again
    again = run_main(*args, cwd=tmp_path)
    assert "4 already in" in again.stdout and "0 to record" in again.stdout
    refused = run_main("benchmarks.simulate", "--table", str(out), cwd=tmp_path)
    assert refused.returncode == 2 and "not naive, suite" in refused.stderr
    replayed = run_main("benchmarks.simulate", "--table", str(out), "--seeds", "2",
                        "--budget-min", "0.05", "--strategies", "random+none", cwd=tmp_path)
    assert replayed.returncode == 0, replayed.stderr
    assert "3 drawn configurations, 1 epochs" in replayed.stdout
    wrong = run_main("benchmarks.curves", "--space", "nosuch", cwd=tmp_path)
    assert wrong.returncode == 2 and "nosuch: no such file" in wrong.stderr


def test_simulate_replays_strategies_on_a_recorded_table(tmp_path, idx_dir):
    out = tmp_path / "curves.csv"
    result = run_main("benchmarks.curves", "--data-dir", str(idx_dir), "--val-size", "100",
                      "--lrs", "2", "--epochs", "2", "--second-seed-every", "5",
                      "--precision", "fp32", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    result = run_main("benchmarks.simulate", "--table", str(out), "--seeds", "3",
                      "--budget-min", "0.05", "--strategies", "naive", "suite",
                      "random+none", "tpe:startup=3+median:startup=2,warmup=1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.search(r"15 \(batch size, optimizer\) groups, 2 epochs, seed noise by best "
                     r"accuracy >=0 0\.\d{4}, >=0\.7 0\.\d{4}, >=0\.8 0\.\d{4}, >=0\.85 0\.\d{4}",
                     result.stdout)
    assert len(re.findall(r"^(naive|suite|random\+none|tpe:startup=3\+median:startup=2,"
                          r"warmup=1) +to 0\.88: .* \| best at 0\.05 min .* \| "
                          r"regret (-?\d\.\d{4}|nan) \| \d+ trials, \d+% pruned, \d+\.\d "
                          r"epochs/trial, baseline ([\d.]+|-) epochs$", result.stdout, re.M)) == 4


def test_knobs_benchmark_pairs_runs_with_and_without_the_change(tmp_path, idx_dir):
    result = run_main("benchmarks.knobs", "--data-dir", str(idx_dir), "--val-size", "100",
                      "--params", '{"lr": 1e-3, "batch_size": 32, "optimizer": "Adam"}',
                      "--change", "hflip=1.0,label_smoothing=0.1", "--seeds", "0", "1",
                      "--epochs", "1", "--precision", "fp32", "--workers", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(re.findall(r"^\[ ?\d/4\] config 0 seed [01] (as given|changed ) val acc",
                          result.stdout, re.M)) == 4
    pairs = re.findall(r"^config 0 seed ([01]): ([01]\.\d{4}) -> ([01]\.\d{4}) \(([+-]\d\.\d{4})\)",
                       result.stdout, re.M)
    assert [seed for seed, *_ in pairs] == ["0", "1"]
    for _, before, after, gain in pairs:
        assert abs(float(after) - float(before) - float(gain)) < 1e-4
    assert re.search(r"^mean gain [+-]\d\.\d{4} \(rule: >= \+0\.0015\); \d+% of pairs gained "
                     r"\(rule: >= 67%\) -> (the change helps|no)$", result.stdout, re.M)


def test_knobs_benchmark_refuses_a_change_the_network_cannot_take(tmp_path, idx_dir):
    result = run_main("benchmarks.knobs", "--data-dir", str(idx_dir), "--params",
                      '{"lr": 1e-3, "batch_size": 32, "optimizer": "Adam"}', "--change",
                      "hflop=0.5", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "hflop" in result.stderr.splitlines()[-1]
    result = run_main("benchmarks.knobs", "--data-dir", str(idx_dir), "--params",
                      '{"lr": 1e-3, "batch_size": 32, "optimizer": "Adam"}', "--change",
                      "hflip=2", cwd=tmp_path)
    assert result.returncode == 2
    assert "hflip=2: hflip takes a probability in [0, 1]" in result.stderr
