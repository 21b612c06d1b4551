"""The steps a command runs, as library functions taking configs (no click here).

Each function loads what it needs, runs one job and returns a JSON-ready dict that the CLI
prints (or ``--json`` emits unchanged).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compressor.checkpoint import check_runs, model_input_size
from compressor.config import (
    CALIB_SAMPLES,
    DataConfig,
    PruneConfig,
    TrainConfig,
    changed_settings,
    to_dict,
    write_json,
)
from compressor.errors import CompressorError, WriteError
from compressor.schema import stamp

if TYPE_CHECKING:
    from compressor import formats
    from compressor.checkpoint import LoadedModel
    from compressor.data import DataBundle
    from compressor.methods import Method
    from compressor.onnx_export import ExportConfig


def _quiet(_msg: str) -> None:
    pass


def load_for_data(
    source: str | Path,
    data: DataConfig,
    *,
    arch: str | None = None,
    trust_pickle: bool = False,
) -> tuple[LoadedModel, DataBundle]:
    """Load a model file and the data converted to its input; check that the classes fit."""
    loaded, bundle = _load_with_data(source, data, arch=arch, trust_pickle=trust_pickle)
    if len(bundle.class_names) != loaded.num_classes:
        raise CompressorError(
            f"the model has {loaded.num_classes} outputs but {bundle.name} has "
            f"{len(bundle.class_names)} classes; `compressor compress` and `compressor train` "
            "start from these weights with a new head"
        )
    return loaded, bundle


def load_start(
    source: str | Path,
    data: DataConfig,
    *,
    arch: str | None = None,
    trust_pickle: bool = False,
    weights: str | None = None,
    seed: int = 0,
) -> tuple[LoadedModel, DataBundle, Any]:
    """The model a job starts from, the data converted to its input, and a ``Start``
    (``weights.Start``) when pretrained weights or a new head were involved, else None.

    ``source`` is a model file, or an architecture name with ``weights`` (a state_dict
    file, ``DEFAULT`` or a torchvision weights name from the local hub cache). A file whose
    classifier does not fit the data's classes gets a new head; a state_dict without a
    classifier (a backbone, with ``arch``) gets one too."""
    from compressor.archs import arch_info
    from compressor.utils import seed_everything

    path = Path(source)
    if weights is not None:
        if path.is_file():
            raise CompressorError(
                "--weights starts an architecture name from pretrained weights; "
                f"{source} is a model file, which has weights of its own"
            )
        if arch is not None:
            raise CompressorError(
                "--arch applies to a model file; with --weights, name the architecture alone"
            )
        arch_info(str(source))  # an unknown name: one clear line
        return _build_for_data(str(source), data, seed, weights)
    if not path.exists() and _is_arch(str(source)):
        raise CompressorError(
            f"{source} is an architecture, not a file: add --weights DEFAULT, a torchvision "
            "weights name or a state_dict file to start it from pretrained weights"
        )
    try:
        loaded, bundle = _load_with_data(path, data, arch=arch, trust_pickle=trust_pickle)
    except CompressorError as e:
        if arch is None or not path.is_file():
            raise
        try:  # a backbone: a state_dict without the classifier, which gets a new head
            loaded, bundle, start = _build_for_data(arch, data, seed, weights=str(path))
        except CompressorError:
            raise e from None
        if start is None or not start.backbone:
            raise e  # not a backbone: the file's own error stands
        return loaded, bundle, start
    start = None
    if len(bundle.class_names) != loaded.num_classes:
        seed_everything(seed)
        start = _new_head(loaded, str(source), bundle.class_names)
    return loaded, bundle, start


def _is_arch(name: str) -> bool:
    from compressor.archs import arch_info

    try:
        arch_info(name)
    except CompressorError:
        return False
    return True


def _new_head(loaded: LoadedModel, source: str, class_names: list[str]) -> Any:
    """Replace ``loaded``'s classifier by a new one with a row per class of the data."""
    from compressor.weights import Start, replace_head

    classes = loaded.num_classes
    replaced = replace_head(loaded.model, len(class_names))
    if not replaced:
        raise CompressorError(
            f"the model has {classes} outputs but the data has {len(class_names)} classes, and "
            f"no classifier layer of {loaded.arch} was found to replace"
        )
    loaded.num_classes, loaded.class_names = len(class_names), list(class_names)
    return Start(source, classes, replaced)


