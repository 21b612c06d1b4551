"""timm's classifiers: ``--arch timm/NAME`` (the prefix Hugging Face gives timm's models).

Built with ``pretrained=False`` (nothing is downloaded) and timm's export-friendly layer
configuration (no TorchScript-only paths, exportable activations and padding). A model's
``pretrained_cfg`` gives its input size, mean and std, which a loaded timm model records
as its preprocessing (and so its model file and ONNX metadata carry them). Weights come
from a state_dict file (timm's checkpoint layouts too) or, with ``--weights``, from the
local Hugging Face hub cache; a missing file is an error naming it and its folder.

timm is optional (``pip install 'compressor[timm]'``); without it, a ``timm/`` name is one
line saying how to install it.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compressor.errors import CompressorError

if TYPE_CHECKING:
    import torch
    from torch import nn

PREFIX = "timm/"
INSTALL = "pip install 'compressor[timm]'"


def is_timm(arch: str) -> bool:
    return arch.startswith(PREFIX)


def _timm() -> Any:
    try:
        import timm
    except ImportError:
        raise CompressorError(f"--arch timm/... needs timm: {INSTALL}") from None
    return timm


def model_name(arch: str) -> str:
    """``timm/resnet18`` -> ``resnet18``, checked to be a timm architecture."""
    timm, name = _timm(), arch[len(PREFIX) :]
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f"; did you mean {', '.join(PREFIX + c for c in close)}?" if close else ""
        raise CompressorError(f"unknown timm architecture {name!r}{hint}")
    return str(name)


def pretrained_cfg(arch: str, tag: str | None = None) -> dict[str, Any]:
    """timm's default (or ``tag``'s) pretrained configuration of ``arch``: input size,
    mean, std, interpolation, classifier name, hub id."""
    timm, name = _timm(), model_name(arch)
    cfg = timm.get_pretrained_cfg(f"{name}.{tag}" if tag else name)
    if cfg is None:
        if tag:
            tags = [t.split(".", 1)[1] for t in timm.list_pretrained(f"{name}.*")]
            raise CompressorError(
                f"{arch} has no weights {tag!r}; choose one of: {', '.join(['DEFAULT', *tags])}"
            )
        return {}
    return dict(cfg.to_dict())


def input_size(arch: str) -> tuple[int, int, int]:
    size = pretrained_cfg(arch).get("input_size") or (3, 224, 224)
    return (int(size[0]), int(size[1]), int(size[2]))


def build(arch: str, num_classes: int, options: Mapping[str, Any] | None = None) -> nn.Module:
    """An untrained timm ``arch``: no download, layers configured for export."""
    timm = _timm()
    name = model_name(arch)
    try:
        with timm.layers.set_layer_config(scriptable=False, exportable=True, no_jit=True):
            model: nn.Module = timm.create_model(
                name, pretrained=False, num_classes=num_classes, **dict(options or {})
            )
    except TypeError as e:
        raise CompressorError(f"bad option for {arch}: {e}") from e
    return model


def preprocess_of(arch: str, channels: int = 3) -> Any:
    """``Preprocess`` from timm's pretrained configuration (None when it gives none)."""
    from compressor.config import Preprocess

    cfg = pretrained_cfg(arch)
    if not cfg.get("mean") or channels != 3:
        return None
    return Preprocess(
        input_size=tuple(int(v) for v in cfg["input_size"]),  # type: ignore[arg-type]
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
    )


def classifier_names(arch: str) -> list[str]:
    """The module name(s) of the classifier (``fc``, ``head.fc``, ``classifier``)."""
    names = pretrained_cfg(arch).get("classifier") or "fc"
    return [names] if isinstance(names, str) else list(names)


def num_classes_in(arch: str, sd: Mapping[str, torch.Tensor]) -> int:
    """The class count of a state_dict's classifier; ``CompressorError`` when it has none
    (a backbone, or another architecture)."""
    for name in classifier_names(arch):
        weight = sd.get(f"{name}.weight")
        if weight is not None and weight.dim() in (2, 4):
            return int(weight.shape[0])
    raise CompressorError(
        f"cannot find the classifier weights of {arch} ({', '.join(classifier_names(arch))}) "
        "in the state_dict; is it the right --arch?"
    )


def hub_cache() -> Path:
    """Where the Hugging Face hub keeps its files (``$HF_HUB_CACHE``, ``$HF_HOME/hub``)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface"
    )
    return Path(home) / "hub"


def hub_file(arch: str, spec: str) -> tuple[str, Path]:
    """(hub id, the cached weights file) of ``arch``'s weights ``spec`` (``DEFAULT`` or a
    tag such as ``a1_in1k``). Nothing is downloaded: a missing file is an error naming the
    folder it belongs in."""
    cfg = pretrained_cfg(arch, None if spec.upper() == "DEFAULT" else spec)
    hub_id = cfg.get("hf_hub_id")
    if not hub_id:
        raise CompressorError(f"{arch} has no weights on the Hugging Face hub; give a file")
    folder = hub_cache() / f"models--{hub_id.replace('/', '--')}" / "snapshots"
    for snapshot in sorted(folder.glob("*")) if folder.is_dir() else []:
        for filename in ("model.safetensors", "pytorch_model.bin"):
            if (snapshot / filename).is_file():
                return hub_id, snapshot / filename
    raise CompressorError(
        f"{arch} weights {hub_id} are not in the local Hugging Face cache: expected "
        f"model.safetensors under {folder}/<revision>/ (compressor downloads nothing; "
        f"`huggingface-cli download {hub_id}` on a machine with internet puts it there)"
    )
