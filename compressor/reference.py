"""What a ``compress`` run is read against.

A trained model's baseline is the model itself: its accuracy is the task accuracy that
compression may cost. A pretrained model or backbone with a new head has none: its baseline
scores an untrained head, so the cost of compression is only known against a dense model
fine-tuned on the same data for as long (``--reference FILE``). Without one the report says
what it cannot compare.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compressor.errors import CompressorError

if TYPE_CHECKING:
    from compressor.checkpoint import LoadedModel
    from compressor.data import DataBundle
    from compressor.formats import ReferenceScores, StartSummary


def load_reference(path: Path, bundle: DataBundle, *, arch: str, trust_pickle: bool) -> LoadedModel:
    """The dense reference, checked to fit the run's data: its classes, and (where its file
    records them) its input size and normalisation. A bare state_dict is read as ``arch``,
    the run's architecture."""
    from compressor.checkpoint import check_runs, load_model

    try:
        loaded = load_model(path, trust_pickle=trust_pickle)
    except CompressorError:
        loaded = load_model(path, arch=arch, trust_pickle=trust_pickle)
    classes = len(bundle.class_names)
    if loaded.num_classes != classes:
        raise CompressorError(
            f"--reference {path} has {loaded.num_classes} outputs but the data has {classes} "
            "classes: give a dense model trained on the same data"
        )
    recorded, used = loaded.preprocess, bundle.preprocess
    if recorded is not None and recorded != used:
        raise CompressorError(
            f"--reference {path} was trained on input {tuple(recorded.input_size)} with mean "
            f"{recorded.mean} and std {recorded.std}, this run reads {tuple(used.input_size)} "
            f"with {used.mean} and {used.std}: compare like with like (same --input-size)"
        )
    check_runs(loaded.model, used.input_size, loaded.arch)
    return loaded


def start_summary(start: Any, reference: ReferenceScores | None) -> StartSummary:
    """report.json's ``start``: where the weights came from, whether the head is new (then
    the baseline has no task accuracy) and the reference's figures, if one was given."""
    origin = start.to_dict() if start is not None else {}
    new_head = bool(origin.get("new_head", False))
    return {
        "weights": origin.get("weights"),
        "new_head": new_head,
        "head_replaced": list(origin.get("head_replaced", [])),
        "classes_in_weights": origin.get("classes_in_weights"),
        "backbone": bool(origin.get("backbone", False)),
        "baseline_is_task_model": not new_head,
        "reference": reference,
    }


def accuracy_change(
    before: Mapping[str, Any], after: Mapping[str, Any], points: bool = False
) -> str:
    """``test top-1 89.58% -> 88.44%; val top-1 ...`` for the splits ``before`` scored
    (with ``points``: each change in points too)."""
    parts = []
    for split in ("test", "val"):
        if before.get(f"{split}_top1") is None:
            continue
        a, b = before[f"{split}_top1"], after[f"{split}_top1"]
        parts.append(
            f"{split} top-1 {a:.2f}% -> {b:.2f}%" + (f" ({b - a:+.2f} pt)" if points else "")
        )
    return "; ".join(parts)


def reference_lines(report: Mapping[str, Any]) -> list[str]:
    """report.md's lines on what the baseline is and what the run is compared with."""
    start = report.get("start") or {}
    ref = start.get("reference")
    c = report["compressed"]
    lines = []
    if start.get("new_head"):
        where = (
            "a backbone without a classifier"
            if start.get("backbone")
            else f"weights for {start.get('classes_in_weights')} classes"
        )
        lines.append(
            f"The input holds {where} and got a new head ({', '.join(start['head_replaced'])}), so "
            "the baseline column scores an untrained head, not a task model: the regularize "
            "stage was the task fine-tuning."
        )
    if ref is not None:
        lines.append(
            f"Against the dense reference `{ref['model']}`: "
            f"{accuracy_change(ref, c, points=True)}; MACs "
            f"{ref['macs'] / max(c['macs'], 1):.2f}x fewer, parameters "
            f"{ref['params'] / max(c['params'], 1):.2f}x fewer."
        )
    elif start.get("new_head"):
        lines.append(
            "No dense reference was given (`--reference FILE`: the same model fine-tuned densely "
            "on this data for as many epochs), so the accuracy this compression costs is not "
            "measured here."
        )
    if report["epochs"]["regularize"] == 0 and not start.get("new_head"):
        lines.append(
            f"No regularize stage ran: `{report['method']}`'s scores chose the channels on the "
            f"trained model and fine-tuning had all {report['epochs']['finetune']} epochs. On a "
            "trained model that split has won at equal epochs so far (`none` 0 + 16 against "
            "8 + 8 and against Torch-Pruning's sparse learning: "
            "benchmarks/results/quality_fmnist-resnet18-trained.md in compressor's "
            "repository); `--reg-epochs N` runs the method's stage."
        )
    return [*(f"{line}  " for line in lines), ""] if lines else []
