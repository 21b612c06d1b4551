"""Safe loading and saving of models.

Accepted inputs, in the order they are recognised:

1. the project's own format (``save_model``): architecture, options, pruned structure,
   weights, preprocessing and history; it reloads with no flags;
2. a checkpoint dict holding a state_dict under a common key (``state_dict``, ``model``,
   ``model_state_dict``, ...), with ``module.``/``_orig_mod.`` prefixes stripped;
3. a bare state_dict of a known architecture (``arch=...``), the class count inferred from
   the classifier weights;
4. a fully pickled ``nn.Module``, only with ``trust_pickle=True``.

Loading uses ``torch.load(weights_only=True)``: a file that needs code to unpickle is refused
with the names of the globals it would import, unless the caller trusts it explicitly.
"""

from __future__ import annotations

import argparse
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compressor.archs import arch_info, build_model, infer_build_options
from compressor.config import Preprocess, to_dict
from compressor.errors import CompressorError

if TYPE_CHECKING:
    import torch
    from torch import nn

FORMAT = "compressor-model"
FORMAT_VERSION = 1
STATE_DICT_KEYS = (
    "state_dict",
    "model_state_dict",
    "model",
    "net",
    "network",
    "module",
    "weights",
    "model_ema",
    "state_dict_ema",
    "params",
)
_PREFIXES = ("module.", "_orig_mod.")


@dataclass
class LoadedModel:
    """A model with what is known about it."""

    model: nn.Module
    arch: str
    num_classes: int
    source_format: str  # "compressor", "checkpoint-dict", "state-dict" or "pickled-module"
    arch_options: dict[str, Any] = field(default_factory=dict)
    preprocess: Preprocess | None = None
    class_names: list[str] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def in_channels(self) -> int:
        return first_conv_in_channels(self.model)


def first_conv_in_channels(model: nn.Module) -> int:
    """Input channels of the first convolution (the model's image channels), 3 if none."""
    from torch import nn

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return int(m.in_channels)
    return 3


def torch_load(path: Path, *, trust_pickle: bool) -> Any:
    import torch

    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:
            unsafe = []
        unsafe = [g for g in unsafe if g != "argparse.Namespace"]
        if not unsafe:
            raise CompressorError(_unreadable(path)) from e
        if not trust_pickle:
            shown = ", ".join(unsafe[:3]) + (
                f" and {len(unsafe) - 3} more" if len(unsafe) > 3 else ""
            )
            raise CompressorError(
                f"{path} contains pickled Python objects ({shown}); loading it would run code from "
                "the file. Pass --trust-pickle only if you trust its source, or save a state_dict instead"
            ) from e
    except RuntimeError as e:
        if "TorchScript" in str(e):
            raise CompressorError(
                f"{path} is a TorchScript archive, which cannot be pruned; save the model's state_dict instead"
            ) from e
        raise CompressorError(_unreadable(path)) from e
    except CompressorError:
        raise
    except Exception as e:  # legacy-format garbage raises KeyError, IndexError, EOFError, ...
        raise CompressorError(_unreadable(path)) from e
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise CompressorError(f"{path}: unpickling failed even with --trust-pickle: {e}") from e


_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # the first object of a pre-1.6 torch.save file


class _NoGlobals(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"{module}.{name}")


def _unreadable(path: Path) -> str:
    """Why ``torch.load`` could not read ``path``, named as precisely as the bytes allow."""
    import zipfile

    with path.open("rb") as f:
        head = f.read(8)
    if path.suffix.lower() == ".onnx":
        return (
            f"{path} is an ONNX file; this command needs the PyTorch model (eval and "
            "benchmark accept ONNX files)"
        )
    if head[:4] == b"PK\x03\x04" or zipfile.is_zipfile(path):
        return f"{path} is a damaged PyTorch checkpoint (its zip archive is corrupt or truncated)"
    if head[:1] == b"\x80":  # a pickle, protocol 2 or later
        try:
            with path.open("rb") as f:
                first = _NoGlobals(f).load()
        except Exception:
            first = None
        if first == _LEGACY_MAGIC:
            return f"{path} is a legacy-format (pre-1.6) PyTorch checkpoint that is damaged or truncated"
        return (
            f"{path} is a plain Python pickle (pickle.dump), not a torch.save file; "
            "re-save the weights with torch.save(model.state_dict(), PATH)"
        )
    if not head:
        return f"{path} is empty"
    return f"{path} is not a PyTorch checkpoint (not a zip archive or a pickle)"


