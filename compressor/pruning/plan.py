"""Which channels of each group go: by score threshold, by ratio, or by MAC budget (global
or uniform allocation), with the guards that keep layers non-empty and counts rounded."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from compressor.errors import CompressorError
from compressor.pruning.groups import GroupIndex

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass
class Plan:
    """Which channels of which group to remove."""

    remove: dict[int, list[int]] = field(default_factory=dict)

    @property
    def removed_channels(self) -> int:
        return sum(len(v) for v in self.remove.values())


def focus_masks(
    model: nn.Module, index: GroupIndex, remove: dict[int, list[int]]
) -> dict[str, torch.Tensor]:
    """For every trainable parameter, a boolean mask of the entries owned by the channels
    in ``remove`` (group position -> channels): where a focused penalty may act."""
    import torch

    params = dict(model.named_parameters())
    masks = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in params.items() if p.requires_grad}
    groups = list(index)
    for gi, channels in remove.items():
        if not channels:
            continue
        chosen = torch.tensor(channels)
        for s in groups[gi].slices:
            name = f"{s.module}.{s.param}"
            if name not in masks:
                continue
            mask = masks[name]
            ids = torch.arange(mask.numel(), device=mask.device).reshape(mask.shape)
            rows = s.rows(ids)[torch.isin(s.channel, chosen).to(mask.device)]
            mask.view(-1)[rows.reshape(-1)] = True
    return masks


RoundTo = int | list[int]  # one multiple for every group, or one per group (in units)


def _round(round_to: RoundTo, gi: int) -> int:
    return round_to[gi] if isinstance(round_to, list) else round_to


def _limit(size: int, n_remove: int, *, max_layer_ratio: float, round_to: int) -> int:
    """Clamp a group's removal count so that at least one channel (or ``round_to``) stays
    and the kept count is a multiple of ``round_to`` (rounded up: we keep more, never fewer)."""
    max_remove = min(size - 1, math.floor(size * max_layer_ratio))
    n = max(0, min(n_remove, max_remove))
    if round_to > 1 and size > round_to:
        keep = size - n
        keep = min(size, max(round_to, math.ceil(keep / round_to) * round_to))
        n = size - keep
    return n


Segments = list[list[list[int]]] | None  # per group, the channels of each producing layer


def _plan_from_counts(
    scores: list[torch.Tensor], counts: list[int], segments: Segments = None
) -> Plan:
    """The ``counts[g]`` lowest-scored channels of every group, except that no producing
    layer (a segment: one branch of a concatenation) loses its last channel."""
    plan = Plan()
    for gi, (s, n) in enumerate(zip(scores, counts, strict=True)):
        if n <= 0:
            continue
        order = s.argsort(stable=True).tolist()
        segs = segments[gi] if segments else []
        if len(segs) < 2:
            plan.remove[gi] = sorted(order[:n])
            continue
        left = [len(seg) for seg in segs]
        owners: dict[int, list[int]] = {}
        for k, seg in enumerate(segs):
            for c in seg:
                owners.setdefault(c, []).append(k)
        chosen: list[int] = []
        for c in order:
            if len(chosen) == n:
                break
            if any(left[k] <= 1 for k in owners.get(c, [])):
                continue
            for k in owners.get(c, []):
                left[k] -= 1
            chosen.append(c)
        plan.remove[gi] = sorted(chosen)
    return plan


def plan_threshold(
    scores: list[torch.Tensor],
    threshold: float,
    *,
    relative: bool = False,
    max_layer_ratio: float = 0.9,
    round_to: RoundTo = 1,
    blocks: list[int] | None = None,  # accepted with the other guards, not needed
    segments: Segments = None,
) -> Plan:
    """Remove channels scoring below ``threshold`` (or below ``threshold`` x the group's max)."""
    counts = []
    for gi, s in enumerate(scores):
        limit = threshold * float(s.max()) if relative else threshold
        counts.append(
            _limit(
                len(s),
                int((s < limit).sum()),
                max_layer_ratio=max_layer_ratio,
                round_to=_round(round_to, gi),
            )
        )
    return _plan_from_counts(scores, counts, segments)


ALLOCATIONS = ("global", "uniform")


def normalized(scores: list[torch.Tensor]) -> list[torch.Tensor]:
    # Groups differ in scale (layer widths, fan-in); dividing by the group mean makes a
    # global ranking compare like with like, as torch-pruning's default normaliser does.
    return [s / (s.abs().mean() + 1e-12) for s in scores]


def plan_ratio(
    scores: list[torch.Tensor],
    ratio: float,
    *,
    max_layer_ratio: float = 0.9,
    round_to: RoundTo = 1,
    normalize: bool = True,
    blocks: list[int] | None = None,
    segments: Segments = None,
    allocation: str = "global",
) -> Plan:
    """Remove the fraction ``ratio`` of all prunable channels with the lowest scores, each
    group's scores divided by its mean unless ``normalize`` is False (scores already
    comparable across groups, such as a loss increase). ``blocks``: per group, the model
    channels one entry of its scores stands for (``ChannelGroup.blocks``; 1 if None).

    ``allocation``: ``"global"`` ranks all channels together, so the scores decide how
    many each group loses; ``"uniform"`` removes the fraction ``ratio`` of every group
    (Torch-Pruning's default) and the scores decide only which."""
    import torch

    if not 0.0 <= ratio < 1.0:
        raise CompressorError(f"--ratio must be in [0, 1), got {ratio}")
    if allocation not in ALLOCATIONS:
        raise CompressorError(
            f"unknown allocation {allocation!r}; choose one of: {', '.join(ALLOCATIONS)}"
        )
    norm = normalized(scores) if normalize else list(scores)
    if allocation == "uniform":
        counts = [
            _limit(
                len(s),
                math.floor(len(s) * ratio),
                max_layer_ratio=max_layer_ratio,
                round_to=_round(round_to, gi),
            )
            for gi, s in enumerate(norm)
        ]
        return _plan_from_counts(norm, counts, segments)
    flat = torch.cat(norm) if norm else torch.zeros(0)
    weight = (
        torch.cat(
            [torch.full((len(s),), (blocks or [1] * len(norm))[i]) for i, s in enumerate(norm)]
        )
        if norm
        else torch.zeros(0)
    )
    n_target = round(float(weight.sum()) * ratio)
    if n_target == 0:
        return Plan()
    # rank globally (stable, so ties resolve the same way every time) and count per group
    order = flat.argsort(stable=True)
    lowest = order[: int((weight[order].cumsum(0) <= n_target).sum())]
    owner = torch.cat([torch.full((len(s),), i) for i, s in enumerate(norm)])
    per_group = torch.bincount(owner[lowest], minlength=len(norm)).tolist()
    counts = [
        _limit(len(s), n, max_layer_ratio=max_layer_ratio, round_to=_round(round_to, gi))
        for gi, (s, n) in enumerate(zip(norm, per_group, strict=True))
    ]
    return _plan_from_counts(norm, counts, segments)


def layer_dims(model: nn.Module) -> dict[str, tuple[int, int]]:
    """(output, input) channels of every convolution and linear layer, and (channels, 0)
    of every normalisation layer: the layers whose cost a plan changes."""
    from torch import nn

    dims: dict[str, tuple[int, int]] = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            dims[name] = (m.out_channels, m.in_channels)
        elif isinstance(m, nn.Linear):
            dims[name] = (m.out_features, m.in_features)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm | nn.GroupNorm | nn.LayerNorm):
            width = getattr(m, "num_features", None) or getattr(m, "num_channels", None)
            if width is None:
                width = int(getattr(m, "normalized_shape", (0,))[0])
            dims[name] = (int(width), 0)
    return dims


