"""Each method's penalty against values worked out by hand, numerical safety, and effect."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from compressor.errors import CompressorError
from compressor.methods import get_method, list_methods, method_class, register
from compressor.methods.base import Method
from compressor.pruning import channel_groups
from tests.helpers import capture_features, flow_net, small_cnn

ALL = list_methods()


def tiny() -> nn.Module:
    """conv1 (1->2, 1x1) -> conv2 (2->2, 1x1) -> global pool -> fc (2->2), no biases.

    Groups: A = conv1's outputs (owning conv1.w[c] and conv2.w[:, c]);
            B = conv2's outputs (owning conv2.w[c] and fc.w[:, c]); fc's outputs are kept.
    """
    model = nn.Sequential(
        nn.Conv2d(1, 2, 1, bias=False),
        nn.Conv2d(2, 2, 1, bias=False),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2, 2, bias=False),
    )
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([3.0, 0.0]).view(2, 1, 1, 1))
        model[1].weight.copy_(torch.tensor([[1.0, 2.0], [0.0, 4.0]]).view(2, 2, 1, 1))
        model[4].weight.copy_(torch.tensor([[1.0, 0.0], [2.0, 0.0]]))
    return model


def penalty_of(name: str, options: dict, model: nn.Module | None = None) -> float:
    model = model or tiny()
    method = get_method(name, options)
    method.setup(model, example_input=torch.zeros(1, 1, 4, 4), train_size=1)
    method.start_epoch(model, epoch=0)
    value = method.penalty(model, {})
    return float(value.detach()) if value is not None else 0.0


S5, S10, S20 = math.sqrt(5), math.sqrt(10), math.sqrt(20)

# Worked out by hand from the weights above (eps terms are below 1e-3).
EXPECTED = {
    # sum |w| = conv1 (3) + conv2 (7) + fc (3)
    "l1": ({"lam": 1.0}, 13.0),
    # 1/2 sum w^2 = (9 + 21 + 5) / 2
    "l2": ({"lam": 1.0}, 17.5),
    # filters: conv1 rows 3, 0; conv2 rows sqrt5, 4 / channels: conv2 cols 1, sqrt20; fc cols sqrt5, 0
    "ssl": ({"lam": 1.0, "lam_channel": 1.0}, (3 + 0 + S5 + 4) + (1 + S20 + S5 + 0)),
    # group A norms (sqrt10, sqrt20), group B norms (sqrt10, 4): sum of l1/l2 ratios
    "l1l2": ({"lam": 1.0}, (S10 + S20) / math.sqrt(30) + (S10 + 4) / math.sqrt(26)),
    # R: conv2's input channels: (sqrt1 + sqrt0)^2 + (sqrt2 + sqrt4)^2, plus conv1's image
    # channel, which no group owns: (sqrt3 + sqrt0)^2 = 3; l1 of convs: 10
    "hgs": ({"lam": 1.0, "lam2": 0.5}, 0.5 * (1 + (math.sqrt(2) + 2) ** 2 + 3) + 0.5 * 10),
    # group term: sqrt(3) (sqrt10 + sqrt20) + sqrt(4) (sqrt10 + 4); V keeps |w| > sqrt(2/2) = 1,
    # so W - V is 1 at conv2[0,0] and fc[0,0]: beta/2 * 2 = 2
    "l0sgl": (
        {"lam": 1.0, "beta0": 2.0, "threshold_quantile": 0.0},  # the official threshold
        math.sqrt(3) * (S10 + S20) + 2 * (S10 + 4) + 2.0,
    ),
    "none": ({}, 0.0),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_penalty_matches_hand_computation(name: str) -> None:
    options, expected = EXPECTED[name]
    assert penalty_of(name, options) == pytest.approx(expected, abs=1e-3)


def test_slimming_penalty_on_bn_scales() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(32, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([0.5, -2.0]))
    assert penalty_of("slimming", {"lam": 1.0}, model) == pytest.approx(2.5)


def test_ffr_length_and_curvature() -> None:
    method = get_method("ffr", {"lam": 1.0, "lam2": 1.0})
    method.runs = [["a", "b", "c"]]
    feats = {
        "a": torch.tensor([[1.0, 0.0]]),
        "b": torch.tensor([[1.0, 1.0]]),
        "c": torch.tensor([[0.0, 1.0]]),
    }
    # length |b-a|/|a| + |c-b|/|b| = 1 + 1/sqrt2; curvature |c - 2b + a| / |b| = sqrt2/sqrt2
    assert float(method.penalty(nn.Linear(1, 1), feats)) == pytest.approx(
        1 + 1 / math.sqrt(2) + 1, abs=1e-4
    )


def test_l0sgl_selects_by_w_not_v() -> None:
    """The official code selects by W (mean |w| < 1e-5): a channel whose weights all sit
    under the hard threshold is zero in V but alive in W, and must be kept."""
    model = tiny()
    # the official hard threshold, sqrt(2 lam / beta) = 1
    method = get_method("l0sgl", {"lam": 1.0, "beta0": 2.0, "threshold_quantile": 0.0})
    method.setup(model, example_input=torch.zeros(1, 1, 4, 4))
    index = channel_groups(model, torch.zeros(1, 1, 4, 4))
    scores = {g.root: s for g, s in zip(index, method.scores(model, index), strict=True)}
    # group A: channel 0 owns conv1 (3) and conv2[:, 0] (1, 0): mean 4/3; channel 1: 0, 2, 4
    assert scores["0"].tolist() == pytest.approx([4 / 3, 2.0])
    # group B: channel 0 owns conv2[0] (1, 2) and fc[:, 0] (1, 2): 6/4; channel 1: 0, 4, 0, 0
    assert scores["1"].tolist() == pytest.approx([1.5, 1.0])
    # fc[0, 0] = 1 is not above the threshold, so V drops it; W keeps the channel alive
    assert float(method.v["4.weight"][0, 0]) == 0.0
    from compressor.pruning import plan_threshold

    threshold = method_class("l0sgl").selection["threshold"]
    assert threshold == 1e-5
    assert plan_threshold(list(scores.values()), threshold).removed_channels == 0


def test_l0sgl_beta_schedule() -> None:
    method = get_method("l0sgl", {"beta0": 2.0, "beta_factor": 1.5, "beta_every": 2})
    betas = []
    for epoch in range(5):
        method.start_epoch(nn.Linear(1, 1), epoch=epoch)
        betas.append(method.beta)
    assert betas == pytest.approx([2.0, 2.0, 3.0, 3.0, 4.5])


def test_l0sgl_beta_grows_four_times_over_any_stage() -> None:
    """By default beta grows as often over the stage as over the official run (4 times,
    at each fifth), counted in steps, so a one-epoch stage sees the schedule too."""
    method = get_method("l0sgl", {"beta0": 2.0, "beta_factor": 2.0})
    method.stage_epochs, method.steps_per_epoch = 1, 10
    method.setup(tiny(), example_input=torch.zeros(1, 1, 4, 4))
    betas = [method.beta]
    for step in range(10):
        method.after_step(tiny(), epoch=0, step=step)
        betas.append(method.beta)
    assert betas == [2.0, 2.0, 4.0, 4.0, 8.0, 8.0, 16.0, 16.0, 32.0, 32.0, 32.0]
    state = method.state_dict()
    again = get_method("l0sgl", {"beta0": 2.0, "beta_factor": 2.0})
    again.load_state_dict(state)
    again.stage_epochs, again.steps_per_epoch = 1, 10
    assert (again.beta, again.t0) == (32.0, method.t0)  # resumed where it stood


def test_l0sgl_threshold_starts_at_each_layers_median_and_falls_with_beta() -> None:
    """The official threshold (0.283 with LeNet-5's settings) sits above almost every
    weight of a resnet-sized layer, so V = 0; per layer, half the weights stay in V."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 64, 3), nn.ReLU(), nn.Conv2d(64, 64, 3))
    official = get_method("l0sgl", {"threshold_quantile": 0.0})
    official.setup(model, example_input=torch.zeros(1, 3, 8, 8))
    assert all(float((v != 0).float().mean()) < 0.01 for v in official.v.values())
    method = get_method("l0sgl", {"beta_factor": 4.0})
    method.stage_epochs, method.steps_per_epoch = 1, 5
    method.setup(model, example_input=torch.zeros(1, 3, 8, 8))
    for name, v in method.v.items():
        w = dict(model.named_parameters())[name]
        assert method.t0[name] == pytest.approx(float(w.abs().flatten().median()), rel=1e-3)
        assert float((v != 0).float().mean()) == pytest.approx(0.5, abs=0.01)
    method.after_step(model, epoch=0, step=0)  # one fifth of the stage: beta x4
    name = next(iter(method.v))
    assert method.threshold(name) == pytest.approx(method.t0[name] / 2)


@pytest.mark.parametrize("name", ALL)
def test_gradients_finite_at_exact_zero(name: str) -> None:
    model = flow_net() if name == "ffr" else small_cnn()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    method = get_method(name)
    x = torch.randn(4, 1, 28, 28)
    method.setup(model, example_input=x, train_size=100)
    method.start_epoch(model, epoch=0)
    feats: dict[str, torch.Tensor] = {}
    hooks = capture_features(method, model, feats)
    out = model(x)
    for h in hooks:
        h.remove()
    pen = method.penalty(model, feats)
    loss = out.sum() + (pen if pen is not None else 0.0)
    loss.backward()
    method.after_backward(model)
    assert torch.isfinite(loss)
    for n, p in model.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), n


