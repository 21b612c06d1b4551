"""``compress``: the whole job, stage by stage, resumable, never leaving a half-written OUTDIR.

Stages: baseline evaluation -> training with the method's regularizer -> channel selection
(the method's criterion) and physical removal -> fine-tuning -> evaluation -> ONNX export
and verification -> side-by-side latency -> report. Everything is written into
``OUTDIR.partial/`` first; each stage leaves a file that marks it done, so ``--resume``
skips finished stages and continues an interrupted training stage at the step it reached.
Only a complete run is renamed to ``OUTDIR``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compressor.config import (
    FINETUNE_EPOCHS,
    NEW_HEAD_EPOCHS,
    REGULARIZE_EPOCHS,
    DataConfig,
    LatencyDevice,
    PruneConfig,
    TrainConfig,
    changed_settings,
    to_dict,
    write_json,
)
from compressor.errors import CompressorError
from compressor.lock import exclusive
from compressor.onnx_export import ExportConfig
from compressor.schema import stamp
from compressor.strength import StrengthConfig
from compressor.utils import atomic_path, atomic_write_bytes, atomic_write_with, remove_temporaries
from compressor.utils import epochs_text as _epochs_text

STAGES = ("baseline", "regularize", "prune", "finetune", "evaluate", "export", "latency", "report")


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
        ``NEW_HEAD_EPOCHS`` (the regularize stage is the task fine-tuning), and augmentation
        left unset is decided again for them."""
        reg, ft = NEW_HEAD_EPOCHS
        unset, replace = self.unset, dataclasses.replace
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


def partial_dir(outdir: Path) -> Path:
    return outdir.with_name(outdir.name + ".partial")


def _plot_channels(layers: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [_layer_label(r) for r in layers]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.28 * len(names)), 3.6))
    xs = range(len(names))
    ax.bar(xs, [r["before"] for r in layers], color="#c0c0c0", label="before")
    ax.bar(xs, [r["after"] for r in layers], color="#2a6fb0", label="after")
    ax.set_xticks(list(xs), names, rotation=90, fontsize=7)
    ax.set_xlabel("layer")
    ax.set_ylabel("output channels")
    ax.set_title("Channels per layer")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:  # a failed write names its file
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


_SHORT_TYPES = {"Conv2d": "conv", "Linear": "fc", "ConvTranspose2d": "deconv", "Conv1d": "conv1d"}


def _layer_label(row: dict[str, Any]) -> str:
    """``layer1.0.conv1`` as it is; a name that starts with an index (``0``, ``7.conv1``,
    from an ``nn.Sequential``) gets its type in front: ``conv 0``, ``conv 7.conv1``."""
    name = str(row["name"])
    kind = _SHORT_TYPES.get(str(row.get("type", "")), str(row.get("type", "")).lower())
    if name.split(".")[0].isdigit() and kind:
        return f"{kind} {name}"
    return name


