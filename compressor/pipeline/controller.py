"""``--lambda auto``'s wiring into a run: the controller of the regularize stage and the
share it steers by (the score mass of the channels the selection would remove now), which
joins the strength controller (``compressor.strength``) and the selection
(``compressor.selection``)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from compressor.errors import CompressorError
from compressor.pipeline.state import Run


def share_function(
    run: Run, method: Any, latest: dict[str, Any] | None = None
) -> Callable[..., float | None]:
    """The share of the method's score mass held by the channels that the selection would
    remove now (None without a ratio, MAC or latency target); that plan (group -> channels) goes
    into ``latest["remove"]``. The selection uses the method's own scores, on the same
    fixed training samples as at pruning (hgs: the estimated loss increase)."""
    from compressor.data import sample_batch
    from compressor.pruning import group_scores, mac_estimator
    from compressor.selection import LatencyGoal, meet_ratio, select
    from compressor.strength import removed_share

    prune = run.config.prune
    if prune.threshold is not None:
        return lambda _model: None
    estimator: list[Any] = []
    latest = latest if latest is not None else {}
    samples = int(getattr(method.params, "samples", 64))
    calibration: list[Any] = []

    def share(model: Any, fixed: dict[int, list[int]] | None = None) -> float | None:
        """The share of the plan now; or of ``fixed`` (the growing rule's kept plan) in
        the folded group norms, which say what the channels still carry in the network's
        function (hgs's loss-increase estimates held 1-2% of their mass on a plan whose
        channels kept the kept ones' norms, and the cut left chance)."""
        index = method.groups
        if fixed is not None:
            return removed_share(group_scores(index, model, "folded"), fixed)
        if not calibration:
            calibration.extend(
                sample_batch(run.bundle, "train", samples, seed=run.config.regularize.seed)
            )
        device = next(model.parameters()).device
        x, y = (t.to(device) for t in calibration)
        scores = [s.detach().cpu() for s in method.scores(model, index, calibration=(x, y))]
        if prune.ratio is None and not estimator:
            # the structure does not change while training: count (or time) once
            dense = copy.deepcopy(model).cpu()
            if prune.latency_target:
                estimator.append(LatencyGoal(dense, index, prune, run.size))
            else:
                estimator.extend(mac_estimator(dense, index, run.size))
        try:
            if prune.latency_target:  # the table's prediction; pruning measures
                plan = estimator[0].plan(scores, comparable=method.comparable_scores)
            elif prune.ratio is not None:  # corrected for rounding, as pruning will be
                plan, _ = meet_ratio(scores, index, prune, comparable=method.comparable_scores)
            else:
                plan = select(
                    scores,
                    index,
                    prune,
                    comparable=method.comparable_scores,
                    macs=(estimator[0], estimator[1]) if estimator else None,
                )
        except CompressorError:
            if prune.ratio is not None:
                raise
            return None
        latest["remove"] = plan.remove
        return removed_share(scores, fixed if fixed is not None else plan.remove)

    return share


def strength_controller(run: Run, method: Any) -> tuple[Any, dict[str, Any]]:
    """``--lambda auto``'s controller (None without it) and what the report records of it:
    the validation images it reads, enough that one top-1 reading's noise stays well under
    ``--max-drop`` (``strength.controller_images``)."""
    import torch

    from compressor.strength import AutoStrength, controller_images, resolve_rule

    config = run.config
    if config.strength is None or config.regularize.epochs <= 0:
        return None, {}
    epochs = config.regularize.epochs
    rule = resolve_rule(config.strength, new_head=run.new_head, epochs=epochs)
    if rule == "growing":
        run.log(
            f"  --lambda auto, growing rule ({'a new head' if run.new_head else f'{epochs} epochs'}): "
            f"the penalty everywhere for {config.strength.growing_global:.0%} of the stage, "
            "then the planned channels decay until they hold "
            f"{100 * config.strength.share_goal:g}% of their folded norms, by "
            f"{config.strength.deadline:.0%} of the stage; no accuracy bound"
        )
    val = run.bundle.val
    n_val, sd = controller_images(
        run.read("baseline.json")["val_top1"], config.strength.max_drop, len(val)
    )
    if config.strength.val_images is not None:
        n_val = min(len(val), config.strength.val_images)
    if len(val) > n_val:
        idx = torch.randperm(len(val), generator=torch.Generator().manual_seed(0))
        val = torch.utils.data.Subset(val, idx[:n_val].tolist())
    if rule == "bounded":
        run.log(
            f"  --lambda auto reads {n_val} of {len(run.bundle.val)} validation images "
            f"(standard error of one top-1 about {sd:.2f} points; --max-drop "
            f"{config.strength.max_drop:g})"
        )

    def top1(model: Any, val: Any = val) -> float:
        return float(run.accuracy(model, val)["top1"])

    latest: dict[str, Any] = {}
    # the baseline stage read the same model on the whole split: calibration reuses it
    known = run.read("baseline.json")["val_top1"] if len(val) == len(run.bundle.val) else None
    strength = AutoStrength(
        config.strength,
        evaluate=top1,
        share=share_function(run, method, latest),
        plan=lambda: latest.get("remove"),
        rule=rule,
        epochs=epochs,
        baseline=known,
    )
    return strength, {"val_images": n_val, "top1_standard_error": sd}