@pytest.mark.parametrize("name", ALL)
def test_penalty_finite_under_bfloat16_autocast(name: str) -> None:
    model = flow_net() if name == "ffr" else small_cnn()
    method = get_method(name)
    x = torch.randn(4, 1, 28, 28)
    method.setup(model, example_input=x, train_size=100)
    feats: dict[str, torch.Tensor] = {}
    hooks = capture_features(method, model, feats)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(x)
        pen = method.penalty(model, feats)
    for h in hooks:
        h.remove()
    assert pen is None or torch.isfinite(pen.float())


def test_registry_rules() -> None:
    with pytest.raises(CompressorError, match=r"unknown method 'hsg'.*hgs"):
        get_method("hsg")
    with pytest.raises(CompressorError, match="no option 'lamda'"):
        get_method("hgs", {"lamda": 1})
    with pytest.raises(CompressorError, match="must be a float"):
        get_method("hgs", {"lambda": "x"})
    assert get_method("hgs", {"lambda": "0.01"}).params.lam == 0.01

    class Clash(Method):
        name = "hgs"
        paper = "-"

        def penalty(self, model, features):
            return None

    with pytest.raises(ValueError, match="already registered"):
        register(Clash)
    assert method_class("hgs").__name__ == "HGS"


@pytest.mark.parametrize("name", ALL)
def test_docstring_cites_paper(name: str) -> None:
    cls = method_class(name)
    assert cls.paper and cls.__doc__
    if name in ("l1l2", "hgs", "l0sgl", "ffr"):
        assert "Reading" in cls.__doc__ or "reading" in cls.__doc__


