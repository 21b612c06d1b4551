from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from compressor import __version__
from compressor.archs import build_model
from compressor.cli import cli
from tests.helpers import write_image_folder

COMMANDS = sorted(cli.commands)


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_version() -> None:
    code, out, _ = run("--version")
    assert code == 0 and __version__ in out


@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_every_command(command: str) -> None:
    code, out, _ = run(command, "--help")
    assert code == 0
    assert f"Usage: cli {command}" in out or f"Usage: compressor {command}" in out


def test_expected_commands_exist() -> None:
    assert {"train", "eval", "inspect"} <= set(COMMANDS)


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys; from compressor.cli import cli\n"
        "try:\n    cli(['--help'], prog_name='compressor')\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)


def test_python_dash_m() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "compressor", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and __version__ in out.stdout


@pytest.fixture(scope="module")
def lenet_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "lenet5.pt"
    code, _, err = run(
        "train", "lenet5", "--data", "mnist15k", "--epochs", "1", "-q", "-o", str(out)
    )
    assert code == 0, err
    return out


def test_train_refuses_existing_output(lenet_file: Path) -> None:
    before = lenet_file.read_bytes()
    code, _, err = run(
        "train", "lenet5", "--data", "mnist15k", "--epochs", "1", "-o", str(lenet_file)
    )
    assert code == 1 and "exists; pass --force" in err
    assert lenet_file.read_bytes() == before


def test_eval_json(lenet_file: Path) -> None:
    code, out, _ = run("eval", str(lenet_file), "--data", "mnist15k", "--json", "-q")
    assert code == 0
    result = json.loads(out)
    assert result["splits"] == ["val", "test"] and result["val_held_out_from_train"]
    test, val = result["test"], result["val"]
    assert test["images"] == 2000 and test["top1"] > 90 and test["top5"] >= test["top1"]
    assert val["images"] == 1300 and val["top1"] > 90
    assert result["input_size"] == "1x28x28"
    code, out, _ = run("eval", str(lenet_file), "--data", "mnist15k", "--split", "test", "--json")
    assert code == 0 and json.loads(out)["splits"] == ["test"]
    assert json.loads(out)["test"]["top1"] == test["top1"]


def test_inspect_json(lenet_file: Path) -> None:
    code, out, _ = run("inspect", str(lenet_file), "--json")
    result = json.loads(out)
    assert code == 0
    assert result["params"] == 431080
    assert result["macs"] == 288000 + 1600000 + 400000 + 5000
    assert [r["out_channels"] for r in result["layers"]] == [20, 50, 500, 10]


def test_inspect_state_dict_with_arch(tmp_path: Path) -> None:
    path = tmp_path / "r18.pt"
    torch.save(build_model("resnet18", num_classes=10).state_dict(), path)
    code, out, _ = run("inspect", str(path), "--arch", "resnet18", "--input-size", "32", "--json")
    result = json.loads(out)
    assert code == 0 and result["num_classes"] == 10 and result["input_size"] == [3, 32, 32]
    assert result["layers"][0]["name"] == "conv1" and result["layers"][0]["out_channels"] == 64


def test_eval_wrong_class_count(tmp_path: Path, cifar_root: Path) -> None:
    path = tmp_path / "r18.pt"
    torch.save(build_model("resnet18", num_classes=5).state_dict(), path)
    code, _, err = run("eval", str(path), "--arch", "resnet18", "--data", str(cifar_root))
    assert code == 1 and "5 outputs but cifar10" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["train", "resnet19", "--data", "mnist15k", "-o", "x.pt"],
            "unknown architecture 'resnet19'",
        ),
        (["eval", "missing.pt", "--data", "mnist15k"], "model file 'missing.pt' not found"),
        (
            ["train", "lenet5", "--data", "no-such-dir", "-o", "x.pt"],
            "data 'no-such-dir' not found",
        ),
        (
            [
                "train",
                "lenet5",
                "--data",
                "mnist15k",
                "--epochs",
                "1",
                "--optimizer",
                "adam",
                "-o",
                "x.pt",
            ],
            "'adam' is not one of",
        ),
        (["inspect", "missing.pt", "--input-size", "3x"], "is not a size"),
        (
            ["train", "lenet5", "--data", "mnist15k", "--val-split", "2", "-o", "x.pt"],
            "--val-split must be in (0, 1)",
        ),
        (
            ["train", "lenet5", "--data", "nothing", "-o", "new/dir/x.pt"],
            "data 'nothing' not found",
        ),
    ],
)
def test_bad_input_gives_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "compressor", *args], capture_output=True, text=True
    )
    assert proc.returncode in (1, 2)
    assert "Traceback" not in proc.stderr
    assert message in proc.stderr
    assert not (tmp_path / "x.pt").exists()
    assert not (tmp_path / "new").exists()  # folders made for the output are removed on failure


