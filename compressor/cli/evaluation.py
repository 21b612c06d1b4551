"""`compressor eval`, `compressor inspect` and `compressor methods`."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import click

from compressor.cli.app import cli
from compressor.cli.options import (
    Console,
    data_options,
    model_options,
    output_options,
    parse_size,
    print_table,
    runtime_options,
    with_console,
)
from compressor.config import DataConfig
from compressor.formats import split_scores


@cli.command("eval")
@click.argument("model", type=click.Path(path_type=Path))
@model_options
@data_options
@click.option(
    "--split",
    type=click.Choice(["val", "test", "train"]),
    default=None,
    help="One split [default: val and, where the data has one, test].",
)
@click.option(
    "--allow-nonfinite",
    is_flag=True,
    help="Run an ONNX file whose weights hold NaN or infinite values (refused by default).",
)
@runtime_options
@output_options
@with_console
def eval_(
    model: Path,
    *,
    arch: str | None,
    trust_pickle: bool,
    data: DataConfig,
    split: str | None,
    allow_nonfinite: bool,
    seed: int,
    device: str,
    console: Console,
) -> None:
    """Accuracy of MODEL on --data (top-1, and top-5 above 5 classes), on the validation
    split and the test split, each named.

    Where the data has a test split (IDX t10k-*, CIFAR test_batch, an ImageFolder test/),
    the validation split is held out from the training images (--val-split).

    MODEL may be an exported .onnx file: it then runs in onnxruntime (CPU) with the
    preprocessing its metadata records, so the figure is that of the file you ship."""
    from compressor.operations import evaluate_model, evaluate_onnx_file

    data = dataclasses.replace(data, augment=False)
    if model.suffix.lower() == ".onnx":
        result = evaluate_onnx_file(
            model,
            data=data,
            split=split,
            progress=console.progress,
            allow_nonfinite=allow_nonfinite,
        )
    else:
        result = evaluate_model(
            model,
            data=data,
            device=device,
            split=split,
            arch=arch,
            trust_pickle=trust_pickle,
            progress=console.progress,
        )

    def render() -> None:
        for name in result["splits"]:
            m = split_scores(result, name)
            top5 = f"  top-5 {m['top5']:.2f}%" if m["top5"] is not None else ""
            held = (
                " held out from train"
                if name == "val" and result["val_held_out_from_train"]
                else ""
            )
            click.echo(
                f"{name}: top-1 {m['top1']:.2f}%{top5}  loss {m['loss']:.4f}  "
                f"({m['images']} images{held}, {result['input_size']})"
            )

    for name in result["splits"]:
        loss = split_scores(result, name)["loss"]
        if not math.isfinite(loss):
            click.echo(
                f"Warning: the {name} loss is {loss}: the model's outputs hold "
                "NaN or infinite values, so its top-1 means little",
                err=True,
            )
    console.result(result, render)


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@model_options
@click.option(
    "--input-size",
    metavar="S|HxW|CxHxW",
    help="Input size for MACs (default: recorded, else the architecture's).",
)
@output_options
@with_console
def inspect(
    model: Path,
    *,
    arch: str | None,
    trust_pickle: bool,
    input_size: str | None,
    console: Console,
) -> None:
    """Parameters, MACs (fvcore) and per-layer channels of MODEL.

    For a pruned model, each layer's channel count before pruning is shown too.
    """
    from compressor.analysis import human
    from compressor.operations import inspect_model

    result = inspect_model(
        model,
        input_size=parse_size(input_size),
        arch=arch,
        trust_pickle=trust_pickle,
    )

    def render() -> None:
        click.echo(
            f"{result['arch']} ({result['source_format']}): {human(result['params'])} parameters, "
            f"{human(result['macs'])} MACs at {'x'.join(map(str, result['input_size']))}, "
            f"{result['num_classes']} classes"
        )
        pruned = result["pruned"]
        columns = ["layer", "type", "in", "out", *(["out before"] if pruned else [])]
        columns += ["groups", "kernel", "params", "MACs"]
        rows = []
        for r in result["layers"]:
            before = [r.get("original_out_channels")] if pruned else []
            kernel = "x".join(map(str, r["kernel"])) or "-"
            rows.append(
                [
                    r["name"],
                    r["type"],
                    r["in_channels"],
                    r["out_channels"],
                    *before,
                    r["groups"],
                    kernel,
                    human(r["params"]),
                    human(r["macs"]),
                ]
            )
        print_table("layers", columns, rows)

    console.result(result, render)


@cli.command()
@output_options
@with_console
def methods(console: Console) -> None:
    """The structured-sparsity methods, their papers and default hyperparameters."""
    from compressor.methods import describe_methods

    result = {"methods": describe_methods()}

    def render() -> None:
        rows = [
            [
                m["name"],
                ", ".join(f"{k}={v}" for k, v in m["defaults"].items()) or "-",
                ", ".join(f"{k}={v}" for k, v in m["selection"].items()),
                m["paper"],
            ]
            for m in result["methods"]
        ]
        print_table("methods", ["name", "defaults", "selection", "paper"], rows)

    console.result(result, render)