# --------------------------------------------------------------------------- effect


def _train_steps(method_name: str | None, options: dict, steps: int = 30, *, flow: bool = False):
    """A few dozen SGD steps of a tiny net on mnist15k images; returns (model, method)."""
    from compressor.data import BatchTransform, load_data

    bundle = load_data(_DATA)
    transform = BatchTransform(bundle.preprocess, flip=False, device=torch.device("cpu"))
    model = flow_net() if flow else small_cnn(seed=1)
    method = get_method(method_name, options) if method_name else None
    x0 = transform(bundle.train.images[:64])
    if method is not None:
        method.setup(model, example_input=x0, train_size=len(bundle.train))
        method.start_epoch(model, epoch=0)
    feats: dict[str, torch.Tensor] = {}
    if method is not None:
        capture_features(method, model, feats)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    for step in range(steps):
        idx = torch.randint(0, len(bundle.train), (64,), generator=gen)
        x, y = transform(bundle.train.images[idx]), bundle.train.labels[idx]
        loss = torch.nn.functional.cross_entropy(model(x), y)
        if method is not None:
            pen = method.penalty(model, feats)
            loss = loss + pen if pen is not None else loss
        opt.zero_grad()
        loss.backward()
        if method is not None:
            method.after_backward(model)
        opt.step()
        if method is not None:
            method.after_step(model, epoch=0, step=step)
    return model, method


