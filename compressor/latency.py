"""A per-layer latency table measured on the target device, and the predictor built on it.

Probing is by *layer alone*: every convolution and linear layer whose channels a plan can
change is written as a one-node ONNX model (its BatchNorm and activation are fused into it
by onnxruntime in the real model) at its input's spatial size, at a grid of widths: each
prunable dimension at ``FRACTIONS`` of its channels, rounded up to ``--round-to``. Layers
with the same shape share their probes. All probes, the dense model and two check models
run interleaved by the ``compressor benchmark`` runner (the runner and its statistics,
locally, with an edge profile or over SSH), so the table is measured the way models are
(the whole models in one call, by the runner's rule shortened to 1-5 s each; the probes
in another, ``PROBE_RUNS`` runs each).

A plan's latency is then ``rest + scale * sum over layers of T(out, in)``, ``T``
interpolated bilinearly between the grid's widths (a convolution's work is bilinear in its
input and output channels); ``rest`` (pooling, additions, the call) and ``scale`` (what a
layer alone pays that it does not pay inside the model) are fitted to the measured dense
model and two uniformly pruned ones (``calibrate``). Two more models, pruned unevenly by a
global ranking, check the prediction; their error is stored with the table. ``selection.meet_latency`` closes what is
left of it by measuring the pruned model itself.

Tables are cached per architecture (the layers' shapes), input size, thread count,
profile, onnxruntime version, round-to and device (this machine's platform, or the remote
host), under ``$COMPRESSOR_CACHE`` (default ``~/.cache/compressor``)/``latency``.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compressor.config import LatencyDevice
from compressor.errors import CompressorError
from compressor.utils import system_scratch

if TYPE_CHECKING:
    from collections.abc import Callable

    from torch import nn

    from compressor.pruning import GroupIndex, Plan

TABLE_VERSION = 3  # 2: calibrated (rest and scale fitted); 3: a step below each point
FRACTIONS = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 3 / 4, 1.0)
PROBE_RUNS = 20  # runs of every probe (interleaved, after the runner's warm-up)
# whole models measured with every table: the dense model and two uniformly pruned ones
# (every group at this fraction) calibrate it; two pruned by a global ranking of the group
# L2 norm (this fraction of all channels kept, unevenly) check it
CALIBRATION_KEEP = (0.5, 0.25)
CHECK_KEEP = (0.7, 0.35)


def measure_on(
    device: LatencyDevice,
    models: list[Path],
    *,
    min_runs: int,
    min_seconds: float,
    max_seconds: float,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The benchmark runner on ``models``, interleaved, on ``device``: per model (in
    order) its statistics, and the machine it ran on."""
    from compressor.bench.device import run_local, run_remote, runner_args

    args = runner_args(
        threads=[device.threads],
        batches=[1],
        profile=device.profile,
        min_runs=min_runs,
        min_seconds=min_seconds,
        max_seconds=max_seconds,
        memory=False,
        provider="cpu",
    )
    if device.remote:
        result = run_remote(device.remote, models, args, port=device.port)
    else:
        result = run_local(models, args)
    by_model = {r["model"]: r for r in result["results"]}
    return [by_model[str(m)] for m in models], result["machine"]


