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
        """The value only; its gradient ``lam * w`` is added in ``after_backward`` in one
        fused pass (cheaper than differentiating ``w^2`` through autograd)."""
        import torch

        with torch.no_grad():
            norms = torch._foreach_norm(conv_linear_weights(model), 2)
            return 0.5 * self.params.lam * torch.stack(norms).square().sum()

    def after_backward(self, model: nn.Module) -> None:
        import torch

        weights = conv_linear_weights(model)
        for w in weights:
            if w.grad is None:
                w.grad = torch.zeros_like(w)
        torch._foreach_add_([w.grad for w in weights], weights, alpha=self.scale * self.params.lam)

    def extra_grad_sq_norm(self, model: nn.Module) -> float:
        import torch

        with torch.no_grad():
            norms = torch._foreach_norm(conv_linear_weights(model), 2)
            return float(torch.stack(norms).square().sum()) * self.params.lam**2