def _load_with_data(
    source: str | Path, data: DataConfig, *, arch: str | None, trust_pickle: bool
) -> tuple[LoadedModel, DataBundle]:
    from compressor.archs import arch_info
    from compressor.checkpoint import load_model
    from compressor.data import load_data

    loaded = load_model(source, arch=arch, trust_pickle=trust_pickle)
    try:
        info = arch_info(loaded.arch)
        default_size, min_size = info.default_input_size[1], info.min_input_size
    except CompressorError:  # a pickled module of an unknown architecture
        default_size, min_size = 224, 1
    bundle = load_data(
        data,
        channels=loaded.in_channels,
        recorded=loaded.preprocess,
        default_size=default_size,
        min_size=min_size,
    )
    check_runs(loaded.model, bundle.preprocess.input_size, loaded.arch)
    return loaded, bundle


def _build_for_data(
    arch: str, data: DataConfig, seed: int, weights: str | None = None
) -> tuple[LoadedModel, DataBundle, Any]:
    from compressor.archs import arch_info, build_model
    from compressor.checkpoint import LoadedModel
    from compressor.data import load_data
    from compressor.utils import seed_everything

    info = arch_info(arch)
    channels = None if info.source == "compressor" else 3
    bundle = load_data(
        data,
        channels=channels,
        default_size=info.default_input_size[1],
        min_size=info.min_input_size,
    )
    seed_everything(seed)
    num_classes = len(bundle.class_names)
    start = None
    if weights is not None:
        from compressor.weights import load_pretrained

        model, start = load_pretrained(arch, weights, num_classes)
    else:
        model = build_model(
            arch, num_classes=num_classes, in_channels=bundle.preprocess.input_size[0]
        )
    check_runs(model, bundle.preprocess.input_size, arch)
    loaded = LoadedModel(
        model,
        arch,
        num_classes,
        "compressor",
        preprocess=bundle.preprocess,
        class_names=bundle.class_names,
        arch_options=_pretrained_options(arch) if weights is not None else {},
    )
    return loaded, bundle, start


def _pretrained_options(arch: str) -> dict[str, Any]:
    from compressor.weights import PRETRAINED_OPTIONS

    return dict(PRETRAINED_OPTIONS.get(arch, {}))


def _method_summary(method: Method | None) -> dict[str, Any] | None:
    import dataclasses

    if method is None:
        return None
    return {"name": method.name, "params": dataclasses.asdict(method.params)}


def resume_path(output: Path) -> Path:
    """Where ``train`` keeps its resumable state for ``output``."""
    return output.with_name(output.name + ".resume")


