"""`compressor compress`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from compressor.cli.app import cli
from compressor.cli.options import (
    Console,
    MethodArgs,
    OptimizerArgs,
    SelectionArgs,
    data_options,
    latency_device_options,
    method_options,
    model_options,
    onnx_options,
    optimizer_options,
    option_group,
    output_options,
    prune_options,
    runtime_options,
    sync_bn_option,
    with_console,
)
from compressor.config import (
    AUGMENT_FROM_EPOCHS,
    FINETUNE_EPOCHS,
    FINETUNE_LR,
    NEW_HEAD_EPOCHS,
    REGULARIZE_EPOCHS,
    REGULARIZE_LR,
    DataConfig,
    LatencyDevice,
    TrainConfig,
    lr_text,
)
from compressor.errors import CompressorError
from compressor.formats import Report
from compressor.onnx_export import ExportConfig
from compressor.pipeline import CompressConfig
from compressor.strength import StrengthConfig


def strength_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The ``--lambda auto`` options, handed to the command as ``strength``: a
    StrengthConfig."""
    return option_group(
        "strength",
        StrengthConfig,
        [
            click.option(
                "--strength-rule",
                "rule",
                type=click.Choice(["auto", "bounded", "growing"]),
                default=StrengthConfig.rule,
                show_default=True,
                help="--lambda auto's rule: bounded (hold the trained model's accuracy within "
                "--max-drop over a short stage), growing (the penalty everywhere for a "
                "quarter of the stage, then a growing decay empties the planned channels by "
                "3/4 of it; no accuracy bound) or auto "
                f"(growing for a new head or a stage of {StrengthConfig.long_stage} epochs or "
                "more, else bounded).",
            ),
            click.option(
                "--max-drop",
                type=float,
                default=StrengthConfig.max_drop,
                show_default=True,
                help="--lambda auto: the validation top-1 points the regularize stage may lose.",
            ),
            click.option(
                "--focus/--no-focus",
                default=StrengthConfig.focus,
                show_default=True,
                help="--lambda auto with a ratio or MAC target: once the method's plan has settled "
                "(see --global-epochs), the penalty acts only on the channels the target would remove "
                "now (re-planned 8 times an epoch); --no-focus: everywhere, all stage long.",
            ),
            click.option(
                "--global-epochs",
                type=float,
                default=StrengthConfig.global_epochs,
                show_default=True,
                help="--focus: the penalty first acts on the whole network until the method's plan "
                f"settles (it changes by at most {StrengthConfig.mask_tolerance:.0%} of the channels in "
                "half an epoch), for at most this "
                "many epochs; 0: focus from the start on the dense model's plan.",
            ),
            click.option(
                "--early-prune/--no-early-prune",
                default=StrengthConfig.early_prune,
                show_default=True,
                help="--lambda auto with a ratio or MAC target: end the regularize stage at an epoch's "
                "end when, at its rate, the target's channels would not be emptied by its last epoch; "
                "its remaining epochs go to fine-tuning.",
            ),
        ],
    )(f)


