"""The stages of ``compress``, each a function of the ``Run``, and ``TABLE``: one record per
stage (its function, the file that marks it done, whether every torchrun process runs it,
the files it leaves that the final folder does not keep), which the run reads."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compressor.config import to_dict, write_json
from compressor.errors import CompressorError
from compressor.formats import ReferenceScores, Report
from compressor.pipeline.controller import share_function, strength_controller
from compressor.pipeline.plots import plot_channels, plot_training
from compressor.pipeline.records import BaselineRecord, HeldOut, LatencyRecord, OnnxRecord
from compressor.pipeline.report import build_report, markdown
from compressor.pipeline.state import Run
from compressor.utils import atomic_write_bytes, atomic_write_with, epochs_text


def _baseline(run: Run) -> None:
    """1. Evaluate the input model; count its parameters and MACs."""
    from compressor.analysis import count_macs, count_params, layer_table
    from compressor.checkpoint import save_model

    t0 = run.start("baseline", "baseline: evaluate, count parameters and MACs")
    model = run.loaded.model
    base_layers = layer_table(model, run.size)
    baseline: BaselineRecord = {
        **run.scores(model),
        "params": count_params(model),
        "macs": count_macs(model, run.size),
        "layers": [
            {"name": r.name, "type": r.type, "out_channels": r.out_channels} for r in base_layers
        ],
    }
    model.cpu()
    if run.reference is not None:
        baseline["reference"] = _reference_scores(run)
    save_model(run.loaded, run.work / "baseline.pt")
    write_json(run.work / "baseline.json", baseline)
    run.done("baseline", t0)
    head = " (a new head: no task accuracy yet)" if run.new_head else ""
    run.log(
        f"  baseline{head}: {held_out_text(baseline)}; {baseline['params']} params, "
        f"{baseline['macs']} MACs"
    )
    if "reference" in baseline:
        run.log(f"  dense reference: {held_out_text(baseline['reference'])}")
    warning = untrained_warning(baseline["val_top1"], len(run.bundle.class_names))
    if warning and not run.new_head:
        run.log(f"  warning: {warning}")


def _reference_scores(run: Run) -> ReferenceScores:
    """The dense reference's accuracy on the run's splits, parameters and MACs."""
    from compressor.analysis import count_macs, count_params

    model = run.reference.model
    scores: ReferenceScores = {
        "model": str(run.reference_path),
        **run.scores(model),
        "params": count_params(model),
        "macs": count_macs(model, run.size),
    }
    model.cpu()
    return scores


def untrained_warning(val_top1: float, classes: int) -> str | None:
    """A warning when the input model scores within a tenth of the way from chance to 100%:
    then "stay within --max-drop of the baseline" means nothing."""
    chance = 100.0 / classes
    if val_top1 >= chance + 0.1 * (100.0 - chance):
        return None
    return (
        f"the baseline scores {val_top1:.2f}% on the validation split, near chance "
        f"({chance:.1f}% for {classes} classes): is it trained for this data? --max-drop and "
        "the report's accuracy change mean little for an untrained model (train it first: "
        "compressor train ARCH --weights FILE --data D)"
    )


def held_out_text(scores: Mapping[str, Any]) -> str:
    """``val top-1 91.20% (6000 images), test top-1 90.85% (10000 images)``."""
    parts = [
        f"{split} top-1 {scores[f'{split}_top1']:.2f}% ({scores[f'{split}_images']} images)"
        for split in ("val", "test")
        if scores.get(f"{split}_top1") is not None
    ]
    return ", ".join(parts)


def _regularize(run: Run) -> None:
    """2. Train with the method's regularizer (its strength set and adapted under
    ``--lambda auto``)."""
    import torch

    from compressor.checkpoint import load_model, save_model
    from compressor.distributed import is_main
    from compressor.methods import get_method
    from compressor.training import fit
    from compressor.utils import seed_everything

    config, work = run.config, run.work
    t0 = run.start(
        "regularize", f"regularize: {epochs_text(config.regularize.epochs)} with {config.method}"
    )
    seed_everything(config.regularize.seed)
    current = load_model(work / "baseline.pt")
    _fold(run, current)
    method = get_method(config.method, config.method_options)
    strength, controller = strength_controller(run, method)
    try:
        result = fit(
            current.model,
            run.bundle,
            config.regularize,
            config.data,
            regularizer=method,
            state_path=work / "regularize.resume",
            resume=(work / "regularize.resume").is_file(),
            progress=run.progress,
            log=run.log,
            stop_after_steps=run.stop_after_steps,
            strength=strength,
        )
    finally:
        run.done("regularize", t0)
    current.model.cpu()
    if not is_main():  # under torchrun, rank 0 writes
        return
    current.metadata["method"] = {
        "name": config.method,
        "params": dataclasses.asdict(method.params),
        "strength": method.scale,
    }
    summary = result.to_dict()
    if strength is not None:
        summary["strength"] = {
            **strength.summary(),
            **controller,
            "final_top1": result.history[-1].val_top1 if result.history else None,
            "final_share": share_function(run, method)(current.model, strength.state.frozen),
        }
        s = summary["strength"]
        if strength.state.stopped_after is not None:
            summary["epochs_to_finetune"] = config.regularize.epochs - strength.state.stopped_after
        run.log(
            f"  strength {s['final_strength']:.3g}; val top-1 {s['baseline_top1']:.2f}% -> "
            f"{s['final_top1']:.2f}%"
            + (
                f"; channels to remove hold {100 * s['final_share']:.2f}% of the group-norm mass"
                if s["final_share"] is not None
                else ""
            )
        )
    write_json(work / "regularize.json", summary)
    if method.state_dict():
        state = method.state_dict()
        atomic_write_with(work / "method_state.pt", lambda f: torch.save(state, f))
    save_model(current, work / "regularized.pt")
    (work / "regularize.resume").unlink(missing_ok=True)


def _fold(run: Run, loaded: Any) -> None:
    """timm's weight-standardised convolutions as plain ones (``fold_weight_standardization``):
    before the method's groups are traced, so that their channels can go."""
    from compressor.timm_archs import fold_weight_standardization

    folded = fold_weight_standardization(loaded)
    if folded:
        run.log(
            f"  folded the weight standardisation of {len(folded)} convolutions into their "
            "weights (the same outputs; their channels can now be removed, and training "
            "goes on without the standardisation)"
        )


