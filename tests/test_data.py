from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from compressor.config import DataConfig, Preprocess
from compressor.data import BatchTransform, load_data
from compressor.errors import CompressorError
from tests.helpers import write_image_folder


def test_mnist15k_split_and_checksums() -> None:
    b = load_data(DataConfig("mnist15k"))
    # the 2,000 test images are scored only at the end; val is held out from the 13,000
    assert (len(b.train), len(b.val), len(b.test)) == (11700, 1300, 2000)
    assert b.val_held_out and b.held_out_splits == ("val", "test")
    assert b.train.images.shape[1:] == (1, 28, 28)
    assert b.preprocess == Preprocess((1, 28, 28), (0.1307,), (0.3081,))
    assert b.class_names == [str(i) for i in range(10)]
    # 500 per class in the 5k part; every class present in both splits
    assert set(b.val.labels.tolist()) == set(range(10)) == set(b.test.labels.tolist())
    assert b.flip is False


def test_mnist15k_to_rgb_model_repeats_channels_and_resizes() -> None:
    b = load_data(DataConfig("mnist15k", input_size=(32,)), channels=3)
    assert b.train.images.shape[1:] == (3, 32, 32)
    img = b.train.images[0]
    assert torch.equal(img[0], img[1]) and torch.equal(img[1], img[2])
    assert b.preprocess.mean == (0.1307,) * 3


def test_mnist_root(mnist_root: Path) -> None:
    b = load_data(DataConfig(str(mnist_root)))
    assert (len(b.train), len(b.val), len(b.test)) == (54, 6, 20)
    assert b.kind == "mnist"
    x, y = b.train[0]
    assert x.dtype == torch.uint8 and x.shape == (1, 28, 28) and int(y) == 0


