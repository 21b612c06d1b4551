"""Parameters and multiply-accumulates of an ONNX file, read from its graph.

Every ONNX model in a benchmark is counted the same way, whether compressor wrote it or
not, so that the MAC ratio between two models can be set beside their measured speed-up.
MACs are those of the layers that carry nearly all of a CNN's arithmetic: Conv,
ConvTranspose, Gemm and MatMul, one per multiply-add, for a batch of one (biases,
normalisation, pooling and activations left out). For a PyTorch model the same figure is
fvcore's count of its convolution, linear and matrix-product operators
(``compressor.analysis.dense_macs``); fvcore's total, which compressor's compress report
uses, adds one per element of each normalisation and pooling layer (about 4% more for
mobilenet_v2, 0.3% for resnet18).
Needs the ``onnx`` package (the ``full`` install); the torch-free runner does without.
"""

from __future__ import annotations

import json
import math
from typing import Any

COUNTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _fix_input_dims(graph: Any, input_shape: list[int] | None) -> bool:
    """Set the batch dimension of every graph input to 1 and fill symbolic image dims from
    the recorded ``input_shape``; False if some dimension stays unknown."""
    initializers = {t.name for t in graph.initializer}
    complete = True
    for inp in graph.input:
        if inp.name in initializers:
            continue
        dims = inp.type.tensor_type.shape.dim
        for i, d in enumerate(dims):
            if d.HasField("dim_value") and d.dim_value > 0:
                continue
            if i == 0:
                d.dim_value = 1
            elif input_shape is not None and len(input_shape) == len(dims) - 1:
                d.dim_value = int(input_shape[i - 1])
            else:
                complete = False
    return complete


def _shapes(model: Any) -> dict[str, list[int]]:
    graph = model.graph
    shapes: dict[str, list[int]] = {t.name: list(t.dims) for t in graph.initializer}
    for vi in (*graph.input, *graph.value_info, *graph.output):
        dims = vi.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = [d.dim_value for d in dims]
    return shapes


def _node_macs(node: Any, shapes: dict[str, list[int]]) -> int | None:
    """MACs of one node, or None when a shape it needs is unknown."""
    ins = [shapes.get(name) for name in node.input[:2]]
    out = shapes.get(node.output[0])
    attrs = {a.name: a for a in node.attribute}
    if node.op_type == "Conv":
        w = ins[1]
        if w is None or out is None:
            return None
        return math.prod(out) * math.prod(w[1:])  # out elements x (C/groups x kernel)
    if node.op_type == "ConvTranspose":
        x, w = ins
        if x is None or w is None:
            return None
        return math.prod(x) * math.prod(w[1:])  # in elements x (C_out/groups x kernel)
    if node.op_type == "Gemm":
        a = ins[0]
        if a is None or out is None:
            return None
        k = a[0] if "transA" in attrs and attrs["transA"].i else a[1]
        return math.prod(out) * k
    if node.op_type == "MatMul":
        a = ins[0]
        if a is None or out is None:
            return None
        return math.prod(out) * a[-1]
    return 0


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
    if not _fix_input_dims(model.graph, input_shape):
        return unknown
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # shape inference rejects some valid graphs; ask onnxruntime instead
        inferred = model
    shapes = _shapes(inferred)
    counted = [n for n in inferred.graph.node if n.op_type in COUNTED]
    missing = {name for n in counted for name in (*n.input[:2], n.output[0]) if name not in shapes}
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
    return {"params": params, "macs": total}
