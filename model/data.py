"""FashionMNIST as tensors: find the IDX files, read them once, split train/validation.

The files are looked for, in order, in ``--data-dir``, in ``$FASHION_MNIST_DIR``, in Debian's
system copy (package ``dataset-fashion-mnist``), and finally downloaded by torchvision into
``--data-dir``. Each place may hold the files plainly or gzipped, directly or in torchvision's
``FashionMNIST/raw`` layout. ``python -m model.data`` says which place is used.
"""

from __future__ import annotations

import argparse
import gzip
import os
import struct
import sys
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

ENV_VAR = "FASHION_MNIST_DIR"
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_DATA_DIR = Path("data")

# Split name -> (images file, labels file), without the optional .gz suffix.
FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGE_SIDE = 28
N_CLASSES = 10
CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

# IDX magic numbers: two zero bytes, the type code 0x08 (unsigned byte), the number of dimensions.
_IDX_UBYTE = 0x08


class DataError(Exception):
    """The data cannot be found or read; the message says what to do instead."""


@dataclass(frozen=True)
class Tensors:
    """Images and labels of one split, ready for the loops."""

    images: Tensor  # float32, (N, 784), pixel values in [0, 1] as ToTensor + Flatten give
    labels: Tensor  # int64, (N,), class indices 0..9

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device | str) -> Tensors:
        """Return a copy of both tensors on ``device`` (the same object if already there)."""
        return Tensors(self.images.to(device), self.labels.to(device))


@dataclass(frozen=True)
class TrainValSplit:
    """The 60,000 training images split into the part trained on and the part scored on."""

    train: Tensors
    val: Tensors
    seed: int  # the seed of the permutation that made the split

    def joined(self) -> Tensors:
        """Both parts as one set, training images first: what a final model trains on."""
        return Tensors(torch.cat([self.train.images, self.val.images]),
                       torch.cat([self.train.labels, self.val.labels]))


@dataclass(frozen=True)
class Source:
    """A folder that holds all four FashionMNIST files, and how it was found."""

    folder: Path
    how: str  # e.g. "--data-dir", "$FASHION_MNIST_DIR", "Debian's dataset-fashion-mnist"

    def path(self, name: str) -> Path:
        """Path of ``name`` in this folder, plain or gzipped."""
        return _find_file(self.folder, name) or self.folder / name


def _find_file(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _complete_folder(folder: Path) -> Path | None:
    """Return the folder (or its torchvision ``FashionMNIST/raw``) that holds all four files."""
    names = [name for pair in FILES.values() for name in pair]
    for candidate in (folder, folder / "FashionMNIST" / "raw"):
        if all(_find_file(candidate, name) for name in names):
            return candidate
    return None


def locate(data_dir: Path | str = DEFAULT_DATA_DIR, *, download: bool = True) -> Source:
    """Find the FashionMNIST files, downloading them with torchvision as a last resort.

    Args:
        data_dir: the folder tried first, and where a download lands.
        download: whether torchvision may download the files when no folder has them.

    Returns:
        The first place that holds all four files.

    Raises:
        DataError: no place holds them; the message lists every option.
    """
    data_dir = Path(data_dir)
    looked: list[str] = []
    places: list[tuple[Path, str]] = [(data_dir, "--data-dir")]
    env = os.environ.get(ENV_VAR)
    if env:
        places.append((Path(env), f"${ENV_VAR}"))
    else:
        looked.append(f"${ENV_VAR} is not set")
    places.append((SYSTEM_DIR, "Debian's dataset-fashion-mnist"))
    for folder, how in places:
        found = _complete_folder(folder)
        if found is not None:
            return Source(found, how)
        looked.append(f"{folder} ({how}) does not hold all four files")

    if download:
        try:
            from torchvision.datasets import FashionMNIST

            FashionMNIST(root=str(data_dir), train=True, download=True)
        except Exception as exc:  # any network or disk failure: report it with the options
            looked.append(f"torchvision's download into {data_dir} failed: {_one_line(exc)}")
        else:
            found = _complete_folder(data_dir)
            if found is not None:
                return Source(found, "torchvision download")
            looked.append(f"torchvision's download into {data_dir} left no complete set")
    else:
        looked.append("download was not allowed")

    names = ", ".join(f"{name}[.gz]" for pair in FILES.values() for name in pair)
    raise DataError(
        "FashionMNIST was not found. Looked: " + "; ".join(looked) + ".\n"
        "Fix it in one of these ways:\n"
        f"  - put the four IDX files ({names}) in --data-dir (default {DEFAULT_DATA_DIR}/);\n"
        f"  - set {ENV_VAR} to a folder that holds them;\n"
        "  - install Debian's copy: sudo apt-get install dataset-fashion-mnist "
        f"(files land in {SYSTEM_DIR});\n"
        "  - run once on a machine with internet access, so torchvision downloads them."
    )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def read_idx(path: Path, ndim: int) -> Tensor:
    """Read an IDX file of unsigned bytes (plain or gzipped) into a uint8 tensor.

    Raises:
        DataError: the file is not an IDX file of ``ndim`` dimensions, or is cut short.
    """
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read {path}: {_one_line(exc)}. Replace the file.") from exc
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated: {len(raw)} bytes, less than an IDX header.")
    zero, dtype, dims = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != _IDX_UBYTE or dims != ndim:
        raise DataError(
            f"{path} is not an IDX file of {ndim}-dimensional unsigned bytes "
            f"(magic {raw[:4].hex()}). Replace the file."
        )
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise DataError(
            f"{path} is truncated or corrupt: its header promises {expected} bytes, "
            f"it has {len(raw)}. Replace the file."
        )
    array = np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)
    return torch.from_numpy(array.copy())


