"""Which channels go: one dispatch from a ``PruneConfig`` (a score threshold, a ratio, a
MAC target or a latency target) to a plan, the solvers that meet a MAC target on the
counted model and a latency target on the measured one (``meet_latency``), and
``prune_loaded``, which selects and removes channels. ``compressor prune`` and
``compressor compress`` (its pruning stage and the share its controller watches) both
select through here.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from compressor.config import PruneConfig, to_dict
from compressor.errors import CompressorError

if TYPE_CHECKING:
    from compressor.checkpoint import LoadedModel
    from compressor.pruning import GroupIndex, Plan

TARGET_ATTEMPTS = 8
LATENCY_ATTEMPTS = 5  # measured plans at most, per latency target
LATENCY_TOLERANCE = 0.05  # a measured latency this close to the target (relative) is met


def method_prune_config(
    method: str,
    *,
    ratio: float | None = None,
    target_macs: float | None = None,
    threshold: float | None = None,
    target_latency: float | None = None,
    target_speedup: float | None = None,
    relative: bool = False,
    **options: Any,
) -> PruneConfig:
    """The selection asked for (one of ``ratio``, ``target_macs``, ``threshold``,
    ``target_latency``, ``target_speedup``), else the method's own default
    (``Method.selection``: l1l2 and l0sgl select by threshold, the others by a ratio);
    ``options`` are PruneConfig's other fields."""
    from compressor.methods import method_class

    default = method_class(method).selection  # an unknown method is refused here
    asked = {
        "ratio": ratio,
        "target_macs": target_macs,
        "threshold": threshold,
        "target_latency": target_latency,
        "target_speedup": target_speedup,
    }
    chosen: dict[str, Any] = {k: v for k, v in asked.items() if v is not None}
    if not chosen:
        chosen = {k: v for k, v in default.items() if k != "relative"}
        relative = bool(default.get("relative", False))
    return PruneConfig(**chosen, relative=relative, **options)


def guards(index: GroupIndex, config: PruneConfig) -> dict[str, Any]:
    """The limits every plan keeps: the per-layer cap, channel rounding, the groups that
    must keep their shape together, and the network's segments."""
    return {
        "max_layer_ratio": config.max_layer_ratio,
        "round_to": index.round_to(config.round_to),
        "blocks": [g.blocks for g in index],
        "segments": index.segments(),
    }


def select(
    scores: list[Any],
    index: GroupIndex,
    config: PruneConfig,
    *,
    comparable: bool,
    macs: tuple[int, Any] | None = None,
    goal: float | None = None,
) -> Plan:
    """The plan ``config`` asks for from ``scores``: by threshold, by ratio, or by MAC
    target (``macs`` is ``mac_estimator``'s (total, estimate); ``goal`` replaces the
    target's fraction, as the solver's corrected budget). ``comparable`` scores need no
    per-group normalisation for a global ranking."""
    from compressor.pruning import plan_ratio, plan_target_macs, plan_threshold

    limits = guards(index, config)
    if config.threshold is not None:
        return plan_threshold(scores, config.threshold, relative=config.relative, **limits)
    if config.ratio is not None:
        return plan_ratio(
            scores, config.ratio, normalize=not comparable, allocation=config.allocation, **limits
        )
    assert config.target_macs is not None and macs is not None
    total, estimate = macs
    return plan_target_macs(
        scores,
        estimate,
        total,
        config.target_macs if goal is None else goal,
        normalize=not comparable,
        allocation=config.allocation,
        **limits,
    )


