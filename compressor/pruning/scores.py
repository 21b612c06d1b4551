"""Channel scores: group L2 / L1 norms, BatchNorm |gamma|, or the L2 norm with every
BatchNorm folded into the layer before it (``IMPORTANCES``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from compressor.config import IMPORTANCES
from compressor.errors import CompressorError
from compressor.pruning.groups import GroupIndex

if TYPE_CHECKING:
    import torch
    from torch import nn


def param_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters by qualified name (what ``ChannelGroup`` norms take)."""
    return dict(model.named_parameters())


def norm_pairs(index: GroupIndex, model: nn.Module) -> dict[str, str]:
    """Convolution or linear layer -> the BatchNorm layer that normalises its output and
    nothing else (read from the dependency graph): the pairs that fold at inference."""
    from torch import nn

    graph = getattr(index, "graph", None)
    nodes = getattr(graph, "module2node", None) or {}
    names = {m: n for n, m in model.named_modules()}
    pairs: dict[str, str] = {}
    for module, node in nodes.items():
        if not isinstance(module, nn.modules.batchnorm._BatchNorm) or module not in names:
            continue
        if not module.affine or module.running_var is None or len(node.inputs) != 1:
            continue
        src = node.inputs[0]
        layer = getattr(src, "module", None)
        if (
            isinstance(layer, nn.Conv2d | nn.Conv1d | nn.Conv3d | nn.Linear)
            and layer in names
            and len(src.outputs) == 1
            and layer.weight.shape[0] == module.num_features
        ):
            pairs[names[layer]] = names[module]
    return pairs


def folded_params(index: GroupIndex, model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters as the deployed network has them: each BatchNorm folded into the
    layer before it (weight rows times ``gamma / sqrt(running_var + eps)``), the folded
    BatchNorm's own entries zero. Before a BatchNorm a filter's scale is free (the
    normalisation undoes it), so a group norm on the raw weights measures nothing the
    network computes; on the folded weights it measures each channel's actual gain."""
    import torch

    params = {n: p.detach() for n, p in param_dict(model).items()}
    modules = dict(model.named_modules())
    for layer, norm in norm_pairs(index, model).items():
        bn = modules[norm]
        scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
        w = params[f"{layer}.weight"]
        params[f"{layer}.weight"] = w * scale.reshape(-1, *([1] * (w.ndim - 1)))
        if f"{layer}.bias" in params:
            params[f"{layer}.bias"] = torch.zeros_like(params[f"{layer}.bias"])
        params[f"{norm}.weight"] = torch.zeros_like(bn.weight)
        params[f"{norm}.bias"] = torch.zeros_like(bn.bias)
    return params


def group_scores(index: GroupIndex, model: nn.Module, importance: str = "l2") -> list[torch.Tensor]:
    """Per-channel scores of every group: l2 = group L2 norm, l1 = group L1 norm, bn = sum
    |gamma|, folded = group L2 norm of the weights with every BatchNorm folded in."""
    import torch

    if importance not in IMPORTANCES:
        raise CompressorError(
            f"unknown importance {importance!r}; choose one of: {', '.join(IMPORTANCES)}"
        )
    params = param_dict(model)
    with torch.no_grad():
        if importance == "l2":
            return [g.sq_norms(params).sqrt() for g in index]
        if importance == "folded":
            folded = folded_params(index, model)
            return [g.sq_norms(folded).sqrt() for g in index]
        if importance == "l1":
            return [g.l1_norms(params) for g in index]
        return [g.bn_scales(params) for g in index]
