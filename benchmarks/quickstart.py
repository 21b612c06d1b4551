"""The README's quick start, as a new user runs it, several times: wall time, CPU time and
the figures it prints, so that the README quotes ranges that a fresh machine reproduces.

    python benchmarks/quickstart.py [--runs 3]

Each run starts from nothing (its own empty folder, so `out/` is new every time) and runs
the exact commands of the README's "Quick start" section, read from README.md: its bash
blocks, in order, joined with `&&`. Run it on a quiet machine: nothing else should be
running.

Writes benchmarks/results/quickstart.{json,md}.
"""

from __future__ import annotations

import argparse
import re
import resource
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from common import ROOT, results_header, run_payload, save_results

from compressor import read_output


def readme_command() -> str:
    """The README's quick start: its bash blocks, one command each, joined with `&&`."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Quick start\n", 1)[-1].split("\n## ", 1)[0]
    blocks = [b.strip() for b in re.findall(r"```bash\n(.+?)\n```", section, re.S)]
    if "\n## Quick start\n" not in text or not blocks:
        raise SystemExit("README.md has no bash block under 'Quick start'")
    return " && ".join(blocks)


def one_run(command: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(command, shell=True, cwd=tmp, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise SystemExit(f"the quick start failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
        report = read_output("report", Path(tmp) / "out" / "compressed" / "report.json")
        int8 = re.search(r"top-1 ([\d.]+)% -> ([\d.]+)% on (\d+) (\w+) images", proc.stdout)
        lat8 = re.search(
            r"latency ([\d.]+) -> ([\d.]+) ms", proc.stdout.split(".int8.onnx (", 1)[-1]
        )
    b, c, lat = report["baseline"], report["compressed"], report["latency"]
    return {
        "wall_s": wall,
        "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "test_top1": [b["test_top1"], c["test_top1"]],
        "val_top1": [b["val_top1"], c["val_top1"]],
        "macs_cut": b["macs"] / c["macs"],
        "speedup": lat["speedup"],
        "latency_ms": [lat["baseline_ms"], lat["compressed_ms"]],
        "epochs": report["epochs"],
        "int8_test_top1": float(int8.group(2)) if int8 else None,
        "int8_latency_ms": [float(lat8.group(1)), float(lat8.group(2))] if lat8 else None,
        "stdout_tail": proc.stdout[-1500:],
    }


def _range(values: list[float], fmt: str = "{:.2f}") -> str:
    lo, hi = min(values), max(values)
    return (
        fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else f"{fmt.format(lo)}-{fmt.format(hi)}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    command = readme_command()
    t0 = time.perf_counter()
    rows = []
    for i in range(args.runs):
        rows.append(one_run(command))
        print(f"run {i + 1}: {rows[-1]['wall_s']:.0f} s", flush=True)
    payload = run_payload(t0, rows)
    payload["quick_start"] = command
    col = {k: [r[k] for r in rows] for k in rows[0]}
    splits = {"{regularize}+{finetune}".format(**e) for e in col["epochs"]}
    lines = [
        *results_header("The README's quick start, run as a new user runs it", payload),
        f"`{command}`, {args.runs} runs, each in a new empty folder.",
        "",
        "| figure | range over the runs |",
        "| --- | --- |",
        f"| wall time (s) | {_range(col['wall_s'], '{:.0f}')} |",
        f"| CPU time (s, all processes) | {_range(col['cpu_s'], '{:.0f}')} |",
        f"| test top-1 before (%) | {_range([v[0] for v in col['test_top1']])} |",
        f"| test top-1 after (%) | {_range([v[1] for v in col['test_top1']])} |",
        f"| val top-1 before -> after (%) | {_range([v[0] for v in col['val_top1']])} -> {_range([v[1] for v in col['val_top1']])} |",
        f"| MACs cut | {_range(col['macs_cut'])}x |",
        f"| onnxruntime speed-up (batch 1, 1 thread) | {_range(col['speedup'])}x |",
        f"| epochs run (regularize + fine-tune) | {', '.join(sorted(splits))} |",
    ]
    if all(v is not None for v in col["int8_test_top1"]):
        lines.append(f"| INT8 test top-1 (%) | {_range(col['int8_test_top1'])} |")
    if all(v is not None for v in col["int8_latency_ms"]):
        lines.append(
            f"| FP32 -> INT8 latency (ms) | {_range([v[0] for v in col['int8_latency_ms']])} -> "
            f"{_range([v[1] for v in col['int8_latency_ms']])} |"
        )
    save_results("quickstart", payload, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
