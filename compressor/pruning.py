"""Coupled channel groups, channel selection and physical removal (torch-pruning's DepGraph).

A *group* is a set of channels that must be removed together: the producer's filters, the
normalisation entries, the consumers' input slices, and everything tied to them through
residual additions, concatenations and depthwise convolutions. ``channel_groups`` exposes,
for every channel of every group, the parameter slices it owns (``ParamSlice``), so that a
regularizer can penalise exactly what pruning removes and a selection policy can score it.

Selection is global across the model: an absolute or relative score threshold
(``plan_threshold``), a fraction of all prunable channels (``plan_ratio``), or a MAC budget
(``plan_target_macs``); the last two can instead take the same fraction of every group
(``allocation="uniform"``). Guards keep every layer
non-empty (``max_layer_ratio``), leave the classifier's outputs and the input alone, and
round kept channel counts to multiples of ``round_to``.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from compressor.config import IMPORTANCES
from compressor.errors import CompressorError

if TYPE_CHECKING:
    import torch
    from torch import nn


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
    skipped: list[str] = field(default_factory=list)  # roots of groups left whole (grouped convs)

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
            out.append(segs)
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
    try:
        yield
    finally:
        for m in patched:
            del m.forward


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
        if fn in (tp.prune_conv_out_channels, tp.prune_depthwise_conv_out_channels) or (
            depthwise and fn in (tp.prune_conv_in_channels, tp.prune_depthwise_conv_in_channels)
        ):
            if depthwise and fn in (tp.prune_conv_in_channels, tp.prune_depthwise_conv_in_channels):
                return []  # the same weights are owned through the out-channel dependency
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


def channel_groups(
    model: nn.Module, example_input: torch.Tensor, *, ignored: list[nn.Module] | None = None
) -> GroupIndex:
    """Trace ``model`` on ``example_input`` and return its prunable channel groups.

    The classifier's outputs are never part of a group. Raises ``CompressorError`` when the
    model cannot be traced.
    """
    import torch_pruning as tp
    from torch import nn

    names = {m: n for n, m in model.named_modules()}
    ignored_layers = list(ignored or []) + classifier_layers(model)
    was_training = model.training
    model.eval()
    fixed = _fixed_channels_pruner()
    try:
        with _opaque_for_tracing(model):
            graph = tp.DependencyGraph().build_dependency(
                model,
                example_inputs=example_input,
                verbose=False,
                customized_pruners={t: fixed for t in _fixed_types()},
            )
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
        blocks = _blocks(g, graph)
        if blocks is None:
            # A channel shuffle needs a fixed interleaving, and grouped convolutions that
            # see the channels shifted or disagree on their groups cannot be kept
            # balanced: those groups stay whole; the rest of the model still prunes.
            skipped.append(names.get(g[0].dep.target.module, "?"))
            continue
        unit = len(g[0].idxs) // blocks  # channels per block = units in the group
        slices: list[ParamSlice] = []
        layers: list[str] = []
        for item in g:
            dep, idxs = item.dep, item.idxs
            plain = [int(i) for i in idxs]
            root = item.root_idxs
            if root is None or any(r is None for r in root):
                continue
            slices.extend(_slice_for(dep, plain, [int(r) % unit for r in root], names))
            if graph.is_out_channel_pruning_fn(dep.handler) and isinstance(
                dep.target.module, nn.modules.conv._ConvNd | nn.Linear
            ):
                layers.append(names[dep.target.module])
        root_module = g[0].dep.target.module
        if not slices or unit < 2:
            continue
        groups.append(ChannelGroup(len(groups), names[root_module], unit, slices, layers, blocks))
        tp_groups.append(g)
    return GroupIndex(
        groups, graph, tp_groups, [names[m] for m in ignored_layers if m in names], skipped
    )


def param_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters by qualified name (what ``ChannelGroup`` norms take)."""
    return dict(model.named_parameters())


def norm_pairs(index: GroupIndex, model: nn.Module) -> dict[str, str]:
    """Convolution or linear layer -> the BatchNorm layer that normalises its output and
    nothing else (read from the dependency graph): the pairs that fold at inference."""
    from torch import nn

    graph = getattr(index, "graph", None)
    nodes = getattr(graph, "module2node", None) or {}
    names = {m: n for n, m in model.named_modules()}
    pairs: dict[str, str] = {}
    for module, node in nodes.items():
        if not isinstance(module, nn.modules.batchnorm._BatchNorm) or module not in names:
            continue
        if not module.affine or module.running_var is None or len(node.inputs) != 1:
            continue
        src = node.inputs[0]
        layer = getattr(src, "module", None)
        if (
            isinstance(layer, nn.Conv2d | nn.Conv1d | nn.Conv3d | nn.Linear)
            and layer in names
            and len(src.outputs) == 1
            and layer.weight.shape[0] == module.num_features
        ):
            pairs[names[layer]] = names[module]
    return pairs


