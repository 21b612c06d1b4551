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
from compressor.timm_rewrites import rewrite

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


# arch option: "folded" when the weight standardisation of timm's StdConv2d and
# ScaledStdConv2d (BiT, NF-ResNet, NFNet) is folded into plain convolutions' weights
STANDARDISATION = "weight_standardization"


def build(arch: str, num_classes: int, options: Mapping[str, Any] | None = None) -> nn.Module:
    """An untrained timm ``arch``: no download, layers configured for export."""
    timm = _timm()
    name = model_name(arch)
    kwargs = dict(options or {})
    folded = kwargs.pop(STANDARDISATION, None) == "folded"
    try:
        with timm.layers.set_layer_config(scriptable=False, exportable=True, no_jit=True):
            model: nn.Module = timm.create_model(
                name, pretrained=False, num_classes=num_classes, **kwargs
            )
    except TypeError as e:
        raise CompressorError(f"bad option for {arch}: {e}") from e
    if folded:
        _replace_std_convs(model, weights=False)
    rewrite(model)  # the same outputs, in a form the channel tracing follows
    return model


def fold_weight_standardization(loaded: Any) -> list[str]:
    """Fold the weight standardisation of a timm model's ``StdConv2d`` and
    ``ScaledStdConv2d`` layers into plain convolutions holding the standardised weights
    (the same outputs), and record it in ``loaded.arch_options``; the names folded.

    Standardisation takes each filter's mean and variance over all its input channels, so
    removing an input channel changes every filter of the layer: a trial removal finds every
    group unsafe. Folded, the layers prune as plain convolutions; fine-tuning then trains
    them without the standardisation."""
    if not is_timm(loaded.arch) or loaded.arch_options.get(STANDARDISATION) == "folded":
        return []
    names = _replace_std_convs(loaded.model, weights=True)
    if names:
        loaded.arch_options = {**loaded.arch_options, STANDARDISATION: "folded"}
    return names


def _replace_std_convs(model: nn.Module, *, weights: bool) -> list[str]:
    import torch
    import torch.nn.functional as F
    from timm.layers import Conv2dSame, std_conv
    from torch import nn

    kinds = (
        std_conv.StdConv2d,
        std_conv.StdConv2dSame,
        std_conv.ScaledStdConv2d,
        std_conv.ScaledStdConv2dSame,
    )
    names = []
    for name, module in list(model.named_modules()):
        if not isinstance(module, kinds):
            continue
        m: Any = module  # timm's layers carry untyped attributes (gain, scale, eps)
        geometry = dict(stride=m.stride, dilation=m.dilation, groups=m.groups)
        plain: Any = (
            Conv2dSame(m.in_channels, m.out_channels, m.kernel_size, padding=0, **geometry)
            if getattr(m, "same_pad", False)
            else nn.Conv2d(
                m.in_channels, m.out_channels, m.kernel_size, padding=m.padding, **geometry
            )
        )
        if m.bias is None:
            plain.bias = None
        plain = plain.to(device=m.weight.device, dtype=m.weight.dtype)
        if weights:
            with torch.no_grad():
                gain = (m.gain * m.scale).view(-1) if hasattr(m, "gain") else None
                w = m.weight.reshape(1, m.out_channels, -1)
                w = F.batch_norm(w, None, None, weight=gain, training=True, momentum=0.0, eps=m.eps)
                plain.weight.copy_(w.reshape_as(m.weight))
                if m.bias is not None:
                    plain.bias.copy_(m.bias)
        model.set_submodule(name, plain)
        names.append(name)
    return names


def preprocess_of(arch: str, channels: int = 3) -> Any:
    """``Preprocess`` from timm's pretrained configuration (None when it gives none)."""
    from compressor.config import INTERPOLATIONS, Preprocess

    cfg = pretrained_cfg(arch)
    if not cfg.get("mean") or channels != 3:
        return None
    interpolation = str(cfg.get("interpolation") or "bilinear")
    return Preprocess(
        input_size=tuple(int(v) for v in cfg["input_size"]),  # type: ignore[arg-type]
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
        # timm's "random" (training only) and any filter outside ours resize bilinearly
        interpolation=interpolation if interpolation in INTERPOLATIONS else "bilinear",
        crop_pct=float(cfg.get("crop_pct") or 0.875),
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
