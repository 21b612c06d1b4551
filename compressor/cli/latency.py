"""`compressor latency-table`."""

from __future__ import annotations

from pathlib import Path

import click

from compressor.cli.app import cli
from compressor.cli.options import (
    Console,
    device_options,
    model_options,
    output_options,
    parse_size,
    print_table,
    with_console,
)
from compressor.config import LatencyDevice, PruneConfig


@cli.command("latency-table")
@click.argument("model", type=click.Path(path_type=Path))
@model_options
@click.option(
    "--input-size",
    metavar="S|HxW|CxHxW",
    help="Input size to measure at (default: recorded, else the architecture's).",
)
@click.option(
    "--round-to",
    type=int,
    default=PruneConfig.round_to,
    show_default=True,
    help="Probe widths are multiples of N (as pruning keeps them).",
)
@click.option("--refresh", is_flag=True, help="Measure again even if the table is cached.")
@device_options
@output_options
@with_console
def latency_table(
    model: Path,
    *,
    arch: str | None,
    trust_pickle: bool,
    input_size: str | None,
    round_to: int,
    refresh: bool,
    device: LatencyDevice,
    console: Console,
) -> None:
    """Measure MODEL's per-layer latency table on the device, as --target-latency uses it.

    Every prunable convolution and linear layer runs alone at a grid of widths, with the
    dense model and two uniformly pruned check models, in one interleaved run of the
    benchmark runner (here, with --profile, or on --remote). The table is cached per
    architecture, input size, threads, profile, onnxruntime version and device; the
    check models give the error of its predictions.
    """
    from compressor.errors import CompressorError
    from compressor.operations import latency_table_file

    if round_to < 1:
        raise CompressorError(f"--round-to must be at least 1, got {round_to}")
    result = latency_table_file(
        model,
        device,
        input_size=parse_size(input_size),
        round_to=round_to,
        refresh=refresh,
        arch=arch,
        trust_pickle=trust_pickle,
        log=console.info,
    )

    def render() -> None:
        rows = [[r["name"], f"{r['ms']:.3f}"] for r in result["slowest"][:10]]
        print_table("slowest layers alone, ms", ["layer", "ms"], rows)
        checks = ", ".join(
            f"keep {c['keep']:g}: predicted {c['predicted_ms']:.3f} ms, measured "
            f"{c['measured_ms']:.3f} ms ({c['error']:+.1%})"
            for c in result["checks"]
        )
        click.echo(
            f"{result['arch']} at {'x'.join(map(str, result['input_size']))}, "
            f"{device.threads} thread(s): dense {result['dense_ms']:.3f} ms; "
            f"{result['probes']} probes of {result['layers']} layers; {checks}"
        )
        how = "read from the cache" if result["cached"] else f"measured in {result['seconds']:.0f}s"
        click.echo(f"table {how}: {result['file']}")

    console.result(result, render)
