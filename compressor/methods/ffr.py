"""Feature flow regularization (Wu, Lan, Zhang & Xiang, arXiv 2106.02914; Neural Networks 2023)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from compressor.methods import register
from compressor.methods.base import EPS, Method

if TYPE_CHECKING:
    import torch
    from torch import nn

    from compressor.pruning import GroupIndex

_ACTIVATIONS = ("ReLU", "ReLU6", "GELU", "SiLU", "Hardswish", "LeakyReLU")


@dataclass(frozen=True)
class FFRParams:
    lam: float = 1e-2  # lambda1, on the flow's length (reading: not public here)
    lam2: float = 1e-2  # lambda2, on the flow's curvature (reading)


@register
class FFR(Method):
    """Penalise the length and curvature of the feature flow (Wu, Lan, Zhang & Xiang,
    "Feature Flow Regularization: Improving Structured Sparsity in Deep Neural Networks",
    arXiv 2106.02914; Neural Networks 161, 2023).

    The feature flow is the trajectory of hidden features from block to block; keeping it
    short and smooth implicitly raises structured sparsity, after which channels are pruned
    by group norm. Reading (the exact discretisation is not public): with ``x_l`` the output
    of block ``l`` over a mini-batch, over runs of consecutive blocks whose outputs share a
    shape, length ``sum_l ||x_{l+1} - x_l|| / ||x_l||`` and curvature
    ``sum_l ||x_{l+1} - 2 x_l + x_{l-1}|| / ||x_l||`` (norms per sample, averaged over the
    batch); loss += ``lam * length + lam2 * curvature``. Blocks are the composite children
    of the model's ``nn.Sequential`` containers (ResNet blocks, inverted residuals, ...), or
    their activations where a container has no composite children (VGG). Features come from
    forward hooks in the same forward pass as the loss. In a residual block
    ``x_{l+1} = x_l + f(x_l)`` the length term is the norm of ``f(x_l)``, which is why the
    penalty empties whole branches' channels.
    """

    name = "ffr"
    paper = "Wu, Lan, Zhang & Xiang, Feature Flow Regularization, arXiv 2106.02914 / Neural Networks 2023"
    reading = (
        "block outputs of nn.Sequential containers; per-sample relative norms; default strengths"
    )
    Params = FFRParams

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self.runs: list[list[str]] = []

    def setup(
        self,
        model: nn.Module,
        *,
        example_input: torch.Tensor,
        groups: GroupIndex | None = None,
        train_size: int = 1,
    ) -> None:
        super().setup(model, example_input=example_input, groups=groups, train_size=train_size)
        self.runs = flow_runs(model, example_input)
        if not self.runs:
            from compressor.errors import CompressorError

            raise CompressorError(
                "ffr needs runs of at least two consecutive blocks with equal output shapes "
                "(residual stages, inverted residuals, ...); this model has none"
            )

    def feature_modules(self, model: nn.Module) -> dict[str, nn.Module]:
        modules = dict(model.named_modules())
        return {name: modules[name] for run in self.runs for name in run}

    def penalty(self, model: nn.Module, features: dict[str, torch.Tensor]) -> torch.Tensor | None:
        if not self.runs:
            return None
        length = curvature = None
        for run in self.runs:
            xs = [features[name].float().flatten(1) for name in run]
            for i in range(len(xs) - 1):
                term = _rel(xs[i + 1] - xs[i], xs[i])
                length = term if length is None else length + term
            for i in range(1, len(xs) - 1):
                term = _rel(xs[i + 1] - 2 * xs[i] + xs[i - 1], xs[i])
                curvature = term if curvature is None else curvature + term
        total = self.params.lam * length if length is not None else None
        if curvature is not None:
            total = (
                total + self.params.lam2 * curvature
                if total is not None
                else self.params.lam2 * curvature
            )
        return total


def _rel(diff: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    num = (diff.pow(2).sum(1) + EPS).sqrt()
    den = (ref.pow(2).sum(1) + EPS).sqrt()
    return (num / den).mean()


def flow_runs(model: nn.Module, example_input: torch.Tensor) -> list[list[str]]:
    """Runs (at least two long) of consecutive blocks whose outputs share a shape."""
    import torch
    from torch import nn

    candidates: list[list[str]] = []
    taken: list[str] = []
    for name, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential) or any(
            name.startswith(t + ".") or name == t for t in taken
        ):
            continue
        children = list(seq.named_children())
        composite = [
            (n, c)
            for n, c in children
            if any(p.requires_grad for p in c.parameters()) and len(list(c.children())) > 0
        ]
        chosen = (
            composite
            if len(composite) >= 2
            else [(n, c) for n, c in children if type(c).__name__ in _ACTIVATIONS]
        )
        if len(chosen) >= 2:
            names = [f"{name}.{n}" if name else n for n, _ in chosen]
            candidates.append(names)
            taken.extend(names)
    if not candidates:
        return []
    modules = dict(model.named_modules())
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [
        modules[n].register_forward_hook(
            lambda m, i, o, n=n: shapes.__setitem__(n, tuple(o.shape[1:]))
        )
        for run in candidates
        for n in run
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example_input[:1])
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    runs: list[list[str]] = []
    for names in candidates:
        current: list[str] = []
        for n in names:
            if n not in shapes:
                continue
            if current and shapes[current[-1]] != shapes[n]:
                if len(current) >= 2:
                    runs.append(current)
                current = []
            current.append(n)
        if len(current) >= 2:
            runs.append(current)
    return runs
