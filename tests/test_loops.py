from __future__ import annotations

import math

import pytest
import torch

from model.data import Tensors, load_split, locate, split_train_val
from model.loops import evaluate, make_optimizer, train_epoch
from model.network import NeuralNetwork


@pytest.fixture
def split(idx_dir, no_system_data):
    return split_train_val(load_split(locate(idx_dir, download=False), "train"), 100, seed=0)


def _trained(split, epochs: int, seed: int = 0, optimizer: str = "Adam", lr: float = 1e-3):
    torch.manual_seed(seed)
    model = NeuralNetwork()
    opt = make_optimizer(optimizer, model.parameters(), lr)
    gen = torch.Generator().manual_seed(seed)
    losses = [train_epoch(model, opt, split.train, 32, gen) for _ in range(epochs)]
    return model, losses


def test_training_lowers_loss_and_learns_the_synthetic_classes(split):
    untrained_loss, untrained_acc = evaluate(NeuralNetwork(), split.val)
    model, losses = _trained(split, epochs=3)
    loss, accuracy = evaluate(model, split.val)
    assert losses[-1] < losses[0]
    assert loss < untrained_loss
    assert accuracy > 0.9 > untrained_acc


def test_training_is_reproducible_with_the_same_seeds(split):
    first, losses_a = _trained(split, epochs=2, seed=3)
    second, losses_b = _trained(split, epochs=2, seed=3)
    assert losses_a == losses_b
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)


def test_every_sample_is_seen_once_per_epoch_including_the_last_partial_batch(split):
    model = NeuralNetwork()
    seen: list[int] = []
    model.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0].shape[0]))
    opt = make_optimizer("SGD", model.parameters(), 1e-3)
    train_epoch(model, opt, split.train, 64, torch.Generator().manual_seed(0))
    assert sum(seen) == len(split.train) == 500
    assert seen[-1] == 500 % 64


def test_evaluate_matches_a_direct_computation():
    torch.manual_seed(0)
    model = NeuralNetwork()
    data = Tensors(torch.rand(50, 784), torch.randint(0, 10, (50,)))
    loss, accuracy = evaluate(model, data)
    with torch.no_grad():
        logits = model(data.images)
    assert loss == pytest.approx(float(torch.nn.functional.cross_entropy(logits, data.labels)))
    assert accuracy == pytest.approx(float((logits.argmax(1) == data.labels).float().mean()))


def test_divergence_shows_as_a_non_finite_loss(split):
    torch.manual_seed(0)
    model = NeuralNetwork()
    opt = make_optimizer("SGD", model.parameters(), 1e6)
    loss = train_epoch(model, opt, split.train, 32, torch.Generator().manual_seed(0))
    assert not math.isfinite(loss)


@pytest.mark.parametrize("name, cls", [("SGD", torch.optim.SGD), ("Adam", torch.optim.Adam),
                                       ("RMSprop", torch.optim.RMSprop)])
def test_make_optimizer_builds_each_named_optimizer_with_its_lr(name, cls):
    opt = make_optimizer(name, NeuralNetwork().parameters(), 0.123)
    assert isinstance(opt, cls) and opt.param_groups[0]["lr"] == 0.123


def test_make_optimizer_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer("Adagrad", NeuralNetwork().parameters(), 0.1)
