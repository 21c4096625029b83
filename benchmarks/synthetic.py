"""Small synthetic files in FashionMNIST's IDX format: classes a network learns in seconds.

For tests and for benchmarks whose question is not accuracy (``benchmarks.chaos``): class k
brightens rows 2k..2k+4, so a trial reaches high accuracy in a few epochs of 500 images.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

N_TRAIN = 600
N_TEST = 100


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    """Write ``array`` (uint8) as an IDX file, gzipped when ``compress``."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def synthetic_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose class k brightens rows 2k..2k+4: easy to learn, so accuracy means something."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    images = rng.integers(0, 60, size=(n, 28, 28))
    for k in range(10):
        images[labels == k, 2 * k : 2 * k + 5, :] += 180
    return images.clip(0, 255).astype(np.uint8), labels.astype(np.uint8)


def write_fashion_mnist(folder: Path, compress: bool = True) -> Path:
    """Write the four FashionMNIST files (synthetic content) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", N_TRAIN, 1), ("t10k", N_TEST, 2)):
        images, labels = synthetic_split(n, seed)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, compress)
    return folder
