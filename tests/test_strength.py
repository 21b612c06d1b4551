"""``--lambda auto``: calibration, the adaptation rule, and its effect in training."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from compressor.errors import CompressorError
from compressor.methods import get_method, list_methods
from compressor.strength import AutoStrength, StrengthConfig, removed_share
from tests.helpers import capture_features, flow_net, small_cnn


class _Script:
    """Validation top-1 and share values played back in order."""

    def __init__(self, top1: list[float], share: list[float | None]) -> None:
        self.top1, self.share = list(top1), list(share)

    def evaluate(self, _model: nn.Module) -> float:
        return self.top1.pop(0)

    def share_of(self, _model: nn.Module) -> float | None:
        return self.share.pop(0)


def _controller(top1: list[float], share: list[float | None]) -> tuple[AutoStrength, nn.Module]:
    script = _Script(top1, share)
    auto = AutoStrength(
        StrengthConfig(max_drop=1.0, share_goal=0.01, growth=2.0, checks_per_epoch=3),
        evaluate=script.evaluate,
        share=script.share_of,
    )
    auto.state.baseline, auto.state.strength = 99.0, 1.0
    return auto, get_method("ssl")


def test_rule_grows_holds_and_backs_off() -> None:
    top1 = [99.0, 98.9, 98.4, 97.5, 98.9, 98.9, 98.9, 99.0, 99.0]
    share = [0.5, 0.03, 0.5, 0.5, 0.5, 0.5, 0.005, None, 0.5]
    auto, method = _controller(top1, share)  # 3 checks per epoch
    actions = []
    for step in range(1, len(top1) + 1):
        auto.after_step(nn.Linear(1, 1), method, step=step, steps_per_epoch=1)
        actions.append((auto.state.history[-1].action, auto.state.strength))
    assert actions == [
        ("grow", 2.0),
        ("grow", 4.0),
        ("hold", 4.0),  # 0.6 points down: more than half the bound
        ("back off", 1.0),  # 1.5 points down: beyond the bound
        ("grow", 2.0),  # for an epoch, never again up to 4 (what broke): at most 4 / growth
        ("hold", 2.0),
        ("hold", 2.0),  # the share reached the goal; an epoch within the bound lifts the ceiling
        ("grow", 4.0),  # no share (threshold selection): grow
        ("grow", 8.0),
    ]
    assert method.scale == 8.0
    assert auto.state.ceiling is None


def test_ceiling_survives_resume() -> None:
    auto, method = _controller([97.0, 99.0], [0.5, 0.5])
    auto.after_step(nn.Linear(1, 1), method, step=1, steps_per_epoch=1)  # back off
    again, _ = _controller([99.0], [0.5])
    again.load_state_dict(auto.state_dict(), method)
    for a in (auto, again):
        a.after_step(nn.Linear(1, 1), method, step=2, steps_per_epoch=1)
    assert (again.state.ceiling, again.state.ceiling_checks, again.state.strength) == (
        auto.state.ceiling,
        auto.state.ceiling_checks,
        auto.state.strength,
    )
    assert again.state.ceiling == 1.0 and again.state.ceiling_checks == 2


def _epoch_ends(
    shares: list[float | None], total: int, focusing: bool = True, **config: float
) -> AutoStrength:
    """A controller whose share reads ``shares[0]`` at calibration, then one per epoch end
    (past its global phase unless ``focusing`` is False)."""
    script = _Script([99.0] * len(shares), shares[1:])
    auto = AutoStrength(StrengthConfig(**config), evaluate=script.evaluate, share=script.share_of)
    auto.state.epoch_shares, auto.state.baseline, auto.state.focusing = [shares[0]], 99.2, focusing
    for done in range(1, len(shares)):
        if auto.end_of_epoch(nn.Linear(1, 1), done=done, total=total):
            break
    return auto


def test_early_prune_ends_the_stage_when_the_share_cannot_reach_the_goal() -> None:
    # 85% -> 80% in an epoch: two more at that rate leave 70%, far above the 1% goal
    auto = _epoch_ends([0.85, 0.80, 0.75], total=3)
    assert auto.state.stopped_after == 1 and auto.state.projected == pytest.approx(0.70)
    # a share that does not fall, or rises, ends it too
    assert _epoch_ends([0.50, 0.55], total=3).state.stopped_after == 1
    # 85% -> 40% in an epoch reaches the goal in two more: the stage runs on
    auto = _epoch_ends([0.85, 0.40, 0.005], total=3)
    assert auto.state.stopped_after is None and auto.state.epoch_shares == [0.85, 0.40, 0.005]
    # ... until a later epoch slows down: 40% -> 35% with one epoch left
    assert _epoch_ends([0.85, 0.40, 0.35], total=4).state.stopped_after == 2
    # never after the last epoch, without a share (threshold selection), or when turned off
    assert _epoch_ends([0.85, 0.84], total=1).state.stopped_after is None
    assert _epoch_ends([None, None, None], total=3).state.stopped_after is None
    assert _epoch_ends([0.85, 0.84, 0.83], total=3, early_prune=False).state.stopped_after is None
    # nor while the method is still choosing its channels (the global phase) ...
    auto = _epoch_ends([0.85, 0.80, 0.75], total=3, focusing=False, global_epochs=2.0)
    assert auto.state.stopped_after == 2 and auto.state.focused_at == 2.0  # not after epoch 1
    # ... which ends at an epoch's end once it reaches its limit: the test applies at once
    auto = _epoch_ends([0.85, 0.80, 0.75], total=3, focusing=False, global_epochs=1.0)
    assert auto.state.focusing and auto.state.focused_at == 1.0 and auto.state.stopped_after == 1
    # without focus there is no global phase to wait for; without a penalty (none) no
    # method to choose
    assert _epoch_ends([0.85, 0.80], total=3, focusing=False, focus=False).state.stopped_after == 1
    inactive = AutoStrength(StrengthConfig(), evaluate=lambda _m: 99.0, share=lambda _m: 0.8)
    inactive.state.epoch_shares, inactive.state.baseline, inactive.state.active = (
        [0.85],
        99.2,
        False,
    )
    assert inactive.end_of_epoch(nn.Linear(1, 1), done=1, total=3)


def _phases(plans: list[dict[int, list[int]]], **config: float) -> tuple[AutoStrength, nn.Module]:
    """A controller fed ``plans`` (group 0 of 20 channels): at calibration, then one per
    check, 4 checks per epoch."""
    from types import SimpleNamespace

    feed = iter(plans)
    current: dict[str, dict[int, list[int]]] = {}

    def share(_model: nn.Module) -> float:
        current["plan"] = next(feed)
        return 0.5

    auto = AutoStrength(
        StrengthConfig(checks_per_epoch=4, **config),  # type: ignore[arg-type]
        evaluate=lambda _m: 99.0,
        share=share,
        plan=lambda: current["plan"],
    )
    method = get_method("ssl")
    method.groups = [SimpleNamespace(size=20)]  # type: ignore[assignment]
    auto.state.baseline = 99.0
    auto.share(nn.Linear(1, 1))  # what calibrate reads
    auto._phase(method, auto.plan(), 0.0)
    for step in range(1, len(plans)):
        auto.after_step(nn.Linear(1, 1), method, step=step, steps_per_epoch=4)
    return auto, method


def test_global_phase_ends_when_the_plan_settles() -> None:
    """The penalty acts everywhere (no focus plan) until the plan differs from the one two
    checks (half an epoch) earlier in at most 5% of the channels; then it is aimed at the
    plan of each check."""
    moving = [{0: [0, 1, 2, 3]}, {0: [4, 5, 6, 7]}, {0: [8, 9, 10, 11]}, {0: [8, 9, 10, 12]}]
    auto, method = _phases(moving, global_epochs=2.0)
    # check 1: no plan half an epoch back yet; check 2 against calibration: 8 of 20
    # channels differ; check 3 against check 1: 8 of 20
    assert [p.mask_distance for p in auto.state.history] == [None, 0.4, 0.4]
    assert not auto.state.focusing and method.focus_plan is None
    auto, method = _phases([*moving, {0: [8, 9, 10, 12]}], global_epochs=2.0)
    assert auto.state.history[-1].mask_distance == 0.1 and not auto.state.focusing  # 2 of 20
    settled = [*moving, {0: [8, 9, 10, 12]}, {0: [8, 9, 10, 12, 13]}]  # 1 of 20 vs check 3
    auto, method = _phases(settled, global_epochs=2.0)
    assert auto.state.focusing and auto.state.focused_at == 1.25
    assert method.focus_plan == {0: [8, 9, 10, 12, 13]}
    assert [p.phase for p in auto.state.history][-2:] == ["global", "focus"]


def test_global_phase_ends_at_its_limit_and_zero_focuses_at_once() -> None:
    moving = [{0: [i, i + 1, i + 2]} for i in range(0, 18, 3)]  # never settles
    auto, method = _phases(moving, global_epochs=1.0)
    assert auto.state.focused_at == 1.0 and [p.phase for p in auto.state.history] == 3 * [
        "global"
    ] + 2 * ["focus"]
    assert method.focus_plan == moving[5]  # re-planned at every check once focused
    auto, method = _phases(moving[:1], global_epochs=0.0)
    assert auto.state.focusing and auto.state.focused_at == 0.0 and method.focus_plan == moving[0]
    auto, method = _phases(moving, focus=False)  # type: ignore[arg-type]
    assert not auto.state.focusing and method.focus_plan is None


def test_global_phase_survives_resume() -> None:
    moving = [{0: [0, 1]}, {0: [2, 3]}, {0: [4, 5]}]
    auto, method = _phases(moving)
    again = AutoStrength(StrengthConfig(), evaluate=lambda m: 0.0, share=lambda m: None)
    again.load_state_dict(auto.state_dict(), method)
    assert (again.state.focusing, again.state.plans) == (False, auto.state.plans) and len(
        again.state.plans
    ) == 3


def test_early_prune_waits_while_the_model_is_out_of_the_bound() -> None:
    script = _Script([97.9, 98.5], [0.80, 0.79])  # 1.3 points down after epoch 1, then 0.7
    auto = AutoStrength(StrengthConfig(), evaluate=script.evaluate, share=script.share_of)
    auto.state.epoch_shares, auto.state.baseline, auto.state.focusing = [0.85], 99.2, True
    assert not auto.end_of_epoch(nn.Linear(1, 1), done=1, total=4)
    assert auto.end_of_epoch(nn.Linear(1, 1), done=2, total=4) and auto.state.stopped_after == 2


def test_early_prune_decision_survives_resume() -> None:
    auto = _epoch_ends([0.85, 0.80], total=3)
    again = AutoStrength(StrengthConfig(), evaluate=lambda m: 0.0, share=lambda m: None)
    again.load_state_dict(auto.state_dict(), get_method("ssl"))
    assert again.state.stopped_after == 1 and again.state.epoch_shares == [0.85, 0.80]


def test_checks_only_every_interval_and_not_when_inactive() -> None:
    auto, method = _controller([99.0], [0.5])
    auto.config = StrengthConfig(checks_per_epoch=4)
    for step in range(1, 10):  # 40 steps per epoch: a check every 10
        auto.after_step(nn.Linear(1, 1), method, step=step, steps_per_epoch=40)
    assert auto.state.history == []
    auto.state.active = False
    auto.after_step(nn.Linear(1, 1), method, step=10, steps_per_epoch=40)
    assert auto.state.history == []


def test_calibration_sets_the_gradient_ratio() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    )
    x, y = torch.randn(8, 1, 6, 6), torch.randint(0, 3, (8,))
    method = get_method("ssl")
    method.setup(model, example_input=x[:1])
    auto = AutoStrength(StrengthConfig(start=0.5), evaluate=lambda _m: 90.0, share=lambda _m: None)
    s = auto.calibrate(model, method, [(x, y)], {})
    params = list(model.parameters())
    ce = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), params)
    pen = torch.autograd.grad(method.penalty(model, {}), params, allow_unused=True)

    def norm(grads: tuple) -> float:
        return math.sqrt(sum(float(t.pow(2).sum()) for t in grads if t is not None))

    assert s * norm(pen) == pytest.approx(0.5 * norm(ce), rel=1e-4)
    assert method.scale == s and auto.state.baseline == 90.0 and auto.state.active
    assert auto.state.history[0].action == "calibrate"


def test_calibration_reuses_a_known_baseline() -> None:
    """The run's baseline stage has read the starting model on the same images: the
    calibration takes that reading instead of another validation pass."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    method = get_method("l1")
    method.setup(model, example_input=torch.zeros(1, 1, 2, 2))
    reads: list[int] = []

    def evaluate(_m: nn.Module) -> float:
        reads.append(1)
        return 50.0

    auto = AutoStrength(StrengthConfig(), evaluate=evaluate, share=lambda _m: None, baseline=91.5)
    auto.calibrate(model, method, [(torch.randn(4, 1, 2, 2), torch.tensor([0, 1, 0, 1]))], {})
    assert not reads and auto.state.baseline == 91.5 and auto.state.history[0].val_top1 == 91.5
    fresh = AutoStrength(StrengthConfig(), evaluate=evaluate, share=lambda _m: None)
    fresh.calibrate(model, method, [(torch.randn(4, 1, 2, 2), torch.tensor([0, 1, 0, 1]))], {})
    assert reads == [1] and fresh.state.baseline == 50.0


