from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.synthetic import N_TEST, N_TRAIN, synthetic_split, write_fashion_mnist, write_idx
from model.data import (
    DataError,
    Tensors,
    load_split,
    locate,
    read_idx,
    split_train_val,
)


@pytest.mark.parametrize("compress", [True, False])
def test_load_split_gives_flat_float_images_in_unit_range(tmp_path, no_system_data, compress):
    folder = write_fashion_mnist(tmp_path / "d", compress=compress)
    train = load_split(locate(folder, download=False), "train")
    assert train.images.shape == (N_TRAIN, 784)
    assert train.images.dtype == torch.float32
    assert float(train.images.min()) >= 0.0 and float(train.images.max()) <= 1.0
    assert train.labels.dtype == torch.int64
    expected_images, expected_labels = synthetic_split(N_TRAIN, seed=1)
    assert torch.equal(train.labels, torch.from_numpy(expected_labels.astype(np.int64)))
    # ToTensor's scaling: byte / 255, then Flatten row by row.
    torch.testing.assert_close(
        train.images[7], torch.from_numpy(expected_images[7].reshape(-1) / 255.0).float()
    )
    assert len(load_split(locate(folder, download=False), "test")) == N_TEST


def test_data_dir_is_tried_before_the_environment_variable(tmp_path, monkeypatch, no_system_data):
    first = write_fashion_mnist(tmp_path / "first")
    second = write_fashion_mnist(tmp_path / "second")
    monkeypatch.setenv("FASHION_MNIST_DIR", str(second))
    assert locate(first, download=False).folder == first
    found = locate(tmp_path / "empty", download=False)
    assert found.folder == second and found.how == "$FASHION_MNIST_DIR"


def test_system_copy_is_used_when_nothing_else_has_the_files(tmp_path, monkeypatch):
    import model.data

    system = write_fashion_mnist(tmp_path / "system")
    monkeypatch.setattr(model.data, "SYSTEM_DIR", system)
    monkeypatch.delenv("FASHION_MNIST_DIR", raising=False)
    found = locate(tmp_path / "empty", download=False)
    assert found.folder == system and "Debian" in found.how


def test_torchvision_raw_layout_is_found(tmp_path, no_system_data):
    raw = write_fashion_mnist(tmp_path / "root" / "FashionMNIST" / "raw", compress=False)
    assert locate(tmp_path / "root", download=False).folder == raw


def test_missing_data_message_lists_every_option(tmp_path, no_system_data):
    with pytest.raises(DataError) as info:
        locate(tmp_path / "nothing-here", download=False)
    message = str(info.value)
    for option in ("--data-dir", "FASHION_MNIST_DIR", "apt-get install dataset-fashion-mnist",
                   "torchvision"):
        assert option in message


def test_truncated_file_is_reported_with_its_path(tmp_path, no_system_data):
    folder = write_fashion_mnist(tmp_path / "d", compress=False)
    images = folder / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:5000])
    with pytest.raises(DataError, match="truncated"):
        load_split(locate(folder, download=False), "train")


def test_corrupt_gzip_is_reported(tmp_path, no_system_data):
    folder = write_fashion_mnist(tmp_path / "d")
    labels = folder / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:40])
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz"):
        load_split(locate(folder, download=False), "train")


def test_wrong_magic_is_rejected(tmp_path):
    path = tmp_path / "x-ubyte"
    path.write_bytes(b"\x00\x00\x0d\x03" + bytes(100))
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(path, ndim=3)


def test_images_and_labels_of_different_lengths_are_rejected(tmp_path, no_system_data):
    folder = write_fashion_mnist(tmp_path / "d")
    write_idx(folder / "train-labels-idx1-ubyte", np.zeros(N_TRAIN - 1, dtype=np.uint8))
    with pytest.raises(DataError, match="labels"):
        load_split(locate(folder, download=False), "train")


def test_read_idx_reads_gzip_and_plain_alike(tmp_path):
    array = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    plain = write_idx(tmp_path / "a", array, compress=False)
    packed = write_idx(tmp_path / "b", array, compress=True)
    assert gzip.decompress(packed.read_bytes()) == plain.read_bytes()
    assert torch.equal(read_idx(plain, 3), read_idx(packed, 3))


def _toy(n: int) -> Tensors:
    return Tensors(torch.arange(n, dtype=torch.float32)[:, None].repeat(1, 784), torch.arange(n))


def test_split_is_disjoint_complete_and_fixed_by_its_seed():
    data = _toy(100)
    split = split_train_val(data, val_size=20, seed=0)
    assert (len(split.train), len(split.val)) == (80, 20)
    ids = torch.cat([split.train.labels, split.val.labels])
    assert sorted(ids.tolist()) == list(range(100))
    again = split_train_val(data, val_size=20, seed=0)
    assert torch.equal(again.val.labels, split.val.labels)
    other = split_train_val(data, val_size=20, seed=1)
    assert not torch.equal(other.val.labels, split.val.labels)


@pytest.mark.parametrize("val_size", [0, 100, 1000])
def test_split_rejects_a_validation_size_that_leaves_a_part_empty(val_size):
    with pytest.raises(DataError, match="--val-size"):
        split_train_val(_toy(100), val_size=val_size, seed=0)


def test_data_cli_reports_the_folder(idx_dir: Path, capsys, no_system_data):
    from model.data import main

    assert main(["--data-dir", str(idx_dir), "--no-download"]) == 0
    assert str(idx_dir) in capsys.readouterr().out
    assert main(["--data-dir", str(idx_dir / "missing"), "--no-download"]) == 1
