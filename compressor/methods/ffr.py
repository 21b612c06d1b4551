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
    by group norm. Reading (the exact discretisation is not public): a *run* is a stretch of
    consecutive blocks that keep their input's shape; its flow is ``x_0`` (the input of its
    first block), then each block's output ``x_1 .. x_k``. Length
    ``sum_l ||x_{l+1} - x_l|| / ||x_l||`` and curvature
    ``sum_l ||x_{l+1} - 2 x_l + x_{l-1}|| / ||x_l||`` (norms per sample, averaged over the
    batch); loss += ``lam * length + lam2 * curvature``. Blocks are the composite children
    of the model's ``nn.Sequential`` containers (ResNet blocks, inverted residuals, ...): a
    child with parameters of its own between two blocks ends a run (parameter-free ones,
    such as an activation, belong to the step). Where a container has no composite children
    (VGG), its activations' outputs are the flow points. Features come from forward hooks
    in the same forward pass as the loss. In a residual block ``x_{l+1} = x_l + f(x_l)`` the
    length term is the norm of ``f(x_l)``, which is why the penalty empties whole
    branches' channels. resnet18 gets five length terms (two in layer1, one in each later
    stage, whose first block changes the shape) and one curvature term.
    """

    name = "ffr"
    paper = "Wu, Lan, Zhang & Xiang, Feature Flow Regularization, arXiv 2106.02914 / Neural Networks 2023"
    reading = "runs of shape-keeping blocks of nn.Sequential containers, from the first block's input; per-sample relative norms"
    Params = FFRParams

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self.runs: list[list[str]] = []  # feature keys: "name" (output) or "name:in" (input)

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
                "ffr needs blocks that keep their input's shape (residual stages, inverted "
                "residuals, ...) or two activations in a row of equal shape; this model has none"
            )

    def feature_modules(self, model: nn.Module) -> dict[str, nn.Module]:
        modules = dict(model.named_modules())
        return {k: modules[k] for run in self.runs for k in run if not k.endswith(":in")}

    def feature_inputs(self, model: nn.Module) -> dict[str, nn.Module]:
        modules = dict(model.named_modules())
        return {k: modules[k[:-3]] for run in self.runs for k in run if k.endswith(":in")}

    def penalty(self, model: nn.Module, features: dict[str, torch.Tensor]) -> torch.Tensor | None:
        if not self.runs:
            return None
        length = curvature = None
        for run in self.runs:
            xs = [features[k].float().flatten(1) for k in run]
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


def _has_params(m: nn.Module) -> bool:
    return any(p.requires_grad for p in m.parameters())


def _candidates(model: nn.Module) -> list[tuple[str, list[str]]]:
    """(mode, names): stretches of blocks (``"blocks"``) or activations (``"acts"``) of each
    ``nn.Sequential``, split where a child with parameters sits between two blocks."""
    from torch import nn

    out: list[tuple[str, list[str]]] = []
    taken: list[str] = []
    for name, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential) or any(
            name == t or name.startswith(t + ".") for t in taken
        ):
            continue
        children: list[tuple[str, nn.Module]] = list(seq.named_children())
        full = [f"{name}.{n}" if name else n for n, _ in children]
        # plain containers are not blocks: their own children are (visited in turn)
        composite = [
            i
            for i, (_, c) in enumerate(children)
            if _has_params(c)
            and len(list(c.children()))
            and type(c) not in (nn.Sequential, nn.ModuleList)
        ]
        if composite:
            current: list[str] = []
            prev: int | None = None
            for i in composite:
                between: list[tuple[str, nn.Module]] = (
                    children[prev + 1 : i] if prev is not None else []
                )
                if current and any(_has_params(c) for _, c in between):
                    out.append(("blocks", current))
                    current = []
                current.append(full[i])
                prev = i
            if current:
                out.append(("blocks", current))
            taken.extend(full[i] for i in composite)
        else:
            acts = [
                full[i] for i, (_, c) in enumerate(children) if type(c).__name__ in _ACTIVATIONS
            ]
            if len(acts) >= 2:
                out.append(("acts", acts))
                taken.extend(acts)
    return out


def flow_runs(model: nn.Module, example_input: torch.Tensor) -> list[list[str]]:
    """The flows to penalise, as feature keys (``name`` = output, ``name:in`` = input):
    each at least two points long."""
    import torch

    candidates = _candidates(model)
    if not candidates:
        return []
    modules = dict(model.named_modules())
    shapes: dict[str, tuple[int, ...]] = {}

    def record(n: str) -> Any:
        def hook(_m: Any, args: tuple[Any, ...], out: Any) -> None:
            if isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor):
                shapes[n + ":in"] = tuple(args[0].shape[1:])
                shapes[n] = tuple(out.shape[1:])

        return hook

    hooks = [modules[n].register_forward_hook(record(n)) for _, names in candidates for n in names]
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
    for mode, names in candidates:
        names = [n for n in names if n in shapes]
        current: list[str] = []
        for n in names:
            if mode == "blocks":
                keeps = shapes[n + ":in"] == shapes[n]
                follows = bool(current) and shapes[current[-1]] == shapes[n + ":in"]
                if keeps and follows:
                    current.append(n)
                    continue
                if len(current) >= 2:
                    runs.append(current)
                current = [n + ":in", n] if keeps else []
            else:
                if current and shapes[current[-1]] != shapes[n]:
                    if len(current) >= 2:
                        runs.append(current)
                    current = []
                current.append(n)
        if len(current) >= 2:
            runs.append(current)
    return runs