def train_model(
    source: str,
    *,
    data: DataConfig,
    train: TrainConfig,
    output: Path,
    arch: str | None = None,
    trust_pickle: bool = False,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = _quiet,
    debug: Callable[[str], None] = _quiet,
    stop_after_steps: int | None = None,
    method: Method | None = None,
    weights: str | None = None,
) -> formats.TrainOutput:
    """Train an architecture from scratch (``source`` is a name) or fine-tune a model file.

    ``weights`` starts an architecture from pretrained weights: a state_dict file,
    ``DEFAULT`` or a torchvision weights name (read from the local hub cache); the
    classifier head is replaced when the data has another number of classes.

    ``method`` adds a structured-sparsity regularizer. Writes ``output`` (project format) and
    ``<stem>.train.json``; keeps a resumable state beside ``output`` until training
    completes. Returns the training summary.
    """
    from compressor.data import describe
    from compressor.training import fit, load_train_state

    data = data.for_epochs(train.epochs)
    state_path = resume_path(output)
    extra = {
        "source": source,
        "weights": weights,
        "data": to_dict(data),
        "method": _method_summary(method),
    }
    if resume:
        changed = changed_settings(load_train_state(state_path)["extra"], extra, keys=extra)
        if changed:
            raise CompressorError(
                f"cannot resume {state_path} with different settings ({', '.join(changed)} changed)"
            )
    loaded, bundle, start = _training_start(
        source, data, train, arch=arch, trust_pickle=trust_pickle, weights=weights, log=log
    )
    debug(f"train settings: {to_dict(train)}")
    debug(f"data settings: {to_dict(data)}; preprocessing: {to_dict(bundle.preprocess)}")
    held = " (held out from the training images)" if bundle.val_held_out else ""
    test = f", {len(bundle.test)} test (scored once, at the end)" if bundle.test is not None else ""
    log(
        f"training {loaded.arch} on {bundle.name}: {len(bundle.train)} train / {len(bundle.val)} "
        f"val{held}{test} images, input {'x'.join(map(str, bundle.preprocess.input_size))}"
    )
    try:
        result = fit(
            loaded.model,
            bundle,
            train,
            data,
            regularizer=method,
            state_path=state_path,
            resume=resume,
            progress=progress,
            log=log,
            extra_state=extra,
            stop_after_steps=stop_after_steps,
        )
    except WriteError as e:
        raise _kept(e, state_path) from e
    test_scores = _score_test(loaded.model, bundle, data, train.device, progress)
    loaded.model.cpu()
    summary = stamp(
        "train",
        {
            "arch": loaded.arch,
            "method": _method_summary(method),
            "data": describe(bundle),
            "train_config": to_dict(train),
            "data_config": to_dict(data),
            "pretrained": start.to_dict() if start is not None else None,
            **result.to_dict(),
            "test": test_scores,
        },
    )
    try:
        _save_trained(loaded, output, summary, train.epochs, state_path)
    except WriteError as e:
        raise _kept(e, state_path) from e
    return stamp("train", {"output": str(output), **summary})


def _kept(error: WriteError, state_path: Path) -> WriteError:
    """``error`` with what a failed write kept: the last finished epoch's resumable state."""
    if not state_path.is_file():
        return error
    return WriteError(f"{error} with --resume ({state_path} keeps the last finished epoch)")


def _training_start(
    source: str,
    data: DataConfig,
    train: TrainConfig,
    *,
    arch: str | None,
    trust_pickle: bool,
    weights: str | None,
    log: Callable[[str], None],
) -> tuple[LoadedModel, DataBundle, Any]:
    """(model, data, pretrained start or None): a model file to fine-tune (a new head when
    its classes differ from the data's), or an architecture built for the data, from
    scratch or from ``weights``."""
    from compressor.archs import arch_info

    is_file = Path(source).is_file()
    if not is_file and arch is not None:
        raise CompressorError(
            "--arch applies to a model file; to train an architecture, name it alone"
        )
    if not is_file and weights is None:
        try:
            arch_info(source)
        except CompressorError as e:
            raise CompressorError(
                f"{source!r} is neither a model file nor an architecture: {e}"
            ) from e
        loaded, bundle, start = _build_for_data(source, data, train.seed, None)
        return loaded, bundle, start
    if is_file:
        from compressor.utils import seed_everything

        seed_everything(train.seed)  # as before a file could get a new head here
    loaded, bundle, start = load_start(
        source, data, arch=arch, trust_pickle=trust_pickle, weights=weights, seed=train.seed
    )
    if is_file:
        from compressor.checkpoint import check_saveable

        check_saveable(loaded)
        if loaded.class_names is None:
            loaded.class_names = bundle.class_names
        loaded.preprocess = bundle.preprocess
    for line in start_lines(start, len(bundle.class_names)):
        log(line)
    return loaded, bundle, start


