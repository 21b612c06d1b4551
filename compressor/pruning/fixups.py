"""Channel counts that a module keeps outside its layers, brought in line after a cut.

torch-pruning resizes weights and the layers' own counts (``in_channels``,
``num_features``); a module that also stores how to split its input (timm's
``MixedConv2d``: ``splits``) or a per-channel buffer (``BlurPool2d``) still holds the old
sizes and fails at its next forward.
Each fix-up below recomputes such an attribute from the layers the module holds; it runs
after every removal and after a pruned model is rebuilt from its file, so the model file
needs no more than its layers' shapes. A module whose counts no fix-up covers is caught by
the trial removal (``verify``) and kept whole.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn


def _mixed_conv(module: Any) -> None:
    """timm's ``MixedConv2d`` (MixNet): one convolution per split of the input channels,
    outputs concatenated."""
    convs = list(module.values())
    module.splits = [int(c.in_channels) for c in convs]
    module.in_channels = sum(module.splits)
    module.out_channels = sum(int(c.out_channels) for c in convs)


def _blur_pool(module: Any) -> None:
    """timm's ``BlurPool2d`` (resnetblur, densenetblur, efficientnet_blur): one fixed
    low-pass filter repeated per channel in a buffer of ``channels`` rows, which the model
    file does not store. Left with one row and no stored count, it filters as many channels
    as it is given (timm's own path for ``channels=None``), with the same outputs."""
    if module.channels is not None:
        module.filt = module.filt[:1].clone()
        module.channels = None


# (module, class name) -> fix-up; keyed by name so that timm is imported only by its models
FIXUPS: dict[tuple[str, str], Callable[[Any], None]] = {
    ("timm.layers.mixed_conv2d", "MixedConv2d"): _mixed_conv,
    ("timm.layers.blur_pool", "BlurPool2d"): _blur_pool,
}


def sync_channel_counts(model: nn.Module) -> list[str]:
    """Apply the fix-ups to every module of ``model`` that has one; the names of those
    modules."""
    done = []
    for name, module in model.named_modules():
        fix = FIXUPS.get((type(module).__module__, type(module).__name__))
        if fix is not None:
            fix(module)
            done.append(name)
    return done
