"""The tutorial's multilayer perceptron, built from a small config."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from model.kernels import KERNELS, linear


@dataclass(frozen=True)
class NetworkConfig:
    """Shape of the MLP; the defaults are the tutorial's 784-512-512-10."""

    in_features: int = 784  # 28 x 28 pixels, flattened
    hidden: tuple[int, ...] = (512, 512)  # one Linear + ReLU per entry
    classes: int = 10  # FashionMNIST's ten clothing classes
    dropout: float = 0.0  # after each hidden layer's ReLU, in training only
    input_dropout: float = 0.0  # on the flattened pixels, in training only
    batch_norm: bool = False  # normalise each hidden layer's outputs over the batch, pre-ReLU

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> NetworkConfig:
        """A config from JSON values (``Hyperparameters.network()``, as exports carry it)."""
        return cls(**{**values, "hidden": tuple(values.get("hidden", cls.hidden))})


class KernelLinear(nn.Linear):
    """``nn.Linear`` whose float32 matrix products run on a chosen kernel (model.kernels).

    Same parameters and state_dict keys as ``nn.Linear``; only where the products run differs.
    """

    kernel = "aten"

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias, self.kernel)


class NeuralNetwork(nn.Module):
    """Flatten -> (Linear -> [BatchNorm ->] ReLU) per hidden layer -> Linear to logits.

    Attribute names follow the tutorial, so its saved ``state_dict`` keys
    (``linear_relu_stack.0.weight`` ...) load into this module unchanged. Dropout has no
    weights and is applied in ``forward``, so it leaves the keys as they are; batch norm has
    weights and running statistics, so with it the stack's layers are numbered past them.
    """

    def __init__(self, config: NetworkConfig | None = None, kernel: str = "aten") -> None:
        super().__init__()
        config = config or NetworkConfig()
        self.config = config
        layers: list[nn.Module] = []
        width = config.in_features
        for hidden in config.hidden:
            layers.append(KernelLinear(width, hidden))
            if config.batch_norm:
                layers.append(nn.BatchNorm1d(hidden))
            layers.append(nn.ReLU())
            width = hidden
        layers.append(KernelLinear(width, config.classes))
        self.flatten = nn.Flatten()
        self.linear_relu_stack = nn.Sequential(*layers)
        self.use_kernel(kernel)

    def use_kernel(self, kernel: str) -> None:
        """Run the float32 matrix products on ``kernel`` (one of ``model.kernels.KERNELS``)."""
        if kernel not in KERNELS:
            raise ValueError(f"unknown kernel {kernel!r}; choose from {', '.join(KERNELS)}")
        self.kernel = kernel
        for module in self.modules():
            if isinstance(module, KernelLinear):
                module.kernel = kernel

    def forward(self, x: Tensor) -> Tensor:
        """Return unnormalised class scores (logits) for a batch of images."""
        h = self.flatten(x)
        config = self.config
        if not (config.dropout or config.input_dropout):
            return self.linear_relu_stack(h)
        h = F.dropout(h, config.input_dropout, self.training)
        for layer in self.linear_relu_stack:
            h = layer(h)
            if isinstance(layer, nn.ReLU):
                h = F.dropout(h, config.dropout, self.training)
        return h


def load_trained(network: dict[str, Any], weights: str | Path) -> NeuralNetwork:
    """A trained network: its architecture from an exported or metrics JSON's ``"network"``,
    its weights from the ``state_dict`` file ``tuning.train`` wrote."""
    model = NeuralNetwork(NetworkConfig.from_dict(network))
    model.load_state_dict(torch.load(weights, weights_only=True))
    return model.eval()
