"""`compressor benchmark`."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import click

from compressor.bench.compare import BenchmarkConfig
from compressor.cli.app import cli
from compressor.cli.options import Console, int_list, output_options, print_table, with_console


@cli.command()
@click.argument("models", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--threads",
    default=",".join(map(str, BenchmarkConfig.threads)),
    show_default=True,
    help="Comma-separated intra-op thread counts, e.g. 1,2,4.",
)
@click.option(
    "--batch",
    default=",".join(map(str, BenchmarkConfig.batches)),
    show_default=True,
    help="Comma-separated batch sizes.",
)
@click.option(
    "--provider",
    default=BenchmarkConfig.provider,
    show_default=True,
    help="onnxruntime providers, comma-separated (cpu, cuda); auto: CPU, plus CUDA when present.",
)
@click.option(
    "--profile",
    type=click.Choice(["edge-1core", "edge-2core", "edge-4core"]),
    help="Pin to N cores, N threads, sequential execution.",
)
@click.option(
    "--min-runs", type=click.IntRange(min=1), default=BenchmarkConfig.min_runs, show_default=True
)
@click.option(
    "--min-seconds",
    type=click.FloatRange(min=0.0),
    default=BenchmarkConfig.min_seconds,
    show_default=True,
    help="Measure at least this long per model and setting.",
)
@click.option(
    "--max-seconds",
    type=click.FloatRange(min=0.0),
    default=BenchmarkConfig.max_seconds,
    show_default=True,
    help="...and past the minimum only until --precision is reached, at most this long.",
)
@click.option(
    "--precision",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    default=BenchmarkConfig.precision,
    show_default=True,
    help="Target relative standard error of each p50 (from per-round medians).",
)
@click.option(
    "--input-shape",
    metavar="C,H,W",
    help="The input's dimensions after the batch, for ONNX files that leave them open.",
)
@click.option(
    "--allow-nonfinite",
    is_flag=True,
    help="Time ONNX files whose weights hold NaN or infinite values (refused by default).",
)
@click.option(
    "--memory/--no-memory",
    default=BenchmarkConfig.memory,
    show_default=True,
    help="Peak RSS growth of an isolated process per model.",
)
@click.option(
    "--layers",
    type=click.IntRange(min=0),
    default=0,
    metavar="N",
    help="Also show where the time goes: each ONNX model's N slowest nodes, from "
    "onnxruntime's profiler on the device.",
)
@click.option(
    "--markdown",
    "markdown_path",
    type=click.Path(path_type=Path),
    help="Also write the table as markdown.",
)
@click.option(
    "--chart", "chart_path", type=click.Path(path_type=Path), help="Also write a PNG chart."
)
@click.option(
    "--remote",
    metavar="USER@HOST",
    help="Run on a device over SSH (it needs python3, numpy and onnxruntime).",
)
@click.option("--port", type=int, help="SSH port for --remote.")
@click.option(
    "--emit-runner",
    type=click.Path(path_type=Path),
    metavar="DIR",
    help="Write the standalone runner into DIR and exit.",
)
@output_options
@with_console
def benchmark(
    models: tuple[Path, ...],
    console: Console,
    *,
    threads: str,
    batch: str,
    provider: str,
    profile: str | None,
    min_runs: int,
    min_seconds: float,
    max_seconds: float,
    precision: float,
    input_shape: str | None,
    allow_nonfinite: bool,
    memory: bool,
    layers: int,
    markdown_path: Path | None,
    chart_path: Path | None,
    remote: str | None,
    port: int | None,
    emit_runner: Path | None,
) -> None:
    """Latency (p50/p90/p99/mean), throughput and peak memory of ONNX models, measured
    interleaved so that their ratios hold on a noisy machine; `.pt` models add PyTorch eager
    latency for reference.

    The measuring runner needs only numpy and onnxruntime: --emit-runner DIR writes it as
    one file for a device, and --remote USER@HOST runs it there over SSH.
    """
    from compressor.bench import compare

    if emit_runner is not None:
        target = compare.emit_runner(emit_runner)
        click.echo(
            f"wrote {target} (run: python3 {target.name} MODEL.onnx --json; needs numpy and onnxruntime)"
        )
        return
    if not models:
        raise click.UsageError("give at least one model (.onnx or .pt)")
    if not allow_nonfinite and importlib.util.find_spec("onnx") is not None:
        # (the runner-only install has no onnx package to read weights with: no check there)
        from compressor.onnx_export import check_finite_onnx

        for m in models:
            if m.suffix.lower() == ".onnx" and m.is_file():
                check_finite_onnx(m)
    config = BenchmarkConfig(
        threads=tuple(int_list(threads, "--threads")),
        batches=tuple(int_list(batch, "--batch")),
        provider=provider,
        profile=profile,
        min_runs=min_runs,
        min_seconds=min_seconds,
        max_seconds=max_seconds,
        precision=precision,
        input_shape=tuple(int_list(input_shape, "--input-shape")) if input_shape else None,
        memory=memory,
        layers=layers,
        remote=remote,
        port=port,
    )
    result = compare.benchmark(list(models), config, log=console.info)
    for w in result.get("warnings", []):
        click.echo(f"Warning: {w}", err=True)
    if markdown_path:
        from compressor.utils import atomic_write_bytes

        atomic_write_bytes(markdown_path, compare.markdown(result).encode())
    if chart_path:
        compare.chart(result["results"], chart_path, result["models"])

    def render() -> None:
        for title, headers, rows in compare.tables(result):
            print_table(title, headers, rows)

    console.result(result, render)