def start_lines(start: Any, classes: int) -> list[str]:
    """What a run says about its pretrained start and new head (nothing without one)."""
    if start is None:
        return []
    lines = [f"started from {start.source}"]
    if start.backbone:
        lines.append(
            f"the weights are a backbone (no classifier): a new head "
            f"({', '.join(start.head_replaced)}) with {classes} outputs"
        )
    elif start.head_replaced:
        lines.append(
            f"replaced the classifier head ({', '.join(start.head_replaced)}): "
            f"{start.classes_in_weights} classes in the weights, {classes} in the data"
        )
    return lines


def _save_trained(
    loaded: LoadedModel, output: Path, summary: dict[str, Any], epochs: int, state_path: Path
) -> None:
    """The trained model with its training record, and ``<stem>.train.json``; the
    resumable state goes (rank 0 writes under torchrun)."""
    from compressor import distributed
    from compressor.checkpoint import save_model

    history, test_scores = summary["history"], summary["test"]
    final = history[-1] if history else None
    loaded.metadata["train"] = {
        "method": summary["method"],
        "data": summary["data"],
        "epochs": epochs,
        "val_top1": final["val_top1"] if final else None,
        "val_top5": final["val_top5"] if final else None,
        "test_top1": test_scores["top1"] if test_scores else None,
        "test_top5": test_scores["top5"] if test_scores else None,
    }
    if distributed.is_main():  # under torchrun, rank 0 writes
        save_model(loaded, output)
        write_json(output.with_name(output.stem + ".train.json"), summary)
        if state_path.exists():
            state_path.unlink()
    distributed.barrier()


def _eval_splits(bundle: Any, split: str | None) -> tuple[str, ...]:
    """``split`` alone, or every held-out split (``val`` and, where there is one, ``test``)."""
    if split is None:
        return tuple(bundle.held_out_splits)
    bundle.split(split)  # raises for a split the data does not have
    return (split,)


def _eval_result(
    path: Path, arch: str, bundle: Any, results: dict[str, dict[str, Any]], t0: float
) -> formats.EvalOutput:
    """One shape for ``eval``'s answer: each split's metrics under its own name."""
    return stamp(
        "eval",
        {
            "model": str(path),
            "arch": arch,
            "data": bundle.name,
            "input_size": "x".join(map(str, bundle.preprocess.input_size)),
            "val_held_out_from_train": bundle.val_held_out,
            "splits": list(results),
            **results,
            "seconds": time.perf_counter() - t0,
        },
    )


def _score_split(
    model: Any, bundle: Any, split: str, data: DataConfig, device: str, progress: bool
) -> dict[str, Any]:
    """Top-1/top-5/loss of a PyTorch model on one split of ``bundle``."""
    from compressor.data import default_workers
    from compressor.evaluation import evaluate
    from compressor.utils import resolve_device

    dev = resolve_device(device)
    return evaluate(
        model.to(dev),
        bundle.split(split),
        bundle.preprocess,
        device=dev,
        batch_size=data.eval_batch_size,
        workers=default_workers(bundle) if data.workers is None else data.workers,
        progress=progress,
    )


def _score_test(
    model: Any, bundle: Any, data: DataConfig, device: str, progress: bool
) -> dict[str, Any] | None:
    """The test split's figures, scored once after training (None without one); training
    never reads it."""
    if bundle.test is None:
        return None
    return _score_split(model, bundle, "test", data, device, progress)