def folded_params(index: GroupIndex, model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters as the deployed network has them: each BatchNorm folded into the
    layer before it (weight rows times ``gamma / sqrt(running_var + eps)``), the folded
    BatchNorm's own entries zero. Before a BatchNorm a filter's scale is free (the
    normalisation undoes it), so a group norm on the raw weights measures nothing the
    network computes; on the folded weights it measures each channel's actual gain."""
    import torch

    params = {n: p.detach() for n, p in param_dict(model).items()}
    modules = dict(model.named_modules())
    for layer, norm in norm_pairs(index, model).items():
        bn = modules[norm]
        scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
        w = params[f"{layer}.weight"]
        params[f"{layer}.weight"] = w * scale.reshape(-1, *([1] * (w.ndim - 1)))
        if f"{layer}.bias" in params:
            params[f"{layer}.bias"] = torch.zeros_like(params[f"{layer}.bias"])
        params[f"{norm}.weight"] = torch.zeros_like(bn.weight)
        params[f"{norm}.bias"] = torch.zeros_like(bn.bias)
    return params


def group_scores(index: GroupIndex, model: nn.Module, importance: str = "l2") -> list[torch.Tensor]:
    """Per-channel scores of every group: l2 = group L2 norm, l1 = group L1 norm, bn = sum
    |gamma|, folded = group L2 norm of the weights with every BatchNorm folded in."""
    import torch

    if importance not in IMPORTANCES:
        raise CompressorError(
            f"unknown importance {importance!r}; choose one of: {', '.join(IMPORTANCES)}"
        )
    params = param_dict(model)
    with torch.no_grad():
        if importance == "l2":
            return [g.sq_norms(params).sqrt() for g in index]
        if importance == "folded":
            folded = folded_params(index, model)
            return [g.sq_norms(folded).sqrt() for g in index]
        if importance == "l1":
            return [g.l1_norms(params) for g in index]
        return [g.bn_scales(params) for g in index]


# --------------------------------------------------------------------------- selection


@dataclass
class Plan:
    """Which channels of which group to remove."""

    remove: dict[int, list[int]] = field(default_factory=dict)

    @property
    def removed_channels(self) -> int:
        return sum(len(v) for v in self.remove.values())


def focus_masks(
    model: nn.Module, index: GroupIndex, remove: dict[int, list[int]]
) -> dict[str, torch.Tensor]:
    """For every trainable parameter, a boolean mask of the entries owned by the channels
    in ``remove`` (group position -> channels): where a focused penalty may act."""
    import torch

    params = dict(model.named_parameters())
    masks = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in params.items() if p.requires_grad}
    groups = list(index)
    for gi, channels in remove.items():
        if not channels:
            continue
        chosen = torch.tensor(channels)
        for s in groups[gi].slices:
            name = f"{s.module}.{s.param}"
            if name not in masks:
                continue
            mask = masks[name]
            ids = torch.arange(mask.numel(), device=mask.device).reshape(mask.shape)
            rows = s.rows(ids)[torch.isin(s.channel, chosen).to(mask.device)]
            mask.view(-1)[rows.reshape(-1)] = True
    return masks


RoundTo = int | list[int]  # one multiple for every group, or one per group (in units)


def _round(round_to: RoundTo, gi: int) -> int:
    return round_to[gi] if isinstance(round_to, list) else round_to


def _limit(size: int, n_remove: int, *, max_layer_ratio: float, round_to: int) -> int:
    """Clamp a group's removal count so that at least one channel (or ``round_to``) stays
    and the kept count is a multiple of ``round_to`` (rounded up: we keep more, never fewer)."""
    max_remove = min(size - 1, math.floor(size * max_layer_ratio))
    n = max(0, min(n_remove, max_remove))
    if round_to > 1 and size > round_to:
        keep = size - n
        keep = min(size, max(round_to, math.ceil(keep / round_to) * round_to))
        n = size - keep
    return n


