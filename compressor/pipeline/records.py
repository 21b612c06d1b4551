"""The records the compress stages hand each other, as types.

Each stage writes its record as a JSON file in the work folder (so that a resumed run, or
rank 0 after the other processes, reads what an earlier process wrote), and the later
stages and the report read it through ``Run.read``, typed by file name: mypy knows every
key. The pieces that report.json keeps are the types of ``compressor.formats``.
"""

from __future__ import annotations

from typing import NotRequired

from typing_extensions import TypedDict

from compressor.formats import (
    EpochFields,
    ExportResultFields,
    PruneResult,
    ReferenceScores,
    ReportLatency,
    StrengthSummary,
)


class SplitFigures(TypedDict):
    """A model's figures on every held-out split (``Run.scores``; the test ones None
    without a test split)."""

    val_top1: float
    val_top5: float | None
    val_loss: float
    val_images: int
    test_top1: float | None
    test_top5: float | None
    test_loss: float | None
    test_images: int | None


class HeldOut(SplitFigures):
    """... with the model's parameters and MACs."""

    params: int
    macs: int


class BaselineLayer(TypedDict):
    name: str
    type: str
    out_channels: int


class BaselineRecord(HeldOut):
    """1. baseline.json: the input model (and the dense reference, if given)."""

    layers: list[BaselineLayer]
    reference: NotRequired[ReferenceScores]


class RegularizeRecord(TypedDict):
    """2. regularize.json: the stage's epochs and, under ``--lambda auto``, the rule's
    checks (and the epochs an early prune hands to fine-tuning)."""

    seconds: float
    history: list[EpochFields]
    strength: NotRequired[StrengthSummary]
    epochs_to_finetune: NotRequired[int]


class PruneRecord(PruneResult):
    """3. prune.json: the cut, the time its scores took and the top-1 it left."""

    score_seconds: float
    val_top1_after_prune: float


class FinetuneRecord(TypedDict):
    """4. finetune.json."""

    seconds: float
    history: list[EpochFields]


class OnnxRecord(TypedDict):
    """6. onnx.json: both exports (the baseline's is the latency reference)."""

    compressed: ExportResultFields
    baseline: ExportResultFields


# 5. compressed.json is a HeldOut; 7. latency.json what report.json keeps as `latency`
CompressedRecord = HeldOut
LatencyRecord = ReportLatency