def evaluate_model(
    path: Path,
    *,
    data: DataConfig,
    device: str = "auto",
    split: str | None = None,
    arch: str | None = None,
    trust_pickle: bool = False,
    progress: bool = True,
) -> formats.EvalOutput:
    """Accuracy of a model file on ``data``'s ``split``, or (None) on each held-out split:
    ``{"val": {...}, "test": {...}, "splits": [...], ...}``."""
    from compressor.utils import resolve_device

    resolve_device(device)  # a bad --device is refused before the data is read
    loaded, bundle = load_for_data(path, data, arch=arch, trust_pickle=trust_pickle)
    t0 = time.perf_counter()
    results = {
        name: _score_split(loaded.model, bundle, name, data, device, progress)
        for name in _eval_splits(bundle, split)
    }
    return _eval_result(path, loaded.arch, bundle, results, t0)


def evaluate_onnx_file(
    path: Path,
    *,
    data: DataConfig,
    split: str | None = None,
    progress: bool = True,
    allow_nonfinite: bool = False,
) -> formats.EvalOutput:
    """Accuracy of an exported ONNX file on ``data``'s ``split`` (None: each held-out
    split), run by onnxruntime (CPU), with the preprocessing its metadata records
    (``--input-size``/``--mean``/``--std`` override it): the accuracy of the file that
    ships."""
    from compressor.bench.runner import RunnerError, make_session
    from compressor.config import Preprocess
    from compressor.data import load_data
    from compressor.evaluation import evaluate_onnx
    from compressor.onnx_export import check_finite_onnx, check_input_size, onnx_metadata

    if not path.is_file():
        raise CompressorError(f"model file {str(path)!r} not found")
    if not allow_nonfinite:
        check_finite_onnx(path)
    try:
        meta = onnx_metadata(path)
        session = make_session(str(path), threads=os.cpu_count() or 1)
    except RunnerError as e:
        raise CompressorError(str(e)) from e
    except Exception as e:  # onnx's parser raises DecodeError and friends
        raise CompressorError(f"{path} is not a valid ONNX model: {type(e).__name__}") from e
    try:
        recorded = Preprocess(
            tuple(json.loads(meta["input_shape"])),
            tuple(json.loads(meta["mean"])),
            tuple(json.loads(meta["std"])),
            # files exported before these were recorded: the resizing they were made with
            interpolation=meta.get("interpolation", "bilinear"),
            crop_pct=float(json.loads(meta.get("crop_pct", "0.875"))),
        )
    except (KeyError, ValueError, TypeError):
        recorded = None
    if recorded is None and (data.input_size is None or data.mean is None):
        raise CompressorError(
            f"{path} records no preprocessing (it was not written by compressor export); "
            "give --input-size, --mean and --std"
        )
    shape = session.get_inputs()[0].shape
    channels = recorded.input_size[0] if recorded else int(shape[1])
    bundle = load_data(data, channels=channels, recorded=recorded)
    check_input_size(path, session, bundle.preprocess.input_size)
    t0 = time.perf_counter()
    results = {
        name: evaluate_onnx(
            session,
            bundle,
            name,
            batch_size=data.eval_batch_size,
            source=str(path),
            progress=progress,
        )
        for name in _eval_splits(bundle, split)
    }
    out = _eval_result(path, meta.get("arch", "onnx"), bundle, results, t0)
    return {**out, "runtime": "onnxruntime-cpu"}


def inspect_model(
    path: Path,
    *,
    input_size: tuple[int, ...] | None = None,
    arch: str | None = None,
    trust_pickle: bool = False,
) -> formats.InspectOutput:
    """Parameters, MACs and per-layer channels of a model file."""
    from compressor.analysis import summarize
    from compressor.checkpoint import load_model

    loaded = load_model(path, arch=arch, trust_pickle=trust_pickle)
    size = model_input_size(loaded, input_size)
    try:
        summary = summarize(loaded.model, size)
    except RuntimeError as e:
        raise CompressorError(
            f"{loaded.arch} cannot run at input {'x'.join(map(str, size))}: {str(e).splitlines()[0]}"
        ) from e
    pruned = bool(loaded.metadata.get("pruning"))
    if pruned:
        from torch import nn

        from compressor.checkpoint import reference_model

        reference = reference_model(loaded)
        original = {
            n: int(getattr(m, "out_channels", getattr(m, "out_features", 0)))
            for n, m in reference.named_modules()
            if isinstance(m, nn.Conv2d | nn.Linear)
        }
        for row in summary["layers"]:
            row["original_out_channels"] = original.get(row["name"])
    return stamp(
        "inspect",
        {
            "model": str(path),
            "arch": loaded.arch,
            "pruned": pruned,
            "source_format": loaded.source_format,
            "num_classes": loaded.num_classes,
            "preprocess": to_dict(loaded.preprocess) if loaded.preprocess else None,
            **summary,
        },
    )