def _prune(run: Run) -> None:
    """3. Score channels with the method's criterion and remove them."""
    import torch

    from compressor.checkpoint import load_model, save_model
    from compressor.data import sample_batch
    from compressor.methods import get_method
    from compressor.pruning import channel_groups
    from compressor.selection import prune_loaded

    config, work = run.config, run.work
    t0 = run.start("prune", "prune: score channels and remove them")
    current = load_model(work / "regularized.pt")
    _fold(run, current)
    current.preprocess = run.bundle.preprocess
    method = get_method(config.method, config.method_options)
    example = torch.zeros(1, *run.size)
    current.model.eval()
    index = channel_groups(current.model, example)
    if (work / "method_state.pt").is_file():
        method.setup(
            current.model, example_input=example, groups=index, train_size=len(run.bundle.train)
        )
        method.load_state_dict(torch.load(work / "method_state.pt", weights_only=True))
    samples = int(getattr(method.params, "samples", 64))
    calibration = sample_batch(run.bundle, "train", samples, seed=config.regularize.seed)
    t_scores = time.perf_counter()
    scores = method.scores(current.model, index, calibration=calibration, progress=run.progress)
    score_seconds = time.perf_counter() - t_scores
    info = prune_loaded(
        current,
        config.prune,
        input_size=run.size,
        scores=scores,
        comparable=method.comparable_scores,
        index=index,
    )
    info["score_seconds"] = score_seconds
    # what survives the cut before any fine-tuning (the papers' "no retraining needed")
    info["val_top1_after_prune"] = float(run.accuracy(current.model)["top1"])
    current.model.cpu()
    current.metadata["pruning"] = {
        "config": to_dict(config.prune),
        **{k: v for k, v in info.items() if k != "layers"},
    }
    write_json(work / "prune.json", info)
    save_model(current, work / "pruned.pt")
    run.done("prune", t0)
    run.log(
        f"  removed {info['removed_channels']} of {info['prunable_channels']} channels "
        f"(scores in {score_seconds:.1f}s); MACs {info['macs_after'] / info['macs_before']:.3f}x"
    )
    if info["groups_unsafe"]:
        first, why = next(iter(info["groups_unsafe"].items()))
        run.log(
            f"  kept {len(info['groups_unsafe'])} group(s) whole: a trial removal broke the "
            f"model (first: {first}: {why})"
        )
    if info.get("target_miss"):
        run.log(f"  warning: target missed: {info['target_miss']}")


