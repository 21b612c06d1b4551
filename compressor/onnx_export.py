"""ONNX export, checks, parity against PyTorch, graph simplification and INT8 quantization.

``export_model`` writes an ONNX file with a dynamic batch axis, a named input (``input``)
and output (``logits``), and the model's preprocessing in its metadata; it runs
``onnx.checker``, simplifies the graph with onnxslim when that removes nodes, and compares
onnxruntime's outputs with PyTorch's on random and real inputs. The TorchScript exporter is
tried first; an operator it rejects (for example adaptive pooling whose output does not
divide its input) falls back to the dynamo exporter, and the report says which was used.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compressor.errors import CompressorError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from compressor.formats import ExportResultFields

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


@dataclass(frozen=True)
class ExportConfig:
    """How to export. ``tolerance`` bounds the max abs difference relative to the output scale."""

    opset: int = 17
    simplify: bool = True
    verify: bool = True
    tolerance: float = 1e-4

    def __post_init__(self) -> None:
        if not 13 <= self.opset <= 23:
            raise CompressorError(f"--opset must be between 13 and 23, got {self.opset}")
        if self.tolerance <= 0:
            raise CompressorError(f"--tolerance must be positive, got {self.tolerance}")


@dataclass
class Parity:
    """onnxruntime vs PyTorch on one input set."""

    inputs: str  # "random" or "real"
    samples: int
    max_abs_diff: float
    rel_diff: float  # max abs difference / max |PyTorch output|
    top1_agreement: float  # percent of samples whose argmax agrees

    def ok(self, tolerance: float) -> bool:
        return self.rel_diff <= tolerance


@dataclass
class ExportResult:
    path: str
    exporter: str  # "torchscript" or "dynamo"
    opset: int
    nodes: int
    nodes_before_simplify: int | None
    simplified: bool
    size_bytes: int
    parity: list[Parity] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> ExportResultFields:
        from dataclasses import asdict

        return {
            "path": self.path,
            "exporter": self.exporter,
            "opset": self.opset,
            "nodes": self.nodes,
            "nodes_before_simplify": self.nodes_before_simplify,
            "simplified": self.simplified,
            "size_bytes": self.size_bytes,
            "parity": [asdict(p) for p in self.parity],
            "notes": list(self.notes),
        }


@contextlib.contextmanager
def _silenced_fds() -> Iterator[None]:
    """Send file descriptors 1 and 2 to /dev/null for the duration."""
    import sys

    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        try:  # C/C++ output still sitting in stdio buffers must go to /dev/null too
            import ctypes

            ctypes.CDLL(None).fflush(None)
        except (OSError, AttributeError):
            pass
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def torchscript_export(model: nn.Module, example: torch.Tensor, path: str, opset: int) -> None:
    import io
    import warnings

    import torch

    # On failure the exporter prints the whole partial graph (from C++, at the file
    # descriptor level); keep it out of the user's way.
    quiet = io.StringIO()
    with (
        warnings.catch_warnings(),
        _silenced_fds(),
        contextlib.redirect_stdout(quiet),
        contextlib.redirect_stderr(quiet),
    ):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            path,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )


def dynamo_export(model: nn.Module, example: torch.Tensor, path: str, opset: int) -> None:
    import io
    import warnings

    import torch

    batch = torch.export.Dim("batch", min=1, max=1024)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            opset_version=max(opset, 18),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch},),
        )
        if program is None:
            raise RuntimeError("the dynamo exporter returned no program")
        program.save(path)


def _set_metadata(model_proto: Any, metadata: dict[str, Any]) -> None:
    del model_proto.metadata_props[:]
    for key, value in metadata.items():
        if value is None:
            continue
        entry = model_proto.metadata_props.add()
        entry.key = key
        entry.value = value if isinstance(value, str) else json.dumps(value)


def onnx_metadata(path: str | Path) -> dict[str, str]:
    """The metadata_props of an ONNX file as a dict of strings."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def check_finite_onnx(path: str | Path) -> None:
    """Refuse an ONNX file whose float weights (initializers, external data included) hold
    NaN or infinite values: one flipped bit gave loss nan and 11.5% top-1 with exit 0."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    try:
        proto = onnx.load(str(path), load_external_data=True)
    except Exception as e:  # onnx's parser raises DecodeError and friends
        raise CompressorError(f"{path} is not a valid ONNX model: {type(e).__name__}") from e
    bad = []
    for init in proto.graph.initializer:
        array = numpy_helper.to_array(init, base_dir=str(Path(path).parent))
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            bad.append(init.name)
    if bad:
        raise CompressorError(
            f"{path}: {len(bad)} weight {'tensors hold' if len(bad) > 1 else 'tensor holds'} NaN "
            f"or infinite values (first: {bad[0]}); the file is damaged or the model diverged: "
            "export it again (--allow-nonfinite runs it anyway)"
        )


def check_input_size(path: str | Path, session: Any, size: tuple[int, ...]) -> None:
    """Refuse an input size (C, H, W) that the file's fixed dimensions disagree with."""
    dims = list(session.get_inputs()[0].shape)[1:]
    if len(dims) != len(size) or any(
        isinstance(d, int) and d > 0 and d != s for d, s in zip(dims, size, strict=False)
    ):
        given = "x".join(map(str, size))
        raise CompressorError(
            f"{path} takes input {['N', *dims]}, not {given} (--input-size or the recorded "
            "preprocessing): give the size it was exported at"
        )


