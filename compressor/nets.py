"""Small reference networks of the project (torchvision provides everything else)."""

from __future__ import annotations

import torch
from torch import nn


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