def _finetune(run: Run) -> None:
    """4. Fine-tune the pruned model."""
    from compressor.checkpoint import load_model, save_model
    from compressor.distributed import is_main
    from compressor.training import fit
    from compressor.utils import seed_everything

    config, work = run.config, run.work
    taught = (
        f", distilling from the original model ({config.finetune.distill:g})"
        if config.finetune.distill > 0
        else ""
    )
    # epochs the regularize stage handed over when it ended early (--early-prune)
    regularized = work / "regularize.json"
    moved = 0
    if regularized.is_file():
        moved = int(json.loads(regularized.read_text()).get("epochs_to_finetune", 0))
    finetune = dataclasses.replace(config.finetune, epochs=config.finetune.epochs + moved)
    extra = f" ({config.finetune.epochs} + {moved} from the regularize stage)" if moved else ""
    t0 = run.start("finetune", f"fine-tune: {epochs_text(finetune.epochs)}{extra}{taught}")
    seed_everything(config.finetune.seed)
    current = load_model(work / "pruned.pt")
    # the teacher is the model as the user gave it (before the regularizer)
    teacher = load_model(work / "baseline.pt").model if config.finetune.distill > 0 else None
    try:
        result = fit(
            current.model,
            run.bundle,
            finetune,
            config.data,
            state_path=work / "finetune.resume",
            resume=(work / "finetune.resume").is_file(),
            progress=run.progress,
            log=run.log,
            teacher=teacher,
        )
    finally:
        run.done("finetune", t0)
    current.model.cpu()
    if not is_main():  # under torchrun, rank 0 writes
        return
    write_json(work / "finetune.json", result.to_dict())
    save_model(current, work / "model.pt")
    (work / "finetune.resume").unlink(missing_ok=True)


def _evaluate(run: Run) -> None:
    """5. Evaluate the compressed model."""
    from compressor.analysis import count_macs, count_params

    t0 = run.start("evaluate", "evaluate the compressed model")
    final = run.final()
    metrics = run.scores(final.model)
    final.model.cpu()
    compressed: HeldOut = {
        **metrics,
        "params": count_params(final.model),
        "macs": count_macs(final.model, run.size),
    }
    write_json(run.work / "compressed.json", compressed)
    run.done("evaluate", t0)
    run.log(f"  compressed: {held_out_text(compressed)}")


def _export(run: Run) -> None:
    """6. Export both models (the baseline's ONNX is the latency reference) and verify."""
    from compressor.checkpoint import load_model
    from compressor.data import sample_batch
    from compressor.onnx_export import export_model, model_metadata

    config, work = run.config, run.work
    t0 = run.start("export", "export ONNX and verify against PyTorch")
    final = run.final()
    real = sample_batch(run.bundle, "val", 64)[0]
    result_c = export_model(
        final.model,
        work / "model.onnx",
        input_size=run.size,
        metadata=model_metadata(final, {"method": config.method}),
        config=config.export,
        real_inputs=real,
        log=run.log,
    )
    base_model = load_model(work / "baseline.pt")
    base_model.preprocess = run.bundle.preprocess
    result_b = export_model(
        base_model.model,
        work / "baseline.onnx",
        input_size=run.size,
        metadata=model_metadata(base_model),
        config=config.export,
        log=run.log,
    )
    record: OnnxRecord = {"compressed": result_c.to_dict(), "baseline": result_b.to_dict()}
    write_json(work / "onnx.json", record)
    run.done("export", t0)