def run_onnx(path_or_session: Any, x: np.ndarray) -> np.ndarray:
    """Run an ONNX classifier (a path or an open session) on a float32 batch (CPU)."""
    from compressor.bench.runner import make_session as session

    sess = (
        session(str(path_or_session), threads=os.cpu_count() or 1)
        if isinstance(path_or_session, str | Path)
        else path_or_session
    )
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def parity(model: nn.Module, path: str | Path, x: torch.Tensor, inputs: str) -> Parity:
    """Compare onnxruntime and PyTorch on ``x``."""
    import numpy as np
    import torch

    from compressor.outputs import split_outputs

    model.eval()
    with torch.no_grad():
        ref = split_outputs(model(x))[0].float().numpy()
    out = run_onnx(path, x.numpy().astype(np.float32))
    diff = float(np.abs(out - ref).max())
    scale = max(float(np.abs(ref).max()), 1e-12)
    agree = float((out.argmax(1) == ref.argmax(1)).mean() * 100)
    return Parity(inputs, len(x), diff, diff / scale, agree)


def flush_subnormal_weights(model: nn.Module) -> int:
    """Zero the float parameters and buffers whose magnitude is below the smallest normal
    float; sparsity training leaves many, and CPUs compute with them very slowly. Returns
    how many were zeroed."""
    import torch

    count = 0
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if t.is_floating_point():
                tiny = torch.finfo(t.dtype).tiny
                mask = (t != 0) & (t.abs() < tiny)
                n = int(mask.sum())
                if n:
                    t[mask] = 0
                    count += n
    return count


def export_model(
    model: nn.Module,
    path: Path,
    *,
    input_size: tuple[int, int, int],
    metadata: dict[str, Any],
    config: ExportConfig,
    real_inputs: torch.Tensor | None = None,
    log: Any = None,
) -> ExportResult:
    """Export ``model`` to ``path`` (atomically) and check it.

    Raises ``CompressorError`` if no exporter can handle the model, if ``onnx.checker``
    rejects the result, or (with ``config.verify``) if onnxruntime's outputs differ from
    PyTorch's by more than ``config.tolerance`` of the output scale.
    """
    import onnx
    import torch

    from compressor.utils import atomic_path, scratch_dir

    say = log or (lambda _m: None)
    model = model.eval().cpu()
    flushed = flush_subnormal_weights(model)
    if flushed:
        say(f"set {flushed} subnormal weights to zero (they slow CPU inference and change nothing)")
    example = torch.randn(2, *input_size, generator=torch.Generator().manual_seed(0))
    notes: list[str] = []
    with scratch_dir(path) as tmp:  # beside the output: a killed export leaves nothing elsewhere
        raw = os.path.join(tmp, "raw.onnx")
        exporter = _export_raw(model, example, raw, config.opset, notes, say)
        proto = onnx.load(raw)
        opset = next(
            (o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), config.opset
        )
        nodes_before = len(proto.graph.node)
        large = _weight_bytes(proto) > EXTERNAL_DATA_BYTES
        proto, simplified = _simplify(proto, config, large, notes, say)
        _set_metadata(proto, metadata)
        try:
            with atomic_path(path) as tmp_path:
                if large:  # a protobuf cannot exceed 2 GB: the weights go to OUTPUT.data
                    data_name = path.name + ".data"
                    (path.parent / data_name).unlink(missing_ok=True)
                    onnx.save(
                        proto,
                        str(tmp_path),
                        save_as_external_data=True,
                        all_tensors_to_one_file=True,
                        location=data_name,
                        size_threshold=1024,
                    )
                    notes.append(f"weights over 2 GB: written to {data_name} beside the model")
                    say(notes[-1])
                else:
                    onnx.save(proto, str(tmp_path))
                nodes = len(proto.graph.node)
                # the file is written: drop the in-memory graph (as large as the weights)
                # before onnxruntime loads another copy to check it
                del proto
                gc.collect()
                try:  # from the file, which also works for external data
                    onnx.checker.check_model(str(tmp_path))
                except onnx.checker.ValidationError as e:
                    raise CompressorError(
                        f"the exported ONNX model fails onnx.checker: {str(e).splitlines()[0]}"
                    ) from e
                result = ExportResult(
                    str(path),
                    exporter,
                    int(opset),
                    nodes,
                    nodes_before if simplified else None,
                    simplified,
                    os.path.getsize(tmp_path)
                    + (os.path.getsize(path.parent / (path.name + ".data")) if large else 0),
                    notes=notes,
                )
                _check_parity(model, tmp_path, input_size, real_inputs, result, config)
        except BaseException:
            if large:  # leave no half-written output behind
                (path.parent / (path.name + ".data")).unlink(missing_ok=True)
            raise
    return result


