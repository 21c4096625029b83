from __future__ import annotations

import torch

from model.network import NetworkConfig, NeuralNetwork


def test_network_is_the_tutorials_784_512_512_10_mlp():
    model = NeuralNetwork()
    linears = [m for m in model.linear_relu_stack if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 512), (512, 512), (512, 10)]
    assert sum(p.numel() for p in model.parameters()) == 669_706


def test_state_dict_keys_match_the_tutorial():
    keys = set(NeuralNetwork().state_dict())
    assert keys == {f"linear_relu_stack.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")}


def test_forward_takes_flat_or_image_batches_and_returns_logits():
    model = NeuralNetwork()
    assert model(torch.rand(5, 784)).shape == (5, 10)
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_config_changes_hidden_layers():
    model = NeuralNetwork(NetworkConfig(hidden=(32,)))
    assert model(torch.rand(2, 784)).shape == (2, 10)
    assert len(model.linear_relu_stack) == 3


def test_batch_norm_normalises_each_hidden_layer_before_its_relu_and_round_trips(tmp_path):
    from model.network import load_trained

    config = NetworkConfig(hidden=(16, 8), batch_norm=True, dropout=0.1)
    model = NeuralNetwork(config)
    kinds = [type(m).__name__ for m in model.linear_relu_stack]
    assert kinds == ["KernelLinear", "BatchNorm1d", "ReLU"] * 2 + ["KernelLinear"]
    model.train()
    model(torch.rand(32, 784) * 5)  # moves the running statistics off their start
    torch.save(model.state_dict(), tmp_path / "w.pt")
    network = {"hidden": [16, 8], "dropout": 0.1, "input_dropout": 0.0, "batch_norm": True}
    loaded = load_trained(network, tmp_path / "w.pt")
    assert not loaded.training
    x = torch.rand(4, 784)
    assert torch.equal(loaded(x), model.eval()(x))
    assert loaded.linear_relu_stack[1].running_mean.abs().sum() > 0
