"""Architectures the tool can build: every torchvision classifier plus small reference nets.

``build_model(name, num_classes=...)`` is the only constructor the rest of the code uses.
Architecture names are validated against the registry, and an unknown name lists the valid
ones. torchvision models are always built with ``weights=None``: nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from compressor.errors import CompressorError

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class ArchInfo:
    """What the tool knows about an architecture before building it."""

    name: str
    source: str  # "torchvision", "timm" or "compressor"
    default_input_size: tuple[int, int, int]  # (C, H, W)
    min_input_size: int  # smallest H = W the network accepts


# Smallest square input each torchvision family runs on (stride and pooling arithmetic);
# the default for a family not listed is 32.
_TV_MIN_SIZE = {
    "alexnet": 63,
    "googlenet": 15,
    "inception_v3": 75,
    "squeezenet1_0": 17,
    "squeezenet1_1": 17,
    "vgg": 32,
    "vit_b_16": 224,
    "vit_b_32": 224,
    "vit_l_16": 224,
    "vit_l_32": 224,
    "vit_h_14": 224,
    "maxvit_t": 224,
    "swin": 32,
}
_TV_DEFAULT_SIZE = {"inception_v3": 299, "vit_h_14": 518}


# The project's own networks live in compressor.nets (imported only when built).
_OWN: dict[str, ArchInfo] = {
    "lenet5": ArchInfo("lenet5", "compressor", (1, 28, 28), 28),
    "smallcnn": ArchInfo("smallcnn", "compressor", (1, 28, 28), 4),
}


def _torchvision_names() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def list_archs() -> list[str]:
    """Every architecture name ``build_model`` accepts, sorted."""
    return sorted([*_OWN, *_torchvision_names()])


def arch_info(name: str) -> ArchInfo:
    """Return what is known of ``name``; raise ``CompressorError`` listing valid names."""
    if name in _OWN:
        return _OWN[name]
    if name.startswith("timm/"):
        from compressor import timm_archs

        return ArchInfo(name, "timm", timm_archs.input_size(name), 32)
    if name not in _torchvision_names():
        raise CompressorError(
            f"unknown architecture {name!r}; choose one of: {', '.join(list_archs())}, "
            "or timm/NAME for one of timm's"
        )
    family = next((k for k in _TV_MIN_SIZE if name.startswith(k)), None)
    min_size = _TV_MIN_SIZE.get(name, _TV_MIN_SIZE[family] if family else 32)
    size = _TV_DEFAULT_SIZE.get(name, 224)
    return ArchInfo(name, "torchvision", (3, size, size), min_size)


def build_model(
    name: str,
    *,
    num_classes: int,
    in_channels: int | None = None,
    options: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Build an untrained ``name`` with ``num_classes`` outputs.

    ``in_channels`` applies to the project's own networks only (torchvision ones take 3);
    ``options`` are extra keyword arguments of the builder (for example ``aux_logits``).
    Raises ``CompressorError`` for an unknown name or bad option.
    """
    info = arch_info(name)
    kwargs: dict[str, Any] = dict(options or {})
    if info.source == "compressor":
        from compressor import nets

        builder: Callable[..., nn.Module] = getattr(nets, name)
        return builder(
            num_classes=num_classes, in_channels=in_channels or info.default_input_size[0]
        )
    if in_channels not in (None, 3):
        raise CompressorError(f"{name} takes 3 input channels, not {in_channels}")
    if info.source == "timm":
        from compressor import timm_archs

        return timm_archs.build(name, num_classes, kwargs)
    import warnings

    import torchvision

    if name in ("googlenet", "inception_v3"):
        kwargs.setdefault("init_weights", True)
    if name.startswith("shufflenet_v2"):
        from compressor.nets import shufflenet_v2

        return shufflenet_v2(name, num_classes)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return torchvision.models.get_model(
                name, weights=None, num_classes=num_classes, **kwargs
            )
    except TypeError as e:
        raise CompressorError(f"bad option for {name}: {e}") from e


def build_shapes_only(name: str, **kwargs: Any) -> nn.Module:
    """``build_model`` on the meta device: the shapes, no memory. A builder that needs real
    numbers while building (torchvision's RegNets compute their widths with tensors and
    ``.tolist()``) is built on the CPU instead."""
    import torch

    try:
        with torch.device("meta"):
            return build_model(name, **kwargs)
    except (NotImplementedError, RuntimeError):
        return build_model(name, **kwargs)


def infer_build_options(
    name: str, state_dict: Mapping[str, torch.Tensor]
) -> tuple[int, int | None, dict[str, Any]]:
    """Work out ``(num_classes, in_channels, options)`` for ``name`` from a state_dict.

    The number of classes comes from the classifier weights: the last parameter whose
    leading dimension equals the default build's class count. googlenet and inception_v3
    get ``aux_logits`` according to whether the state_dict holds the auxiliary heads.
    """

    options: dict[str, Any] = {}
    if arch_info(name).source == "timm":
        from compressor import timm_archs

        return timm_archs.num_classes_in(name, state_dict), None, options
    if name in ("googlenet", "inception_v3"):
        aux_prefix = "aux1." if name == "googlenet" else "AuxLogits."
        options["aux_logits"] = any(k.startswith(aux_prefix) for k in state_dict)
    reference = build_shapes_only(name, num_classes=1000, options=options)
    ref_shapes = {k: v.shape for k, v in reference.state_dict().items()}
    num_classes = None
    for key in reversed(list(ref_shapes)):
        shape = ref_shapes[key]
        if (
            key.endswith("weight")
            and len(shape) in (2, 4)
            and shape[0] == 1000
            and key in state_dict
        ):
            num_classes = int(state_dict[key].shape[0])
            break
    if num_classes is None:
        raise CompressorError(
            f"cannot find the classifier weights of {name} in the state_dict; "
            "is it the right --arch?"
        )
    in_channels = None
    if arch_info(name).source == "compressor":
        first_conv = next((k for k, s in ref_shapes.items() if len(s) == 4), None)
        if first_conv is not None and first_conv in state_dict:
            in_channels = int(state_dict[first_conv].shape[1])
    return num_classes, in_channels, options