def test_calibration_of_a_method_without_penalty() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    method = get_method("none")
    method.setup(model, example_input=torch.zeros(1, 1, 2, 2))
    auto = AutoStrength(StrengthConfig(), evaluate=lambda _m: 90.0, share=lambda _m: None)
    auto.calibrate(model, method, [(torch.randn(4, 1, 2, 2), torch.tensor([0, 1, 0, 1]))], {})
    assert not auto.state.active and method.scale == 1.0


def test_removed_share() -> None:
    norms = [torch.tensor([1.0, 3.0]), torch.tensor([2.0, 2.0, 2.0])]
    assert removed_share(norms, {0: [0], 1: [1, 2]}) == pytest.approx(5 / 10)
    assert removed_share(norms, {}) == 0.0


def test_config_ranges() -> None:
    with pytest.raises(CompressorError, match="--max-drop"):
        StrengthConfig(max_drop=0)
    with pytest.raises(CompressorError, match="growth"):
        StrengthConfig(growth=1.0)


def test_auto_strength_in_training_holds_accuracy_and_moves_weights() -> None:
    """One epoch of smallcnn with ssl under the controller: it grows the strength, backs
    off whenever the bound breaks, ends within it, and the penalty is scaled by it."""
    from compressor.checkpoint import load_model
    from compressor.config import DataConfig, TrainConfig
    from compressor.data import load_data
    from compressor.evaluation import evaluate
    from compressor.training import fit
    from tests.helpers import REFERENCE_MODEL as MODEL

    loaded = load_model(MODEL)
    data = DataConfig("mnist15k", augment=False, batch_size=256)
    bundle = load_data(data, channels=1, recorded=loaded.preprocess)
    val = torch.utils.data.Subset(bundle.val, list(range(500)))

    def top1(model: nn.Module) -> float:
        return evaluate(model, val, bundle.preprocess, device=torch.device("cpu"))["top1"]

    method = get_method("ssl")
    auto = AutoStrength(StrengthConfig(checks_per_epoch=4), evaluate=top1, share=lambda _m: None)
    result = fit(
        loaded.model,
        bundle,
        TrainConfig(epochs=1, lr=0.01, device="cpu"),
        data,
        regularizer=method,
        progress=False,
        strength=auto,
    )
    points = auto.state.history
    assert points[0].action == "calibrate" and len(points) == 5
    assert any(p.action == "grow" for p in points)
    # wherever it went, the bound holds when the stage ends
    assert points[-1].val_top1 >= auto.state.baseline - 1.0
    for before, after in itertools.pairwise(points):  # each check acted on its reading
        if after.val_top1 < auto.state.baseline - 1.0:
            assert after.strength < before.strength
    assert result.history[-1].strength == pytest.approx(method.scale)


