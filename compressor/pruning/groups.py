"""Coupled channel groups from torch-pruning's dependency graph: for every channel of every
group, the parameter slices it owns (``ParamSlice``, ``ChannelGroup``, ``GroupIndex``)."""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from compressor.errors import CompressorError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from compressor.pruning.plan import Plan


def torch_square(t: torch.Tensor) -> torch.Tensor:
    return t.square()


def kernel_sq(t: torch.Tensor) -> torch.Tensor:
    """Squares summed over a convolution's kernel positions: (O, I, kh, kw) -> (O, I).

    Every channel reduction sums over whole kernels, so reducing them first makes the
    later per-slice sums work on a matrix ``kh * kw`` times smaller."""
    sq = t.square()
    return sq.flatten(2).sum(2) if t.ndim > 2 else sq


def identity(t: torch.Tensor) -> torch.Tensor:
    return t


class Elementwise:
    """``params`` seen through ``fn``, each parameter transformed once per use of this object.

    A weight is owned by two groups (as one layer's filters and the next layer's inputs);
    sharing one ``square()`` between them halves a penalty's memory traffic.
    """

    def __init__(
        self, params: dict[str, torch.Tensor], fn: Callable[[torch.Tensor], torch.Tensor]
    ) -> None:
        self.params = params
        self.fn = fn
        self.cache: dict[str, torch.Tensor] = {}

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.cache:
            self.cache[name] = self.fn(self.params[name])
        return self.cache[name]

    def values(self) -> Iterator[torch.Tensor]:
        return iter(self.params.values())


def torch_abs(t: torch.Tensor) -> torch.Tensor:
    return t.abs()