Segments = list[list[list[int]]] | None  # per group, the channels of each producing layer


def _plan_from_counts(
    scores: list[torch.Tensor], counts: list[int], segments: Segments = None
) -> Plan:
    """The ``counts[g]`` lowest-scored channels of every group, except that no producing
    layer (a segment: one branch of a concatenation) loses its last channel."""
    plan = Plan()
    for gi, (s, n) in enumerate(zip(scores, counts, strict=True)):
        if n <= 0:
            continue
        order = s.argsort(stable=True).tolist()
        segs = segments[gi] if segments else []
        if len(segs) < 2:
            plan.remove[gi] = sorted(order[:n])
            continue
        left = [len(seg) for seg in segs]
        owners: dict[int, list[int]] = {}
        for k, seg in enumerate(segs):
            for c in seg:
                owners.setdefault(c, []).append(k)
        chosen: list[int] = []
        for c in order:
            if len(chosen) == n:
                break
            if any(left[k] <= 1 for k in owners.get(c, [])):
                continue
            for k in owners.get(c, []):
                left[k] -= 1
            chosen.append(c)
        plan.remove[gi] = sorted(chosen)
    return plan


def plan_threshold(
    scores: list[torch.Tensor],
    threshold: float,
    *,
    relative: bool = False,
    max_layer_ratio: float = 0.9,
    round_to: RoundTo = 1,
    blocks: list[int] | None = None,  # accepted with the other guards, not needed
    segments: Segments = None,
) -> Plan:
    """Remove channels scoring below ``threshold`` (or below ``threshold`` x the group's max)."""
    counts = []
    for gi, s in enumerate(scores):
        limit = threshold * float(s.max()) if relative else threshold
        counts.append(
            _limit(
                len(s),
                int((s < limit).sum()),
                max_layer_ratio=max_layer_ratio,
                round_to=_round(round_to, gi),
            )
        )
    return _plan_from_counts(scores, counts, segments)


ALLOCATIONS = ("global", "uniform")


def _normalized(scores: list[torch.Tensor]) -> list[torch.Tensor]:
    # Groups differ in scale (layer widths, fan-in); dividing by the group mean makes a
    # global ranking compare like with like, as torch-pruning's default normaliser does.
    return [s / (s.abs().mean() + 1e-12) for s in scores]


def plan_ratio(
    scores: list[torch.Tensor],
    ratio: float,
    *,
    max_layer_ratio: float = 0.9,
    round_to: RoundTo = 1,
    normalize: bool = True,
    blocks: list[int] | None = None,
    segments: Segments = None,
    allocation: str = "global",
) -> Plan:
    """Remove the fraction ``ratio`` of all prunable channels with the lowest scores, each
    group's scores divided by its mean unless ``normalize`` is False (scores already
    comparable across groups, such as a loss increase). ``blocks``: per group, the model
    channels one entry of its scores stands for (``ChannelGroup.blocks``; 1 if None).

    ``allocation``: ``"global"`` ranks all channels together, so the scores decide how
    many each group loses; ``"uniform"`` removes the fraction ``ratio`` of every group
    (Torch-Pruning's default) and the scores decide only which."""
    import torch

    if not 0.0 <= ratio < 1.0:
        raise CompressorError(f"--ratio must be in [0, 1), got {ratio}")
    if allocation not in ALLOCATIONS:
        raise CompressorError(
            f"unknown allocation {allocation!r}; choose one of: {', '.join(ALLOCATIONS)}"
        )
    norm = _normalized(scores) if normalize else list(scores)
    if allocation == "uniform":
        counts = [
            _limit(
                len(s),
                math.floor(len(s) * ratio),
                max_layer_ratio=max_layer_ratio,
                round_to=_round(round_to, gi),
            )
            for gi, s in enumerate(norm)
        ]
        return _plan_from_counts(norm, counts, segments)
    flat = torch.cat(norm) if norm else torch.zeros(0)
    weight = (
        torch.cat(
            [torch.full((len(s),), (blocks or [1] * len(norm))[i]) for i, s in enumerate(norm)]
        )
        if norm
        else torch.zeros(0)
    )
    n_target = round(float(weight.sum()) * ratio)
    if n_target == 0:
        return Plan()
    # rank globally (stable, so ties resolve the same way every time) and count per group
    order = flat.argsort(stable=True)
    lowest = order[: int((weight[order].cumsum(0) <= n_target).sum())]
    owner = torch.cat([torch.full((len(s),), i) for i, s in enumerate(norm)])
    per_group = torch.bincount(owner[lowest], minlength=len(norm)).tolist()
    counts = [
        _limit(len(s), n, max_layer_ratio=max_layer_ratio, round_to=_round(round_to, gi))
        for gi, (s, n) in enumerate(zip(norm, per_group, strict=True))
    ]
    return _plan_from_counts(norm, counts, segments)


