"""Side-by-side latency of ONNX models in onnxruntime (standard library + numpy + onnxruntime).

Models are timed in interleaved rounds, so that a noisy machine slows them alike and their
ratio holds; each round runs each model ``runs`` times.
"""

from __future__ import annotations

import statistics
import time
from typing import Any


def session(path: str, *, threads: int = 1) -> Any:
    """A CPU inference session with ``threads`` intra-op threads and sequential execution."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def compare(
    paths: list[str],
    input_shape: tuple[int, ...],
    *,
    threads: int = 1,
    rounds: int = 20,
    runs: int = 5,
    warmup: int = 5,
) -> list[dict[str, float]]:
    """Median and spread of per-inference latency (ms) for each model, measured interleaved."""
    import numpy as np

    x = np.random.default_rng(0).standard_normal(input_shape, dtype=np.float32)
    sessions = [session(p, threads=threads) for p in paths]
    names = [s.get_inputs()[0].name for s in sessions]
    for s, n in zip(sessions, names, strict=True):
        for _ in range(warmup):
            s.run(None, {n: x})
    times: list[list[float]] = [[] for _ in paths]
    for _ in range(rounds):
        for i, (s, n) in enumerate(zip(sessions, names, strict=True)):
            t0 = time.perf_counter()
            for _ in range(runs):
                s.run(None, {n: x})
            times[i].append((time.perf_counter() - t0) / runs * 1e3)
    out = []
    for ts in times:
        mean = statistics.mean(ts)
        out.append(
            {
                "p50_ms": statistics.median(ts),
                "mean_ms": mean,
                "cv": statistics.stdev(ts) / mean if len(ts) > 1 and mean > 0 else 0.0,
            }
        )
    return out
