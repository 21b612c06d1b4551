"""``Run``: what every stage of one ``compress`` run shares (its settings, input model, data,
work folder, log and the seconds each stage took)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, overload

from compressor.config import write_json
from compressor.pipeline import records
from compressor.pipeline.config import CompressConfig


@dataclass
class Run:
    """What every stage of one ``compress`` run shares."""

    model_path: Path
    outdir: Path
    work: Path
    config: CompressConfig
    loaded: Any  # LoadedModel of the input
    bundle: Any  # DataBundle
    device: Any
    workers: int
    progress: bool
    log: Callable[[str], None]
    stages: dict[str, float]
    order: tuple[str, ...]  # every stage's name, in order: the "[2/8]" of each stage's first line
    stop_after_steps: int | None = None
    origin: Any = None  # weights.Start: pretrained weights or a new head, else None
    reference: Any = None  # LoadedModel: a dense model trained on the data, to compare with
    reference_path: Path | None = None

    @property
    def new_head(self) -> bool:
        return self.origin is not None and bool(self.origin.head_replaced)

    @property
    def size(self) -> tuple[int, int, int]:
        return self.bundle.preprocess.input_size

    def start(self, name: str, text: str) -> float:
        self.log(f"[{self.order.index(name) + 1}/{len(self.order)}] {text}")
        return time.perf_counter()

    def done(self, name: str, t0: float) -> None:
        from compressor.distributed import is_main

        self.stages[name] = self.stages.get(name, 0.0) + time.perf_counter() - t0
        if is_main():
            write_json(self.work / "stages.json", self.stages)

    def final(self) -> Any:
        """The compressed model (``model.pt``) with the data's preprocessing."""
        from compressor.checkpoint import load_model

        final = load_model(self.work / "model.pt")
        final.preprocess = self.bundle.preprocess
        return final

    @overload
    def read(self, name: Literal["baseline.json"]) -> records.BaselineRecord: ...
    @overload
    def read(self, name: Literal["regularize.json"]) -> records.RegularizeRecord: ...
    @overload
    def read(self, name: Literal["prune.json"]) -> records.PruneRecord: ...
    @overload
    def read(self, name: Literal["finetune.json"]) -> records.FinetuneRecord: ...
    @overload
    def read(self, name: Literal["compressed.json"]) -> records.CompressedRecord: ...
    @overload
    def read(self, name: Literal["onnx.json"]) -> records.OnnxRecord: ...
    @overload
    def read(self, name: Literal["latency.json"]) -> records.LatencyRecord: ...
    def read(self, name: str) -> Any:
        """A stage's record in the work folder, as its type (``pipeline/records.py``)."""
        return json.loads((self.work / name).read_text())

    def scores(self, model: Any) -> records.SplitFigures:
        """Top-1/top-5/loss on every held-out split, each under its own name
        (``val_top1``, ``test_top1`` ...; test keys are None without a test split)."""
        val = self.accuracy(model, self.bundle.split("val"))
        test = (
            self.accuracy(model, self.bundle.split("test"))
            if "test" in self.bundle.held_out_splits
            else {}
        )
        return {
            "val_top1": val["top1"],
            "val_top5": val["top5"],
            "val_loss": val["loss"],
            "val_images": val["images"],
            "test_top1": test.get("top1"),
            "test_top5": test.get("top5"),
            "test_loss": test.get("loss"),
            "test_images": test.get("images"),
        }

    def accuracy(self, model: Any, dataset: Any = None) -> dict[str, Any]:
        from compressor.evaluation import evaluate

        return evaluate(
            model.to(self.device),
            self.bundle.val if dataset is None else dataset,
            self.bundle.preprocess,
            device=self.device,
            batch_size=self.config.data.eval_batch_size,
            workers=self.workers,
            progress=self.progress,
        )
