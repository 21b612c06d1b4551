"""Configuration as frozen dataclasses: CLI options -> a config -> library functions.

Library code never sees click. Every config serialises with ``to_dict`` and is written
next to the output it produced, so a result can always be traced back to its settings.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compressor.errors import CompressorError


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) config dataclass."""
    return _jsonable(dataclasses.asdict(config))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: str | Path, payload: Any) -> None:
    """Write ``payload`` as JSON atomically (a reader never sees a half-written file)."""
    from compressor.utils import atomic_write_bytes

    atomic_write_bytes(Path(path), (json.dumps(_jsonable(payload), indent=2) + "\n").encode())


def read_options_file(path: str | Path) -> dict[str, Any]:
    """Method options from a JSON or TOML file (a flat table of names to values)."""
    p = Path(path)
    if not p.is_file():
        raise CompressorError(f"options file {str(p)!r} not found")
    try:
        if p.suffix.lower() == ".toml":
            import tomllib

            data: Any = tomllib.loads(p.read_text())
        else:
            data = json.loads(p.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise CompressorError(
            f"options file {p} is not valid {p.suffix.lstrip('.') or 'JSON'}: {e}"
        ) from e
    if not isinstance(data, dict) or any(isinstance(v, dict | list) for v in data.values()):
        raise CompressorError(f"options file {p} must hold a flat table of option names and values")
    return data


INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


@dataclass(frozen=True)
class Preprocess:
    """How images become model input; recorded with every model the tool writes."""

    input_size: tuple[int, int, int]  # (C, H, W)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    # image files: shorter side resized to H / crop_pct with this filter, then center-cropped
    interpolation: str = "bilinear"  # one of INTERPOLATIONS (timm's pretrained_cfg has its own)
    crop_pct: float = 0.875

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise CompressorError(
                f"interpolation must be one of {', '.join(INTERPOLATIONS)}, "
                f"got {self.interpolation!r}"
            )
        if not 0 < self.crop_pct <= 1:
            raise CompressorError(f"crop_pct must be in (0, 1], got {self.crop_pct}")
        c = self.input_size[0]
        if c not in (1, 3):
            raise CompressorError(f"input channels must be 1 or 3, got {c}")
        if min(self.input_size[1:]) < 1:
            raise CompressorError(f"input size must be positive, got {self.input_size}")
        if len(self.mean) != c or len(self.std) != c:
            raise CompressorError(
                f"mean and std need {c} values for {c}-channel input, got {self.mean} and {self.std}"
            )
        if min(self.std) <= 0:
            raise CompressorError(f"std values must be positive, got {self.std}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        return cls(
            input_size=tuple(int(v) for v in d["input_size"]),  # type: ignore[arg-type]
            mean=tuple(float(v) for v in d["mean"]),
            std=tuple(float(v) for v in d["std"]),
            # files written before 0.x recorded neither: they were resized this way
            interpolation=str(d.get("interpolation", "bilinear")),
            crop_pct=float(d.get("crop_pct", 0.875)),
        )


@dataclass(frozen=True)
class DataConfig:
    """Where the data comes from and how it is batched.

    ``data`` is a directory (ImageFolder, CIFAR-10/100 or MNIST layout) or ``mnist15k``.
    ``input_size`` is ``(S,)``, ``(H, W)`` or ``(C, H, W)``; with ``mean`` and ``std`` it overrides what the model file recorded or the
    dataset's defaults. ``workers=None`` picks a sensible count for the data source.
    """

    data: str
    input_size: tuple[int, ...] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    val_split: float = 0.1
    batch_size: int = 128
    eval_batch_size: int = 256  # raised to batch_size when that is larger
    workers: int | None = None
    # random shifts (and flips where valid); None: on for runs of AUGMENT_FROM_EPOCHS or more
    augment: bool | None = None
    # image files that cannot be decoded: skipped with a warning, or an error when strict
    strict: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.val_split < 1.0:
            raise CompressorError(f"--val-split must be in (0, 1), got {self.val_split}")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise CompressorError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.input_size is not None and (
            not 1 <= len(self.input_size) <= 3 or min(self.input_size) < 1
        ):
            raise CompressorError(f"--input-size must be S, HxW or CxHxW, got {self.input_size}")
        if self.workers is not None and self.workers < 0:
            raise CompressorError(f"--workers must be 0 or more, got {self.workers}")
        if self.eval_batch_size < self.batch_size:
            object.__setattr__(self, "eval_batch_size", self.batch_size)

    def for_epochs(self, epochs: int) -> DataConfig:
        """This config with ``augment`` decided for a run of ``epochs``: random shifts
        regularise long runs but cost accuracy in short ones, so they are on from
        ``AUGMENT_FROM_EPOCHS`` epochs unless ``augment`` says otherwise."""
        if self.augment is not None:
            return self
        return dataclasses.replace(self, augment=epochs >= AUGMENT_FROM_EPOCHS)


OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")
AUGMENT_FROM_EPOCHS = 10
# peak learning rates by optimizer: `train`'s ...
TRAIN_LR = {"sgd": 0.05, "adamw": 1e-3}
# ... compress's regularize stage, which starts from a trained model ...
REGULARIZE_LR = {"sgd": 0.01, "adamw": 1e-4}
# ... and compress's fine-tuning, which retrains a pruned trained model. `train`'s 0.05
# threw a pruned ImageNet-pretrained mobilenet_v2 back to 27-35% validation top-1 after
# its first epoch and it ended at 80.5-80.9% test (Fashion-MNIST, 2x fewer MACs, 4 epochs,
# dense 89.9%); 0.02 ended at 86.4-87.2%; on resnet18 from scratch 0.02 was level with
# 0.05 at 10x fewer MACs and ahead at 30x (benchmarks/results/finetune_lr_fmnist-*.md).
# AdamW's rate follows SGD's by the same factor (0.4 of `train`'s); it was not measured.
FINETUNE_LR = {"sgd": 0.02, "adamw": 4e-4}
# compress's stages
REGULARIZE_EPOCHS, FINETUNE_EPOCHS = 5, 3
# ... when the start gets a new head (a pretrained model or backbone for the user's task):
# the regularize stage is the task fine-tuning, then pruning and k more epochs, as the
# pretrained regime of benchmarks/quality_regimes.py runs it (E + k = 16 + 4 on
# Fashion-MNIST with MobileNetV2, where a dense fine-tune's validation top-1 gained 1.3
# points from 10 to 20 epochs and 0.2 from 20 to 40: its _curve table)
NEW_HEAD_EPOCHS = (16, 4)
# training images that calibrate a static INT8 export
CALIB_SAMPLES = 256


def lr_text(rates: dict[str, float]) -> str:
    """``0.05 for sgd, 0.001 for adamw``: a help text's default learning rates."""
    return ", ".join(f"{lr:g} for {name}" for name, lr in rates.items())


@dataclass(frozen=True)
class TrainConfig:
    """The fine-tuning loop's settings. ``lr`` is the peak learning rate after warm-up."""

    epochs: int = 10
    optimizer: str = "sgd"
    lr: float = TRAIN_LR["sgd"]  # for adamw give TRAIN_LR["adamw"] (``TrainConfig.create``)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    step_epochs: int = 30  # step schedule: decay every this many epochs
    gamma: float = 0.1  # step schedule: decay factor
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    # knowledge distillation from a teacher (compress: the model before compression):
    # the loss is (1 - distill) * cross-entropy + distill * T^2 * KL(teacher_T || student_T)
    # with both outputs softened by the temperature T (Hinton et al. 2015); 0: off
    distill: float = 0.0
    temperature: float = 4.0
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # mixed precision; used on CUDA only
    channels_last: bool = True  # memory format; used on CUDA only
    # under torchrun: BatchNorm statistics over the global batch (compressor.syncbn);
    # in one process there is nothing to synchronise
    sync_bn: bool = False
    log_every: int = 20  # progress-bar refresh, in steps

    @classmethod
    def create(
        cls,
        *,
        optimizer: str = "sgd",
        lr: float | None = None,
        stage: str = "train",
        **options: Any,
    ) -> TrainConfig:
        """A config whose ``lr``, unless given, is the optimizer's peak rate for ``stage``:
        ``"train"`` (``TRAIN_LR``), ``"regularize"`` (``REGULARIZE_LR``) or ``"finetune"``
        (``FINETUNE_LR``), compress's two stages."""
        rates = {"regularize": REGULARIZE_LR, "finetune": FINETUNE_LR}.get(stage, TRAIN_LR)
        if lr is None:
            lr = rates.get(optimizer, TRAIN_LR["sgd"])  # an unknown optimizer is refused below
        return cls(optimizer=optimizer, lr=lr, **options)

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise CompressorError(f"--epochs must be 0 or more, got {self.epochs}")
        if self.optimizer not in OPTIMIZERS:
            raise CompressorError(
                f"unknown optimizer {self.optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}"
            )
        if self.schedule not in SCHEDULES:
            raise CompressorError(
                f"unknown schedule {self.schedule!r}; choose one of: {', '.join(SCHEDULES)}"
            )
        if self.lr <= 0:
            raise CompressorError(f"--lr must be positive, got {self.lr}")
        if self.momentum < 0:
            raise CompressorError(f"--momentum must be 0 or more, got {self.momentum}")
        if self.step_epochs < 1:
            raise CompressorError(f"--step-epochs must be at least 1, got {self.step_epochs}")
        if self.warmup_epochs < 0:
            raise CompressorError(f"--warmup-epochs must be 0 or more, got {self.warmup_epochs}")
        if not 0 < self.gamma <= 1:
            raise CompressorError(f"gamma must be in (0, 1], got {self.gamma}")
        if self.weight_decay < 0:
            raise CompressorError(f"--weight-decay must be 0 or more, got {self.weight_decay}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise CompressorError(
                f"--label-smoothing must be in [0, 1), got {self.label_smoothing}"
            )
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise CompressorError(f"--device must be auto, cpu or cuda[:N], got {self.device!r}")
        if not 0.0 <= self.distill <= 1.0:
            raise CompressorError(f"--distill must be in [0, 1], got {self.distill}")
        if not self.temperature > 0:
            raise CompressorError(f"--temperature must be positive, got {self.temperature}")


# channel importance criteria (each scored in compressor/pruning/scores.py)
IMPORTANCES = ("l2", "l1", "bn", "folded")


TARGETS = ("ratio", "target_macs", "threshold", "target_latency", "target_speedup")


@dataclass(frozen=True)
class LatencyDevice:
    """Where a latency target is measured: onnxruntime threads, an edge profile of the
    runner (pinned cores), or a remote host over SSH; by default this machine, 1 thread."""

    threads: int = 1
    profile: str | None = None
    remote: str | None = None
    port: int | None = None

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise CompressorError(f"--threads must be at least 1, got {self.threads}")


@dataclass(frozen=True)
class PruneConfig:
    """How channels are selected for removal. Exactly one of ``ratio``, ``target_macs``,
    ``threshold``, ``target_latency`` and ``target_speedup`` is set.

    ``ratio``: fraction of all prunable channels to remove, in [0, 1).
    ``target_macs``: remove channels until MACs <= this fraction of the original, in (0, 1].
    ``threshold``: remove channels scoring below it (``relative``: below it times the
    group's largest score).
    ``target_latency`` (ms) / ``target_speedup`` (x): remove channels until the model,
    exported to ONNX at ``latency_size`` (default: the model's input size), runs this fast
    on ``device``, as measured by the benchmark runner.
    """

    ratio: float | None = None
    target_macs: float | None = None
    threshold: float | None = None
    relative: bool = False
    importance: str = "l2"
    round_to: int = 8  # fastest in onnxruntime on CPU per benchmarks/results/round_to.md
    max_layer_ratio: float = 0.9
    # how many channels each group loses: "global" (ranked across the model) or "uniform"
    # (the same fraction of each); "auto": uniform under a latency target, where it kept
    # more accuracy at equal latency (benchmarks/results/latency_target_fmnist-*.md),
    # global otherwise
    allocation: str = "auto"
    target_latency: float | None = None
    target_speedup: float | None = None
    latency_size: tuple[int, ...] | None = None
    device: LatencyDevice = dataclasses.field(default_factory=LatencyDevice)

    @property
    def latency_target(self) -> bool:
        return self.target_latency is not None or self.target_speedup is not None

    def __post_init__(self) -> None:
        if self.allocation == "auto":
            object.__setattr__(self, "allocation", "uniform" if self.latency_target else "global")
        given = [n for n in TARGETS if getattr(self, n) is not None]
        if len(given) != 1:
            raise CompressorError(
                "give exactly one of --ratio, --target-macs, --threshold, --target-latency "
                "and --target-speedup"
                + (
                    f" (got {', '.join('--' + g.replace('_', '-') for g in given)})"
                    if given
                    else ""
                )
            )
        if self.ratio is not None and not 0.0 <= self.ratio < 1.0:
            raise CompressorError(f"--ratio must be in [0, 1), got {self.ratio}")
        if self.target_macs is not None and not 0.0 < self.target_macs <= 1.0:
            raise CompressorError(f"--target-macs must be in (0, 1], got {self.target_macs}")
        if self.threshold is not None and self.threshold < 0:
            raise CompressorError(f"--threshold must be 0 or more, got {self.threshold}")
        if self.target_latency is not None and not self.target_latency > 0:
            raise CompressorError(
                f"--target-latency is in milliseconds and must be positive, got {self.target_latency}"
            )
        if self.target_speedup is not None and not self.target_speedup > 1:
            raise CompressorError(
                f"--target-speedup must be above 1 (x the model's measured speed), got {self.target_speedup}"
            )
        if self.importance not in IMPORTANCES:
            raise CompressorError(
                f"unknown importance {self.importance!r}; choose one of: {', '.join(IMPORTANCES)}"
            )
        if self.round_to < 1:
            raise CompressorError(f"--round-to must be at least 1, got {self.round_to}")
        if not 0.0 < self.max_layer_ratio < 1.0:
            raise CompressorError(
                f"--max-layer-ratio must be in (0, 1), got {self.max_layer_ratio}"
            )
        if self.allocation not in ("global", "uniform"):
            raise CompressorError(
                f"unknown --allocation {self.allocation!r}; choose one of: auto, global, uniform"
            )


def changed_settings(
    saved: dict[str, Any],
    now: dict[str, Any],
    keys: Any = None,
    defaults: dict[str, Any] | None = None,
) -> list[str]:
    """The settings that differ between an interrupted run's record and this run's, both
    compared as JSON; ``keys`` (default: every key of either, sorted) in their order;
    ``defaults`` stand in for keys an older record lacks. The one resume check that
    ``compress``, ``train`` and the training loop share."""
    now = json.loads(json.dumps(now))
    names = sorted(set(saved) | set(now)) if keys is None else list(keys)
    fallback = defaults or {}
    return [k for k in names if saved.get(k, fallback.get(k)) != now.get(k)]