@cli.command()
@click.argument("model")
@model_options
@data_options
@method_options(required=True)
@click.option(
    "--weights",
    metavar="NAME|FILE",
    help="MODEL is an architecture name: start it from pretrained weights, DEFAULT or a "
    "torchvision weights name (IMAGENET1K_V1, ...) read from the local torch hub cache "
    "(nothing is downloaded), or a state_dict file. It gets a new head for the data's classes.",
)
@click.option(
    "--reference",
    type=click.Path(path_type=Path),
    default=None,
    help="A dense model trained on the same data (for a new head: fine-tuned for as many "
    "epochs), which the report compares the compressed model with.",
)
@click.option(
    "--reg-epochs",
    type=int,
    default=None,
    help="Epochs of training with the regularizer [default: 0 for a trained model with a "
    "ratio, MAC or latency target: prune with the method's scores, then fine-tune with every "
    "epoch, which has won at equal epochs (benchmarks/README.md); "
    f"{REGULARIZE_EPOCHS} with a threshold selection; {NEW_HEAD_EPOCHS[0]} when the start gets a "
    "new head, where this stage is the task fine-tuning (0 for --method none: prune the "
    "pretrained model first)].",
)
@click.option(
    "--ft-epochs",
    type=int,
    default=None,
    help="Epochs of fine-tuning after pruning [default: "
    f"{REGULARIZE_EPOCHS + FINETUNE_EPOCHS} without a regularize stage, {FINETUNE_EPOCHS} after "
    f"one, {NEW_HEAD_EPOCHS[1]} after a new head's, {sum(NEW_HEAD_EPOCHS)} for a new head "
    "without one].",
)
@prune_options
@optimizer_options
@click.option(
    "--lr",
    type=float,
    default=None,
    help=f"Peak learning rate of the regularize stage [default: {lr_text(REGULARIZE_LR)}].",
)
@click.option(
    "--ft-lr",
    type=float,
    default=None,
    help="Peak learning rate of fine-tuning, which retrains the pruned model "
    f"[default: {lr_text(FINETUNE_LR)}].",
)
@click.option(
    "--augment/--no-augment",
    default=None,
    help="Random shifts (and flips where valid) [default: on when a stage has "
    f"{AUGMENT_FROM_EPOCHS} epochs or more].",
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
@strength_options
@onnx_options
@latency_device_options
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
def compress(
    model: str,
    *,
    arch: str | None,
    trust_pickle: bool,
    data: DataConfig,
    method: MethodArgs,
    weights: str | None,
    reference: Path | None,
    reg_epochs: int | None,
    ft_epochs: int | None,
    selection: SelectionArgs,
    optim: OptimizerArgs,
    lr: float | None,
    ft_lr: float | None,
    augment: bool | None,
    sync_bn: bool,
    distill: float,
    strength: StrengthConfig,
    onnx: ExportConfig,
    latency_device: LatencyDevice,
    seed: int,
    device: str,
    output: Path,
    force: bool,
    resume: bool,
    console: Console,
) -> None:
    """Train MODEL with a sparsity method, remove the channels it emptied, fine-tune,
    export a verified ONNX file and compare latency.

    MODEL is a model file (a trained model, or a pretrained one or a backbone with --arch,
    whose head is replaced when it does not fit the data), or an architecture name with
    --weights.

    Writes into OUTPUT: model.onnx, model.pt (compressor format), baseline.onnx (the
    latency reference), report.json, report.md, channels.png, training.png and
    config.json. The folder appears only when the run is complete (work happens in
    OUTPUT.partial/); after an interrupt, rerun with --resume. Selection: --ratio,
    --target-macs, --threshold, --target-latency or --target-speedup, else the method's
    default (see `compressor methods`).
    """
    from compressor import distributed
    from compressor.pipeline import compress as run_compress
    from compressor.selection import method_prune_config

    if output.exists() and not output.is_dir():
        raise CompressorError(f"{output} is a file; give a folder")
    assert method.name is not None  # --method is required
    if latency_device.remote:  # before hours of training, not after
        from compressor.bench.device import check_remote

        check_remote(latency_device.remote, port=latency_device.port)
    prune = method_prune_config(method.name, **selection.options(latency_device))
    # under torchrun: join the process group; both training stages run data-parallel
    device = distributed.setup(device, data.batch_size)

    # both stages share the optimizer, seed and device; fine-tuning may distil
    common = dict(seed=seed, device=device, sync_bn=sync_bn, **dataclasses.asdict(optim))
    unset = tuple(
        name
        for name, value in (
            ("reg_epochs", reg_epochs),
            ("ft_epochs", ft_epochs),
            ("augment", augment),
        )
        if value is None
    )
    reg_epochs = REGULARIZE_EPOCHS if reg_epochs is None else reg_epochs
    ft_epochs = FINETUNE_EPOCHS if ft_epochs is None else ft_epochs
    config = CompressConfig(
        method=method.name,
        method_options=method.options,
        strength=strength if method.auto else None,
        data=dataclasses.replace(data, augment=augment),
        regularize=TrainConfig.create(stage="regularize", epochs=reg_epochs, lr=lr, **common),
        finetune=TrainConfig.create(
            stage="finetune", epochs=ft_epochs, lr=ft_lr, distill=distill, **common
        ),
        prune=prune,
        export=onnx,
        latency_threads=latency_device.threads,
        unset=unset,
    )
    report = run_compress(
        model,
        output,
        config,
        arch=arch,
        weights=weights,
        reference=reference,
        trust_pickle=trust_pickle,
        resume=resume,
        force=force,
        progress=console.progress,
        log=console.info,
    )
    console.result(report, lambda: _render(report, output))


def _render(report: Report, output: Path) -> None:
    """The console's summary of a finished run."""
    from compressor.analysis import human
    from compressor.pipeline import device_text
    from compressor.reference import accuracy_change

    b, c, lat = report["baseline"], report["compressed"], report["latency"]
    memory = lat["memory_mb"]
    acc = accuracy_change(b, c)
    click.echo(
        f"{acc}; params {human(b['params'])} -> "
        f"{human(c['params'])}, MACs {human(b['macs'])} -> {human(c['macs'])} "
        f"({b['macs'] / max(c['macs'], 1):.2f}x fewer), latency {lat['baseline_ms']:.3f} -> {lat['compressed_ms']:.3f} ms "
        f"({lat['speedup']:.2f}x, batch 1, {device_text(lat)})"
        + (f", peak memory {memory[0]:.1f} -> {memory[1]:.1f} MB" if memory else "")
    )
    ref = (report.get("start") or {}).get("reference")
    if ref is not None:
        click.echo(
            f"against the dense reference: {accuracy_change(ref, c)}, "
            f"{ref['macs'] / max(c['macs'], 1):.2f}x fewer MACs"
        )
    elif (report.get("start") or {}).get("new_head"):
        click.echo(
            "the baseline is a new, untrained head: --reference FILE compares with a dense fine-tune"
        )
    click.echo(f"wrote {output}/ (report.md, report.json, model.onnx, model.pt)")