def _plot_training(
    reg: list[dict[str, Any]],
    ft: list[dict[str, Any]],
    strength: dict[str, Any] | None,
    path: Path,
) -> None:
    """Loss (penalty on its own axis), validation top-1 (with the controller's checks
    inside the regularize stage, so a one-epoch stage is a line, not a dot) and, under
    ``--lambda auto``, the strength and the share."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 3 if strength else 2
    # stacked, one epoch axis for every panel: wide side-by-side panels had small fonts and
    # different epoch ranges
    fig, axes = plt.subplots(panels, 1, figsize=(7.5, 3.0 * panels), sharex=True)
    a, b = axes[0], axes[1]
    epochs = [h["epoch"] for h in reg] + [len(reg) + h["epoch"] for h in ft]
    runs = reg + ft
    a.plot(epochs, [h["train_loss"] for h in runs], marker="o", label="loss")
    a.set_ylabel("training loss (cross-entropy)")
    if reg:
        pen = a.twinx()
        pen.plot(
            [h["epoch"] for h in reg],
            [h["train_penalty"] for h in reg],
            marker="x",
            linestyle="--",
            color="#8e44ad",
            label="penalty",
        )
        pen.set_ylabel("penalty (regularize stage)")
        pen.legend(fontsize=7, loc="upper center")
    checks = [p for p in (strength or {}).get("history", []) if p.get("val_top1") is not None]
    if checks:
        b.plot(
            [p["epoch"] for p in checks],
            [p["val_top1"] for p in checks],
            marker=".",
            color="#7f8c8d",
            label="controller checks",
        )
    b.plot(epochs, [h["val_top1"] for h in runs], marker="o", label="end of epoch")
    b.set_ylabel("top-1 (%)")
    for ax in (a, b):
        ax.axvline(len(reg), color="#b03a2e", linestyle=":", label="pruned")
        ax.legend(fontsize=8, loc="best")
    a.set_title("training loss")
    b.set_title("validation top-1")
    if strength:
        _plot_strength(axes[2], strength)
    axes[-1].set_xlabel("epoch (regularize, then fine-tune)")
    axes[-1].set_xlim(0, max(len(reg) + len(ft), 1))
    fig.tight_layout()
    with atomic_path(path) as tmp:  # a failed write names its file
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _plot_strength(ax: Any, strength: dict[str, Any]) -> None:
    pts = strength["history"]
    lines = ax.step(
        [p["epoch"] for p in pts],
        [p["strength"] for p in pts],
        where="post",
        label="strength",
    )
    ax.set_yscale("log")
    ax.set_ylabel("strength (log)")
    ax.set_title("--lambda auto")
    shares = [(p["epoch"], p["share"]) for p in pts if p["share"] is not None]
    if shares:
        d = ax.twinx()
        lines += d.plot(*zip(*shares, strict=True), color="#c77c02", marker=".", label="share")
        d.set_ylim(0, 1)
        d.set_ylabel("share of the score mass to remove")
    ax.legend(lines, [ln.get_label() for ln in lines], fontsize=8, loc="best")


def _memory_mb(path: Path, threads: int) -> float:
    from compressor.bench.runner import RunnerError, isolated_memory

    try:
        return float(isolated_memory(str(path), threads, 1)["peak_growth_mb"])
    except RunnerError as e:
        raise CompressorError(f"memory probe of {path.name}: {e}") from None


def _interval(ci: list[float] | None) -> str:
    """A 95% interval at the precision it supports: two decimals, or the half-width when
    the ends round alike (``1.41 ±0.004`` rather than ``1.41-1.41``)."""
    if not ci:
        return ""
    lo, hi = ci
    if f"{lo:.2f}" == f"{hi:.2f}":
        return f" (95%: ±{(hi - lo) / 2:.1g})"
    return f" (95%: {lo:.2f}-{hi:.2f})"


def _fewer(before: float, after: float, word: str = "fewer") -> str:
    """One convention for every reduction in reports: ``before / after``, 'N.NNx fewer'
    (as `compressor benchmark`'s 'MACs cut')."""
    if after <= 0:
        return "-"
    ratio = before / after
    return f"{ratio:.2f}x {word}" if ratio >= 1 else f"{1 / ratio:.2f}x more"


def _strength_lines(strength: dict[str, Any] | None) -> list[str]:
    if not strength:
        return []
    share = strength.get("final_share")
    return [
        f"Strength (`--lambda auto`): {strength['history'][0]['strength']:.3g} at calibration, "
        f"{strength['final_strength']:.3g} at the end ({len(strength['history']) - 1} checks); "
        f"validation top-1 {strength['baseline_top1']:.2f}% before the stage, "
        f"{strength['final_top1']:.2f}% after"
        + (
            f"; the channels the selection removes held {100 * share:.2f}% of the group-norm mass."
            if share is not None
            else "."
        )
        + (
            f" The penalty acted on the whole network until epoch {strength['focused_at']:.2f} "
            "(the method's plan had settled, or the global phase's limit), then only on the "
            "channels its plan removes."
            if strength.get("focused_at")
            else ""
        )
        + (
            f" Early prune: the stage ended after epoch {strength['stopped_after']}, the share "
            "falling too slowly to reach the goal in time; its other epochs went to fine-tuning."
            if strength.get("stopped_after")
            else ""
        ),
        "",
    ]


def _data_line(data: dict[str, Any]) -> str:
    size = "x".join(map(str, data["preprocess"]["input_size"]))
    held = " (held out from the training images)" if data.get("val_held_out_from_train") else ""
    test = f", {data['test_images']} test" if data.get("test_images") else ", no test split"
    return (
        f"{data['source']}: {data['train_images']} train / {data['val_images']} val{held}"
        f"{test} images, input {size}"
    )


def latency_target_lines(lat: dict[str, Any] | None) -> list[str]:
    """The latency target's record, in report.md: target, measured, predicted, the
    slowest layers before and after (the table's prediction)."""
    if not lat:
        return []
    target = (
        f"{lat['target_ms']:g} ms" if lat["target_ms"] else f"{lat['target_speedup']:g}x faster"
    )
    device = ", ".join(f"{k} {v}" for k, v in lat["device"].items())
    lines = [
        f"Latency target {target} at {'x'.join(map(str, lat['input_size']))} ({device}), measured "
        f"right after pruning beside the dense model: {lat['measured_ms']:.3f} ms against "
        f"{lat['dense_measured_ms']:.3f} ms, {lat['speedup']:.2f}x faster"
        f"{_interval(lat.get('speedup_ci95'))}; the table predicted {lat['predicted_ms']:.3f} ms; "
        f"{len(lat['attempts'])} measured plan(s), "
        + ("within 5% of the target." if lat["met"] else "NOT within 5%: the closest is kept."),
        "",
        "| layer (slowest first) | before (ms, predicted) | after (ms, predicted) |",
        "| --- | --- | --- |",
        *(
            f"| {r['name']} | {r['before_ms']:.3f} | {r['after_ms']:.3f} |"
            for r in lat["layers"][:8]
        ),
        "",
    ]
    return lines


def device_text(lat: dict[str, Any]) -> str:
    """Where report.json's latency comparison ran, in words."""
    where = [f"{lat['threads']} thread(s)"]
    if lat.get("profile"):
        where.append(f"profile {lat['profile']}")
    if lat.get("remote"):
        where.append(f"on {lat['remote']}")
    return ", ".join(where)


def _markdown(report: dict[str, Any]) -> str:
    from compressor.analysis import human
    from compressor.reference import reference_lines

    b, c = report["baseline"], report["compressed"]
    lat, onnx = report["latency"], report["onnx"]
    lines = [
        f"# Compression report: {report['arch']} with `{report['method']}`",
        "",
        f"Data: {_data_line(report['data'])}",
        "",
        "| | baseline | compressed | ratio |",
        "| --- | --- | --- | --- |",
        *(
            f"| {split} top-1 (%, {b[f'{split}_images']} images{note}) | {b[f'{split}_top1']:.2f} | "
            f"{c[f'{split}_top1']:.2f} | {c[f'{split}_top1'] - b[f'{split}_top1']:+.2f} pt |"
            for split, note in (
                ("test", ", scored only here"),
                ("val", ", steers --lambda auto" if report.get("strength") else ""),
            )
            if b.get(f"{split}_top1") is not None
        ),
        f"| parameters (PyTorch, BatchNorm included) | {human(b['params'])} | {human(c['params'])} | {_fewer(b['params'], c['params'])} |",
        f"| MACs | {human(b['macs'])} | {human(c['macs'])} | {_fewer(b['macs'], c['macs'])} |",
        f"| latency (ms, batch 1, {device_text(lat)}, onnxruntime) | {lat['baseline_ms']:.3f} | "
        f"{lat['compressed_ms']:.3f} | {lat['speedup']:.2f}x faster{_interval(lat.get('speedup_ci95'))} |",
        *(
            f"| {label} | {pair[0]:.1f} | {pair[1]:.1f} | {_fewer(pair[0], pair[1], 'smaller')} |"
            for label, pair in (
                ("peak memory (MB, resident-set growth, onnxruntime)", lat.get("memory_mb")),
                ("ONNX file (MB)", lat.get("file_mb")),
            )
            if pair
        ),
        "",
        *reference_lines(report),
        *(f"Warning: {w}  " for w in lat.get("warnings", [])),
        *(
            [f"Warning: target missed: {report['pruning']['target_miss']}  "]
            if report["pruning"].get("target_miss")
            else []
        ),
        f"Method `{report['method']}` with {json.dumps(report['hyperparameters'])}; selection "
        f"{json.dumps(report['selection'])}: {report['pruning']['removed_channels']} of "
        f"{report['pruning']['prunable_channels']} prunable channels removed"
        + _after_prune_text(report["pruning"])
        + ".",
        "",
        *_strength_lines(report.get("strength")),
        *latency_target_lines(report["pruning"].get("latency")),
        f"ONNX: `{Path(onnx['path']).name}`, opset {onnx['opset']}, {onnx['exporter']} exporter; "
        f"max abs difference to PyTorch {onnx['max_abs_diff']:.2e}, top-1 agreement {onnx['top1_agreement']:.1f}%.",
        "",
        "Stage times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in report["stages"].items()),
        "",
        "![channels](channels.png)",
        "",
        "![training](training.png)",
    ]
    return "\n".join(lines) + "\n"


def _after_prune_text(pruning: dict[str, Any]) -> str:
    """``; they held 3.1% of the method's score mass, and validation top-1 right after
    the cut (before fine-tuning) was 41.20%`` (empty for a report that lacks both)."""
    share, top1 = pruning.get("removed_share"), pruning.get("val_top1_after_prune")
    parts = []
    if share is not None:
        parts.append(f"they held {100 * share:.1f}% of the method's score mass")
    if top1 is not None:
        parts.append(f"validation top-1 right after the cut, before fine-tuning, was {top1:.2f}%")
    return "; " + " and ".join(parts) if parts else ""


@dataclass
class _Run:
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
        self.log(f"[{STAGES.index(name) + 1}/{len(STAGES)}] {text}")
        return time.perf_counter()

    def done(self, name: str, t0: float) -> None:
        from compressor.distributed import is_main

        self.stages[name] = self.stages.get(name, 0.0) + time.perf_counter() - t0
        if is_main():
            write_json(self.work / "stages.json", self.stages)

    def read(self, name: str) -> Any:
        return json.loads((self.work / name).read_text())

    def scores(self, model: Any) -> dict[str, Any]:
        """Top-1/top-5/loss on every held-out split, each under its own name
        (``val_top1``, ``test_top1`` ...; test keys are None without a test split)."""
        out: dict[str, Any] = {}
        for split in ("val", "test"):
            if split not in self.bundle.held_out_splits:
                out.update({f"{split}_{k}": None for k in ("top1", "top5", "loss", "images")})
                continue
            metrics = self.accuracy(model, self.bundle.split(split))
            out.update({f"{split}_{k}": metrics[k] for k in ("top1", "top5", "loss", "images")})
        return out

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


def compress(
    model_path: Path | str,
    outdir: Path,
    config: CompressConfig,
    *,
    arch: str | None = None,
    weights: str | None = None,
    reference: Path | None = None,
    trust_pickle: bool = False,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = lambda _m: None,
    stop_after_steps: int | None = None,
) -> dict[str, Any]:
    """Run the whole job and return the report (also written as ``report.json``).

    ``model_path`` is a model file, or an architecture name with ``weights`` (a state_dict
    file, ``DEFAULT`` or a torchvision weights name). A start whose classifier does not fit
    the data (or has none) gets a new head, and the epochs ``config.unset`` leaves open
    become ``NEW_HEAD_EPOCHS``. ``reference``: a dense model trained on the same data, which
    the report compares the compressed model with.

    Raises ``CompressorError`` for bad inputs, an existing OUTDIR without ``force``, or a
    resumption whose settings differ; ``TrainingInterrupted`` after an interrupt (the
    partial folder is kept for ``resume``).
    """
    from compressor import distributed
    from compressor.data import default_workers, describe
    from compressor.methods import get_method
    from compressor.operations import load_start, start_lines
    from compressor.utils import resolve_device

    if outdir.exists() and not force:
        raise CompressorError(
            f"{outdir} exists; pass --force to replace it (force=True from Python)"
        )
    work = partial_dir(outdir)
    method = get_method(config.method, config.method_options)  # validates name and options
    if resume and not (work / "config.json").is_file():
        raise CompressorError(f"nothing to resume: {work} does not exist")
    if reference is not None and not Path(reference).is_file():
        raise CompressorError(f"--reference {reference}: no such file")
    main = distributed.is_main()  # under torchrun, rank 0 writes and runs the serial stages
    # everything a user can get wrong is checked before anything is written
    loaded, bundle, start = load_start(
        model_path,
        config.data,
        arch=arch,
        trust_pickle=trust_pickle,
        weights=weights,
        seed=config.regularize.seed,
    )
    if start is not None and start.head_replaced:
        config = config.for_new_head()
    else:
        config = config.for_trained()
    dense_reference = None
    if reference is not None:
        from compressor.reference import load_reference

        dense_reference = load_reference(
            Path(reference), bundle, arch=loaded.arch, trust_pickle=trust_pickle
        )
    resolved = {
        "model": str(model_path),
        "arch": arch,
        "weights": weights,
        "reference": None if reference is None else str(reference),
        "method": config.method,
        "hyperparameters": dataclasses.asdict(method.params),
        **{k: v for k, v in to_dict(config).items() if k not in ("method", "method_options")},
    }
    _check_outdir(outdir)
    # one writer per OUTDIR (rank 0 writes under torchrun); a dead run's lock is taken over
    with exclusive(outdir) if main else contextlib.nullcontext():
        _open_work(work, resolved, resume=resume, main=main)
        loaded.preprocess = bundle.preprocess
        if loaded.class_names is None:
            loaded.class_names = bundle.class_names
        run = _Run(
            model_path=Path(model_path),
            outdir=outdir,
            work=work,
            config=config,
            loaded=loaded,
            bundle=bundle,
            device=resolve_device(config.regularize.device),
            workers=default_workers(bundle) if config.data.workers is None else config.data.workers,
            progress=progress,
            log=log,
            stages=_stage_times(work),
            stop_after_steps=stop_after_steps,
            origin=start,
            reference=dense_reference,
            reference_path=None if reference is None else Path(reference),
        )
        for line in start_lines(start, len(bundle.class_names)):
            log(line)
        log(f"data: {_data_line(describe(bundle))}")
        report = _run_stages(run, main)
        if main:
            _finish(run)
    return report


def _stage_times(work: Path) -> dict[str, float]:
    """The seconds each finished stage took (kept across --resume)."""
    path = work / "stages.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _open_work(work: Path, resolved: dict[str, Any], *, resume: bool, main: bool) -> None:
    """A resumed run must have the settings it started with; a new one starts an empty
    ``work`` folder holding them (rank 0 writes, every rank waits for it)."""
    from compressor import distributed

    if resume:
        diff = changed_settings(json.loads((work / "config.json").read_text()), resolved)
        if diff:
            raise CompressorError(
                f"cannot resume {work} with different settings ({', '.join(diff)})"
            )
        if main:
            remove_temporaries(work)  # what the interrupted run was writing
    elif main:
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        write_json(work / "config.json", resolved)
    distributed.barrier()


def _run_stages(run: _Run, main: bool) -> dict[str, Any]:
    """Every stage not finished yet, then the report ({} on the other ranks). A failure
    after a stage finished keeps ``work`` for ``--resume`` and says so."""
    from compressor import distributed
    from compressor.training import TrainingInterrupted

    work = run.work
    try:
        for name, stage_fn in _STAGE_FUNCTIONS.items():
            if not main and name not in _PARALLEL:
                if name == "evaluate":  # the rest is rank 0's alone
                    return {}
                distributed.barrier()  # wait for rank 0's stage and its files
                continue
            if name != "report" and not (work / _DONE[name]).is_file():
                stage_fn(run)
            if distributed.active() and name in ("baseline", "regularize", "prune"):
                distributed.barrier()
        return _report(run)
    except TrainingInterrupted:  # its message says how to resume
        raise
    except BaseException as e:
        if not main:
            raise
        if not _has_progress(work):
            shutil.rmtree(work, ignore_errors=True)  # nothing worth resuming: leave nothing
            raise
        if isinstance(e, CompressorError):
            raise CompressorError(
                f"{e} ({work} keeps the finished stages: fix the cause and rerun with --resume)"
            ) from e
        raise


def _check_outdir(outdir: Path) -> None:
    """OUTDIR can be created: its nearest existing parent is a writable folder."""
    parent = outdir.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise CompressorError(f"cannot create {outdir}: {parent} is a file")
    if not os.access(parent, os.W_OK):
        raise CompressorError(f"cannot create {outdir}: {parent} is not writable")


def _has_progress(work: Path) -> bool:
    """Whether the partial folder holds training worth resuming."""
    return any(
        (work / name).exists()
        for name in ("regularize.resume", "regularized.pt", "finetune.resume", "model.pt")
    )


# under torchrun every rank runs these (data-parallel training); rank 0 alone the others
_PARALLEL = ("regularize", "finetune")

# one file marks each stage done, so --resume skips it
_DONE = {
    "baseline": "baseline.json",
    "regularize": "regularized.pt",
    "prune": "pruned.pt",
    "finetune": "model.pt",
    "evaluate": "compressed.json",
    "export": "onnx.json",
    "latency": "latency.json",
    "report": "report.json",
}


def _baseline(run: _Run) -> None:
    """1. Evaluate the input model; count its parameters and MACs."""
    from compressor.analysis import count_macs, count_params, layer_table
    from compressor.checkpoint import save_model

    t0 = run.start("baseline", "baseline: evaluate, count parameters and MACs")
    model = run.loaded.model
    base_layers = layer_table(model, run.size)
    baseline = {
        **run.scores(model),
        "params": count_params(model),
        "macs": count_macs(model, run.size),
        "layers": [
            {"name": r.name, "type": r.type, "out_channels": r.out_channels} for r in base_layers
        ],
    }
    model.cpu()
    if run.reference is not None:
        baseline["reference"] = _reference_scores(run)
    save_model(run.loaded, run.work / "baseline.pt")
    write_json(run.work / "baseline.json", baseline)
    run.done("baseline", t0)
    head = " (a new head: no task accuracy yet)" if run.new_head else ""
    run.log(
        f"  baseline{head}: {held_out_text(baseline)}; {baseline['params']} params, "
        f"{baseline['macs']} MACs"
    )
    if "reference" in baseline:
        run.log(f"  dense reference: {held_out_text(baseline['reference'])}")
    warning = untrained_warning(baseline["val_top1"], len(run.bundle.class_names))
    if warning and not run.new_head:
        run.log(f"  warning: {warning}")


def _reference_scores(run: _Run) -> dict[str, Any]:
    """The dense reference's accuracy on the run's splits, parameters and MACs."""
    from compressor.analysis import count_macs, count_params

    model = run.reference.model
    scores = {
        "model": str(run.reference_path),
        **run.scores(model),
        "params": count_params(model),
        "macs": count_macs(model, run.size),
    }
    model.cpu()
    return scores


def untrained_warning(val_top1: float, classes: int) -> str | None:
    """A warning when the input model scores within a tenth of the way from chance to 100%:
    then "stay within --max-drop of the baseline" means nothing."""
    chance = 100.0 / classes
    if val_top1 >= chance + 0.1 * (100.0 - chance):
        return None
    return (
        f"the baseline scores {val_top1:.2f}% on the validation split, near chance "
        f"({chance:.1f}% for {classes} classes): is it trained for this data? --max-drop and "
        "the report's accuracy change mean little for an untrained model (train it first: "
        "compressor train ARCH --weights FILE --data D)"
    )


def held_out_text(scores: dict[str, Any]) -> str:
    """``val top-1 91.20% (6000 images), test top-1 90.85% (10000 images)``."""
    parts = [
        f"{split} top-1 {scores[f'{split}_top1']:.2f}% ({scores[f'{split}_images']} images)"
        for split in ("val", "test")
        if scores.get(f"{split}_top1") is not None
    ]
    return ", ".join(parts)


def _share_function(
    run: _Run, method: Any, latest: dict[str, Any] | None = None
) -> Callable[[Any], float | None]:
    """The share of the method's score mass held by the channels that the selection would
    remove now (None without a ratio, MAC or latency target); that plan (group -> channels) goes
    into ``latest["remove"]``. The selection uses the method's own scores, on the same
    fixed training samples as at pruning (hgs: the estimated loss increase)."""
    from compressor.data import sample_batch
    from compressor.pruning import group_scores, mac_estimator
    from compressor.selection import LatencyGoal, meet_ratio, select
    from compressor.strength import removed_share

    prune = run.config.prune
    if prune.threshold is not None:
        return lambda _model: None
    estimator: list[Any] = []
    latest = latest if latest is not None else {}
    samples = int(getattr(method.params, "samples", 64))
    calibration: list[Any] = []

    def share(model: Any, fixed: dict[int, list[int]] | None = None) -> float | None:
        """The share of the plan now; or of ``fixed`` (the growing rule's kept plan) in
        the folded group norms, which say what the channels still carry in the network's
        function (hgs's loss-increase estimates held 1-2% of their mass on a plan whose
        channels kept the kept ones' norms, and the cut left chance)."""
        index = method.groups
        if fixed is not None:
            return removed_share(group_scores(index, model, "folded"), fixed)
        if not calibration:
            calibration.extend(
                sample_batch(run.bundle, "train", samples, seed=run.config.regularize.seed)
            )
        device = next(model.parameters()).device
        x, y = (t.to(device) for t in calibration)
        scores = [s.detach().cpu() for s in method.scores(model, index, calibration=(x, y))]
        if prune.ratio is None and not estimator:
            # the structure does not change while training: count (or time) once
            dense = copy.deepcopy(model).cpu()
            if prune.latency_target:
                estimator.append(LatencyGoal(dense, index, prune, run.size))
            else:
                estimator.extend(mac_estimator(dense, index, run.size))
        try:
            if prune.latency_target:  # the table's prediction; pruning measures
                plan = estimator[0].plan(scores, comparable=method.comparable_scores)
            elif prune.ratio is not None:  # corrected for rounding, as pruning will be
                plan, _ = meet_ratio(scores, index, prune, comparable=method.comparable_scores)
            else:
                plan = select(
                    scores,
                    index,
                    prune,
                    comparable=method.comparable_scores,
                    macs=(estimator[0], estimator[1]) if estimator else None,
                )
        except CompressorError:
            if prune.ratio is not None:
                raise
            return None
        latest["remove"] = plan.remove
        return removed_share(scores, fixed if fixed is not None else plan.remove)

    return share


def _controller(run: _Run, method: Any) -> tuple[Any, dict[str, Any]]:
    """``--lambda auto``'s controller (None without it) and what the report records of it:
    the validation images it reads, enough that one top-1 reading's noise stays well under
    ``--max-drop`` (``strength.controller_images``)."""
    import torch

    from compressor.strength import AutoStrength, controller_images, resolve_rule

    config = run.config
    if config.strength is None or config.regularize.epochs <= 0:
        return None, {}
    epochs = config.regularize.epochs
    rule = resolve_rule(config.strength, new_head=run.new_head, epochs=epochs)
    if rule == "growing":
        run.log(
            f"  --lambda auto, growing rule ({'a new head' if run.new_head else f'{epochs} epochs'}): "
            "the penalty grows on the planned channels until they hold "
            f"{100 * config.strength.share_goal:g}% of the score mass, by "
            f"{config.strength.deadline:.0%} of the stage; no accuracy bound"
        )
    val = run.bundle.val
    n_val, sd = controller_images(
        run.read("baseline.json")["val_top1"], config.strength.max_drop, len(val)
    )
    if config.strength.val_images is not None:
        n_val = min(len(val), config.strength.val_images)
    if len(val) > n_val:
        idx = torch.randperm(len(val), generator=torch.Generator().manual_seed(0))
        val = torch.utils.data.Subset(val, idx[:n_val].tolist())
    if rule == "bounded":
        run.log(
            f"  --lambda auto reads {n_val} of {len(run.bundle.val)} validation images "
            f"(standard error of one top-1 about {sd:.2f} points; --max-drop "
            f"{config.strength.max_drop:g})"
        )

    def top1(model: Any, val: Any = val) -> float:
        return float(run.accuracy(model, val)["top1"])

    latest: dict[str, Any] = {}
    strength = AutoStrength(
        config.strength,
        evaluate=top1,
        share=_share_function(run, method, latest),
        plan=lambda: latest.get("remove"),
        rule=rule,
        epochs=epochs,
    )
    return strength, {"val_images": n_val, "top1_standard_error": sd}


def _regularize(run: _Run) -> None:
    """2. Train with the method's regularizer (its strength set and adapted under
    ``--lambda auto``)."""
    import torch

    from compressor.checkpoint import load_model, save_model
    from compressor.distributed import is_main
    from compressor.methods import get_method
    from compressor.training import fit
    from compressor.utils import seed_everything

    config, work = run.config, run.work
    t0 = run.start(
        "regularize", f"regularize: {_epochs_text(config.regularize.epochs)} with {config.method}"
    )
    seed_everything(config.regularize.seed)
    current = load_model(work / "baseline.pt")
    method = get_method(config.method, config.method_options)
    strength, controller = _controller(run, method)
    try:
        result = fit(
            current.model,
            run.bundle,
            config.regularize,
            config.data,
            regularizer=method,
            state_path=work / "regularize.resume",
            resume=(work / "regularize.resume").is_file(),
            progress=run.progress,
            log=run.log,
            stop_after_steps=run.stop_after_steps,
            strength=strength,
        )
    finally:
        run.done("regularize", t0)
    current.model.cpu()
    if not is_main():  # under torchrun, rank 0 writes
        return
    current.metadata["method"] = {
        "name": config.method,
        "params": dataclasses.asdict(method.params),
        "strength": method.scale,
    }
    summary = result.to_dict()
    if strength is not None:
        summary["strength"] = {
            **strength.summary(),
            **controller,
            "final_top1": result.history[-1].val_top1 if result.history else None,
            "final_share": _share_function(run, method)(current.model, strength.frozen),
        }
        s = summary["strength"]
        if strength.stopped_after is not None:
            summary["epochs_to_finetune"] = config.regularize.epochs - strength.stopped_after
        run.log(
            f"  strength {s['final_strength']:.3g}; val top-1 {s['baseline_top1']:.2f}% -> "
            f"{s['final_top1']:.2f}%"
            + (
                f"; channels to remove hold {100 * s['final_share']:.2f}% of the group-norm mass"
                if s["final_share"] is not None
                else ""
            )
        )
    write_json(work / "regularize.json", summary)
    if method.state_dict():
        state = method.state_dict()
        atomic_write_with(work / "method_state.pt", lambda f: torch.save(state, f))
    save_model(current, work / "regularized.pt")
    (work / "regularize.resume").unlink(missing_ok=True)


def _prune(run: _Run) -> None:
    """3. Score channels with the method's criterion and remove them."""
    import torch

    from compressor.checkpoint import load_model, save_model
    from compressor.data import sample_batch
    from compressor.methods import get_method
    from compressor.pruning import channel_groups
    from compressor.selection import prune_loaded

    config, work = run.config, run.work
    t0 = run.start("prune", "prune: score channels and remove them")
    current = load_model(work / "regularized.pt")
    current.preprocess = run.bundle.preprocess
    method = get_method(config.method, config.method_options)
    example = torch.zeros(1, *run.size)
    current.model.eval()
    index = channel_groups(current.model, example)
    if (work / "method_state.pt").is_file():
        method.setup(
            current.model, example_input=example, groups=index, train_size=len(run.bundle.train)
        )
        method.load_state_dict(torch.load(work / "method_state.pt", weights_only=True))
    samples = int(getattr(method.params, "samples", 64))
    calibration = sample_batch(run.bundle, "train", samples, seed=config.regularize.seed)
    t_scores = time.perf_counter()
    scores = method.scores(current.model, index, calibration=calibration, progress=run.progress)
    score_seconds = time.perf_counter() - t_scores
    info = prune_loaded(
        current,
        config.prune,
        input_size=run.size,
        scores=scores,
        comparable=method.comparable_scores,
        index=index,
    )
    info["score_seconds"] = score_seconds
    # what survives the cut before any fine-tuning (the papers' "no retraining needed")
    info["val_top1_after_prune"] = float(run.accuracy(current.model)["top1"])
    current.model.cpu()
    current.metadata["pruning"] = {
        "config": to_dict(config.prune),
        **{k: v for k, v in info.items() if k != "layers"},
    }
    write_json(work / "prune.json", info)
    save_model(current, work / "pruned.pt")
    run.done("prune", t0)
    run.log(
        f"  removed {info['removed_channels']} of {info['prunable_channels']} channels "
        f"(scores in {score_seconds:.1f}s); MACs {info['macs_after'] / info['macs_before']:.3f}x"
    )
    if info.get("target_miss"):
        run.log(f"  warning: target missed: {info['target_miss']}")


def _finetune(run: _Run) -> None:
    """4. Fine-tune the pruned model."""
    from compressor.checkpoint import load_model, save_model
    from compressor.distributed import is_main
    from compressor.training import fit
    from compressor.utils import seed_everything

    config, work = run.config, run.work
    taught = (
        f", distilling from the original model ({config.finetune.distill:g})"
        if config.finetune.distill > 0
        else ""
    )
    # epochs the regularize stage handed over when it ended early (--early-prune)
    regularized = work / "regularize.json"
    moved = 0
    if regularized.is_file():
        moved = int(json.loads(regularized.read_text()).get("epochs_to_finetune", 0))
    finetune = dataclasses.replace(config.finetune, epochs=config.finetune.epochs + moved)
    extra = f" ({config.finetune.epochs} + {moved} from the regularize stage)" if moved else ""
    t0 = run.start("finetune", f"fine-tune: {_epochs_text(finetune.epochs)}{extra}{taught}")
    seed_everything(config.finetune.seed)
    current = load_model(work / "pruned.pt")
    # the teacher is the model as the user gave it (before the regularizer)
    teacher = load_model(work / "baseline.pt").model if config.finetune.distill > 0 else None
    try:
        result = fit(
            current.model,
            run.bundle,
            finetune,
            config.data,
            state_path=work / "finetune.resume",
            resume=(work / "finetune.resume").is_file(),
            progress=run.progress,
            log=run.log,
            teacher=teacher,
        )
    finally:
        run.done("finetune", t0)
    current.model.cpu()
    if not is_main():  # under torchrun, rank 0 writes
        return
    write_json(work / "finetune.json", result.to_dict())
    save_model(current, work / "model.pt")
    (work / "finetune.resume").unlink(missing_ok=True)


def _final(run: _Run) -> Any:
    from compressor.checkpoint import load_model

    final = load_model(run.work / "model.pt")
    final.preprocess = run.bundle.preprocess
    return final


def _evaluate(run: _Run) -> None:
    """5. Evaluate the compressed model."""
    from compressor.analysis import count_macs, count_params

    t0 = run.start("evaluate", "evaluate the compressed model")
    final = _final(run)
    metrics = run.scores(final.model)
    final.model.cpu()
    compressed = {
        **metrics,
        "params": count_params(final.model),
        "macs": count_macs(final.model, run.size),
    }
    write_json(run.work / "compressed.json", compressed)
    run.done("evaluate", t0)
    run.log(f"  compressed: {held_out_text(compressed)}")


def _export(run: _Run) -> None:
    """6. Export both models (the baseline's ONNX is the latency reference) and verify."""
    from compressor.checkpoint import load_model
    from compressor.data import sample_batch
    from compressor.onnx_export import export_model, model_metadata

    config, work = run.config, run.work
    t0 = run.start("export", "export ONNX and verify against PyTorch")
    final = _final(run)
    real = sample_batch(run.bundle, "val", 64)[0]
    result_c = export_model(
        final.model,
        work / "model.onnx",
        input_size=run.size,
        metadata=model_metadata(final, {"method": config.method}),
        config=config.export,
        real_inputs=real,
        log=run.log,
    )
    base_model = load_model(work / "baseline.pt")
    base_model.preprocess = run.bundle.preprocess
    result_b = export_model(
        base_model.model,
        work / "baseline.onnx",
        input_size=run.size,
        metadata=model_metadata(base_model),
        config=config.export,
        log=run.log,
    )
    write_json(
        work / "onnx.json", {"compressed": result_c.to_dict(), "baseline": result_b.to_dict()}
    )
    run.done("export", t0)


def _latency(run: _Run) -> None:
    """7. Latency side by side in onnxruntime, and each model's peak memory."""
    from compressor.bench.runner import measure, warnings_for
    from compressor.latency import measure_on

    config, work = run.config, run.work
    t0 = run.start("latency", "latency and memory: baseline vs compressed in onnxruntime")
    onnx_files = [work / "baseline.onnx", work / "model.onnx"]
    device = config.latency_device
    least, most = min(1.0, config.latency_seconds), config.latency_seconds
    if device.profile or device.remote:  # the runner in a child process, or on the host
        lat, _ = measure_on(device, onnx_files, min_runs=20, min_seconds=least, max_seconds=most)
    else:
        lat = measure(
            [str(f) for f in onnx_files],
            threads=device.threads,
            batch=1,
            warmup=5,
            min_runs=20,
            min_seconds=least,
            max_seconds=most,
            precision=0.01,
        )
    where = {k: v for k, v in (("profile", device.profile), ("remote", device.remote)) if v}
    write_json(
        work / "latency.json",
        {
            "baseline_ms": lat[0]["p50_ms"],
            "compressed_ms": lat[1]["p50_ms"],
            "speedup": lat[0]["p50_ms"] / lat[1]["p50_ms"],
            "speedup_ci95": lat[1]["speedup_vs_first_ci95"],
            "threads": config.latency_threads,
            **where,
            "batch": 1,
            "cv": [lat[0]["cv"], lat[1]["cv"]],
            "p50_ci95_ms": [lat[0]["p50_ci95_ms"], lat[1]["p50_ci95_ms"]],
            "runs": [lat[0]["runs"], lat[1]["runs"]],
            "seconds": [lat[0]["seconds"], lat[1]["seconds"]],
            # resident-set growth of a fresh process that loads the file and runs it once
            "memory_mb": None
            if device.remote  # measured where the models run, or not at all
            else [_memory_mb(f, config.latency_threads) for f in onnx_files],
            "file_mb": [f.stat().st_size / 2**20 for f in onnx_files],
            "warnings": (
                noise := [w.replace(str(work), str(run.outdir)) for w in warnings_for(lat, 0.01)]
            ),
        },
    )
    for line in noise:  # the same warnings `compressor benchmark` gives
        run.log(f"  warning: {line}")
    run.done("latency", t0)


# what report.json keeps of each side: every figure under the name of its split
_SUMMARY_KEYS = (
    *(f"{split}_{k}" for split in ("val", "test") for k in ("top1", "top5", "images")),
    "params",
    "macs",
)


def _report(run: _Run) -> dict[str, Any]:
    """8. report.json, report.md and the plots."""
    from compressor.data import describe
    from compressor.reference import start_summary

    config, work = run.config, run.work
    t0 = run.start("report", "report")
    baseline, pruning = run.read("baseline.json"), run.read("prune.json")
    compressed, onnx_info = run.read("compressed.json"), run.read("onnx.json")
    latency = run.read("latency.json")
    regularize = run.read("regularize.json")
    reg_hist, ft_hist = regularize["history"], run.read("finetune.json")["history"]
    after = {r["name"]: r["after"] for r in pruning["layers"]}
    layers = [
        {
            "name": r["name"],
            "type": r.get("type"),
            "before": r["out_channels"],
            "after": after.get(r["name"], r["out_channels"]),
        }
        for r in baseline["layers"]
    ]
    onnx_c = onnx_info["compressed"]
    real_parity = next((p for p in onnx_c["parity"] if p["inputs"] == "real"), onnx_c["parity"][0])
    final = _final(run)
    report = stamp(
        "report",
        {
            "model": str(run.model_path),
            "arch": final.arch,
            "start": start_summary(run.origin, baseline.get("reference")),
            "method": config.method,
            "hyperparameters": json.loads((work / "config.json").read_text())["hyperparameters"],
            "strength": regularize.get("strength"),
            "selection": to_dict(config.prune),
            "data": describe(run.bundle),
            "baseline": {k: baseline[k] for k in _SUMMARY_KEYS},
            "compressed": {k: compressed[k] for k in _SUMMARY_KEYS},
            "pruning": {
                k: pruning.get(k)
                for k in (
                    "groups",
                    "prunable_channels",
                    "removed_channels",
                    "seconds",
                    "score_seconds",
                    "macs_ratio",
                    "removed_share",
                    "val_top1_after_prune",
                    "target_attempts",
                    "target_miss",
                    "latency",
                )
                if k in pruning
            },
            "onnx": {
                "path": str(run.outdir / "model.onnx"),
                "opset": onnx_c["opset"],
                "exporter": onnx_c["exporter"],
                "size_bytes": onnx_c["size_bytes"],
                "max_abs_diff": max(p["max_abs_diff"] for p in onnx_c["parity"]),
                "rel_diff": max(p["rel_diff"] for p in onnx_c["parity"]),
                "top1_agreement": real_parity["top1_agreement"],
                "parity": onnx_c["parity"],
                "notes": onnx_c["notes"],
            },
            "latency": latency,
            "layers": layers,
            "history": {"regularize": reg_hist, "finetune": ft_hist},
            "epochs": {"regularize": len(reg_hist), "finetune": len(ft_hist)},
            "stages": {k: run.stages.get(k, 0.0) for k in STAGES if k in run.stages},
        },
    )
    _plot_channels(layers, work / "channels.png")
    _plot_training(reg_hist, ft_hist, report["strength"], work / "training.png")
    write_json(work / "report.json", report)
    atomic_write_bytes(work / "report.md", _markdown(report).encode())
    report["stages"]["report"] = time.perf_counter() - t0
    write_json(work / "report.json", report)
    return report


def _finish(run: _Run) -> None:
    """Only a complete run becomes OUTDIR; the intermediate checkpoints go."""
    work, outdir = run.work, run.outdir
    remove_temporaries(work)  # no final folder ever holds a temporary file
    for leftover in (
        "stages.json",
        "regularize.resume",
        "finetune.resume",
        "baseline.pt",
        "regularized.pt",
        "pruned.pt",
        "method_state.pt",
    ):
        (work / leftover).unlink(missing_ok=True)
    if outdir.exists():
        old = outdir.with_name(outdir.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        outdir.rename(old)
        work.rename(outdir)
        shutil.rmtree(old)
    else:
        work.rename(outdir)


_STAGE_FUNCTIONS: dict[str, Callable[[_Run], Any]] = {
    "baseline": _baseline,
    "regularize": _regularize,
    "prune": _prune,
    "finetune": _finetune,
    "evaluate": _evaluate,
    "export": _export,
    "latency": _latency,
    "report": _report,
}
assert tuple(_STAGE_FUNCTIONS) == STAGES