def test_mnist_root_missing_file(mnist_root: Path) -> None:
    (mnist_root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(CompressorError, match="t10k-labels"):
        load_data(DataConfig(str(mnist_root)))


def test_cifar_root(cifar_root: Path) -> None:
    b = load_data(DataConfig(str(cifar_root)))
    assert (len(b.train), len(b.val), len(b.test)) == (45, 5, 10)
    assert b.class_names[0] == "class0"
    assert b.preprocess.input_size == (3, 32, 32)
    assert b.preprocess.mean == pytest.approx((0.4914, 0.4822, 0.4465))
    assert b.flip is True
    # the folder itself works as a root too
    assert len(load_data(DataConfig(str(cifar_root / "cifar-10-batches-py"))).train) == 45


def test_cifar_malicious_pickle_is_refused(cifar_root: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    with open(cifar_root / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({"data": Evil(), "labels": []}, f)
    with pytest.raises(CompressorError, match="refusing to load global"):
        load_data(DataConfig(str(cifar_root)))
    assert not marker.exists()


def test_imagefolder_val_split_is_fixed(imagefolder_root: Path) -> None:
    a = load_data(DataConfig(str(imagefolder_root), input_size=(16,), val_split=0.25))
    b = load_data(DataConfig(str(imagefolder_root), input_size=(16,), val_split=0.25))
    assert (len(a.train), len(a.val)) == (18, 6)
    assert a.val.samples == b.val.samples
    assert not set(a.val.samples) & set(a.train.samples)
    x, _y = a.train[0]
    assert x.shape == (3, 16, 16) and x.dtype == torch.uint8
    assert a.class_names == ["c0", "c1", "c2"]
    assert a.preprocess.mean == pytest.approx((0.485, 0.456, 0.406))


def test_imagefolder_train_val(imagefolder_split_root: Path) -> None:
    b = load_data(DataConfig(str(imagefolder_split_root), input_size=(1, 12, 12)))
    assert (len(b.train), len(b.val)) == (18, 6)
    x, _ = b.val[0]
    assert x.shape == (1, 12, 12)


def test_imagefolder_test_folder_is_held_out(tmp_path: Path) -> None:
    """train/ + test/: val comes from the training images; train/ + val/ + test/: all three."""

    root = tmp_path / "tt"
    write_image_folder(root / "train", per_class=8)
    write_image_folder(root / "test", per_class=2)
    b = load_data(DataConfig(str(root), input_size=(12,), val_split=0.25))
    assert (len(b.train), len(b.val), len(b.test)) == (18, 6, 6) and b.val_held_out
    assert not {p for p, _ in b.val.samples} & {p for p, _ in b.train.samples}
    assert all("/test/" in p for p, _ in b.test.samples)
    write_image_folder(root / "val", per_class=1)
    b = load_data(DataConfig(str(root), input_size=(12,)))
    assert (len(b.train), len(b.val), len(b.test)) == (24, 3, 6) and not b.val_held_out
    assert b.split("test") is b.test
    with pytest.raises(CompressorError, match="unknown split"):
        b.split("holdout")


def test_source_without_test_split(imagefolder_split_root: Path) -> None:
    b = load_data(DataConfig(str(imagefolder_split_root), input_size=(12,)))
    assert b.test is None and b.held_out_splits == ("val",)
    with pytest.raises(CompressorError, match="has no test split"):
        b.split("test")


def test_fashion_mnist_by_folder_name(mnist_root: Path, tmp_path: Path) -> None:
    fashion = tmp_path / "data" / "FashionMNIST"
    fashion.parent.mkdir()
    (mnist_root / "MNIST").rename(fashion)
    b = load_data(DataConfig(str(tmp_path / "data")))
    assert b.kind == "fashion-mnist" and b.class_names[0] == "T-shirt/top"
    assert b.preprocess.mean == (0.2860,) and b.preprocess.std == (0.3530,)
    assert b.flip is True


SHARED_FASHION = Path(__file__).parents[2] / "shared" / "datasets" / "fashion-mnist"


@pytest.mark.skipif(not SHARED_FASHION.is_dir(), reason="../shared/datasets/fashion-mnist absent")
def test_fashion_mnist_by_content(tmp_path: Path) -> None:
    """The official files are Fashion-MNIST whatever their folder is called (their names
    are MNIST's): the training labels' md5 tells."""
    import shutil

    plain = tmp_path / "plain"
    shutil.copytree(SHARED_FASHION, plain)
    b = load_data(DataConfig(str(plain)))
    assert b.kind == "fashion-mnist" and b.class_names[-1] == "Ankle boot"
    assert (len(b.train), len(b.val), len(b.test)) == (54000, 6000, 10000)
    # the held-out draw is fixed: the same images every run
    again = load_data(DataConfig(str(plain)))
    assert torch.equal(b.val.labels, again.val.labels)


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    (tmp_path / "empty" / "dog").mkdir()
    with pytest.raises(CompressorError, match="no images found"):
        load_data(DataConfig(str(tmp_path / "empty")))
    (tmp_path / "bare").mkdir()
    with pytest.raises(CompressorError, match="holds no dataset"):
        load_data(DataConfig(str(tmp_path / "bare")))


def test_missing_and_file_paths(tmp_path: Path) -> None:
    with pytest.raises(CompressorError, match="not found"):
        load_data(DataConfig(str(tmp_path / "nope")))
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(CompressorError, match="is a file"):
        load_data(DataConfig(str(f)))


def _break_images(root: Path) -> list[Path]:
    """A PNG with garbage, and a truncated JPEG (its header reads, its pixels do not)."""
    from PIL import Image

    png = next((root / "c0").glob("*.png"))
    png.write_bytes(b"not a png")
    jpg = root / "c1" / "cut.jpg"
    Image.new("RGB", (64, 64), (200, 10, 10)).save(jpg, quality=95)
    jpg.write_bytes(jpg.read_bytes()[:400])
    return [png, jpg]


def test_unreadable_images_are_skipped_with_a_warning(imagefolder_root: Path) -> None:
    from compressor.data import UnreadableImages, describe

    broken = {str(p) for p in _break_images(imagefolder_root)}
    with pytest.warns(UnreadableImages, match="2 image files cannot be read"):
        b = load_data(DataConfig(str(imagefolder_root), input_size=(16,), val_split=0.25))
    assert {p for p, _ in b.skipped} == broken
    kept = {p for p, _ in b.train.samples + b.val.samples}
    assert not kept & broken and len(kept) == 3 * 8 + 1 - 2
    for ds in (b.train, b.val):  # every file left in decodes
        for i in range(len(ds)):
            ds[i]
    assert describe(b)["skipped_images"] == 2


def test_strict_data_refuses_unreadable_images(imagefolder_root: Path) -> None:
    _break_images(imagefolder_root)
    with pytest.raises(CompressorError, match=r"2 image files cannot be read.*--strict-data"):
        load_data(DataConfig(str(imagefolder_root), input_size=(16,), strict=True))


def test_check_data_command_lists_every_bad_file(imagefolder_root: Path) -> None:
    from click.testing import CliRunner

    from compressor.cli import cli

    result = CliRunner().invoke(cli, ["check-data", str(imagefolder_root), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["unreadable"] == []
    broken = {str(p) for p in _break_images(imagefolder_root)}
    result = CliRunner().invoke(cli, ["check-data", str(imagefolder_root), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["files"] == 25 and {r["path"] for r in report["unreadable"]} == broken
    result = CliRunner().invoke(cli, ["check-data", "mnist15k"])
    assert result.exit_code == 1 and "not a folder of image files" in result.stderr


def test_train_skips_unreadable_images_and_says_so(imagefolder_root: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from compressor.cli import cli

    _break_images(imagefolder_root)
    out = tmp_path / "m.pt"
    args = ["train", "smallcnn", "--data", str(imagefolder_root), "--input-size", "16"]
    result = CliRunner().invoke(cli, [*args, "--epochs", "1", "-o", str(out), "-q"])
    assert result.exit_code == 0, result.stderr
    assert "Warning: 2 image files cannot be read" in result.stderr
    assert "Traceback" not in result.stderr and "warnings.warn" not in result.stderr
    summary = json.loads(out.with_suffix(".train.json").read_text())
    assert summary["data"]["skipped_images"] == 2
    result = CliRunner().invoke(cli, [*args, "--strict-data", "-o", str(tmp_path / "s.pt")])
    assert result.exit_code == 1 and "--strict-data" in result.stderr


def test_bad_options() -> None:
    with pytest.raises(CompressorError, match="val-split"):
        DataConfig("mnist15k", val_split=1.5)
    with pytest.raises(CompressorError, match="mean and std"):
        load_data(DataConfig("mnist15k", mean=(0.5, 0.5), std=(0.2, 0.2)))
    with pytest.raises(CompressorError, match="together"):
        load_data(DataConfig("mnist15k", mean=(0.5,)))


def test_batch_transform_normalizes_and_augments_deterministically() -> None:
    pre = Preprocess((1, 8, 8), (0.5,), (0.25,))
    t = BatchTransform(pre, flip=True, device=torch.device("cpu"))
    x = torch.full((4, 1, 8, 8), 255, dtype=torch.uint8)
    out = t(x)
    assert torch.allclose(out, torch.full_like(out, 2.0))  # (1 - 0.5) / 0.25
    x = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    a = t(x, torch.Generator().manual_seed(7))
    b = t(x, torch.Generator().manual_seed(7))
    c = t(x, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_image_files_are_resized_as_the_model_records(imagefolder_root: Path) -> None:
    """A model's recorded interpolation and crop_pct (timm's pretrained_cfg: bicubic,
    0.95, ...) are how its image files are resized and cropped; an input size or
    mean/std given on the command line keeps them."""
    from PIL import Image
    from torchvision.transforms.v2 import functional as TF

    recorded = Preprocess((3, 16, 16), (0.5,) * 3, (0.25,) * 3, "bicubic", 1.0)
    b = load_data(
        DataConfig(str(imagefolder_root), input_size=(12,), val_split=0.25), recorded=recorded
    )
    assert (b.preprocess.interpolation, b.preprocess.crop_pct) == ("bicubic", 1.0)
    assert b.preprocess.input_size == (3, 12, 12)
    path, _ = b.train.samples[0]
    image, _ = b.train[0]
    with Image.open(path) as img:  # 20x20: shorter side to 12 / 1.0, nothing cropped
        raw = TF.pil_to_tensor(img.convert("RGB"))
    bicubic = TF.resize(raw, [12], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
    assert torch.equal(image, bicubic)
    default = load_data(DataConfig(str(imagefolder_root), input_size=(12,), val_split=0.25))
    assert (default.preprocess.interpolation, default.preprocess.crop_pct) == ("bilinear", 0.875)
    assert not torch.equal(default.train[0][0], image)  # 20 -> 14 bilinear, cropped to 12
    with pytest.raises(CompressorError, match="interpolation must be one of"):
        Preprocess((3, 8, 8), (0.5,) * 3, (0.25,) * 3, "lanczos")
    with pytest.raises(CompressorError, match="crop_pct"):
        Preprocess((3, 8, 8), (0.5,) * 3, (0.25,) * 3, crop_pct=1.5)


def test_a_preprocess_recorded_before_interpolation_reads_as_bilinear() -> None:
    old = {"input_size": [3, 8, 8], "mean": [0.5] * 3, "std": [0.25] * 3}
    pre = Preprocess.from_dict(old)
    assert (pre.interpolation, pre.crop_pct) == ("bilinear", 0.875)
