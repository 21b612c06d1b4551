"""Prune every torchvision classifier at ratio 0.3 and record what works.

For each architecture (each in its own process, with a time limit): build it untrained,
trace its channel groups at a small input, remove 30% of the prunable channels, run a
forward pass, count MACs before and after, export the pruned model to ONNX (opset 17) and
compare onnxruntime's output with PyTorch's (max abs difference relative to the output scale).

    python benchmarks/prune_coverage.py                 # the whole zoo (hours on 2 cores)
    python benchmarks/prune_coverage.py resnet18 swin_t  # selected models

Writes benchmarks/results/prune_coverage.{json,md}, with the command and the machine.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
RATIO = 0.3
PREVIOUS_COMMAND = ""  # with --update: the run whose results are merged into


def one(arch: str) -> dict:
    """Runs in a child process: prune ``arch`` and report."""
    import tempfile

    import numpy as np
    import onnxruntime as ort
    import torch

    from compressor.analysis import count_macs
    from compressor.archs import arch_info, build_model
    from compressor.pruning import apply_plan, channel_groups, group_scores, plan_ratio

    torch.manual_seed(0)
    info = arch_info(arch)
    size = max(64, info.min_input_size)
    row: dict = {"model": arch, "input": size}
    model = build_model(arch, num_classes=10).eval()
    x = torch.randn(1, 3, size, size)
    row["macs_before"] = count_macs(model, (3, size, size))
    t0 = time.perf_counter()
    index = channel_groups(model, x)
    plan = plan_ratio(group_scores(index, model), RATIO)
    apply_plan(index, plan)
    row["seconds"] = round(time.perf_counter() - t0, 2)
    row["groups"] = len(index)
    row["skipped_groups"] = len(index.skipped)
    with torch.no_grad():
        y = model(x)
    if tuple(y.shape) != (1, 10):
        raise RuntimeError(f"output shape {tuple(y.shape)} after pruning")
    row["macs_after"] = count_macs(model, (3, size, size))
    tmp = tempfile.TemporaryDirectory()
    path = os.path.join(tmp.name, "model.onnx")
    try:
        torch.onnx.export(model, (x,), path, opset_version=17, dynamo=False, input_names=["input"])
        row["exporter"] = "torchscript"
    except Exception:  # e.g. adaptive pooling with non-divisible sizes: try the dynamo exporter
        program = torch.onnx.export(
            model, (x,), dynamo=True, opset_version=18, input_names=["input"]
        )
        program.save(path, external_data=True)  # models over 2 GB need external weights
        row["exporter"] = "dynamo"
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    out = sess.run(None, {"input": x.numpy()})[0]
    diff = float(np.abs(out - y.numpy()).max() / max(float(np.abs(y.numpy()).max()), 1e-6))
    row["onnx_rel_diff"] = diff
    row["status"] = "ok" if diff < 1e-4 and row["macs_after"] < row["macs_before"] else "mismatch"
    return row


def main(argv: list[str]) -> None:
    if argv[:1] == ["--one"]:
        print(json.dumps(one(argv[1])))
        return
    import torchvision

    zoo = sorted(torchvision.models.list_models(module=torchvision.models))
    update = argv[:1] == ["--update"]
    if update:  # re-run some models and merge them into the existing results
        argv = argv[1:]
    archs = argv or zoo
    timeout = int(os.environ.get("COVERAGE_TIMEOUT", "600"))
    RESULTS.mkdir(exist_ok=True)
    previous: dict[str, dict] = {}
    if update and (RESULTS / "prune_coverage.json").is_file():
        previous = {
            r["model"]: r for r in json.loads((RESULTS / "prune_coverage.json").read_text())["rows"]
        }
    rows = []
    for arch in archs:
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                [sys.executable, __file__, "--one", arch],
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            if proc.returncode == 0:
                row = json.loads(proc.stdout.strip().splitlines()[-1])
            else:
                errors = [
                    ln
                    for ln in proc.stderr.splitlines()
                    if re.match(r"^[\w.]+(Error|Exception)\b", ln)
                ]
                row = {
                    "model": arch,
                    "status": "error",
                    "error": errors[-1][:300] if errors else "?",
                }
        except subprocess.TimeoutExpired:
            row = {"model": arch, "status": "timeout", "error": f"over {timeout} s"}
        row["wall_seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
        if update:
            previous[arch] = row
            _write([previous[a] for a in zoo if a in previous], zoo)
        else:
            _write(rows, archs)


def _write(rows: list[dict], archs: list[str]) -> None:
    import torch

    meta = {
        "command": (PREVIOUS_COMMAND + "` then `" if PREVIOUS_COMMAND else "")
        + "python benchmarks/prune_coverage.py "
        + " ".join(sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "torch": torch.__version__,
        "ratio": RATIO,
        "requested": len(archs),
    }
    (RESULTS / "prune_coverage.json").write_text(
        json.dumps({**meta, "rows": rows}, indent=2) + "\n"
    )
    ok = sum(r["status"] == "ok" for r in rows)
    lines = [
        "# Pruning coverage of the torchvision zoo",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}; torch {meta['torch']}  ",
        f"Ratio {RATIO}: {ok} of {len(rows)} models ok (pruned, forward shape right, fewer MACs, "
        "ONNX output within 1e-4 of PyTorch relative to the output scale).",
        ""
        if len(rows) == len(archs)
        else f"Partial run: {len(rows)} of {len(archs)} requested models measured.",
        "",
        "| model | input | groups | groups kept whole | MACs before | MACs after | prune s | ONNX rel. diff | status |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if "macs_before" in r and "macs_after" in r:
            lines.append(
                f"| {r['model']} | {r['input']} | {r['groups']} | {r['skipped_groups']} | "
                f"{r['macs_before'] / 1e6:.1f}M | {r['macs_after'] / 1e6:.1f}M | {r['seconds']} | "
                f"{r.get('onnx_rel_diff', float('nan')):.1e} | {r['status']} |"
            )
        else:
            lines.append(f"| {r['model']} | | | | | | | | {r['status']}: {r.get('error', '')} |")
    (RESULTS / "prune_coverage.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
