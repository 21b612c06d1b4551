"""Pretrained starts: torchvision's weights from the local hub cache, or a state_dict file,
with the classifier head replaced when the data has another number of classes. A
state_dict without the classifier (a backbone, as feature extractors are shipped) gets a
new head; every other weight must be there.

Nothing is downloaded: a missing hub file is an error that names the file and the folder
to put it in (``torch.hub.get_dir()/checkpoints``, which ``$TORCH_HOME`` moves).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from compressor.errors import CompressorError

if TYPE_CHECKING:
    from torch import nn

# builder options torchvision sets itself when it is given weights
PRETRAINED_OPTIONS = {
    "googlenet": {"aux_logits": True, "transform_input": True, "init_weights": False},
    "inception_v3": {"aux_logits": True, "transform_input": True, "init_weights": False},
}


@dataclass
class Start:
    """Where the weights came from and what was changed to fit the data."""

    source: str  # "torchvision IMAGENET1K_V1 (/path/resnet18-f37072fd.pth)" or a file path
    classes_in_weights: int | None  # None for a backbone
    head_replaced: list[str]  # names of the classifier layers made anew
    backbone: bool = False  # the weights held no classifier: the head is new

    def to_dict(self) -> dict[str, Any]:
        return {
            "weights": self.source,
            "classes_in_weights": self.classes_in_weights,
            "head_replaced": self.head_replaced,
            "backbone": self.backbone,
            "new_head": bool(self.head_replaced),
        }


def hub_file(arch: str, name: str) -> tuple[Any, Path]:
    """torchvision's weights entry ``name`` (or ``DEFAULT``) of ``arch`` and the file it is
    cached as. Raises ``CompressorError`` for an architecture without weights or an
    unknown name."""
    import torch
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(arch)
    except (ValueError, KeyError):
        raise CompressorError(
            f"{arch} has no torchvision weights; give a state_dict file"
        ) from None
    try:
        member = enum.DEFAULT if name.upper() == "DEFAULT" else enum[name]
    except KeyError:
        names = ", ".join(["DEFAULT", *(m for m in enum.__members__ if m != "DEFAULT")])
        raise CompressorError(f"{arch} has no weights {name!r}; choose one of: {names}") from None
    filename = os.path.basename(urlparse(member.url).path)
    return member, Path(torch.hub.get_dir()) / "checkpoints" / filename


def load_pretrained(arch: str, spec: str, num_classes: int) -> tuple[nn.Module, Start]:
    """``arch`` with the weights ``spec`` (a file, ``DEFAULT`` or a torchvision weights
    name) and ``num_classes`` outputs."""
    import torch

    from compressor.archs import build_model, infer_build_options
    from compressor.checkpoint import (
        check_finite,
        load_state_dict_strict,
        strip_prefixes,
        torch_load,
    )

    options: dict[str, Any]
    path = Path(spec).expanduser()
    if arch.startswith("timm/") and not path.is_file():
        return _from_timm_hub(arch, spec, num_classes)
    if path.is_file():
        obj = torch_load(path, trust_pickle=False)
        sd = obj.get("state_dict", obj.get("model", obj)) if isinstance(obj, dict) else obj
        if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
            raise CompressorError(f"{path} holds no state_dict")
        sd = strip_prefixes(sd)
        try:
            classes, _, options = infer_build_options(arch, sd)
        except CompressorError:  # no classifier: a backbone, or the wrong architecture
            return _from_backbone(arch, sd, num_classes, str(path))
        source = str(path)
    else:
        member, file = hub_file(arch, spec)
        if not file.is_file():
            raise CompressorError(
                f"{arch} weights {member.name} are not in the local cache: put {file.name} in "
                f"{file.parent} (from {member.url}; compressor downloads nothing)"
            )
        sd = strip_prefixes(torch_load(file, trust_pickle=False))
        classes = len(member.meta["categories"])
        options = dict(PRETRAINED_OPTIONS.get(arch, {}))
        if arch.startswith("vit_") and member.meta.get("min_size", (224,))[0] != 224:
            options["image_size"] = member.meta["min_size"][0]
        source = f"torchvision {member.name} ({file})"
    model = build_model(arch, num_classes=classes, options=options)
    load_state_dict_strict(model, sd, what=f"{arch} ({source})")
    check_finite(model, Path(spec))
    replaced = replace_head(model, num_classes) if classes != num_classes else []
    return model, Start(source, classes, replaced)


def _from_timm_hub(arch: str, spec: str, num_classes: int) -> tuple[nn.Module, Start]:
    """timm ``arch`` with the weights ``spec`` (``DEFAULT`` or a tag) from the local
    Hugging Face cache."""
    from compressor.archs import build_model
    from compressor.checkpoint import check_finite, load_state_dict_strict, strip_prefixes
    from compressor.timm_archs import hub_file, num_classes_in

    hub_id, file = hub_file(arch, spec)
    sd = strip_prefixes(load_hub_file(file))
    classes = num_classes_in(arch, sd)
    model = build_model(arch, num_classes=classes)
    source = f"timm {hub_id} ({file})"
    load_state_dict_strict(model, sd, what=f"{arch} ({source})")
    check_finite(model, file)
    replaced = replace_head(model, num_classes) if classes != num_classes else []
    return model, Start(source, classes, replaced)


def load_hub_file(path: Path) -> dict[str, Any]:
    """A hub weights file: safetensors (no code runs) or a weights-only torch file."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path)))
    from compressor.checkpoint import torch_load

    obj = torch_load(path, trust_pickle=False)
    return dict(obj)


