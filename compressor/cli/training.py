"""`compressor train`."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from compressor.cli.app import cli
from compressor.cli.options import (
    Console,
    MethodArgs,
    OptimizerArgs,
    check_output,
    data_options,
    method_options,
    model_options,
    optimizer_options,
    output_dir,
    output_options,
    runtime_options,
    sync_bn_option,
    with_console,
)
from compressor.config import (
    AUGMENT_FROM_EPOCHS,
    SCHEDULES,
    TRAIN_LR,
    DataConfig,
    TrainConfig,
    lr_text,
)
from compressor.errors import CompressorError


@cli.command()
@click.argument("arch_or_model")
@model_options
@data_options
@click.option("--epochs", type=int, default=TrainConfig.epochs, show_default=True)
@optimizer_options
@click.option(
    "--lr",
    type=float,
    default=None,
    help=f"Peak learning rate [default: {lr_text(TRAIN_LR)}].",
)
@click.option(
    "--schedule",
    type=click.Choice(list(SCHEDULES)),
    default=TrainConfig.schedule,
    show_default=True,
)
@click.option(
    "--step-epochs",
    type=int,
    default=TrainConfig.step_epochs,
    show_default=True,
    help="Step schedule: epochs between decays.",
)
@click.option("--warmup-epochs", type=float, default=TrainConfig.warmup_epochs, show_default=True)
@click.option(
    "--label-smoothing", type=float, default=TrainConfig.label_smoothing, show_default=True
)
@click.option(
    "--augment/--no-augment",
    default=None,
    help=f"Random shifts (and flips where valid) [default: on from {AUGMENT_FROM_EPOCHS} epochs].",
)
@click.option(
    "--amp/--no-amp", default=TrainConfig.amp, show_default=True, help="Mixed precision on CUDA."
)
@sync_bn_option
@click.option(
    "--channels-last/--no-channels-last",
    default=TrainConfig.channels_last,
    show_default=True,
    help="NHWC memory format on CUDA.",
)
@method_options(required=False)
@runtime_options
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), required=True, help="Trained model file."
)
@click.option(
    "--weights",
    metavar="NAME|FILE",
    help="Start ARCH from pretrained weights: DEFAULT or a torchvision weights name "
    "(IMAGENET1K_V1, ...) read from the local torch hub cache (nothing is downloaded), or a "
    "state_dict file. The classifier head is replaced when the data has other classes.",
)
@click.option("--resume", is_flag=True, help="Continue an interrupted run of this same command.")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@output_options
@with_console
def train(
    arch_or_model: str,
    *,
    arch: str | None,
    trust_pickle: bool,
    data: DataConfig,
    epochs: int,
    optim: OptimizerArgs,
    lr: float | None,
    schedule: str,
    step_epochs: int,
    warmup_epochs: float,
    label_smoothing: float,
    augment: bool | None,
    amp: bool,
    sync_bn: bool,
    channels_last: bool,
    method: MethodArgs,
    seed: int,
    device: str,
    output: Path,
    weights: str | None,
    resume: bool,
    force: bool,
    console: Console,
) -> None:
    """Train ARCH_OR_MODEL (an architecture name, or a model file to fine-tune) on --data.

    Writes OUTPUT (a compressor model file with its preprocessing and class names) and
    OUTPUT's stem + .train.json (settings and per-epoch history). A resumable state
    (OUTPUT + .resume) is kept after every epoch and on Ctrl-C until training finishes.
    """
    from compressor import distributed
    from compressor.operations import train_model

    if not resume:
        check_output(output, force)
    # under torchrun: join the process group; each rank trains on its own device
    device = distributed.setup(device, data.batch_size)
    config = TrainConfig.create(
        epochs=epochs,
        optimizer=optim.optimizer,
        lr=lr,
        momentum=optim.momentum,
        weight_decay=optim.weight_decay,
        schedule=schedule,
        step_epochs=step_epochs,
        warmup_epochs=warmup_epochs,
        label_smoothing=label_smoothing,
        seed=seed,
        device=device,
        amp=amp,
        channels_last=channels_last,
        sync_bn=sync_bn,
    )
    with output_dir(output):
        result = train_model(
            arch_or_model,
            method=_method(method),
            data=dataclasses.replace(data, augment=augment).for_epochs(epochs),
            train=config,
            output=output,
            arch=arch,
            trust_pickle=trust_pickle,
            resume=resume,
            progress=console.progress,
            log=console.info,
            debug=console.debug,
            weights=weights,
        )
    console.result(result, lambda: _render(result, output))


def _method(args: MethodArgs) -> Any:
    """The method to train with, if any."""
    if args.lambda_auto:
        raise CompressorError(
            "--lambda auto holds a trained model's accuracy and runs in `compress`; "
            "`train` takes a number (default: the method's own)"
        )
    if args.name is None:
        if args.options:
            raise CompressorError("--lambda, --set and --method-config need --method")
        return None
    from compressor.methods import get_method

    return get_method(args.name, args.options)


def _render(result: Mapping[str, Any], output: Path) -> None:
    hist = result["history"]
    if hist:
        last = hist[-1]
        top5 = f", top-5 {last['val_top5']:.2f}%" if last["val_top5"] is not None else ""
        test = result.get("test")
        test_text = f"; test top-1 {test['top1']:.2f}%" if test else ""
        click.echo(
            f"val top-1 {last['val_top1']:.2f}%{top5}{test_text} after {last['epoch']} epochs"
        )
    click.echo(f"wrote {output}")