def mac_estimator(
    model: nn.Module, index: GroupIndex, input_size: tuple[int, int, int]
) -> tuple[int, Callable[[Plan], int]]:
    """(exact MACs now, a function estimating the MACs left after a plan).

    Each convolution's and linear layer's MACs scale with its kept output and input
    fractions, each normalisation layer's with its kept channels; the rest (pooling, and
    whatever fvcore counts outside modules) is held constant. ``selection.meet_target`` corrects
    what remains of the error by counting the pruned model itself.
    """
    import torch
    from torch import nn

    from compressor.analysis import measure

    total, by_module = measure(model, input_size)
    dims: dict[str, tuple[int, int]] = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            dims[name] = (m.out_channels, m.in_channels)
        elif isinstance(m, nn.Linear):
            dims[name] = (m.out_features, m.in_features)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm | nn.GroupNorm | nn.LayerNorm):
            width = getattr(m, "num_features", None) or getattr(m, "num_channels", None)
            if width is None:
                width = int(getattr(m, "normalized_shape", (0,))[0])
            dims[name] = (int(width), 0)
    base = {n: by_module.get(n, 0) for n in dims}
    other = total - sum(base.values())
    weight_slices = [
        [
            s
            for s in g.slices
            if s.module in dims and (s.param == "weight" or (s.norm_layer and s.param == "bias"))
        ]
        for g in index
    ]
    # a norm layer may have no scale (affine=False); its shift slice then stands for it
    for sl_list in weight_slices:
        norm_weights = {s.module for s in sl_list if s.norm_layer and s.param == "weight"}
        sl_list[:] = [
            s
            for s in sl_list
            if not (s.norm_layer and s.param == "bias" and s.module in norm_weights)
        ]

    def estimate(plan: Plan) -> int:
        out_removed: dict[str, int] = {}
        in_removed: dict[str, int] = {}
        for gi, chans in plan.remove.items():
            chosen = torch.as_tensor(chans, dtype=torch.long)
            for sl in weight_slices[gi]:
                n = int(torch.isin(sl.channel, chosen).sum())
                out = sl.kind in ("out", "out_transposed", "norm")
                target = out_removed if out else in_removed
                target[sl.module] = target.get(sl.module, 0) + n
        left = float(other)
        for name, macs in base.items():
            o, i = dims[name]
            kept_in = 1 - in_removed.get(name, 0) / i if i else 1.0
            left += macs * (1 - out_removed.get(name, 0) / o) * kept_in
        return int(left)

    return total, estimate


def plan_target_macs(
    scores: list[torch.Tensor],
    estimate: Callable[[Plan], int],
    total_macs: int,
    target: float,
    *,
    max_layer_ratio: float = 0.9,
    round_to: RoundTo = 1,
    normalize: bool = True,
    blocks: list[int] | None = None,
    segments: Segments = None,
    allocation: str = "global",
) -> Plan:
    """The smallest ratio (global, or per group with ``allocation="uniform"``) whose estimated MACs are at most ``target`` x the original.

    Raises ``CompressorError`` saying what was reached when the target is out of reach.
    """
    budget = target * total_macs

    def plan_at(r: float) -> Plan:
        return plan_ratio(
            scores,
            r,
            max_layer_ratio=max_layer_ratio,
            round_to=round_to,
            normalize=normalize,
            blocks=blocks,
            segments=segments,
            allocation=allocation,
        )

    most = plan_at(0.999)
    best = estimate(most)
    if best > budget:
        raise CompressorError(
            f"--target-macs {target} is out of reach: removing all that the guards allow "
            f"(--max-layer-ratio {max_layer_ratio} and the --round-to rounding) leaves "
            f"{best / total_macs:.3f} of the MACs"
        )
    lo, hi = 0.0, 0.999
    for _ in range(25):
        mid = (lo + hi) / 2
        if estimate(plan_at(mid)) <= budget:
            hi = mid
        else:
            lo = mid
    norm = _normalized(scores) if normalize else list(scores)
    return _fill_back(plan_at(hi), norm, estimate, budget, round_to=round_to)


