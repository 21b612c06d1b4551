"""``--lambda auto``: the regularize stage sets and adapts each method's strength.

A fixed strength cannot suit every model, dataset and budget: a value that empties the
channels of LeNet-5 does nothing to resnet18 in three epochs, and HGS's published
``lambda = 1e-3`` collapsed a trained resnet18's accuracy within one epoch. So under
``--lambda auto`` the loop multiplies the method's whole penalty (with its own
hyperparameters, which fix its shape and scale) by a strength ``s`` that it sets and
adapts as it goes. The same rule serves every method:

1. **Calibrate.** Before the first step, ``s`` is set so that the penalty's gradient has
   ``start`` (1) times the norm of the cross-entropy gradient, averaged over a few
   training batches: a nudge, whatever the method's units.
2. **Adapt.** ``checks_per_epoch`` times per epoch the loop measures validation top-1 (on
   a fixed subset of the validation split, sized by ``controller_images``) and the *share*: the fraction of the selection
   scores' mass (the method's own scores: group L2 norms by default, |gamma| for
   slimming) held by the channels that the selection would remove now (with a ratio or
   MAC target; with a threshold selection there is none). Then:

   - top-1 more than ``max_drop`` points under the baseline: ``s`` is divided by
     ``growth**2`` (back off), and for the next epoch never grows above
     ``s_broken / growth`` (the model adapts; a ceiling kept for good locked the
     strength at twice its calibration for the rest of the stage);
   - more than ``max_drop / 2`` under: hold;
   - share above ``share_goal`` (or no share to measure): ``s`` is multiplied by
     ``growth`` (a faster growth, tried first, overshot: one x4 step collapsed smallcnn's
     accuracy under ssl);
   - otherwise (the target's channels are nearly empty): hold.
3. **Global phase, then focus** (``focus``, on by default). The stage starts as the
   papers write it: the penalty acts on the whole network, and each check plans, from
   the method's own scores, which channels the target would remove now. The global
   phase ends when that plan has settled, the test of Early-Bird tickets (You et al.,
   ICLR 2020): the plan differs from the one half an epoch earlier in at most
   ``mask_tolerance`` (5%) of all channels; and at the latest after ``global_epochs``
   (1). From then on each check re-plans, and until the next check the penalty's
   gradient (and any gradient the method adds by hand) is kept only on the entries the
   planned channels own: the method has chosen its channels (its scores, after its
   penalty acted everywhere) and how they are pushed (its penalty's form), and it no
   longer shrinks the channels that will stay, which cost accuracy and moved nothing
   towards the target: on resnet18 at 1/30 of the MACs (seed 0) the unfocused penalties
   left the share at 77-86% after three epochs. ``global_epochs = 0`` focuses from the
   first step on the dense model's plan (the earlier default, under which the plan held
   itself in place and the method's widths equalled the one-shot selection's).

4. **Early prune** (``early_prune``, on by default). At the end of each epoch but the last,
   once the global phase is over, the share is compared with its value an epoch earlier (at calibration, for the first
   epoch). If at that rate it would still be above ``share_goal`` at the end of the
   stage, the stage ends now and its remaining epochs are added to fine-tuning: pruning
   will remove channels that still carry weight whatever the stage does, and the pruned
   network gains more from training than the full one does from a penalty that cannot
   finish. Measured on resnet18 at 1/30 of the MACs on mnist15k (three seeds each), the
   three regularize epochs left the share at 67-85% and paid nothing (gamma selection
   without the stage, 3 fine-tuning epochs: 98.87%, ``benchmarks/results/selection.md``;
   with it: 98.88%, ``benchmarks/results/archive/2026-11-28-10128f8/quality_v6.md``). The stage always runs its first epoch (the method
   shapes the selection), and a stage that will empty the target's channels in time
   runs to its end, as does one whose model is more than ``max_drop`` under the baseline
   at that moment (the controller needs the next epoch to bring it back; pruning a model
   the penalty has just pushed out of the bound would start fine-tuning lower). The rule
   of Early-Bird tickets (stop the sparsity training once the pruning mask stops
   changing) is the same idea with a different test; here the mask test ends the global
   phase, and the share test, which a focused penalty that cannot empty its channels
   fails, ends the stage.

5. **Growing rule** (``rule``: "auto" picks it for a start with a new head, where there is
   no task accuracy to hold, or a stage of ``long_stage`` epochs or more; rules 2 and 4
   are the "bounded" rule). After Wang et al., "Neural Pruning via Growing
   Regularization" (ICLR 2021): calibrated at ``growing_start`` (0.1) of the loss
   gradient, the method's penalty acts everywhere through the global phase (a
   ``growing_global`` part of the stage, no earlier end; its checks read no scores). The
   plan the phase ends on is kept (``freeze_plan``); the penalty goes on everywhere at
   its calibrated strength, and the plan's entries shrink after every step by a decoupled
   decay ``d`` (``decay_start``, multiplied by ``growth ** (1 / growing_checks)`` at each
   of ``growing_checks`` checks an epoch, never above ``decay_cap``) while the plan's
   share of the folded group norms (what its channels still carry in the network's
   function), at its rate since the last check, would miss ``share_goal`` by
   ``deadline`` of the stage; it holds otherwise. No validation reading at the checks
   and no accuracy guard on the decay (only the plan decays: the worst case is the cut).
   With ``freeze_plan`` off the strength itself grows on a re-planned, focused penalty
   (never above ``growing_cap`` times its calibration), and an epoch more than
   ``growing_drop`` points under the stage's best divides it by ``growth**2`` and caps
   it below the strength that broke it. No early prune.

The baseline is the model's top-1 on the same images at the start of the stage. The bound
is a choice: ``max_drop`` = 1 point by default (``--set`` cannot reach it; the CLI's
``--max-drop`` does). Validation images steer the strength, so the reported validation
accuracy is not independent of the run; the test split (where the data has one) never
steers, and it is the figure to compare runs by.

How many validation images the controller reads (``controller_images``): enough that the
binomial standard error of one top-1 measurement, at the baseline's accuracy ``p``, is at
most a third of ``max_drop``: ``n >= 9 p (1 - p) / (max_drop / 100)^2``, capped at the
validation split's size (the report gives the standard error reached). At ``p`` = 92%
and a 1-point bound that is 6,624 images (Fashion-MNIST's held-out 6,000 give 0.35
points); at 99% it is 891. Two checks on the same images are paired, so the noise of the
*change* the controller acts on is smaller still.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from compressor.errors import CompressorError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from compressor.methods.base import Regularizer


RULES = ("auto", "bounded", "growing")


@dataclass(frozen=True)
class StrengthConfig:
    """Settings of ``--lambda auto``."""

    max_drop: float = 1.0  # points of validation top-1 the stage may lose against the baseline
    share_goal: float = 0.01  # stop raising once the target's channels hold this share
    growth: float = 2.0
    start: float = 1.0  # initial ||grad penalty|| / ||grad cross-entropy||
    checks_per_epoch: int = 8
    val_images: int | None = None  # None: sized by ``controller_images``
    calibration_batches: int = 4
    # after a global phase, the penalty acts only on the channels the target would remove
    # now (re-planned at every check); off: everywhere, as the papers write it
    focus: bool = True
    # the global phase (penalty everywhere) ends once the plan settles: the channels it
    # removes differ by at most ``mask_tolerance`` of all channels from the plan half an
    # epoch earlier (Early-Bird's mask distance), and at the latest after
    # ``global_epochs``; 0: focus from the first step, on the dense model's plan
    global_epochs: float = 1.0
    mask_tolerance: float = 0.05
    # end the stage at an epoch's end when the share cannot reach the goal in time; the
    # remaining epochs go to fine-tuning
    early_prune: bool = True
    # "bounded" (rules 2 and 4: hold the trained model's accuracy), "growing" (rule 5:
    # empty the planned channels by the stage's ``deadline``, no accuracy bound) or "auto":
    # growing when the start has a new head or the stage has ``long_stage`` epochs or more
    rule: str = "auto"
    long_stage: int = 8
    deadline: float = 0.75  # growing: the part of the stage by whose end the share is met
    growing_global: float = 0.25  # growing: the global phase's cap, a part of the stage
    # growing: at most ``growth`` per epoch (its checks share it), never above
    # ``growing_cap`` times the calibrated strength, and an epoch whose validation top-1
    # falls more than ``growing_drop`` points under the stage's best backs off. Without
    # them hgs's strength doubled at every check to 5e17 on MobileNetV2 and the network
    # fell to chance in its sixth epoch (its loss-increase share stayed at 1-2%)
    growing_cap: float = 1024.0
    growing_drop: float = 3.0
    # growing: the plan the global phase ends on is kept to the stage's end (Wang et al.'s
    # fixed set of weights to remove); the share is that plan's. Off: re-planned at every
    # check, as the bounded rule does. Re-planned, hgs's plan moved with its noisy
    # one-sample loss estimates and the channels it removed at the end still carried the
    # network (validation 10.5% right after the cut, MobileNetV2 at 4x)
    freeze_plan: bool = True
    # growing: the calibration's ``start`` (a new head's first epochs learn the task: at 1x
    # the loss gradient l1l2's penalty held MobileNetV2 at 15-52% validation for four
    # epochs while it trained at 75-78%) and the checks an epoch (a check of the kept plan
    # reads its folded norms only, so two suffice for growth of at most 2x an epoch)
    growing_start: float = 0.1
    growing_checks: int = 2
    # growing: once the plan is kept, the method's penalty stays at its calibrated strength,
    # everywhere, and the plan's entries (filters, BatchNorm scale and shift, consumer
    # slices) shrink by a decoupled decay, ``w *= 1 - d`` after every step (Wang et al.'s
    # growing L2 on the weights to remove, as AdamW decouples weight decay), starting at
    # ``decay_start`` and growing as the strength used to, up to ``decay_cap``. The
    # methods' own penalties, focused on the plan and grown, did not empty it on
    # MobileNetV2: l1l2 at 16x its calibration moved the plan's folded-norm share from 61%
    # to 68% and validation fell to 28.65% (its filters shrank under the BatchNorm, which
    # undoes their scale, while the running statistics lagged)
    decay_start: float = 1e-3
    decay_cap: float = 0.05

    def __post_init__(self) -> None:
        if not self.max_drop > 0:
            raise CompressorError(f"--max-drop must be positive, got {self.max_drop}")
        if not 0 <= self.share_goal < 1:
            raise CompressorError(f"share goal must be in [0, 1), got {self.share_goal}")
        if not self.growth > 1:
            raise CompressorError(f"growth must be above 1, got {self.growth}")
        if self.rule not in RULES:
            raise CompressorError(
                f"strength rule must be one of {', '.join(RULES)}, got {self.rule!r}"
            )
        if not 0 < self.deadline <= 1 or not 0 <= self.growing_global < self.deadline:
            raise CompressorError("deadline must be in (0, 1], growing_global in [0, deadline)")
        if not self.global_epochs >= 0 or not 0 <= self.mask_tolerance <= 1:
            raise CompressorError("global_epochs must be 0 or more, mask_tolerance in [0, 1]")
        if (
            not self.start > 0
            or self.checks_per_epoch < 1
            or self.growing_checks < 1
            or not self.growing_start > 0
            or not 0 < self.decay_start <= self.decay_cap < 1
            or (self.val_images is not None and self.val_images < 1)
        ):
            raise CompressorError("start, checks_per_epoch and val_images must be positive")


def resolve_rule(config: StrengthConfig, *, new_head: bool, epochs: int) -> str:
    """The rule ``--lambda auto`` runs: ``config.rule`` unless it is "auto", then
    "growing" for a new head (no task accuracy to hold: the stage is the task fine-tuning)
    or a stage of ``long_stage`` epochs or more, and "bounded" for a short stage on a
    trained model, which must not wreck it."""
    if config.rule != "auto":
        return config.rule
    return "growing" if new_head or epochs >= config.long_stage else "bounded"


def controller_images(top1: float, max_drop: float, available: int) -> tuple[int, float]:
    """How many validation images the controller reads, and the standard error (points)
    of one top-1 measurement on them: the rule in the module's docstring."""
    p = min(max(top1 / 100.0, 0.5), 0.999)  # near chance, the widest binomial spread
    needed = math.ceil(9 * p * (1 - p) / (max_drop / 100.0) ** 2)
    n = max(1, min(available, needed))
    return n, 100.0 * math.sqrt(p * (1 - p) / n)


