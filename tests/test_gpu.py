"""CUDA paths (mixed precision, channels-last). Selected with ``pytest -m gpu`` on a GPU machine."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from compressor.config import DataConfig, TrainConfig
from compressor.operations import train_model

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("amp", [True, False])
def test_cuda_training_with_amp_and_channels_last(tmp_path: Path, amp: bool) -> None:
    summary = train_model(
        "smallcnn",
        data=DataConfig("mnist15k"),
        train=TrainConfig(epochs=2, lr=0.05, device="cuda", amp=amp, channels_last=True),
        output=tmp_path / "m.pt",
        progress=False,
    )
    assert summary["history"][-1]["val_top1"] > 97.0