@pytest.mark.parametrize("name", list_methods())
def test_scale_multiplies_every_gradient_a_method_adds(name: str) -> None:
    """`--lambda auto` only works if ``scale`` reaches the whole penalty, including the
    gradients a method adds by hand after backward (l2 once missed it)."""

    def grads(scale: float) -> dict[str, torch.Tensor]:
        model = flow_net() if name == "ffr" else small_cnn()
        method = get_method(name)
        x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
        method.setup(model, example_input=x, train_size=100)
        method.start_epoch(model, epoch=0)
        method.scale = scale
        feats: dict[str, torch.Tensor] = {}
        capture_features(method, model, feats)
        model(x)
        pen = method.penalty(model, feats)
        if pen is not None and pen.requires_grad:
            (scale * pen).backward()
        method.after_backward(model)
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    one, two = grads(1.0), grads(2.0)
    assert set(one) == set(two)
    if name == "none":
        assert not one
        return
    assert one, "the method adds no gradient"
    for n in one:
        assert torch.allclose(two[n], 2 * one[n], atol=1e-6), n


def test_focus_masks_mark_exactly_the_planned_channels() -> None:
    """A conv -> BN -> ReLU -> conv chain: removing channels 1 and 3 of the first conv's
    group marks its filters 1 and 3, their BN entries and the consumer's input slices."""
    from compressor.pruning import channel_groups, focus_masks

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 4, 3), nn.Flatten()
    )
    index = channel_groups(model, torch.randn(1, 2, 8, 8), ignored=[model[3]])
    assert len(index) == 1
    masks = focus_masks(model, index, {0: [1, 3]})
    picked = torch.tensor([False, True, False, True, False, False])
    assert torch.equal(masks["0.weight"], picked.view(6, 1, 1, 1).expand(6, 2, 3, 3))
    assert torch.equal(masks["0.bias"], picked)
    assert torch.equal(masks["1.weight"], picked) and torch.equal(masks["1.bias"], picked)
    assert torch.equal(masks["3.weight"], picked.view(1, 6, 1, 1).expand(4, 6, 3, 3))
    assert not masks["3.bias"].any()
    assert not any(m.any() for m in focus_masks(model, index, {}).values())


