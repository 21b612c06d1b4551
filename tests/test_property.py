"""Property-based tests: random small CNNs pruned at random ratios with random scores.

Every drawn network is built from convolutions (plain, grouped and depthwise), batch
norms, activations, residual additions, concatenations, ShuffleNet's channel split and
shuffle, and pooling. After pruning it must keep its output shape, give exactly the
output it gave before when the removed channels had been zeroed, and export to ONNX with
onnxruntime matching PyTorch.

CI runs 200 examples (the default profile); ``benchmarks/property_pruning.py`` runs
1,000 and records what they found.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from compressor.nets import ChannelShuffle
from compressor.pruning import apply_plan, channel_groups, plan_ratio
from tests.helpers import Concat, randomize_bn, zero_channels

settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "benchmark",
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

ACTIVATIONS = [nn.ReLU, nn.SiLU, nn.Hardswish, nn.Identity]  # each maps 0 to 0


class _Residual(nn.Module):
    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class _SplitShuffle(nn.Module):
    """ShuffleNetV2's unit: half the channels pass, half go through a branch, then shuffle."""

    def __init__(self, channels: int, branch: nn.Module) -> None:
        super().__init__()
        self.branch = branch
        self.shuffle = ChannelShuffle(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return self.shuffle(torch.cat([a, self.branch(b)], 1))


def _conv_bn_act(draw: st.DrawFn, c_in: int, c_out: int, groups: int = 1) -> nn.Sequential:
    k = draw(st.sampled_from([1, 3]))
    act = draw(st.sampled_from(ACTIVATIONS))
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, padding=k // 2, groups=groups), nn.BatchNorm2d(c_out), act()
    )


@st.composite
def networks(draw: st.DrawFn) -> tuple[nn.Module, int]:
    """A random CNN for 3x12x12 inputs and 5 classes."""
    c = draw(st.sampled_from([4, 6, 8, 12, 16]))
    size = 12
    layers: list[nn.Module] = [_conv_bn_act(draw, 3, c)]
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(
            st.sampled_from(
                ["conv", "grouped", "depthwise", "residual", "concat", "shuffle", "pool"]
            )
        )
        if kind == "conv":
            out = draw(st.sampled_from([4, 8, 12, 16]))
            layers.append(_conv_bn_act(draw, c, out))
            c = out
        elif kind == "grouped":
            g = draw(st.sampled_from([d for d in (2, 3, 4) if c % d == 0] or [1]))
            out = g * draw(st.integers(2, 4))
            layers.append(_conv_bn_act(draw, c, out, groups=g))
            c = out
        elif kind == "depthwise":
            layers.append(_conv_bn_act(draw, c, c, groups=c))
        elif kind == "residual":
            mid = draw(st.sampled_from([4, 8]))
            body = nn.Sequential(
                _conv_bn_act(draw, c, mid),
                nn.Conv2d(mid, c, 3, padding=1),
                nn.BatchNorm2d(c),
            )
            layers.append(_Residual(body))
        elif kind == "concat":
            a, b = draw(st.sampled_from([4, 6, 8])), draw(st.sampled_from([4, 6, 8]))
            layers.append(Concat(_conv_bn_act(draw, c, a), _conv_bn_act(draw, c, b)))
            c = a + b
        elif kind == "shuffle":
            if c % 2:
                layers.append(_conv_bn_act(draw, c, c + 1))
                c += 1
            layers.append(_SplitShuffle(c, _conv_bn_act(draw, c // 2, c // 2)))
        elif size >= 4:
            layers.append(draw(st.sampled_from([nn.MaxPool2d(2), nn.AvgPool2d(2)])))
            size //= 2
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 5)]
    return nn.Sequential(*layers), c


@given(
    net=networks(),
    ratio=st.floats(0.05, 0.8),
    round_to=st.sampled_from([1, 2, 8]),
    seed=st.integers(0, 2**16),
)
def test_random_networks_prune_exactly_and_export(
    net: tuple[nn.Module, int], ratio: float, round_to: int, seed: int
) -> None:
    import onnxruntime as ort

    model = net[0].eval()
    torch.manual_seed(seed)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.5)
    randomize_bn(model)
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(seed))
    index = channel_groups(model, x[:1])
    gen = torch.Generator().manual_seed(seed)
    scores = [torch.rand(g.size, generator=gen) for g in index]
    plan = plan_ratio(
        scores,
        ratio,
        round_to=index.round_to(round_to),
        blocks=[g.blocks for g in index],
        segments=index.segments(),
    )
    zero_channels(model, index, plan)
    with torch.no_grad():
        before = model(x)
        apply_plan(index, plan)
        after = model(x)
    assert after.shape == (2, 5)
    scale = float(before.abs().max().clamp_min(1e-6))
    assert float((after - before).abs().max()) / scale < 1e-4
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            assert m.weight.shape[1] * m.groups == m.in_channels
            assert m.out_channels % m.groups == 0
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.onnx")
        torch.onnx.export(model, (x,), path, input_names=["input"], dynamo=False)
        out = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(
            None, {"input": x.numpy()}
        )[0]
    diff = float(np.abs(out - after.numpy()).max()) / max(float(np.abs(after.numpy()).max()), 1e-6)
    assert diff < 1e-4


def test_the_generator_covers_every_construct() -> None:
    """The strategy can draw each construct (a guard against a generator that never
    produces, say, a grouped convolution)."""
    seen: set[str] = set()

    @given(networks())
    @settings(max_examples=150, deadline=None, derandomize=True, database=None)
    def collect(net: tuple[nn.Module, int]) -> None:
        for m in net[0].modules():
            if isinstance(m, nn.Conv2d) and 1 < m.groups < m.in_channels:
                seen.add("grouped")
            elif isinstance(m, nn.Conv2d) and m.groups == m.in_channels > 1:
                seen.add("depthwise")
            seen.add(type(m).__name__)

    collect()
    assert {"grouped", "depthwise", "_Residual", "Concat", "_SplitShuffle"} <= seen
    assert {"MaxPool2d", "AvgPool2d", "BatchNorm2d"} <= seen
