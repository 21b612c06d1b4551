"""``compressor benchmark``: run the torch-free runner on ONNX models (locally, in its own
process, or on a remote device over SSH), add PyTorch eager latency for ``.pt`` models, and
present the comparison."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compressor.bench.device import (  # noqa: F401  (re-exported: compare's names before the split)
    RUNNER,
    RUNNER_NAME,
    emit_runner,
    external_files,
    run_local,
    run_remote,
    runner_args,
)
from compressor.errors import CompressorError
from compressor.formats import BenchmarkOutput


def short_names(paths: list[str]) -> dict[str, str]:
    """Each path's file name, or, where two share a name (``a/model.onnx``,
    ``b/model.onnx``), the fewest trailing path parts that tell them apart."""
    parts = {p: Path(p).parts for p in paths}
    out: dict[str, str] = {}
    for p, ps in parts.items():
        for k in range(1, len(ps) + 1):
            tail = ps[-k:]
            if all(q == p or qs[-k:] != tail for q, qs in parts.items()):
                break
        out[p] = "/".join(tail)
    return out


@dataclass(frozen=True)
class BenchmarkConfig:
    """How `compressor benchmark` measures (its option defaults are these)."""

    threads: tuple[int, ...] = (1,)
    batches: tuple[int, ...] = (1,)
    provider: str = "auto"  # onnxruntime providers, comma-separated; auto: CPU (+ CUDA)
    profile: str | None = None  # edge-1core|edge-2core|edge-4core: pinned cores and threads
    min_runs: int = 50
    min_seconds: float = 5.0  # measure at least this long per model and setting
    max_seconds: float = 20.0  # past the minimum only until `precision`, at most this long
    precision: float = 0.01  # target relative standard error of each p50
    input_shape: tuple[int, ...] | None = None  # for ONNX files that leave dimensions open
    memory: bool = True  # peak RSS growth of an isolated process per model
    layers: int = 0  # profile each model's nodes in onnxruntime: the N slowest
    remote: str | None = None  # USER@HOST: run the runner there over SSH
    port: int | None = None


def torch_latency(
    path: Path,
    *,
    threads: int,
    batch: int,
    min_runs: int,
    min_seconds: float,
    max_seconds: float = 20.0,
    precision: float = 0.01,
    cores: list[int] | None = None,
) -> dict[str, Any]:
    """PyTorch eager latency of a model file (for reference next to onnxruntime), timed
    by the runner's loop and stopping rule; pinned to ``cores`` while it measures."""
    import torch

    from compressor.bench.runner import measure_calls
    from compressor.checkpoint import load_model, model_input_size

    loaded = load_model(path)
    size = model_input_size(loaded, None)
    model = loaded.model.eval()
    x = torch.randn(batch, *size)
    previous = torch.get_num_threads()
    affinity = os.sched_getaffinity(0) if cores and hasattr(os, "sched_getaffinity") else None
    torch.set_num_threads(threads)
    try:
        if affinity is not None and cores:
            os.sched_setaffinity(0, cores)
        with torch.inference_mode():
            for _ in range(5):
                model(x)
            (stats,) = measure_calls(
                [lambda: model(x)],
                min_runs=min_runs,
                min_seconds=min_seconds,
                max_seconds=max_seconds,
                precision=precision,
            )
    finally:
        torch.set_num_threads(previous)
        if affinity is not None:
            os.sched_setaffinity(0, affinity)
    return {
        "model": str(path),
        "runtime": "pytorch-eager",
        "provider": "cpu",
        "threads": threads,
        "batch": batch,
        **stats,
        "throughput_ips": batch * 1000.0 / stats["mean_ms"],
    }


_TORCH_MEMORY = """
import json, sys
import torch
import torchvision  # noqa: F401  (the libraries are loaded before the baseline is taken,
import compressor.archs  # noqa: F401  as the ONNX probe loads onnxruntime first)
from compressor.bench.runner import rss_growth
from compressor.checkpoint import load_model, model_input_size
torch.set_num_threads(int(sys.argv[2]))

def load_and_run():
    loaded = load_model(sys.argv[1])
    with torch.inference_mode():
        loaded.model.eval()(torch.randn(int(sys.argv[3]), *model_input_size(loaded, None)))

print(json.dumps(rss_growth(load_and_run)))
"""


