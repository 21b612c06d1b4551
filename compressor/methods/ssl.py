"""Structured sparsity learning (Wen et al., NeurIPS 2016): group lasso on filters and channels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from compressor.methods import register
from compressor.methods.base import EPS, Method
from compressor.pruning import Elementwise, identity, kernel_sq

if TYPE_CHECKING:
    import torch
    from torch import nn

OUT_KINDS = ("out", "out_transposed")
IN_KINDS = ("in", "in_grouped", "in_transposed")


@dataclass(frozen=True)
class SSLParams:
    lam: float = 1e-4  # lambda_n, on filters (reading: the paper tunes it per network)
    lam_channel: float = 1e-4  # lambda_c, on input channels


@register
class SSL(Method):
    """``lam * sum ||W[o]||_2 + lam_channel * sum ||W[:, i]||_2`` (Wen et al., "Learning
    Structured Sparsity in Deep Neural Networks", NeurIPS 2016).

    Applied to dependency-graph groups: each group channel's producer filters (its output
    slices) form filter groups and its consumers' input slices form channel groups, every
    slice its own l2 group as in the paper. Strengths are a reading (tuned per network in
    the paper).
    """

    name = "ssl"
    paper = "Wen et al., Learning Structured Sparsity in Deep Neural Networks, NeurIPS 2016"
    reading = "filter and channel terms on dependency-graph groups; default strengths 1e-4"
    Params = SSLParams

    def penalty(self, model: nn.Module, features: dict[str, torch.Tensor]) -> torch.Tensor:
        squares = Elementwise(self._params(model), kernel_sq)
        filters: list[torch.Tensor] = []
        channels: list[torch.Tensor] = []
        for g in self._require_groups():
            for s in g.slices:
                if s.norm_layer or s.param != "weight":
                    continue
                sq = s.position_sums(squares[f"{s.module}.{s.param}"], identity)
                norms = (sq + EPS).sqrt()
                (filters if s.kind in OUT_KINDS else channels).append(norms.sum())
        total = self.params.lam * sum(filters) + self.params.lam_channel * sum(channels)
        return total
