"""What a model costs: parameters, multiply-accumulates (fvcore) and per-layer channels."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import torch
    from torch import nn


T = TypeVar("T")


@dataclass
class LayerInfo:
    name: str
    type: str
    in_channels: int
    out_channels: int
    groups: int
    kernel: list[int]
    params: int
    macs: int


def count_params(model: nn.Module) -> int:
    """Number of parameters (shared parameters counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def _flop_analysis(model: nn.Module, example: torch.Tensor) -> Any:
    import torch
    from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(model, example)
    # fvcore counts one "flop" per fused multiply-add: its totals are MACs.
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)

    def sdpa(inputs: list[Any], outputs: list[Any]) -> int:
        # q @ k^T and attn @ v: 2 * batch * heads * Lq * Lk * d multiply-adds.
        from fvcore.nn.jit_handles import get_shape

        q, k = get_shape(inputs[0]), get_shape(inputs[1])
        v = get_shape(inputs[2])
        batch = int(torch.tensor(q[:-2]).prod())
        return batch * q[-2] * k[-2] * (q[-1] + v[-1])

    def native_mha(inputs: list[Any], outputs: list[Any]) -> int:
        # nn.MultiheadAttention's inference fast path: projections plus attention.
        from fvcore.nn.jit_handles import get_shape

        q, k = get_shape(inputs[0]), get_shape(inputs[1])
        batch, lq, e = q
        lk = k[1]
        return batch * (2 * lq * e * e + 2 * lk * e * e + 2 * lq * lk * e)

    analysis.set_op_handle("aten::scaled_dot_product_attention", sdpa)
    analysis.set_op_handle("aten::_native_multi_head_attention", native_mha)
    return analysis


def _analysed(model: nn.Module, input_size: tuple[int, int, int], read: Callable[[Any], T]) -> T:
    """``read`` applied to fvcore's analysis of one image of ``input_size``, traced in eval
    mode without gradients (the model's mode is restored)."""
    import torch

    was_training = model.training
    model.eval()
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return read(_flop_analysis(model, torch.zeros(1, *input_size)))
    finally:
        model.train(was_training)


def measure(model: nn.Module, input_size: tuple[int, int, int]) -> tuple[int, dict[str, int]]:
    """(total MACs, MACs by module name) for one image of ``input_size``."""
    return _analysed(
        model,
        input_size,
        lambda a: (int(a.total()), {k: int(v) for k, v in a.by_module().items()}),
    )


def count_macs(model: nn.Module, input_size: tuple[int, int, int]) -> int:
    """Multiply-accumulates of one forward pass on a single image of ``input_size``."""
    return measure(model, input_size)[0]


# fvcore operators that are multiply-adds of dense layers: what an ONNX graph's Conv,
# ConvTranspose, Gemm and MatMul nodes hold (compressor/bench/onnx_cost.py)
DENSE_OPS = frozenset(
    {
        "conv",
        "linear",
        "matmul",
        "mm",
        "addmm",
        "bmm",
        "einsum",
        "scaled_dot_product_attention",
        "_native_multi_head_attention",
    }
)


def dense_macs(model: nn.Module, input_size: tuple[int, int, int]) -> int:
    """MACs of the convolution, linear and matrix-product operators only: fvcore's total
    less normalisation, pooling and upsampling, which inference graphs fold or barely pay
    for. The convention `compressor benchmark` uses for every model, ONNX or PyTorch."""
    return _analysed(
        model,
        input_size,
        lambda a: int(sum(v for k, v in a.by_operator().items() if k in DENSE_OPS)),
    )


def _layer_rows(model: nn.Module, by_module: dict[str, int]) -> list[LayerInfo]:
    from torch import nn

    rows = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            rows.append(
                LayerInfo(
                    name,
                    "Conv2d",
                    m.in_channels,
                    m.out_channels,
                    m.groups,
                    list(m.kernel_size),
                    count_params(m),
                    by_module.get(name, 0),
                )
            )
        elif isinstance(m, nn.Linear):
            rows.append(
                LayerInfo(
                    name,
                    "Linear",
                    m.in_features,
                    m.out_features,
                    1,
                    [],
                    count_params(m),
                    by_module.get(name, 0),
                )
            )
    return rows


def layer_table(model: nn.Module, input_size: tuple[int, int, int]) -> list[LayerInfo]:
    """Every convolution and linear layer with its channels, parameters and MACs."""
    return _layer_rows(model, measure(model, input_size)[1])


def summarize(model: nn.Module, input_size: tuple[int, int, int]) -> dict[str, Any]:
    """A JSON-ready summary: params, MACs and the layer table."""
    total, by_module = measure(model, input_size)
    return {
        "params": count_params(model),
        "macs": total,
        "input_size": list(input_size),
        "layers": [asdict(r) for r in _layer_rows(model, by_module)],
    }


def human(n: float) -> str:
    """1234567 -> '1.23M'."""
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return str(int(n))
