"""No regularizer: plain fine-tuning, then pruning by group magnitude (baseline)."""

from __future__ import annotations

from typing import Any

from compressor.methods import register
from compressor.methods.base import Method


@register
class NoRegularizer(Method):
    """Fine-tune without a sparsity term; channels are then ranked by group L2 norm."""

    name = "none"
    paper = "baseline: no regularizer, prune by group magnitude"

    def penalty(self, model: Any, features: Any) -> None:
        return None