_DATA = __import__("compressor.config", fromlist=["DataConfig"]).DataConfig("mnist15k")

# Strengths raised so that 30 steps show the effect clearly.
STRONG = {
    "l1": {"lam": 5e-3},
    "l2": {"lam": 0.2},
    "ssl": {"lam": 1e-2, "lam_channel": 1e-2},
    "slimming": {"lam": 1e-2},
    "l1l2": {"lam": 10.0},
    "hgs": {"lam": 1e-3},
    "l0sgl": {"lam": 1.0, "beta0": 2000.0},
    "ffr": {"lam": 1.0, "lam2": 1.0},
}


def _targeted(name: str, model: nn.Module) -> float:
    """The quantity each method drives down."""
    from compressor.pruning import group_scores

    index = channel_groups(model, torch.zeros(1, 1, 28, 28))
    if name == "slimming":
        return float(sum(s.sum() for s in group_scores(index, model, "bn")))
    if name == "l1l2":  # scale-invariant: it lowers the l1/l2 ratio (raises sparsity), not norms
        return penalty_of("l1l2", {"lam": 1.0}, model)
    if name == "l0sgl":  # the l0 part empties each layer's small weights (under its median)
        return float(sum(m.weight.abs().sum() for m in model.modules() if hasattr(m, "weight")))
    if name == "ffr":
        from compressor.methods.ffr import flow_runs

        x = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(3))
        method = get_method("ffr", {"lam": 1.0, "lam2": 0.0})
        method.runs = flow_runs(model, x)
        feats: dict[str, torch.Tensor] = {}
        hooks = capture_features(method, model, feats)
        with torch.no_grad():
            model(x)
        for h in hooks:
            h.remove()
        return float(method.penalty(model, feats))
    return float(sum(s.sum() for s in group_scores(index, model, "l2")))


@pytest.mark.parametrize("name", sorted(STRONG))
def test_targeted_quantity_falls_against_unregularized(name: str) -> None:
    baseline, _ = _train_steps(None, {}, flow=name == "ffr")
    model, method = _train_steps(name, STRONG[name], flow=name == "ffr")
    if name == "ffr":
        assert method is not None and method.runs == [["1.0:in", "1.0", "1.1", "1.2"]]
    assert _targeted(name, model) < 0.9 * _targeted(name, baseline)


def test_residual_coupled_channels_go_to_zero_together() -> None:
    model, _ = _train_steps("l1l2", {"lam": 10.0}, steps=60)
    index = channel_groups(model, torch.zeros(1, 1, 28, 28))
    stream = next(g for g in index if "7.conv2" in g.layers)  # the residual stream of smallcnn
    assert {"4", "7.conv2"} <= set(stream.layers)
    params = dict(model.named_parameters())
    norms = stream.sq_norms(params, weights_only=True).sqrt().detach()
    gone = norms < 0.05 * norms.max()
    assert gone.any()  # the group penalty emptied some stream channels
    for layer in ("4", "7.conv2"):  # both convolutions feeding the addition are empty there
        filters = params[f"{layer}.weight"].detach().flatten(1).norm(dim=1)
        assert filters[gone].max() < 0.1 * filters.max()


def test_hgs_loss_increase_scores() -> None:
    from compressor.methods.hgs import loss_increase_scores

    model = small_cnn()
    model.eval()
    index = channel_groups(model, torch.zeros(1, 1, 28, 28))
    g = index.groups[0]
    with torch.no_grad():  # make channel 0 of the first group unused by its consumers
        params = dict(model.named_parameters())
        for s in g.slices:
            if s.kind == "in":
                w = params[f"{s.module}.weight"]
                w[:, s.index[s.channel == 0]] = 0
    x = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 10, (16,), generator=torch.Generator().manual_seed(1))
    skip = [torch.zeros(h.size, dtype=torch.bool) for h in index]
    skip[1][:] = True  # a skipped group is not evaluated: all zeros
    batched = loss_increase_scores(model, index, (x, y), skip=skip, batch_channels=5)
    single = loss_increase_scores(model, index, (x, y), skip=skip, batch_channels=1)
    assert float(batched[0][0]) == pytest.approx(
        0.0, abs=1e-6
    )  # removing an unused channel costs nothing
    assert float(batched[0].abs().max()) > 0
    assert torch.equal(batched[1], torch.zeros(index.groups[1].size))
    for a, b in zip(batched, single, strict=True):
        assert torch.allclose(a, b, atol=1e-5)  # batching candidates changes nothing


