"""Which ``--round-to`` runs fastest in onnxruntime on this CPU?

Prunes the same untrained model at the same global ratio with kept channel counts rounded
to multiples of 1, 2, 4, 8, 16 and 32, exports each to ONNX and times them side by side
(interleaved rounds, so that machine noise hits every variant alike) at batch 1, with 1 and
with all cores. Larger multiples keep a few more channels (more MACs); the question is
whether aligned counts buy back more time than the extra MACs cost.

    python benchmarks/round_to.py [--arch resnet18 --size 224 --ratio 0.5 --rounds 40]

Writes benchmarks/results/round_to.{json,md,png} (round_to_ARCH.* for another --arch) with
the command and the machine.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from common import commit_text, provenance

RESULTS = Path(__file__).parent / "results"
MULTIPLES = (1, 2, 4, 8, 16, 32)


def build_variants(arch: str, size: int, ratio: float) -> list[dict]:
    import torch

    from compressor.analysis import count_macs
    from compressor.archs import build_model
    from compressor.pruning import apply_plan, channel_groups, group_scores, plan_ratio

    variants = []
    for n in MULTIPLES:
        torch.manual_seed(0)
        model = build_model(arch, num_classes=1000).eval()
        x = torch.randn(1, 3, size, size)
        index = channel_groups(model, x)
        apply_plan(index, plan_ratio(group_scores(index, model), ratio, round_to=n))
        buf = io.BytesIO()
        torch.onnx.export(model, (x,), buf, opset_version=17, dynamo=False, input_names=["input"])
        variants.append(
            {"round_to": n, "macs": count_macs(model, (3, size, size)), "onnx": buf.getvalue()}
        )
    return variants


def time_variants(variants: list[dict], size: int, threads: int, rounds: int, runs: int) -> None:
    import numpy as np
    import onnxruntime as ort

    x = np.random.default_rng(0).standard_normal((1, 3, size, size), dtype=np.float32)
    sessions = []
    for v in variants:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        sess = ort.InferenceSession(v["onnx"], opts, providers=["CPUExecutionProvider"])
        for _ in range(5):
            sess.run(None, {"input": x})
        sessions.append(sess)
        v.setdefault("ms", {})[threads] = []
    for _ in range(rounds):
        for v, sess in zip(variants, sessions, strict=True):
            t0 = time.perf_counter()
            for _ in range(runs):
                sess.run(None, {"input": x})
            v["ms"][threads].append((time.perf_counter() - t0) / runs * 1e3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()

    variants = build_variants(args.arch, args.size, args.ratio)
    thread_counts = sorted({1, os.cpu_count() or 1})
    for t in thread_counts:
        time_variants(variants, args.size, t, args.rounds, args.runs)

    base = variants[0]
    rows = []
    for v in variants:
        row = {"round_to": v["round_to"], "macs": v["macs"], "macs_vs_1": v["macs"] / base["macs"]}
        for t in thread_counts:
            med = statistics.median(v["ms"][t])
            row[f"p50_ms_{t}t"] = med
            row[f"speed_vs_1_{t}t"] = statistics.median(base["ms"][t]) / med
            row[f"cv_{t}t"] = statistics.stdev(v["ms"][t]) / statistics.mean(v["ms"][t])
        rows.append(row)
    import onnxruntime
    import torch

    meta = {
        "command": "python benchmarks/round_to.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        **provenance(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        **vars(args),
    }
    RESULTS.mkdir(exist_ok=True)
    stem = "round_to" if args.arch == "resnet18" else f"round_to_{args.arch}"
    (RESULTS / f"{stem}.json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    head = "| round_to | MACs | MACs vs 1 | " + " | ".join(
        f"p50 ms {t} thr | speed vs 1 ({t} thr) | CV ({t} thr)" for t in thread_counts
    )
    lines = [
        "# Channel rounding and onnxruntime CPU latency",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}; torch {meta['torch']}, onnxruntime {meta['onnxruntime']}  ",
        f"Commit: {commit_text(meta)}  ",
        f"{args.arch} at {args.size}x{args.size}, {args.ratio:.0%} of prunable channels removed, batch 1; "
        f"{args.rounds} interleaved rounds of {args.runs} runs per variant.",
        "",
        head + " |",
        "|" + " --- |" * (3 + 3 * len(thread_counts)),
    ]
    for r in rows:
        cells = [str(r["round_to"]), f"{r['macs'] / 1e6:.0f}M", f"{r['macs_vs_1']:.3f}"]
        for t in thread_counts:
            cells += [
                f"{r[f'p50_ms_{t}t']:.2f}",
                f"{r[f'speed_vs_1_{t}t']:.3f}",
                f"{r[f'cv_{t}t']:.1%}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for t in thread_counts:
        ax.plot(
            [r["round_to"] for r in rows],
            [r[f"p50_ms_{t}t"] for r in rows],
            marker="o",
            label=f"{t} thread(s)",
        )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("--round-to")
    ax.set_ylabel("p50 latency (ms)")
    ax.set_title(f"{args.arch} {args.size}px, {args.ratio:.0%} channels removed")
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / f"{stem}.png", dpi=120)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
