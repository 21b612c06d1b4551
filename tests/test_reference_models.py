"""The committed reference models match their model cards (md5 and accuracy)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from compressor.config import DataConfig
from compressor.operations import evaluate_model
from compressor.utils import md5sum

MODELS = Path(__file__).parent.parent / "models"
CARDS = (MODELS / "README.md").read_text()


def _card(name: str) -> dict[str, str]:
    section = CARDS.split(f"## {name}\n", 1)[1].split("\n## ", 1)[0]
    md5 = re.search(r"\| md5 \| `([0-9a-f]{32})` \|", section)
    acc = re.search(r"\| accuracy \| ([0-9.]+)% top-1 \|", section)
    assert md5 and acc, f"card of {name} lacks md5 or accuracy"
    return {"md5": md5.group(1), "accuracy": acc.group(1)}


@pytest.mark.parametrize("name", sorted(p.name for p in MODELS.glob("*.pt")))
def test_model_matches_its_card(name: str) -> None:
    card = _card(name)
    assert md5sum(MODELS / name) == card["md5"]
    result = evaluate_model(
        MODELS / name, data=DataConfig("mnist15k"), device="cpu", progress=False
    )
    assert f"{result['test']['top1']:.2f}" == card["accuracy"]
