"""Helpers shared by the test modules: tiny data writers, small networks, pruning aids."""

from __future__ import annotations

import dataclasses
import gzip
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from compressor.methods.base import Method
from compressor.pruning import Plan, param_dict

# the bundled reference model: smallcnn trained on mnist15k
REFERENCE_MODEL = Path(__file__).parent.parent / "models" / "smallcnn-mnist15k.pt"


def pattern_images(
    n: int, channels: int, size: int, classes: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Images whose class is visible (a bright band at a class-specific row), plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    x = rng.integers(0, 60, size=(n, channels, size, size), dtype=np.uint8)
    band = max(1, size // classes)
    for i, y in enumerate(labels):
        x[i, :, y * band : (y + 1) * band, :] = 230
    return x, labels.astype(np.int64)


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def write_image_folder(root: Path, classes: int = 3, per_class: int = 8, size: int = 20) -> Path:
    from PIL import Image

    x, y = pattern_images(classes * per_class, 3, size, classes, seed=3)
    for i, (img, label) in enumerate(zip(x, y, strict=True)):
        d = root / f"c{label}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.transpose(1, 2, 0)).save(d / f"{i}.png")
    return root


def capture_features(method: Method, model: nn.Module, feats: dict) -> list:
    """Hooks filling ``feats`` with what ``method.penalty`` reads, as the training loop does."""
    return [
        m.register_forward_hook(lambda _m, _i, o, n=n: feats.__setitem__(n, o))
        for n, m in method.feature_modules(model).items()
    ] + [
        m.register_forward_pre_hook(lambda _m, a, n=n: feats.__setitem__(n, a[0]))
        for n, m in method.feature_inputs(model).items()
    ]


def small_cnn(seed: int = 0) -> nn.Module:
    from compressor.archs import build_model

    torch.manual_seed(seed)
    return build_model("smallcnn", num_classes=10)


def flow_net() -> nn.Module:
    """Three residual blocks in a row: a feature flow for FFR to act on."""
    from compressor.nets import ResidualBlock

    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, stride=2),
        nn.Sequential(ResidualBlock(8), ResidualBlock(8), ResidualBlock(8)),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )


class Concat(nn.Module):
    def __init__(self, a: nn.Module, b: nn.Module) -> None:
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.a(x), self.b(x)], 1)


def zero_channels(model: torch.nn.Module, index, plan: Plan) -> None:
    """Zero everything the planned channels produce (filters, biases, norm scales/shifts)."""
    params = param_dict(model)
    with torch.no_grad():
        for gi, chans in plan.remove.items():
            for s in index.groups[gi].slices:
                if s.kind not in ("out", "norm", "out_transposed"):
                    continue
                pos = s.index[torch.isin(s.channel, torch.as_tensor(chans))]
                p = params[f"{s.module}.{s.param}"]
                if s.kind == "out_transposed":
                    p[:, pos] = 0
                else:
                    p[pos] = 0


def randomize_bn(model: torch.nn.Module) -> None:
    """Give BatchNorm layers non-trivial statistics so that the equality test means something."""
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)


def replace_stage(
    monkeypatch: pytest.MonkeyPatch, name: str, function: Callable[[Any], Any]
) -> None:
    """``compress`` runs ``function`` in place of its stage ``name`` (until
    ``monkeypatch.undo()``)."""
    import compressor.pipeline.run

    table = tuple(
        dataclasses.replace(stage, function=function) if stage.name == name else stage
        for stage in compressor.pipeline.run.TABLE
    )
    monkeypatch.setattr(compressor.pipeline.run, "TABLE", table)