@dataclass(frozen=True)
class Layer:
    """A convolution or linear layer the table models."""

    name: str
    kind: str  # "conv" or "linear"
    out_channels: int
    in_channels: int
    kernel: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    padding: tuple[int, ...] = ()
    dilation: tuple[int, ...] = ()
    groups: int = 1
    input_hw: tuple[int, ...] = ()
    out_prunable: bool = False
    in_prunable: bool = False

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.in_channels == self.out_channels

    @property
    def shape_key(self) -> str:
        """Everything but the name: layers with the same key share their probes."""
        d = asdict(self)
        d.pop("name")
        return json.dumps(d, sort_keys=True)

    def widths(self, full: int, prunable: bool, round_to: int) -> list[int]:
        """The grid's widths along one dimension: ``FRACTIONS`` of ``full`` rounded up to
        the step, and one step below each. CPU kernels work on blocks of channels (8 or 16
        with AVX2/AVX-512): on the 2-core VM, 8 output channels cost what 16 do, so a
        width between two grid points is interpolated from its blocked neighbours."""
        if not prunable:
            return [full]
        step = math.lcm(round_to, self.groups) if not self.depthwise else round_to
        points = {min(full, max(step, math.ceil(f * full / step) * step)) for f in FRACTIONS}
        below = {w - step for w in points if w - step >= step}
        return sorted(points | below | {full})

    def grid(self, round_to: int) -> tuple[list[int], list[int]]:
        """(output widths, input widths); a depthwise layer's input follows its output."""
        outs = self.widths(self.out_channels, self.out_prunable or self.depthwise, round_to)
        if self.depthwise:
            return outs, [0]
        return outs, self.widths(self.in_channels, self.in_prunable, round_to)


def model_layers(
    model: nn.Module, index: GroupIndex, input_size: tuple[int, int, int]
) -> list[Layer]:
    """The convolutions (2-d, not transposed) and linear layers (on a flat input) whose
    output or input channels some group owns, with their input's spatial size."""
    import torch
    from torch import nn

    prunable: dict[str, set[str]] = {}
    for g in index:
        for s in g.slices:
            if s.param == "weight" and not s.norm_layer:
                side = "out" if s.kind in ("out", "out_transposed") else "in"
                prunable.setdefault(s.module, set()).add(side)
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name: str) -> Callable[..., None]:
        def hook(_module: Any, inputs: tuple[Any, ...], _output: Any) -> None:
            shapes.setdefault(name, tuple(inputs[0].shape))

        return hook

    hooks = [
        m.register_forward_hook(record(n))
        for n, m in model.named_modules()
        if n in prunable and isinstance(m, nn.Conv2d | nn.Linear)
    ]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_size))
    finally:
        for h in hooks:
            h.remove()
    layers = []
    for name, m in model.named_modules():
        shape = shapes.get(name)
        if shape is None or (isinstance(m, nn.Linear) and len(shape) != 2):
            continue
        sides = prunable[name]
        common: dict[str, Any] = {"out_prunable": "out" in sides, "in_prunable": "in" in sides}
        if isinstance(m, nn.Linear):
            layers.append(Layer(name, "linear", m.out_features, m.in_features, **common))
            continue
        layers.append(
            Layer(
                name,
                "conv",
                m.out_channels,
                m.in_channels,
                kernel=tuple(m.kernel_size),
                stride=tuple(m.stride),
                padding=tuple(m.padding) if not isinstance(m.padding, str) else (0, 0),
                dilation=tuple(m.dilation),
                groups=m.groups,
                input_hw=tuple(shape[2:]),
                **common,
            )
        )
    return layers