def select_channels(
    model: Any,
    index: GroupIndex,
    scores: list[Any],
    config: PruneConfig,
    *,
    comparable: bool,
    input_size: tuple[int, int, int],
) -> tuple[Plan, Any, int]:
    """(plan, the MAC solver's attempts or the latency solver's record, MACs before) for
    ``model``; a MAC target is met on the counted model (``meet_target``), a latency
    target on the measured one (``latency_plan``)."""
    from compressor.pruning import mac_estimator

    macs_before, estimate = mac_estimator(model, index, input_size)
    if config.latency_target:
        plan, info = latency_plan(
            model, index, scores, config, comparable=comparable, input_size=input_size
        )
        return plan, info, macs_before
    if config.ratio is not None and config.threshold is None:
        plan, attempts = meet_ratio(scores, index, config, comparable=comparable)
        return plan, attempts, macs_before
    if config.target_macs is None or config.threshold is not None:
        return select(scores, index, config, comparable=comparable), [], macs_before

    def plan_for(goal: float) -> Any:
        return select(
            scores,
            index,
            config,
            comparable=comparable,
            macs=(macs_before, estimate),
            goal=goal,
        )

    plan, attempts = meet_target(
        model, index, plan_for, config.target_macs, macs_before, input_size
    )
    return plan, attempts, macs_before


def prune_loaded(
    loaded: LoadedModel,
    config: PruneConfig,
    *,
    input_size: tuple[int, int, int],
    scores: list[Any] | None = None,
    comparable: bool = False,
    index: Any = None,
) -> dict[str, Any]:
    """Select and physically remove channels of ``loaded.model`` in place.

    ``scores`` overrides the magnitude scores (a method's own criterion); ``comparable``
    says they need no per-group normalisation for global ranking; ``index`` is the
    model's ``GroupIndex`` when the caller traced it already. A MAC target is met from
    below and within 10% where the channel granularity allows: the plan for the target
    is applied to a copy, counted, and re-planned with a corrected budget (up to
    ``TARGET_ATTEMPTS`` times, ``meet_target``). Returns the before/after figures and the
    per-layer channels.
    """
    import torch

    from compressor.analysis import count_macs, count_params, layer_table
    from compressor.pruning import apply_plan, channel_groups, group_scores
    from compressor.timm_archs import fold_weight_standardization

    if index is None:  # a caller with an index has folded before tracing it
        fold_weight_standardization(loaded)
    model = loaded.model
    model.eval()
    t0 = time.perf_counter()
    before_layers = layer_table(model, input_size)
    params_before = count_params(model)
    if index is None:
        index = channel_groups(model, torch.zeros(1, *input_size))
    if scores is None:
        scores = group_scores(index, model, config.importance)
    plan, attempts, macs_before = select_channels(
        model, index, scores, config, comparable=comparable, input_size=input_size
    )
    latency = attempts if config.latency_target else None
    from compressor.pruning.verify import checked_cut, zeroed_copy

    reference = zeroed_copy(model, index, plan.remove)
    apply_plan(index, plan)
    checked_cut(reference, model, index, plan, input_size)
    del reference
    seconds = time.perf_counter() - t0
    after_layers = layer_table(model, input_size)
    macs_after = count_macs(model, input_size)
    if config.target_macs is not None and macs_after > config.target_macs * macs_before:
        raise CompressorError(
            f"--target-macs {config.target_macs} not reached: {macs_after / macs_before:.3f} of the MACs remain"
        )
    layers = [
        {"name": b.name, "type": b.type, "before": b.out_channels, "after": a.out_channels}
        for b, a in zip(before_layers, after_layers, strict=True)
    ]
    from compressor.strength import removed_share

    info = {
        "groups": len(index),
        "groups_kept_whole": list(index.skipped),
        "groups_unsafe": dict(index.unsafe),
        # the fraction of the scores' mass that the removed channels held
        "removed_share": removed_share(scores, plan.remove),
        "prunable_channels": index.prunable_channels,
        "removed_channels": index.removed_channels(plan),
        "params_before": params_before,
        "params_after": count_params(model),
        "macs_before": macs_before,
        "macs_after": macs_after,
        "macs_ratio": macs_before / max(macs_after, 1),
        "target_attempts": [] if latency else attempts,
        **({"latency": latency} if latency else {}),
        "input_size": list(input_size),
        "seconds": seconds,
        "layers": layers,
    }
    info["target_miss"] = target_miss(info, config)
    return info