Removed = tuple[dict[str, int], dict[str, int]]  # per layer, output and input channels removed


def removal_counter(
    index: GroupIndex, dims: dict[str, tuple[int, int]]
) -> Callable[[Plan], Removed]:
    """A function giving, for a plan, how many output and input channels each layer of
    ``dims`` loses (a group's answer is cached per removal list: planners try many plans
    that differ in one group)."""
    import torch

    weight_slices = [
        [
            s
            for s in g.slices
            if s.module in dims and (s.param == "weight" or (s.norm_layer and s.param == "bias"))
        ]
        for g in index
    ]
    # a norm layer may have no scale (affine=False); its shift slice then stands for it
    for sl_list in weight_slices:
        norm_weights = {s.module for s in sl_list if s.norm_layer and s.param == "weight"}
        sl_list[:] = [
            s
            for s in sl_list
            if not (s.norm_layer and s.param == "bias" and s.module in norm_weights)
        ]
    cache: dict[tuple[int, tuple[int, ...]], list[tuple[bool, str, int]]] = {}

    def of_group(gi: int, chans: list[int]) -> list[tuple[bool, str, int]]:
        key = (gi, tuple(chans))
        if key not in cache:
            chosen = torch.as_tensor(chans, dtype=torch.long)
            cache[key] = [
                (
                    sl.kind in ("out", "out_transposed", "norm"),
                    sl.module,
                    int(torch.isin(sl.channel, chosen).sum()),
                )
                for sl in weight_slices[gi]
            ]
        return cache[key]

    def count(plan: Plan) -> Removed:
        out_removed: dict[str, int] = {}
        in_removed: dict[str, int] = {}
        for gi, chans in plan.remove.items():
            for out, module, n in of_group(gi, chans):
                target = out_removed if out else in_removed
                target[module] = target.get(module, 0) + n
        return out_removed, in_removed

    return count


