"""The contract between the training loop and a structured-sparsity method.

The loop knows a method only through this interface: it asks which modules' outputs the
method needs (captured by forward hooks in the same forward pass as the loss), adds
``penalty(...)`` to the loss, and calls the hooks after backward and after each optimizer
step. Methods with state of their own (auxiliary variables, schedules) save it through
``state_dict``/``load_state_dict`` so that training resumes exactly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch
    from torch import nn


class Regularizer(ABC):
    """A training-time penalty with optional hooks. Subclasses set ``name`` and ``paper``."""

    name: ClassVar[str]
    paper: ClassVar[str]

    def setup(self, model: nn.Module, *, example_input: torch.Tensor) -> None:  # noqa: B027
        """Called once before training, with the model on its device (build groups here)."""

    def feature_modules(self, model: nn.Module) -> dict[str, nn.Module]:
        """Modules whose outputs ``penalty`` receives, by name. Default: none."""
        return {}

    @abstractmethod
    def penalty(self, model: nn.Module, features: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """The term added to the loss for this step (``None`` when there is none)."""

    def after_backward(self, model: nn.Module) -> None:  # noqa: B027
        """Called after ``loss.backward()`` and before the optimizer step."""

    def after_step(self, model: nn.Module, *, epoch: int, step: int) -> None:  # noqa: B027
        """Called after each optimizer step."""

    def state_dict(self) -> dict[str, Any]:
        """State to save in a resumable checkpoint. Default: none."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027
        """Restore what ``state_dict`` returned."""
