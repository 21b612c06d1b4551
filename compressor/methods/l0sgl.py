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
    beta_every: int = 1  # epochs between beta increases (reading; official: 40 of 200)

    def check(self) -> str | None:
        if self.beta0 <= 0:
            return f"beta0 must be positive, got {self.beta0}"
        if self.beta_factor < 1:
            return f"beta_factor must be at least 1, got {self.beta_factor}"
        if self.beta_every < 1:
            return f"beta_every must be at least 1, got {self.beta_every}"
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
    the training-set size (the loss is a mean). Channels whose V slices are all zero are
    removed.

    Groups are dependency-graph channels (the paper: output channels of convolutions, input
    neurons of linear layers), ``|g|`` the number of weights a channel owns. Reading: the
    official schedule grows beta every 40 of 200 epochs when training from scratch;
    compression fine-tunes for a few epochs, so the default grows it every epoch.

    Bui, Park, Zhang, Qi & Xin, "Improving Network Slimming with Nonconvex Regularization"
    / "Structured Sparsity of Convolutional Neural Networks via Nonconvex Sparse Group
    Regularization", arXiv 1912.07868.
    """

    name = "l0sgl"
    paper = "Bui, Park, Zhang, Qi & Xin, Structured Sparsity of CNNs via Nonconvex Sparse Group Regularization, arXiv 1912.07868"
    reading = "groups = dependency-graph channels; beta grows every epoch by default"
    Params = L0SGLParams
    selection: ClassVar[dict[str, Any]] = {"threshold": 1e-12}

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self.v: dict[str, torch.Tensor] = {}
        self.epoch = 0
        self._sizes: list[int] = []
        self._diffs: list[torch.Tensor] = []

    @property
    def beta(self) -> float:
        p = self.params
        return p.beta0 * p.beta_factor ** (self.epoch // max(1, p.beta_every))

    @property
    def threshold(self) -> float:
        return math.sqrt(2 * self.params.lam / self.beta)

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
            self._update_v(model)

    def start_epoch(self, model: nn.Module, *, epoch: int) -> None:
        self.epoch = epoch

    def _update_v(self, model: nn.Module) -> None:
        import torch

        params = self._params(model)
        t = self.threshold
        with torch.no_grad():
            for name in self._weight_names():
                w = params[name].detach()
                self.v[name] = w * (w.abs() > t)

    def after_step(self, model: nn.Module, *, epoch: int, step: int) -> None:
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
        torch._foreach_add_(grads, diffs, alpha=self.beta / self.train_size)
        self._diffs = []

    def scores(self, model: nn.Module, index: GroupIndex, **context: Any) -> list[torch.Tensor]:
        """Per channel, the l2 norm of its V slices: exactly 0 for channels V removed."""
        import torch

        out = []
        for g in index:
            sq = torch.zeros(g.size)
            for s in g.slices:
                name = f"{s.module}.{s.param}"
                if name in self.v:
                    rows = s.rows(self.v[name].cpu())
                    sq.index_add_(0, s.channel, rows.pow(2).sum(1))
            out.append(sq.sqrt())
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"v": {k: v.cpu() for k, v in self.v.items()}, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.v = dict(state.get("v") or {})
        self.epoch = int(state.get("epoch", 0))
