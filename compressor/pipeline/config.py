"""The settings of one ``compress`` run (``CompressConfig``) and their defaults."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from compressor.config import (
    FINETUNE_EPOCHS,
    NEW_HEAD_EPOCHS,
    REGULARIZE_EPOCHS,
    DataConfig,
    LatencyDevice,
    PruneConfig,
    TrainConfig,
)
from compressor.errors import CompressorError
from compressor.onnx_export import ExportConfig
from compressor.strength import StrengthConfig


def _regularize_default() -> TrainConfig:
    return TrainConfig.create(stage="regularize", epochs=REGULARIZE_EPOCHS)


def _finetune_default() -> TrainConfig:
    return TrainConfig.create(stage="finetune", epochs=FINETUNE_EPOCHS)


@dataclass(frozen=True)
class CompressConfig:
    """Everything ``compress`` needs besides the model and the output folder: 5 regularize
    epochs at lr 0.01 and 3 fine-tuning epochs at 0.02 (SGD), the method's default
    selection, ``--lambda auto``. ``data.augment`` left at None is decided by the longer
    stage (``DataConfig.for_epochs``). What ``unset`` names (the CLI's options left to their
    defaults) ``compress`` decides from the start: ``for_trained`` or ``for_new_head``."""

    method: str
    data: DataConfig
    method_options: dict[str, Any] = field(default_factory=dict)
    regularize: TrainConfig = field(default_factory=_regularize_default)
    finetune: TrainConfig = field(default_factory=_finetune_default)
    prune: PruneConfig = None  # type: ignore[assignment]  # None: the method's default selection
    export: ExportConfig = field(default_factory=ExportConfig)
    # ``--lambda auto``: the regularize stage adapts the penalty's multiplier; None keeps
    # the method's hyperparameters fixed (``--lambda X``)
    strength: StrengthConfig | None = field(default_factory=StrengthConfig)
    latency_threads: int = 1  # on the latency target's device (``prune.device``)
    # The latency comparison measures at least 1 s and until each p50 is known to 1%
    # (relative standard error), for at most this long.
    latency_seconds: float = 10.0
    # what the user left to its default among "reg_epochs", "ft_epochs" and "augment": a
    # start with a new head sets those (``for_new_head``)
    unset: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.prune is None:
            from compressor.selection import method_prune_config

            object.__setattr__(self, "prune", method_prune_config(self.method))
        # (`none` has no penalty, so no strength to set: a threshold is its own choice)
        if self.strength is not None and self.prune.threshold is not None and self.method != "none":
            raise CompressorError(
                f"--lambda auto needs a target to aim at, and {self.method} would select by "
                f"a threshold ({self.prune.threshold:g}), under which the automatic strength "
                "removed nothing and cost accuracy (the LeNet-5 sweep in docs/methods.md): pass "
                "--target-macs X or --ratio R, or a fixed strength with --lambda X"
            )
        epochs = max(self.regularize.epochs, self.finetune.epochs)
        object.__setattr__(self, "data", self.data.for_epochs(epochs))

    def for_new_head(self) -> CompressConfig:
        """This config for a start whose head is new: the epochs left unset become
        ``NEW_HEAD_EPOCHS`` (the regularize stage is the task fine-tuning; for ``none`` with
        a ratio, MAC or latency target, no stage and every epoch after the cut), and
        augmentation left unset is decided again for them."""
        reg, ft = NEW_HEAD_EPOCHS
        unset, replace = self.unset, dataclasses.replace
        if self.method == "none" and "reg_epochs" in unset and self.prune.threshold is None:
            # no penalty to spend the stage on: prune the pretrained model first and
            # fine-tune every epoch, which beat 16 + 4 by 6.1 (2x) and 6.8 points (4x)
            # on MobileNetV2 (benchmarks/results/quality_fmnist-mobilenetv2-pretrained.md)
            reg, ft = 0, reg + ft
        return replace(
            self,
            regularize=replace(self.regularize, epochs=reg)
            if "reg_epochs" in unset
            else self.regularize,
            finetune=replace(self.finetune, epochs=ft) if "ft_epochs" in unset else self.finetune,
            data=replace(self.data, augment=None) if "augment" in unset else self.data,
        )

    def for_trained(self) -> CompressConfig:
        """This config for a trained model. With ``--reg-epochs`` unset and a ratio, MAC or
        latency target: no regularize stage (prune with the method's scores, then
        fine-tune), which won at equal epochs in the trained regime of
        ``quality_regimes.py``; a threshold selection keeps the stage, since a threshold
        removes only what the method's penalty emptied. Without a stage, fine-tuning left
        unset gets every epoch: ``REGULARIZE_EPOCHS + FINETUNE_EPOCHS``."""
        unset, replace = self.unset, dataclasses.replace
        stage = self.regularize
        if "reg_epochs" in unset and self.prune.threshold is None:
            stage = replace(stage, epochs=0)
        ft = self.finetune
        if stage.epochs == 0 and "ft_epochs" in unset:
            ft = replace(ft, epochs=REGULARIZE_EPOCHS + FINETUNE_EPOCHS)
        if (stage, ft) == (self.regularize, self.finetune):
            return self
        augment = replace(self.data, augment=None) if "augment" in unset else self.data
        return replace(self, regularize=stage, finetune=ft, data=augment)

    @property
    def latency_device(self) -> LatencyDevice:
        """Where the before/after comparison runs: the latency target's device (its
        profile or host; this machine by default) at ``latency_threads``."""
        return dataclasses.replace(self.prune.device, threads=self.latency_threads)
