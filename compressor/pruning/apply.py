"""Physical removal of a plan's channels through torch-pruning."""

from __future__ import annotations

from typing import TYPE_CHECKING

from compressor.errors import CompressorError
from compressor.pruning.fixups import sync_channel_counts
from compressor.pruning.groups import GroupIndex
from compressor.pruning.plan import Plan

if TYPE_CHECKING:
    import torch
    from torch import nn


def apply_plan(index: GroupIndex, plan: Plan) -> None:
    """Physically remove the planned channels (modules are modified in place)."""
    graph = index.graph
    for gi, idxs in sorted(plan.remove.items()):
        if not idxs:
            continue
        tp_group = index.tp_groups[gi]
        root = tp_group[0].dep.target.module
        handler = tp_group[0].dep.handler
        group = graph.get_pruning_group(root, handler, index.groups[gi].model_channels(idxs))
        if not graph.check_pruning_group(group):
            raise CompressorError(
                f"removing {len(idxs)} channels of {index.groups[gi].root} would empty a layer"
            )
        group.prune()
    sync_channel_counts(graph.model)


def pruned_copy(
    model: nn.Module, index: GroupIndex, plan: Plan, example: torch.Tensor
) -> nn.Module:
    """A copy of ``model`` with ``plan`` applied; ``model`` is left as it is. (The
    dependency graph holds code and cannot be copied: the copy is traced again, and its
    groups must come out in ``index``'s order.)"""
    import copy

    from compressor.pruning.groups import trace_groups

    trial = copy.deepcopy(model)
    trial_index = trace_groups(trial, example, keep_whole=set(index.skipped))
    assert [g.root for g in trial_index] == [g.root for g in index]
    apply_plan(trial_index, plan)
    return trial
