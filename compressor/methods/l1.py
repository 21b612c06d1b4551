"""l1 penalty on the weights (baseline)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from compressor.methods import register
from compressor.methods.base import Method

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class L1Params:
    lam: float = 1e-5  # reading: a common l1 strength; no paper fixes it for this baseline


@register
class L1(Method):
    """``lam * sum |w|`` over every convolution and linear weight; channels are then
    ranked by group L2 norm. Unstructured: it shrinks all weights, not whole channels."""

    name = "l1"
    paper = "baseline: l1 weight penalty"
    reading = "strength not fixed by a paper (default 1e-5)"
    Params = L1Params

    def penalty(self, model: nn.Module, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.params.lam * sum(p.abs().sum() for p in _weights(model))


def _weights(model: nn.Module) -> list[torch.Tensor]:
    from torch import nn

    return [
        m.weight
        for m in model.modules()
        if isinstance(m, nn.modules.conv._ConvNd | nn.Linear) and m.weight.requires_grad
    ]


def conv_linear_weights(model: Any) -> list[Any]:
    """Weights of every convolution and linear layer (shared with other baselines)."""
    return _weights(model)