@pytest.mark.parametrize("name", [m for m in list_methods() if m != "none"])
def test_focused_penalty_moves_only_the_planned_channels(name: str) -> None:
    """Training with a focused penalty changes the unplanned entries exactly as training
    without any penalty does; the planned entries move differently (towards zero)."""
    from compressor.config import DataConfig, TrainConfig
    from compressor.data import load_data
    from compressor.training import fit

    data = DataConfig("mnist15k", augment=False, batch_size=64)
    bundle = load_data(data, channels=1)
    bundle.train = torch.utils.data.Subset(bundle.train, list(range(64)))  # one step
    bundle.val = torch.utils.data.Subset(bundle.val, list(range(64)))
    config = TrainConfig(epochs=1, lr=0.05, device="cpu", seed=0, weight_decay=0.0)

    def run(method_name: str, lam: float) -> tuple[nn.Module, dict[str, torch.Tensor]]:
        model = flow_net() if name == "ffr" else small_cnn()
        method = get_method(method_name, {"lam": lam} if method_name != "none" else {})
        x = torch.zeros(1, 1, 28, 28)
        method.setup(model, example_input=x, train_size=64)
        plan = {gi: list(range(0, g.size, 2)) for gi, g in enumerate(method.groups)}
        method.focus_plan = plan
        masks = method.focus_masks(model)
        assert masks is not None
        fit(model, bundle, config, data, regularizer=method, progress=False)
        return model, masks

    plain, _ = run("none", 0.0)
    focused, masks = run(name, 1.0 if name == "l0sgl" else 1e-2)
    plain_p, focused_p = dict(plain.named_parameters()), dict(focused.named_parameters())
    moved_planned = 0.0
    for n, mask in masks.items():
        diff = (focused_p[n] - plain_p[n]).abs().detach()
        # one step from the same weights on the same batch: the loss gradient is the same
        # in both runs, so every entry outside the plan ends exactly where `none` put it
        assert float(diff[~mask].sum()) < 1e-6, n
        moved_planned = max(moved_planned, float(diff[mask].sum()))
    assert moved_planned > 1e-4  # ... and the planned entries felt the penalty


