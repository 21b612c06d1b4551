"""Hierarchical group sparsity (Mitsuno & Kurita, ICPR 2020; Mitsuno, Miyao & Kurita, IJCNN 2020)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from compressor.methods import register
from compressor.methods.base import EPS, Method
from compressor.pruning import Elementwise, normalized

if TYPE_CHECKING:
    import torch
    from torch import nn

    from compressor.pruning import ChannelGroup, GroupIndex, ParamSlice


@dataclass(frozen=True)
class HGSParams:
    lam: float = 1e-3  # official code
    lam2: float = 0.5  # official code: mix of the hierarchical term and plain l1
    samples: int = 256  # training samples on which removal's loss increase is taken (reading)
    exact: bool = False  # measure each removal by masked forward passes (slow) instead of
    # estimating it to second order from one forward/backward pass (reading)
    batch_channels: int = 16  # exact mode: candidate channels evaluated in one forward pass
    zero_tol: float = 1e-3  # official code: a weight counts as zero when |w| < 1e-3
    # rank the raw increases, as the paper does (False), or each group's divided by their
    # mean (True); the share and the plan read the same scores either way. Raw won on
    # validation in 3 of 4 cells, by 2.7-7.7 points, and lost 1.2 in the fourth
    # (benchmarks/results/hgs_ranking.md)
    normalize: bool = False

    def check(self) -> str | None:
        if not 0 <= self.lam2 <= 1:
            return f"lam2 must be in [0, 1], got {self.lam2}"
        if self.samples < 1 or self.batch_channels < 1:
            return "samples and batch_channels must be at least 1"
        return None


@register
class HGS(Method):
    """Hierarchical squared group l1/2 mixed with l1, selection by loss increase.

    Penalty (official code): ``lam * (lam2 * R + (1 - lam2) * ||W_conv||_1)`` with, for
    each kernel ``b = ||W[o, i]||_1``, ``R = sum_i (sum_o sqrt(b[o, i]))^2`` (the outer group
    is the input channel), over every convolution except residual downsample projections.
    Here the input channels are those of the dependency-graph groups: every consumer of a
    group channel carries the term, so a channel is emptied in all the layers that read it,
    and its producer's filter becomes removable with it (the loss-increase selection sees
    that removing it changes nothing). ``sqrt(b + eps)`` keeps gradients finite at 0.

    Convolutions whose input channels belong to no group (the first convolution, which
    reads the image) carry the official per-layer term ``sum_i (sum_o sqrt(b[o, i]))^2``.

    Selection (ICPR 2020 paper): channels are ranked by the increase of the classification
    loss when each is removed, on randomly drawn training samples. Reading: the sample
    count is not public (default 256). By default the increase is estimated to second order
    from one forward and backward pass: every channel gets a gate ``m = 1`` at its
    consumers' inputs, and removal (``m = 0``) changes the mean loss by about
    ``-mean_i(d_i) + mean_i(d_i^2) / 2`` with ``d_i`` the derivative of sample ``i``'s loss
    by the gate (the diagonal Gauss-Newton/Fisher curvature). ``exact=1`` measures every
    removal by masked forward passes instead, as the paper does: on resnet18 at 32x32 that
    takes about 100 s on 2 cores, the estimate 0.4 s (benchmarks/results/hgs_scoring.md). Channels whose weights are all
    under ``zero_tol`` score 0 in both modes (their removal changes nothing measurable). For a global
    ratio or MAC target the raw increases are ranked across layers, as the paper ranks them
    (``normalize=0``, the default): a loss criterion is on one scale in every layer. On
    both regimes' dense models (MobileNetV2 at 2x and 4x, resnet18 at 10x and 30x, 2 seeds,
    validation after one fine-tuning epoch) raw ranking beat per-group normalised ranking by
    2.7, 7.7 and 3.9 points and lost 1.2 at resnet18 10x (benchmarks/results/hgs_ranking.md).
    ``normalize=1`` divides each group's increases by their mean first, as for every other
    score (an earlier trial on smallcnn, not kept, had seen raw ranking pile the removals
    into one layer).

    Mitsuno & Kurita, "Filter Pruning using Hierarchical Group Sparse Regularization for
    Deep Convolutional Neural Networks", ICPR 2020 (arXiv 2011.02389); Mitsuno, Miyao &
    Kurita, "Hierarchical Group Sparse Regularization for Deep Convolutional Neural
    Networks", IJCNN 2020 (arXiv 2004.04394).
    """

    name = "hgs"
    # the scores are ranked as they come: ``scores`` applies ``normalize`` itself, so the
    # plan, the share and the pruning stage all read the same numbers
    comparable_scores: ClassVar[bool] = True
    paper = (
        "Mitsuno & Kurita, Filter Pruning using Hierarchical Group Sparse Regularization, ICPR 2020"
    )
    reading = (
        "input channels taken from dependency-graph groups; sample count; loss increase "
        "estimated to second order unless exact=1"
    )

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self._free_inputs: dict[str, Any] = {}

    def setup(
        self,
        model: nn.Module,
        *,
        example_input: torch.Tensor,
        groups: GroupIndex | None = None,
        train_size: int = 1,
    ) -> None:
        super().setup(model, example_input=example_input, groups=groups, train_size=train_size)
        self._free_inputs = _uncovered_inputs(model, self._require_groups())

    Params = HGSParams

    def penalty(self, model: nn.Module, features: dict[str, torch.Tensor]) -> torch.Tensor:
        params = self._params(model)
        kernel = _kernel_sizes(model)
        # one pass over each convolution's weights: b[o, i] = ||W[o, i]||_1 serves both terms
        b = Elementwise(params, _kernel_l1)
        hier = []
        for g in self._require_groups():
            for s in _consumer_slices(g, kernel):
                # sum_o sqrt(b[o, i]) at each input position i
                inner = s.position_sums(b[f"{s.module}.weight"], _sqrt_eps)
                per_channel = inner.new_zeros(g.size).index_add(
                    0, s.channel.to(inner.device), inner
                )
                hier.append(per_channel.pow(2).sum())
        for name, positions in self._free_inputs.items():
            # the official per-layer term, where no group owns the input channels
            inner = _sqrt_eps(b[f"{name}.weight"]).sum(0)
            hier.append(inner.index_select(0, positions.to(inner.device)).pow(2).sum())
        l1 = sum(b[f"{name}.weight"].sum() for name in kernel if not _is_downsample(name))
        p = self.params
        return p.lam * (p.lam2 * sum(hier) + (1 - p.lam2) * l1)

    def scores(self, model: nn.Module, index: GroupIndex, **context: Any) -> list[torch.Tensor]:
        """Loss increase when each channel is removed, on ``context['calibration']``
        ``(inputs, labels)``; channels already at zero score 0. Without calibration data,
        falls back to the weights' group L2 norm."""
        from compressor.methods.base import weight_norms

        calibration = context.get("calibration")
        if calibration is None:
            return weight_norms(model, index)
        skip = [self._near_zero(model, g) for g in index]
        progress = bool(context.get("progress", False))
        if self.params.exact:
            raw = loss_increase_scores(
                model,
                index,
                calibration,
                skip=skip,
                batch_channels=self.params.batch_channels,
                progress=progress,
            )
        else:
            raw = estimated_loss_increase(model, index, calibration, skip=skip, progress=progress)
        return normalized(raw) if self.params.normalize else raw

    def _near_zero(self, model: nn.Module, g: ChannelGroup) -> torch.Tensor:
        import torch

        params = self._params(model)
        with torch.no_grad():
            big = torch.zeros(g.size, dtype=torch.bool)
            for s in g.slices:
                if s.param != "weight" or s.norm_layer:
                    continue
                rows = s.rows(params[f"{s.module}.weight"]).detach().cpu()
                hit = (rows.abs() >= self.params.zero_tol).any(1)
                big.index_put_((s.channel,), hit, accumulate=True)
        return ~big


