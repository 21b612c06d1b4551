"""The largest torchvision classifiers through the CLI: peak memory of each command, and
an ONNX file over 2 GB (external data) exported, verified and benchmarked.

    python benchmarks/large_models.py                       # regnet_y_128gf (about 10 min)
    python benchmarks/large_models.py regnet_y_128gf vit_h_14

For each model: its untrained ``state_dict()`` is saved with ``torch.save`` (as a user
would), then

    compressor export model.pt --arch M --input-size S -o dense.onnx   # > 2 GB: + .data
    compressor benchmark dense.onnx --threads 2 --min-runs 3 --max-seconds 10
    compressor prune model.pt --arch M --ratio 0.3 --input-size S -o pruned.pt
    compressor export pruned.pt --input-size S -o pruned.onnx

each in its own process; its peak resident memory comes from ``wait4`` (the process's
maximum RSS). ``export`` checks onnxruntime against PyTorch and fails otherwise.
Writes benchmarks/results/large_models.{json,md}.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine, provenance, results_header, save_results

SIZES = {"regnet_y_128gf": 64, "vit_h_14": 224}


def _run(args: list[str]) -> tuple[dict, float, float]:
    """``compressor ARGS --json -q``: its JSON, peak RSS in MB, wall seconds."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(["compressor", *args, "--json", "-q"], stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"failed: compressor {shlex.join(args)}\n{err.read()[-2000:]}")
        return json.loads(out.read()), usage.ru_maxrss / 1024, wall


def one(arch: str, tmp: Path) -> list[dict]:
    import torch

    from compressor.archs import build_model
    from compressor.pruning import classifier_layers

    torch.manual_seed(0)
    size = str(SIZES.get(arch, 224))
    model = build_model(arch, num_classes=10)
    for layer in classifier_layers(model):  # torchvision zero-initialises some heads
        torch.nn.init.normal_(layer.weight, std=0.05)
    src = tmp / "model.pt"
    torch.save(model.state_dict(), src)
    params = sum(p.numel() for p in model.parameters())
    del model
    rows = []

    def step(name: str, args: list[str], **extra: object) -> dict:
        result, peak, wall = _run(args)
        row = {"model": arch, "step": name, "peak_mb": peak, "seconds": wall, **extra}
        rows.append(row)
        print(json.dumps(row), flush=True)
        return result

    dense = tmp / "dense.onnx"
    e = step(
        "export dense",
        ["export", str(src), "--arch", arch, "--input-size", size, "-o", str(dense)],
        params=params,
    )
    data = dense.with_name(dense.name + ".data")
    rows[-1].update(
        onnx_bytes=e["size_bytes"],
        external_data=data.is_file(),
        rel_diff=max(c["rel_diff"] for c in e["parity"]),
    )
    b = step(
        "benchmark dense",
        ["benchmark", str(dense), "--threads", "2", "--min-runs", "3", "--max-seconds", "10"],
    )
    rows[-1]["p50_ms"] = b["results"][0]["p50_ms"]
    pruned = tmp / "pruned.pt"
    p = step(
        "prune 0.3",
        [
            "prune",
            str(src),
            "--arch",
            arch,
            "--ratio",
            "0.3",
            "--input-size",
            size,
            "-o",
            str(pruned),
        ],
    )
    rows[-1]["macs_cut"] = p["macs_before"] / p["macs_after"]
    e = step(
        "export pruned", ["export", str(pruned), "--input-size", size, "-o", str(tmp / "p.onnx")]
    )
    rows[-1].update(onnx_bytes=e["size_bytes"], rel_diff=max(c["rel_diff"] for c in e["parity"]))
    return rows


def main() -> None:
    archs = sys.argv[1:] or ["regnet_y_128gf"]
    t0 = time.perf_counter()
    rows: list[dict] = []
    for arch in archs:
        with tempfile.TemporaryDirectory(dir=os.environ.get("LARGE_TMP")) as tmp:
            rows += one(arch, Path(tmp))
    payload = {
        "command": shlex.join(["python", "benchmarks/large_models.py", *sys.argv[1:]]),
        "machine": machine(),
        **provenance(),
        "memory_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "seconds": time.perf_counter() - t0,
        "rows": rows,
    }
    lines = [
        *results_header(
            "The largest classifiers: peak memory per command, ONNX over 2 GB",
            payload,
            f", {payload['memory_gib']:.0f} GiB",
        ),
        "Peak memory: each command's own process, maximum resident set (`wait4`); for `benchmark`, the `compressor` process (which loads the ONNX file to count parameters and MACs), not the runner process it starts.",
        "",
        "| model | step | peak memory | seconds | details |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        details = []
        if "params" in r:
            details.append(f"{r['params'] / 1e6:.0f}M parameters")
        if "onnx_bytes" in r:
            details.append(f"ONNX {r['onnx_bytes'] / 1e9:.2f} GB")
        if r.get("external_data"):
            details.append("weights in external data (.data)")
        if "rel_diff" in r:
            details.append(f"onnxruntime vs PyTorch {r['rel_diff']:.1e}")
        if "p50_ms" in r:
            details.append(f"p50 {r['p50_ms']:.0f} ms (batch 1, 2 threads)")
        if "macs_cut" in r:
            details.append(f"{r['macs_cut']:.2f}x fewer MACs")
        lines.append(
            f"| {r['model']} | {r['step']} | {r['peak_mb'] / 1024:.1f} GiB | "
            f"{r['seconds']:.0f} | {'; '.join(details)} |"
        )
    save_results("large_models", payload, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