def _fill_back(
    plan: Plan,
    scores: list[torch.Tensor],
    estimate: Callable[[Plan], int],
    budget: float,
    *,
    round_to: RoundTo,
) -> Plan:
    """Give channels back while the budget allows: the best-scoring removed block
    (``round_to`` channels) of any group, one at a time.

    A global ratio moves in jumps once kept counts are rounded: on resnet18 at 1/30 of the
    MACs, the stem's residual group falls from 16 kept channels to 8 within one step of the
    ratio, and the plan landed at 1/37 (1/45 after training). Filling back lands it just
    under the budget.
    """
    remove = {g: list(v) for g, v in plan.remove.items() if v}
    while True:
        best: tuple[float, int, list[int]] | None = None
        for g, removed in remove.items():
            size = len(scores[g])
            r = _round(round_to, g)
            step = r if r > 1 and size > r else 1
            order = sorted(removed, key=lambda c: float(scores[g][c]), reverse=True)
            back = order[:step]
            trial = Plan({**remove, g: sorted(set(removed) - set(back))})
            if estimate(trial) > budget:
                continue
            value = float(scores[g][back].mean())
            if best is None or value > best[0]:
                best = (value, g, back)
        if best is None:
            break
        _, g, back = best
        remove[g] = sorted(set(remove[g]) - set(back))
        if not remove[g]:
            del remove[g]
    return Plan(remove)


# --------------------------------------------------------------------------- removal


def apply_plan(index: GroupIndex, plan: Plan) -> None:
    """Physically remove the planned channels (modules are modified in place)."""
    graph = index.graph
    for gi, idxs in sorted(plan.remove.items()):
        if not idxs:
            continue
        tp_group = index.tp_groups[gi]
        root = tp_group[0].dep.target.module
        handler = tp_group[0].dep.handler
        group = graph.get_pruning_group(root, handler, index.groups[gi].model_channels(idxs))
        if not graph.check_pruning_group(group):
            raise CompressorError(
                f"removing {len(idxs)} channels of {index.groups[gi].root} would empty a layer"
            )
        group.prune()


# --------------------------------------------------------------------------- structure


_STRUCT_TYPES = (int, float, bool, tuple)


def structure_of(model: nn.Module, reference: nn.Module) -> dict[str, dict[str, Any]]:
    """Module attributes of ``model`` that differ from ``reference`` (a fresh build).

    Pruning changes channel counts stored on modules (``out_channels``, ``num_features``,
    ``hidden_dim``, ...). Recording the differences lets ``apply_structure`` rebuild the
    pruned model from its architecture without pickling code.
    """
    ref = dict(reference.named_modules())
    out: dict[str, dict[str, Any]] = {}
    for name, m in model.named_modules():
        r = ref.get(name)
        if r is None:
            raise CompressorError(f"module {name!r} is not in the reference architecture")
        diff = {}
        for k, v in vars(m).items():
            if k.startswith("_") or not isinstance(v, _STRUCT_TYPES):
                continue
            rv = getattr(r, k, None)
            if v != rv:
                diff[k] = list(v) if isinstance(v, tuple) else v
        if diff:
            out[name] = diff
    return out


def apply_structure(
    model: nn.Module, structure: dict[str, dict[str, Any]], state_dict: dict[str, torch.Tensor]
) -> None:
    """Reshape a freshly built ``model`` to a recorded structure, ready for ``state_dict``."""
    import torch
    from torch import nn

    modules = dict(model.named_modules())
    for name, attrs in structure.items():
        m = modules.get(name)
        if m is None:
            raise CompressorError(
                f"the recorded structure names a module {name!r} the architecture lacks"
            )
        for k, v in attrs.items():
            current = getattr(m, k, None)
            setattr(m, k, tuple(v) if isinstance(current, tuple) or isinstance(v, list) else v)
    for key, value in state_dict.items():
        mod_name, _, attr = key.rpartition(".")
        m = modules.get(mod_name)
        if m is None:
            continue
        current = getattr(m, attr, None)
        if not isinstance(current, torch.Tensor) or current.shape == value.shape:
            continue
        fresh = torch.empty(value.shape, dtype=current.dtype)
        if isinstance(current, nn.Parameter):
            setattr(m, attr, nn.Parameter(fresh, requires_grad=current.requires_grad))
        else:
            m.register_buffer(attr, fresh)


def copy_model(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model)