def test_l0sgl_coupling_gradient_matches_autograd() -> None:
    def grads(manual: bool) -> dict[str, torch.Tensor]:
        model = tiny()
        method = get_method("l0sgl", {"lam": 1.0, "beta0": 2.0})
        method.setup(model, example_input=torch.zeros(1, 1, 4, 4), train_size=4)
        pen = method.penalty(model, {})
        if manual:
            pen.backward()
            method.after_backward(model)
        else:  # the coupling term through autograd instead
            params = dict(model.named_parameters())
            coupling = sum((params[n] - v).pow(2).sum() for n, v in method.v.items())
            (pen + 0.5 * method.beta * coupling / 4).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    manual, reference = grads(True), grads(False)
    for n in reference:
        assert torch.allclose(manual[n], reference[n], atol=1e-6), n


def test_ffr_without_a_flow_is_an_error() -> None:
    from compressor.archs import build_model

    with pytest.raises(CompressorError, match="ffr needs blocks"):
        get_method("ffr").setup(
            build_model("lenet5", num_classes=10), example_input=torch.zeros(1, 1, 28, 28)
        )


def test_ffr_flow_starts_at_the_first_block_input() -> None:
    """resnet18: every block that keeps its shape is penalised, the first one included,
    and layer1's two blocks give a curvature term (lam2 acts)."""
    import torchvision

    from compressor.methods.ffr import flow_runs

    model = torchvision.models.resnet18(num_classes=10)
    runs = flow_runs(model, torch.zeros(1, 3, 32, 32))
    assert runs == [
        ["layer1.0:in", "layer1.0", "layer1.1"],
        ["layer2.1:in", "layer2.1"],
        ["layer3.1:in", "layer3.1"],
        ["layer4.1:in", "layer4.1"],
    ]
    method = get_method("ffr", {"lam": 0.0, "lam2": 1.0})
    method.setup(model, example_input=torch.zeros(2, 3, 32, 32))
    feats: dict[str, torch.Tensor] = {}
    hooks = capture_features(method, model, feats)
    model(torch.randn(2, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert float(method.penalty(model, feats)) > 0  # the curvature term alone


def test_ffr_blocks_split_by_a_layer_with_parameters() -> None:
    """Two blocks with a convolution between them are not one step of the flow."""
    from compressor.methods.ffr import flow_runs
    from compressor.nets import ResidualBlock

    model = nn.Sequential(ResidualBlock(4), nn.Conv2d(4, 4, 1), ResidualBlock(4), nn.ReLU())
    runs = flow_runs(model, torch.zeros(1, 4, 8, 8))
    assert runs == [["0:in", "0"], ["2:in", "2"]]
    model = nn.Sequential(ResidualBlock(4), nn.ReLU(), ResidualBlock(4))
    assert flow_runs(model, torch.zeros(1, 4, 8, 8)) == [["0:in", "0", "2"]]


def test_l1l2_penalises_the_norm_that_selects_it() -> None:
    """l1l2's vector is each channel's group L2 norm over everything it owns, BatchNorm
    scale and shift and biases included: exactly the default selection score, so the norm
    the penalty drives to zero is the one that selects; and its gradient reaches the
    BatchNorm scale, the one parameter a BatchNorm network's channel cannot shrink
    without (a filter's own scale is free before a BatchNorm)."""
    from compressor.pruning import group_scores

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, bias=True),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 3, 1, bias=False),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(3, 2),
    )
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 2.0)
        model[1].bias.uniform_(-1.0, 1.0)
    method = get_method("l1l2", {"lam": 1.0})
    method.setup(model, example_input=torch.zeros(1, 1, 8, 8), train_size=1)
    norms = group_scores(method.groups, model, "l2")
    expected = sum(float(n.sum() / n.pow(2).sum().sqrt()) for n in norms)
    value = method.penalty(model, {})
    assert float(value) == pytest.approx(expected, rel=1e-5)
    value.backward()
    assert model[1].weight.grad is not None and float(model[1].weight.grad.abs().sum()) > 0
    assert float(model[1].bias.grad.abs().sum()) > 0