def write_probe(layer: Layer, out: int, inp: int, path: Path) -> None:
    """``layer`` alone at ``out`` output and ``inp`` input channels (a depthwise layer:
    ``out`` both), as a one-node ONNX model with random weights and a fixed input shape."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if layer.depthwise:
        inp = out
    if layer.kind == "linear":
        shape_in = [1, inp]
        w = rng.standard_normal((out, inp), dtype=np.float32) * 0.01
        node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)
    else:
        groups = out if layer.depthwise else layer.groups
        shape_in = [1, inp, *layer.input_hw]
        w = rng.standard_normal((out, inp // groups, *layer.kernel), dtype=np.float32) * 0.01
        node = helper.make_node(
            "Conv",
            ["x", "w", "b"],
            ["y"],
            kernel_shape=list(layer.kernel),
            strides=list(layer.stride),
            pads=[*layer.padding, *layer.padding],
            dilations=list(layer.dilation),
            group=groups,
        )
    b = np.zeros(out, dtype=np.float32)
    graph = helper.make_graph(
        [node],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape_in)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _interp(xs: list[int], x: float) -> tuple[int, int, float]:
    """Indices of the grid points around ``x`` and the weight of the upper one (linear
    extrapolation outside the grid)."""
    if len(xs) == 1:
        return 0, 0, 0.0
    j = min(max(bisect.bisect_left(xs, x), 1), len(xs) - 1)
    return j - 1, j, (x - xs[j - 1]) / (xs[j] - xs[j - 1])


@dataclass
class LatencyTable:
    """Measured probe latencies for one model on one device (see the module's docstring)."""

    key: str
    input_size: tuple[int, int, int]
    round_to: int
    device: dict[str, Any]
    layers: list[Layer]
    grids: dict[str, dict[str, Any]]  # shape key -> {"out": [...], "in": [...], "ms": [[...]]}
    dense_ms: float
    rest_ms: float = 0.0
    scale: float = 1.0
    checks: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    version: int = TABLE_VERSION

    def layer_ms(self, layer: Layer, out: float, inp: float) -> float:
        g = self.grids[layer.shape_key]
        o0, o1, wo = _interp(g["out"], out)
        if layer.depthwise:
            return g["ms"][o0][0] * (1 - wo) + g["ms"][o1][0] * wo
        i0, i1, wi = _interp(g["in"], inp)
        ms = g["ms"]
        low = ms[o0][i0] * (1 - wi) + ms[o0][i1] * wi
        high = ms[o1][i0] * (1 - wi) + ms[o1][i1] * wi
        return low * (1 - wo) + high * wo

    def per_layer(self, widths: dict[str, tuple[float, float]] | None = None) -> dict[str, float]:
        """Each layer's predicted ms at ``widths`` (name -> (out, in); default: dense)."""
        widths = widths or {}
        return {
            lay.name: self.scale
            * self.layer_ms(lay, *widths.get(lay.name, (lay.out_channels, lay.in_channels)))
            for lay in self.layers
        }

    def predict(self, widths: dict[str, tuple[float, float]] | None = None) -> float:
        return self.rest_ms + sum(self.per_layer(widths).values())

    def predict_model(self, model: nn.Module) -> float:
        """The predicted ms of ``model``: this table's architecture at the widths it has
        now, however it was pruned (by compressor or another tool)."""
        from compressor.pruning import layer_dims

        dims = layer_dims(model)
        missing = [lay.name for lay in self.layers if lay.name not in dims]
        if missing:
            raise CompressorError(
                f"the model has no layer {missing[0]!r}: the latency table is for another architecture"
            )
        return self.predict({lay.name: dims[lay.name] for lay in self.layers})

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = [asdict(lay) for lay in self.layers]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LatencyTable:
        def fields(lay: dict[str, Any]) -> dict[str, Any]:
            return {k: tuple(v) if isinstance(v, list) else v for k, v in lay.items()}

        layers = [Layer(**fields(lay)) for lay in d["layers"]]
        return cls(**{**d, "layers": layers, "input_size": tuple(d["input_size"])})


class Predictor:
    """A plan's per-layer widths and predicted latency (ms) on a table's device."""

    def __init__(self, table: LatencyTable, model: nn.Module, index: GroupIndex) -> None:
        from compressor.pruning import layer_dims, removal_counter

        dims = layer_dims(model)
        self.table = table
        self.count = removal_counter(index, {lay.name: dims[lay.name] for lay in table.layers})

    def widths(self, plan: Plan) -> dict[str, tuple[float, float]]:
        out_removed, in_removed = self.count(plan)
        return {
            lay.name: (
                lay.out_channels - out_removed.get(lay.name, 0),
                lay.in_channels - in_removed.get(lay.name, 0),
            )
            for lay in self.table.layers
        }

    def __call__(self, plan: Plan) -> float:
        return self.table.predict(self.widths(plan))

    def layer_rows(self, plan: Plan) -> list[dict[str, Any]]:
        """Per layer, the predicted ms before and after ``plan``, slowest first."""
        widths = self.widths(plan)
        before, after = self.table.per_layer(), self.table.per_layer(widths)
        rows = [
            {
                "name": lay.name,
                "before_ms": before[lay.name],
                "after_ms": after[lay.name],
                "channels": widths[lay.name],
            }
            for lay in self.table.layers
        ]
        return sorted(rows, key=lambda r: -r["before_ms"])


def cache_dir() -> Path:
    root = os.environ.get("COMPRESSOR_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "compressor"
    )
    return Path(root) / "latency"


def device_id(device: LatencyDevice) -> dict[str, Any]:
    """What names the device in the cache key: the remote host, or this machine (its
    platform, processor, core count and onnxruntime version)."""
    if device.remote:
        return {"host": device.remote, "port": device.port}
    from compressor.bench.runner import machine

    m = machine()
    return {k: m[k] for k in ("platform", "processor", "cpus", "onnxruntime")}


def table_key(
    layers: list[Layer], input_size: tuple[int, int, int], device: LatencyDevice, round_to: int
) -> str:
    payload = {
        "version": TABLE_VERSION,
        "layers": [asdict(lay) for lay in layers],
        "input_size": list(input_size),
        "threads": device.threads,
        "profile": device.profile,
        "round_to": round_to,
        "device": device_id(device),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def export_for_latency(model: nn.Module, path: Path, input_size: tuple[int, int, int]) -> None:
    """``model`` as ``compressor export`` writes it (simplified, not verified)."""
    from compressor.onnx_export import ExportConfig, export_model

    export_model(model, path, input_size=input_size, metadata={}, config=ExportConfig(verify=False))


def reference_plans(model: nn.Module, index: GroupIndex, round_to: int) -> list[Plan]:
    """The plans of the whole models measured with a table: ``CALIBRATION_KEEP`` (uniform),
    then ``CHECK_KEEP`` (global ranking), by group L2 norm, rounded."""
    from compressor.pruning import group_scores, plan_ratio

    scores = group_scores(index, model)
    guards: dict[str, Any] = {"round_to": index.round_to(round_to), "segments": index.segments()}
    return [
        *(plan_ratio(scores, 1 - k, allocation="uniform", **guards) for k in CALIBRATION_KEEP),
        *(plan_ratio(scores, 1 - k, allocation="global", **guards) for k in CHECK_KEEP),
    ]


def calibrate(table: LatencyTable, sums: list[float], measured: list[float]) -> None:
    """Fit ``measured = rest + scale * sum of the layers' probes`` by least squares over the
    dense and calibration models. A layer alone pays for what the whole model does once
    (converting its input to and its output from onnxruntime's blocked channel layout, the
    call itself), in proportion to its width; the fit takes that out."""
    n = len(sums)
    mean_s, mean_m = sum(sums) / n, sum(measured) / n
    var = sum((x - mean_s) ** 2 for x in sums)
    scale = (
        sum((x - mean_s) * (y - mean_m) for x, y in zip(sums, measured, strict=True)) / var
        if var
        else 0.0
    )
    if not scale > 0:  # a degenerate fit: keep the dense model's difference only
        scale, mean_s, mean_m = 1.0, sums[0], measured[0]
    table.scale, table.rest_ms = scale, mean_m - scale * mean_s


def _probe_files(layers: list[Layer], round_to: int, folder: Path) -> dict[str, dict[str, Any]]:
    """One probe file per grid point of every distinct layer shape."""
    grids: dict[str, dict[str, Any]] = {}
    for lay in layers:
        if lay.shape_key in grids:
            continue
        outs, ins = lay.grid(round_to)
        k = len(grids)
        files = [[folder / f"probe{k}_{o}_{i}.onnx" for i in ins] for o in outs]
        for o, row in zip(outs, files, strict=True):
            for i, path in zip(ins, row, strict=True):
                write_probe(lay, o, i, path)
        grids[lay.shape_key] = {"out": outs, "in": ins, "files": files}
    return grids


def build_table(
    model: nn.Module,
    index: GroupIndex,
    input_size: tuple[int, int, int],
    device: LatencyDevice,
    round_to: int = 8,
    log: Callable[[str], None] | None = None,
    layers: list[Layer] | None = None,
) -> LatencyTable:
    """Measure ``model``'s latency table on ``device`` (see the module's docstring);
    ``layers``: ``model_layers``' answer when the caller has it."""
    import torch

    from compressor.pruning import Plan, pruned_copy

    say = log or (lambda _m: None)
    t0 = time.perf_counter()
    layers = layers or model_layers(model, index, input_size)
    example = torch.zeros(1, *input_size)
    plans = reference_plans(model, index, round_to)
    say(f"building the latency table of {len(layers)} layers: exporting the probe models")
    with system_scratch() as tmp:
        folder = Path(tmp)
        grids = _probe_files(layers, round_to, folder)
        probes = [f for g in grids.values() for row in g["files"] for f in row]
        models = [folder / "dense.onnx", *(folder / f"ref{k}.onnx" for k in range(len(plans)))]
        export_for_latency(model, models[0], input_size)
        for plan, path in zip(plans, models[1:], strict=True):
            export_for_latency(pruned_copy(model, index, plan, example), path, input_size)
        say(
            f"measuring {len(probes)} layer probes of {len(grids)} layer shapes and {len(models)} models"
        )
        # whole models: the runner's usual rule, shortened; probes: a fixed number of runs
        whole, machine = measure_on(device, models, min_runs=30, min_seconds=1.0, max_seconds=5.0)
        parts, _ = measure_on(device, probes, min_runs=PROBE_RUNS, min_seconds=0.0, max_seconds=0.0)
        p50 = {f: r["p50_ms"] for f, r in zip(probes, parts, strict=True)}
        for g in grids.values():
            g["ms"] = [[p50[f] for f in row] for row in g.pop("files")]
    table = LatencyTable(
        key=table_key(layers, input_size, device, round_to),
        input_size=input_size,
        round_to=round_to,
        device={**asdict(device), "machine": machine},
        layers=layers,
        grids=grids,
        dense_ms=whole[0]["p50_ms"],
    )
    predict = Predictor(table, model, index)
    measured = [w["p50_ms"] for w in whole]
    n_cal = 1 + len(CALIBRATION_KEEP)
    calibrate(table, [predict(p) for p in [Plan(), *plans[: n_cal - 1]]], measured[:n_cal])
    for keep, plan, ms in zip(CHECK_KEEP, plans[n_cal - 1 :], measured[n_cal:], strict=True):
        table.checks.append(
            {
                "keep": keep,
                "predicted_ms": predict(plan),
                "measured_ms": ms,
                "error": predict(plan) / ms - 1,
            }
        )
    table.seconds = time.perf_counter() - t0
    return table


def latency_table(
    model: nn.Module,
    index: GroupIndex,
    input_size: tuple[int, int, int],
    device: LatencyDevice,
    round_to: int = 8,
    *,
    refresh: bool = False,
    log: Callable[[str], None] | None = None,
) -> tuple[LatencyTable, Path, bool]:
    """(table, its cache file, whether it came from the cache): measured once per key."""
    from compressor.utils import atomic_path

    layers = model_layers(model, index, input_size)
    path = cache_dir() / f"{table_key(layers, input_size, device, round_to)}.json"
    if path.is_file() and not refresh:
        try:
            return LatencyTable.from_dict(json.loads(path.read_text())), path, True
        except (ValueError, TypeError, KeyError):
            pass  # a damaged cache file is measured again
    table = build_table(model, index, input_size, device, round_to, log, layers)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(table.to_dict(), indent=1))
    return table, path, False
