"""report.json, assembled from the files the stages wrote, and report.md, its markdown."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from compressor.config import to_dict
from compressor.formats import (
    ExportResultFields,
    LayerChange,
    Report,
    ReportOnnx,
    ReportPruning,
    Scores,
)
from compressor.pipeline.records import BaselineRecord, HeldOut, PruneRecord
from compressor.pipeline.state import Run
from compressor.schema import stamp


def _scores(record: HeldOut) -> Scores:
    """What report.json keeps of a model's figures (not the losses)."""
    return {
        "val_top1": record["val_top1"],
        "val_top5": record["val_top5"],
        "val_images": record["val_images"],
        "test_top1": record["test_top1"],
        "test_top5": record["test_top5"],
        "test_images": record["test_images"],
        "params": record["params"],
        "macs": record["macs"],
    }


def _pruning(record: PruneRecord) -> ReportPruning:
    """What report.json keeps of the cut."""
    kept: ReportPruning = {
        "groups": record["groups"],
        "prunable_channels": record["prunable_channels"],
        "removed_channels": record["removed_channels"],
        "seconds": record["seconds"],
        "score_seconds": record["score_seconds"],
        "macs_ratio": record["macs_ratio"],
        "removed_share": record["removed_share"],
        "val_top1_after_prune": record["val_top1_after_prune"],
        "target_attempts": record["target_attempts"],
        "target_miss": record["target_miss"],
    }
    if "latency" in record:
        kept["latency"] = record["latency"]
    return kept


def build_report(run: Run) -> Report:
    """report.json's content (without the report stage's own time) from the records the
    stages wrote."""
    from compressor.data import describe
    from compressor.reference import start_summary

    config, work = run.config, run.work
    baseline, pruning = run.read("baseline.json"), run.read("prune.json")
    regularize = run.read("regularize.json")
    reg_hist, ft_hist = regularize["history"], run.read("finetune.json")["history"]
    final = run.final()
    report: Report = stamp(
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
            "baseline": _scores(baseline),
            "compressed": _scores(run.read("compressed.json")),
            "pruning": _pruning(pruning),
            "onnx": _onnx_summary(run.read("onnx.json")["compressed"], run.outdir),
            "latency": run.read("latency.json"),
            "layers": _layers(baseline, pruning),
            "history": {"regularize": reg_hist, "finetune": ft_hist},
            "epochs": {"regularize": len(reg_hist), "finetune": len(ft_hist)},
            "stages": {k: run.stages.get(k, 0.0) for k in run.order if k in run.stages},
        },
    )
    return report


def _layers(baseline: BaselineRecord, pruning: PruneRecord) -> list[LayerChange]:
    """Each layer's output channels before and after pruning."""
    after = {r["name"]: r["after"] for r in pruning["layers"]}
    return [
        {
            "name": r["name"],
            "type": r.get("type"),
            "before": r["out_channels"],
            "after": after.get(r["name"], r["out_channels"]),
        }
        for r in baseline["layers"]
    ]


def _onnx_summary(onnx_c: ExportResultFields, outdir: Path) -> ReportOnnx:
    """What report.json keeps of the compressed model's export record."""
    real_parity = next((p for p in onnx_c["parity"] if p["inputs"] == "real"), onnx_c["parity"][0])
    return {
        "path": str(outdir / "model.onnx"),
        "opset": onnx_c["opset"],
        "exporter": onnx_c["exporter"],
        "size_bytes": onnx_c["size_bytes"],
        "max_abs_diff": max(p["max_abs_diff"] for p in onnx_c["parity"]),
        "rel_diff": max(p["rel_diff"] for p in onnx_c["parity"]),
        "top1_agreement": real_parity["top1_agreement"],
        "parity": onnx_c["parity"],
        "notes": onnx_c["notes"],
    }


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


def _strength_lines(strength: Mapping[str, Any] | None) -> list[str]:
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


def data_line(data: Mapping[str, Any]) -> str:
    size = "x".join(map(str, data["preprocess"]["input_size"]))
    held = " (held out from the training images)" if data.get("val_held_out_from_train") else ""
    test = f", {data['test_images']} test" if data.get("test_images") else ", no test split"
    return (
        f"{data['source']}: {data['train_images']} train / {data['val_images']} val{held}"
        f"{test} images, input {size}"
    )


def latency_target_lines(lat: Mapping[str, Any] | None) -> list[str]:
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


def device_text(lat: Mapping[str, Any]) -> str:
    """Where report.json's latency comparison ran, in words."""
    where = [f"{lat['threads']} thread(s)"]
    if lat.get("profile"):
        where.append(f"profile {lat['profile']}")
    if lat.get("remote"):
        where.append(f"on {lat['remote']}")
    return ", ".join(where)


def markdown(report: Report) -> str:
    from compressor.analysis import human
    from compressor.reference import reference_lines

    # read by split name (``val_top1``, ``test_top1``, ...)
    b: Mapping[str, Any] = report["baseline"]
    c: Mapping[str, Any] = report["compressed"]
    lat, onnx = report["latency"], report["onnx"]
    lines = [
        f"# Compression report: {report['arch']} with `{report['method']}`",
        "",
        f"Data: {data_line(report['data'])}",
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


def _after_prune_text(pruning: Mapping[str, Any]) -> str:
    """``; they held 3.1% of the method's score mass, and validation top-1 right after
    the cut (before fine-tuning) was 41.20%`` (empty for a report that lacks both)."""
    share, top1 = pruning.get("removed_share"), pruning.get("val_top1_after_prune")
    parts = []
    if share is not None:
        parts.append(f"they held {100 * share:.1f}% of the method's score mass")
    if top1 is not None:
        parts.append(f"validation top-1 right after the cut, before fine-tuning, was {top1:.2f}%")
    return "; " + " and ".join(parts) if parts else ""
