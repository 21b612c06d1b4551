"""Every bad input a user can give, and what they see: one line starting ``Error:``, exit
status 1 (or 2 for command-line usage), no traceback, nothing written. The table in
docs/errors.md lists the same cases; ``test_the_docs_table_lists_every_case`` keeps the
two in step."""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from compressor.archs import build_model
from compressor.cli import cli
from tests.helpers import write_image_folder

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "smallcnn-mnist15k.pt"


def _sd(tmp: Path, name: str = "lenet.pt", **kw: object) -> Path:
    path = tmp / name
    torch.save(build_model("lenet5", num_classes=10).state_dict(), path, **kw)  # type: ignore[arg-type]
    return path


def _write(tmp: Path, name: str, data: bytes) -> Path:
    (tmp / name).write_bytes(data)
    return tmp / name


def _truncated(tmp: Path) -> Path:
    path = _sd(tmp)
    path.write_bytes(path.read_bytes()[:1000])
    return path


def _plain_pickle(tmp: Path) -> Path:
    path = tmp / "weights.pkl"
    with path.open("wb") as f:
        pickle.dump(
            {k: v.numpy() for k, v in build_model("lenet5", num_classes=10).state_dict().items()}, f
        )
    return path


def _module(tmp: Path) -> Path:
    path = tmp / "module.pt"
    torch.save(build_model("lenet5", num_classes=10), path)
    return path


def _nan(tmp: Path) -> Path:
    sd = build_model("lenet5", num_classes=10).state_dict()
    next(iter(sd.values()))[0] = float("nan")
    torch.save(sd, tmp / "nan.pt")
    return tmp / "nan.pt"


def _broken_images(tmp: Path) -> Path:

    root = write_image_folder(tmp / "imgs")
    next((root / "c0").glob("*.png")).write_bytes(b"broken")
    return root


def _five_classes(tmp: Path) -> Path:
    path = tmp / "five.pt"
    torch.save(build_model("smallcnn", num_classes=5, in_channels=1).state_dict(), path)
    return path


def _bare_onnx(tmp: Path) -> Path:
    path = tmp / "bare.onnx"
    model = build_model("smallcnn", num_classes=10, in_channels=1)
    torch.onnx.export(model, (torch.zeros(1, 1, 28, 28),), str(path), dynamo=False)
    return path