@dataclass
class StrengthPoint:
    """One check of the controller (also the calibration, at step 0)."""

    step: int  # optimizer steps done in the stage
    epoch: float  # fractional epoch
    strength: float  # the multiplier ``s`` after this check
    val_top1: float | None
    share: float | None
    action: str  # "calibrate", "grow", "hold", "back off"
    phase: str = "global"  # "global": the penalty acts everywhere; "focus": on the plan
    mask_distance: float | None = None  # from the plan half an epoch earlier (global phase)
    decay: float | None = None  # growing rule, once the plan is kept: the plan's decay a step


@dataclass
class StrengthState:
    """What ``AutoStrength`` changes as the stage runs, and a resume restores; only
    ``AutoStrength`` writes it."""

    focusing: bool = False  # the global phase is over (rule 3)
    focused_at: float | None = None  # the epoch at which it ended
    plans: list[dict[int, list[int]]] = field(
        default_factory=list
    )  # the global phase's recent plans
    baseline: float | None = None
    strength: float = 1.0
    ceiling: float | None = None  # the lowest strength that broke the bound
    ceiling_checks: int = 0  # checks left before the ceiling lifts
    active: bool = True
    history: list[StrengthPoint] = field(default_factory=list)
    epoch_shares: list[float | None] = field(default_factory=list)  # calibration, each epoch's end
    stopped_after: int | None = None  # epochs run when the stage ended early
    projected: float | None = None  # the share expected at the stage's end
    calibrated: float = 1.0  # the strength calibration set (the growing rule's unit)
    best_top1: float | None = None  # the stage's best epoch (growing rule's guard)
    frozen: dict[int, list[int]] | None = None  # the growing rule's kept plan
    decay: float = 0.0  # the kept plan's decay a step (growing rule)
    focus_plan: dict[int, list[int]] | None = None  # the plan the penalty is focused on


