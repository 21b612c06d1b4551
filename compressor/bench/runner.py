#!/usr/bin/env python3
"""compressor's benchmark runner: latency, throughput and memory of ONNX models.

A single file that needs only the Python standard library, numpy and onnxruntime, so it
runs on a device where just ``pip install numpy onnxruntime`` was done:

    python3 compressor_bench.py a.onnx b.onnx --threads 1,2 --batch 1,8 --json

Models are measured interleaved (round-robin), so that a noisy machine slows all of them
alike and their ratios hold. Each configuration warms up, then runs until every model has
at least ``--min-runs`` runs and ``--min-seconds`` of measured time. Peak memory is the
growth of the resident set of a fresh process that loads the model and runs it once.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any

RUNNER_VERSION = 1
# Documented presets for edge-like measurements: pin the process to N cores, use N
# intra-op threads and sequential execution.
PROFILES: dict[str, dict[str, Any]] = {
    "edge-1core": {"cores": 1, "threads": 1},
    "edge-2core": {"cores": 2, "threads": 2},
    "edge-4core": {"cores": 4, "threads": 4},
}
HIGH_CV = 0.05


class RunnerError(Exception):
    """A bad input: the message is the one line the user sees."""


def _ort() -> Any:
    try:
        import onnxruntime as ort
    except ImportError as e:  # pragma: no cover - depends on the device
        raise RunnerError("onnxruntime is not installed: pip install numpy onnxruntime") from e
    return ort


def make_session(path: str, threads: int) -> Any:
    """An onnxruntime CPU session (or CUDA when present and asked for)."""
    ort = _ort()
    if not os.path.isfile(path):
        raise RunnerError(f"model file {path!r} not found")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    providers = ["CPUExecutionProvider"]
    if (
        os.environ.get("COMPRESSOR_BENCH_CUDA") == "1"
        and "CUDAExecutionProvider" in ort.get_available_providers()
    ):
        providers.insert(0, "CUDAExecutionProvider")
    try:
        return ort.InferenceSession(path, options, providers=providers)
    except Exception as e:  # onnxruntime raises its own types for malformed files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RunnerError(f"{path} is not a valid ONNX model: {first[:200]}") from e


def _input_for(session: Any, batch: int) -> Any:
    import numpy as np

    inp = session.get_inputs()[0]
    dims = list(inp.shape)
    shape = [batch] + [d if isinstance(d, int) and d > 0 else 1 for d in dims[1:]]
    if any(not isinstance(d, int) or d <= 0 for d in dims[1:]):
        meta = session.get_modelmeta().custom_metadata_map
        if "input_shape" in meta:
            shape = [batch, *json.loads(meta["input_shape"])]
    return inp.name, np.random.default_rng(0).standard_normal(shape, dtype=np.float32)


def percentiles(values: list[float]) -> dict[str, float]:
    """p50/p90/p99/mean/cv of a list of milliseconds."""
    ordered = sorted(values)

    def pct(p: float) -> float:
        k = (len(ordered) - 1) * p
        lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)

    mean = statistics.fmean(ordered)
    cv = statistics.stdev(ordered) / mean if len(ordered) > 1 and mean > 0 else 0.0
    return {"p50_ms": pct(0.5), "p90_ms": pct(0.9), "p99_ms": pct(0.99), "mean_ms": mean, "cv": cv}


def measure(
    paths: list[str],
    *,
    threads: int,
    batch: int,
    warmup: int = 10,
    min_runs: int = 50,
    min_seconds: float = 5.0,
) -> list[dict[str, Any]]:
    """Interleaved latency of each model at one (threads, batch) setting."""
    sessions = [make_session(p, threads) for p in paths]
    feeds = []
    for s in sessions:
        name, x = _input_for(s, batch)
        feeds.append({name: x})
    for s, f in zip(sessions, feeds, strict=True):
        for _ in range(warmup):
            s.run(None, f)
    times: list[list[float]] = [[] for _ in paths]
    spent = [0.0 for _ in paths]
    while min(len(t) for t in times) < min_runs or min(spent) < min_seconds:
        for i, (s, f) in enumerate(zip(sessions, feeds, strict=True)):
            t0 = time.perf_counter()
            s.run(None, f)
            dt = time.perf_counter() - t0
            times[i].append(dt * 1e3)
            spent[i] += dt
    out = []
    for p, t in zip(paths, times, strict=True):
        stats = percentiles(t)
        out.append(
            {
                "model": p,
                "threads": threads,
                "batch": batch,
                "runs": len(t),
                **stats,
                "throughput_ips": batch * 1000.0 / stats["mean_ms"],
            }
        )
    return out


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def memory_probe(path: str, threads: int, batch: int) -> dict[str, float]:
    """In this (fresh) process: resident-set growth from loading and running the model."""
    import resource

    _ort()
    import numpy as np  # noqa: F401  (imported before the baseline is taken)

    before = _rss_kb()
    session = make_session(path, threads)
    name, x = _input_for(session, batch)
    session.run(None, {name: x})
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {
        "rss_before_mb": before / 1024,
        "peak_rss_mb": peak / 1024,
        "peak_growth_mb": (peak - before) / 1024,
    }


def isolated_memory(path: str, threads: int, batch: int) -> dict[str, float]:
    """``memory_probe`` in a new process, so that models do not share allocations."""
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--memory-probe",
        path,
        "--threads",
        str(threads),
        "--batch",
        str(batch),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RunnerError(
            proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "memory probe failed"
        )
    return json.loads(proc.stdout)


def model_info(path: str) -> dict[str, Any]:
    """File size, parameter count (from the initializers) and metadata, without onnx itself."""
    sess = make_session(path, 1)
    meta = dict(sess.get_modelmeta().custom_metadata_map)
    info: dict[str, Any] = {"model": path, "file_bytes": os.path.getsize(path), "metadata": meta}
    compression = meta.get("compression")
    if compression:
        figures = json.loads(compression)
        info["params"] = figures.get("params_after")
        info["macs"] = figures.get("macs_after")
    return info


def apply_profile(name: str | None, threads: list[int]) -> tuple[list[int], list[int] | None]:
    """Thread counts and the cores to pin to for ``name`` (None: all threads as given)."""
    if name is None:
        return threads, None
    if name not in PROFILES:
        raise RunnerError(f"unknown profile {name!r}; choose one of: {', '.join(PROFILES)}")
    spec = PROFILES[name]
    available = (
        sorted(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else list(range(os.cpu_count() or 1))
    )
    if len(available) < spec["cores"]:
        raise RunnerError(
            f"profile {name} needs {spec['cores']} cores; this machine offers {len(available)}"
        )
    cores = available[: spec["cores"]]
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores)
    return [spec["threads"]], cores


def machine() -> dict[str, Any]:
    ort = _ort()
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
    }


def run(argv: list[str]) -> dict[str, Any]:
    """Parse ``argv`` and benchmark; returns the JSON-ready result."""
    ap = argparse.ArgumentParser(prog="compressor_bench", description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*")
    ap.add_argument("--threads", default="1", help="comma-separated intra-op thread counts")
    ap.add_argument("--batch", default="1", help="comma-separated batch sizes")
    ap.add_argument(
        "--profile", choices=sorted(PROFILES), help="edge preset: pin cores, set threads"
    )
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--min-runs", type=int, default=50)
    ap.add_argument("--min-seconds", type=float, default=5.0)
    ap.add_argument("--no-memory", action="store_true", help="skip the isolated memory measurement")
    ap.add_argument("--memory-probe", metavar="MODEL", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    try:
        threads = [int(t) for t in args.threads.split(",")]
        batches = [int(b) for b in args.batch.split(",")]
    except ValueError:
        raise RunnerError("--threads and --batch take comma-separated integers") from None
    if min(threads) < 1 or min(batches) < 1:
        raise RunnerError("--threads and --batch must be at least 1")
    if args.memory_probe:
        return memory_probe(args.memory_probe, threads[0], batches[0])
    if not args.models:
        raise RunnerError("give at least one .onnx model")
    threads, cores = apply_profile(args.profile, threads)
    infos = [model_info(p) for p in args.models]
    results = []
    for t in threads:
        for b in batches:
            results.extend(
                measure(
                    args.models,
                    threads=t,
                    batch=b,
                    warmup=args.warmup,
                    min_runs=args.min_runs,
                    min_seconds=args.min_seconds,
                )
            )
    if not args.no_memory:
        for info in infos:
            info["memory"] = isolated_memory(info["model"], threads[0], batches[0])
    warnings = [
        f"{r['model']}: latency CV {r['cv']:.1%} at {r['threads']} thread(s), batch {r['batch']} "
        "(noisy machine: close other programs or use more --min-seconds)"
        for r in results
        if r["cv"] > HIGH_CV
    ]
    return {
        "runner_version": RUNNER_VERSION,
        "machine": machine(),
        "profile": args.profile,
        "cores": cores,
        "settings": {
            "threads": threads,
            "batch": batches,
            "warmup": args.warmup,
            "min_runs": args.min_runs,
            "min_seconds": args.min_seconds,
        },
        "models": infos,
        "results": results,
        "warnings": warnings,
    }


def main(argv: list[str] | None = None) -> int:
    try:
        result = run(sys.argv[1:] if argv is None else argv)
    except RunnerError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
