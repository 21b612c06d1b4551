#!/usr/bin/env python3
"""compressor's benchmark runner: latency, throughput and memory of ONNX models.

A single file that needs only the Python standard library, numpy and onnxruntime, so it
runs on a device where just ``pip install numpy onnxruntime`` was done:

    python3 compressor_bench.py a.onnx b.onnx --threads 1,2 --batch 1,8 --json

Models are measured interleaved (round-robin), so that a noisy machine slows all of them
alike and their ratios hold. Each configuration warms up, then measures in rounds of
``ROUND_SECONDS`` of wall time. It stops once every model has at least ``--min-runs`` runs
and ``--min-seconds`` of measured time *and* its p50 is known to ``--precision`` (relative
standard error, estimated from the spread of the per-round medians), or at
``--max-seconds`` of measured time for the slowest model. So a quiet machine is done after the minimum, and a noisy one measures
longer instead of reporting a number that the next run will not reproduce. Peak memory is
the growth of the resident set of a fresh process that loads the model and runs it once.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

RUNNER_VERSION = 2  # 2: sessions above one thread do not spin
# Documented presets for edge-like measurements: pin the process to N cores, use N
# intra-op threads and sequential execution.
PROFILES: dict[str, dict[str, Any]] = {
    "edge-1core": {"cores": 1, "threads": 1},
    "edge-2core": {"cores": 2, "threads": 2},
    "edge-4core": {"cores": 4, "threads": 4},
}
ROUND_SECONDS = 0.5  # wall time per round; a round's median is one sample of the p50
HIGH_CV = 0.25  # single-run spread worth a warning even when the p50 is precise
MIN_ROUNDS = 8  # before the p50's standard error may stop the measurement (mean_se's bias
# correction of the autocorrelation needs more than 5 rounds)
# Two-sided 95% Student-t quantiles for 1..30 degrees of freedom (1.96 beyond).
_T95 = (12.71, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042)  # fmt: skip


class RunnerError(Exception):
    """A bad input: the message is the one line the user sees."""


def _ort() -> Any:
    try:
        import onnxruntime as ort
    except ImportError as e:  # pragma: no cover - depends on the device
        raise RunnerError("onnxruntime is not installed: pip install numpy onnxruntime") from e
    return ort


PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def available_providers() -> list[str]:
    """The short names of the providers this onnxruntime offers, of those the runner knows."""
    offered = set(_ort().get_available_providers())
    return [name for name, full in PROVIDERS.items() if full in offered]


def resolve_providers(spec: str) -> list[str]:
    """``auto`` (CPU, plus CUDA when this onnxruntime has it) or a comma-separated list."""
    available = available_providers()
    if spec == "auto":
        return available
    names = [n.strip().lower() for n in spec.split(",") if n.strip()]
    for n in names:
        if n not in PROVIDERS:
            raise RunnerError(f"unknown provider {n!r}; choose from: auto, {', '.join(PROVIDERS)}")
        if n not in available:
            raise RunnerError(
                f"this onnxruntime has no {PROVIDERS[n]} (for CUDA: pip install onnxruntime-gpu)"
            )
    if not names:
        raise RunnerError("--provider needs at least one of: auto, cpu, cuda")
    return names


def make_session(path: str, threads: int, provider: str = "cpu") -> Any:
    """An onnxruntime session on ``provider`` (CUDA sessions fall back to the CPU only for
    operators that CUDA lacks)."""
    ort = _ort()
    if not os.path.isfile(path):
        raise RunnerError(f"model file {path!r} not found")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads > 1:
        # Models are measured interleaved, each with a session of its own: a worker that
        # spins after its session's run takes the core the next session needs. With
        # spinning on, resnet18 at 224x224 took 34.9 ms at 2 threads beside another
        # session (17.5 ms with it off, 17.6 ms alone) on the 2-core VM.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    providers = ["CPUExecutionProvider"]
    if provider == "cuda":
        providers.insert(0, "CUDAExecutionProvider")
    try:
        session = ort.InferenceSession(path, options, providers=providers)
    except Exception as e:  # onnxruntime raises its own types for malformed files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RunnerError(f"{path} is not a valid ONNX model: {first[:200]}") from e
    if session.get_providers()[0] != providers[0]:  # onnxruntime falls back silently
        raise RunnerError(
            f"{providers[0]} could not be started (its CUDA/cuDNN libraries are missing or "
            "do not match this onnxruntime)"
        )
    return session


_NUMPY_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


def _input_for(session: Any, batch: int, shape: Sequence[int] | None = None) -> dict[str, Any]:
    """Seeded feeds for every input of ``session`` at ``batch``. Dimensions after the batch
    that the file leaves open come from ``shape`` (``--input-shape``), else from the
    ``input_shape`` metadata compressor writes; never guessed."""
    import numpy as np

    meta = session.get_modelmeta().custom_metadata_map
    recorded = json.loads(meta["input_shape"]) if "input_shape" in meta else None
    rng = np.random.default_rng(0)
    feeds = {}
    for inp in session.get_inputs():
        dims = list(inp.shape)
        if dims and isinstance(dims[0], int) and dims[0] > 0 and dims[0] != batch:
            raise RunnerError(
                f"input {inp.name!r} has a fixed batch of {dims[0]}: use --batch {dims[0]}"
            )
        rest = dims[1:]
        if shape is not None and (
            len(shape) != len(rest)
            or any(
                isinstance(d, int) and d > 0 and d != int(g)
                for d, g in zip(rest, shape, strict=False)
            )
        ):
            raise RunnerError(
                f"input {inp.name!r} takes {dims}: --input-shape {','.join(map(str, shape))} "
                "disagrees with the file (give the dimensions after the batch that it fixes)"
            )
        if any(not isinstance(d, int) or d <= 0 for d in rest):
            given = shape if shape is not None else recorded
            if given is None or len(given) != len(rest):
                raise RunnerError(
                    f"input {inp.name!r} has open dimensions {dims}: give --input-shape "
                    f"with {len(rest)} numbers (e.g. 3,224,224)"
                )
            rest = [
                d if isinstance(d, int) and d > 0 else int(g)
                for d, g in zip(rest, given, strict=True)
            ]
        if inp.type not in _NUMPY_TYPES:
            raise RunnerError(
                f"input {inp.name!r} has type {inp.type}, which the runner cannot feed"
            )
        dtype = np.dtype(_NUMPY_TYPES[inp.type])
        full = [batch, *rest] if dims else []
        if dtype.kind == "f":
            feeds[inp.name] = rng.standard_normal(full).astype(dtype)
        else:
            feeds[inp.name] = np.zeros(full, dtype=dtype)
    return feeds


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


def t95(df: int) -> float:
    """The two-sided 95% Student-t quantile."""
    return _T95[df - 1] if 1 <= df <= len(_T95) else 1.96


def mean_se(values: Sequence[float]) -> tuple[float, int] | None:
    """Standard error of the mean of a series of consecutive round figures, and the degrees
    of freedom for its t quantile, allowing for autocorrelation.

    A machine's speed drifts: neighbouring rounds are alike (lag-1 autocorrelation about
    0.7 on the project's VM), so the naive ``sd / sqrt(n)`` understates the error by a
    factor of about 2.5. The series is treated as AR(1): the variance of its mean grows by
    ``(1 + rho) / (1 - rho)`` and the effective number of rounds shrinks by the same
    factor. The lag-1 estimate is corrected for its small-sample bias,
    ``E[r] ~ rho - (1 + 4 rho) / n``, and clipped to [0, 0.8] (at most a 9-fold variance).
    On simulated AR(1) series of 10-40 rounds with rho 0-0.85 the 95% interval covers the
    true mean 87-97% of the time, against 58-95% for the naive one (a test checks 20 rounds
    at rho 0.7). It cannot see drift slower than the measurement itself: on the project's
    VM, repeated runs minutes apart differ by more than their intervals suggest
    (benchmarks/results/bench_quality.md). None below 2 rounds."""
    n = len(values)
    if n < 2:
        return None
    mean = statistics.fmean(values)
    dev = [v - mean for v in values]
    ss = sum(d * d for d in dev)
    rho = sum(a * b for a, b in itertools.pairwise(dev)) / ss if ss > 0 else 0.0
    if n > 5:
        rho = (n * rho + 1) / (n - 4)
    rho = min(max(rho, 0.0), 0.8)
    inflation = (1 + rho) / (1 - rho)
    se = statistics.stdev(values) / n**0.5 * inflation**0.5
    return se, max(2, round(n / inflation) - 1) if n > 2 else 1


def round_stats(round_medians: list[float], p50: float) -> dict[str, Any]:
    """Relative standard error of the p50 and its 95% interval, from per-round medians
    (batch medians: each round is one sample of the typical latency; ``mean_se`` allows
    for the machine's drift from round to round). The interval covers the variation seen
    within this measurement; a machine whose speed drifts over minutes varies more from one
    run to the next (see benchmarks/results/bench_quality.md)."""
    n = len(round_medians)
    est = mean_se(round_medians)
    if est is None or p50 <= 0:
        return {"rounds": n, "p50_rse": None, "p50_ci95_ms": None}
    se, df = est
    half = t95(df) * se
    return {"rounds": n, "p50_rse": se / p50, "p50_ci95_ms": [p50 - half, p50 + half]}


def _ratio_ci(reference: list[float], other: list[float], speedup: float) -> list[float] | None:
    """95% interval of ``speedup`` (the ratio of the two p50s, the figure reported), its
    width from the round-by-round ratios ``reference / other``: both models ran in the same
    rounds, so the machine's drift largely cancels in them."""
    ratios = [a / b for a, b in zip(reference, other, strict=True) if b > 0]
    est = mean_se(ratios)
    if est is None:
        return None
    se, df = est
    half = t95(df) * se
    return [speedup - half, speedup + half]


def measure_calls(
    calls: Sequence[Callable[[], object]],
    *,
    min_runs: int = 50,
    min_seconds: float = 5.0,
    max_seconds: float = 20.0,
    precision: float = 0.01,
) -> list[dict[str, Any]]:
    """Time the (warmed-up) ``calls`` interleaved, in rounds, until the stopping rule of
    this module's docstring holds; the statistics of each call's latency in ms."""
    times: list[list[float]] = [[] for _ in calls]
    spent = [0.0 for _ in calls]
    rounds: list[list[float]] = [[] for _ in calls]  # per call, the median of each round
    current: list[list[float]] = [[] for _ in calls]
    max_seconds = max(max_seconds, min_seconds)
    round_start = time.perf_counter()
    while True:
        for i, call in enumerate(calls):
            t0 = time.perf_counter()
            call()
            dt = time.perf_counter() - t0
            times[i].append(dt * 1e3)
            current[i].append(dt * 1e3)
            spent[i] += dt
        if time.perf_counter() - round_start < ROUND_SECONDS:
            continue
        for i, c in enumerate(current):
            rounds[i].append(statistics.median(c))
            c.clear()
        round_start = time.perf_counter()
        if min(len(t) for t in times) < min_runs or min(spent) < min_seconds:
            continue
        # the slowest model's time caps the setting: with min(), a model 10x faster than
        # the others stretched three wide models' 20 s to 10 minutes
        if max(spent) >= max_seconds:
            break
        if len(rounds[0]) >= MIN_ROUNDS and all(
            (round_stats(r, statistics.median(t))["p50_rse"] or 0.0) <= precision
            for r, t in zip(rounds, times, strict=True)
        ):
            break
    out = []
    for i, t in enumerate(times):
        stats = percentiles(t)
        out.append(
            {
                "runs": len(t),
                "seconds": spent[i],
                **stats,
                **round_stats(rounds[i], stats["p50_ms"]),
            }
        )
        if i > 0:
            out[-1]["speedup_vs_first_ci95"] = _ratio_ci(
                rounds[0], rounds[i], out[0]["p50_ms"] / stats["p50_ms"]
            )
    return out


def measure(
    paths: list[str],
    *,
    threads: int,
    batch: int,
    warmup: int = 10,
    min_runs: int = 50,
    min_seconds: float = 5.0,
    max_seconds: float = 20.0,
    precision: float = 0.01,
    provider: str = "cpu",
    input_shape: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """Interleaved latency of each model at one (provider, threads, batch) setting."""
    sessions = [make_session(p, threads, provider) for p in paths]
    calls = []
    for s in sessions:
        calls.append(functools.partial(s.run, None, _input_for(s, batch, input_shape)))
    for call in calls:
        for _ in range(warmup):
            call()
    stats = measure_calls(
        calls,
        min_runs=min_runs,
        min_seconds=min_seconds,
        max_seconds=max_seconds,
        precision=precision,
    )
    return [
        {
            "model": p,
            "runtime": f"onnxruntime-{provider}",
            "provider": provider,
            "threads": threads,
            "batch": batch,
            **st,
            "throughput_ips": batch * 1000.0 / st["mean_ms"],
        }
        for p, st in zip(paths, stats, strict=True)
    ]


def layer_profile(
    path: str,
    *,
    threads: int,
    batch: int,
    top: int,
    runs: int = 20,
    input_shape: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """Where the time goes: onnxruntime's own profile of ``runs`` runs of ``path`` (after
    a warm-up), each node's mean kernel time, the ``top`` slowest first, with its share of
    the summed node time. The nodes are the optimised graph's (Conv+BatchNorm+ReLU fused)."""
    import tempfile

    ort = _ort()
    # named as compressor.utils.system_scratch names its folders, so that the next
    # compressor run removes it if this process is killed
    with tempfile.TemporaryDirectory(prefix=f"compressor-{os.getpid()}-") as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tmp, "profile")
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        feeds = _input_for(session, batch, input_shape)
        for _ in range(runs):
            session.run(None, feeds)
        with open(session.end_profiling()) as f:
            events = json.load(f)
    times: dict[str, float] = {}
    ops: dict[str, str] = {}
    for ev in events:
        name = str(ev.get("name", ""))
        if ev.get("cat") == "Node" and name.endswith("_kernel_time"):
            node = name.removesuffix("_kernel_time")
            times[node] = times.get(node, 0.0) + float(ev.get("dur", 0)) / 1e3
            ops[node] = str(ev.get("args", {}).get("op_name", ""))
    total = sum(times.values()) or 1.0
    rows = [
        {"node": n, "op": ops[n], "ms": t / runs, "share": t / total}
        for n, t in sorted(times.items(), key=lambda kv: -kv[1])
    ]
    return rows[:top]


def _status_kb(field: str) -> int | None:
    """A field of /proc/self/status in KiB (Linux), or None where there is none."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _maxrss_kb() -> int:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS, KiB elsewhere


def rss_kb() -> int:
    """The resident set now (where the OS cannot tell, the peak so far)."""
    now = _status_kb("VmRSS")
    return _maxrss_kb() if now is None else now


def peak_rss_kb() -> int:
    """The peak resident set of this process image. Linux's VmHWM, not ``ru_maxrss``: the
    latter carries the parent's resident set over fork and exec, so a probe started by a
    large process would report the parent's size."""
    peak = _status_kb("VmHWM")
    return _maxrss_kb() if peak is None else peak


def rss_growth(work: Callable[[], object]) -> dict[str, float]:
    """Resident-set growth of this process from running ``work``: the baseline is taken
    after the peak is reset (Linux: 5 to clear_refs makes VmHWM start from the resident set
    now), so that a peak during earlier imports is not counted as the model's."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    before = rss_kb()
    work()
    peak = peak_rss_kb()
    return {
        "rss_before_mb": before / 1024,
        "peak_rss_mb": peak / 1024,
        "peak_growth_mb": (peak - before) / 1024,
    }


def memory_probe(
    path: str, threads: int, batch: int, input_shape: Sequence[int] | None = None
) -> dict[str, float]:
    """In this (fresh) process: resident-set growth from loading and running the model."""
    _ort()
    import numpy as np  # noqa: F401  (imported before the baseline is taken)

    def load_and_run() -> None:
        session = make_session(path, threads)
        session.run(None, _input_for(session, batch, input_shape))

    return rss_growth(load_and_run)


def isolated_memory(
    path: str, threads: int, batch: int, input_shape: Sequence[int] | None = None
) -> dict[str, float]:
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
    if input_shape is not None:
        cmd += ["--input-shape", ",".join(map(str, input_shape))]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise RunnerError(f"the memory probe of {path} ran for over 10 minutes") from None
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


def warnings_for(results: list[dict[str, Any]], precision: float) -> list[str]:
    """One line per result whose p50 missed ``precision``, or whose single runs vary widely."""
    warnings = []
    for r in results:
        where = (
            f"{r['model']} ({r.get('runtime', 'onnxruntime-cpu')}) at {r['threads']} thread(s), "
            f"batch {r['batch']}"
        )
        if r["p50_rse"] is not None and r["p50_rse"] > precision:
            warnings.append(
                f"{where}: p50 known only to +-{r['p50_rse']:.1%} (standard error) after "
                f"{r['seconds']:.0f} s; the machine is noisy: close other programs or raise "
                "--max-seconds"
            )
        elif r["cv"] > HIGH_CV:
            warnings.append(
                f"{where}: single runs vary widely (CV {r['cv']:.0%}); the p50 is precise but "
                "p90/p99 reflect other load on this machine"
            )
    return warnings


def run(argv: list[str]) -> dict[str, Any]:
    """Parse ``argv`` and benchmark; returns the JSON-ready result."""
    args = _parser().parse_args(argv)
    threads, batches, input_shape = _checked(args)
    if args.memory_probe:
        return memory_probe(args.memory_probe, threads[0], batches[0], input_shape)
    if not args.models:
        raise RunnerError("give at least one .onnx model")
    providers = resolve_providers(args.provider)
    warnings = []
    if args.provider == "auto" and "cuda" in providers:
        try:  # onnxruntime-gpu lists CUDA even where its libraries or the GPU are missing
            make_session(args.models[0], 1, "cuda")
        except RunnerError as e:
            providers.remove("cuda")
            warnings.append(f"CUDA skipped: {e}")
    threads, cores = apply_profile(args.profile, threads)
    infos = [model_info(p) for p in args.models]
    results = []
    for provider, t, b in itertools.product(providers, threads, batches):
        results.extend(
            measure(
                args.models,
                threads=t,
                batch=b,
                warmup=args.warmup,
                min_runs=args.min_runs,
                min_seconds=args.min_seconds,
                max_seconds=args.max_seconds,
                precision=args.precision,
                provider=provider,
                input_shape=input_shape,
            )
        )
    if not args.no_memory:
        for info in infos:
            info["memory"] = isolated_memory(info["model"], threads[0], batches[0], input_shape)
    if args.layers:
        for info in infos:
            info["layers"] = layer_profile(
                info["model"],
                threads=threads[0],
                batch=batches[0],
                top=args.layers,
                input_shape=input_shape,
            )
    warnings += warnings_for(results, args.precision)
    return {
        "runner_version": RUNNER_VERSION,
        "machine": machine(),
        "profile": args.profile,
        "cores": cores,
        "settings": {
            "providers": providers,
            "threads": threads,
            "batch": batches,
            "warmup": args.warmup,
            "min_runs": args.min_runs,
            "min_seconds": args.min_seconds,
            "max_seconds": args.max_seconds,
            "precision": args.precision,
            "input_shape": input_shape,
        },
        "models": infos,
        "results": results,
        "warnings": warnings,
    }


def _parser() -> argparse.ArgumentParser:
    """The runner's options (also `compressor benchmark`'s, which passes them through)."""
    ap = argparse.ArgumentParser(prog="compressor_bench", description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*")
    ap.add_argument("--threads", default="1", help="comma-separated intra-op thread counts")
    ap.add_argument("--batch", default="1", help="comma-separated batch sizes")
    ap.add_argument(
        "--provider",
        default="auto",
        help="comma-separated execution providers (cpu, cuda) or auto: CPU, plus CUDA when present",
    )
    ap.add_argument(
        "--profile", choices=sorted(PROFILES), help="edge preset: pin cores, set threads"
    )
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--min-runs", type=int, default=50)
    ap.add_argument("--min-seconds", type=float, default=5.0)
    ap.add_argument(
        "--max-seconds",
        type=float,
        default=20.0,
        help="measure at most this long per model and setting, precise or not",
    )
    ap.add_argument(
        "--precision",
        type=float,
        default=0.01,
        help="stop once each p50's relative standard error is at most this",
    )
    ap.add_argument(
        "--input-shape",
        help="the input's dimensions after the batch (e.g. 3,224,224) where the file leaves them open",
    )
    ap.add_argument("--no-memory", action="store_true", help="skip the isolated memory measurement")
    ap.add_argument(
        "--layers",
        type=int,
        default=0,
        metavar="N",
        help="also profile each model's nodes in onnxruntime and give the N slowest",
    )
    ap.add_argument("--memory-probe", metavar="MODEL", help=argparse.SUPPRESS)
    return ap


def _checked(args: argparse.Namespace) -> tuple[list[int], list[int], list[int] | None]:
    """(threads, batches, input shape or None) from the options, or one clear error."""
    try:
        threads = [int(t) for t in args.threads.split(",")]
        batches = [int(b) for b in args.batch.split(",")]
    except ValueError:
        raise RunnerError("--threads and --batch take comma-separated integers") from None
    if min(threads) < 1 or min(batches) < 1:
        raise RunnerError("--threads and --batch must be at least 1")
    if args.layers < 0:
        raise RunnerError("--layers must be 0 or more")
    if args.min_runs < 1 or args.min_seconds < 0 or args.max_seconds < 0:
        raise RunnerError("--min-runs must be at least 1 and --min/--max-seconds not negative")
    if not 0 < args.precision < 1:
        raise RunnerError("--precision is a relative standard error between 0 and 1, e.g. 0.01")
    input_shape = None
    if args.input_shape:
        try:
            input_shape = [int(d) for d in args.input_shape.split(",")]
        except ValueError:
            raise RunnerError(
                "--input-shape takes comma-separated integers, e.g. 3,224,224"
            ) from None
        if min(input_shape) < 1:
            raise RunnerError("--input-shape dimensions must be at least 1")
    return threads, batches, input_shape


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