def _kernel_l1(w: torch.Tensor) -> torch.Tensor:
    """(O, I, kh, kw) -> (O, I): each kernel's l1 norm."""
    return w.abs().flatten(2).sum(2)


def _sqrt_eps(b: torch.Tensor) -> torch.Tensor:
    return (b + EPS).sqrt()  # eps keeps the gradient finite at 0


def _is_downsample(name: str) -> bool:
    return "downsample" in name.split(".")


def _kernel_sizes(model: nn.Module) -> dict[str, int]:
    from torch import nn

    return {
        name: int(m.weight[0, 0].numel())
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.conv._ConvNd)
    }


def _consumer_slices(g: ChannelGroup, kernel: dict[str, int]) -> list[ParamSlice]:
    """The group's input-channel slices of convolutions (not downsample projections)."""
    return [
        s
        for s in g.slices
        if s.param == "weight"
        and s.kind in ("in", "in_grouped", "in_transposed")
        and s.module in kernel
        and not _is_downsample(s.module)
    ]


def _uncovered_inputs(model: nn.Module, index: GroupIndex) -> dict[str, torch.Tensor]:
    """Input positions of ordinary (ungrouped, not downsample) convolutions that no group's
    slice owns: the image channels of the first convolution, and inputs of groups left whole."""
    import torch
    from torch import nn

    covered: dict[str, set[int]] = {}
    for g in index:
        for s in g.slices:
            if s.param == "weight" and s.kind == "in":
                covered.setdefault(s.module, set()).update(int(i) for i in s.index)
    out: dict[str, torch.Tensor] = {}
    for name, m in model.named_modules():
        if (
            isinstance(m, nn.modules.conv._ConvNd)
            and not m.transposed
            and m.groups == 1
            and not _is_downsample(name)
        ):
            free = [i for i in range(m.in_channels) if i not in covered.get(name, set())]
            if free:
                out[name] = torch.as_tensor(free, dtype=torch.long)
    return out


