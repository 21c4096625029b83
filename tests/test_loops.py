from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from model.data import Tensors
from model.loops import (
    PRECISIONS,
    evaluate,
    make_optimizer,
    mirror,
    shuffle_buffer,
    train_epoch,
)
from model.network import NeuralNetwork
from tests.conftest import ROOT


def _trained(split, epochs: int, seed: int = 0, optimizer: str = "Adam", lr: float = 1e-3,
             **kwargs):
    torch.manual_seed(seed)
    model = NeuralNetwork()
    opt = make_optimizer(optimizer, model.parameters(), lr)
    gen = torch.Generator().manual_seed(seed)
    losses = [train_epoch(model, opt, split.train, 32, gen, **kwargs) for _ in range(epochs)]
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


def test_mirror_flips_the_chosen_images_left_to_right_and_leaves_the_rest():
    images = torch.arange(3 * 784, dtype=torch.float32).view(3, 784)
    mirrored = mirror(images, torch.tensor([True, False, True]))
    square = images.view(3, 28, 28)
    assert torch.equal(mirrored.view(3, 28, 28)[0], square[0, :, torch.arange(27, -1, -1)])
    assert torch.equal(mirrored[1], images[1])
    assert torch.equal(mirrored[2].view(28, 28)[:, 0], square[2, :, 27])
    assert torch.equal(images, torch.arange(3 * 784, dtype=torch.float32).view(3, 784))


def test_hflip_1_trains_as_on_mirrored_images_and_0_as_without(split):
    mirrored = Tensors(mirror(split.train.images, torch.ones(len(split.train), dtype=torch.bool)),
                       split.train.labels)
    on_mirrored, losses = _trained(type(split)(mirrored, split.val, split.seed), epochs=1)
    flipped, flipped_losses = _trained(split, epochs=1, hflip=1.0)
    assert losses == flipped_losses
    for a, b in zip(on_mirrored.parameters(), flipped.parameters(), strict=True):
        assert torch.equal(a, b)
    _, plain_losses = _trained(split, epochs=2)
    _, off_losses = _trained(split, epochs=2, hflip=0.0)
    assert plain_losses == off_losses
    _, half_losses = _trained(split, epochs=1, hflip=0.5)
    assert half_losses != flipped_losses and half_losses != plain_losses[:1]


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


def test_a_reused_shuffle_buffer_trains_exactly_like_a_fresh_copy_per_epoch(split):
    buffer = shuffle_buffer(split.train)
    with_buffer, losses_a = _trained(split, epochs=2, seed=5, buffer=buffer)
    without, losses_b = _trained(split, epochs=2, seed=5)
    assert losses_a == losses_b
    for a, b in zip(with_buffer.parameters(), without.parameters(), strict=True):
        assert torch.equal(a, b)
    # The buffer really holds the last epoch's shuffled order of the same samples.
    assert not torch.equal(buffer.labels, split.train.labels)
    assert torch.equal(buffer.labels.sort().values, split.train.labels.sort().values)


def test_bf16_autocast_learns_the_synthetic_classes_and_keeps_float32_weights(split):
    model, losses = _trained(split, epochs=3, precision="bf16")
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert losses[-1] < losses[0]
    loss, accuracy = evaluate(model, split.val, precision="bf16")
    assert accuracy > 0.9 and math.isfinite(loss)
    # bf16 rounds the products, so the run differs from float32 but only slightly.
    fp32, _ = _trained(split, epochs=3)
    assert evaluate(fp32, split.val)[1] == pytest.approx(accuracy, abs=0.05)
    pairs = zip(model.parameters(), fp32.parameters(), strict=True)
    assert not all(torch.equal(a, b) for a, b in pairs)


@pytest.mark.parametrize("precision", ["fp16", "float32", ""])
def test_unknown_precisions_are_refused_by_name(split, precision):
    assert precision not in PRECISIONS
    with pytest.raises(ValueError, match="unknown precision"):
        _trained(split, epochs=1, precision=precision)


@pytest.mark.parametrize("name, fused, foreach", [("SGD", True, None), ("Adam", True, None),
                                                  ("RMSprop", None, True)])
def test_optimizers_use_torchs_fused_or_multi_tensor_kernels(name, fused, foreach):
    group = make_optimizer(name, NeuralNetwork().parameters(), 0.01).param_groups[0]
    assert group.get("fused") is fused and group.get("foreach") is foreach


_DENORMALS = """
import torch
from model.loops import flush_denormals
{call}
torch.set_num_threads(2)
tiny = torch.full((1 << 22,), 1e-39)  # denormal in float32; large enough to use both threads
print(int(((tiny * 3) != 0).sum()))
"""


@pytest.mark.parametrize("call, nonzero", [("flush_denormals()", False), ("", True)])
def test_flush_denormals_reaches_every_torch_thread(call, nonzero):
    result = subprocess.run([sys.executable, "-c", _DENORMALS.format(call=call)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (int(result.stdout) > 0) is nonzero


def test_the_weight_average_is_the_exponential_moving_average_of_each_steps_weights(split):
    from model.loops import run_epochs

    def start():
        torch.manual_seed(0)
        model = NeuralNetwork()
        return model, make_optimizer("Adam", model.parameters(), 1e-3)

    decay, n = 0.75, len(split.train)
    # One step per epoch (batch = every image), so each epoch's weights are one step's.
    model, opt = start()
    steps = []
    for result in run_epochs(model, opt, split.train, None, epochs=3, batch_size=n,
                             generator=torch.Generator().manual_seed(0)):
        assert result.scored is model
        steps.append({k: v.clone() for k, v in model.state_dict().items()})
    expected = steps[0]
    for weights in steps[1:]:
        expected = {k: decay * expected[k] + (1 - decay) * weights[k] for k in weights}
    model, opt = start()
    results = list(run_epochs(model, opt, split.train, split.val, epochs=3, batch_size=n,
                              generator=torch.Generator().manual_seed(0), ema_decay=decay))
    averaged = results[-1].scored
    assert isinstance(averaged, NeuralNetwork) and averaged is not model
    for key, value in averaged.state_dict().items():
        assert torch.allclose(value, expected[key], atol=1e-6), key
        assert torch.equal(model.state_dict()[key], steps[-1][key])  # training is untouched
    assert results[-1].val_accuracy == evaluate(averaged, split.val)[1]
