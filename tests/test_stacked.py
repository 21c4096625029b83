"""Several seeds trained as one stacked model are the same training as one seed at a time."""

from __future__ import annotations

import pytest
import torch

from model.loops import evaluate, make_optimizer, train_epoch
from model.stacked import StackedMLP, evaluate_stacked, train_stacked_epoch
from tuning.space.hyperparameters import Hyperparameters
from tuning.training.retrain import retrain, retrain_seeds, seeded_start

CPU = torch.device("cpu")
SEEDS = [11, 22, 33]


@pytest.mark.parametrize("optimizer", ["SGD", "Adam", "RMSprop"])
def test_an_epoch_of_stacked_seeds_is_each_seeds_own_epoch(split, optimizer):
    params = Hyperparameters(lr=1e-3, batch_size=32, optimizer=optimizer)
    separate = []
    for seed in SEEDS:
        net, opt, gen = seeded_start(params, seed, CPU)
        loss = train_epoch(net, opt, split.train, params.batch_size, gen)
        separate.append((loss, net, evaluate(net, split.val)))
    starts = [seeded_start(params, seed, CPU) for seed in SEEDS]
    model = StackedMLP([net for net, _, _ in starts])
    opt = make_optimizer(optimizer, model.parameters(), params.lr)
    losses = train_stacked_epoch(model, opt, split.train, params.batch_size,
                                 [gen for _, _, gen in starts])
    scores = evaluate_stacked(model, split.val)
    for k, (loss, net, (val_loss, val_acc)) in enumerate(separate):
        assert losses[k] == pytest.approx(loss, rel=1e-4)
        assert scores[k][0] == pytest.approx(val_loss, rel=1e-3)
        assert scores[k][1] == pytest.approx(val_acc, abs=0.02)  # a prediction or two
        mine = model.network(k).state_dict()
        for name, tensor in net.state_dict().items():
            # An adaptive step turns rounding in a near-zero gradient into a step of up to
            # 10 x lr for a few weights (measured: at most 5e-4 of a tensor's norm over the
            # epoch's 28 steps); SGD stays within 1e-7.
            assert (mine[name] - tensor).norm() <= 2e-3 * tensor.norm(), name
    # The copies are not the same network: each started from its own seed.
    assert not torch.equal(model.weights[0][0], model.weights[0][1])


def test_the_first_steps_match_the_separate_runs_closely(split):
    # SGD: no division by a gradient's size, so rounding stays rounding for a few steps.
    params = Hyperparameters(lr=0.05, batch_size=16, optimizer="SGD")
    small = type(split.train)(split.train.images[:64], split.train.labels[:64])
    starts = [seeded_start(params, seed, CPU) for seed in SEEDS]
    model = StackedMLP([net for net, _, _ in starts])
    opt = make_optimizer("SGD", model.parameters(), params.lr)
    stacked = train_stacked_epoch(model, opt, small, 16, [g for _, _, g in starts])
    for k, seed in enumerate(SEEDS):
        net, sgd, gen = seeded_start(params, seed, CPU)
        alone = train_epoch(net, sgd, small, 16, gen)
        assert stacked[k] == pytest.approx(alone, rel=1e-5)
        mine = model.network(k).state_dict()
        for name, tensor in net.state_dict().items():
            assert torch.allclose(mine[name], tensor, rtol=1e-5, atol=1e-6), name


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_retrain_seeds_reaches_what_each_retrain_reaches(split, precision):
    params = Hyperparameters(lr=1e-3, batch_size=32, optimizer="Adam")
    runs = retrain_seeds(params, split.train, split.val, 3, SEEDS, CPU, precision)
    assert [r.seed for r in runs] == SEEDS
    for run in runs:
        alone = retrain(params, split.train, split.val, 3, run.seed, CPU,
                        precision=precision).history
        assert not run.diverged and len(run.history["val_accuracy"]) == 3
        # Within seed noise: on 100 synthetic validation images, two predictions.
        assert run.history["val_accuracy"][-1] == pytest.approx(alone["val_accuracy"][-1],
                                                               abs=0.02)
        assert run.history["train_loss"][0] == pytest.approx(alone["train_loss"][0], rel=0.02)


def test_a_seed_that_diverges_keeps_its_history_and_the_others_train_on(split):
    params = Hyperparameters(lr=1e-3, batch_size=32, optimizer="Adam")
    starts = [seeded_start(params, seed, CPU) for seed in SEEDS]
    with torch.no_grad():  # poison the second seed's first layer
        starts[1][0].linear_relu_stack[0].weight.fill_(float("nan"))
    import tuning.training.retrain as module

    real = module.seeded_start
    calls = iter(starts)

    def poisoned(*args, **kwargs):
        return next(calls)

    module.seeded_start = poisoned
    try:
        runs = retrain_seeds(params, split.train, split.val, 2, SEEDS, CPU)
    finally:
        module.seeded_start = real
    assert [r.diverged for r in runs] == [False, True, False]
    assert len(runs[1].history["val_accuracy"]) == 1  # stopped at the epoch it diverged
    assert all(len(runs[k].history["val_accuracy"]) == 2 for k in (0, 2))
    assert runs[0].history["val_accuracy"][-1] > 0.5


def test_stacked_seeds_keep_the_optimizers_momentum_and_weight_decay(split):
    # The stacked model's optimizer is built from the same knobs as each seed's own.
    params = Hyperparameters(lr=0.05, batch_size=32, optimizer="SGD", momentum=0.9,
                             nesterov=True, weight_decay=0.01)
    runs = retrain_seeds(params, split.train, split.val, 1, SEEDS, CPU)
    for run in runs:
        alone = retrain(params, split.train, split.val, 1, run.seed, CPU).history
        assert run.history["train_loss"][0] == pytest.approx(alone["train_loss"][0], rel=1e-4)
