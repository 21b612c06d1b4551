"""The tables and plot of ``quality_regimes.py``: benchmarks/results/quality_<task>.{json,md,png}."""

from __future__ import annotations

import json
import statistics
from typing import Any

from common import RESULTS, results_header
from quality_report import _diff_text as _diff
from quality_report import _pm
from regimes import Regime


def write_results(payload: dict[str, Any], regime: Regime) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"quality_{regime.name}"
    stem.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    lines = [
        *results_header(f"{regime.name}: compression at equal total epochs", payload),
        *_setup_lines(payload, regime),
        *_curve_lines(payload),
        *_start_lines(payload.get("start_check")),
        *_table_lines(payload["summary"], regime),
    ]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    if payload["rows"]:
        plot(payload["rows"], regime, stem.with_suffix(".png"))


def write_curve(payload: dict[str, Any], regime: Regime) -> None:
    """``--part reference`` on its own: the dense model's epoch curve, in
    results/quality_<task>_curve.{json,md} (the table keeps the curve it was built on)."""
    payload["curve"] = payload.pop("rows")
    stem = RESULTS / f"quality_{regime.name}_curve"
    stem.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    lines = [
        *results_header(f"{regime.name}: the dense reference's epoch curve", payload),
        f"{regime.arch} at {regime.input_size}x{regime.input_size}, `compressor train` at peak "
        f"lr {regime.dense_lr:g}, seed 0, augmentation on; each row is its own run (cosine "
        "schedule over its epochs).",
        "",
        *_curve_lines(payload),
    ]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")


def _setup_lines(payload: dict[str, Any], regime: Regime) -> list[str]:
    ref = payload["reference"]
    start = (
        "the ImageNet-pretrained MobileNetV2 backbone with a new head"
        if regime.backbone
        else "scratch"
    )
    if regime.regime == "trained":
        what = (
            f"Regime **trained**: a dense {regime.arch} trained from {start} for {ref['epochs']} "
            f"epochs (test top-1 {ref['test_top1']:.2f}%, validation {ref['val_top1']:.2f}%) is "
            "compressed with B epochs after it; every row spends exactly B epochs."
        )
        if not ref.get("converged"):
            what += (
                " **The reference is not converged**: doubling its longest run still gained 0.2 "
                "points or more of validation top-1 (curve below)."
            )
    else:
        what = (
            f"Regime **pretrained**: {regime.arch} from {start} is fine-tuned on the task for E "
            "epochs, pruned and fine-tuned k more; every row spends E + k epochs from the "
            f"pretrained start. Reference: the dense fine-tune of {ref['epochs']} epochs at seed 0 "
            f"(test top-1 {ref['test_top1']:.2f}%, validation {ref['val_top1']:.2f}%)."
        )
        if ref.get("converged") is False:
            what += (
                f" **Not converged by the 0.2-point rule**: the dense fine-tune of "
                f"{2 * ref['epochs']} epochs gained 0.2 points or more of validation top-1 over "
                "it (curve below)."
            )
    return [
        f"Task `{regime.name}`: {regime.arch} at {regime.input_size}x{regime.input_size} on a "
        f"class-balanced Fashion-MNIST subset ({payload['data']}); augmentation (random shifts "
        "and flips) on in every run.",
        "",
        what,
        "",
    ]


def _curve_lines(payload: dict[str, Any]) -> list[str]:
    curve = payload.get("curve") or []
    if not curve:
        return []
    lines = [
        "## The dense reference's convergence (seed 0, `compressor train`)",
        "",
        "| epochs | validation top-1 | test top-1 | validation after each epoch |",
        "| --- | --- | --- | --- |",
    ]
    for c in sorted(curve, key=lambda c: c["epochs"]):
        steps = " ".join(f"{v:.1f}" for v in c["val_curve"])
        lines.append(f"| {c['epochs']} | {c['val_top1']:.2f} | {c['test_top1']:.2f} | {steps} |")
    return [*lines, ""]


def _start_lines(check: list[dict[str, Any]] | None) -> list[str]:
    if not check:
        return []
    lines = [
        "## The pretrained start against training from scratch (seed 0, same epochs)",
        "",
        "| start | epochs | lr | validation top-1 | test top-1 |",
        "| --- | --- | --- | --- | --- |",
    ]
    for c in check:
        lr = "0.05 (train's default)" if c["start"] == "scratch" else "0.01"
        lines.append(
            f"| {c['start']} | {c['epochs']} | {lr} | {c['val_top1']:.2f} | {c['test_top1']:.2f} |"
        )
    return [*lines, ""]


