"""Network slimming (Liu et al., ICCV 2017): l1 on BatchNorm scales."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from compressor.methods import register
from compressor.methods.base import Method

if TYPE_CHECKING:
    import torch
    from torch import nn

    from compressor.pruning import GroupIndex


@dataclass(frozen=True)
class SlimmingParams:
    lam: float = 1e-4  # the paper's value for VGG (1e-5 for ResNet)


@register
class Slimming(Method):
    """``lam * sum |gamma|`` over every normalisation layer's scale; channels are ranked
    by the |gamma| of their group's normalisation layers and pruned by a global percentile
    (Liu et al., "Learning Efficient Convolutional Networks through Network Slimming",
    ICCV 2017)."""

    name = "slimming"
    paper = (
        "Liu et al., Learning Efficient Convolutional Networks through Network Slimming, ICCV 2017"
    )
    Params = SlimmingParams
    comparable_scores = True  # |gamma| is ranked by one global percentile, as in the paper

    def penalty(self, model: nn.Module, features: dict[str, torch.Tensor]) -> torch.Tensor | None:
        from torch import nn

        scales = [
            m.weight
            for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm | nn.GroupNorm | nn.LayerNorm)
            and getattr(m, "weight", None) is not None
        ]
        if not scales:
            return None
        return self.params.lam * sum(w.abs().sum() for w in scales)

    def scores(self, model: nn.Module, index: GroupIndex, **context: Any) -> list[torch.Tensor]:
        from compressor.pruning import group_scores

        return group_scores(index, model, "bn")