RATIO_TOLERANCE = 0.1  # a removed fraction within 10% of --ratio (relative) meets it
# a MAC cut within 10% of the asked one meets --target-macs: at least target / 1.1 of the
# MACs kept (at 0.5, 0.4545: a 2.2x cut for a 2x target), never more than target
MAC_TOLERANCE = 0.1


def meet_ratio(
    scores: list[Any], index: Any, config: PruneConfig, *, comparable: bool
) -> tuple[Any, list[dict[str, float]]]:
    """The plan whose removed fraction of all prunable channels comes closest to
    ``config.ratio``. ``--round-to`` rounds each layer's cut down, so a plan for the ratio
    itself can remove far less (8 of 104 channels for 0.2 on the example model); each
    attempt scales the asked fraction by ``ratio / removed`` (at most ``TARGET_ATTEMPTS``),
    until the removed fraction is within ``RATIO_TOLERANCE`` of the ratio."""
    target, total = float(config.ratio or 0.0), max(index.prunable_channels, 1)
    goal, attempts, best = target, [], None
    for _ in range(TARGET_ATTEMPTS):
        plan = select(scores, index, dataclasses.replace(config, ratio=goal), comparable=comparable)
        got = index.removed_channels(plan) / total
        attempts.append({"goal": goal, "removed_fraction": got})
        if best is None or abs(got - target) < abs(best[1] - target):
            best = (plan, got)
        if abs(got - target) <= RATIO_TOLERANCE * target or goal >= 0.99:
            break
        goal = min(0.99, goal * target / max(got, 0.5 / total))
    assert best is not None
    for a in attempts:
        a["chosen"] = a["removed_fraction"] == best[1]
    return best[0], attempts


def target_miss(info: dict[str, Any], config: PruneConfig) -> str | None:
    """Why a plan missed its ratio or MAC target by more than the tolerance, in one line
    (None when met): the output and the JSON say it rather than pass it over."""
    if config.ratio is not None and config.threshold is None:
        got = info["removed_channels"] / max(info["prunable_channels"], 1)
        if abs(got - config.ratio) <= RATIO_TOLERANCE * config.ratio:
            return None
        return (
            f"asked {config.ratio:.1%} of the channels, removed {got:.1%} "
            f"({info['removed_channels']} of {info['prunable_channels']}): --round-to "
            f"{config.round_to} and --max-layer-ratio {config.max_layer_ratio:g} bound each "
            "layer's cut"
        )
    if config.target_macs is not None:
        left = info["macs_after"] / max(info["macs_before"], 1)
        if left >= config.target_macs / (1 + MAC_TOLERANCE):
            return None
        return (
            f"asked {config.target_macs:g} of the MACs, kept {left:.3f}: the channel steps "
            f"(--round-to {config.round_to}) are coarser than the target"
        )
    return None


def meet_target(
    model: Any,
    index: Any,
    plan_for: Callable[[float], Any],
    target: float,
    macs_before: int,
    input_size: tuple[int, int, int],
) -> tuple[Any, list[dict[str, float]]]:
    """The plan whose counted MACs come closest to ``target`` (a fraction) from below.

    The estimator holds pooling and other unattributed MACs constant, so its plans land
    under the target, by a third at 30x on resnet18 before this correction. Each attempt
    prunes a copy, counts it with fvcore and scales the budget by ``target / reached``.
    """
    import torch

    from compressor.analysis import count_macs
    from compressor.pruning import pruned_copy
    from compressor.pruning.verify import broken_cut, failure

    goal = target
    attempts: list[dict[str, float]] = []
    best: tuple[float, Any] | None = None
    low: float | None = None
    high: float | None = None
    for _ in range(TARGET_ATTEMPTS):
        try:
            plan = plan_for(min(goal, 1.0))
        except CompressorError:
            if best is None:
                raise
            break  # a corrected budget beyond what the guards allow: keep the best so far
        trial_model = pruned_copy(model, index, plan, torch.zeros(1, *input_size))
        try:
            reached = count_macs(trial_model, input_size) / macs_before
        except Exception as e:  # the model's own code, after the cut
            raise broken_cut(failure(e)) from e
        attempts.append({"budget": goal, "reached": reached})
        if reached <= target and (best is None or reached > best[0]):
            best = (reached, plan)
        if target / (1 + MAC_TOLERANCE) <= reached <= target:
            break
        if reached <= target:
            low = goal if low is None else max(low, goal)
        else:
            high = goal if high is None else min(high, goal)
        # bisect once the target is bracketed, else correct the budget proportionally
        goal = (low + high) / 2 if low is not None and high is not None else goal * target / reached
    if best is None:
        raise CompressorError(
            f"--target-macs {target} not reached: {attempts[-1]['reached']:.3f} of the MACs remain"
        )
    return best[1], attempts