def test_the_rule_is_growing_for_a_new_head_or_a_long_stage() -> None:
    from compressor.strength import resolve_rule

    auto = StrengthConfig()
    assert resolve_rule(auto, new_head=False, epochs=3) == "bounded"
    assert resolve_rule(auto, new_head=True, epochs=3) == "growing"
    assert resolve_rule(auto, new_head=False, epochs=auto.long_stage) == "growing"
    assert resolve_rule(StrengthConfig(rule="bounded"), new_head=True, epochs=20) == "bounded"
    with pytest.raises(CompressorError, match="strength rule"):
        StrengthConfig(rule="steady")
    with pytest.raises(CompressorError, match="deadline"):
        StrengthConfig(deadline=0.2, growing_global=0.3)


def test_growing_rule_holds_while_global_then_grows_until_on_course() -> None:
    """Growing rule: no validation reading at the checks; the calibrated strength is held
    in the global phase; once focused it grows by 2 ** (1/3) a check (at most 2x an epoch
    of 3 checks) while the share, at its current rate, would miss the goal by the deadline
    (3/4 of 4 epochs: 9 - step checks left), holds when on course and once the goal is
    met, and grows again past the deadline while the goal is not met."""

    def no_reading(_model: nn.Module) -> float:
        raise AssertionError("the growing rule reads no validation accuracy at its checks")

    shares = iter([0.5, 0.45, 0.3, 0.1, 0.05, 0.005, 0.004, 0.2, 0.2])  # none read while global
    auto = AutoStrength(
        StrengthConfig(growing_checks=3, share_goal=0.01, growth=2.0),
        evaluate=no_reading,
        share=lambda _m: next(shares),
        rule="growing",
        epochs=4,
    )
    auto.state.strength, method = 1.0, get_method("ssl")
    steps = []
    for step in range(1, 11):
        if step == 3:
            auto.state.focusing = True  # the plan settled after the second check
        auto.after_step(nn.Linear(1, 1), method, step=step, steps_per_epoch=3)
        steps.append(auto.state.history[-1].action)
    r = 2 ** (1 / 3)
    assert steps == [
        "hold",  # global phase
        "hold",
        "grow",  # 0.5 -> 0.5: no progress
        "grow",  # 0.45 - 0.05 x 5 checks left = 0.2: misses the 1% goal
        "hold",  # 0.3 - 0.15 x 4: on course
        "hold",
        "hold",  # 0.05 - 0.05 x 2: on course
        "hold",  # goal met
        "hold",
        "grow",  # past the deadline and above the goal
    ]
    assert method.scale == pytest.approx(r**3) and all(
        p.val_top1 is None for p in auto.state.history
    )
    assert not auto.end_of_epoch(nn.Linear(1, 1), done=1, total=4)  # never ends early


