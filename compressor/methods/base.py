"""The contract between the training loop, the pruning engine and a structured-sparsity method.

The loop knows a method only through this interface: it asks which modules' outputs the
method needs (captured by forward hooks in the same forward pass as the loss), adds
``penalty(...)`` to the loss, and calls the hooks after backward and after each optimizer
step. After training, ``scores(...)`` ranks every channel of every dependency-graph group
for selection. Methods with state of their own (auxiliary variables) save it through
``state_dict``/``load_state_dict`` so that training resumes exactly.

Every penalty is computed on the pruning engine's coupled groups (``compressor.pruning``),
so what the regularizer drives to zero is exactly what pruning can remove.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from compressor.errors import CompressorError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from compressor.pruning import GroupIndex

EPS = 1e-8  # keeps square roots and ratios differentiable at exactly-zero weights


@dataclasses.dataclass(frozen=True)
class NoParams:
    """A method without hyperparameters."""


class Regularizer(ABC):
    """A training-time penalty with optional hooks.

    Subclasses set ``name``, ``paper`` (the citation), ``reading`` (where the
    implementation follows a documented interpretation rather than published text) and
    ``Params`` (a frozen dataclass of hyperparameters with the papers' defaults).
    """

    name: ClassVar[str]
    paper: ClassVar[str]
    reading: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    # Multiplier on the whole penalty (and on gradients a method adds by hand), set by
    # ``--lambda auto`` (compressor.strength); 1 keeps the hyperparameters as given.
    scale: float = 1.0
    # How ``compress`` selects channels after training with this method, unless told
    # otherwise: keyword arguments of ``PruneConfig``.
    selection: ClassVar[dict[str, Any]] = {"ratio": 0.3}
    # Whether ``scores`` are comparable across groups as they are; otherwise global ranking
    # divides each group's scores by the group mean. Only slimming's |gamma| is ranked raw
    # (one global percentile, as its paper does): norms scale with each layer's fan-in,
    # and ranking raw one-at-a-time loss increases (hgs) piles the removals into one
    # layer, many individually harmless channels not being harmless together.
    comparable_scores: ClassVar[bool] = False
    # ``--focus`` (compressor.pipeline): the channels (group position -> channels) the
    # target would remove now; while set, ``fit`` keeps the penalty's gradient on their
    # entries only. None: the penalty acts everywhere, as the papers write it.
    focus_plan: dict[int, list[int]] | None = None

    def __init__(self, params: Any = None) -> None:
        self.params = params if params is not None else self.Params()
        self.groups: GroupIndex | None = None
        self.train_size: int = 1
        self.scale = 1.0
        # the stage's length, set by ``fit`` before ``setup``: schedules that the papers
        # give over a whole training run are read over the stage
        self.stage_epochs: int = 1
        self.steps_per_epoch: int = 1

    @classmethod
    def make_params(cls, values: dict[str, Any]) -> Any:
        """Build ``Params`` from strings or numbers; unknown names or bad values raise."""
        fields = {f.name: f for f in dataclasses.fields(cls.Params)}
        kwargs: dict[str, Any] = {}
        for key, raw in values.items():
            if isinstance(raw, bool):
                raise CompressorError(
                    f"option {key!r} of {cls.name!r} must be a number, got {raw!r}"
                )
            name = key.replace("-", "_")
            if name == "lambda":
                name = "lam"
            if name not in fields:
                allowed = ", ".join(sorted(fields)) or "none"
                raise CompressorError(
                    f"method {cls.name!r} has no option {key!r} (options: {allowed})"
                )
            default = getattr(cls.Params(), name)
            try:
                kwargs[name] = (
                    type(default)(raw) if not isinstance(default, bool) else _to_bool(raw)
                )
            except (TypeError, ValueError):
                raise CompressorError(
                    f"option {key!r} of {cls.name!r} must be a {type(default).__name__}, got {raw!r}"
                ) from None
        params = cls.Params(**kwargs)
        for f in dataclasses.fields(params):
            v = getattr(params, f.name)
            if isinstance(v, int | float) and not isinstance(v, bool) and not (v >= 0):  # NaN too
                raise CompressorError(
                    f"option {f.name!r} of {cls.name!r} must be 0 or more, got {v}"
                )
        check = getattr(params, "check", None)
        if check is not None:
            problem = check()
            if problem:
                raise CompressorError(f"{cls.name}: {problem}")
        return params

    # ----------------------------------------------------------------- training hooks

    def setup(
        self,
        model: nn.Module,
        *,
        example_input: torch.Tensor,
        groups: GroupIndex | None = None,
        train_size: int = 1,
    ) -> None:
        """Called once before training with the model on its device: builds the groups."""
        from compressor.pruning import channel_groups

        self.groups = groups if groups is not None else channel_groups(model, example_input[:1])
        self.train_size = max(1, train_size)

    def feature_modules(self, model: nn.Module) -> dict[str, nn.Module]:
        """Modules whose outputs ``penalty`` receives, by key. Default: none."""
        return {}

    def feature_inputs(self, model: nn.Module) -> dict[str, nn.Module]:
        """Modules whose (first) inputs ``penalty`` receives, by key. Default: none."""
        return {}

    @abstractmethod
    def penalty(self, model: nn.Module, features: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """The term added to the loss for this step (``None`` when there is none), before
        ``scale``: the training loop adds ``scale * penalty``."""

    def extra_grad_sq_norm(self, model: nn.Module) -> float:
        """Squared norm of the gradient ``after_backward`` adds by hand at ``scale`` 1
        (used to calibrate ``--lambda auto``). Default: none."""
        return 0.0

    def start_epoch(self, model: nn.Module, *, epoch: int) -> None:  # noqa: B027
        """Called before the first step of each epoch (0-based), also when resuming."""

    def after_backward(self, model: nn.Module) -> None:  # noqa: B027
        """Called after ``loss.backward()`` and before the optimizer step."""

    def after_step(self, model: nn.Module, *, epoch: int, step: int) -> None:  # noqa: B027
        """Called after each optimizer step."""

    def state_dict(self) -> dict[str, Any]:
        """State to save in a resumable checkpoint. Default: none."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027
        """Restore what ``state_dict`` returned."""

    def focus_masks(self, model: nn.Module) -> dict[str, torch.Tensor] | None:
        """Per parameter, the entries ``focus_plan`` marks (None when there is no plan)."""
        if self.focus_plan is None:
            return None
        cached = getattr(self, "_focus_cache", None)  # (plan, model, masks)
        if cached is None or cached[0] is not self.focus_plan or cached[1] is not model:
            from compressor.pruning import focus_masks

            masks = focus_masks(model, self._require_groups(), self.focus_plan)
            cached = (self.focus_plan, model, masks)
            self._focus_cache = cached
        return cached[2]

    # ----------------------------------------------------------------- selection

    def scores(self, model: nn.Module, index: GroupIndex, **context: Any) -> list[torch.Tensor]:
        """Per-channel scores for every group of ``index`` (low = remove first).

        Default: the group L2 norm of every parameter each channel owns (its filters, its
        normalisation entries and its consumers' input slices), as torch-pruning's
        ``GroupMagnitudeImportance``. The normalisation scale stays in: after a
        normalisation layer a filter's scale is free, so it is the scale (and the
        consumers' slices) that says whether a channel still carries anything.
        """
        from compressor.pruning import group_scores

        return group_scores(index, model, "l2")

    # ----------------------------------------------------------------- helpers

    def _params(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return dict(model.named_parameters())

    def _require_groups(self) -> GroupIndex:
        if self.groups is None:
            raise RuntimeError(f"{self.name}: setup() was not called")
        return self.groups


def weight_norms(model: nn.Module, index: GroupIndex) -> list[torch.Tensor]:
    """Per channel of every group, the L2 norm of the convolution and linear weights it owns."""
    import torch

    params: dict[str, torch.Tensor] = dict(model.named_parameters())
    with torch.no_grad():
        return [g.sq_norms(params, weights_only=True).sqrt().cpu() for g in index]


def _to_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


Method = Regularizer
