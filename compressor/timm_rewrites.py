"""timm modules rebuilt, with the same outputs, in a form the channel tracing follows.

Each rewrite swaps a module's class for a subclass whose ``forward`` computes the same
thing (the same parameters, buffers and state_dict keys) but splits channels with
``nets.channel_split`` at a position read from the layers it feeds, instead of a stored
count or a ``torch.split`` torch-pruning cannot map. The tracing counts those slices'
widths, so a cut maps each channel to its place, and the position follows the cut.
``timm_archs.build`` applies them to every timm model it builds (and so to every pruned
file it rebuilds).

- CSP stages (``CrossStage``: cspresnet, cspdarknet, cspresnext; ``CrossStage3``:
  cs3darknet, cs3edgenet): ``x.split(expand_chs // 2)``, whose first part feeds a block's
  first convolution and its residual sum, makes three consumers of two parts, and tracing
  cs3darknet failed (``TypeError`` in torch-pruning's concatenation mapping).
- ReXNet's ``LinearBottleneck``: ``cat([x[:, :in_channels] + shortcut, x[:, in_channels:]])``
  with slices torch-pruning does not count; its group walk never ended.
- SelectiveKernel (SKResNet, two paths): ``split(x, in_channels // 2)`` by a stored width,
  and its attention's ``view(B, 2, C)`` of one convolution's outputs; every group through it
  was unsafe. The attention's two halves become two slices, tied channel by channel.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn


@functools.cache
def _csp() -> dict[type, type]:
    import torch
    from timm.models import cspnet
    from torch import nn

    from compressor.nets import channel_split

    def blocks_in(stage: Any) -> int:  # the channels the blocks take: read from the layer
        return int(next(m for m in stage.blocks.modules() if isinstance(m, nn.Conv2d)).in_channels)

    class SlicedCrossStage(cspnet.CrossStage):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.conv_down(x)
            x = self.conv_exp(x)
            at = int(self.conv_exp.conv.out_channels) - blocks_in(self)
            xs, xb = channel_split(x, at)
            xb = self.blocks(xb)
            xb = self.conv_transition_b(xb).contiguous()
            return self.conv_transition(torch.cat([xs, xb], dim=1))

    class SlicedCrossStage3(cspnet.CrossStage3):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.conv_down is not None:  # timm stores None for a stage that keeps its size
                x = self.conv_down(x)
            x = self.conv_exp(x)
            x1, x2 = channel_split(x, blocks_in(self))
            x1 = self.blocks(x1)
            return self.conv_transition(torch.cat([x1, x2], dim=1))

    return {cspnet.CrossStage: SlicedCrossStage, cspnet.CrossStage3: SlicedCrossStage3}


@functools.cache
def _rexnet() -> dict[type, type]:
    import torch
    from timm.models import rexnet

    from compressor.nets import channel_split

    class SlicedLinearBottleneck(rexnet.LinearBottleneck):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            shortcut = x
            if self.conv_exp is not None:
                x = self.conv_exp(x)
            x = self.conv_dw(x)
            if self.se is not None:
                x = self.se(x)
            x = self.act_dw(x)
            x = self.conv_pwl(x)
            if self.use_shortcut:
                if self.drop_path is not None:
                    x = self.drop_path(x)
                head, tail = channel_split(x, shortcut.shape[1])  # the shortcut's own width
                x = torch.cat([head + shortcut, tail], dim=1)
            return x

    return {rexnet.LinearBottleneck: SlicedLinearBottleneck}


@functools.cache
def _selective_kernel() -> dict[type, type]:
    import torch
    from timm.layers import selective_kernel as sk

    from compressor.nets import channel_split

    class SlicedSelectiveKernel(sk.SelectiveKernel):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.split_input:  # at the first path's own width
                path: Any = self.paths[0]
                first, second = channel_split(x, int(path.conv.in_channels))
                paths = [self.paths[0](first), self.paths[1](second)]
            else:
                paths = [op(x) for op in self.paths]
            x = torch.stack(paths, dim=1)
            x = x * self.attn(x)
            return torch.sum(x, dim=1)

    class SlicedSelectiveKernelAttn(sk.SelectiveKernelAttn):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x.sum(1).mean((2, 3), keepdim=True)
            x = self.act(self.bn(self.fc_reduce(x)))
            x = self.fc_select(x)
            first, second = channel_split(x, x.shape[1] // 2)  # path 0's weights, path 1's
            return torch.softmax(torch.stack([first, second], dim=1), dim=1)

    return {
        sk.SelectiveKernel: SlicedSelectiveKernel,
        sk.SelectiveKernelAttn: SlicedSelectiveKernelAttn,
    }


def _applies(module: Any) -> bool:
    """Whether the rewrite of ``module``'s class fits this instance."""
    from torch import nn

    if hasattr(module, "num_paths"):  # SelectiveKernel and its attention: two paths only
        return int(module.num_paths) == 2
    blocks = getattr(module, "blocks", None)  # a CSP stage with a convolution in its blocks
    return blocks is None or any(isinstance(m, nn.Conv2d) for m in blocks.modules())


_FAMILIES = {
    "timm.models.cspnet": _csp,
    "timm.models.rexnet": _rexnet,
    "timm.layers.selective_kernel": _selective_kernel,
}


def rewrite(model: nn.Module) -> list[str]:
    """Swap the classes of ``model``'s modules that have a rewrite (in place); the names
    of the modules rewritten."""
    done = []
    for name, module in model.named_modules():
        family = _FAMILIES.get(type(module).__module__)
        new = family().get(type(module)) if family is not None else None
        if new is not None and _applies(module):
            module.__class__ = new
            done.append(name)
    return done
