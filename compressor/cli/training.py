"""`compressor train`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from compressor.cli.app import cli
from compressor.cli.options import (
    Console,
    check_output,
    collect_method_options,
    data_config,
    data_options,
    method_options,
    model_options,
    output_dir,
    output_options,
    runtime_options,
    sync_bn_option,
    with_console,
)
from compressor.config import OPTIMIZERS, TrainConfig
from compressor.errors import CompressorError


@cli.command()
@click.argument("arch_or_model")
@model_options
@data_options(required=True)
@click.option("--epochs", type=int, default=TrainConfig.epochs, show_default=True)
@click.option(
    "--optimizer",
    type=click.Choice(list(OPTIMIZERS)),
    default=TrainConfig.optimizer,
    show_default=True,
)
@click.option(
    "--lr",
    type=float,
    default=None,
    help="Peak learning rate [default: 0.05 for sgd, 1e-3 for adamw].",
)
@click.option("--momentum", type=float, default=TrainConfig.momentum, show_default=True)
@click.option("--weight-decay", type=float, default=TrainConfig.weight_decay, show_default=True)
@click.option(
    "--schedule",
    type=click.Choice(["cosine", "step", "constant"]),
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
    help="Random shifts (and flips where valid) [default: on from 10 epochs; over fewer "
    "they cost accuracy: 98.95% vs 99.30% for resnet18 on mnist15k in 5 epochs].",
)
@click.option("--amp/--no-amp", default=True, show_default=True, help="Mixed precision on CUDA.")
@sync_bn_option
@click.option(
    "--channels-last/--no-channels-last",
    default=True,
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
def train(arch_or_model: str, console: Console, **kw: Any) -> None:
    """Train ARCH_OR_MODEL (an architecture name, or a model file to fine-tune) on --data.

    Writes OUTPUT (a compressor model file with its preprocessing and class names) and
    OUTPUT's stem + .train.json (settings and per-epoch history). A resumable state
    (OUTPUT + .resume) is kept after every epoch and on Ctrl-C until training finishes.
    """
    from compressor import distributed
    from compressor.config import TrainConfig
    from compressor.operations import train_model

    output: Path = kw["output"]
    if not kw["resume"]:
        check_output(output, kw["force"])
    # under torchrun: join the process group; each rank trains on its own device
    kw["device"] = distributed.setup(kw["device"], kw["batch_size"])
    config = TrainConfig.create(
        epochs=kw["epochs"],
        optimizer=kw["optimizer"],
        lr=kw["lr"],
        momentum=kw["momentum"],
        weight_decay=kw["weight_decay"],
        schedule=kw["schedule"],
        step_epochs=kw["step_epochs"],
        warmup_epochs=kw["warmup_epochs"],
        label_smoothing=kw["label_smoothing"],
        seed=kw["seed"],
        device=kw["device"],
        amp=kw["amp"],
        channels_last=kw["channels_last"],
        sync_bn=kw["sync_bn"],
    )
    method = None
    options = collect_method_options(kw)
    if str(kw.get("lam")).lower() == "auto":
        raise CompressorError(
            "--lambda auto holds a trained model's accuracy and runs in `compress`; "
            "`train` takes a number (default: the method's own)"
        )
    if kw["method"] is not None:
        from compressor.methods import get_method

        method = get_method(kw["method"], options)
    elif options:
        raise CompressorError("--lambda, --set and --method-config need --method")
    with output_dir(output):
        result = train_model(
            arch_or_model,
            method=method,
            data=data_config(kw, augment=kw["augment"]).for_epochs(kw["epochs"]),
            train=config,
            output=output,
            arch=kw["arch"],
            trust_pickle=kw["trust_pickle"],
            resume=kw["resume"],
            progress=console.progress,
            log=console.info,
            debug=console.debug,
            weights=kw["weights"],
        )
    hist = result["history"]
    last = hist[-1] if hist else None

    def render() -> None:
        if last is not None:
            top5 = f", top-5 {last['val_top5']:.2f}%" if last["val_top5"] is not None else ""
            test = result.get("test")
            test_text = f"; test top-1 {test['top1']:.2f}%" if test else ""
            click.echo(
                f"val top-1 {last['val_top1']:.2f}%{top5}{test_text} after {last['epoch']} epochs"
            )
        click.echo(f"wrote {output}")

    console.result(result, render)