def prune_model_file(
    path: Path,
    config: PruneConfig,
    *,
    output: Path,
    input_size: tuple[int, ...] | None = None,
    arch: str | None = None,
    trust_pickle: bool = False,
) -> formats.PruneOutput:
    """Magnitude-prune a model file (no training) and save it in the project format."""
    from compressor.checkpoint import check_saveable, load_model, save_model
    from compressor.selection import prune_loaded

    loaded = load_model(path, arch=arch, trust_pickle=trust_pickle)
    check_saveable(loaded)
    size = model_input_size(loaded, input_size)
    result = prune_loaded(loaded, config, input_size=size)
    loaded.metadata["pruning"] = {
        "config": to_dict(config),
        **{k: v for k, v in result.items() if k != "layers"},
    }
    save_model(loaded, output)
    return stamp(
        "prune",
        {
            "model": str(path),
            "output": str(output),
            "arch": loaded.arch,
            "config": to_dict(config),
            **result,
        },
    )


def export_model_file(
    path: Path,
    *,
    output: Path,
    config: ExportConfig,
    data: DataConfig | None = None,
    int8: bool = False,
    calib_data: DataConfig | None = None,
    calib_samples: int = CALIB_SAMPLES,
    input_size: tuple[int, ...] | None = None,
    arch: str | None = None,
    trust_pickle: bool = False,
    log: Callable[[str], None] = _quiet,
) -> formats.ExportOutput:
    """Export a model file to ONNX, verify it, and optionally add a static INT8 version.

    ``data`` supplies real images for the parity check (its validation split). With
    ``int8``, ``calib_data``'s training split calibrates and its validation split measures
    accuracy before and after; the INT8 file is written beside ``output`` as
    ``<stem>.int8.onnx``. Returns the export report.
    """
    import dataclasses

    from compressor.checkpoint import load_model
    from compressor.data import sample_batch
    from compressor.onnx_export import export_model, model_metadata

    if int8 and calib_data is None:
        raise CompressorError("--int8 needs --calib-data")
    real = None
    if data is not None:
        data = dataclasses.replace(data, input_size=input_size or data.input_size)
        loaded, bundle = load_for_data(path, data, arch=arch, trust_pickle=trust_pickle)
        real = sample_batch(bundle, "val", 64)[0]
        loaded.preprocess = bundle.preprocess
    else:
        loaded = load_model(path, arch=arch, trust_pickle=trust_pickle)
    size = model_input_size(loaded, input_size)
    calib_bundle = None
    if int8:  # load and check the calibration data before writing anything
        assert calib_data is not None
        calib_data = dataclasses.replace(calib_data, input_size=size)
        _, calib_bundle = load_for_data(path, calib_data, arch=arch, trust_pickle=trust_pickle)
    if loaded.preprocess is None:
        log(
            "the model records no preprocessing; metadata will lack mean/std (pass --data to record them)"
        )
    result = export_model(
        loaded.model,
        output,
        input_size=size,
        metadata=model_metadata(loaded),
        config=config,
        real_inputs=real,
        log=log,
    )
    report: dict[str, Any] = {
        "model": str(path),
        "arch": loaded.arch,
        "input_size": list(size),
        **result.to_dict(),
    }
    if calib_bundle is not None:
        report["int8"] = _int8(output, calib_bundle, calib_samples)
    return stamp("export", report)