def _opt(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _table_lines(summary: list[dict[str, Any]], regime: Regime) -> list[str]:
    budget = "B" if regime.regime == "trained" else "E + k"
    lines = [
        "## Rows",
        "",
        f"**budget** = the epochs every row of the block spends ({budget}); **split** = epochs "
        "before + after pruning (the control: extra dense epochs, nothing removed). **test** = "
        "top-1 (%) on the 10,000 test images, scored once at the end, never steered on; "
        "**val** = the validation split; **val after cut** = validation top-1 right after "
        "pruning, before any fine-tuning; **share** = the part of the method's own score mass "
        "that the removed channels held. Mean ± sd over seeds; differences are paired by seed "
        "(test top-1, mean [95% t-interval] (seeds ahead / seeds)): an interval that holds 0 "
        "is not a result. **off budget**: seeds whose stages ran other epochs than the split.",
        "",
        "| budget | target | tool | row | seeds | MACs cut | test | val | val after cut | share "
        "| vs control | vs best none | vs best TP | off budget |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in summary:
        share = _opt(None if s["share_mean"] is None else 100 * s["share_mean"], ".1f")
        lines.append(
            f"| {s['budget_epochs']} | {s['target']}x | {s['tool']} | {s['label']} | {s['seeds']} "
            f"| {s['macs_ratio_mean']:.1f}x | **{_pm(s['test_mean'], s['test_sd'])}** | "
            f"{_opt(s['val_mean'], '.2f')} | {_opt(s['val_after_prune_mean'], '.2f')} | {share} | "
            f"{_diff(s['vs_control'])} | {_diff(s['vs_none'])} | {_diff(s['vs_best_tp'])} | "
            f"{s['not_as_budgeted'] or '-'} |"
        )
    return lines


def plot(rows: list[dict[str, Any]], regime: Regime, path: Any) -> None:
    """Test top-1 against the MACs cut, one panel per budget: each row's seeds as dots,
    its mean as a larger marker, the control as a horizontal line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = sorted({r["budget_epochs"] for r in rows})
    fig, axes = plt.subplots(1, len(budgets), figsize=(6.5 * len(budgets), 5), squeeze=False)
    colors = {"compressor": "#2a6fb0", "torch-pruning": "#c0392b"}
    for ax, budget in zip(axes[0], budgets, strict=True):
        rs = [r for r in rows if r["budget_epochs"] == budget]
        control = [r["test_accuracy"] for r in rs if r["tool"] == "control"]
        if control:
            ax.axhline(
                statistics.mean(control), color="grey", linestyle=":", label="dense + budget"
            )
        labels = sorted({(r["tool"], r["label"]) for r in rs if r["tool"] != "control"})
        markers = "osD^v<>px*"
        for i, (tool, label) in enumerate(labels):
            pts = [r for r in rs if (r["tool"], r["label"]) == (tool, label)]
            xs = [r["macs_ratio"] for r in pts]
            ys = [r["test_accuracy"] for r in pts]
            m = markers[i % len(markers)]
            ax.scatter(xs, ys, color=colors[tool], marker=m, alpha=0.35, s=18)
            for target in sorted({r["target_macs_ratio"] for r in pts}):
                sel = [r for r in pts if r["target_macs_ratio"] == target]
                ax.scatter(
                    statistics.mean(r["macs_ratio"] for r in sel),
                    statistics.mean(r["test_accuracy"] for r in sel),
                    color=colors[tool],
                    marker=m,
                    s=70,
                    label=f"{'TP ' if tool == 'torch-pruning' else ''}{label}"
                    if target == min(r["target_macs_ratio"] for r in pts)
                    else None,
                )
        ax.set_xscale("log")
        ticks = sorted({r["target_macs_ratio"] for r in rs})
        ax.set_xticks(ticks, [f"{t}x" for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("MACs cut (x fewer, log scale)")
        ax.set_ylabel("test top-1 (%): small dots seeds, large the mean")
        ax.set_title(f"{regime.name}: budget {budget} epochs")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
