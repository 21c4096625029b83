"""Several copies of the network trained at once, as one model with stacked weights.

Fresh-seed runs of one configuration (``tuning.confirm``) share the batch size, optimizer and
learning rate, and differ only in their initial weights and their shuffling. ``StackedMLP``
holds S copies' weights stacked along a first axis, so one batched matrix product does the
work of S small ones; each copy keeps its own weights, its own order of the training images
and its own loss. It is the same training as S separate runs: the copies never mix (every
product, ReLU and loss is per copy, and SGD, Adam and RMSprop update each weight from its own
gradient and state alone), so results differ from separate runs only by float rounding
(``tests/test_stacked.py``).

Weights are stored transposed, [S, in, out], so the forward product needs no copy; the
backward products run on strided views. In bf16 the products run in bf16 with float32
weights, as bf16 autocast does for one network.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from model.data import Tensors
from model.loops import EVAL_BATCH, PRECISIONS, EpochResult
from model.network import NeuralNetwork


class _StackedLinear(torch.autograd.Function):
    """``h @ wt + b`` per copy: h [S, B, in], wt [S, in, out], b [S, out]."""

    @staticmethod
    def forward(ctx: Any, h: Tensor, wt: Tensor, b: Tensor) -> Tensor:
        ctx.save_for_backward(h, wt)
        return torch.baddbmm(b.unsqueeze(1), h, wt)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        h, wt = ctx.saved_tensors
        grad_h = torch.bmm(grad, wt.transpose(1, 2)) if ctx.needs_input_grad[0] else None
        grad_wt = torch.bmm(h.transpose(1, 2), grad) if ctx.needs_input_grad[1] else None
        grad_b = grad.sum(1) if ctx.needs_input_grad[2] else None
        return grad_h, grad_wt, grad_b


class StackedMLP(nn.Module):
    """S copies of ``NeuralNetwork`` (same shape) with their weights stacked."""

    def __init__(self, networks: Sequence[NeuralNetwork]) -> None:
        super().__init__()
        if not networks:
            raise ValueError("a stacked model needs at least one network")
        layers = [[m for m in net.linear_relu_stack if isinstance(m, nn.Linear)]
                  for net in networks]
        self.copies = len(networks)
        self.weights = nn.ParameterList(
            nn.Parameter(torch.stack([net[i].weight.detach().t() for net in layers]).contiguous())
            for i in range(len(layers[0])))
        self.biases = nn.ParameterList(
            nn.Parameter(torch.stack([net[i].bias.detach() for net in layers]).contiguous())
            for i in range(len(layers[0])))
        self.config = networks[0].config

    def forward(self, x: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """Logits [S, B, classes] of flat images: [S, B, in] (one batch per copy) or [B, in]
        (the same images for every copy); products in ``dtype``, weights stay float32."""
        h = x.to(dtype)
        last = len(self.weights) - 1
        for i, (wt, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            wt, b = wt.to(dtype), b.to(dtype)
            if h.dim() == 2:  # the same images for every copy: broadcast, no copy
                h = torch.matmul(h, wt) + b.unsqueeze(1)
            else:
                h = _StackedLinear.apply(h, wt, b)
            if i < last:
                h = torch.relu(h)
        return h

    def network(self, index: int) -> NeuralNetwork:
        """Copy ``index`` as a plain ``NeuralNetwork`` (its own tensors)."""
        net = NeuralNetwork(self.config)
        linears = [m for m in net.linear_relu_stack if isinstance(m, nn.Linear)]
        with torch.no_grad():
            for linear, wt, b in zip(linears, self.weights, self.biases, strict=True):
                linear.weight.copy_(wt[index].t())
                linear.bias.copy_(b[index])
        return net


def _dtype(precision: str) -> torch.dtype:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    return torch.bfloat16 if precision == "bf16" else torch.float32


def train_stacked_epoch(model: StackedMLP, optimizer: torch.optim.Optimizer, data: Tensors,
                        batch_size: int, generators: Sequence[torch.Generator], *,
                        precision: str = "fp32") -> list[float]:
    """One epoch of every copy, each in its own shuffled order; each copy's mean loss.

    Copy s draws its order from ``generators[s]`` exactly as ``model.loops.train_epoch`` does
    from its generator, so a copy sees the batches a separate run from that seed would see.
    """
    dtype, n = _dtype(precision), len(data)
    device = data.images.device
    images = data.images.reshape(n, -1)
    order = torch.stack([torch.randperm(n, generator=g) for g in generators]).to(device)
    total = torch.zeros(model.copies, device=device)
    for start in range(0, n, batch_size):
        index = order[:, start : start + batch_size]
        x, y = images[index], data.labels[index]  # [S, B, in], [S, B]
        logits = model(x, dtype).float()
        losses = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
        per_copy = losses.view(y.shape).mean(1)
        optimizer.zero_grad(set_to_none=True)
        per_copy.sum().backward()  # each copy's gradient is its own loss's
        optimizer.step()
        total += per_copy.detach() * y.shape[1]
    return (total / n).tolist()


@torch.inference_mode()
def evaluate_stacked(model: StackedMLP, data: Tensors, *, precision: str = "fp32"
                     ) -> list[tuple[float, float]]:
    """(mean cross-entropy loss, accuracy) of every copy on ``data``."""
    dtype, n = _dtype(precision), len(data)
    device = data.images.device
    loss = torch.zeros(model.copies, device=device)
    correct = torch.zeros(model.copies, dtype=torch.int64, device=device)
    images = data.images.reshape(n, -1)
    for start in range(0, n, EVAL_BATCH):
        x, y = images[start : start + EVAL_BATCH], data.labels[start : start + EVAL_BATCH]
        logits = model(x, dtype).float()  # [S, B, classes]
        target = y.expand(model.copies, -1)
        loss += F.cross_entropy(logits.transpose(1, 2), target, reduction="none").sum(1)
        correct += (logits.argmax(dim=2) == target).sum(1)
    return [(float(loss[s]) / n, int(correct[s]) / n) for s in range(model.copies)]


@dataclass(frozen=True)
class StackedEpoch:
    """One epoch of every copy: ``results[s]`` is copy s's, as a separate run reports it."""

    results: list[EpochResult]


def run_stacked_epochs(model: StackedMLP, optimizer: torch.optim.Optimizer, train: Tensors,
                       val: Tensors | None, *, epochs: int, batch_size: int,
                       generators: Sequence[torch.Generator], precision: str = "fp32"
                       ) -> Iterator[StackedEpoch]:
    """``model.loops.run_epochs`` for every copy at once; seconds are the shared wall time."""
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        train_losses = train_stacked_epoch(model, optimizer, train, batch_size, generators,
                                           precision=precision)
        scores = (evaluate_stacked(model, val, precision=precision) if val is not None
                  else [(None, None)] * model.copies)
        seconds = time.perf_counter() - start
        yield StackedEpoch([EpochResult(epoch, epochs, loss, val_loss, val_accuracy, seconds)
                            for loss, (val_loss, val_accuracy)
                            in zip(train_losses, scores, strict=True)])