def _int8(output: Path, calib_bundle: Any, calib_samples: int) -> dict[str, Any]:
    """``<stem>.int8.onnx`` beside ``output``, calibrated on training images, with its
    top-1 and latency against the float file (both files, or neither, are left)."""
    from compressor.bench.runner import measure
    from compressor.data import sample_batch
    from compressor.onnx_export import quantize_int8

    int8_path = output.with_name(output.stem + ".int8.onnx")
    try:
        calib_x, _ = sample_batch(calib_bundle, "train", calib_samples, seed=1)
        q = quantize_int8(output, int8_path, calib_x.numpy())
        # the test split where there is one: these are reported figures, not steering
        split = calib_bundle.held_out_splits[-1]
        fp32_acc = _onnx_top1(output, calib_bundle, split)
        int8_acc = _onnx_top1(int8_path, calib_bundle, split)
        lat = measure(
            [str(output), str(int8_path)],
            threads=1,
            batch=1,
            warmup=5,
            min_runs=50,
            min_seconds=1.0,
            max_seconds=5.0,
        )
    except BaseException:
        output.unlink(missing_ok=True)  # both files or neither
        int8_path.unlink(missing_ok=True)
        raise
    return {
        **q,
        "calibration_samples": len(calib_x),
        "eval_split": split,
        "eval_images": len(calib_bundle.split(split)),
        "accuracy_fp32": fp32_acc,
        "accuracy_int8": int8_acc,
        "latency_fp32_ms": lat[0]["p50_ms"],
        "latency_int8_ms": lat[1]["p50_ms"],
        "speedup": lat[0]["p50_ms"] / lat[1]["p50_ms"],
        "speedup_ci95": lat[1]["speedup_vs_first_ci95"],
        "latency_threads": 1,
    }


def _onnx_top1(path: Path, bundle: Any, split: str) -> float:
    """Top-1 (%) of the ONNX file at ``path`` on one split of ``bundle``."""
    from compressor.bench.runner import make_session
    from compressor.evaluation import evaluate_onnx

    session = make_session(str(path), threads=os.cpu_count() or 1)
    return float(evaluate_onnx(session, bundle, split, source=str(path))["top1"])


def latency_table_file(
    path: Path,
    device: Any,
    *,
    input_size: tuple[int, ...] | None = None,
    round_to: int = 8,
    refresh: bool = False,
    arch: str | None = None,
    trust_pickle: bool = False,
    log: Callable[[str], None] = _quiet,
) -> formats.LatencyTableOutput:
    """Measure (or read from the cache) the per-layer latency table of a model file;
    ``log`` hears what it is doing (building a table takes a minute or more)."""
    import torch

    from compressor.checkpoint import load_model, model_input_size
    from compressor.latency import latency_table
    from compressor.pruning import channel_groups

    loaded = load_model(path, arch=arch, trust_pickle=trust_pickle)
    size = model_input_size(loaded, input_size)
    model = loaded.model.eval()
    index = channel_groups(model, torch.zeros(1, *size))
    table, file, cached = latency_table(
        model, index, size, device, round_to, refresh=refresh, log=log
    )
    before = table.per_layer()
    return stamp(
        "latency-table",
        {
            "model": str(path),
            "arch": loaded.arch,
            "input_size": list(size),
            "file": str(file),
            "cached": cached,
            "key": table.key,
            "seconds": table.seconds,
            "device": table.device,
            "dense_ms": table.dense_ms,
            "rest_ms": table.rest_ms,
            "layers": len(table.layers),
            "probes": sum(len(g["out"]) * len(g["in"]) for g in table.grids.values()),
            "checks": table.checks,
            "slowest": sorted(
                ({"name": n, "ms": ms} for n, ms in before.items()), key=lambda r: -r["ms"]
            ),
        },
    )
