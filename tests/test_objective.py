from __future__ import annotations

import optuna
import pytest
import torch
from optuna.trial import TrialState

from tuning.study.protocol import HISTORY_KEYS, derive_seed
from tuning.study.storage import Location, open_storage
from tuning.training.objective import Objective


def _study(tmp_path, pruner=None):
    storage = open_storage(Location.parse(f"sqlite:///{tmp_path / 'objective.db'}"))
    return optuna.create_study(
        storage=storage, study_name="t", direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=0), pruner=pruner or optuna.pruners.NopPruner(),
    )


def test_each_epoch_is_reported_and_recorded(tmp_path, split):
    study = _study(tmp_path)
    study.enqueue_trial({"lr": 1e-3, "batch_size": 32, "optimizer": "Adam"})
    reports = []
    study.optimize(Objective(split, epochs=3, seed=0, device=torch.device("cpu"),
                             on_epoch=lambda number, result: reports.append(result)),
                   n_trials=1)
    trial = study.trials[0]
    assert trial.state == TrialState.COMPLETE
    assert sorted(trial.intermediate_values) == [1, 2, 3]
    for key in HISTORY_KEYS:
        assert len(trial.user_attrs[key]) == 3
    assert trial.user_attrs["val_accuracy"] == [trial.intermediate_values[e] for e in (1, 2, 3)]
    assert trial.value == max(trial.intermediate_values.values())
    assert trial.value > 0.9  # the synthetic classes are easy
    assert trial.user_attrs["seed"] == derive_seed(0, 0)
    assert [r.epoch for r in reports] == [1, 2, 3]


def test_a_trial_the_pruner_rejects_ends_pruned_with_its_reason(tmp_path, split):
    # ThresholdPruner with an unreachable lower bound prunes at the first report.
    study = _study(tmp_path, pruner=optuna.pruners.ThresholdPruner(lower=1.1))
    study.optimize(Objective(split, epochs=4, seed=0, device=torch.device("cpu")), n_trials=1)
    trial = study.trials[0]
    assert trial.state == TrialState.PRUNED
    assert list(trial.intermediate_values) == [1]
    assert "pruner stopped it after epoch 1" in trial.user_attrs["pruned_reason"]


@pytest.mark.filterwarnings("ignore:Fixed parameter lr with value 1000000.0 is out of range")
def test_a_diverging_trial_is_pruned_with_the_reason_and_the_study_goes_on(tmp_path, split):
    study = _study(tmp_path)
    # Outside the lr range: Optuna warns but keeps an enqueued value, which is what we need.
    study.enqueue_trial({"lr": 1e6, "batch_size": 32, "optimizer": "SGD"})
    study.enqueue_trial({"lr": 1e-3, "batch_size": 32, "optimizer": "Adam"})
    study.optimize(Objective(split, epochs=2, seed=0, device=torch.device("cpu")), n_trials=2)
    diverged, healthy = study.trials
    assert diverged.state == TrialState.PRUNED
    assert "diverged in epoch 1" in diverged.user_attrs["pruned_reason"]
    assert healthy.state == TrialState.COMPLETE


def test_trial_seeds_differ_between_trials_and_study_seeds():
    seeds = {derive_seed(s, n) for s in range(5) for n in range(20)}
    assert len(seeds) == 100
    assert derive_seed(3, 7) == derive_seed(3, 7)


def test_same_seed_gives_the_same_values(tmp_path, split):
    values = []
    for run in range(2):
        storage = open_storage(Location.parse(f"sqlite:///{tmp_path / f'r{run}.db'}"))
        study = optuna.create_study(storage=storage, direction="maximize",
                                    sampler=optuna.samplers.RandomSampler(seed=5))
        study.optimize(Objective(split, epochs=1, seed=5, device=torch.device("cpu")), n_trials=2)
        values.append([(t.params, t.value) for t in study.trials])
    assert values[0] == values[1]
