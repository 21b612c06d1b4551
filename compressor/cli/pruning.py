"""`compressor prune`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from compressor.cli.app import cli
from compressor.cli.options import (
    Console,
    SelectionArgs,
    check_output,
    device_options,
    model_options,
    output_dir,
    output_options,
    parse_size,
    print_table,
    prune_options,
    with_console,
)
from compressor.config import IMPORTANCES, LatencyDevice, PruneConfig


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@model_options
@click.option(
    "--input-size",
    metavar="S|HxW|CxHxW",
    help="Input size to trace at (default: recorded, else the architecture's).",
)
@prune_options
@click.option(
    "--importance",
    type=click.Choice(list(IMPORTANCES)),
    default=PruneConfig.importance,
    show_default=True,
    help="Channel score: group L2 norm, group L1 norm, BatchNorm |gamma|, or group L2 norm "
    "with every BatchNorm folded into the layer before it.",
)
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), required=True, help="Pruned model file."
)
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@device_options
@output_options
@with_console
def prune(
    model: Path,
    *,
    arch: str | None,
    trust_pickle: bool,
    input_size: str | None,
    selection: SelectionArgs,
    importance: str,
    output: Path,
    force: bool,
    device: LatencyDevice,
    console: Console,
) -> None:
    """Remove the lowest-magnitude channels of MODEL (no training) and save the smaller model.

    Channels are removed in coupled groups (residual additions, concatenations, depthwise
    convolutions stay consistent), ranked across the whole model or the same fraction of
    every layer (--allocation). The output is a compressor model file that every command
    reads without flags.

    With --target-latency or --target-speedup, every layer loses the same fraction by
    default (--allocation auto), or with --allocation global the channels go where they
    buy the most time per unit of score lost; a per-layer latency table measured on the device
    (--threads, --profile, --remote; cached), and the exported pruned model is measured
    there until it lands within 5% of the target.
    """
    from compressor.analysis import human
    from compressor.operations import prune_model_file

    check_output(output, force)
    with output_dir(output):
        result = prune_model_file(
            model,
            selection.config(importance, device),
            output=output,
            input_size=parse_size(input_size),
            arch=arch,
            trust_pickle=trust_pickle,
        )

    if result.get("target_miss"):  # on stderr, in --json runs too
        click.echo(f"Warning: target missed: {result['target_miss']}", err=True)

    def render() -> None:
        rows = [
            [r["name"], r["type"], r["before"], r["after"]]
            for r in result["layers"]
            if r["before"] != r["after"]
        ]
        if rows:
            print_table("channels changed", ["layer", "type", "before", "after"], rows)
        click.echo(
            f"removed {result['removed_channels']} of {result['prunable_channels']} prunable channels "
            f"in {result['groups']} groups: params {human(result['params_before'])} -> {human(result['params_after'])}, "
            f"MACs {human(result['macs_before'])} -> {human(result['macs_after'])} "
            f"({result['macs_before'] / max(result['macs_after'], 1):.2f}x fewer) in {result['seconds']:.1f}s"
        )
        if "latency" in result:
            _latency_lines(result["latency"])
        unsafe = result["groups_unsafe"]
        if unsafe:
            first, why = next(iter(unsafe.items()))
            click.echo(
                f"kept {len(unsafe)} group(s) whole: removing their channels on a trial copy "
                f"broke the model (first: {first}: {why})"
            )
        click.echo(f"wrote {output}")

    console.result(result, render)


def _latency_lines(lat: Mapping[str, Any]) -> None:
    rows = [
        [r["name"], f"{r['before_ms']:.3f}", f"{r['after_ms']:.3f}"] for r in lat["layers"][:10]
    ]
    print_table("slowest layers, predicted ms", ["layer", "before", "after"], rows)
    target = (
        f"{lat['target_ms']:g} ms" if lat["target_ms"] else f"{lat['target_speedup']:g}x faster"
    )
    ci = lat.get("speedup_ci95") or [lat["speedup"], lat["speedup"]]
    click.echo(
        f"latency target {target}: measured {lat['measured_ms']:.3f} ms against "
        f"{lat['dense_measured_ms']:.3f} ms dense ({lat['speedup']:.2f}x, 95% CI "
        f"{ci[0]:.2f}-{ci[1]:.2f}); predicted {lat['predicted_ms']:.3f} ms; "
        f"{len(lat['attempts'])} measured plan(s); "
        + ("met within 5%" if lat["met"] else "NOT met within 5%: the closest plan is kept")
    )