def _from_backbone(
    arch: str, sd: dict[str, Any], num_classes: int, source: str
) -> tuple[nn.Module, Start]:
    """``arch`` with every weight from ``sd`` but the classifier, which is new. Raises
    ``CompressorError`` naming the mismatches when anything else is missing or extra."""
    from compressor.archs import build_model
    from compressor.checkpoint import check_finite, load_state_dict_strict
    from compressor.pruning import classifier_layers

    model = build_model(arch, num_classes=num_classes)
    names = {m: n for n, m in model.named_modules()}
    head = [names[m] for m in classifier_layers(model)]
    head_keys = {f"{n}.{p}" for n in head for p, _ in model.get_submodule(n).named_parameters()}
    if any(k in sd for k in head_keys):  # a classifier of another shape: not a backbone
        head_keys = set()
    fitted = {**sd, **{k: v for k, v in model.state_dict().items() if k in head_keys}}
    load_state_dict_strict(model, fitted, what=f"{arch} ({source}, read as a backbone)")
    check_finite(model, Path(source))
    return model, Start(source, None, replace_head(model, num_classes), backbone=True)


def replace_head(model: nn.Module, num_classes: int) -> list[str]:
    """New classifier layer(s) with ``num_classes`` outputs, initialised as torchvision
    initialises a fresh head; returns their names."""
    from torch import nn

    from compressor.pruning import classifier_layers

    if hasattr(model, "reset_classifier") and hasattr(model, "pretrained_cfg"):  # timm's
        before = {n for n, _ in model.named_modules()}
        getattr(model, "reset_classifier")(num_classes)  # noqa: B009 (typed as a Tensor)
        head = getattr(model, "get_classifier")()  # noqa: B009
        return [n for n, m in model.named_modules() if m is head or (n not in before)]
    names = {m: n for n, m in model.named_modules()}
    done = []
    for old in classifier_layers(model):
        name = names[old]
        if isinstance(old, nn.Linear):
            lin = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
            nn.init.normal_(lin.weight, 0, 0.01)
            new: nn.Module = lin
        elif isinstance(old, nn.Conv2d):  # squeezenet's final 1x1 convolution
            conv = nn.Conv2d(old.in_channels, num_classes, 1)
            nn.init.normal_(conv.weight, 0, 0.01)
            new = conv
        else:  # pragma: no cover - classifier_layers returns these two kinds
            continue
        bias = getattr(new, "bias", None)
        if bias is not None:
            nn.init.zeros_(bias)
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, new.to(old.weight.device))
        done.append(name)
    return done