def mask_distance(a: dict[int, list[int]], b: dict[int, list[int]], channels: int) -> float:
    """The fraction of all ``channels`` that one plan removes and the other keeps (the
    normalised Hamming distance of Early-Bird's pruning masks)."""
    differ = sum(len(set(a.get(g, ())) ^ set(b.get(g, ()))) for g in set(a) | set(b))
    return differ / max(channels, 1)


def removed_share(norms: list[torch.Tensor], remove: dict[int, list[int]]) -> float:
    """Fraction of ``sum(norms)`` held by the channels in ``remove`` (group -> channels)."""
    total = sum(float(n.sum()) for n in norms)
    if total <= 0:
        return 0.0
    gone = sum(float(norms[g][idx].sum()) for g, idx in remove.items() if idx)
    return gone / total


class AutoStrength:
    """The controller of ``--lambda auto`` (rule in the module docstring).

    ``evaluate(model)`` returns validation top-1 in percent on the controller's images;
    ``share(model)`` returns the share of the channels the selection would remove now
    (``share(model, plan)``: of ``plan``'s channels), or ``None`` when the selection has no
    target. ``fit`` calls ``calibrate`` once before training (not on resume) and
    ``after_step`` after every optimizer step. ``baseline``: the starting model's top-1 on
    the controller's images when the caller has measured it already (the run's baseline
    stage, on the whole validation split); calibration then does not read it again.
    """

    def __init__(
        self,
        config: StrengthConfig,
        *,
        evaluate: Callable[[nn.Module], float],
        share: Callable[..., float | None],
        plan: Callable[[], dict[int, list[int]] | None] | None = None,
        rule: str = "bounded",
        epochs: int = 1,
        baseline: float | None = None,
    ) -> None:
        if rule not in ("bounded", "growing"):
            raise CompressorError(f"unknown strength rule {rule!r} (resolve 'auto' first)")
        self.config = config
        self.rule = rule
        self.epochs = epochs  # the stage's length, which the growing rule paces itself by
        self.evaluate = evaluate
        self.share = share
        # the channels (group -> channels) the last ``share`` call's selection removes
        self.plan = plan or (lambda: None)
        self.state = StrengthState()  # everything the stage changes (and a resume restores)
        self._known_baseline = baseline
        self._multipliers: tuple[Any, dict[str, torch.Tensor]] | None = None  # (model, 1 - d*mask)

    # ------------------------------------------------------------------ calibration

    def calibrate(
        self,
        model: nn.Module,
        regularizer: Regularizer,
        batches: list[tuple[torch.Tensor, torch.Tensor]],
        features: dict[str, torch.Tensor],
    ) -> float:
        """Set the strength from gradient norms on ``batches`` (inputs already
        transformed); ``features`` is the dict the training hooks fill. Returns it."""
        import torch
        import torch.nn.functional as F

        from compressor.outputs import split_outputs

        params = [p for p in model.parameters() if p.requires_grad]
        ce_sq = pen_sq = 0.0
        was_training = model.training
        model.eval()  # gradients only: running statistics must not move
        try:
            for x, y in batches:
                features.clear()
                logits, _ = split_outputs(model(x))
                loss = F.cross_entropy(logits.float(), y)
                g = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
                ce_sq += sum(float(t.pow(2).sum()) for t in g if t is not None)
                pen = regularizer.penalty(model, features)
                extra = regularizer.extra_grad_sq_norm(model)
                if pen is not None and pen.requires_grad:
                    g = torch.autograd.grad(pen, params, allow_unused=True)
                    pen_sq += sum(float(t.pow(2).sum()) for t in g if t is not None)
                pen_sq += extra
        finally:
            model.train(was_training)
            model.zero_grad(set_to_none=True)
            features.clear()
        ce, pen_norm = math.sqrt(ce_sq / len(batches)), math.sqrt(pen_sq / len(batches))
        self.state.active = pen_norm > 0 and math.isfinite(pen_norm)
        # a penalty without gradient (the `none` method) has nothing to adapt
        self.state.strength = self.start * max(ce, 1e-12) / pen_norm if self.state.active else 1.0
        regularizer.scale = self.state.strength
        self.state.calibrated = self.state.strength
        known = self._known_baseline
        self.state.baseline = known if known is not None else self.evaluate(model)
        share = self.share(model)
        self.state.plans = []
        self._phase(regularizer, self.plan(), 0.0)
        self.state.history.append(
            StrengthPoint(
                0, 0.0, self.state.strength, self.state.baseline, share, "calibrate", self._name()
            )
        )
        self.state.epoch_shares = [share]
        return self.state.strength

    @property
    def start(self) -> float:
        """The calibration's ratio of gradients: ``growing_start`` under the growing rule."""
        c = self.config
        return c.growing_start if self.rule == "growing" else c.start

    @property
    def checks(self) -> int:
        """Checks an epoch: ``growing_checks`` under the growing rule."""
        c = self.config
        return c.growing_checks if self.rule == "growing" else c.checks_per_epoch

    def _share(self, model: nn.Module) -> float | None:
        """The share of the plan the penalty works on: the kept plan once frozen."""
        return (
            self.share(model) if self.state.frozen is None else self.share(model, self.state.frozen)
        )

    # ------------------------------------------------------------------ focus

    @property
    def global_cap(self) -> float:
        """The epoch at which the global phase ends at the latest: ``global_epochs``, or
        for the growing rule ``growing_global`` of the stage (a new head first learns the
        task; the plan it settles on is the task's)."""
        c = self.config
        if self.rule == "growing":
            return max(c.global_epochs, c.growing_global * self.epochs)
        return c.global_epochs

    def _name(self) -> str:
        return "focus" if self.state.focusing else "global"

    def _phase(
        self, regularizer: Regularizer, remove: dict[int, list[int]] | None, epoch: float
    ) -> float | None:
        """Rule 3: in the global phase, record the plan and end the phase once it has
        settled (or at ``global_epochs``); while focusing, aim the penalty at the plan.
        Returns the mask distance measured, if any."""
        c = self.config
        if remove is None or not c.focus:
            return None
        if self.state.focusing:
            if self.state.frozen is None:
                regularizer.focus_plan = self.state.focus_plan = remove
            return None
        lag = max(1, self.checks // 2)
        self.state.plans = [*self.state.plans, remove][-(lag + 1) :]
        distance = None
        if len(self.state.plans) > lag:
            channels = sum(g.size for g in regularizer.groups or [])
            distance = mask_distance(remove, self.state.plans[0], channels)
        settled = distance is not None and distance <= c.mask_tolerance
        if epoch >= self.global_cap or (settled and self.rule != "growing"):
            self._start_focus(regularizer, remove, epoch)
        return distance

    def _start_focus(
        self, regularizer: Regularizer | None, remove: dict[int, list[int]] | None, epoch: float
    ) -> None:
        """End the global phase at ``epoch``: the penalty is aimed at ``remove`` from now."""
        self.state.focusing, self.state.focused_at, self.state.plans = True, epoch, []
        if self.rule == "growing" and self.config.freeze_plan and remove is not None:
            self.state.frozen, self.state.decay = remove, self.config.decay_start
            return  # the method's penalty goes on everywhere; the decay empties the plan
        if regularizer is not None:
            regularizer.focus_plan = self.state.focus_plan = remove

    # ------------------------------------------------------------------ early prune

    def end_of_epoch(
        self,
        model: nn.Module,
        *,
        done: int,
        total: int,
        regularizer: Regularizer | None = None,
        val_top1: float | None = None,
    ) -> bool:
        """After ``done`` of ``total`` epochs: whether the stage ends now (rule 4). A global
        phase that has reached ``global_epochs`` ends here, on this epoch's plan (rule 3),
        so that the early-prune test applies at once. ``val_top1``: the epoch's validation
        top-1, which the growing rule guards with (rule 5)."""
        share = self._share(model)
        self.state.epoch_shares.append(share)
        if self.rule == "growing" and val_top1 is not None and regularizer is not None:
            self._guard(val_top1, regularizer, float(done))
        c = self.config
        if c.focus and self.state.active and not self.state.focusing and done >= self.global_cap:
            self._start_focus(regularizer, self.plan(), float(done))
        before = self.state.epoch_shares[-2] if len(self.state.epoch_shares) >= 2 else None
        if self.rule == "growing":  # the stage is the fine-tuning: it runs to its end
            return False
        if not self.config.early_prune or done >= total or share is None or before is None:
            return False
        if self.config.focus and self.state.active and not self.state.focusing:
            return False  # the method is still choosing its channels (none without a penalty)
        self.state.projected = share - max(before - share, 0.0) * (total - done)
        if self.state.projected <= self.config.share_goal:
            return False
        assert self.state.baseline is not None, "calibrate() first"
        if self.state.baseline - self.evaluate(model) > self.config.max_drop:
            return False  # out of the bound: the stage goes on, the controller backs off
        self.state.stopped_after = done
        return True

    # ------------------------------------------------------------------ adaptation

    def check_steps(self, steps_per_epoch: int) -> int:
        return max(1, steps_per_epoch // self.checks)

    def after_step(
        self, model: nn.Module, regularizer: Regularizer, *, step: int, steps_per_epoch: int
    ) -> None:
        """``step``: optimizer steps done in the stage so far."""
        if self.state.active:
            self.decay_plan(model, regularizer)
        if not self.state.active or step % self.check_steps(steps_per_epoch) != 0:
            return
        if self.rule == "growing":
            self._growing_step(model, regularizer, step=step, steps_per_epoch=steps_per_epoch)
            return
        c = self.config
        top1 = self.evaluate(model)
        share = self.share(model)
        distance = self._phase(regularizer, self.plan(), step / steps_per_epoch)
        assert self.state.baseline is not None, "calibrate() first"
        drop = self.state.baseline - top1
        if drop > c.max_drop:
            action, factor = "back off", 1 / c.growth**2
        elif drop > c.max_drop / 2:
            action, factor = "hold", 1.0
        elif share is None or share > c.share_goal:
            action, factor = "grow", c.growth
            if self.state.ceiling is not None:  # never again up to a strength that broke the bound
                factor = min(factor, max(1.0, self.state.ceiling / c.growth / self.state.strength))
                action = "hold" if factor <= 1.0 else "grow"
        else:
            action, factor = "hold", 1.0
        if action == "back off":
            self.state.ceiling = min(self.state.ceiling or self.state.strength, self.state.strength)
            self.state.ceiling_checks = c.checks_per_epoch
        elif self.state.ceiling is not None:
            self.state.ceiling_checks -= 1
            if self.state.ceiling_checks <= 0:  # an epoch within the bound: the model has adapted
                self.state.ceiling = None
        self.state.strength *= factor
        regularizer.scale = self.state.strength
        self.state.history.append(
            StrengthPoint(
                step,
                step / steps_per_epoch,
                self.state.strength,
                top1,
                share,
                action,
                self._name(),
                distance,
            )
        )

    def _knob(self) -> float:
        """What the growing rule raises: the kept plan's decay, or (no kept plan) the
        strength."""
        return self.state.decay if self.state.frozen is not None else self.state.strength

    def _turn(self, value: float, regularizer: Regularizer) -> None:
        if self.state.frozen is not None:
            self.state.decay = value
        else:
            self.state.strength = value
            regularizer.scale = value

    def _point(
        self,
        step: int,
        epoch: float,
        top1: float | None,
        share: float | None,
        action: str,
        distance: float | None = None,
    ) -> StrengthPoint:
        decay = self.state.decay if self.state.frozen is not None else None
        return StrengthPoint(
            step, epoch, self.state.strength, top1, share, action, self._name(), distance, decay
        )

    def _guard(self, top1: float, regularizer: Regularizer, epoch: float) -> None:
        """Rule 5's guard: an epoch more than ``growing_drop`` points under the stage's best
        divides the decay (or strength) by ``growth**2`` and caps it below what broke it."""
        c = self.config
        if self.state.best_top1 is None or top1 >= self.state.best_top1:
            self.state.best_top1 = top1
            return
        if self.state.best_top1 - top1 <= c.growing_drop or self.state.frozen is not None:
            return  # a kept plan's decay has no guard: emptying it costs accuracy by design
        self.state.ceiling = self._knob() / c.growth
        self._turn(self._knob() / c.growth**2, regularizer)
        step = self.state.history[-1].step if self.state.history else 0
        self.state.history.append(self._point(step, epoch, top1, None, "back off"))

    def decay_plan(self, model: nn.Module, regularizer: Regularizer) -> None:
        """Growing rule, once the plan is kept: shrink its entries by ``decay`` (after an
        optimizer step)."""
        if self.state.frozen is None or not self.state.decay:
            return
        import torch

        from compressor.pruning import focus_masks

        if self._multipliers is None or self._multipliers[0] is not model:
            assert regularizer.groups is not None, "setup() first"
            masks = focus_masks(model, regularizer.groups, self.state.frozen)
            self._multipliers = (model, {n: m.float() for n, m in masks.items() if m.any()})
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, mask in self._multipliers[1].items():
                p = params[name]
                p.mul_(1.0 - self.state.decay * mask.to(p.device, p.dtype))

    def _growing_step(
        self, model: nn.Module, regularizer: Regularizer, *, step: int, steps_per_epoch: int
    ) -> None:
        """Rule 5: in the global phase, hold the calibrated strength (no scores read before
        the phase's end); once the plan is kept and while its share is above the goal, grow
        its decay by ``growth`` an epoch unless the share falls fast enough to meet the goal
        by the ``deadline``; hold once it is met. No validation reading."""
        c = self.config
        epoch = step / steps_per_epoch
        if not self.state.focusing and epoch < self.global_cap:
            self.state.history.append(self._point(step, epoch, None, None, "hold"))
            return
        share = self._share(model)
        distance = self._phase(regularizer, self.plan(), epoch)
        before = self.state.history[-1].share if self.state.history else None
        checks_left = (c.deadline * self.epochs - epoch) * self.checks
        if not self.state.focusing or share is None or share <= c.share_goal:
            action, factor = "hold", 1.0
        elif (
            before is not None
            and checks_left >= 1
            and (share - max(before - share, 0.0) * checks_left <= c.share_goal)
        ):
            action, factor = "hold", 1.0  # on course for the deadline
        else:
            factor = c.growth ** (1 / self.checks)
            cap = (
                c.decay_cap
                if self.state.frozen is not None
                else c.growing_cap * self.state.calibrated
            )
            if self.state.ceiling is not None:
                cap = min(cap, self.state.ceiling)
            factor = min(factor, max(1.0, cap / self._knob()))
            action = "grow" if factor > 1.0 else "hold"
        self._turn(self._knob() * factor, regularizer)
        self.state.history.append(self._point(step, epoch, None, share, action, distance))

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        return {
            "strength": self.state.strength,
            "ceiling": self.state.ceiling,
            "ceiling_checks": self.state.ceiling_checks,
            "active": self.state.active,
            "baseline": self.state.baseline,
            "history": [asdict(p) for p in self.state.history],
            "epoch_shares": self.state.epoch_shares,
            "stopped_after": self.state.stopped_after,
            "focusing": self.state.focusing,
            "focused_at": self.state.focused_at,
            "plans": self.state.plans,
            "calibrated": self.state.calibrated,
            "best_top1": self.state.best_top1,
            "frozen": self.state.frozen,
            "decay": self.state.decay,
            "focus_plan": self.state.focus_plan,
        }

    def load_state_dict(self, state: dict[str, Any], regularizer: Regularizer) -> None:
        self.state.strength = float(state["strength"])
        self.state.baseline = state["baseline"]
        self.state.ceiling = state.get("ceiling")
        self.state.ceiling_checks = int(state.get("ceiling_checks", 0))
        self.state.active = bool(state.get("active", True))
        self.state.history = [StrengthPoint(**p) for p in state["history"]]
        self.state.epoch_shares = list(state.get("epoch_shares", []))
        self.state.stopped_after = state.get("stopped_after")
        self.state.focusing = bool(state.get("focusing", False))
        self.state.focused_at = state.get("focused_at")
        self.state.plans = list(state.get("plans", []))
        self.state.calibrated = float(state.get("calibrated", self.state.strength))
        self.state.best_top1 = state.get("best_top1")
        frozen = state.get("frozen")
        self.state.frozen = {int(k): list(v) for k, v in frozen.items()} if frozen else None
        self.state.decay = float(state.get("decay", 0.0))
        plan = state.get("focus_plan")
        self.state.focus_plan = {int(k): list(v) for k, v in plan.items()} if plan else None
        regularizer.focus_plan = self.state.focus_plan
        regularizer.scale = self.state.strength

    def summary(self) -> dict[str, Any]:
        """What the report keeps: the settings, the baseline and every check."""
        return {
            "config": asdict(self.config),
            "rule": self.rule,
            "baseline_top1": self.state.baseline,
            "final_strength": self.state.strength,
            "final_decay": self.state.decay if self.state.frozen is not None else None,
            "epoch_shares": self.state.epoch_shares,
            "stopped_after": self.state.stopped_after,
            "focused_at": self.state.focused_at,
            "history": [asdict(p) for p in self.state.history],
        }