def test_growing_rule_is_capped_and_backs_off_after_a_bad_epoch() -> None:
    """The strength never exceeds growing_cap x its calibration, and an epoch more than
    growing_drop points under the stage's best divides it by 4 and caps it below what
    broke it (hgs's uncapped strength reached 5e17 and took MobileNetV2 to chance)."""
    auto = AutoStrength(
        StrengthConfig(growing_checks=1, growing_cap=8.0, growing_drop=3.0),
        evaluate=lambda m: 0.0,
        share=lambda m: 0.5,  # never on course
        rule="growing",
        epochs=100,
    )
    method = get_method("ssl")
    auto.state.strength = auto.state.calibrated = 1.0
    auto.state.focusing = True
    for step in range(1, 6):
        auto.after_step(nn.Linear(1, 1), method, step=step, steps_per_epoch=1)
    assert auto.state.strength == 8.0 and auto.state.history[-1].action == "hold"  # the cap
    for top1 in (80.0, 82.0, 80.5):  # within 3 points of the best: nothing
        auto.end_of_epoch(nn.Linear(1, 1), done=1, total=100, regularizer=method, val_top1=top1)
    assert auto.state.strength == 8.0
    auto.end_of_epoch(nn.Linear(1, 1), done=2, total=100, regularizer=method, val_top1=78.5)
    assert auto.state.strength == 2.0 and method.scale == 2.0 and auto.state.ceiling == 4.0
    assert auto.state.history[-1].action == "back off" and auto.state.history[-1].val_top1 == 78.5
    for step in range(6, 10):
        auto.after_step(nn.Linear(1, 1), method, step=step, steps_per_epoch=1)
    assert auto.state.strength == 4.0  # grows again, never up to what broke it
    again = AutoStrength(
        StrengthConfig(), evaluate=lambda m: 0.0, share=lambda m: None, rule="growing"
    )
    again.load_state_dict(auto.state_dict(), method)
    assert (again.state.best_top1, again.state.calibrated, again.state.ceiling) == (82.0, 1.0, 4.0)