@dataclass
class ParamSlice:
    """The part of one parameter that a group's channels own.

    ``rows(param)`` gives a differentiable ``(len(index), k)`` matrix whose row ``j``
    belongs to the group's channel ``channel[j]``.
    """

    module: str
    param: str  # "weight" or "bias"
    kind: str  # "out", "in", "in_grouped", "out_transposed", "in_transposed" or "norm"
    index: torch.Tensor  # positions along the channel dimension
    channel: torch.Tensor  # the group channel each position belongs to
    groups: int = 1
    norm_layer: bool = False  # BatchNorm / LayerNorm scale or shift

    def rows(self, p: torch.Tensor) -> torch.Tensor:
        if self.kind in ("out", "norm"):
            m = p.reshape(p.shape[0], -1) if p.ndim > 1 else p.reshape(-1, 1)
        elif self.kind == "in":
            m = p.transpose(0, 1).reshape(p.shape[1], -1)
        elif self.kind == "in_grouped":  # (O, I/g, k, k) -> (I, O/g * k * k)
            o, ig = p.shape[0], p.shape[1]
            g = self.groups
            m = p.reshape(g, o // g, ig, -1).permute(0, 2, 1, 3).reshape(g * ig, -1)
        elif self.kind == "out_transposed":
            m = p.transpose(0, 1).reshape(p.shape[1], -1)
        elif self.kind == "in_transposed":
            m = p.reshape(p.shape[0], -1)
        else:  # pragma: no cover - kinds are fixed above
            raise AssertionError(self.kind)
        return m.index_select(0, self.index.to(m.device))

    def position_sums(
        self, p: torch.Tensor, elementwise: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """``elementwise(p)`` summed over everything but the channel dimension, at this
        slice's positions: the same as ``elementwise(rows(p)).sum(1)`` without gathering a
        copy of the weight (the cheap path for penalties)."""
        e = elementwise(p)
        if self.kind in ("out", "norm", "in_transposed"):
            v = e.reshape(e.shape[0], -1).sum(1) if e.ndim > 1 else e
        elif self.kind in ("in", "out_transposed"):
            v = e.sum(dim=[d for d in range(e.ndim) if d != 1])
        elif self.kind == "in_grouped":
            o, ig = e.shape[0], e.shape[1]
            v = e.reshape(self.groups, o // self.groups, ig, -1).sum((1, 3)).reshape(-1)
        else:  # pragma: no cover - kinds are fixed above
            raise AssertionError(self.kind)
        if len(self.index) == len(v) and self._identity():
            return v
        return v.index_select(0, self.index.to(v.device))

    def _identity(self) -> bool:
        cached = getattr(self, "_is_identity", None)
        if cached is None:
            import torch

            cached = bool(torch.equal(self.index, torch.arange(len(self.index))))
            object.__setattr__(self, "_is_identity", cached)
        return cached


@dataclass
class ChannelGroup:
    """One group of coupled channels."""

    id: int
    root: str  # name of the module whose output channels define the group
    size: int  # number of channels
    slices: list[ParamSlice]
    layers: list[str]  # modules whose output channels the group removes
    # >1 when grouped convolutions split the channels into this many equal blocks: the
    # group's ``size`` channels are then units, unit ``j`` being channel ``j`` of every
    # block (``size * blocks`` channels in the model), removed together
    blocks: int = 1
    # the units of each channel slice made by ``nets.channel_split``: like a producing layer,
    # a slice must keep a channel
    sliced: list[list[int]] = field(default_factory=list)

    def model_channels(self, units: list[int]) -> list[int]:
        """The root module's channel positions of ``units``."""
        return sorted(b * self.size + j for b in range(self.blocks) for j in units)

    def _reduce(
        self,
        params: dict[str, torch.Tensor],
        elementwise: Callable[[torch.Tensor], torch.Tensor],
        *,
        norm_scale_only: bool = False,
        weights_only: bool = False,
    ) -> torch.Tensor:
        import torch

        out: torch.Tensor | None = None
        for s in self.slices:
            if norm_scale_only and not (s.norm_layer and s.param == "weight"):
                continue
            if weights_only and (s.norm_layer or s.param != "weight"):
                continue
            vals = s.position_sums(params[f"{s.module}.{s.param}"], elementwise)
            if out is None:
                out = torch.zeros(self.size, dtype=vals.dtype, device=vals.device)
            out = out.index_add(0, s.channel.to(vals.device), vals)
        if out is None:
            return torch.zeros(self.size)
        return out

    def sq_norms(
        self, params: dict[str, torch.Tensor] | Elementwise, *, weights_only: bool = False
    ) -> torch.Tensor:
        """Per channel, the sum of squares of every parameter entry the channel owns
        (differentiable). ``weights_only``: convolution and linear weights only (no biases,
        no normalisation parameters). ``params`` may be an ``Elementwise(params,
        kernel_sq)`` shared across groups, which squares each parameter only once."""
        if isinstance(params, Elementwise):
            return self._reduce(params, identity, weights_only=weights_only)  # type: ignore[arg-type]
        return self._reduce(params, kernel_sq, weights_only=weights_only)

    def weights_per_channel(self, params: dict[str, torch.Tensor]) -> int:
        """How many convolution/linear weights one channel owns (its first channel's count)."""
        total = 0
        for s in self.slices:
            if s.param == "weight" and not s.norm_layer:
                rows = int((s.channel == 0).sum())
                total += rows * (s.rows(params[f"{s.module}.weight"]).shape[1])
        return total

    def l1_norms(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per channel, the sum of absolute values of every weight the channel owns."""
        return self._reduce(params, torch_abs)

    def bn_scales(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per channel, the sum of |gamma| over the group's normalisation layers.

        A group without a normalisation layer falls back to its L2 norm.
        """
        if not self.has_norm_layer():
            return self.sq_norms(params).sqrt()
        return self._reduce(params, torch_abs, norm_scale_only=True)

    def has_norm_layer(self) -> bool:
        return any(s.norm_layer and s.param == "weight" for s in self.slices)


@dataclass
class GroupIndex:
    """The groups of a model, with the graph needed to prune them."""

    groups: list[ChannelGroup]
    graph: Any  # torch_pruning.DependencyGraph
    tp_groups: list[Any]  # the torch-pruning groups, same order
    ignored: list[str]  # layers whose outputs are never pruned (the classifier)
    skipped: list[str] = field(default_factory=list)  # roots of groups left whole
    # of those, the ones a trial removal broke, and how (``pruning/verify.py``)
    unsafe: dict[str, str] = field(default_factory=dict)

    def __iter__(self) -> Iterator[ChannelGroup]:
        return iter(self.groups)

    def __len__(self) -> int:
        return len(self.groups)

    @property
    def prunable_channels(self) -> int:
        return sum(g.size * g.blocks for g in self.groups)

    def removed_channels(self, plan: Plan) -> int:
        """Model channels a plan removes (a unit of a blocked group is ``blocks`` channels)."""
        return sum(len(v) * self.groups[g].blocks for g, v in plan.remove.items())

    def segments(self) -> list[list[list[int]]]:
        """Per group, the channels each producing layer owns (several for the branches of
        a concatenation): planning never takes a layer's last channel."""
        out = []
        for g in self.groups:
            segs = []
            for s in g.slices:
                if s.kind in ("out", "out_transposed") and s.param == "weight" and not s.norm_layer:
                    segs.append(sorted(set(s.channel.tolist())))
            out.append(segs + [list(seg) for seg in g.sliced])
        return out

    def round_to(self, multiple: int) -> list[int]:
        """Per group, the step of kept units: ``multiple`` channels, or for a group split
        into blocks by grouped convolutions, ``ceil(multiple / blocks)`` units (a unit is
        ``blocks`` channels: with 25 groups of 16 channels, whole units of 25 channels;
        rounding those to multiples of 8 would allow only 8 or 16 per group)."""
        return [max(1, math.ceil(multiple / g.blocks)) for g in self.groups]


def classifier_layers(model: nn.Module) -> list[nn.Module]:
    """The final layer(s) whose outputs are class logits (never pruned)."""
    from torch import nn

    timm_head = getattr(model, "get_classifier", None)
    if timm_head is not None and hasattr(model, "pretrained_cfg"):  # timm names its own
        head = timm_head()
        return [head] if isinstance(head, nn.Linear | nn.Conv2d) else []
    layers = [m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    if not layers:
        return []
    out: list[nn.Module] = [layers[-1]]
    # googlenet / inception auxiliary heads end in their own classifier
    for name, m in model.named_modules():
        if (
            isinstance(m, nn.Linear)
            and (name.startswith("aux") or name.startswith("AuxLogits"))
            and name.endswith("fc2" if "aux" in name else "fc")
        ):
            out.append(m)
    return out


def _fixed_types() -> tuple[type, ...]:
    """Module types traced as single opaque nodes whose channels are never pruned.

    Window attention (Swin) and MaxViT's partitioned attention mix channels through
    reshapes, rolls and relative-position tables that torch-pruning cannot follow (tracing
    them does not finish); the channel shuffle of ShuffleNetV2 is a fixed interleaving.
    Everything around them (MLP widths, MBConv expansions, branch widths) still prunes.
    """
    from torchvision.models.maxvit import PartitionAttentionLayer
    from torchvision.models.swin_transformer import ShiftedWindowAttention

    from compressor.nets import ChannelShuffle

    return (ChannelShuffle, ShiftedWindowAttention, PartitionAttentionLayer)


def _module_channels(module: Any) -> int:
    from torch import nn

    if hasattr(module, "channels"):
        return int(module.channels)
    first = next(m for m in module.modules() if isinstance(m, nn.Linear | nn.LayerNorm))
    return int(first.in_features if isinstance(first, nn.Linear) else first.normalized_shape[0])


class _Passthrough:
    """Autograd glue used only while tracing: the output's graph points straight at the input."""

    @staticmethod
    def wrap(x: Any, out: Any) -> Any:
        import torch

        class Fn(torch.autograd.Function):
            @staticmethod
            def forward(ctx: Any, inp: Any, result: Any) -> Any:
                return result.clone()

            @staticmethod
            def backward(ctx: Any, grad: Any) -> Any:
                return grad, None

        return Fn.apply(x, out)


@contextlib.contextmanager
def _opaque_for_tracing(model: nn.Module) -> Iterator[None]:
    """While tracing, make the fixed-channel modules single nodes: their inner operations
    are computed without a graph, and the output's graph links directly to the input."""
    import torch

    types = _fixed_types()
    patched = []
    for m in model.modules():
        if isinstance(m, types) and _module_channels(m) > 0:
            original = m.forward

            def forward(x: Any, *args: Any, _orig: Any = original, **kwargs: Any) -> Any:
                with torch.no_grad():
                    out = _orig(x, *args, **kwargs)
                return _Passthrough.wrap(x, out)

            m.forward = forward
            patched.append(m)
    sinks = []
    for m in model.modules():
        if _global_context(m):
            m._compressor_sink = _sink_type()()
            m.forward = _global_context_forward(m)
            patched.append(m)
            sinks.append(m)
    try:
        yield
    finally:
        for m in patched:
            del m.forward
        for m in sinks:
            del m._compressor_sink


def _global_context(module: Any) -> bool:
    """timm's ``GlobalContext`` (GCNet attention) with its attention pooling."""
    return (
        type(module).__name__ == "GlobalContext"
        and type(module).__module__.startswith("timm.")
        and getattr(module, "conv_attn", None) is not None
    )


@functools.cache
def _sink_type() -> type:
    """A tracing-only module that ends a branch without tying its channels to anything:
    its input and output pruning are different functions (``_sink_pruner``), so the graph
    links the branch's producer to the model's output and stops there."""
    from torch import nn

    class Sink(nn.Module):
        def forward(self, x: Any) -> Any:
            return x.sum(dim=tuple(range(2, x.ndim)), keepdim=True) * 0

    return Sink


def _sink_pruner() -> Any:
    import torch_pruning as tp

    class SinkPruner(tp.pruner.function.BasePruningFunc):
        def prune_out_channels(self, layer: Any, idxs: Any) -> Any:
            return layer

        def prune_in_channels(self, layer: Any, idxs: Any) -> Any:
            return layer

        def get_out_channels(self, layer: Any) -> None:
            return None

        def get_in_channels(self, layer: Any) -> None:
            return None

    return SinkPruner()


def _global_context_forward(m: Any) -> Callable[[Any], Any]:
    """``GlobalContext.forward`` as the graph should see it. The attention pooling
    (``x.reshape(B, C, H * W).unsqueeze(1) @ softmax(conv_attn(x))``) is computed
    without a graph and linked straight to ``x``: its channels are ``x``'s. Traced as
    written, the one-channel attention map meets ``x``'s channels at the matmul (taken
    as element-wise), the reshapes are taken for flattens of stride ``C``, and every
    turn of that cycle multiplies the index lists by ``C`` (tracing never ends).
    ``conv_attn`` still consumes ``x`` (its input channels prune with ``x``'s); its
    one-channel output ends in a sink."""
    import torch
    import torch.nn.functional as F

    def forward(x: Any) -> Any:
        b, c, h, w = x.shape
        attn = m.conv_attn(x)
        with torch.no_grad():
            weights = F.softmax(attn.reshape(b, 1, h * w), dim=-1).unsqueeze(3)
            pooled = (x.reshape(b, c, h * w).unsqueeze(1) @ weights).view(b, c, 1, 1)
        context = _Passthrough.wrap(x, pooled) + m._compressor_sink(attn)
        if m.mlp_scale is not None:
            x = x * m.gate(m.mlp_scale(context))
        if m.mlp_add is not None:
            x = x + m.mlp_add(context)
        return x

    return forward


def _grouped(module: Any) -> bool:
    """A grouped convolution that is not depthwise (ResNeXt, RegNet)."""
    from torch import nn

    return (
        isinstance(module, nn.modules.conv._ConvNd)
        and module.groups > 1
        and not (module.groups == module.in_channels == module.out_channels)
    )


def _blocks(group: Any, graph: Any) -> int | None:
    """How many equal blocks the channels of a torch-pruning group form: the number of
    groups of the grouped convolutions it feeds or comes from (1 without one), or None
    when the group must stay whole (a channel shuffle; grouped convolutions that disagree
    or that see the group's channels shifted, as through a concatenation).

    A channel ``j`` of block ``b`` is channel ``b * size / blocks + j``; the channels ``j``
    of every block form one *unit*, pruned together. Removing the same positions from
    every block keeps each group of the convolution the same width, which is what
    torch-pruning's convolution pruner assumes (it keeps the first block's positions)."""
    blocks: int | None = 1
    size = len(group[0].idxs)
    for item in group:
        module = item.dep.target.module
        if isinstance(module, _fixed_types()):
            return None
        if not _grouped(module):
            continue
        out = graph.is_out_channel_pruning_fn(item.dep.handler)
        channels = module.out_channels if out else module.in_channels
        root = item.root_idxs
        if (
            channels != size
            or root is None
            or [int(i) for i in item.idxs] != [int(r) for r in root]
            or (blocks not in (1, module.groups))
            or channels // module.groups < 2
        ):
            return None
        blocks = module.groups
    return blocks


def _tied_blocks(group: Any, graph: Any) -> int | None:
    """How many blocks the group's channels form through ties inside it: 1 when every root
    channel prunes alone; ``B`` when removing root channel ``j`` also removes ``j + b *
    size / B`` for every ``b`` (GhostNet's ``cat([x, depthwise(x)])``: the depthwise
    convolution ties its channel ``j``, at position ``j`` of the concatenation through its
    input and ``size / 2 + j`` through its output); None for ties of another pattern (the
    group stays whole).

    torch-pruning's group of all channels does not show the ties (each layer appears once,
    reached by one path); its group for one channel does: the root's own indices are the
    tied channels. Asked for the first and the last channel of the first block."""
    item = group[0]
    root, handler, size = item.dep.target.module, item.dep.handler, len(item.idxs)

    def tied(j: int) -> list[int]:
        single = graph.get_pruning_group(root, handler, [j])
        return sorted({int(i) for i in single[0].idxs})

    first = tied(0)
    blocks = len(first)
    if blocks == 1:
        return 1
    if size % blocks:
        return None
    unit = size // blocks
    for j in (0, unit - 1):
        if (first if j == 0 else tied(j)) != [j + b * unit for b in range(blocks)]:
            return None
    return blocks


def _split_parts(node: Any) -> None:
    """Order the consumers of a split by the part each one takes.

    torch-pruning lists a split's consumers in the order its backward walk meets them and
    maps the k-th consumer to the k-th part; for parts of one size met in reverse (timm's
    ``MixedConv2d``), a channel of the second part was removed from the first part's
    convolution. Autograd records which part each consumer takes (the output number of
    the edge into the split): the consumers are sorted by it. A consumer that takes
    several parts, or none found, leaves the order as torch-pruning found it."""
    parts = []
    for consumer in node.outputs:
        taken = [
            nr
            for fn, nr in getattr(consumer.grad_fn, "next_functions", ()) or ()
            if fn is node.grad_fn
        ]
        if len(taken) != 1:
            return
        parts.append(taken[0])
    if len(set(parts)) == len(parts):
        node.outputs = [
            c for _, c in sorted(zip(parts, node.outputs, strict=True), key=itemgetter(0))
        ]


def _graph() -> Any:
    """torch-pruning's dependency graph, with two fixes for splits: each split's consumers
    in part order (``_split_parts``), and the parts' offsets recomputed from their sizes
    before each group is made. (torch-pruning's split pruner updates the sizes but not
    the offsets the index mapping reads, so a second group removed across the same split
    was mapped with the first group's offsets.)"""
    import torch_pruning as tp

    class Graph(tp.DependencyGraph):
        def _build_dependency(self, module2node: Any) -> Any:
            for node in module2node.values():
                if node.type == tp.ops.OPTYPE.SPLIT:
                    _split_parts(node)
            return super()._build_dependency(module2node)

        def get_pruning_group(self, *args: Any, **kwargs: Any) -> Any:
            for node in self.module2node.values():
                sizes = getattr(node.module, "split_sizes", None)
                if node.type == tp.ops.OPTYPE.SPLIT and sizes is not None:
                    node.module.offsets = [0, *itertools.accumulate(sizes)]
            return super().get_pruning_group(*args, **kwargs)

    return Graph()


def _fixed_channels_pruner() -> Any:
    """A torch-pruning pruner for ``ChannelShuffle``: it reports the channel count, so the
    graph traces through the shuffle, and refuses to prune (its groups are skipped)."""
    import torch_pruning as tp

    class FixedChannels(tp.pruner.function.BasePruningFunc):
        def prune_out_channels(self, layer: Any, idxs: Any) -> Any:
            raise AssertionError("the channels of a channel shuffle are never pruned")

        def prune_in_channels(self, layer: Any, idxs: Any) -> Any:
            raise AssertionError("the channels of a channel shuffle are never pruned")

        def get_out_channels(self, layer: Any) -> int:
            return _module_channels(layer)

        def get_in_channels(self, layer: Any) -> int:
            return _module_channels(layer)

    return FixedChannels()


def _channel_slice_pruner() -> Any:
    """torch-pruning's pruner for slices, which also counts the channels of those made by
    ``nets.channel_split``.

    torch-pruning maps a slice's channel indices (``_SliceIndexMapping``) but its pruner
    reports no channel count, so shape inference takes the count of the layer before the
    slice: a concatenation of two slices of one tensor then seems wider than its consumer,
    gets no offsets, and both slices land on its first channels. The counts come from the
    sizes autograd saved while tracing."""
    import torch_pruning as tp

    from compressor.nets import made_by_channel_split

    class ChannelSlice(tp.ops.SlicePruner):
        @staticmethod
        def _input_channels(layer: Any) -> int | None:
            sizes = getattr(layer.grad_fn, "_saved_self_sym_sizes", None)
            if not made_by_channel_split(layer.grad_fn) or sizes is None or layer.dim != 1:
                return None
            return int(sizes[1])

        def get_in_channels(self, layer: Any) -> int | None:
            return self._input_channels(layer)

        def get_out_channels(self, layer: Any) -> int | None:
            size = self._input_channels(layer)
            if size is None:
                return None
            return len(range(*slice(layer.start, layer.end, layer.step).indices(size)))

    return ChannelSlice()


def _slice_for(
    dep: Any, idxs: list[int], root_idxs: list[int], names: dict[Any, str]
) -> list[ParamSlice]:
    import torch
    import torch_pruning as tp
    from torch import nn

    layer = dep.target.module
    fn = dep.handler
    name = names.get(layer)
    if name is None or not isinstance(layer, nn.Module):
        return []
    index = torch.as_tensor(idxs, dtype=torch.long)
    channel = torch.as_tensor(root_idxs, dtype=torch.long)
    slices: list[ParamSlice] = []

    def add(param: str, kind: str, groups: int = 1, norm: bool = False) -> None:
        if getattr(layer, param, None) is not None:
            slices.append(ParamSlice(name, param, kind, index, channel, groups, norm))

    if isinstance(layer, nn.modules.conv._ConvNd):
        transposed = layer.transposed
        depthwise = layer.groups == layer.in_channels == layer.out_channels and layer.groups > 1
        # torch-pruning's depthwise pruner uses one function for inputs and outputs
        # (``prune_in_channels = prune_out_channels``): either dependency of a depthwise
        # convolution is its filters, owned as outputs
        if depthwise or fn == tp.prune_conv_out_channels:
            add("weight", "out_transposed" if transposed else "out")
            add("bias", "out")
        elif fn == tp.prune_conv_in_channels:
            if transposed:
                add("weight", "in_transposed")
            elif layer.groups > 1:
                add("weight", "in_grouped", groups=layer.groups)
            else:
                add("weight", "in")
    elif isinstance(layer, nn.Linear):
        if fn == tp.prune_linear_out_channels:
            add("weight", "out")
            add("bias", "out")
        elif fn == tp.prune_linear_in_channels:
            add("weight", "in")
    elif isinstance(layer, nn.modules.batchnorm._BatchNorm | nn.LayerNorm | nn.GroupNorm):
        add("weight", "norm", norm=True)
        add("bias", "norm", norm=True)
    return slices


def trace_groups(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    ignored: list[nn.Module] | None = None,
    keep_whole: set[str] | None = None,
) -> GroupIndex:
    """Trace ``model`` on ``example_input`` and return its channel groups, as
    torch-pruning's graph gives them (``pruning.channel_groups`` then checks them).

    The classifier's outputs are never part of a group; nor are the groups rooted at a
    module named in ``keep_whole``. Raises ``CompressorError`` when the model cannot be
    traced.
    """
    import torch_pruning as tp
    from torch import nn

    from compressor.nets import made_by_channel_split, recording_channel_splits

    names = {m: n for n, m in model.named_modules()}
    ignored_layers = list(ignored or []) + classifier_layers(model)
    was_training = model.training
    model.eval()
    fixed = _fixed_channels_pruner()
    try:
        with _opaque_for_tracing(model), recording_channel_splits():
            graph = _graph()
            # before build_dependency, which registers the pruners' functions
            graph.REGISTERED_PRUNERS[tp.ops.OPTYPE.SLICE] = _channel_slice_pruner()
            graph.build_dependency(
                model,
                example_inputs=example_input,
                verbose=False,
                customized_pruners={
                    **{t: fixed for t in _fixed_types()},
                    _sink_type(): _sink_pruner(),
                },
            )
            counted = {  # the slices nets.channel_split made
                n.module
                for n in graph.module2node.values()
                if isinstance(n.module, tp.ops._SliceOp) and made_by_channel_split(n.grad_fn)
            }
    except Exception as e:  # torch-pruning raises many types on unsupported graphs
        raise CompressorError(
            f"cannot trace the model's channel dependencies: {type(e).__name__}: {e}"
        ) from e
    finally:
        model.train(was_training)
    groups: list[ChannelGroup] = []
    tp_groups = []
    skipped: list[str] = []
    for g in graph.get_all_groups(
        ignored_layers=ignored_layers, root_module_types=(nn.modules.conv._ConvNd, nn.Linear)
    ):
        blocks, tied = _blocks(g, graph), _tied_blocks(g, graph)
        if blocks is not None and tied is not None and tied > 1:
            blocks = tied if blocks == 1 else None  # ties and grouped convolutions: whole
        elif tied is None:
            blocks = None
        if blocks is None or names.get(g[0].dep.target.module) in (keep_whole or ()):
            # A channel shuffle needs a fixed interleaving, and grouped convolutions that
            # see the channels shifted or disagree on their groups cannot be kept
            # balanced: those groups stay whole; the rest of the model still prunes.
            skipped.append(names.get(g[0].dep.target.module, "?"))
            continue
        unit = len(g[0].idxs) // blocks  # channels per block = units in the group
        slices: list[ParamSlice] = []
        layers: list[str] = []
        sliced: list[list[int]] = []
        for item in g:
            dep, idxs = item.dep, item.idxs
            plain = [int(i) for i in idxs]
            root = item.root_idxs
            if root is None or any(r is None for r in root):
                continue
            if dep.target.module in counted:
                sliced.append(sorted({int(r) % unit for r in root}))
            slices.extend(_slice_for(dep, plain, [int(r) % unit for r in root], names))
            if graph.is_out_channel_pruning_fn(dep.handler) and isinstance(
                dep.target.module, nn.modules.conv._ConvNd | nn.Linear
            ):
                layers.append(names[dep.target.module])
        root_module = g[0].dep.target.module
        if not slices or unit < 2:
            continue
        groups.append(
            ChannelGroup(len(groups), names[root_module], unit, slices, layers, blocks, sliced)
        )
        tp_groups.append(g)
    return GroupIndex(
        groups, graph, tp_groups, [names[m] for m in ignored_layers if m in names], skipped
    )
