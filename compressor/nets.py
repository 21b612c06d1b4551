"""Small reference networks of the project (torchvision provides everything else)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torchvision
from torch import nn
from torchvision.models.shufflenetv2 import InvertedResidual


def lenet5(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """LeNet-5 as used by the structured-sparsity papers (Caffe variant: 20-50 filters, FC 500).

    Input 28x28. SSL, l1/l2 and l0 sparse group lasso all report MNIST figures on this
    network, so the methods can be compared with the published numbers.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, 20, kernel_size=5),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(20, 50, kernel_size=5),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(50 * 4 * 4, 500),
        nn.ReLU(inplace=True),
        nn.Linear(500, num_classes),
    )


class ResidualBlock(nn.Module):
    """Two 3x3 conv-BN layers and an identity shortcut (a ResNet basic block)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + x)


def smallcnn(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """A small BatchNorm CNN with one residual block, for fast tests of the whole pipeline.

    Its residual addition couples channels across layers, so it exercises the same
    dependency-graph paths as a ResNet at a fraction of the cost. Any input of 4x4 or more.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(inplace=True),
        ResidualBlock(32),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, num_classes),
    )


class ChannelShuffle(nn.Module):
    """ShuffleNet's channel shuffle as a module (same arithmetic as torchvision's function).

    As a module it is a single node in torch-pruning's graph, which otherwise fails to trace
    the shuffle's reshapes; the pruning engine keeps the channels on both sides of it.
    """

    def __init__(self, channels: int, groups: int = 2) -> None:
        super().__init__()
        self.channels = channels
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x = x.view(b, self.groups, c // self.groups, h, w).transpose(1, 2).contiguous()
        return x.view(b, c, h, w)


class ShuffleUnit(InvertedResidual):
    """torchvision's ShuffleNetV2 unit with its channel shuffle as a ``ChannelShuffle`` module."""

    shuffle: ChannelShuffle

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return self.shuffle(out)


def shufflenet_v2(name: str, num_classes: int) -> nn.Module:
    """torchvision's ShuffleNetV2 built of ``ShuffleUnit``s.

    Outputs and state_dict keys are identical to torchvision's model.
    """
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    for m in model.modules():
        if isinstance(m, InvertedResidual):
            m.__class__ = ShuffleUnit
            m.shuffle = ChannelShuffle(2 * m.branch2[5].out_channels, groups=2)
    return model


# While the pruning traces a model (``pruning.groups.trace_groups``): the slices that
# ``channel_split`` made, by the id of their autograd node (held, so the ids stay theirs)
_recorded: dict[int, Any] | None = None


def channel_split(x: torch.Tensor, at: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x[:, :at], x[:, at:])``, for a module whose split position follows its layers'
    channel counts (timm's CSP stages, ``timm_rewrites``), so that it stays
    right after a cut.

    While the pruning traces the model, torch-pruning is told these slices' widths, and a
    concatenation of them maps each channel to its place. Other slices keep torch-pruning's
    own handling: one at a stored position (DPN's dual path) goes wrong once a channel
    before it is removed, and coupling its channels would only put more of the model into
    groups the trial removal keeps whole."""
    first, second = x[:, :at], x[:, at:]
    if _recorded is not None:
        for t in (first, second):
            if t.grad_fn is not None:
                _recorded[id(t.grad_fn)] = t.grad_fn
    return first, second


@contextlib.contextmanager
def recording_channel_splits() -> Iterator[None]:
    """Record the slices ``channel_split`` makes (``made_by_channel_split``) until exit."""
    global _recorded
    _recorded = {}
    try:
        yield
    finally:
        _recorded = None


def made_by_channel_split(grad_fn: Any) -> bool:
    """Whether ``grad_fn`` is the autograd node of a slice ``channel_split`` made while
    recording."""
    return _recorded is not None and grad_fn is not None and _recorded.get(id(grad_fn)) is grad_fn