def test_growing_rule_caps_the_global_phase_at_a_part_of_the_stage() -> None:
    config = StrengthConfig(global_epochs=1.0, growing_global=0.25)
    growing = AutoStrength(
        config, evaluate=lambda m: 0.0, share=lambda m: None, rule="growing", epochs=16
    )
    bounded = AutoStrength(config, evaluate=lambda m: 0.0, share=lambda m: None, epochs=16)
    assert (growing.global_cap, bounded.global_cap) == (4.0, 1.0)
    with pytest.raises(CompressorError, match="resolve 'auto' first"):
        AutoStrength(config, evaluate=lambda m: 0.0, share=lambda m: None, rule="auto")


def test_growing_rule_keeps_the_plan_and_decays_it() -> None:
    """Once the global phase ends (at a quarter of the stage, not earlier, and reading no
    scores before), the growing rule keeps that plan to the stage's end, reads the share
    of that plan, leaves the method's penalty unfocused at its strength, and shrinks the
    plan's entries by a decay that grows (at most 2x an epoch); a resume keeps it all."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64, 2),
    )
    method = get_method("ssl")
    method.setup(model, example_input=torch.zeros(1, 3, 8, 8))
    plans = iter([{1: [1, 2]}, {1: [3]}, {1: [0]}])  # group 1: the first conv's channels
    latest: dict[str, dict[int, list[int]]] = {}
    asked: list[object] = []

    def share(_model: nn.Module, fixed: dict[int, list[int]] | None = None) -> float:
        latest["remove"] = next(plans)
        asked.append(fixed)
        return 0.5

    auto = AutoStrength(
        StrengthConfig(growing_checks=2, global_epochs=0.5, decay_start=0.01),
        evaluate=lambda m: 0.0,
        share=share,
        plan=lambda: latest.get("remove"),
        rule="growing",
        epochs=8,
    )
    auto.state.strength = method.scale = 3.0
    before = model[0].weight.detach().clone()
    for step in range(1, 4):  # the global phase: a quarter of 8 epochs is 4 steps
        auto.after_step(model, method, step=step, steps_per_epoch=2)
    assert not asked and not auto.state.focusing and torch.equal(model[0].weight, before)
    auto.after_step(model, method, step=4, steps_per_epoch=2)
    assert auto.state.frozen == {1: [1, 2]} and method.focus_plan is None and method.scale == 3.0
    assert (
        auto.state.decay == pytest.approx(0.01 * 2**0.5) and auto.state.history[-1].action == "grow"
    )
    auto.after_step(model, method, step=5, steps_per_epoch=2)
    assert asked == [None, {1: [1, 2]}] and auto.state.frozen == {1: [1, 2]}
    w = model[0].weight.detach()
    assert torch.equal(w[[0, 3]], before[[0, 3]])  # the kept channels: untouched
    # one decayed step (step 5, at the decay step 4 set); the next check grew it again
    assert torch.allclose(w[[1, 2]], before[[1, 2]] * (1 - 0.01 * 2**0.5))
    assert model[1].weight[1] < 1.0 and model[1].weight[0] == 1.0  # the BatchNorm scale too
    assert auto.state.decay == pytest.approx(0.02)
    again = AutoStrength(
        StrengthConfig(), evaluate=lambda m: 0.0, share=lambda m: None, rule="growing"
    )
    again.load_state_dict(auto.state_dict(), get_method("ssl"))
    assert again.state.frozen == {1: [1, 2]} and again.state.decay == auto.state.decay