def test_hgs_estimate_ranks_like_the_exact_loss_increase() -> None:
    """The default second-order estimate agrees with masked forward passes on which
    channels matter (rank correlation), at a fraction of the cost."""
    from compressor.methods.hgs import estimated_loss_increase, loss_increase_scores

    model, _ = _train_steps(None, {}, steps=40)
    model.eval()
    index = channel_groups(model, torch.zeros(1, 1, 28, 28))
    from compressor.data import BatchTransform, load_data

    bundle = load_data(_DATA)
    transform = BatchTransform(bundle.preprocess, flip=False, device=torch.device("cpu"))
    x, y = transform(bundle.train.images[:128]), bundle.train.labels[:128]
    skip = [torch.zeros(g.size, dtype=torch.bool) for g in index]
    exact = torch.cat(loss_increase_scores(model, index, (x, y), skip=skip, batch_channels=16))
    est = torch.cat(estimated_loss_increase(model, index, (x, y), skip=skip))

    def ranks(t: torch.Tensor) -> torch.Tensor:
        return t.argsort().argsort().float()

    rho = torch.corrcoef(torch.stack([ranks(exact), ranks(est)]))[0, 1]
    assert rho > 0.8, rho


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("l0sgl", {"beta0": 0}, "beta0 must be positive"),
        ("hgs", {"lam2": 1.5}, r"lam2 must be in \[0, 1\]"),
        ("hgs", {"batch_channels": 0}, "at least 1"),
        ("l1l2", {"lam": float("nan")}, "must be 0 or more"),
        ("l1l2", {"lam": True}, "must be a number"),
    ],
)
def test_method_option_ranges(name: str, options: dict, message: str) -> None:
    with pytest.raises(CompressorError, match=message):
        get_method(name, options)


def _plan(model: nn.Module, method: Method | None) -> list[list[int]]:
    """Per group, the channels a 1/3-MAC target removes, selected by the method's own
    scores (``none``: the default group L2 norm) on 64 fixed training images."""
    from compressor.config import PruneConfig
    from compressor.data import BatchTransform, load_data
    from compressor.pruning import mac_estimator
    from compressor.selection import select

    method = method or get_method("none", {})
    bundle = load_data(_DATA)
    transform = BatchTransform(bundle.preprocess, flip=False, device=torch.device("cpu"))
    example = torch.zeros(1, 1, 28, 28)
    index = channel_groups(model, example)
    calibration = (transform(bundle.train.images[:64]), bundle.train.labels[:64])
    scores = method.scores(model, index, calibration=calibration)
    plan = select(
        scores,
        index,
        PruneConfig(target_macs=1 / 3),
        comparable=method.comparable_scores,
        macs=mac_estimator(model, index, (1, 28, 28)),
    )
    return [sorted(plan.remove.get(g, [])) for g in range(len(index))]


SEED_METHODS = ["l1l2", "hgs", "l0sgl", "ffr"]


@pytest.mark.parametrize("name", SEED_METHODS)
def test_a_seed_methods_plan_is_not_nones(name: str) -> None:
    """From the same start and the same steps, a seed method's penalty and criterion pick
    other channels than plain training scored by the group L2 norm: the plan is the
    method's, not the one-shot ranking of the dense model. Fails if the penalty is
    ignored, or the method selects by the default norm of an unchanged network."""
    flow = name == "ffr"
    plain, _ = _train_steps(None, {}, flow=flow)
    model, method = _train_steps(name, STRONG[name], flow=flow)
    assert _plan(model, method) != _plan(plain, None)
