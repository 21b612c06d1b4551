"""Parameters and multiply-accumulates of an ONNX file, read from its graph.

Every ONNX model in a benchmark is counted the same way, whether compressor wrote it or
not, so that the MAC ratio between two models can be set beside their measured speed-up.
MACs are those of the layers that carry nearly all of a CNN's arithmetic: Conv,
ConvTranspose, Gemm and MatMul (also in quantized operator form and in onnxruntime's fused
forms; a graph with other dense operators, such as Einsum, gets no count rather than a
wrong one), one per multiply-add, per image (biases,
normalisation, pooling and activations left out). For a PyTorch model the same figure is
fvcore's count of its convolution, linear and matrix-product operators
(``compressor.analysis.dense_macs``); fvcore's total, which compressor's compress report
uses, adds one per element of each normalisation and pooling layer (4.5% more for
mobilenet_v2, 0.3% for resnet18; benchmarks/results/mac_count.md).
Needs the ``onnx`` package (the ``full`` install); the torch-free runner does without.
"""

from __future__ import annotations

import json
import math
from typing import Any

# Each counted op type and the positions of its (data or A, weight or B) inputs.
COUNTED = {
    "Conv": (0, 1),
    "ConvTranspose": (0, 1),
    "Gemm": (0, 1),
    "MatMul": (0, 1),
    # the same arithmetic in quantized operator form and onnxruntime's fused forms
    "ConvInteger": (0, 1),
    "QLinearConv": (0, 3),
    "MatMulInteger": (0, 1),
    "QLinearMatMul": (0, 3),
    "FusedConv": (0, 1),
    "FusedMatMul": (0, 1),
    "FusedGemm": (0, 1),
}
# Dense arithmetic this counter does not model: a graph holding any of these gets no count
# rather than a wrong one.
_DENSE_HINTS = ("Conv", "MatMul", "Gemm", "Einsum", "Attention")


def _fix_input_dims(graph: Any, input_shape: list[int] | None) -> int | None:
    """Set an open batch dimension of every graph input to 1 and fill open image dims from
    the recorded ``input_shape``; the batch the graph then runs at (a file may fix it
    above 1), or None if some dimension stays unknown."""
    initializers = {t.name for t in graph.initializer}
    complete, batch = True, 1
    for inp in graph.input:
        if inp.name in initializers:
            continue
        dims = inp.type.tensor_type.shape.dim
        for i, d in enumerate(dims):
            if d.HasField("dim_value") and d.dim_value > 0:
                if i == 0:
                    batch = max(batch, d.dim_value)
                continue
            if i == 0:
                d.dim_value = 1
            elif input_shape is not None and len(input_shape) == len(dims) - 1:
                d.dim_value = int(input_shape[i - 1])
            else:
                complete = False
    return batch if complete else None


def _shapes(model: Any) -> dict[str, list[int]]:
    graph = model.graph
    shapes: dict[str, list[int]] = {t.name: list(t.dims) for t in graph.initializer}
    for vi in (*graph.input, *graph.value_info, *graph.output):
        dims = vi.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = [d.dim_value for d in dims]
    return shapes


def _node_macs(node: Any, shapes: dict[str, list[int]]) -> int | None:
    """MACs of one counted node, or None when a shape it needs is unknown."""
    a_at, w_at = COUNTED[node.op_type]
    a = shapes.get(node.input[a_at]) if len(node.input) > a_at else None
    w = shapes.get(node.input[w_at]) if len(node.input) > w_at else None
    out = shapes.get(node.output[0])
    attrs = {attr.name: attr for attr in node.attribute}
    kind = node.op_type.removeprefix("QLinear").removeprefix("Fused").removesuffix("Integer")
    if kind == "ConvTranspose":
        if a is None or w is None:
            return None
        return math.prod(a) * math.prod(w[1:])  # in elements x (C_out/groups x kernel)
    if kind == "Conv":
        if w is None or out is None:
            return None
        return math.prod(out) * math.prod(w[1:])  # out elements x (C_in/groups x kernel)
    if a is None or out is None:
        return None
    if kind == "Gemm" and "transA" in attrs and attrs["transA"].i:
        return math.prod(out) * a[0]
    return math.prod(out) * a[-1]  # Gemm, MatMul: out elements x K


def _run_for_shapes(model: Any, names: set[str]) -> dict[str, list[int]]:
    """Shapes of the tensors ``names`` from one onnxruntime run on zeros (for graphs whose
    shapes ONNX's inference cannot follow, such as a channel split sized at run time)."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    known_outputs = {o.name for o in graph.output}
    graph.output.extend(onnx.ValueInfoProto(name=n) for n in sorted(names - known_outputs))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    feeds = {}
    for inp in graph.input:
        if inp.name in initializers:
            continue
        tt = inp.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        feeds[inp.name] = np.zeros([d.dim_value for d in tt.shape.dim], dtype=dtype)
    wanted = [o.name for o in session.get_outputs() if o.name in names]
    values = session.run(wanted, feeds)
    return {n: list(v.shape) for n, v in zip(wanted, values, strict=True)}


def onnx_cost(path: str) -> dict[str, Any]:
    """``params`` (initializer elements) and ``macs`` (None if a counted layer's shapes
    cannot be found) of the ONNX file at ``path``."""
    import onnx

    model = onnx.load(path, load_external_data=False)
    params = sum(math.prod(t.dims) for t in model.graph.initializer)
    meta = {p.key: p.value for p in model.metadata_props}
    try:
        input_shape = json.loads(meta["input_shape"]) if "input_shape" in meta else None
    except ValueError:
        input_shape = None
    unknown = {"params": params, "macs": None}
    batch = _fix_input_dims(model.graph, input_shape)
    if batch is None:
        return unknown
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # shape inference rejects some valid graphs; ask onnxruntime instead
        inferred = model
    if any(
        n.op_type not in COUNTED and any(h in n.op_type for h in _DENSE_HINTS)
        for n in inferred.graph.node
    ):
        return unknown
    shapes = _shapes(inferred)
    counted = [n for n in inferred.graph.node if n.op_type in COUNTED]
    missing = {
        name
        for n in counted
        for name in (*(n.input[i] for i in COUNTED[n.op_type] if i < len(n.input)), n.output[0])
        if name not in shapes
    }
    if missing:
        try:
            shapes |= _run_for_shapes(model, missing)
        except Exception:  # a graph onnxruntime cannot run here: the count stays unknown
            return unknown
    total = 0
    for node in counted:
        macs = _node_macs(node, shapes)
        if macs is None:
            return unknown
        total += macs
    return {"params": params, "macs": total // batch}
