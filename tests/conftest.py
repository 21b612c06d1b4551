"""Shared fixtures: tiny datasets written to a temporary folder in each supported layout."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from tests.helpers import pattern_images, write_idx, write_image_folder


@pytest.fixture
def mnist_root(tmp_path: Path) -> Path:
    """A torchvision-style MNIST root (root/MNIST/raw) with 60 train and 20 test images."""
    raw = tmp_path / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    x, y = pattern_images(80, 1, 28, 10, seed=1)
    write_idx(raw / "train-images-idx3-ubyte.gz", x[:60, 0])
    write_idx(raw / "train-labels-idx1-ubyte.gz", y[:60])
    write_idx(raw / "t10k-images-idx3-ubyte", x[60:, 0])
    write_idx(raw / "t10k-labels-idx1-ubyte", y[60:])
    return tmp_path / "mnist"


@pytest.fixture
def cifar_root(tmp_path: Path) -> Path:
    """A CIFAR-10 python root with 5 tiny training batches and a test batch."""
    folder = tmp_path / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    x, y = pattern_images(60, 3, 32, 10, seed=2)
    for i in range(5):
        part = slice(i * 10, (i + 1) * 10)
        with open(folder / f"data_batch_{i + 1}", "wb") as f:
            pickle.dump(
                {"data": x[part].reshape(10, -1), "labels": y[part].tolist()}, f, protocol=2
            )
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": x[50:].reshape(10, -1), "labels": y[50:].tolist()}, f, protocol=2)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f, protocol=2)
    return tmp_path / "cifar"


@pytest.fixture
def imagefolder_root(tmp_path: Path) -> Path:
    """One ImageFolder (3 classes x 8 PNGs), to be split by --val-split."""
    return write_image_folder(tmp_path / "images")


@pytest.fixture
def imagefolder_split_root(tmp_path: Path) -> Path:
    """An ImageFolder with train/ and val/ sub-folders."""
    write_image_folder(tmp_path / "split" / "train", per_class=6)
    write_image_folder(tmp_path / "split" / "val", per_class=2)
    return tmp_path / "split"
