"""l2 penalty on the weights (weight decay as a loss term; baseline)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from compressor.methods import register
from compressor.methods.base import Method
from compressor.methods.l1 import conv_linear_weights

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class L2Params:
    lam: float = 5e-4  # the usual weight-decay strength for CNNs


@register
class L2(Method):
    """``lam / 2 * sum w^2`` over every convolution and linear weight (on top of the
    optimizer's weight decay, which every method shares); channels ranked by group L2 norm."""

    name = "l2"
    paper = "baseline: l2 weight penalty (weight decay)"
    Params = L2Params

    def penalty(self, model: nn.Module, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return 0.5 * self.params.lam * sum(p.pow(2).sum() for p in conv_linear_weights(model))
