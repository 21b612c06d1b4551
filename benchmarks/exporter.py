"""Which ONNX exporter should be the default: torch.onnx's TorchScript exporter (deprecated
since PyTorch 2.9, still `compressor export`'s first choice) or the dynamo exporter?

For each model (dense and pruned) and each exporter, as `compressor export` runs them:
whether it exports, the wall time, the graph's nodes after onnxslim, the largest
difference to PyTorch on random inputs, and the onnxruntime latency (batch 1, 1 thread)
of the two files measured side by side in one interleaved run.

    python benchmarks/exporter.py [--archs resnet18,mobilenet_v2,...] [--size 224]

Writes benchmarks/results/exporter.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path
from typing import Any

from common import results_header, run_payload, save_results

ARCHS = ["resnet18", "mobilenet_v2", "shufflenet_v2_x1_0", "efficientnet_b0", "convnext_tiny"]


def _pruned(model: Any, size: int) -> Any:
    """A copy of the model with half its channels removed (compressor's default selection:
    group L2 norm, global, multiples of 8)."""
    import torch

    from compressor.pruning import apply_plan, channel_groups, group_scores, plan_ratio

    model = copy.deepcopy(model).eval()
    index = channel_groups(model, torch.zeros(1, 3, size, size))
    plan = plan_ratio(
        group_scores(index, model),
        0.5,
        round_to=index.round_to(8),
        blocks=[g.blocks for g in index],
        segments=index.segments(),
    )
    apply_plan(index, plan)
    return model


def export_one(model: Any, exporter: str, size: int, path: Path) -> dict[str, Any]:
    import numpy as np
    import onnx
    import onnxslim
    import torch

    from compressor.bench.runner import make_session
    from compressor.onnx_export import dynamo_export, torchscript_export

    example = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    fn = torchscript_export if exporter == "torchscript" else dynamo_export
    t0 = time.perf_counter()
    try:
        fn(model, example, str(path), 17)
    except Exception as e:  # a failure is a result here
        return {"ok": False, "error": str(e).splitlines()[0][:200]}
    seconds = time.perf_counter() - t0
    proto = onnx.load(str(path))
    before = len(proto.graph.node)
    slim = onnxslim.slim(proto)
    if slim is not None and len(slim.graph.node) < before:
        proto = slim
    onnx.save(proto, str(path))
    x = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x).numpy()
    sess = make_session(str(path), threads=1)
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    return {
        "ok": True,
        "seconds": seconds,
        "nodes": len(proto.graph.node),
        "nodes_before_slim": before,
        "max_abs_diff": float(np.abs(got - ref).max()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default=",".join(ARCHS))
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()
    import torch

    from compressor.archs import build_model
    from compressor.bench.runner import measure

    torch.manual_seed(0)
    t0 = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs.split(","):
            dense = build_model(arch, num_classes=10).eval()
            for variant, model in (("dense", dense), ("pruned", _pruned(dense, args.size))):
                files = {}
                for exporter in ("torchscript", "dynamo"):
                    path = Path(tmp) / f"{arch}-{variant}-{exporter}.onnx"
                    row = {"arch": arch, "variant": variant, "exporter": exporter}
                    row.update(export_one(model, exporter, args.size, path))
                    if row["ok"]:
                        files[exporter] = str(path)
                    rows.append(row)
                    print(row, flush=True)
                if len(files) == 2:  # both files side by side, interleaved
                    lat = measure(list(files.values()), threads=1, batch=1, max_seconds=10.0)
                    for r in rows[-2:]:
                        r["p50_ms"] = lat[list(files).index(r["exporter"])]["p50_ms"]
                    rows[-1]["speedup_vs_torchscript"] = lat[0]["p50_ms"] / lat[1]["p50_ms"]
    payload = run_payload(t0, rows)
    lines = [
        *results_header("torch.onnx exporters: TorchScript against dynamo", payload),
        f"Random weights, {args.size}x{args.size}, opset 17 (dynamo: 18, its minimum), "
        "onnxslim after export as `compressor export` does; latency in onnxruntime, batch 1, "
        "1 thread, the two files of each row pair measured interleaved in one run.",
        "",
        "| model | exporter | exports | seconds | nodes | max abs diff | p50 ms | dynamo vs TorchScript |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if not r["ok"]:
            lines.append(
                f"| {r['arch']} {r['variant']} | {r['exporter']} | no: {r['error']} | | | | | |"
            )
            continue
        sp = r.get("speedup_vs_torchscript")
        lines.append(
            f"| {r['arch']} {r['variant']} | {r['exporter']} | yes | {r['seconds']:.1f} | "
            f"{r['nodes']} | {r['max_abs_diff']:.1e} | {r.get('p50_ms', float('nan')):.2f} | "
            f"{f'{sp:.3f}x' if sp else ''} |"
        )
    save_results("exporter", payload, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