def neighbours(index: GroupIndex) -> list[set[int]]:
    """Per group, the groups that share a layer with it (itself included)."""
    modules = [{s.module for s in g.slices if not s.norm_layer} for g in index]
    return [{h for h, other in enumerate(modules) if other & mine} for mine in modules]


class LatencyGoal:
    """A latency target on its device: the table (``compressor.latency``; measured once,
    then cached), its predictor, and the budget in predicted milliseconds. ``plan`` gives
    the predicted plan (the compress controller's view during training); ``latency_plan``
    meets the target on the measured model."""

    def __init__(
        self, model: Any, index: GroupIndex, config: PruneConfig, input_size: tuple[int, int, int]
    ) -> None:
        from compressor.data import complete_size
        from compressor.latency import Predictor, latency_table

        size = config.latency_size
        self.size = complete_size(size, input_size[0]) if size else input_size
        self.table, self.path, self.cached = latency_table(
            model, index, self.size, config.device, config.round_to
        )
        self.predict = Predictor(self.table, model, index)
        self.index, self.config = index, config
        self.budget = config.target_latency or self.table.dense_ms / (config.target_speedup or 1.0)
        self.asked = (
            f"--target-latency {config.target_latency:g} ms"
            if config.target_latency
            else f"--target-speedup {config.target_speedup:g}"
        )
        if self.budget >= self.table.dense_ms:
            raise CompressorError(
                f"{self.asked} asks for nothing: the model already runs in "
                f"{self.table.dense_ms:.3f} ms at {'x'.join(map(str, self.size))} on this device"
            )
        self.near = neighbours(index)

    def plan(self, scores: list[Any], *, comparable: bool, goal: float | None = None) -> Plan:
        from compressor.pruning import Plan, plan_cost_budget, plan_ratio, plan_target_macs

        config, limits = self.config, guards(self.index, self.config)
        goal = self.budget if goal is None else goal
        try:
            if config.allocation == "uniform":
                dense = self.predict(Plan())
                return plan_target_macs(
                    scores,
                    self.predict,
                    dense,
                    goal / dense,
                    normalize=not comparable,
                    allocation="uniform",
                    **limits,
                )
            return plan_cost_budget(
                scores,
                self.predict,
                goal,
                max_layer_ratio=config.max_layer_ratio,
                round_to=limits["round_to"],
                normalize=not comparable,
                segments=limits["segments"],
                neighbours=self.near,
            )
        except CompressorError:
            fastest = self.predict(plan_ratio(scores, 0.999, allocation="uniform", **limits))
            raise CompressorError(
                f"{self.asked} is out of reach: removing all that the guards allow "
                f"(--max-layer-ratio {config.max_layer_ratio}) runs in about {fastest:.3f} ms, "
                f"{self.table.dense_ms / fastest:.2f}x the model's {self.table.dense_ms:.3f} ms"
            ) from None


