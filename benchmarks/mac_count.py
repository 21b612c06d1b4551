"""How the two MAC conventions differ: fvcore's total (compress's report) against the dense
layers alone (what `compressor benchmark` counts in every ONNX graph and PyTorch model).

    python benchmarks/mac_count.py

For each model (torchvision, ``weights=None``, 224x224, one image): fvcore's total, fvcore's
count of the convolution, linear and matrix-product operators (``analysis.dense_macs``), and
the count read from the exported ONNX graph (``bench.onnx_cost``). The "a few percent
more" of docs/cli.md (``benchmark``'s MAC count) is the first column over the second. No timing: any machine gives the
same figures. Writes ``results/mac_count.{json,md}``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from common import results_header, run_payload, save_results

MODELS = ["resnet18", "mobilenet_v2", "shufflenet_v2_x1_0", "efficientnet_b0"]
SIZE = (3, 224, 224)


def count(name: str, tmp: Path) -> dict[str, object]:
    import torch
    import torchvision

    from compressor.analysis import count_macs, dense_macs
    from compressor.bench.onnx_cost import onnx_cost

    model = torchvision.models.get_model(name, weights=None).eval()
    path = tmp / f"{name}.onnx"
    torch.onnx.export(model, (torch.zeros(1, *SIZE),), str(path), dynamo=False)
    total, dense = count_macs(model, SIZE), dense_macs(model, SIZE)
    graph = onnx_cost(str(path))["macs"]
    return {
        "model": name,
        "fvcore_total": total,
        "fvcore_dense": dense,
        "onnx_graph": graph,
        "total_over_dense_pct": 100 * (total / dense - 1),
        "graph_over_dense_pct": None if graph is None else 100 * (graph / dense - 1),
    }


def main() -> None:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [count(m, Path(tmp)) for m in MODELS]
    payload = run_payload(t0, rows)
    lines = results_header("MAC conventions: fvcore's total against the dense layers", payload)
    lines += [
        "| model | fvcore total (M) | dense layers, fvcore (M) | dense layers, ONNX graph (M) "
        "| total over dense |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        graph = "-" if r["onnx_graph"] is None else f"{r['onnx_graph'] / 1e6:.1f}"
        lines.append(
            f"| {r['model']} | {r['fvcore_total'] / 1e6:.1f} | {r['fvcore_dense'] / 1e6:.1f} "
            f"| {graph} | +{r['total_over_dense_pct']:.1f}% |"
        )
    save_results("mac_count", payload, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