def _export_raw(
    model: nn.Module,
    example: torch.Tensor,
    raw: str,
    opset: int,
    notes: list[str],
    say: Callable[[str], None],
) -> str:
    """Export with the TorchScript exporter, else the dynamo one; returns which."""
    try:
        torchscript_export(model, example, raw, opset)
        return "torchscript"
    except Exception as first:  # the TorchScript exporter rejects some operators
        reason = str(first).splitlines()[0][:200]
        try:
            dynamo_export(model, example, raw, opset)
        except Exception as second:
            raise CompressorError(
                f"ONNX export failed with both exporters: torchscript: {reason}; "
                f"dynamo: {str(second).splitlines()[0][:200]}"
            ) from second
        notes.append(f"TorchScript exporter failed ({reason}); used the dynamo exporter")
        say(notes[-1])
        return "dynamo"


def _simplify(
    proto: Any, config: ExportConfig, large: bool, notes: list[str], say: Callable[[str], None]
) -> tuple[Any, bool]:
    """(graph, simplified): onnxslim's graph where it removes nodes and the weights are
    small enough; simplification is an optimisation, never a requirement."""
    nodes_before = len(proto.graph.node)
    if config.simplify and large:
        # onnxslim holds several copies of the weights (vit_h_14 pruned to 2.0 GB now
        # exports in 9.7 GiB without it, benchmarks/results/large_models.md);
        # onnxruntime folds and fuses the graph itself when it loads the file
        notes.append("graph not simplified: weights over 1.9 GB (onnxslim would copy them)")
        say(notes[-1])
        return proto, False
    if not config.simplify:
        return proto, False
    try:
        import onnxslim

        slim = onnxslim.slim(proto)
    except Exception as e:
        notes.append(
            f"onnxslim failed ({str(e).splitlines()[0][:120]}); kept the unsimplified graph"
        )
        return proto, False
    if slim is None or len(slim.graph.node) >= nodes_before:
        return proto, False  # one copy of the graph at a time from here on
    notes.append(f"onnxslim removed {nodes_before - len(slim.graph.node)} of {nodes_before} nodes")
    say(notes[-1])
    return slim, True


def _check_parity(
    model: nn.Module,
    path: Path,
    input_size: tuple[int, int, int],
    real_inputs: torch.Tensor | None,
    result: ExportResult,
    config: ExportConfig,
) -> None:
    """onnxruntime against PyTorch on seeded random inputs (and real ones when given);
    with ``config.verify`` a difference over the tolerance is an error."""
    import torch

    checks = [("random", torch.randn(8, *input_size, generator=torch.Generator().manual_seed(1)))]
    if real_inputs is not None:
        checks.append(("real", real_inputs))
    for name, x in checks:
        result.parity.append(parity(model, path, x, name))
    if config.verify:
        bad = [p for p in result.parity if not p.ok(config.tolerance)]
        if bad:
            p = bad[0]
            own, onnx_err = float64_errors(model, path, dict(checks)[p.inputs])
            extra = ""
            if own is not None and onnx_err is not None and onnx_err <= 2 * own:
                # onnxruntime is as close to the exact outputs as PyTorch's own float32
                # run: the model amplifies round-off; the check still holds the file back
                extra = (
                    f"; PyTorch's own float32 outputs differ from float64 by {own:.3g} and "
                    f"onnxruntime's by {onnx_err:.3g}: the model amplifies round-off (huge "
                    "activations, as with untrained BatchNorm statistics), not an export fault"
                )
            elif own is not None:
                extra = f"; PyTorch's own float32 outputs differ from float64 by {own:.3g}"
            raise CompressorError(
                f"onnxruntime differs from PyTorch on {p.inputs} inputs: max abs diff "
                f"{p.max_abs_diff:.3g} ({p.rel_diff:.3g} of the output scale, tolerance "
                f"{config.tolerance}{extra}); pass --no-verify to keep the file anyway"
            )