def test_untrusted_pickle_refused_on_command_line(tmp_path: Path) -> None:
    path = tmp_path / "full.pt"
    torch.save(build_model("lenet5", num_classes=10), path)
    code, _, err = run("inspect", str(path))
    assert code == 1 and "--trust-pickle" in err
    code, out, _ = run("inspect", str(path), "--trust-pickle", "--arch", "lenet5", "--json")
    assert code == 0 and json.loads(out)["params"] == 431080


def test_error_from_a_dataloader_worker_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file that breaks after the up-front check (here: the check is skipped) fails in a
    DataLoader worker process; the user still sees one line."""
    import compressor.data

    root = write_image_folder(tmp_path / "imgs")
    for p in (root / "c1").iterdir():
        p.write_bytes(b"broken")
    monkeypatch.setattr(compressor.data, "find_unreadable", lambda *_a, **_k: [])
    path = tmp_path / "r18.pt"
    torch.save(build_model("resnet18", num_classes=3).state_dict(), path)
    args = ["eval", str(path), "--arch", "resnet18", "--data", str(root), "--input-size", "32"]
    result = CliRunner().invoke(cli, [*args, "--workers", "1", "--val-split", "0.5"])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot read image"), result.stderr


def test_methods_json() -> None:
    code, out, _ = run("methods", "--json")
    names = [m["name"] for m in json.loads(out)["methods"]]
    assert code == 0
    assert names == ["none", "l1", "l2", "ssl", "slimming", "l1l2", "hgs", "l0sgl", "ffr"]
    hgs = json.loads(out)["methods"][6]
    assert hgs["defaults"]["lam"] == 1e-3 and hgs["defaults"]["lam2"] == 0.5


@pytest.mark.e2e
def test_train_with_method_and_options(tmp_path: Path) -> None:
    cfg = tmp_path / "hgs.toml"
    cfg.write_text("lam2 = 0.25\nlam = 0.5\n")
    out = tmp_path / "m.pt"
    code, stdout, err = run(
        "train",
        "smallcnn",
        "--data",
        "mnist15k",
        "--epochs",
        "1",
        "--method",
        "hgs",
        "--method-config",
        str(cfg),
        "--lambda",
        "1e-4",
        "--set",
        "samples=32",
        "-o",
        str(out),
        "--json",
        "-q",
    )
    assert code == 0, err
    method = json.loads(stdout)["method"]
    assert method["name"] == "hgs"
    assert (
        method["params"]["lam"] == 1e-4
        and method["params"]["lam2"] == 0.25
        and method["params"]["samples"] == 32
    )
    assert json.loads(stdout)["history"][0]["train_penalty"] > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "hsg"], "unknown method 'hsg'"),
        (["--method", "hgs", "--set", "lamda=1"], "has no option 'lamda'"),
        (["--lambda", "0.1"], "need --method"),
        (["--method", "hgs", "--set", "oops"], "is not KEY=VALUE"),
        (["--method", "hgs", "--lambda", "auto"], "--lambda auto holds a trained model"),
        (["--method", "hgs", "--lambda", "strong"], "neither `auto` nor a number"),
    ],
)
def test_bad_method_options(tmp_path: Path, args: list[str], message: str) -> None:
    code, _, err = run("train", "lenet5", "--data", "mnist15k", "-o", str(tmp_path / "x.pt"), *args)
    assert code in (1, 2) and message in err
    assert not (tmp_path / "x.pt").exists()


def test_all_missing_options_in_one_message(tmp_path: Path) -> None:
    """The used-by line without --data and -o: one message names both, and --arch too
    because the file is a bare state_dict."""
    path = tmp_path / "resnet18.pt"
    torch.save(build_model("lenet5", num_classes=10).state_dict(), path)
    result = CliRunner().invoke(cli, ["compress", str(path), "--method", "hgs"])
    assert result.exit_code == 2
    assert "Missing options: --data, -o/--output, --arch" in result.stderr
    assert "holds a bare state_dict" in result.stderr
    result = CliRunner().invoke(cli, ["train"])
    assert result.exit_code == 2 and "Missing: ARCH_OR_MODEL, --data, -o/--output" in result.stderr


def test_internal_error_is_one_line_with_the_traceback_saved(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import compressor.operations

    def broken(*_a: object, **_k: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(compressor.operations, "inspect_model", broken)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["compressor", "inspect", "lenet5"])
    monkeypatch.delenv("COMPRESSOR_TRACEBACK", raising=False)
    result = CliRunner().invoke(cli, ["inspect", "lenet5"])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "internal error (ZeroDivisionError: a bug)" in lines[0]
    saved = list(tmp_path.glob("compressor-error-*.txt"))
    assert len(saved) == 1 and str(saved[0]) in lines[0]
    assert "Traceback" in saved[0].read_text() and "a bug" in saved[0].read_text()
    monkeypatch.setattr(sys, "argv", ["compressor", "inspect", "lenet5", "-v"])
    result = CliRunner().invoke(cli, ["inspect", "lenet5", "-v"])
    assert isinstance(result.exception, ZeroDivisionError)  # -v: the traceback itself


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "not found"),
        ("no-arch", "bare state_dict"),
        ("wrong-arch", "is it the right --arch?"),
        ("pickle", "--trust-pickle"),
        ("no-data", "data 'nothing' not found"),
        ("nan", "NaN or infinite"),
        ("under-a-file", "is a file"),
    ],
)
def test_compress_input_errors_leave_nothing(tmp_path: Path, case: str, message: str) -> None:
    model = tmp_path / "m.pt"
    sd = build_model("lenet5", num_classes=10).state_dict()
    if case == "nan":
        next(iter(sd.values()))[0] = float("nan")
    if case == "pickle":
        torch.save(build_model("lenet5", num_classes=10), model)
    elif case != "missing":
        torch.save(sd, model)
    out = tmp_path / "out"
    if case == "under-a-file":
        (tmp_path / "f").write_text("")
        out = tmp_path / "f" / "out"
    args = ["compress", str(model), "--method", "l1", "--data", "mnist15k", "-o", str(out)]
    if case not in ("no-arch",):
        args += ["--arch", "resnet18" if case == "wrong-arch" else "lenet5"]
    if case == "no-data":
        args[args.index("mnist15k")] = "nothing"
    before = set(tmp_path.iterdir())
    result = CliRunner().invoke(cli, args)
    assert result.exit_code in (1, 2) and message in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert set(tmp_path.iterdir()) == before  # no OUTDIR, no OUTDIR.partial


def _plain_onnx(path: Path, classes: int) -> Path:
    """A smallcnn exported by torch alone: no compressor metadata."""
    model = build_model("smallcnn", num_classes=classes, in_channels=1)
    torch.onnx.export(model, (torch.zeros(1, 1, 28, 28),), str(path), dynamo=False)
    return path


def test_eval_accepts_the_exported_onnx_file(tmp_path: Path) -> None:
    """The .onnx file gives the PyTorch model's accuracy, with the preprocessing its
    metadata records; a file without metadata asks for it; a class mismatch is one line."""
    model = Path(__file__).resolve().parent.parent / "models" / "smallcnn-mnist15k.pt"
    onnx_path = tmp_path / "m.onnx"
    assert run("export", str(model), "-o", str(onnx_path), "-q")[0] == 0
    code, out, _ = run("eval", str(model), "--data", "mnist15k", "--json", "-q")
    ref = json.loads(out)
    code, out, err = run("eval", str(onnx_path), "--data", "mnist15k", "--json", "-q")
    assert code == 0, err
    got = json.loads(out)
    assert got["runtime"] == "onnxruntime-cpu" and got["splits"] == ref["splits"] == ["val", "test"]
    for split in ("val", "test"):
        g, r = got[split], ref[split]
        assert g["images"] == r["images"]
        assert abs(g["top1"] - r["top1"]) <= 0.1 and abs(g["loss"] - r["loss"]) < 1e-3
    bare = _plain_onnx(tmp_path / "bare.onnx", classes=10)
    code, _, err = run("eval", str(bare), "--data", "mnist15k")
    assert code == 1 and "records no preprocessing" in err
    other = _plain_onnx(tmp_path / "five.onnx", classes=5)
    code, _, err = run(
        "eval",
        str(other),
        "--data",
        "mnist15k",
        "--input-size",
        "1x28x28",
        "--mean",
        "0.1",
        "--std",
        "0.3",
    )
    assert code == 1 and "10 classes" in err and "Traceback" not in err