def mac_estimator(
    model: nn.Module, index: GroupIndex, input_size: tuple[int, int, int]
) -> tuple[int, Callable[[Plan], int]]:
    """(exact MACs now, a function estimating the MACs left after a plan).

    Each convolution's and linear layer's MACs scale with its kept output and input
    fractions, each normalisation layer's with its kept channels; the rest (pooling, and
    whatever fvcore counts outside modules) is held constant. ``selection.meet_target`` corrects
    what remains of the error by counting the pruned model itself.
    """
    from compressor.analysis import measure

    total, by_module = measure(model, input_size)
    dims = layer_dims(model)
    base = {n: by_module.get(n, 0) for n in dims}
    other = total - sum(base.values())
    count = removal_counter(index, dims)

    def estimate(plan: Plan) -> int:
        out_removed, in_removed = count(plan)
        left = float(other)
        for name, macs in base.items():
            o, i = dims[name]
            kept_in = 1 - in_removed.get(name, 0) / i if i else 1.0
            left += macs * (1 - out_removed.get(name, 0) / o) * kept_in
        return int(left)

    return total, estimate


def plan_target_macs(
    scores: list[torch.Tensor],
    estimate: Callable[[Plan], float],
    total_macs: float,
    target: float,
    *,
    max_layer_ratio: float = 0.9,
    round_to: RoundTo = 1,
    normalize: bool = True,
    blocks: list[int] | None = None,
    segments: Segments = None,
    allocation: str = "global",
) -> Plan:
    """The smallest ratio (global, or per group with ``allocation="uniform"``) whose estimated MACs are at most ``target`` x the original.

    Raises ``CompressorError`` saying what was reached when the target is out of reach.
    """
    budget = target * total_macs

    def plan_at(r: float) -> Plan:
        return plan_ratio(
            scores,
            r,
            max_layer_ratio=max_layer_ratio,
            round_to=round_to,
            normalize=normalize,
            blocks=blocks,
            segments=segments,
            allocation=allocation,
        )

    most = plan_at(0.999)
    best = estimate(most)
    if best > budget:
        raise CompressorError(
            f"--target-macs {target} is out of reach: removing all that the guards allow "
            f"(--max-layer-ratio {max_layer_ratio} and the --round-to rounding) leaves "
            f"{best / total_macs:.3f} of the MACs"
        )
    lo, hi = 0.0, 0.999
    for _ in range(25):
        mid = (lo + hi) / 2
        if estimate(plan_at(mid)) <= budget:
            hi = mid
        else:
            lo = mid
    norm = normalized(scores) if normalize else list(scores)
    return _fill_back(plan_at(hi), norm, estimate, budget, round_to=round_to)


def _next_count(size: int, now: int, *, max_layer_ratio: float, round_to: int) -> int | None:
    """The next removal count above ``now`` that the guards allow, or None."""
    most = _limit(size, size, max_layer_ratio=max_layer_ratio, round_to=round_to)
    for n in range(now + 1, most + 1):
        allowed = _limit(size, n, max_layer_ratio=max_layer_ratio, round_to=round_to)
        if allowed > now:
            return allowed
    return None