def _latency(run: Run) -> None:
    """7. Latency side by side in onnxruntime, and each model's peak memory."""
    from compressor.bench.runner import measure, warnings_for
    from compressor.latency import measure_on

    config, work = run.config, run.work
    t0 = run.start("latency", "latency and memory: baseline vs compressed in onnxruntime")
    onnx_files = [work / "baseline.onnx", work / "model.onnx"]
    device = config.latency_device
    least, most = min(1.0, config.latency_seconds), config.latency_seconds
    if device.profile or device.remote:  # the runner in a child process, or on the host
        lat, _ = measure_on(device, onnx_files, min_runs=20, min_seconds=least, max_seconds=most)
    else:
        lat = measure(
            [str(f) for f in onnx_files],
            threads=device.threads,
            batch=1,
            warmup=5,
            min_runs=20,
            min_seconds=least,
            max_seconds=most,
            precision=0.01,
        )
    record: LatencyRecord = {
        "baseline_ms": lat[0]["p50_ms"],
        "compressed_ms": lat[1]["p50_ms"],
        "speedup": lat[0]["p50_ms"] / lat[1]["p50_ms"],
        "speedup_ci95": lat[1]["speedup_vs_first_ci95"],
        "threads": config.latency_threads,
        "batch": 1,
        "cv": [lat[0]["cv"], lat[1]["cv"]],
        "p50_ci95_ms": [lat[0]["p50_ci95_ms"], lat[1]["p50_ci95_ms"]],
        "runs": [lat[0]["runs"], lat[1]["runs"]],
        "seconds": [lat[0]["seconds"], lat[1]["seconds"]],
        # resident-set growth of a fresh process that loads the file and runs it once
        "memory_mb": None
        if device.remote  # measured where the models run, or not at all
        else [_memory_mb(f, config.latency_threads) for f in onnx_files],
        "file_mb": [f.stat().st_size / 2**20 for f in onnx_files],
        "warnings": (
            noise := [w.replace(str(work), str(run.outdir)) for w in warnings_for(lat, 0.01)]
        ),
    }
    if device.profile:
        record["profile"] = device.profile
    if device.remote:
        record["remote"] = device.remote
    write_json(work / "latency.json", record)
    for line in noise:  # the same warnings `compressor benchmark` gives
        run.log(f"  warning: {line}")
    run.done("latency", t0)


def _memory_mb(path: Path, threads: int) -> float:
    from compressor.bench.runner import RunnerError, isolated_memory

    try:
        return float(isolated_memory(str(path), threads, 1)["peak_growth_mb"])
    except RunnerError as e:
        raise CompressorError(f"memory probe of {path.name}: {e}") from None


def _report(run: Run) -> Report:
    """8. report.json, report.md and the plots."""
    work = run.work
    t0 = run.start("report", "report")
    report = build_report(run)
    history = report["history"]
    plot_channels(report["layers"], work / "channels.png")
    plot_training(
        history["regularize"], history["finetune"], report["strength"], work / "training.png"
    )
    write_json(work / "report.json", report)
    atomic_write_bytes(work / "report.md", markdown(report).encode())
    report["stages"]["report"] = time.perf_counter() - t0
    write_json(work / "report.json", report)
    return report


@dataclass(frozen=True)
class Stage:
    """One stage of ``compress`` and the files it leaves in the work folder."""

    name: str
    function: Callable[[Run], Any]
    # the file that marks it done, so --resume skips it (the report runs every time)
    done: str
    # under torchrun every process runs it (data-parallel training); rank 0 alone the others
    parallel: bool = False
    # what it writes for later stages, which the final folder does not keep
    scratch: tuple[str, ...] = ()
    # the training state an interrupted stage continues from (--resume): training worth
    # keeping the work folder for, with the done file; the final folder does not keep it
    resume: str | None = None


# in order; the last, the report, runs every time and gives compress its return value
TABLE = (
    Stage("baseline", _baseline, "baseline.json", scratch=("baseline.pt",)),
    Stage(
        "regularize",
        _regularize,
        "regularized.pt",
        parallel=True,
        scratch=("regularized.pt", "method_state.pt"),
        resume="regularize.resume",
    ),
    Stage("prune", _prune, "pruned.pt", scratch=("pruned.pt",)),
    Stage("finetune", _finetune, "model.pt", parallel=True, resume="finetune.resume"),
    Stage("evaluate", _evaluate, "compressed.json"),
    Stage("export", _export, "onnx.json"),
    Stage("latency", _latency, "latency.json"),
    Stage("report", _report, "report.json"),
)

STAGES = tuple(stage.name for stage in TABLE)
