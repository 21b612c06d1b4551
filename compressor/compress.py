"""``compress``: the whole job, stage by stage, resumable, never leaving a half-written OUTDIR.

Stages: baseline evaluation -> training with the method's regularizer -> channel selection
(the method's criterion) and physical removal -> fine-tuning -> evaluation -> ONNX export
and verification -> side-by-side latency -> report. Everything is written into
``OUTDIR.partial/`` first; each stage leaves a file that marks it done, so ``--resume``
skips finished stages and continues an interrupted training stage at the step it reached.
Only a complete run is renamed to ``OUTDIR``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compressor.config import DataConfig, PruneConfig, TrainConfig, to_dict, write_json
from compressor.errors import CompressorError
from compressor.export import ExportConfig

STAGES = ("baseline", "regularize", "prune", "finetune", "evaluate", "export", "latency", "report")


@dataclass(frozen=True)
class CompressConfig:
    """Everything ``compress`` needs besides the model and the output folder."""

    method: str
    method_options: dict[str, Any]
    data: DataConfig
    regularize: TrainConfig
    finetune: TrainConfig
    prune: PruneConfig
    export: ExportConfig
    latency_threads: int = 1
    # The latency comparison measures at least 1 s and until each p50 is known to 1%
    # (relative standard error), for at most this long.
    latency_seconds: float = 10.0


def partial_dir(outdir: Path) -> Path:
    return outdir.with_name(outdir.name + ".partial")


def _plot_channels(layers: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["name"] for r in layers]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.28 * len(names)), 3.6))
    xs = range(len(names))
    ax.bar(xs, [r["before"] for r in layers], color="#c0c0c0", label="before")
    ax.bar(xs, [r["after"] for r in layers], color="#2a6fb0", label="after")
    ax.set_xticks(list(xs), names, rotation=90, fontsize=7)
    ax.set_ylabel("output channels")
    ax.set_title("Channels per layer")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_training(reg: list[dict[str, Any]], ft: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    for hist, label, offset in ((reg, "regularize", 0), (ft, "fine-tune", len(reg))):
        if not hist:
            continue
        xs = [offset + h["epoch"] for h in hist]
        a.plot(xs, [h["train_loss"] for h in hist], marker="o", label=f"{label} loss")
        if label == "regularize":
            a.plot(
                xs, [h["train_penalty"] for h in hist], marker="x", linestyle="--", label="penalty"
            )
        b.plot(xs, [h["val_top1"] for h in hist], marker="o", label=label)
    a.set_xlabel("epoch")
    a.set_title("training loss")
    a.legend()
    b.set_xlabel("epoch")
    b.set_title("validation top-1 (%)")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _memory_mb(path: Path, threads: int) -> float:
    from compressor.bench.runner import RunnerError, isolated_memory

    try:
        return float(isolated_memory(str(path), threads, 1)["peak_growth_mb"])
    except RunnerError as e:
        raise CompressorError(f"memory probe of {path.name}: {e}") from None


def _interval(ci: list[float] | None) -> str:
    return f" (95%: {ci[0]:.2f}-{ci[1]:.2f})" if ci else ""


def _markdown(report: dict[str, Any]) -> str:
    from compressor.analysis import human

    b, c = report["baseline"], report["compressed"]
    lat, onnx = report["latency"], report["onnx"]
    lines = [
        f"# Compression report: {report['arch']} with `{report['method']}`",
        "",
        f"Data: {report['data']['source']} ({report['data']['train_images']} train / "
        f"{report['data']['val_images']} val images, input {'x'.join(map(str, report['data']['preprocess']['input_size']))})",
        "",
        "| | baseline | compressed | ratio |",
        "| --- | --- | --- | --- |",
        f"| top-1 (%) | {b['accuracy']:.2f} | {c['accuracy']:.2f} | {c['accuracy'] - b['accuracy']:+.2f} pt |",
        f"| parameters | {human(b['params'])} | {human(c['params'])} | {c['params'] / b['params']:.3f}x |",
        f"| MACs | {human(b['macs'])} | {human(c['macs'])} | {c['macs'] / b['macs']:.3f}x |",
        f"| latency (ms, batch 1, {lat['threads']} thread(s), onnxruntime) | {lat['baseline_ms']:.3f} | "
        f"{lat['compressed_ms']:.3f} | {lat['speedup']:.2f}x faster{_interval(lat.get('speedup_ci95'))} |",
        *(
            f"| {label} | {pair[0]:.1f} | {pair[1]:.1f} | {pair[1] / pair[0]:.3f}x |"
            for label, pair in (
                ("peak memory (MB, resident-set growth, onnxruntime)", lat.get("memory_mb")),
                ("ONNX file (MB)", lat.get("file_mb")),
            )
            if pair
        ),
        "",
        f"Method `{report['method']}` with {json.dumps(report['hyperparameters'])}; selection "
        f"{json.dumps(report['selection'])}: {report['pruning']['removed_channels']} of "
        f"{report['pruning']['prunable_channels']} prunable channels removed.",
        "",
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


def compress(
    model_path: Path,
    outdir: Path,
    config: CompressConfig,
    *,
    arch: str | None = None,
    trust_pickle: bool = False,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = lambda _m: None,
    stop_after_steps: int | None = None,
) -> dict[str, Any]:
    """Run the whole job and return the report (also written as ``report.json``).

    Raises ``CompressorError`` for bad inputs, an existing OUTDIR without ``force``, or a
    resumption whose settings differ; ``TrainingInterrupted`` after an interrupt (the
    partial folder is kept for ``resume``).
    """
    import torch

    from compressor.analysis import count_macs, count_params, layer_table
    from compressor.checkpoint import load_model, save_model
    from compressor.data import default_workers
    from compressor.export import export_model, model_metadata
    from compressor.methods import get_method
    from compressor.pipeline import _preprocessed, load_for_data, prune_loaded
    from compressor.train import evaluate, fit
    from compressor.utils import resolve_device, seed_everything

    if outdir.exists() and not force:
        raise CompressorError(f"{outdir} exists; pass --force to replace it")
    work = partial_dir(outdir)
    method = get_method(config.method, config.method_options)  # validates name and options
    resolved = {
        "model": str(model_path),
        "arch": arch,
        "method": config.method,
        "hyperparameters": dataclasses.asdict(method.params),
        **{k: v for k, v in to_dict(config).items() if k not in ("method", "method_options")},
    }
    if resume:
        if not (work / "config.json").is_file():
            raise CompressorError(f"nothing to resume: {work} does not exist")
        saved = json.loads((work / "config.json").read_text())
        if saved != json.loads(json.dumps(resolved)):
            diff = sorted(
                k
                for k in set(saved) | set(resolved)
                if saved.get(k) != json.loads(json.dumps(resolved)).get(k)
            )
            raise CompressorError(
                f"cannot resume {work} with different settings ({', '.join(diff)})"
            )
    else:
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        write_json(work / "config.json", resolved)

    stages: dict[str, float] = (
        json.loads((work / "stages.json").read_text()) if (work / "stages.json").is_file() else {}
    )

    def stage(name: str, i: int) -> float:
        log(f"[{i}/{len(STAGES)}] {name}")
        return time.perf_counter()

    def done(name: str, t0: float) -> None:
        stages[name] = stages.get(name, 0.0) + time.perf_counter() - t0
        write_json(work / "stages.json", stages)

    device = resolve_device(config.regularize.device)
    loaded, bundle = load_for_data(model_path, config.data, arch=arch, trust_pickle=trust_pickle)
    loaded.preprocess = bundle.preprocess
    if loaded.class_names is None:
        loaded.class_names = bundle.class_names
    size = bundle.preprocess.input_size
    workers = default_workers(bundle) if config.data.workers is None else config.data.workers

    def accuracy(model: Any) -> dict[str, Any]:
        return evaluate(
            model.to(device),
            bundle.val,
            bundle.preprocess,
            device=device,
            batch_size=config.data.eval_batch_size,
            workers=workers,
            progress=progress,
        )

    # 1. baseline
    if not (work / "baseline.json").is_file():
        t0 = stage("baseline: evaluate, count parameters and MACs", 1)
        base_layers = layer_table(loaded.model, size)
        baseline = {
            **{k: v for k, v in accuracy(loaded.model).items() if k != "images"},
            "params": count_params(loaded.model),
            "macs": count_macs(loaded.model, size),
            "layers": [{"name": r.name, "out_channels": r.out_channels} for r in base_layers],
        }
        baseline["accuracy"] = baseline.pop("top1")
        loaded.model.cpu()
        save_model(loaded, work / "baseline.pt")
        write_json(work / "baseline.json", baseline)
        done("baseline", t0)
    baseline = json.loads((work / "baseline.json").read_text())
    log(
        f"  baseline top-1 {baseline['accuracy']:.2f}%, {baseline['params']} params, {baseline['macs']} MACs"
    )

    # 2. regularize
    if not (work / "regularized.pt").is_file():
        t0 = stage(f"regularize: {config.regularize.epochs} epochs with {config.method}", 2)
        seed_everything(config.regularize.seed)
        current = load_model(work / "baseline.pt")
        reg_method = get_method(config.method, config.method_options)
        try:
            result = fit(
                current.model,
                bundle,
                config.regularize,
                config.data,
                regularizer=reg_method,
                state_path=work / "regularize.resume",
                resume=(work / "regularize.resume").is_file(),
                progress=progress,
                log=log,
                stop_after_steps=stop_after_steps,
            )
        finally:
            done("regularize", t0)
        current.model.cpu()
        current.metadata["method"] = {
            "name": config.method,
            "params": dataclasses.asdict(reg_method.params),
        }
        write_json(work / "regularize.json", result.to_dict())
        if reg_method.state_dict():
            torch.save(reg_method.state_dict(), work / "method_state.pt")
        save_model(current, work / "regularized.pt")
        (work / "regularize.resume").unlink(missing_ok=True)

    # 3. select and remove channels
    if not (work / "pruned.pt").is_file():
        t0 = stage("prune: score channels and remove them", 3)
        current = load_model(work / "regularized.pt")
        current.preprocess = bundle.preprocess
        sel_method = get_method(config.method, config.method_options)
        example = torch.zeros(1, *size)
        from compressor.pruning import channel_groups

        current.model.eval()
        index = channel_groups(current.model, example)
        if (work / "method_state.pt").is_file():
            sel_method.setup(
                current.model, example_input=example, groups=index, train_size=len(bundle.train)
            )
            sel_method.load_state_dict(torch.load(work / "method_state.pt", weights_only=True))
        samples = int(getattr(sel_method.params, "samples", 64))
        calibration = _preprocessed(bundle, "train", samples, seed=config.regularize.seed)
        scores = sel_method.scores(current.model, index, calibration=calibration)
        info = prune_loaded(
            current,
            config.prune,
            input_size=size,
            scores=scores,
            comparable=sel_method.comparable_scores,
        )
        current.metadata["pruning"] = {
            "config": to_dict(config.prune),
            **{k: v for k, v in info.items() if k != "layers"},
        }
        write_json(work / "prune.json", info)
        save_model(current, work / "pruned.pt")
        done("prune", t0)
    pruning = json.loads((work / "prune.json").read_text())
    log(
        f"  removed {pruning['removed_channels']} of {pruning['prunable_channels']} channels; "
        f"MACs {pruning['macs_after'] / pruning['macs_before']:.3f}x"
    )

    # 4. fine-tune
    if not (work / "model.pt").is_file():
        t0 = stage(f"fine-tune: {config.finetune.epochs} epochs", 4)
        seed_everything(config.finetune.seed)
        current = load_model(work / "pruned.pt")
        try:
            result = fit(
                current.model,
                bundle,
                config.finetune,
                config.data,
                state_path=work / "finetune.resume",
                resume=(work / "finetune.resume").is_file(),
                progress=progress,
                log=log,
            )
        finally:
            done("finetune", t0)
        current.model.cpu()
        write_json(work / "finetune.json", result.to_dict())
        save_model(current, work / "model.pt")
        (work / "finetune.resume").unlink(missing_ok=True)

    final = load_model(work / "model.pt")
    final.preprocess = bundle.preprocess

    # 5. evaluate
    if not (work / "compressed.json").is_file():
        t0 = stage("evaluate the compressed model", 5)
        metrics = accuracy(final.model)
        final.model.cpu()
        compressed = {
            "accuracy": metrics["top1"],
            "top5": metrics["top5"],
            "loss": metrics["loss"],
            "params": count_params(final.model),
            "macs": count_macs(final.model, size),
        }
        write_json(work / "compressed.json", compressed)
        done("evaluate", t0)
    compressed = json.loads((work / "compressed.json").read_text())

    # 6. export both models (the baseline's ONNX is the latency reference)
    if not (work / "onnx.json").is_file():
        t0 = stage("export ONNX and verify against PyTorch", 6)
        real = _preprocessed(bundle, "val", 64)[0]
        result_c = export_model(
            final.model,
            work / "model.onnx",
            input_size=size,
            metadata=model_metadata(final, {"method": config.method}),
            config=config.export,
            real_inputs=real,
            log=log,
        )
        base_model = load_model(work / "baseline.pt")
        base_model.preprocess = bundle.preprocess
        result_b = export_model(
            base_model.model,
            work / "baseline.onnx",
            input_size=size,
            metadata=model_metadata(base_model),
            config=config.export,
            log=log,
        )
        write_json(
            work / "onnx.json", {"compressed": result_c.to_dict(), "baseline": result_b.to_dict()}
        )
        done("export", t0)
    onnx_info = json.loads((work / "onnx.json").read_text())

    # 7. latency, side by side
    if not (work / "latency.json").is_file():
        t0 = stage("latency and memory: baseline vs compressed in onnxruntime", 7)
        from compressor.bench.runner import measure

        onnx_files = [work / "baseline.onnx", work / "model.onnx"]
        lat = measure(
            [str(f) for f in onnx_files],
            threads=config.latency_threads,
            batch=1,
            warmup=5,
            min_runs=20,
            min_seconds=min(1.0, config.latency_seconds),
            max_seconds=config.latency_seconds,
            precision=0.01,
        )
        write_json(
            work / "latency.json",
            {
                "baseline_ms": lat[0]["p50_ms"],
                "compressed_ms": lat[1]["p50_ms"],
                "speedup": lat[0]["p50_ms"] / lat[1]["p50_ms"],
                "speedup_ci95": lat[1]["speedup_vs_first_ci95"],
                "threads": config.latency_threads,
                "batch": 1,
                "cv": [lat[0]["cv"], lat[1]["cv"]],
                "p50_ci95_ms": [lat[0]["p50_ci95_ms"], lat[1]["p50_ci95_ms"]],
                "runs": [lat[0]["runs"], lat[1]["runs"]],
                "seconds": [lat[0]["seconds"], lat[1]["seconds"]],
                # resident-set growth of a fresh process that loads the file and runs it once
                "memory_mb": [_memory_mb(f, config.latency_threads) for f in onnx_files],
                "file_mb": [f.stat().st_size / 2**20 for f in onnx_files],
            },
        )
        done("latency", t0)
    latency = json.loads((work / "latency.json").read_text())

    # 8. report
    t0 = stage("report", 8)
    reg_hist = json.loads((work / "regularize.json").read_text())["history"]
    ft_hist = json.loads((work / "finetune.json").read_text())["history"]
    after = {r["name"]: r["after"] for r in pruning["layers"]}
    layers = [
        {
            "name": r["name"],
            "before": r["out_channels"],
            "after": after.get(r["name"], r["out_channels"]),
        }
        for r in baseline["layers"]
    ]
    onnx_c = onnx_info["compressed"]
    real_parity = next((p for p in onnx_c["parity"] if p["inputs"] == "real"), onnx_c["parity"][0])
    from compressor.data import describe

    report = {
        "model": str(model_path),
        "arch": final.arch,
        "method": config.method,
        "hyperparameters": dataclasses.asdict(method.params),
        "selection": to_dict(config.prune),
        "data": describe(bundle),
        "baseline": {k: baseline[k] for k in ("accuracy", "top5", "params", "macs")},
        "compressed": {k: compressed[k] for k in ("accuracy", "top5", "params", "macs")},
        "pruning": {
            k: pruning[k] for k in ("groups", "prunable_channels", "removed_channels", "seconds")
        },
        "onnx": {
            "path": str(outdir / "model.onnx"),
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
        "stages": {k: stages.get(k, 0.0) for k in STAGES if k in stages},
    }
    _plot_channels(layers, work / "channels.png")
    _plot_training(reg_hist, ft_hist, work / "training.png")
    write_json(work / "report.json", report)
    (work / "report.md").write_text(_markdown(report))
    report["stages"]["report"] = time.perf_counter() - t0
    write_json(work / "report.json", report)

    # only a complete run becomes OUTDIR; the intermediate checkpoints go
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
    return report