def plan_cost_budget(
    scores: list[torch.Tensor],
    estimate: Callable[[Plan], float],
    budget: float,
    *,
    max_layer_ratio: float = 0.9,
    round_to: RoundTo = 1,
    normalize: bool = True,
    segments: Segments = None,
    neighbours: list[set[int]] | None = None,
) -> Plan:
    """The plan whose estimated cost is at most ``budget``, removing channels greedily by
    score lost per unit of cost saved (HALP's ratio, solved greedily rather than as a
    knapsack): at each step the block of ``round_to`` lowest-scored channels, in whichever
    group gives up the least score per millisecond, goes; then ``_fill_back``. A group's
    saving depends only on the layers it shares with others (``neighbours[g]``: the groups
    sharing a layer with ``g``, itself included), so only those are re-estimated.

    Raises ``CompressorError`` with the lowest cost reachable when the budget is not.
    """
    norm = normalized(scores) if normalize else list(scores)
    groups = range(len(norm))
    near = neighbours or [set(groups) for _ in groups]
    cached: dict[tuple[int, int], list[int]] = {}

    def removal(gi: int, n: int) -> list[int]:
        if (gi, n) not in cached:
            segs = [segments[gi]] if segments else None
            cached[(gi, n)] = _plan_from_counts([norm[gi]], [n], segs).remove.get(0, [])
        return cached[(gi, n)]

    counts = [0 for _ in groups]
    plan = Plan()
    cost = estimate(plan)
    ratios: dict[int, tuple[float, int]] = {}

    def consider(gi: int) -> None:
        ratios.pop(gi, None)
        step = _next_count(
            len(norm[gi]),
            counts[gi],
            max_layer_ratio=max_layer_ratio,
            round_to=_round(round_to, gi),
        )
        if step is None:
            return
        trial = Plan({**plan.remove, gi: removal(gi, step)})
        saved = cost - estimate(trial)
        new = sorted(set(removal(gi, step)) - set(removal(gi, counts[gi])))
        lost = float(norm[gi][new].sum())
        ratios[gi] = (lost / saved if saved > 0 else math.inf, step)

    for gi in groups:
        consider(gi)
    while cost > budget:
        if not ratios:
            raise CompressorError(
                f"the budget is out of reach: removing all that the guards allow leaves "
                f"{cost:.4g} (asked {budget:.4g})"
            )
        gi = min(ratios, key=lambda g: (ratios[g][0], g))
        counts[gi] = ratios[gi][1]
        plan = Plan({**plan.remove, gi: removal(gi, counts[gi])})
        cost = estimate(plan)
        for h in near[gi] | {gi}:
            consider(h)
    return _fill_back(plan, norm, estimate, budget, round_to=round_to)


def _fill_back(
    plan: Plan,
    scores: list[torch.Tensor],
    estimate: Callable[[Plan], float],
    budget: float,
    *,
    round_to: RoundTo,
) -> Plan:
    """Give channels back while the budget allows: the best-scoring removed block
    (``round_to`` channels) of any group, one at a time.

    A global ratio moves in jumps once kept counts are rounded: on resnet18 at 1/30 of the
    MACs, the stem's residual group falls from 16 kept channels to 8 within one step of the
    ratio, and the plan landed at 1/37 (1/45 after training). Filling back lands it just
    under the budget.
    """
    remove = {g: list(v) for g, v in plan.remove.items() if v}
    while True:
        best: tuple[float, int, list[int]] | None = None
        for g, removed in remove.items():
            size = len(scores[g])
            r = _round(round_to, g)
            step = r if r > 1 and size > r else 1
            order = sorted(removed, key=lambda c: float(scores[g][c]), reverse=True)
            back = order[:step]
            trial = Plan({**remove, g: sorted(set(removed) - set(back))})
            if estimate(trial) > budget:
                continue
            value = float(scores[g][back].mean())
            if best is None or value > best[0]:
                best = (value, g, back)
        if best is None:
            break
        _, g, back = best
        remove[g] = sorted(set(remove[g]) - set(back))
        if not remove[g]:
            del remove[g]
    return Plan(remove)