def float64_errors(
    model: nn.Module, path: Path, x: torch.Tensor
) -> tuple[float | None, float | None]:
    """(PyTorch float32, onnxruntime) max abs difference from the model's float64 outputs
    on ``x``, relative to their scale; (None, None) when the model has no float64 run."""
    import copy

    import numpy as np
    import torch

    from compressor.outputs import split_outputs

    try:
        exact_model = copy.deepcopy(model).double().eval()
        with torch.no_grad():
            exact = split_outputs(exact_model(x.double()))[0].numpy()
    except Exception:  # an operator without a float64 kernel
        return None, None
    del exact_model
    with torch.no_grad():
        ref = split_outputs(model.eval()(x))[0].double().numpy()
    out = run_onnx(path, x.numpy().astype(np.float32)).astype(np.float64)
    scale = max(float(np.abs(exact).max()), 1e-12)
    return float(np.abs(ref - exact).max()) / scale, float(np.abs(out - exact).max()) / scale


# Weights above this are written as external data (protobuf's limit is 2 GiB for the whole
# file; the graph and metadata need some room).
EXTERNAL_DATA_BYTES = 1_900_000_000


def _weight_bytes(proto: Any) -> int:
    return sum(
        len(t.raw_data) or 4 * len(t.float_data) or 8 * len(t.int64_data)
        for t in proto.graph.initializer
    )


def model_metadata(loaded: Any, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The metadata written into exported ONNX files."""
    from compressor.version import __version__

    pre = loaded.preprocess
    meta: dict[str, Any] = {
        "producer": f"compressor {__version__}",
        "arch": loaded.arch,
        "input_shape": list(pre.input_size) if pre else None,
        "mean": list(pre.mean) if pre else None,
        "std": list(pre.std) if pre else None,
        "interpolation": pre.interpolation if pre else None,
        "crop_pct": pre.crop_pct if pre else None,
        "class_names": list(loaded.class_names) if loaded.class_names else None,
        "num_classes": loaded.num_classes,
    }
    pruning = loaded.metadata.get("pruning") if loaded.metadata else None
    if pruning:
        meta["compression"] = {
            k: pruning.get(k)
            for k in ("params_before", "params_after", "macs_before", "macs_after")
            if k in pruning
        }
    if loaded.metadata and loaded.metadata.get("method"):
        meta["method"] = loaded.metadata["method"]
    meta.update(extra or {})
    return meta


# --------------------------------------------------------------------------- INT8


def quantize_int8(fp32_path: Path, out_path: Path, calibration: np.ndarray) -> dict[str, Any]:
    """Static INT8 quantization (QDQ, per-channel weights, MinMax calibration on
    ``calibration``, a float32 batch already preprocessed). Returns sizes."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from compressor.utils import atomic_path, scratch_dir

    class Reader(CalibrationDataReader):
        def __init__(self, data: np.ndarray, batch: int = 32) -> None:
            self.batches = iter([data[i : i + batch] for i in range(0, len(data), batch)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            b = next(self.batches, None)
            return None if b is None else {INPUT_NAME: b}

    with scratch_dir(out_path) as tmp:
        prepped = os.path.join(tmp, "prepped.onnx")
        try:
            quant_pre_process(str(fp32_path), prepped, skip_symbolic_shape=True)
        except Exception:  # pre-processing is an optimisation; quantize the original
            prepped = str(fp32_path)
        with atomic_path(out_path) as tmp_out:
            quantize_static(
                prepped,
                str(tmp_out),
                Reader(calibration),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
            )
            import onnx

            proto = onnx.load(str(tmp_out))
            src = onnx.load(str(fp32_path), load_external_data=False)
            _set_metadata(
                proto,
                {p.key: p.value for p in src.metadata_props}
                | {"quantization": "int8 static QDQ per-channel"},
            )
            onnx.save(proto, str(tmp_out))
    return {
        "path": str(out_path),
        "size_bytes": out_path.stat().st_size,
        "fp32_size_bytes": fp32_path.stat().st_size,
    }
