"""l0 sparse group lasso with variable splitting (Bui, Park, Zhang, Qi & Xin, arXiv 1912.07868)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from compressor.methods import register
from compressor.methods.base import EPS, Method
from compressor.pruning import Elementwise, kernel_sq

if TYPE_CHECKING:
    import torch
    from torch import nn

    from compressor.pruning import GroupIndex


@dataclass(frozen=True)
class L0SGLParams:
    lam: float = 0.1  # official code, LeNet-5 on MNIST (1e-3 for Wide-ResNet on CIFAR)
    beta0: float = 2.5  # official code, LeNet-5 (0.04 for Wide-ResNet)
    beta_factor: float = 1.25  # official code
    # epochs between beta increases; 0: ``beta_growths`` increases spread evenly over the
    # stage, counted in steps (the official run grows beta at 40, 80, 120 and 160 of 200
    # epochs: four increases, one every fifth of the run)
    beta_every: float = 0.0
    beta_growths: int = 4
    # the hard threshold: 0 reads it as the official code does, sqrt(2 lam / beta) for
    # every weight; q > 0 sets it per layer at the q-quantile of the layer's |w| at the
    # stage's start, falling with beta as sqrt(beta0 / beta) (the official threshold's
    # dependence). Reading: LeNet-5's 0.283 lies above almost every weight of resnet18
    # (Kaiming std 0.02-0.06), which leaves V = 0 and the l0 part absent
    threshold_quantile: float = 0.5

    def check(self) -> str | None:
        if self.beta0 <= 0:
            return f"beta0 must be positive, got {self.beta0}"
        if self.beta_factor < 1:
            return f"beta_factor must be at least 1, got {self.beta_factor}"
        if not self.threshold_quantile < 1:
            return f"threshold_quantile must be in [0, 1), got {self.threshold_quantile}"
        return None


@register
class L0SGL(Method):
    """l0 sparse group lasso trained by variable splitting.

    Objective (authors' official code for "Structured sparsity of CNNs via nonconvex sparse
    group regularization", which contains the l0 case):
    ``L(W) + lam * sum_g sqrt(|g|) ||W_g||_2 + lam * ||V||_0 + beta/2 * ||W - V||^2``.
    Each mini-batch takes a gradient step on W for the loss, the group term and the
    coupling term (the forward pass uses W), then sets
    ``V <- hard_threshold(W, sqrt(2 * lam / beta))`` elementwise; beta grows by
    ``beta_factor`` every ``beta_every`` epochs. As in that code the penalty is divided by
    the training-set size (the loss is a mean).

    Selection follows the official code: by W, not V. A channel counts as removed when the
    mean ``|w|`` of the weights it owns is under 1e-5 (the default selection); for a ratio or MAC
    target, channels are ranked by that mean. (Selecting by V = HT(W) instead removes
    every channel whose weights all sit under the hard threshold, about 0.28 with the
    LeNet-5 defaults: 507 of 570 channels of LeNet-5 after two epochs.)

    Groups are dependency-graph channels (the paper: output channels of convolutions, input
    neurons of linear layers), ``|g|`` the number of weights a channel owns.

    Readings, for a stage of a few epochs on a network other than LeNet-5:

    - **beta's schedule.** The official code grows beta four times over its run (every 40
      of 200 epochs); by default beta grows ``beta_growths`` times over the stage, at each
      fifth of its steps, so that a one-epoch stage sees the schedule too.
    - **the threshold.** With LeNet-5's ``lam`` and ``beta0`` the official threshold is
      0.283, above almost every weight of resnet18 or MobileNetV2: V would be 0 and the
      coupling term plain weight decay. By default each layer's threshold starts at the
      median ``|w|`` of that layer (``threshold_quantile``) and falls with beta as the
      official one does, so the l0 part keeps the large half and pulls the rest to zero.

    Under ``--lambda auto`` the whole objective (lam and beta alike) is multiplied by the
    strength, which leaves the thresholds unchanged.

    Bui, Park, Zhang, Qi & Xin, "l0 Regularized Structured Sparsity Convolutional Neural
    Networks", arXiv 1912.07868; the official code of the follow-up, "Structured Sparsity of
    Convolutional Neural Networks via Nonconvex Sparse Group Regularization" (Bui, Park,
    Zhang, Qi & Xin, Frontiers in Applied Mathematics and Statistics, 2021).
    """

    name = "l0sgl"
    paper = "Bui, Park, Zhang, Qi & Xin, l0 Regularized Structured Sparsity Convolutional Neural Networks, arXiv 1912.07868"
    reading = (
        "groups = dependency-graph channels; beta grows 4 times over the stage; per-layer "
        "threshold from the median |w|"
    )
    Params = L0SGLParams
    selection: ClassVar[dict[str, Any]] = {"threshold": 1e-5}  # official code: mean |w| < 1e-5
    # mean |w| is not on one scale across groups: under the usual initialisation it falls
    # like 1 / sqrt(fan-in), so a global ranking divides each group's by their mean (a
    # threshold compares the raw values, as the official code does)

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self.v: dict[str, torch.Tensor] = {}
        self.t0: dict[str, float] = {}  # per layer: the threshold at beta0 (quantile reading)
        self.epoch = 0
        self.step = 0  # optimizer steps done in the stage
        self._sizes: list[int] = []
        self._diffs: list[torch.Tensor] = []

    @property
    def growths(self) -> int:
        """How many times beta has grown so far."""
        p = self.params
        if p.beta_every > 0:
            return int(self.epoch // p.beta_every)
        total = max(1, self.stage_epochs * self.steps_per_epoch)
        return min(p.beta_growths, self.step * (p.beta_growths + 1) // total)

    @property
    def beta(self) -> float:
        return self.params.beta0 * self.params.beta_factor**self.growths

    def threshold(self, name: str) -> float:
        """The hard threshold of layer ``name``'s weights at the current beta."""
        p = self.params
        if p.threshold_quantile <= 0:
            return math.sqrt(2 * p.lam / self.beta)
        return self.t0[name] * math.sqrt(p.beta0 / self.beta)

    def _weight_names(self) -> list[str]:
        names = {
            f"{s.module}.weight"
            for g in self._require_groups()
            for s in g.slices
            if not s.norm_layer and s.param == "weight"
        }
        return sorted(names)

    def setup(
        self,
        model: nn.Module,
        *,
        example_input: torch.Tensor,
        groups: GroupIndex | None = None,
        train_size: int = 1,
    ) -> None:
        super().setup(model, example_input=example_input, groups=groups, train_size=train_size)
        params = self._params(model)
        self._sizes = [max(1, g.weights_per_channel(params)) for g in self._require_groups()]
        if not self.v:  # not restored from a resumable state
            self.t0 = {
                n: _quantile(params[n], self.params.threshold_quantile)
                for n in self._weight_names()
            }
            self._update_v(model)

    def start_epoch(self, model: nn.Module, *, epoch: int) -> None:
        self.epoch = epoch

    def _update_v(self, model: nn.Module) -> None:
        import torch

        params = self._params(model)
        with torch.no_grad():
            for name in self._weight_names():
                w = params[name].detach()
                self.v[name] = w * (w.abs() > self.threshold(name))

    def after_step(self, model: nn.Module, *, epoch: int, step: int) -> None:
        self.step = epoch * self.steps_per_epoch + step + 1
        self._update_v(model)

    def penalty(self, model: nn.Module, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """The group term through autograd, plus the coupling term's value; the coupling
        gradient ``beta (W - V) / N`` is added in ``after_backward`` directly, which saves
        two passes over the weights per step."""
        import torch

        params = self._params(model)
        squares = Elementwise(params, kernel_sq)
        group_terms = []
        for g, owned in zip(self._require_groups(), self._sizes, strict=True):
            sq = g.sq_norms(squares, weights_only=True)
            group_terms.append(math.sqrt(owned) * (sq + EPS).sqrt().sum())
        with torch.no_grad():
            names = list(self.v)
            for n in names:  # V restored from a resumable state lives on the CPU
                if self.v[n].device != params[n].device:
                    self.v[n] = self.v[n].to(params[n].device)
            weights = [params[n].detach() for n in names]
            self._diffs = list(torch._foreach_sub(weights, [self.v[n] for n in names]))
            coupling = (
                sum(float(d) ** 2 for d in torch._foreach_norm(self._diffs, 2)) if names else 0.0
            )
        p = self.params
        return (p.lam * sum(group_terms) + 0.5 * self.beta * coupling) / self.train_size

    def after_backward(self, model: nn.Module) -> None:
        import torch

        if not self._diffs:
            return
        params = self._params(model)
        grads = []
        diffs = []
        for n, d in zip(self.v, self._diffs, strict=True):
            p = params[n]
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
            diffs.append(d)
        torch._foreach_add_(grads, diffs, alpha=self.scale * self.beta / self.train_size)
        self._diffs = []

    def extra_grad_sq_norm(self, model: nn.Module) -> float:
        import torch

        params = self._params(model)
        with torch.no_grad():
            sq = sum(
                float((params[n].detach() - v.to(params[n].device)).pow(2).sum())
                for n, v in self.v.items()
            )
        return sq * (self.beta / self.train_size) ** 2

    def scores(self, model: nn.Module, index: GroupIndex, **context: Any) -> list[torch.Tensor]:
        """Per channel, the mean ``|w|`` of the convolution and linear weights it owns (W,
        as the official code selects): 0 for channels the training emptied."""
        import torch

        params = self._params(model)
        out = []
        with torch.no_grad():
            for g in index:
                total = torch.zeros(g.size)
                count = torch.zeros(g.size)
                for s in g.slices:
                    if s.norm_layer or s.param != "weight":
                        continue
                    rows = s.rows(params[f"{s.module}.weight"].detach().cpu())
                    total.index_add_(0, s.channel, rows.abs().sum(1))
                    count.index_add_(
                        0,
                        s.channel,
                        torch.full((len(s.channel),), rows.shape[1], dtype=total.dtype),
                    )
                out.append(total / count.clamp_min(1))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "v": {k: v.cpu() for k, v in self.v.items()},
            "t0": dict(self.t0),
            "epoch": self.epoch,
            "step": self.step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.v = dict(state.get("v") or {})
        self.t0 = {k: float(v) for k, v in (state.get("t0") or {}).items()}
        self.epoch = int(state.get("epoch", 0))
        self.step = int(state.get("step", 0))


def _quantile(weight: torch.Tensor, q: float) -> float:
    """The ``q``-quantile of ``|weight|`` (0 for ``q <= 0``, the official reading)."""
    if q <= 0:
        return 0.0
    flat = weight.detach().abs().flatten().float().cpu()
    k = min(flat.numel(), max(1, round(q * flat.numel())))
    return float(flat.kthvalue(k).values)
