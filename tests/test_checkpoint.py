from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
import torch

from compressor.archs import build_model, infer_build_options
from compressor.checkpoint import LoadedModel, load_model, save_model
from compressor.config import Preprocess
from compressor.errors import CompressorError


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module, shape: tuple[int, ...]) -> bool:
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
    a.eval()
    b.eval()
    with torch.no_grad():
        return torch.allclose(a(x), b(x), atol=1e-6)


@pytest.fixture(scope="module")
def resnet18_7() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("resnet18", num_classes=7)


def test_state_dict_with_arch_infers_classes(tmp_path: Path, resnet18_7: torch.nn.Module) -> None:
    path = tmp_path / "r18.pt"
    torch.save(resnet18_7.state_dict(), path)
    loaded = load_model(path, arch="resnet18")
    assert loaded.num_classes == 7 and loaded.source_format == "state-dict"
    assert _same_outputs(loaded.model, resnet18_7, (3, 32, 32))


def test_bare_state_dict_needs_arch(tmp_path: Path, resnet18_7: torch.nn.Module) -> None:
    path = tmp_path / "r18.pt"
    torch.save(resnet18_7.state_dict(), path)
    with pytest.raises(CompressorError, match="--arch"):
        load_model(path)


@pytest.mark.parametrize("key", ["state_dict", "model", "model_state_dict"])
def test_checkpoint_dict_with_module_prefix(
    tmp_path: Path, resnet18_7: torch.nn.Module, key: str
) -> None:
    sd = {f"module.{k}": v for k, v in resnet18_7.state_dict().items()}
    path = tmp_path / "ckpt.pt"
    torch.save({key: sd, "epoch": 3, "optimizer": {"state": {}}}, path)
    loaded = load_model(path, arch="resnet18")
    assert loaded.source_format == "checkpoint-dict"
    assert _same_outputs(loaded.model, resnet18_7, (3, 32, 32))


def test_torchvision_reference_checkpoint_names_its_arch(
    tmp_path: Path, resnet18_7: torch.nn.Module
) -> None:
    path = tmp_path / "ref.pt"
    torch.save(
        {"model": resnet18_7.state_dict(), "args": argparse.Namespace(model="resnet18", lr=0.1)},
        path,
    )
    loaded = load_model(path)  # no --arch: the Namespace names it, and is allowed without code
    assert loaded.arch == "resnet18" and loaded.num_classes == 7


def test_wrong_architecture_names_mismatches(tmp_path: Path, resnet18_7: torch.nn.Module) -> None:
    path = tmp_path / "r18.pt"
    torch.save(resnet18_7.state_dict(), path)
    with pytest.raises(
        CompressorError, match=r"do not fit --arch resnet34.*missing keys: layer1\.2"
    ):
        load_model(path, arch="resnet34")
    with pytest.raises(CompressorError, match=r"shape mismatches.*layer"):
        load_model(path, arch="resnet50")
    with pytest.raises(CompressorError, match="unknown architecture 'resnet19'"):
        load_model(path, arch="resnet19")


def test_project_format_roundtrip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("smallcnn", num_classes=4, in_channels=3)
    pre = Preprocess((3, 16, 16), (0.1, 0.2, 0.3), (0.5, 0.5, 0.5))
    original = LoadedModel(
        model,
        "smallcnn",
        4,
        "compressor",
        preprocess=pre,
        class_names=["a", "b", "c", "d"],
        metadata={"note": "x"},
    )
    path = tmp_path / "m.pt"
    save_model(original, path)
    loaded = load_model(path)  # no flags needed
    assert (loaded.arch, loaded.num_classes, loaded.source_format) == ("smallcnn", 4, "compressor")
    assert loaded.preprocess == pre and loaded.class_names == ["a", "b", "c", "d"]
    assert loaded.metadata == {"note": "x"}
    assert _same_outputs(loaded.model, model, (3, 16, 16))
    assert not list(tmp_path.glob(".*tmp"))  # the atomic write left nothing behind
    with pytest.raises(CompressorError, match="holds a smallcnn"):
        load_model(path, arch="lenet5")


