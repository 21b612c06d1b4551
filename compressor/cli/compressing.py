"""`compressor compress`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from compressor.cli.app import cli
from compressor.cli.options import (
    Console,
    auto_strength,
    collect_method_options,
    data_config,
    data_options,
    method_options,
    model_options,
    onnx_options,
    output_options,
    prune_options,
    runtime_options,
    sync_bn_option,
    with_console,
)
from compressor.config import FINETUNE_EPOCHS, OPTIMIZERS, REGULARIZE_EPOCHS, TrainConfig
from compressor.errors import CompressorError
from compressor.pipeline import CompressConfig
from compressor.strength import StrengthConfig


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@model_options
@data_options(required=True)
@method_options(required=True)
@click.option(
    "--reg-epochs",
    type=int,
    default=REGULARIZE_EPOCHS,
    show_default=True,
    help="Epochs of training with the regularizer.",
)
@click.option(
    "--ft-epochs",
    type=int,
    default=FINETUNE_EPOCHS,
    show_default=True,
    help="Epochs of fine-tuning after pruning.",
)
@prune_options
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
    help="Peak learning rate of the regularize stage [default: 0.01 for sgd, 1e-4 for adamw].",
)
@click.option(
    "--ft-lr",
    type=float,
    default=None,
    help="Peak learning rate of fine-tuning: a heavily pruned model is retrained "
    "[default: `train`'s, 0.05 for sgd, 1e-3 for adamw].",
)
@click.option("--momentum", type=float, default=TrainConfig.momentum, show_default=True)
@click.option("--weight-decay", type=float, default=TrainConfig.weight_decay, show_default=True)
@click.option(
    "--augment/--no-augment",
    default=None,
    help="Random shifts (and flips where valid) [default: on when a stage has 10 epochs or more].",
)
@sync_bn_option
@click.option(
    "--distill",
    type=float,
    default=TrainConfig.distill,
    show_default=True,
    help="Fine-tuning learns from the original model's outputs too: the weight of that "
    "term in [0, 1] (knowledge distillation, temperature 4); 0: labels only.",
)
@click.option(
    "--max-drop",
    type=float,
    default=StrengthConfig.max_drop,
    show_default=True,
    help="--lambda auto: the validation top-1 points the regularize stage may lose.",
)
@click.option(
    "--focus/--no-focus",
    default=True,
    show_default=True,
    help="--lambda auto with a ratio or MAC target: the penalty acts only on the channels "
    "the target would remove now (re-planned 8 times an epoch); --no-focus: everywhere.",
)
@click.option(
    "--early-prune/--no-early-prune",
    default=True,
    show_default=True,
    help="--lambda auto with a ratio or MAC target: end the regularize stage at an epoch's "
    "end when, at its rate, the target's channels would not be emptied by its last epoch; "
    "its remaining epochs go to fine-tuning.",
)
@onnx_options
@click.option(
    "--threads",
    type=int,
    default=CompressConfig.latency_threads,
    show_default=True,
    help="onnxruntime threads for the latency comparison.",
)
@runtime_options
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), required=True, help="Output folder."
)
@click.option(
    "--force",
    is_flag=True,
    help="Replace an existing output folder (only once the new run completes).",
)
@click.option(
    "--resume", is_flag=True, help="Continue an interrupted run into the same output folder."
)
@output_options
@with_console
def compress(model: Path, console: Console, **kw: Any) -> None:
    """Train MODEL with a sparsity method, remove the channels it emptied, fine-tune,
    export a verified ONNX file and compare latency.

    Writes into OUTPUT: model.onnx, model.pt (compressor format), baseline.onnx (the
    latency reference), report.json, report.md, channels.png, training.png and
    config.json. The folder appears only when the run is complete (work happens in
    OUTPUT.partial/); after an interrupt, rerun with --resume. Selection: --ratio,
    --target-macs or --threshold, else the method's default (see `compressor methods`).
    """
    from compressor.config import TrainConfig
    from compressor.onnx_export import ExportConfig
    from compressor.pipeline import CompressConfig
    from compressor.pipeline import compress as run_compress
    from compressor.selection import method_prune_config

    if kw["threads"] < 1:
        raise click.BadParameter("must be at least 1", param_hint="--threads")
    from compressor import distributed

    output: Path = kw["output"]
    if output.exists() and not output.is_dir():
        raise CompressorError(f"{output} is a file; give a folder")
    prune = method_prune_config(
        kw["method"],
        ratio=kw["ratio"],
        target_macs=kw["target_macs"],
        threshold=kw["threshold"],
        relative=kw["relative"],
        round_to=kw["round_to"],
        max_layer_ratio=kw["max_layer_ratio"],
        allocation=kw["allocation"],
    )
    # under torchrun: join the process group; both training stages run data-parallel
    kw["device"] = distributed.setup(kw["device"], kw["batch_size"])

    def train_config(epochs: int, lr: float | None, stage: str, distill: float = 0.0) -> Any:
        return TrainConfig.create(
            stage=stage,
            epochs=epochs,
            distill=distill,
            optimizer=kw["optimizer"],
            lr=lr,
            momentum=kw["momentum"],
            weight_decay=kw["weight_decay"],
            seed=kw["seed"],
            device=kw["device"],
            sync_bn=kw["sync_bn"],
        )

    from compressor.strength import StrengthConfig

    options = collect_method_options(kw)
    auto = auto_strength(kw, options)
    config = CompressConfig(
        method=kw["method"],
        method_options=options,
        strength=StrengthConfig(
            max_drop=kw["max_drop"], focus=kw["focus"], early_prune=kw["early_prune"]
        )
        if auto
        else None,
        data=data_config(kw, augment=kw["augment"]).for_epochs(
            max(kw["reg_epochs"], kw["ft_epochs"])
        ),
        regularize=train_config(kw["reg_epochs"], kw["lr"], "regularize"),
        finetune=train_config(kw["ft_epochs"], kw["ft_lr"], "train", kw["distill"]),
        prune=prune,
        export=ExportConfig(opset=kw["opset"], simplify=kw["simplify"], tolerance=kw["tolerance"]),
        latency_threads=kw["threads"],
    )
    report = run_compress(
        model,
        output,
        config,
        arch=kw["arch"],
        trust_pickle=kw["trust_pickle"],
        resume=kw["resume"],
        force=kw["force"],
        progress=console.progress,
        log=console.info,
    )

    console.result(report, lambda: _render(report, output))


def _render(report: dict[str, Any], output: Path) -> None:
    """The console's summary of a finished run."""
    from compressor.analysis import human

    b, c, lat = report["baseline"], report["compressed"], report["latency"]
    acc = "; ".join(
        f"{split} top-1 {b[f'{split}_top1']:.2f}% -> {c[f'{split}_top1']:.2f}%"
        for split in ("test", "val")
        if b.get(f"{split}_top1") is not None
    )
    click.echo(
        f"{acc}; params {human(b['params'])} -> "
        f"{human(c['params'])}, MACs {human(b['macs'])} -> {human(c['macs'])} "
        f"({b['macs'] / max(c['macs'], 1):.2f}x fewer), latency {lat['baseline_ms']:.3f} -> {lat['compressed_ms']:.3f} ms "
        f"({lat['speedup']:.2f}x, batch 1, {lat['threads']} thread)"
        + (
            ", peak memory {:.1f} -> {:.1f} MB".format(*lat["memory_mb"])
            if lat.get("memory_mb")
            else ""
        )
    )
    click.echo(f"wrote {output}/ (report.md, report.json, model.onnx, model.pt)")
