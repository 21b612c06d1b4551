"""Coupled channel groups, channel selection and physical removal (torch-pruning's DepGraph).

One module per job: ``groups`` (the dependency graph's channel groups), ``scores``,
``plan`` (selection), ``apply`` (removal) and ``structure`` (what a model file stores).
The names below are re-exported here.

A *group* is a set of channels that must be removed together: the producer's filters, the
normalisation entries, the consumers' input slices, and everything tied to them through
residual additions, concatenations and depthwise convolutions. ``channel_groups`` exposes,
for every channel of every group, the parameter slices it owns (``ParamSlice``), so that a
regularizer can penalise exactly what pruning removes and a selection policy can score it.

Selection is global across the model: an absolute or relative score threshold
(``plan_threshold``), a fraction of all prunable channels (``plan_ratio``), or a MAC budget
(``plan_target_macs``); the last two can instead take the same fraction of every group
(``allocation="uniform"``). Any other cost, such as a latency predicted from a measured
table, is met greedily by score lost per unit of cost saved (``plan_cost_budget``). Guards keep every layer
non-empty (``max_layer_ratio``), leave the classifier's outputs and the input alone, and
round kept channel counts to multiples of ``round_to``.
"""

from __future__ import annotations

from compressor.pruning.apply import apply_plan, pruned_copy
from compressor.pruning.groups import (
    ChannelGroup,
    Elementwise,
    GroupIndex,
    ParamSlice,
    classifier_layers,
    identity,
    kernel_sq,
    torch_abs,
    torch_square,
)
from compressor.pruning.plan import (
    ALLOCATIONS,
    Plan,
    RoundTo,
    Segments,
    focus_masks,
    layer_dims,
    mac_estimator,
    normalized,
    plan_cost_budget,
    plan_ratio,
    plan_target_macs,
    plan_threshold,
    removal_counter,
)
from compressor.pruning.scores import folded_params, group_scores, norm_pairs, param_dict
from compressor.pruning.structure import apply_structure, copy_model, structure_of
from compressor.pruning.verify import channel_groups

__all__ = [
    "ALLOCATIONS",
    "ChannelGroup",
    "Elementwise",
    "GroupIndex",
    "ParamSlice",
    "Plan",
    "RoundTo",
    "Segments",
    "apply_plan",
    "apply_structure",
    "channel_groups",
    "classifier_layers",
    "copy_model",
    "focus_masks",
    "folded_params",
    "group_scores",
    "identity",
    "kernel_sq",
    "layer_dims",
    "mac_estimator",
    "norm_pairs",
    "normalized",
    "param_dict",
    "plan_cost_budget",
    "plan_ratio",
    "plan_target_macs",
    "plan_threshold",
    "pruned_copy",
    "removal_counter",
    "structure_of",
    "torch_abs",
    "torch_square",
]
