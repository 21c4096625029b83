"""tuning.training.retrain with the knobs that change what is trained or kept: hflip, ema_epochs."""

from __future__ import annotations

import pytest
import torch

from model.loops import evaluate, run_epochs
from tuning.space.hyperparameters import Hyperparameters
from tuning.training.retrain import recipe, retrain, retrain_seeds, seeded_start, stackable

CPU = torch.device("cpu")
AVERAGED = Hyperparameters(lr=1e-3, batch_size=32, optimizer="Adam", ema_epochs=0.5)


def test_the_weight_average_spans_its_epochs_whatever_the_batch_size():
    for batch_size, steps in ((100, 500), (250, 200)):
        params = Hyperparameters(lr=1e-3, batch_size=batch_size, optimizer="Adam",
                                 ema_epochs=0.5)
        assert recipe(params, 50_000, 10)["ema_decay"] == pytest.approx(1 - 1 / (steps / 2))
    assert recipe(Hyperparameters(1e-3, 64, "Adam"), 50_000, 10)["ema_decay"] == 0.0
    # A span of one step or less averages nothing: no average at all.
    assert recipe(Hyperparameters(1e-3, 100, "Adam", ema_epochs=0.001), 50_000, 10)[
        "ema_decay"] == 0.0


def test_a_retrain_keeps_and_scores_the_averaged_weights(split):
    result = retrain(AVERAGED, split.train, split.val, 3, 7, CPU)
    accuracies = result.history["val_accuracy"]
    assert evaluate(result.model, split.val)[1] == max(accuracies)
    # Without validation images it keeps the last epoch's average, not the trained weights.
    kept = retrain(AVERAGED, split.train, None, 3, 7, CPU).model.state_dict()
    model, optimizer, shuffle = seeded_start(AVERAGED, 7, CPU)
    *_, last = run_epochs(model, optimizer, split.train, None, epochs=3, generator=shuffle,
                          **recipe(AVERAGED, len(split.train), 3))
    assert last.scored is not None and last.scored is not model
    for key, value in last.scored.state_dict().items():
        assert torch.equal(kept[key], value), key
    assert any(not torch.equal(kept[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("knob", [{"ema_epochs": 0.5}, {"hflip": 0.5}])
def test_seeds_of_a_configuration_the_stack_cannot_train_run_one_at_a_time(split, knob):
    params = Hyperparameters(lr=1e-3, batch_size=32, optimizer="Adam", **knob)
    assert not stackable(params) and stackable(Hyperparameters(1e-3, 32, "Adam"))
    runs = retrain_seeds(params, split.train, split.val, 2, [3, 4], CPU)
    for run in runs:
        alone = retrain(params, split.train, split.val, 2, run.seed, CPU).history
        for key in ("train_loss", "val_loss", "val_accuracy"):
            assert run.history[key] == alone[key]


def test_batch_norm_with_a_weight_average_trains_scores_and_keeps_its_statistics(split):
    params = Hyperparameters(lr=1e-3, batch_size=32, optimizer="Adam", batch_norm=True,
                             ema_epochs=0.5)
    result = retrain(params, split.train, split.val, 2, 5, CPU)
    norm = result.model.linear_relu_stack[1]
    assert isinstance(norm, torch.nn.BatchNorm1d) and norm.running_var.sum() > 0
    assert evaluate(result.model, split.val)[1] == max(result.history["val_accuracy"])
