"""The markdown and the plot of ``quality.py``'s results: the summary table, the rows
kept from an earlier file, the speed step and the LeNet-5 sweep (``write``); test top-1 by
seed (``plot``)."""

from __future__ import annotations

import json
import statistics
from typing import Any

from common import RESULTS, results_header
from quality_tasks import Task


def _diff_text(d: dict[str, Any] | None) -> str:
    if d is None:
        return "-"
    ci = f" [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]" if d["ci95"] else ""
    return f"{d['mean']:+.2f}{ci} ({d['ahead']}/{d['seeds']})"


def _pm(mean: float, sd: float | None) -> str:
    return f"{mean:.2f}" + (f" ± {sd:.2f}" if sd is not None else "")


def write(payload: dict[str, Any], task: Task) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{task.results}.json").write_text(json.dumps(payload, indent=2) + "\n")
    s0 = payload["summary"][0] if payload["summary"] else None
    lines = [
        *results_header(
            f"{task.name}: methods against Torch-Pruning at a fixed MAC budget", payload
        ),
        f"Task `{task.name}`: {task.arch} at {task.input_size}x{task.input_size} on "
        f"`{payload['data']}` ({payload['data_summary']}). Dense model: `compressor train` "
        f"for {task.dense_epochs} epochs"
        + (
            " from the ImageNet-pretrained MobileNetV2 backbone"
            if task.backbone
            else " from scratch"
        )
        + (
            f": test top-1 {s0['dense_test']:.2f}%, validation {s0['dense_val']:.2f}%."
            if s0
            else "."
        ),
        f"Every run gets {task.total_epochs} epochs after the dense model "
        f"(`--reg-epochs {task.reg_epochs} --ft-epochs {task.ft_epochs}` asked; the split "
        "column gives what ran: compressor's early prune hands regularize epochs to "
        "fine-tuning).",
        "",
        "**test** = top-1 (%) on the test split, scored once at the end of each run, never "
        "steered on: the figure to compare. **val** = the validation split held out from the "
        "training images, which steers `--lambda auto` and early prune. Mean ± sd over the "
        "seeds. Differences are paired by seed, test top-1, mean [95% t-interval] (seeds "
        "ahead / seeds); an interval that holds 0 is not a result. **arch ≠ none**: seeds "
        "whose per-layer widths differ from `none`'s, of the seeds that have a `none` row.",
        "",
        "| target | tool | method | seeds | split | MACs cut | test | val | vs `none` | vs best TP | arch ≠ none | share |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in payload["summary"]:
        share = f"{100 * s['share_mean']:.1f}%" if s["share_mean"] is not None else "-"
        lines.append(
            f"| {s['target']}x | {s['tool']} | {s['method']} | {s['seeds']} | "
            f"{', '.join(s['splits'])} | {s['macs_ratio_mean']:.1f}x | "
            f"**{_pm(s['test_mean'], s['test_sd'])}** | {_pm(s['val_mean'], s['val_sd'])} | "
            f"{_diff_text(s['vs_none'])} | {_diff_text(s['vs_best_tp'])} | "
            f"{s['differs_from_none']}/{s['compared_with_none']} | {share} |"
        )
    kept = payload.get("kept")
    if kept:
        ran = len(payload["rows"]) - kept["rows"]
        lines += [
            "",
            f"{kept['rows']} rows (and the speed step, when no seed-0 row is new) are kept from "
            f"the results of commit {kept['commit'][:12]} ({kept['date']}; `--keep`, the same "
            f"dense model); the other {ran} come from the runs cached under the work folder. "
            "Each JSON row with `kept_from` names its commit.",
        ]
    lines += _speed_lines(payload.get("speed"))
    lines += _lenet_lines(payload.get("lenet"))
    (RESULTS / f"{task.results}.md").write_text("\n".join(lines) + "\n")
    plot(payload["rows"], task)


def _speed_lines(speed: list[dict[str, Any]] | None) -> list[str]:
    if not speed:
        return []
    lines = [
        "",
        "## onnxruntime speed-up at 224x224 beside the MACs cut (seed 0 architectures)",
        "",
        *_thread_warning(speed),
        "One interleaved `compressor benchmark --threads 1,2` run; speed-up against the dense "
        "model at the same thread count.",
        "",
        "| model | threads | p50 (ms) | speed-up | MACs cut | same architecture as |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in speed:
        sp, cut = r.get("speedup_vs_first"), r.get("mac_cut_vs_first")
        lines.append(
            f"| {r['model']} | {r['threads']} | {r['p50_ms']:.2f} | "
            f"{f'{sp:.2f}x' if sp else '-'} | {f'{cut:.2f}x' if cut else '-'} | "
            f"{', '.join(r.get('same_as') or []) or '-'} |"
        )
    return lines


def _lenet_lines(lenet: list[dict[str, Any]] | None) -> list[str]:
    if not lenet:
        return []
    lines = [
        "",
        "## LeNet-5 (20-50 filters) strength sweep, default selection",
        "",
        "SSL (Wen et al. 2016) reports 5-19 filters at 0.8% error (baseline 0.9%), after "
        "full training on the 60,000 MNIST images; these runs fine-tune the reference "
        "LeNet-5 (`models/lenet5-mnist15k.pt`) for 3 + 3 epochs on mnist15k and remove "
        "every channel under 1% of its group's best score (`--threshold 0.01 --relative`).",
        "",
        "| method | lambda | filters kept (conv1-conv2) | test top-1 | MACs cut |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in lenet:
        lines.append(
            f"| {r['method']} | {r['lambda']} | {'-'.join(map(str, r['filters']))} | "
            f"{r['test_accuracy']:.2f} | {r['macs_ratio']:.1f}x |"
        )
    return lines


def _thread_warning(speed: list[dict[str, Any]]) -> list[str]:
    """A line when the dense model ran slower with more threads: then the extra threads
    contended (before runner version 2, a neighbouring session's spinning workers did),
    and only the 1-thread ratios are speed figures."""
    dense = {r["threads"]: r["p50_ms"] for r in speed if r["model"] == "dense"}
    slow = [t for t in dense if t > min(dense) and dense[t] > dense[min(dense)]]
    if not slow:
        return []
    t = max(slow)
    return [
        f"Warning: in this run the dense model took {dense[t]:.1f} ms at {t} threads "
        f"against {dense[min(dense)]:.1f} ms at {min(dense)}: its extra threads contended. "
        f"Read the {min(dense)}-thread rows; the others are listed as measured, not as "
        "speed figures.",
        "",
    ]


def plot(rows: list[dict[str, Any]], task: Task) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = sorted({r["target_macs_ratio"] for r in rows})
    fig, axes = plt.subplots(1, max(1, len(targets)), figsize=(6.5 * max(1, len(targets)), 5))
    axes = list(axes) if len(targets) > 1 else [axes]
    for ax, target in zip(axes, targets, strict=False):
        rs = [r for r in rows if r["target_macs_ratio"] == target]
        names = sorted({(r["tool"], r["method"]) for r in rs})
        for y, (tool, method) in enumerate(names):
            pts = [r["test_accuracy"] for r in rs if (r["tool"], r["method"]) == (tool, method)]
            color = "#2a6fb0" if tool == "compressor" else "#c0392b"
            ax.scatter(pts, [y] * len(pts), color=color, alpha=0.7)
            ax.plot([statistics.mean(pts)] * 2, [y - 0.3, y + 0.3], color=color)
        ax.set_yticks(
            range(len(names)),
            [f"{'TP ' if t != 'compressor' else ''}{m}" for t, m in names],
            fontsize=7,
        )
        ax.axvline(rs[0]["dense_test_accuracy"], color="grey", linestyle=":", label="dense")
        ax.set_xlabel("test top-1 (%): dots are seeds, bars their mean")
        ax.set_title(f"{task.name}: {target}x fewer MACs")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / f"{task.results}.png", dpi=110)
    plt.close(fig)
