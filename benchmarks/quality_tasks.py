"""The tasks of ``quality.py`` (``Task``, ``TASKS``) and their data and dense models:
the Fashion-MNIST subsets written as IDX folders (``data_dir``), the ``--data`` options
(``data_options``) and the dense model each task trains first (``dense``). Also read by
``finetune_lr.py``, ``latency_target.py``, ``bn_statistics.py``, ``selection.py`` and
``quality_regimes.py``."""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import ROOT, sh

from compressor import list_methods
from compressor.config import DataConfig

METHODS = list_methods()  # every registered method: --methods' default
# the methods whose early prune picks the split that `none` and Torch-Pruning also run at
SEED_METHODS = ["l1l2", "hgs", "l0sgl", "ffr"]
SHARED = ROOT.parent / "shared"
FMNIST = SHARED / "datasets" / "fashion-mnist"


@dataclass(frozen=True)
class Task:
    """One benchmark task: the data, the dense model's recipe and the budgets."""

    name: str
    arch: str
    data: str  # --data, or "fmnist" for the Fashion-MNIST subset this script writes
    input_size: int
    dense_epochs: int
    targets: dict[int, float]  # label (x fewer MACs) -> --target-macs
    # every run's --reg-epochs and --ft-epochs: the benchmark's, under compress's defaults
    # (compressor.config.REGULARIZE_EPOCHS, FINETUNE_EPOCHS) so that a table fits 2 cores
    reg_epochs: int
    ft_epochs: int
    results: str  # results/<results>.{json,md,png}
    train_images: int | None = None  # Fashion-MNIST subset size (class-balanced)
    val_split: float = DataConfig.val_split  # the library's --val-split default
    backbone: bool = False  # start the dense model from the shared MobileNetV2 backbone
    dense_options: list[str] = field(default_factory=list)

    @property
    def total_epochs(self) -> int:
        return self.reg_epochs + self.ft_epochs


TASKS = {
    "mnist15k": Task(
        "mnist15k", "resnet18", "mnist15k", 32, 5, {10: 0.1, 30: 1 / 30}, 3, 3, "quality"
    ),
    "fmnist-resnet18": Task(
        "fmnist-resnet18",
        "resnet18",
        "fmnist",
        32,
        15,
        {10: 0.1, 30: 1 / 30},
        2,
        2,
        "quality_fmnist-resnet18",
        train_images=20000,
        val_split=0.25,  # the benchmark's: a quarter of the subset steers
    ),
    "fmnist-mobilenetv2": Task(
        "fmnist-mobilenetv2",
        "mobilenet_v2",
        "fmnist",
        64,
        8,
        {2: 0.5, 4: 0.25},
        2,
        2,
        "quality_fmnist-mobilenetv2",
        train_images=8000,
        val_split=0.25,  # the benchmark's: a quarter of the subset steers
        backbone=True,
        # a pretrained start: train's default lr 0.05 disrupted the backbone (4 epochs:
        # validation 28.1% after the first, 84.77% test at the end)
        dense_options=["--lr", "0.01"],
    ),
}
TARGETS = TASKS["mnist15k"].targets  # what selection.py and finetune_lr.py use


def data_dir(work: Path, task: Task, source: Path = FMNIST) -> str:
    """The task's --data: ``mnist15k``, or a Fashion-MNIST folder holding a fixed,
    class-balanced subset of the training images and the whole test set (IDX files, as a
    user's own copy would be)."""
    if task.data != "fmnist":
        return task.data
    import numpy as np

    out = work.parent / f"fashion-mnist-{task.train_images // 1000}k"
    if (out / "t10k-labels-idx1-ubyte.gz").is_file():
        return str(out)
    out.mkdir(parents=True, exist_ok=True)
    with gzip.open(source / "train-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    with gzip.open(source / "train-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    order = np.random.default_rng(0).permutation(len(labels))
    per_class = task.train_images // 10
    keep = np.sort(np.concatenate([order[labels[order] == c][:per_class] for c in range(10)]))
    _write_idx(out / "train-images-idx3-ubyte.gz", images[keep])
    _write_idx(out / "train-labels-idx1-ubyte.gz", labels[keep])
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (out / name).write_bytes((source / name).read_bytes())
    return str(out)


def _write_idx(path: Path, array: Any) -> None:
    import struct

    header = struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def data_options(work: Path, task: Task) -> list[str]:
    return ["--data", data_dir(work, task), "--val-split", repr(task.val_split)]


def dense(work: Path, task: Task = TASKS["mnist15k"]) -> Path:
    out = work / "dense.pt"
    if out.is_file():
        return out
    start: list[str] = []
    if task.backbone:
        import torch
        from mobilenetv2_backbone import SHARED as BACKBONE
        from mobilenetv2_backbone import convert

        backbone = work / "backbone.pt"
        torch.save(convert(torch.load(BACKBONE, weights_only=True)), backbone)
        start = ["--weights", str(backbone)]
    sh(
        [
            "compressor",
            "train",
            task.arch,
            *start,
            *data_options(work, task),
            "--input-size",
            str(task.input_size),
            "--epochs",
            str(task.dense_epochs),
            *task.dense_options,
            "-o",
            str(out),
            "-q",
        ],
        work / "dense.log",
    )
    return out


def _split_variant(variant: str) -> tuple[int, int] | None:
    """``r1f5`` -> (1, 5): regularize (or sparse-learning) and fine-tuning epochs."""
    match = re.fullmatch(r"r(\d+)f(\d+)", variant)
    return (int(match[1]), int(match[2])) if match else None
