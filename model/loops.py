"""Train and evaluation loops over tensors: batches are slices, never per-sample work."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from model.data import Tensors

# Name -> optimizer class; the names are the ones users type and the study stores.
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "SGD": torch.optim.SGD,
    "Adam": torch.optim.Adam,
    "RMSprop": torch.optim.RMSprop,
}
EVAL_BATCH = 10_000  # one forward pass scores the whole validation split; no gradients kept


def make_optimizer(name: str, params: Iterable[Tensor], lr: float) -> torch.optim.Optimizer:
    """Build the optimizer called ``name`` (a key of ``OPTIMIZERS``) with learning rate ``lr``."""
    try:
        cls = OPTIMIZERS[name]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; choose from {sorted(OPTIMIZERS)}") from None
    return cls(params, lr=lr)


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: Tensors,
    batch_size: int,
    generator: torch.Generator,
) -> float:
    """Train one epoch over ``data`` in a fresh shuffled order; return the mean training loss.

    The order comes from ``generator`` (a CPU generator), so a seeded generator replays the
    same epochs. The last batch may be smaller, as with the tutorial's DataLoader. A NaN or
    infinite loss is returned as such; the caller decides what to do with it.
    """
    n = len(data)
    order = torch.randperm(n, generator=generator).to(data.images.device)
    images, labels = data.images[order], data.labels[order]
    model.train()
    # Summing on the device avoids a host sync per step; one .item() at the end.
    total = torch.zeros((), device=data.images.device)
    for start in range(0, n, batch_size):
        x, y = images[start : start + batch_size], labels[start : start + batch_size]
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach() * y.shape[0]
    return float(total) / n


@torch.inference_mode()
def evaluate(model: nn.Module, data: Tensors) -> tuple[float, float]:
    """Return (mean cross-entropy loss, accuracy in [0, 1]) of ``model`` on ``data``."""
    model.eval()
    total_loss = torch.zeros((), device=data.images.device)
    correct = torch.zeros((), dtype=torch.int64, device=data.images.device)
    for start in range(0, len(data), EVAL_BATCH):
        x = data.images[start : start + EVAL_BATCH]
        y = data.labels[start : start + EVAL_BATCH]
        logits = model(x)
        total_loss += F.cross_entropy(logits, y, reduction="sum")
        correct += (logits.argmax(dim=1) == y).sum()
    n = len(data)
    return float(total_loss) / n, int(correct) / n