def load_split(source: Source, split: str) -> Tensors:
    """Read one split ("train" or "test") into float images in [0, 1] and int64 labels.

    Raises:
        DataError: a file is corrupt, or images and labels do not match.
    """
    image_name, label_name = FILES[split]
    images_path, labels_path = source.path(image_name), source.path(label_name)
    images = read_idx(images_path, ndim=3)
    labels = read_idx(labels_path, ndim=1)
    if images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise DataError(
            f"{images_path} holds {tuple(images.shape[1:])} images; FashionMNIST's are 28x28."
        )
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{images_path} has {images.shape[0]} images but {labels_path} has "
            f"{labels.shape[0]} labels. Replace the files with a matching set."
        )
    if labels.numel() and int(labels.max()) >= N_CLASSES:
        raise DataError(f"{labels_path} has label {int(labels.max())}; classes are 0..9.")
    # ToTensor scales bytes to [0, 1]; Flatten turns 28x28 into 784 features.
    flat = images.reshape(images.shape[0], -1).to(torch.float32).div_(255.0)
    return Tensors(flat, labels.to(torch.int64))


def split_indices(n: int, val_size: int, seed: int) -> tuple[Tensor, Tensor]:
    """(train, validation) indices of a seeded split of ``n`` images; see split_train_val."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[val_size:], order[:val_size]


def split_train_val(data: Tensors, val_size: int, seed: int) -> TrainValSplit:
    """Split training data into train and validation parts by a seeded permutation.

    Raises:
        DataError: ``val_size`` leaves no image for one of the parts.
    """
    n = len(data)
    if not 0 < val_size < n:
        raise DataError(
            f"--val-size must be between 1 and {n - 1} (the training set has {n} images), "
            f"but got {val_size}."
        )
    train_idx, val_idx = split_indices(n, val_size, seed)
    return TrainValSplit(
        train=Tensors(data.images[train_idx], data.labels[train_idx]),
        val=Tensors(data.images[val_idx], data.labels[val_idx]),
        seed=seed,
    )


def load_searched_split(
    data_dir: Path | str, val_size: int, split_seed: int, train_size: int | None = None,
    *, download: bool = True,
) -> tuple[Source, TrainValSplit]:
    """The train/validation split a search uses, found as ``locate`` finds data.

    The one entry point of every tool and benchmark that trains on the searched split;
    ``train_size`` (where a study recorded it) checks that it is the same data.

    Raises:
        DataError: the data is missing or corrupt, or its split does not hold the
            ``train_size`` training images the search had (another data folder).
    """
    source = locate(data_dir, download=download)
    data = split_train_val(load_split(source, "train"), val_size, split_seed)
    if train_size not in (None, len(data.train)):
        raise DataError(
            f"the study was searched on {train_size} training images, but the data in "
            f"{source.folder} gives {len(data.train)}; pass the --data-dir the search used."
        )
    return source, data


def main(argv: Sequence[str] | None = None) -> int:
    """Say where the FashionMNIST files are found (``python -m model.data``)."""
    parser = argparse.ArgumentParser(
        prog="python -m model.data",
        description="Find the FashionMNIST files and check that they read; exit 1 if none.",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=DEFAULT_DATA_DIR,
        help="folder tried first, and where a download lands (default: %(default)s)",
    )
    parser.add_argument("--no-download", action="store_true",
                        help="only look on disk; never download")
    args = parser.parse_args(argv)
    try:
        source = locate(args.data_dir, download=not args.no_download)
        for split in FILES:
            n = len(load_split(source, split))
            print(f"{split}: {n} images")
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"FashionMNIST found in {source.folder} ({source.how})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
