"""The tutorial's own pipeline, the baseline every benchmark compares against.

"Learn the Basics" reads FashionMNIST through torchvision's dataset class with the ToTensor
transform, batches it with a shuffling DataLoader, and trains with the loops below (copied from
the tutorial, less its printing). Only the way the files reach torchvision differs: they are
decompressed from wherever model.data finds them into a temporary torchvision layout, since
this machine cannot download them.
"""

from __future__ import annotations

import gzip
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import datasets
from torchvision.transforms import ToTensor

from model.data import FILES, Source, split_indices


@contextmanager
def torchvision_root(source: Source) -> Iterator[Path]:
    """A temporary folder holding ``source``'s files in torchvision's FashionMNIST/raw layout."""
    with tempfile.TemporaryDirectory(prefix="fashion-tune-tutorial-") as tmp:
        raw = Path(tmp) / "FashionMNIST" / "raw"
        raw.mkdir(parents=True)
        for name in (name for pair in FILES.values() for name in pair):
            path = source.path(name)
            opener = gzip.open if path.suffix == ".gz" else open
            with opener(path, "rb") as src, (raw / name).open("wb") as dst:
                shutil.copyfileobj(src, dst)
        yield Path(tmp)


def tutorial_dataset(root: Path, train: bool = True) -> Dataset:
    """torchvision's FashionMNIST with ToTensor, exactly as the tutorial builds it."""
    return datasets.FashionMNIST(root=root, train=train, download=False, transform=ToTensor())


def tutorial_split(dataset: Dataset, val_size: int, seed: int) -> tuple[Subset, Subset]:
    """The same train/validation images as model.data.split_train_val, as dataset subsets."""
    train_idx, val_idx = split_indices(len(dataset), val_size, seed)
    return Subset(dataset, train_idx.tolist()), Subset(dataset, val_idx.tolist())


def train_loop(
    dataloader: DataLoader,
    model: nn.Module,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    max_batches: int | None = None,
) -> int:
    """The tutorial's train_loop; returns the number of images trained on.

    The tutorial prints ``loss.item()`` every 100 batches; the item() call (a host sync on a
    GPU) is kept, the printing is not. ``max_batches`` stops early, for short measurements.
    """
    model.train()
    seen = 0
    for batch, (X, y) in enumerate(dataloader):
        pred = model(X)
        loss = loss_fn(pred, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        seen += len(X)
        if batch % 100 == 0:
            loss.item()
        if max_batches is not None and batch + 1 >= max_batches:
            break
    return seen


def test_loop(dataloader: DataLoader, model: nn.Module, loss_fn: nn.Module) -> tuple[float, float]:
    """The tutorial's test_loop; returns (mean loss, accuracy) instead of printing them."""
    model.eval()
    size = len(dataloader.dataset)
    num_batches = len(dataloader)
    test_loss, correct = 0.0, 0.0
    with torch.no_grad():
        for X, y in dataloader:
            pred = model(X)
            test_loss += loss_fn(pred, y).item()
            correct += (pred.argmax(1) == y).type(torch.float).sum().item()
    return test_loss / num_batches, correct / size
