"""`compressor export`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from compressor.cli.app import cli
from compressor.cli.options import (
    Console,
    check_output,
    model_options,
    onnx_options,
    output_dir,
    output_options,
    parse_size,
    with_console,
)
from compressor.config import CALIB_SAMPLES
from compressor.onnx_export import ExportConfig


@cli.command("export")
@click.argument("model", type=click.Path(path_type=Path))
@model_options
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), required=True, help="ONNX file to write."
)
@click.option(
    "--input-size",
    metavar="S|HxW|CxHxW",
    help="Input size (default: recorded, else the architecture's).",
)
@onnx_options
@click.option(
    "--data",
    metavar="DIR|mnist15k",
    help="Real images for the parity check (validation split); also records their preprocessing.",
)
@click.option(
    "--verify/--no-verify",
    default=ExportConfig.verify,
    show_default=True,
    help="Fail when onnxruntime differs from PyTorch beyond --tolerance.",
)
@click.option(
    "--int8",
    is_flag=True,
    help="Also write a static INT8 model (QDQ, per-channel weights): OUTPUT stem + .int8.onnx.",
)
@click.option(
    "--calib-data",
    metavar="DIR|mnist15k",
    help="Data whose training split calibrates --int8 and whose validation split measures its accuracy.",
)
@click.option("--calib-samples", type=int, default=CALIB_SAMPLES, show_default=True)
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
@output_options
@with_console
def export_(
    model: Path,
    *,
    arch: str | None,
    trust_pickle: bool,
    output: Path,
    input_size: str | None,
    onnx: ExportConfig,
    data: str | None,
    verify: bool,
    int8: bool,
    calib_data: str | None,
    calib_samples: int,
    force: bool,
    console: Console,
) -> None:
    """Export MODEL to ONNX (dynamic batch, input `input`, output `logits`) and verify it.

    The file's metadata records input_shape, mean, std, class_names and the architecture
    (plus compression figures for models from `compress`). onnx.checker must pass, and
    onnxruntime's outputs are compared with PyTorch's on random (and, with --data, real)
    inputs. If the TorchScript exporter rejects an operator, the dynamo exporter is used.
    """
    from compressor.config import DataConfig
    from compressor.operations import export_model_file

    check_output(output, force)
    if int8:
        check_output(output.with_name(output.stem + ".int8.onnx"), force)
    if int8 and not calib_data:
        raise click.UsageError("--int8 needs --calib-data")
    if calib_samples < 1:
        raise click.BadParameter("must be at least 1", param_hint="--calib-samples")
    with output_dir(output):
        result = export_model_file(
            model,
            output=output,
            config=dataclasses.replace(onnx, verify=verify),
            data=DataConfig(data) if data else None,
            int8=int8,
            calib_data=DataConfig(calib_data) if calib_data else None,
            calib_samples=calib_samples,
            input_size=parse_size(input_size),
            arch=arch,
            trust_pickle=trust_pickle,
            log=console.info,
        )

    def render() -> None:
        click.echo(
            f"wrote {output} ({result['size_bytes'] / 1e6:.2f} MB, opset {result['opset']}, "
            f"{result['exporter']} exporter, {result['nodes']} nodes)"
        )
        for note in result["notes"]:
            click.echo(f"  {note}")
        for p in result["parity"]:
            click.echo(
                f"  parity on {p['samples']} {p['inputs']} inputs: max abs diff {p['max_abs_diff']:.2e} "
                f"({p['rel_diff']:.2e} of the output scale), top-1 agreement {p['top1_agreement']:.1f}%"
            )
        q = result.get("int8")
        if q:
            click.echo(
                f"wrote {q['path']} ({q['size_bytes'] / 1e6:.2f} MB vs {q['fp32_size_bytes'] / 1e6:.2f} MB): "
                f"top-1 {q['accuracy_fp32']:.2f}% -> {q['accuracy_int8']:.2f}% on {q['eval_images']} {q['eval_split']} images, "
                f"latency {q['latency_fp32_ms']:.2f} -> {q['latency_int8_ms']:.2f} ms "
                f"({q['speedup']:.2f}x, batch 1, 1 thread)"
            )

    console.result(result, render)