def latency_plan(
    model: Any,
    index: GroupIndex,
    scores: list[Any],
    config: PruneConfig,
    *,
    comparable: bool,
    input_size: tuple[int, int, int],
) -> tuple[Plan, dict[str, Any]]:
    """The plan that meets ``config``'s latency target on its device (``meet_latency``),
    and the record of how."""
    goal = LatencyGoal(model, index, config, input_size)
    goal.plan(scores, comparable=comparable)  # an unreachable target stops here

    def plan_for(ms: float) -> Plan:
        return goal.plan(scores, comparable=comparable, goal=ms)

    plan, attempts = meet_latency(
        model, index, plan_for, goal.budget, config, goal.size, goal.predict
    )
    chosen = next(a for a in attempts if a.get("chosen"))
    table = goal.table
    return plan, {
        "target_ms": config.target_latency,
        "target_speedup": config.target_speedup,
        "budget_ms": goal.budget,
        "input_size": list(goal.size),
        "device": {k: v for k, v in to_dict(config.device).items() if v is not None},
        "table": {
            "file": str(goal.path),
            "cached": goal.cached,
            "seconds": table.seconds,
            "checks": table.checks,
            "dense_ms": table.dense_ms,
        },
        **{
            k: chosen[k]
            for k in (
                "predicted_ms",
                "measured_ms",
                "measured_ci95_ms",
                "dense_measured_ms",
                "speedup",
                "speedup_ci95",
            )
        },
        "met": abs(chosen["miss"] - 1) <= LATENCY_TOLERANCE,
        "attempts": attempts,
        "layers": goal.predict.layer_rows(plan),
    }


def meet_latency(
    model: Any,
    index: GroupIndex,
    plan_for: Callable[[float], Plan],
    budget: float,
    config: PruneConfig,
    size: tuple[int, int, int],
    predict: Callable[[Plan], float],
) -> tuple[Plan, list[dict[str, Any]]]:
    """Plan for ``budget`` ms, export the pruned copy, measure it beside the dense model
    on the device, and while it misses the target by more than ``LATENCY_TOLERANCE``,
    scale the budget by the miss and plan again (at most ``LATENCY_ATTEMPTS`` times).
    Returns the closest plan, and the attempts (the closest marked ``chosen``)."""
    from pathlib import Path

    import torch

    from compressor.latency import export_for_latency, measure_on
    from compressor.pruning import pruned_copy
    from compressor.utils import system_scratch

    attempts: list[dict[str, Any]] = []
    best: tuple[float, Plan, dict[str, Any]] | None = None
    goal = budget
    with system_scratch() as tmp:
        dense = Path(tmp) / "dense.onnx"
        export_for_latency(model, dense, size)
        for k in range(LATENCY_ATTEMPTS):
            try:
                plan = plan_for(goal)
            except CompressorError:
                break  # a corrected budget beyond what the guards allow: keep the best so far
            trial = Path(tmp) / f"trial{k}.onnx"
            export_for_latency(pruned_copy(model, index, plan, torch.zeros(1, *size)), trial, size)
            (d, t), _ = measure_on(
                config.device, [dense, trial], min_runs=20, min_seconds=1.0, max_seconds=5.0
            )
            speedup = d["p50_ms"] / t["p50_ms"]
            miss = (
                t["p50_ms"] / config.target_latency
                if config.target_latency
                else (config.target_speedup or 1.0) / speedup
            )
            record = {
                "budget_ms": goal,
                "predicted_ms": predict(plan),
                "measured_ms": t["p50_ms"],
                "measured_ci95_ms": t.get("p50_ci95_ms"),
                "dense_measured_ms": d["p50_ms"],
                "speedup": speedup,
                "speedup_ci95": t.get("speedup_vs_first_ci95"),
                "miss": miss,
            }
            attempts.append(record)
            if best is None or abs(miss - 1) < abs(best[0] - 1):
                best = (miss, plan, record)
            if abs(miss - 1) <= LATENCY_TOLERANCE:
                break
            goal /= miss
    assert best is not None  # the first plan was checked by the caller
    best[2]["chosen"] = True
    return best[1], attempts