def _consumers(g: ChannelGroup) -> list[ParamSlice]:
    return [
        s
        for s in g.slices
        if s.kind in ("in", "in_grouped", "in_transposed") and s.param == "weight"
    ]


def estimated_loss_increase(
    model: nn.Module,
    index: GroupIndex,
    calibration: tuple[torch.Tensor, torch.Tensor],
    *,
    skip: list[torch.Tensor],
    chunk: int = 64,
    progress: bool = False,
) -> list[torch.Tensor]:
    """For every channel, the second-order estimate of the mean cross-entropy increase on
    ``calibration`` when the channel is removed: ``-mean(d) + mean(d^2) / 2``, with ``d``
    each sample's loss derivative by a gate on the channel at its consumers' inputs (one
    forward and backward pass per ``chunk`` samples for all channels at once). Channels
    flagged in ``skip`` score 0; a live channel never scores below ``1e-12``."""
    import torch
    import torch.nn.functional as F

    from compressor.outputs import split_outputs
    from compressor.utils import progress_bar

    x, y = calibration
    n = len(y)
    modules = dict(model.named_modules())
    was_training = model.training
    model.eval()
    first = [torch.zeros(g.size, dtype=torch.float64) for g in index]
    second = [torch.zeros(g.size, dtype=torch.float64) for g in index]
    starts = list(range(0, n, chunk))
    try:
        for start in progress_bar(starts, desc="hgs scores", enabled=progress, leave=False):
            xb, yb = x[start : start + chunk], y[start : start + chunk]
            k = len(yb)
            gates = [torch.ones(k, g.size, requires_grad=True, device=x.device) for g in index]
            masks: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
            for g, gate in zip(index, gates, strict=True):
                for s in _consumers(g):
                    masks.setdefault(s.module, []).append((s.index, gate[:, s.channel]))
            handles = [
                modules[name].register_forward_pre_hook(_gater(parts, k))
                for name, parts in masks.items()
            ]
            try:
                logits = split_outputs(model(xb))[0].float()
                loss = F.cross_entropy(logits, yb, reduction="sum")
                grads = torch.autograd.grad(loss, gates, allow_unused=True)
            finally:
                for h in handles:
                    h.remove()
            for i, gr in enumerate(grads):
                if gr is not None:
                    d = gr.detach().double().cpu()
                    first[i] += d.sum(0)
                    second[i] += d.pow(2).sum(0)
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    out = []
    for f, s2, skipped in zip(first, second, skip, strict=True):
        est = (-f / n + 0.5 * s2 / n).float().clamp_min(1e-12)
        est[skipped] = 0.0
        out.append(est)
    return out