def needs_arch(path: Path) -> bool:
    """Whether ``path`` holds weights without a recorded architecture (a peek for error
    messages: False whenever the file cannot be read safely)."""
    import torch

    if not path.is_file():
        return False
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return False
    if _is_state_dict(obj):
        return True
    return (
        isinstance(obj, Mapping)
        and obj.get("format") != FORMAT
        and _arch_from_checkpoint(obj) is None
        and any(_is_state_dict(obj.get(k)) for k in STATE_DICT_KEYS)
    )


def _is_state_dict(obj: Any) -> bool:
    import torch

    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) for k in obj)
        and all(isinstance(v, torch.Tensor) for v in obj.values())
    )


def strip_prefixes(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop wrapper prefixes (``module.``, ...) from the keys, and from the per-module
    version records (``_metadata``) that ``state_dict()`` attaches (MNASNet needs them)."""
    out = dict(sd)
    meta = dict(getattr(sd, "_metadata", None) or {})
    changed = True
    while changed:
        changed = False
        for p in _PREFIXES:
            if out and all(k.startswith(p) for k in out):
                out = {k[len(p) :]: v for k, v in out.items()}
                meta = {
                    (k[len(p) :] if k.startswith(p) else "" if k == p[:-1] else k): v
                    for k, v in meta.items()
                }
                changed = True
    return _Weights(out, meta)


class _Weights(dict):
    """A state_dict that keeps its ``_metadata`` (a plain dict cannot hold attributes)."""

    def __init__(self, items: dict[str, Any], metadata: dict[str, Any]) -> None:
        super().__init__(items)
        self._metadata = metadata


def _arch_from_checkpoint(obj: Mapping[str, Any]) -> str | None:
    for key in ("arch", "architecture", "model_name"):
        if isinstance(obj.get(key), str):
            return str(obj[key])
    args = obj.get("args")
    if isinstance(args, argparse.Namespace) and isinstance(getattr(args, "model", None), str):
        return str(args.model)  # torchvision's reference training scripts
    return None


def load_state_dict_strict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, what: str
) -> None:
    """Load weights, raising a ``CompressorError`` that names the first mismatches."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    problems = []
    if wrong:
        problems.append(f"shape mismatches (file vs model): {'; '.join(wrong[:3])}")
    if missing:
        problems.append(f"missing keys: {', '.join(missing[:3])}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected[:3])}")
    if problems:
        total = len(wrong) + len(missing) + len(unexpected)
        raise CompressorError(
            f"weights do not fit {what} ({total} problems): " + " | ".join(problems)
        )
    # modules' version records: the file's, else the current code's (torch.save of a
    # state_dict keeps them; a dict rebuilt by hand loses them, and MNASNet refuses to load)
    records = dict(getattr(expected, "_metadata", None) or {})
    records.update(getattr(state_dict, "_metadata", None) or {})
    model.load_state_dict(_Weights(dict(state_dict), records), strict=False)


def _from_state_dict(
    sd: Mapping[str, torch.Tensor], arch: str, path: Path, source: str
) -> LoadedModel:
    arch_info(arch)  # validates the name
    sd = strip_prefixes(sd)
    try:
        num_classes, in_channels, options = infer_build_options(arch, sd)
    except CompressorError as e:
        raise CompressorError(f"{path}: {e}") from e
    model = build_model(arch, num_classes=num_classes, in_channels=in_channels, options=options)
    load_state_dict_strict(model, sd, what=f"--arch {arch}")
    preprocess = None
    if arch_info(arch).source == "timm":  # timm's own mean, std and input size
        from compressor.timm_archs import preprocess_of

        preprocess = preprocess_of(arch)
    return LoadedModel(
        model, arch, num_classes, source, arch_options=options, preprocess=preprocess
    )


def _from_project_format(obj: Mapping[str, Any], path: Path) -> LoadedModel:
    version = obj.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CompressorError(
            f"{path} was written by a newer compressor (format version {version}); upgrade compressor"
        )
    try:
        arch = str(obj["arch"])
        num_classes = int(obj["num_classes"])
        options = dict(obj.get("arch_options") or {})
        in_channels = obj.get("in_channels")
        sd = obj["state_dict"]
    except (KeyError, TypeError, ValueError) as e:
        raise CompressorError(f"{path} is a damaged compressor model file (missing {e})") from e
    model = build_model(arch, num_classes=num_classes, in_channels=in_channels, options=options)
    structure = obj.get("structure")
    if structure:
        from compressor.pruning import apply_structure

        apply_structure(model, structure, sd)
    load_state_dict_strict(model, sd, what=f"the recorded architecture {arch}")
    pre = obj.get("preprocess")
    return LoadedModel(
        model,
        arch,
        num_classes,
        "compressor",
        arch_options=options,
        preprocess=Preprocess.from_dict(pre) if pre else None,
        class_names=list(obj["class_names"]) if obj.get("class_names") else None,
        metadata=dict(obj.get("metadata") or {}),
    )


def _from_module(module: nn.Module, arch: str | None) -> LoadedModel:
    from torch import nn

    linears = [m for m in module.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    last = linears[-1] if linears else None
    num_classes = int(getattr(last, "out_features", getattr(last, "out_channels", 0)) or 0)
    return LoadedModel(module, arch or type(module).__name__.lower(), num_classes, "pickled-module")


def load_model(
    path: str | Path, *, arch: str | None = None, trust_pickle: bool = False
) -> LoadedModel:
    """Load a model file of any accepted kind (see the module docstring).

    ``arch`` is required for a bare state_dict unless the checkpoint names its architecture.
    Raises ``CompressorError`` for a missing, corrupt or untrusted file, an unknown or wrong
    architecture, weights that do not fit it, or weights that are NaN or infinite.
    """
    loaded = _load_model(Path(path), arch=arch, trust_pickle=trust_pickle)
    check_finite(loaded.model, Path(path))
    return loaded


def check_finite(model: nn.Module, path: Path) -> None:
    import torch

    bad = [
        n
        for n, t in list(model.named_parameters()) + list(model.named_buffers())
        if t.is_floating_point() and not bool(torch.isfinite(t).all())
    ]
    if bad:
        raise CompressorError(
            f"{path}: {len(bad)} weight tensor{'s hold' if len(bad) > 1 else ' holds'} NaN or "
            f"infinite values (first: {bad[0]}); "
            "the model diverged or the file is damaged: use an earlier checkpoint, or retrain "
            "it (with a lower learning rate if the training diverged)"
        )


def _load_model(path: Path, *, arch: str | None, trust_pickle: bool) -> LoadedModel:
    """``load_model`` without the finiteness check.

    ``arch`` is required for a bare state_dict unless the checkpoint names its architecture.
    Raises ``CompressorError`` for a missing, corrupt or untrusted file, an unknown or wrong
    architecture, or weights that do not fit it.
    """
    from torch import nn

    path = Path(path)
    if not path.exists():
        raise CompressorError(f"model file {str(path)!r} not found")
    if not path.is_file():
        raise CompressorError(f"model path {str(path)!r} is not a file")
    obj = torch_load(path, trust_pickle=trust_pickle)

    if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        loaded = _from_project_format(obj, path)
        if arch is not None and arch != loaded.arch:
            raise CompressorError(f"{path} holds a {loaded.arch}, not a {arch} (drop --arch)")
        return loaded
    if isinstance(obj, nn.Module):
        return _from_module(obj, arch)
    if _is_state_dict(obj):
        if arch is None:
            raise CompressorError(
                f"{path} holds a bare state_dict; say which architecture with --arch NAME"
            )
        return _from_state_dict(obj, arch, path, "state-dict")
    if isinstance(obj, Mapping):
        arch = arch or _arch_from_checkpoint(obj)
        for key in STATE_DICT_KEYS:
            value = obj.get(key)
            if isinstance(value, nn.Module):
                return _from_module(value, arch)
            if _is_state_dict(value):
                if arch is None:
                    raise CompressorError(
                        f"{path} holds a state_dict under {key!r} but names no architecture; give --arch NAME"
                    )
                return _from_state_dict(value, arch, path, "checkpoint-dict")  # type: ignore[arg-type]
        keys = ", ".join(repr(k) for k in list(obj)[:8])
        raise CompressorError(
            f"{path} holds a dict without model weights (top-level keys: {keys}); expected weights "
            f"under one of: {', '.join(STATE_DICT_KEYS)}"
        )
    raise CompressorError(f"{path} holds a {type(obj).__name__}, not a model or state_dict")


def reference_model(loaded: LoadedModel) -> nn.Module:
    """The unpruned architecture of ``loaded``, shapes only (on the meta device where the
    builder allows it)."""
    from compressor.archs import build_shapes_only

    return build_shapes_only(
        loaded.arch,
        num_classes=loaded.num_classes,
        in_channels=loaded.in_channels,
        options=loaded.arch_options,
    )


def model_payload(loaded: LoadedModel) -> dict[str, Any]:
    """The project-format dict for ``loaded`` (tensors on CPU; nothing needs code to load)."""

    from compressor.pruning import structure_of

    sd = {k: v.detach().cpu().clone() for k, v in loaded.model.state_dict().items()}
    reference = reference_model(loaded)
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "arch": loaded.arch,
        "num_classes": loaded.num_classes,
        "in_channels": loaded.in_channels,
        "arch_options": dict(loaded.arch_options),
        "preprocess": to_dict(loaded.preprocess) if loaded.preprocess else None,
        "class_names": list(loaded.class_names) if loaded.class_names else None,
        "metadata": dict(loaded.metadata),
        # channel counts that pruning changed, so the model rebuilds without pickled code
        "structure": structure_of(loaded.model, reference),
        "state_dict": sd,
    }


def check_saveable(loaded: LoadedModel) -> None:
    """Raise now, not after hours of work, if ``save_model`` could not describe the model."""
    if loaded.source_format == "pickled-module":
        try:
            arch_info(loaded.arch)
        except CompressorError as e:
            raise CompressorError(
                f"a pickled {loaded.arch} cannot be saved in the compressor format (unknown "
                "architecture); pass --arch NAME if it is a torchvision or compressor architecture"
            ) from e


def save_model(loaded: LoadedModel, path: str | Path) -> None:
    """Write ``loaded`` in the project's format, atomically.

    Raises ``CompressorError`` for a model the format cannot describe (a pickled module
    of unknown architecture).
    """
    import torch

    from compressor.utils import atomic_write_with

    check_saveable(loaded)
    payload = model_payload(loaded)
    atomic_write_with(Path(path), lambda f: torch.save(payload, f))


def check_runs(model: Any, input_size: tuple[int, int, int], what: str) -> None:
    """One forward pass at ``input_size``; a size the network cannot take is a user error."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_size))
    except RuntimeError as e:
        raise CompressorError(
            f"{what} cannot run at input {'x'.join(map(str, input_size))}: {str(e).splitlines()[0][:200]}"
        ) from e
    finally:
        model.train(was_training)


def model_input_size(
    loaded: LoadedModel, input_size: tuple[int, ...] | None
) -> tuple[int, int, int]:
    """The input size to trace and count MACs at: the option, else recorded, else the arch's."""
    from compressor.data import complete_size

    channels = loaded.in_channels
    if input_size is not None:
        size = complete_size(input_size, channels)
        if size[0] != channels:
            raise CompressorError(
                f"--input-size has {size[0]} channels but the model takes {channels}"
            )
        check_runs(loaded.model, size, loaded.arch)
        return size
    if loaded.preprocess is not None:
        return loaded.preprocess.input_size
    try:
        size = arch_info(loaded.arch).default_input_size
    except CompressorError:
        raise CompressorError("cannot tell the model's input size; give --input-size") from None
    return (channels, size[1], size[2])
