"""Which channel groups a model really lets us remove: checked by removing them on a copy.

torch-pruning's graph says which channels belong together, but not whether the model's
own code still agrees once they are gone: a module that splits or slices its input by a
stored channel count (timm's ``MixedConv2d``, CSP blocks' ``split``, DPN's dual path), or
that normalises over channels in a way the graph does not see, runs into an error or
silently computes something else. So before any plan is made, one unit of every group is
removed from a copy of the model in eval mode, and the copy must

- run, with outputs of the same shape, and
- give the outputs of the original with those channels zeroed (their producers' weights,
  biases and BatchNorm scales and shifts set to 0): removing a channel that outputs
  zeros changes nothing, unless the model reads channels by position or normalises
  across them. Groups through LayerNorm or GroupNorm are exempt from this comparison
  (their statistics change when a channel goes) and checked by running alone.

Groups that fail are found by bisection and kept whole, each named with the reason, so
the rest of the model still prunes; a model is never pruned into one that breaks.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from compressor.errors import CompressorError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from compressor.pruning.groups import GroupIndex

TOLERANCE = 1e-3  # of the output scale: removal against zeroing (float reordering only)
MAX_PROBES = 160  # a model with more failing groups keeps the rest whole, said as such


def _units(index: GroupIndex, gi: int) -> list[int]:
    """The unit a probe removes from group ``gi``: one in the middle of its channels, so
    that code reading channels by position sees a shift, and the last of the first half,
    so that a split into equal parts by a stored width sees its first part shrink. (The
    first of the second half is exactly what such a split expects: SelectiveKernel's
    ``split(x, in_channels // 2)`` then gives [32, 31] of 63 channels, which the
    convolutions take; a 64-channel cut then broke the model after the probe passed.)"""
    return [(index.groups[gi].size - 1) // 2]


def _channel_normalised(index: GroupIndex, gi: int, model: nn.Module) -> bool:
    from torch import nn

    for s in index.groups[gi].slices:
        if s.norm_layer and isinstance(model.get_submodule(s.module), nn.LayerNorm | nn.GroupNorm):
            return True
    return False


def zeroed_copy(model: nn.Module, index: GroupIndex, remove: dict[int, list[int]]) -> nn.Module:
    """A copy of ``model`` whose channels in ``remove`` (group -> units) output zeros:
    their producers' weights, biases and norm scales and shifts set to 0."""
    import torch

    dense = copy.deepcopy(model)
    with torch.no_grad():
        for gi, units in remove.items():
            removed = set(units)
            for s in index.groups[gi].slices:
                if s.kind not in ("out", "out_transposed", "norm"):
                    continue
                mask = torch.tensor([int(c) in removed for c in s.channel])
                param = getattr(dense.get_submodule(s.module), s.param)
                dim = 1 if s.kind == "out_transposed" else 0
                param.index_fill_(dim, s.index[mask].to(param.device), 0.0)
    return dense


def compare(
    reference: nn.Module, pruned: nn.Module, example: torch.Tensor, exact: bool
) -> str | None:
    """None when ``pruned`` gives ``reference``'s outputs on ``example`` (with ``exact``;
    else only their shape); else how they differ."""
    import torch

    with torch.no_grad():
        ref, out = reference(example), pruned(example)
    if not isinstance(out, torch.Tensor) or out.shape != ref.shape:
        return "the outputs change shape"
    if exact:
        scale = float(ref.abs().max()) or 1.0
        diff = float((out - ref).abs().max()) / scale
        if diff > TOLERANCE:
            return f"the outputs change ({diff:.1e} of their scale), not only the removed channels"
    return None


def exact_for(index: GroupIndex, model: nn.Module, gis: Any) -> bool:
    """Whether removing channels of ``gis`` must leave the zeroed model's outputs exactly
    (no group normalised across channels)."""
    return not any(_channel_normalised(index, gi, model) for gi in gis)


def _probe(
    model: nn.Module, index: GroupIndex, gis: list[int], example: torch.Tensor, exact: bool
) -> tuple[str | None, str | None]:
    """(None, None) when removing a unit of each group in ``gis`` keeps the model whole;
    else why not, in a few words, and the innermost module that raised (if one did)."""
    import torch

    from compressor.pruning.apply import apply_plan
    from compressor.pruning.groups import trace_groups
    from compressor.pruning.plan import Plan

    trial = copy.deepcopy(model)
    running: list[str] = []
    try:
        trial_index = trace_groups(trial, example, keep_whole=set(index.skipped))
        if [g.root for g in trial_index] != [g.root for g in index]:
            return "traced differently on a copy", None
        apply_plan(trial_index, Plan({gi: _units(index, gi) for gi in gis}))
        for name, module in trial.named_modules():
            if name:
                module.register_forward_pre_hook(lambda *_, n=name: running.append(n))
                module.register_forward_hook(lambda *_: running.pop() and None)
        with torch.no_grad():
            trial(example)
    except Exception as e:  # whatever the model's own code raises
        text = str(e).splitlines()[0][:160] if str(e) else ""
        return f"{type(e).__name__}: {text}" if text else type(e).__name__, (
            running[-1] if running else None
        )
    zeroed = zeroed_copy(model, index, {gi: _units(index, gi) for gi in gis})
    return compare(zeroed, trial, example, exact), None


def _bisect(
    model: nn.Module,
    index: GroupIndex,
    gis: list[int],
    example: torch.Tensor,
    exact: bool,
    budget: list[int],
) -> dict[int, str]:
    """The groups among ``gis`` whose removal breaks the model, by bisection."""
    if not gis:
        return {}
    budget[0] -= 1
    why, _ = _probe(model, index, gis, example, exact)
    if why is None:
        return {}
    if len(gis) == 1 or budget[0] <= 0:
        return dict.fromkeys(gis, why)
    half = len(gis) // 2
    found = _bisect(model, index, gis[:half], example, exact, budget)
    found.update(_bisect(model, index, gis[half:], example, exact, budget))
    if not found:  # only together: keep the second half whole, conservatively
        found = dict.fromkeys(gis[half:], f"{why} (with other groups)")
    return found


def _touching(index: GroupIndex, gis: list[int], where: str) -> list[int]:
    """The groups among ``gis`` with a parameter in module ``where`` or below it."""
    return [
        gi
        for gi in gis
        if any(
            s.module == where or s.module.startswith(where + ".") for s in index.groups[gi].slices
        )
    ]


def _failing(
    model: nn.Module,
    index: GroupIndex,
    gis: list[int],
    example: torch.Tensor,
    exact: bool,
    budget: list[int],
) -> dict[int, str]:
    """The groups among ``gis`` whose removal breaks the model. A probe that raises names
    the module it raised in, and the groups with parameters there are bisected first (one
    probe of the rest per failing place, instead of a bisection of the whole model)."""
    found: dict[int, str] = {}
    remaining = list(gis)
    while remaining and budget[0] > 0:
        budget[0] -= 1
        why, where = _probe(model, index, remaining, example, exact)
        if why is None:
            break
        near = _touching(index, remaining, where) if where else []
        bad = _bisect(model, index, near, example, exact, budget) if near else {}
        if not bad:
            bad = _bisect(model, index, remaining, example, exact, budget) or dict.fromkeys(
                remaining, why
            )
        found.update(bad)
        remaining = [gi for gi in remaining if gi not in bad]
    if remaining and budget[0] <= 0:  # out of probes: what is left is not known to be safe
        found.update(dict.fromkeys(remaining, "not checked (too many failing groups)"))
    return found


def unsafe_groups(model: nn.Module, index: GroupIndex, example: torch.Tensor) -> dict[int, str]:
    """Group number -> why removing its channels breaks ``model``."""
    import torch

    example = torch.randn(example.shape, generator=torch.Generator().manual_seed(0)).to(example)
    was_training = model.training
    model.eval()
    try:
        everything = list(range(len(index)))
        normalised = [gi for gi in everything if _channel_normalised(index, gi, model)]
        plain = [gi for gi in everything if gi not in normalised]
        budget = [MAX_PROBES]
        found = _failing(model, index, plain, example, True, budget)
        found.update(_failing(model, index, normalised, example, False, budget))
    finally:
        model.train(was_training)
    return found


def checked(index: GroupIndex, model: nn.Module, example: Any) -> GroupIndex:
    """``index`` without the groups ``unsafe_groups`` finds, which join ``skipped`` (and
    ``index.unsafe`` with their reasons)."""
    from dataclasses import replace

    found = unsafe_groups(model, index, example)
    if not found:
        return index
    keep = [gi for gi in range(len(index)) if gi not in found]
    groups = [replace(index.groups[gi], id=n) for n, gi in enumerate(keep)]
    return replace(
        index,
        groups=groups,
        tp_groups=[index.tp_groups[gi] for gi in keep],
        skipped=[*index.skipped, *(index.groups[gi].root for gi in sorted(found))],
        unsafe={index.groups[gi].root: why for gi, why in sorted(found.items())},
    )


def checked_cut(
    reference: nn.Module, pruned: nn.Module, index: GroupIndex, plan: Any, input_size: Any
) -> None:
    """Raise ``CompressorError`` unless ``pruned`` (the model after ``plan``) computes what
    ``reference`` (``zeroed_copy`` of the model before it) computes: a cut never leaves a
    model that runs into an error or computes something else, silently."""
    import torch

    removed = [gi for gi, units in plan.remove.items() if units]
    if not removed:
        return
    example = torch.randn(1, *input_size, generator=torch.Generator().manual_seed(0))
    was_training = pruned.training
    try:
        exact = exact_for(index, reference, removed)
        why = compare(reference.eval(), pruned.eval(), example, exact)
    except Exception as e:  # the model's own code, after the cut
        why = failure(e)
    finally:
        pruned.train(was_training)
    if why:
        raise broken_cut(why)


def broken_cut(why: str) -> CompressorError:
    """The error for a cut that leaves a model that fails or computes something else."""
    return CompressorError(
        f"the cut broke the model ({why}): a module keeps channel counts that the "
        "trial removal did not reveal; please report the architecture, and prune less "
        "(--ratio, --target-macs) meanwhile"
    )


def failure(e: Exception) -> str:
    """An exception the model's own code raised, in a few words."""
    return f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"


def channel_groups(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    ignored: list[nn.Module] | None = None,
    verify: bool = True,
) -> GroupIndex:
    """``model``'s prunable channel groups (``trace_groups``), without those whose removal
    breaks it (with ``verify``: ``checked``)."""
    from compressor.pruning.groups import trace_groups

    index = trace_groups(model, example_input, ignored=ignored)
    return checked(index, model, example_input) if verify and len(index) else index