def torch_info(path: Path, *, threads: int, batch: int, memory: bool) -> dict[str, Any]:
    """File size, parameters and dense-layer MACs (fvcore, counted as ``onnx_cost`` counts
    ONNX graphs) of a model file; with ``memory``, also the resident-set growth of a fresh
    process that loads it and runs one batch in eager mode (``runner.rss_growth``, after
    importing torch and torchvision, as the ONNX probe counts from after importing
    onnxruntime)."""
    from compressor.analysis import count_params, dense_macs
    from compressor.checkpoint import load_model, model_input_size

    loaded = load_model(path)
    info: dict[str, Any] = {
        "model": str(path),
        "file_bytes": path.stat().st_size,
        "params": count_params(loaded.model),
        "macs": dense_macs(loaded.model, model_input_size(loaded, None)),
        "macs_source": "fvcore",
    }
    if memory:
        proc = subprocess.run(
            [sys.executable, "-c", _TORCH_MEMORY, str(path), str(threads), str(batch)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode != 0:
            lines = proc.stderr.strip().splitlines()
            raise CompressorError(f"memory probe of {path} failed: {lines[-1] if lines else ''}")
        info["memory"] = json.loads(proc.stdout)
    return info


def add_onnx_costs(models: list[dict[str, Any]]) -> None:
    """Parameters and MACs of each ONNX model counted from its graph, one method for all
    (compressor's metadata figures, counted by fvcore in PyTorch, are kept only where the
    ``onnx`` package is missing, as on a runner-only install)."""
    try:
        from compressor.bench.onnx_cost import onnx_cost
    except ImportError:  # pragma: no cover - the runner-only install
        return
    for info in models:
        if Path(info["model"]).suffix.lower() == ".pt":
            continue
        try:
            cost = onnx_cost(info["model"])
        except ImportError:  # the runner-only install has no onnx package
            return
        except Exception:  # a file onnxruntime runs but onnx cannot read (an .ort file, say)
            continue
        info["params"] = cost["params"]
        if cost["macs"] is not None:
            info["macs"], info["macs_source"] = cost["macs"], "onnx graph"


def add_mac_cuts(models: list[dict[str, Any]]) -> None:
    """``macs_cut_vs_first``: the first model's MACs over each model's, to read beside the
    measured speed-up (a MAC cut the speed-up falls far short of is worth knowing)."""
    reference = models[0].get("macs") if models else None
    for info in models:
        macs = info.get("macs")
        info["macs_cut_vs_first"] = reference / macs if reference and macs else None


def format_p50(r: dict[str, Any]) -> str:
    """The p50 with the half-width of its 95% interval, when known."""
    ci = r.get("p50_ci95_ms")
    if not ci:
        return f"{r['p50_ms']:.3f}"
    return f"{r['p50_ms']:.3f} ±{(ci[1] - ci[0]) / 2:.3f}"


def format_speedup(r: dict[str, Any]) -> str:
    """The speed-up against the first model, with its 95% interval when the two were
    measured in the same rounds."""
    if r.get("speedup_vs_first") is None:
        return "-"
    ci = r.get("speedup_vs_first_ci95")
    text = f"{r['speedup_vs_first']:.2f}x"
    return f"{text} ({ci[0]:.2f}-{ci[1]:.2f})" if ci else text


def format_cut(info: dict[str, Any]) -> str:
    cut = info.get("macs_cut_vs_first")
    return f"{cut:.2f}x" if cut else "-"


def add_ratios(results: list[dict[str, Any]]) -> None:
    """Speed-up of each result against the first model at the same (host, provider,
    threads, batch); PyTorch eager results count as local CPU. A group whose first result
    is not the first model (eager latency measured here beside ONNX latency measured on a
    remote device) gets no speed-up: it would compare two machines."""
    first = results[0]["model"] if results else None
    reference: dict[tuple[str, str, int, int], dict[str, Any]] = {}
    for r in results:
        key = (r.get("host", ""), r.get("provider", "cpu"), r["threads"], r["batch"])
        ref = reference.setdefault(key, r)
        r["speedup_vs_first"] = ref["p50_ms"] / r["p50_ms"] if ref["model"] == first else None
        r.setdefault("speedup_vs_first_ci95", None)


def chart(
    results: Sequence[Mapping[str, Any]],
    path: Path,
    models: Sequence[Mapping[str, Any]] | None = None,
) -> None:
    """Latency p50 (bar to p90) of every result; beside it, where MACs are known, each
    model's speed-up against the first next to its MAC cut (at the first setting)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = short_names([r["model"] for r in results])
    labels = [
        f"{names[r['model']]}\n{r.get('runtime', 'onnxruntime-cpu')} t{r['threads']} b{r['batch']}"
        for r in results
    ]
    cuts = {m["model"]: m.get("macs_cut_vs_first") for m in models or []}
    first = results[0] if results else None
    paired = [
        (names[r["model"]], r["speedup_vs_first"], cuts[r["model"]])
        for r in results
        if first is not None
        and cuts.get(r["model"])
        and r.get("speedup_vs_first")
        and (r.get("runtime"), r.get("provider"), r["threads"], r["batch"])
        == (first.get("runtime"), first.get("provider"), first["threads"], first["batch"])
    ]
    width = max(5.0, 1.6 * len(results))
    if len(paired) > 1:
        side = max(3.5, 1.1 * len(paired))
        fig, (ax, bx) = plt.subplots(
            1, 2, figsize=(width + side, 3.6), gridspec_kw={"width_ratios": [width, side]}
        )
    else:
        fig, ax = plt.subplots(figsize=(width, 3.6))
    ax.bar(
        range(len(results)),
        [r["p50_ms"] for r in results],
        yerr=[[0.0] * len(results), [r["p90_ms"] - r["p50_ms"] for r in results]],
    )
    ax.set_xticks(range(len(results)), labels, fontsize=7)
    ax.set_ylabel("latency p50 (ms), bar to p90")
    if len(paired) > 1:
        x = range(len(paired))
        bx.bar([i - 0.2 for i in x], [p[2] for p in paired], 0.4, label="MAC cut")
        bx.bar([i + 0.2 for i in x], [p[1] for p in paired], 0.4, label="measured speed-up")
        bx.axhline(1.0, color="grey", lw=0.8)
        bx.set_xticks(list(x), [p[0] for p in paired], fontsize=7)
        bx.set_ylabel("x against the first model")
        bx.set_title(
            f"{first['threads']} thread(s), batch {first['batch']}" if first else "", fontsize=8
        )
        bx.legend(fontsize=7)
    fig.tight_layout()
    from compressor.utils import atomic_path

    with atomic_path(path) as tmp:  # .NAME.*.tmp beside it: cleared after a kill
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def markdown(result: Mapping[str, Any]) -> str:
    m = result["machine"]
    names = short_names(
        [i["model"] for i in result["models"]] + [r["model"] for r in result["results"]]
    )
    lines = [
        "# Benchmark",
        "",
        f"Machine: {m['processor']}, {m['cpus']} CPUs, {m['platform']}; onnxruntime {m['onnxruntime']}"
        + (f"; host {result['host']}" if result.get("host") else "")
        + (
            f"; profile {result['profile']} (cores {result['cores']})"
            if result.get("profile")
            else ""
        ),
        "",
        "| model | runtime | threads | batch | p50 ms (±95%) | p90 ms | p99 ms | mean ms | CV | items/s | speed-up vs first (95%) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["results"]:
        lines.append(
            f"| {names[r['model']]} | {r.get('runtime', 'onnxruntime-cpu')} | {r['threads']} | {r['batch']} | "
            f"{format_p50(r)} | {r['p90_ms']:.3f} | {r['p99_ms']:.3f} | {r['mean_ms']:.3f} | {r['cv']:.1%} | "
            f"{r['throughput_ips']:.1f} | {format_speedup(r)} |"
        )
    lines += [
        "",
        "| model | file MB | peak RSS growth MB | params | MACs | MACs cut vs first |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for info in result["models"]:
        mem = info.get("memory", {}).get("peak_growth_mb")
        lines.append(
            f"| {names[info['model']]} | {info['file_bytes'] / 1e6:.2f} | "
            f"{'-' if mem is None else f'{mem:.1f}'} | {info.get('params') or '-'} | "
            f"{info.get('macs') or '-'} | {format_cut(info)} |"
        )
    for w in result.get("warnings", []):
        lines.append(f"\nWarning: {w}")
    return "\n".join(lines) + "\n"


def benchmark(
    models: list[Path], config: BenchmarkConfig, log: Callable[[str], None] = lambda _m: None
) -> BenchmarkOutput:
    """Measure ``models``: ONNX files interleaved by the runner (here, in its own process, or
    on ``config.remote``), ``.pt`` files in PyTorch eager mode; then costs, MAC cuts,
    speed-ups against the first model and the noise warnings."""
    for m in models:
        if not m.is_file():
            raise CompressorError(f"model file {str(m)!r} not found")
    onnx_models = [m for m in models if m.suffix.lower() != ".pt"]
    torch_models = [m for m in models if m.suffix.lower() == ".pt"]
    result = _measure_onnx(onnx_models, config, log)
    add_onnx_costs(result["models"])
    threads, cores = list(config.threads), None
    if config.profile:  # the runner pinned its own process; eager runs here, pinned alike
        from compressor.bench.runner import PROFILES

        threads, cores = [PROFILES[config.profile]["threads"]], result.get("cores")
    for m in torch_models:
        log(f"measuring {m} in PyTorch eager mode")
        for t in threads:
            for b in config.batches:
                result["results"].append(
                    torch_latency(
                        m,
                        threads=t,
                        batch=b,
                        min_runs=config.min_runs,
                        min_seconds=config.min_seconds,
                        max_seconds=config.max_seconds,
                        precision=config.precision,
                        cores=cores,
                    )
                )
        result["models"].append(
            torch_info(m, threads=threads[0], batch=config.batches[0], memory=config.memory)
        )
    add_mac_cuts(result["models"])
    if torch_models:
        from compressor.bench.runner import warnings_for

        eager = [r for r in result["results"] if r.get("runtime") == "pytorch-eager"]
        result["warnings"] = [*result.get("warnings", []), *warnings_for(eager, config.precision)]
    add_ratios(result["results"])
    from compressor.schema import stamp

    return stamp("benchmark", result)


def _measure_onnx(
    models: list[Path], config: BenchmarkConfig, log: Callable[[str], None]
) -> dict[str, Any]:
    if not models:
        from compressor.bench.runner import machine

        return {
            "machine": machine(),
            "profile": None,
            "cores": None,
            "models": [],
            "results": [],
            "warnings": [],
        }
    args = runner_args(
        threads=list(config.threads),
        batches=list(config.batches),
        profile=config.profile,
        min_runs=config.min_runs,
        min_seconds=config.min_seconds,
        max_seconds=config.max_seconds,
        precision=config.precision,
        memory=config.memory,
        provider=config.provider,
        input_shape=config.input_shape,
        layers=config.layers,
    )
    where = f" on {config.remote}" if config.remote else ""
    log(f"measuring {len(models)} ONNX model(s) interleaved{where}")
    if config.remote:
        return run_remote(config.remote, models, args, port=config.port)
    return run_local(models, args)


def tables(result: Mapping[str, Any]) -> list[tuple[str, list[str], list[list[Any]]]]:
    """(title, headers, rows) of the console's latency and models tables."""
    names = short_names(
        [i["model"] for i in result["models"]] + [r["model"] for r in result["results"]]
    )
    latency = [
        [
            names[r["model"]],
            r.get("runtime", "onnxruntime-cpu"),
            r["threads"],
            r["batch"],
            format_p50(r),
            f"{r['p90_ms']:.3f}",
            f"{r['p99_ms']:.3f}",
            f"{r['cv']:.1%}",
            f"{r['throughput_ips']:.1f}",
            format_speedup(r),
        ]
        for r in result["results"]
    ]
    models = [
        [
            names[i["model"]],
            f"{i['file_bytes'] / 1e6:.2f}",
            f"{i['memory']['peak_growth_mb']:.1f}" if "memory" in i else "-",
            i.get("params") or "-",
            i.get("macs") or "-",
            format_cut(i),
        ]
        for i in result["models"]
    ]
    where = [
        (
            f"where the time goes: {names[i['model']]} (onnxruntime's profile, mean per run)",
            ["node", "op", "ms", "share"],
            [[r["node"], r["op"], f"{r['ms']:.3f}", f"{r['share']:.1%}"] for r in i["layers"]],
        )
        for i in result["models"]
        if i.get("layers")
    ]
    return [
        (
            "latency",
            [
                "model",
                "runtime",
                "threads",
                "batch",
                "p50 ms (±95%)",
                "p90 ms",
                "p99 ms",
                "CV",
                "items/s",
                "vs first (95%)",
            ],
            latency,
        ),
        (
            "models",
            [
                "model",
                "file MB",
                "peak RSS growth MB",
                "params (ONNX: BatchNorm folded)",
                "MACs",
                "MACs cut vs first",
            ],
            models,
        ),
        *where,
    ]