def test_pickled_module_needs_trust(tmp_path: Path) -> None:
    model = build_model("lenet5", num_classes=10)
    path = tmp_path / "full.pt"
    torch.save(model, path)
    with pytest.raises(CompressorError, match=r"pickled Python objects.*--trust-pickle"):
        load_model(path)
    loaded = load_model(path, trust_pickle=True, arch="lenet5")
    assert loaded.source_format == "pickled-module" and loaded.num_classes == 10
    assert _same_outputs(loaded.model, model, (1, 28, 28))


class _Payload:
    """Unpickling this creates a file: the classic code-execution payload, made harmless."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_malicious_pickle_does_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "created-by-unpickling"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": _Payload(marker)}, path)
    with pytest.raises(CompressorError, match=r"pickled Python objects \(.*pathlib"):
        load_model(path, arch="resnet18")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("empty", "is empty"),
        ("text", "not a PyTorch checkpoint (not a zip archive or a pickle)"),
        ("truncated", "damaged PyTorch checkpoint (its zip archive is corrupt or truncated)"),
        ("legacy-truncated", "legacy-format (pre-1.6) PyTorch checkpoint that is damaged"),
        ("pickle", "plain Python pickle (pickle.dump), not a torch.save file"),
        ("onnx", "is an ONNX file"),
    ],
)
def test_unreadable_files_are_named_for_what_they_are(
    tmp_path: Path, kind: str, message: str
) -> None:
    import pickle

    sd = build_model("lenet5", num_classes=10).state_dict()
    path = tmp_path / ("bad.onnx" if kind == "onnx" else "bad.pt")
    if kind == "empty":
        path.write_bytes(b"")
    elif kind in ("text", "onnx"):
        path.write_bytes(b"definitely not a checkpoint")
    elif kind == "truncated":
        torch.save(sd, path)
        path.write_bytes(path.read_bytes()[:1000])
    elif kind == "legacy-truncated":
        torch.save(sd, path, _use_new_zipfile_serialization=False)
        path.write_bytes(path.read_bytes()[:1000])
    else:
        with path.open("wb") as f:
            pickle.dump({k: v.numpy() for k, v in sd.items()}, f)
    with pytest.raises(CompressorError, match=re.escape(message)):
        load_model(path, arch="lenet5")


def test_legacy_format_loads(tmp_path: Path) -> None:
    path = tmp_path / "legacy.pt"
    torch.save(
        build_model("lenet5", num_classes=10).state_dict(),
        path,
        _use_new_zipfile_serialization=False,
    )
    assert load_model(path, arch="lenet5").num_classes == 10


def test_nan_weights_are_caught_at_load(tmp_path: Path) -> None:
    sd = build_model("lenet5", num_classes=10).state_dict()
    next(v for k, v in sd.items() if k.endswith("weight"))[0] = float("inf")
    path = tmp_path / "nan.pt"
    torch.save(sd, path)
    with pytest.raises(CompressorError, match=r"NaN or infinite values .*earlier checkpoint"):
        load_model(path, arch="lenet5")


@pytest.mark.parametrize("arch", ["mnasnet0_5", "regnet_x_400mf"])
def test_state_dicts_that_once_failed_to_load(tmp_path: Path, arch: str) -> None:
    """MNASNet checks the version records torch.save keeps with a state_dict; RegNet's
    builder cannot run on the meta device. Both load from a plain state_dict file, also
    with a DataParallel prefix and with the records lost."""
    torch.manual_seed(0)
    model = build_model(arch, num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    for name, sd in [
        ("plain", model.state_dict()),
        ("prefixed", {f"module.{k}": v for k, v in model.state_dict().items()}),
    ]:
        path = tmp_path / f"{name}.pt"
        torch.save(sd, path)
        loaded = load_model(path, arch=arch).model.eval()
        with torch.no_grad():
            assert torch.equal(loaded(x), ref), name


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(CompressorError, match="not found"):
        load_model(tmp_path / "nope.pt")
    with pytest.raises(CompressorError, match="not a file"):
        load_model(tmp_path)


def test_dict_without_weights(tmp_path: Path) -> None:
    path = tmp_path / "d.pt"
    torch.save({"epoch": 1, "lr": 0.1}, path)
    with pytest.raises(CompressorError, match=r"without model weights.*'epoch'"):
        load_model(path)


def test_infer_aux_logits() -> None:
    with torch.device("meta"):
        m = build_model("googlenet", num_classes=5, options={"aux_logits": False})
    n, _, opts = infer_build_options("googlenet", m.state_dict())
    assert n == 5 and opts == {"aux_logits": False}
