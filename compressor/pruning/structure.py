"""A pruned model's per-layer structure: what the model file stores to rebuild it."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from compressor.errors import CompressorError
from compressor.pruning.fixups import sync_channel_counts

if TYPE_CHECKING:
    import torch
    from torch import nn


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
    sync_channel_counts(model)


def copy_model(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model)