def _gater(parts: list[tuple[torch.Tensor, torch.Tensor]], k: int) -> Any:
    """A pre-hook multiplying the input positions ``index`` by per-sample gates (channels on
    dim 1 for convolutions, on the last dim for linear layers)."""
    import torch

    def hook(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x = args[0]
        last = not hasattr(module, "in_channels")
        width = x.shape[-1] if last else x.shape[1]
        mask = torch.ones(k, width, dtype=x.dtype, device=x.device)
        for index, gate in parts:
            mask = mask.index_copy(1, index.to(x.device), gate.to(x.dtype))
        shape = (k,) + (1,) * (x.ndim - 2) + (width,) if last else (k, width) + (1,) * (x.ndim - 2)
        return (x * mask.view(shape), *args[1:])

    return hook


def loss_increase_scores(
    model: nn.Module,
    index: GroupIndex,
    calibration: tuple[torch.Tensor, torch.Tensor],
    *,
    skip: list[torch.Tensor],
    batch_channels: int = 16,
    progress: bool = False,
) -> list[torch.Tensor]:
    """For every channel, the mean cross-entropy increase on ``calibration`` when the
    channel is removed (its consumers see zero at its input positions).

    ``batch_channels`` candidates are evaluated per forward pass: the samples are
    replicated and each replica masks a different channel. Channels flagged in ``skip``
    are not evaluated and score 0.
    """
    import torch
    import torch.nn.functional as F

    from compressor.outputs import split_outputs
    from compressor.utils import progress_bar

    x, y = calibration
    n = len(y)
    was_training = model.training
    model.eval()
    modules = dict(model.named_modules())
    out: list[torch.Tensor] = []
    bar: Any = progress_bar(
        total=sum(int((~s).sum()) for s in skip),
        desc="hgs scores (exact)",
        enabled=progress,
        leave=False,
        unit="channel",
    )
    try:
        with torch.no_grad():
            base = F.cross_entropy(split_outputs(model(x))[0].float(), y)
            for g, skipped in zip(index, skip, strict=True):
                scores = torch.zeros(g.size)
                consumers = _consumers(g)
                todo = [c for c in range(g.size) if not bool(skipped[c])]
                for start in range(0, len(todo), batch_channels):
                    chunk = todo[start : start + batch_channels]
                    k = len(chunk)
                    handles = []
                    for s in consumers:
                        m = modules[s.module]
                        width = m.in_channels if hasattr(m, "in_channels") else m.in_features
                        mask = torch.ones(k, width, device=x.device)
                        for r, c in enumerate(chunk):
                            mask[r, s.index[s.channel == c].to(x.device)] = 0
                        handles.append(
                            m.register_forward_pre_hook(
                                _masker(mask, n, last_dim=not hasattr(m, "in_channels"))
                            )
                        )
                    try:
                        logits = split_outputs(model(x.repeat(k, *([1] * (x.ndim - 1)))))[0].float()
                    finally:
                        for h in handles:
                            h.remove()
                    losses = (
                        F.cross_entropy(logits, y.repeat(k), reduction="none").view(k, n).mean(1)
                    )
                    # a live channel never ranks below a dead one (score 0), even when noise
                    # makes its measured increase negative
                    scores[torch.as_tensor(chunk)] = (losses - base).cpu().clamp_min(1e-12)
                    bar.update(k)
                out.append(scores)
    finally:
        bar.close()
        model.train(was_training)
    return out


def _masker(mask: torch.Tensor, n: int, *, last_dim: bool) -> Any:
    """A pre-hook zeroing, in replica ``r``, the input positions ``mask[r] == 0``
    (channels on dim 1 for convolutions, on the last dim for linear layers)."""

    def hook(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x = args[0]
        m = mask.repeat_interleave(n, dim=0)
        if last_dim:
            shape = (m.shape[0],) + (1,) * (x.ndim - 2) + (m.shape[1],)
        else:
            shape = (m.shape[0], m.shape[1]) + (1,) * (x.ndim - 2)
        return (x * m.view(shape).to(x.dtype), *args[1:])

    return hook