# case id -> (files to make, arguments, message); "{f}" is the made file, "{t}" the folder
Setup = Callable[[Path], Path] | None
CASES: dict[str, tuple[Setup, list[str], str]] = {
    "missing model file": (None, ["inspect", "{t}/missing.pt"], "not found"),
    "model path is a folder": (lambda t: t, ["inspect", "{f}"], "is not a file"),
    "empty file": (lambda t: _write(t, "e.pt", b""), ["inspect", "{f}"], "is empty"),
    "not a checkpoint": (
        lambda t: _write(t, "x.pt", b"hello"),
        ["inspect", "{f}"],
        "not a PyTorch checkpoint",
    ),
    "truncated checkpoint": (
        _truncated,
        ["inspect", "{f}", "--arch", "lenet5"],
        "damaged PyTorch checkpoint",
    ),
    "plain pickle": (_plain_pickle, ["inspect", "{f}", "--arch", "lenet5"], "plain Python pickle"),
    "ONNX file where a PyTorch model is needed": (
        _bare_onnx,
        ["prune", "{f}", "--ratio", "0.3", "-o", "{t}/p.pt"],
        "is an ONNX file",
    ),
    "latency target not positive": (
        None,
        ["prune", str(MODEL), "--target-latency", "0", "-o", "{t}/p.pt"],
        "--target-latency is in milliseconds and must be positive",
    ),
    "speed-up target not above 1": (
        None,
        ["prune", str(MODEL), "--target-speedup", "0.5", "-o", "{t}/p.pt"],
        "--target-speedup must be above 1",
    ),
    "latency target the model already meets": (
        None,
        ["prune", str(MODEL), "--target-latency", "1000", "-o", "{t}/p.pt"],
        "asks for nothing: the model already runs in",
    ),
    "latency target out of reach": (
        None,
        ["prune", str(MODEL), "--target-speedup", "1000", "-o", "{t}/p.pt"],
        "--target-speedup 1000 is out of reach: removing all that the guards allow",
    ),
    "latency device unreachable": (
        None,
        [
            "compress",
            str(MODEL),
            "--method",
            "none",
            "--data",
            "mnist15k",
            "--target-macs",
            "0.5",
            "--remote",
            "nobody@host.invalid",
            "-o",
            "{t}/out",
        ],
        "cannot reach nobody@host.invalid over ssh",
    ),
    "pickled module without --trust-pickle": (_module, ["inspect", "{f}"], "--trust-pickle"),
    "bare state_dict without --arch": (
        _sd,
        ["inspect", "{f}"],
        "say which architecture with --arch",
    ),
    "wrong --arch": (_sd, ["inspect", "{f}", "--arch", "resnet18"], "is it the right --arch?"),
    "unknown --arch": (
        _sd,
        ["inspect", "{f}", "--arch", "resnet19"],
        "unknown architecture 'resnet19'",
    ),
    "NaN or infinite weights": (
        _nan,
        ["inspect", "{f}", "--arch", "lenet5"],
        "NaN or infinite values",
    ),
    "missing data folder": (None, ["eval", str(MODEL), "--data", "{t}/nothing"], "not found"),
    "data is a file": (
        _sd,
        ["eval", str(MODEL), "--data", "{f}"],
        "is a file; give a dataset directory",
    ),
    "folder without images": (
        lambda t: t,
        ["eval", str(MODEL), "--data", "{f}"],
        "holds no dataset",
    ),
    "unreadable image with --strict-data": (
        _broken_images,
        [
            "train",
            "smallcnn",
            "--data",
            "{f}",
            "--input-size",
            "16",
            "--strict-data",
            "-o",
            "{t}/m.pt",
        ],
        "cannot be read",
    ),
    "model and data disagree on classes": (
        _five_classes,
        ["eval", "{f}", "--arch", "smallcnn", "--data", "mnist15k"],
        "5 outputs but mnist15k has 10 classes; `compressor compress` and `compressor train` "
        "start from these weights with a new head",
    ),
    "ONNX file without preprocessing": (
        _bare_onnx,
        ["eval", "{f}", "--data", "mnist15k"],
        "records no preprocessing",
    ),
    "unknown method": (
        None,
        ["compress", str(MODEL), "--method", "hsg", "--data", "mnist15k", "-o", "{t}/o"],
        "unknown method 'hsg'",
    ),
    "automatic strength without a target": (
        None,
        ["compress", str(MODEL), "--method", "l1l2", "--data", "mnist15k", "-o", "{t}/o"],
        "--lambda auto needs a target to aim at, and l1l2 would select by a threshold (0.01)",
    ),
    "distillation weight out of range": (
        None,
        [
            *["compress", str(MODEL), "--method", "l1", "--data", "mnist15k"],
            *["--distill", "1.5", "-o", "{t}/o"],
        ],
        "--distill must be in [0, 1], got 1.5",
    ),
    "unknown method option": (
        None,
        [
            "compress",
            str(MODEL),
            "--method",
            "l1",
            "--set",
            "nope=1",
            "--data",
            "mnist15k",
            "-o",
            "{t}/o",
        ],
        "has no option 'nope'",
    ),
    "option out of range": (
        None,
        ["eval", str(MODEL), "--data", "mnist15k", "--val-split", "2"],
        "--val-split must be in (0, 1)",
    ),
    "not a size": (None, ["inspect", str(MODEL), "--input-size", "3x"], "is not a size"),
    "missing required options": (
        _sd,
        ["compress", "{f}", "--method", "hgs"],
        "Missing options: --data, -o/--output, --arch",
    ),
    "output exists": (
        _sd,
        ["prune", str(MODEL), "--ratio", "0.3", "-o", "{f}"],
        "exists; pass --force",
    ),
    "output under a file": (
        _sd,
        ["prune", str(MODEL), "--ratio", "0.3", "-o", "{f}/p.pt"],
        "is a file",
    ),
    "nothing to resume": (
        None,
        ["compress", str(MODEL), "--method", "l1", "--data", "mnist15k", "-o", "{t}/o", "--resume"],
        "nothing to resume",
    ),
    "MAC target out of reach": (
        None,
        ["prune", str(MODEL), "--target-macs", "0.0001", "-o", "{t}/p.pt"],
        "is out of reach",
    ),
    "corrupt ONNX to benchmark": (
        lambda t: _write(t, "g.onnx", b"garbage"),
        ["benchmark", "{f}"],
        "not a valid ONNX model",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_clear_line(
    tmp_path: Path, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup, args, message = CASES[case]
    work = tmp_path / "w"
    work.mkdir()
    made = setup(work) if setup else work
    before = sorted(p.name for p in work.rglob("*"))
    monkeypatch.chdir(work)
    monkeypatch.setenv("COMPRESSOR_CACHE", str(tmp_path / "cache"))  # latency tables
    result = CliRunner().invoke(cli, [a.format(f=made, t=work) for a in args])
    assert result.exit_code in (1, 2), (case, result.output)
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0], (case, result.stderr)
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in work.rglob("*")) == before  # nothing written or left


def test_the_docs_table_lists_every_case() -> None:
    table = (ROOT / "docs" / "errors.md").read_text()
    rows = re.findall(r"^\| ([^|]+?) \|", table, flags=re.M)
    assert set(CASES) <= set(rows), set(CASES) - set(rows)
