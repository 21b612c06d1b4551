"""How trustworthy is `compressor benchmark` on this machine?

1. Repeatability: the runner is started ``--repeats`` times (fresh processes, default
   settings) on one model; the coefficient of variation of the reported p50 across the
   repeats is the figure to keep under 3%.
2. Overhead: in one process, blocks of the runner's ``measure()`` alternate with blocks of
   a bare ``session.run`` loop on the same session settings; the ratio of their medians is
   the runner's overhead (aim: at most 2%).

    python benchmarks/bench_quality.py [--arch mobilenet_v2 --size 224 --repeats 10]

Writes benchmarks/results/bench_quality.{json,md} with the command and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
RUNNER = Path(__file__).parent.parent / "compressor" / "bench" / "runner.py"


def export(arch: str, size: int, path: str) -> None:
    import torch

    from compressor.archs import build_model

    torch.manual_seed(0)
    model = build_model(arch, num_classes=1000).eval()
    torch.onnx.export(
        model, (torch.randn(1, 3, size, size),), path, dynamo=False, input_names=["input"]
    )


def repeatability(path: str, repeats: int) -> list[float]:
    p50s = []
    for _ in range(repeats):
        proc = subprocess.run(
            [sys.executable, str(RUNNER), path, "--no-memory"],
            capture_output=True,
            text=True,
            check=True,
        )
        p50s.append(json.loads(proc.stdout)["results"][0]["p50_ms"])
    return p50s


def overhead(path: str, blocks: int, runs: int) -> dict[str, float]:
    sys.path.insert(0, str(RUNNER.parent))
    import runner  # the file itself, as a device would run it

    session = runner.make_session(path, 1)
    name, x = runner._input_for(session, 1)
    bare, timed = [], []
    for _ in range(blocks):
        t0 = time.perf_counter()
        for _ in range(runs):
            session.run(None, {name: x})
        bare.append((time.perf_counter() - t0) / runs * 1e3)
        r = runner.measure([path], threads=1, batch=1, warmup=0, min_runs=runs, min_seconds=0.0)[0]
        timed.append(r["mean_ms"])
    b, t = statistics.median(bare), statistics.median(timed)
    return {"bare_ms": b, "runner_ms": t, "overhead": t / b - 1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="mobilenet_v2")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--blocks", type=int, default=15)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{args.arch}.onnx")
        export(args.arch, args.size, path)
        p50s = repeatability(path, args.repeats)
        ovh = overhead(path, args.blocks, args.runs)
    cv = statistics.stdev(p50s) / statistics.mean(p50s)
    import onnxruntime

    meta = {
        "command": "python benchmarks/bench_quality.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "onnxruntime": onnxruntime.__version__,
        **vars(args),
    }
    RESULTS.mkdir(exist_ok=True)
    payload = {**meta, "p50_ms": p50s, "p50_cv": cv, **ovh}
    (RESULTS / "bench_quality.json").write_text(json.dumps(payload, indent=2) + "\n")
    lines = [
        "# Benchmark measurement quality",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}; onnxruntime {meta['onnxruntime']}",
        "",
        f"{args.arch} at {args.size}x{args.size}, batch 1, 1 thread, the runner's default settings "
        "(10 warm-up runs, at least 50 runs and 5 s).",
        "",
        f"- Repeatability: p50 over {args.repeats} fresh runner processes: "
        + ", ".join(f"{v:.2f}" for v in p50s)
        + f" ms; coefficient of variation {cv:.2%} (aim: at most 3%).",
        f"- Overhead: runner {ovh['runner_ms']:.3f} ms vs bare session.run loop {ovh['bare_ms']:.3f} ms per "
        f"inference (medians of {args.blocks} alternating blocks of {args.runs} runs): "
        f"{ovh['overhead']:+.2%} (aim: at most 2%).",
    ]
    (RESULTS / "bench_quality.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
