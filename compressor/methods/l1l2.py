"""l1/l2 pseudo-norm (Berthelier et al., ICPR Workshops 2020, arXiv 2007.10022)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from compressor.methods import register
from compressor.methods.base import EPS, Method
from compressor.pruning import Elementwise, kernel_sq

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class L1L2Params:
    lam: float = 2e-3  # reading: the paper gives no value usable with this formulation


@register
class L1L2(Method):
    """The ratio of the l1 to the l2 norm of channel norms, per group (Berthelier, Yan,
    Chateau, Blanc, Duffner & Garcia, "Learning Sparse Filters in Deep Convolutional Neural
    Networks with a l1/l2 Pseudo-Norm", ICPR Workshops 2020, arXiv 2007.10022).

    The ratio is scale-invariant (a Hoyer-type measure): it rewards few large entries
    rather than shrinking every weight as l1 does, so the sparse structure appears during
    ordinary training. Reading (the public text does not give the exact vector): for each
    dependency-graph group, ``n = (||w_c||_2)_c`` over its channels, each norm taken over
    every parameter the channel owns: its filters, its consumers' input slices, its biases
    and its BatchNorm scale and shift; penalty ``lam * sum_g ||n||_1 / ||n||_2``. Channels
    are selected by the same norm (the default group L2 score): with a target, the
    smallest go; without one, those under 1% of their group's largest.

    Reading: the paper penalises filter coefficients, in networks without BatchNorm. After
    a BatchNorm a filter's scale is free (the normalisation undoes it), so a ratio over
    filter norms alone can shrink every filter of a channel while the channel's output,
    ``gamma * x_hat + beta``, stays what it was: on resnet18 such channels, their
    convolution weights zeroed, still scored 0.43-0.54 of their group's largest. With
    the BatchNorm entries in the vector the penalty empties the channel itself, and the
    norm it drives to zero is the one that selects.
    """

    name = "l1l2"
    paper = "Berthelier, Yan, Chateau, Blanc, Duffner & Garcia, Learning Sparse Filters in Deep CNNs with a l1/l2 Pseudo-Norm, ICPR-W 2020"
    reading = (
        "ratio over each group's vector of channel norms, BatchNorm entries included; "
        "selection by the same norm; relative threshold 0.01"
    )
    Params = L1L2Params
    selection: ClassVar[dict[str, Any]] = {"threshold": 0.01, "relative": True}

    def penalty(self, model: nn.Module, features: dict[str, torch.Tensor]) -> torch.Tensor:
        squares = Elementwise(self._params(model), kernel_sq)
        terms = []
        for g in self._require_groups():
            n = (g.sq_norms(squares) + EPS).sqrt()
            terms.append(n.sum() / (n.pow(2).sum().sqrt() + EPS))
        return self.params.lam * sum(terms)
