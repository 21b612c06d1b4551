"""Pretrained starts without a network: torchvision weights from a hub folder the test
writes, a state_dict file, and a new head when the classes differ."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from compressor.archs import build_model
from compressor.cli import cli
from compressor.weights import hub_file
from tests.helpers import write_image_folder

ARCH = "mobilenet_v3_small"


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))

    def no_network(*_a: object, **_k: object) -> None:
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "hub"


def _train(tmp_path: Path, weights: str, out: str = "m.pt") -> tuple[int, str, Path]:
    data = write_image_folder(tmp_path / "imgs")  # 3 classes
    args = ["train", ARCH, "--weights", weights, "--data", str(data), "--input-size", "32"]
    args += ["--epochs", "1", "--lr", "1e-12", "--weight-decay", "0", "-o", str(tmp_path / out)]
    result = CliRunner().invoke(cli, args)
    return result.exit_code, result.stderr, tmp_path / out


def _body_equal(out: Path, reference: dict[str, torch.Tensor]) -> bool:
    from compressor.checkpoint import load_model

    got = load_model(out).model.state_dict()
    convs = [k for k, v in reference.items() if k.endswith("weight") and v.ndim == 4]
    return all(torch.allclose(got[k], reference[k], atol=1e-6) for k in convs)


def test_torchvision_weights_from_the_hub_cache_with_a_new_head(tmp_path: Path, hub: Path) -> None:
    member, file = hub_file(ARCH, "DEFAULT")
    assert file.parent == hub / "checkpoints"
    file.parent.mkdir(parents=True)
    torch.manual_seed(1)
    reference = build_model(ARCH, num_classes=1000).state_dict()
    torch.save(reference, file)
    code, err, out = _train(tmp_path, "DEFAULT")
    assert code == 0, err
    assert f"started from torchvision {member.name}" in err
    assert "replaced the classifier head (classifier.3): 1000 classes in the weights, 3 in" in err
    summary = json.loads(out.with_name("m.train.json").read_text())
    assert summary["pretrained"]["classes_in_weights"] == 1000
    assert summary["pretrained"]["head_replaced"] == ["classifier.3"]
    assert _body_equal(out, reference)  # lr 1e-12: the body is the file's


def test_missing_hub_file_names_the_file_and_folder(tmp_path: Path, hub: Path) -> None:
    _, file = hub_file(ARCH, "IMAGENET1K_V1")
    code, err, out = _train(tmp_path, "IMAGENET1K_V1")
    assert code == 1 and "Traceback" not in err
    assert f"put {file.name} in {hub / 'checkpoints'}" in err
    assert not out.exists()


def test_weights_from_a_state_dict_file(tmp_path: Path, hub: Path) -> None:
    torch.manual_seed(2)
    reference = build_model(ARCH, num_classes=7).state_dict()
    path = tmp_path / "mine.pt"
    torch.save({"model": reference}, path)
    code, err, out = _train(tmp_path, str(path))
    assert code == 0, err
    assert "7 classes in the weights, 3 in the data" in err
    assert _body_equal(out, reference)


def test_bad_weights_names() -> None:
    result = CliRunner().invoke(
        cli, ["train", ARCH, "--weights", "IMAGENET9K", "--data", "mnist15k", "-o", "x.pt"]
    )
    assert result.exit_code == 1 and "choose one of: DEFAULT, IMAGENET1K_V1" in result.stderr
    result = CliRunner().invoke(
        cli, ["train", "smallcnn", "--weights", "DEFAULT", "--data", "mnist15k", "-o", "x.pt"]
    )
    assert result.exit_code == 1 and "has no torchvision weights" in result.stderr


def test_backbone_without_classifier_gets_a_new_head(tmp_path: Path) -> None:
    """A state_dict with every weight but the classifier's (a backbone, as feature
    extractors ship) starts the architecture; the head is new and the console and
    train.json say so."""
    torch.manual_seed(3)
    reference = build_model(ARCH, num_classes=1000).state_dict()
    backbone = {k: v for k, v in reference.items() if not k.startswith("classifier.3.")}
    path = tmp_path / "backbone.pt"
    torch.save(backbone, path)
    code, err, out = _train(tmp_path, str(path))
    assert code == 0, err
    assert "the weights are a backbone (no classifier): a new head (classifier.3) with 3" in err
    summary = json.loads(out.with_name("m.train.json").read_text())
    assert summary["pretrained"]["backbone"] is True
    assert summary["pretrained"]["new_head"] is True
    assert summary["pretrained"]["classes_in_weights"] is None
    assert summary["pretrained"]["head_replaced"] == ["classifier.3"]
    assert _body_equal(out, reference)
    assert summary["test"] is None  # an ImageFolder without test/: nothing to score there


def test_backbone_missing_more_than_the_head_names_the_keys(tmp_path: Path) -> None:
    reference = build_model(ARCH, num_classes=1000).state_dict()
    gone = {"classifier.3.weight", "classifier.3.bias", "features.0.0.weight"}
    path = tmp_path / "partial.pt"
    torch.save({k: v for k, v in reference.items() if k not in gone}, path)
    code, err, out = _train(tmp_path, str(path))
    assert code == 1 and "Traceback" not in err
    assert "read as a backbone" in err and "missing keys: features.0.0.weight" in err
    assert not out.exists()


def test_shared_mobilenetv2_conversion_in_order(tmp_path: Path) -> None:
    """benchmarks/mobilenetv2_backbone.py renames a classic-nesting MobileNetV2 backbone
    into torchvision's names by order and shape; torchvision then loads it as a backbone."""
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    from mobilenetv2_backbone import convert

    from compressor.weights import load_pretrained

    torch.manual_seed(4)
    features = {
        k: torch.randn_like(v) if v.is_floating_point() else v
        for k, v in build_model("mobilenet_v2", num_classes=1000).state_dict().items()
        if k.startswith("features.")
    }
    classic = {
        f"backbone.{i}.{k.rsplit('.', 1)[-1]}": v for i, (k, v) in enumerate(features.items())
    }
    converted = convert(classic)
    assert list(converted) == list(features)
    path = tmp_path / "mbv2.pt"
    torch.save(converted, path)
    model, start = load_pretrained("mobilenet_v2", str(path), 10)
    assert start.backbone and start.head_replaced == ["classifier.1"]
    assert torch.equal(
        model.state_dict()["features.3.conv.1.0.weight"], features["features.3.conv.1.0.weight"]
    )
    with pytest.raises(ValueError, match="does not fit"):
        convert(dict(reversed(list(classic.items()))))
