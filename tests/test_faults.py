"""Faults a user's bad day brings: concurrent runs into one output, a writer killed with
its lock held. Each case asserts that nothing is lost or mixed and that the message is one
line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from compressor.cli import cli
from compressor.errors import CompressorError
from compressor.lock import exclusive, lock_path

MODEL = Path(__file__).parent.parent / "models" / "smallcnn-mnist15k.pt"


def test_a_second_writer_is_refused_in_one_line(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with exclusive(out):
        info = json.loads(lock_path(out).read_text())
        assert info["pid"] == os.getpid()
        with (
            pytest.raises(
                CompressorError, match=rf"another compressor run \(pid {os.getpid()}, started "
            ),
            exclusive(out),
        ):
            pass
    assert not lock_path(out).exists()  # released and removed
    with exclusive(out):  # free again
        pass


def test_a_lock_left_by_a_dead_run_is_taken_over(tmp_path: Path) -> None:
    out = tmp_path / "m.pt"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from compressor.lock import exclusive\n"
            f"with exclusive(Path({str(out)!r})):\n    print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(CompressorError, match=f"pid {holder.pid}"), exclusive(out):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert lock_path(out).exists()  # kill -9 left the file behind ...
    with exclusive(out):  # ... and its lock went with the process
        pass


def test_train_into_an_output_being_written_stops(tmp_path: Path) -> None:
    out = tmp_path / "m.pt"
    with exclusive(out):
        res = CliRunner().invoke(
            cli, ["train", "smallcnn", "--data", "mnist15k", "--epochs", "1", "-o", str(out)]
        )
    assert res.exit_code == 1 and res.stderr.count("\n") == 1
    assert "another compressor run" in res.stderr and not out.exists()


@pytest.mark.e2e
def test_two_compress_runs_into_one_output_do_not_mix(tmp_path: Path) -> None:
    """Started seconds apart into one -o: the second stops with one line and writes
    nothing; the first completes with its own method's report."""
    out = tmp_path / "out"
    args = ["--data", "mnist15k", "--reg-epochs", "1", "--ft-epochs", "1", "--target-macs", "0.6"]
    cmd = [sys.executable, "-m", "compressor", "compress", str(MODEL), *args, "-o", str(out), "-q"]
    first = subprocess.Popen([*cmd, "--method", "l1l2"], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out.parent / "out.partial" / "config.json").is_file():
        assert time.time() < deadline and first.poll() is None, "the first run did not start"
        time.sleep(0.2)
    second = subprocess.run([*cmd, "--method", "none"], capture_output=True, text=True)
    assert second.returncode == 1 and second.stderr.count("\n") == 1, second.stderr
    assert f"another compressor run (pid {first.pid}" in second.stderr
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["method"] == "l1l2" and report["strength"] is not None
    assert not lock_path(out).exists() and not (tmp_path / "out.partial").exists()


def test_temporaries_of_a_killed_writer_are_cleared_under_the_lock(tmp_path: Path) -> None:
    from compressor.utils import remove_temporaries

    out = tmp_path / "model.onnx"
    stale_file = tmp_path / ".model.onnx.k3j2.tmp"
    stale_dir = tmp_path / ".model.onnx.x9.tmp"
    stale_file.write_text("half")
    (stale_dir / "raw.onnx").parent.mkdir()
    (stale_dir / "raw.onnx").write_text("half")
    other = tmp_path / ".other.onnx.k3j2.tmp"  # another output's: not this writer's to clear
    other.write_text("x")
    keep = tmp_path / "model.onnx.data"
    keep.write_text("x")
    with exclusive(out):
        assert not stale_file.exists() and not stale_dir.exists()
    assert other.exists() and keep.exists()
    assert remove_temporaries(tmp_path) == [other] and not other.exists()


def test_scratch_folders_of_dead_processes_are_removed(tmp_path: Path) -> None:
    import tempfile

    from compressor.utils import SCRATCH_PREFIX, remove_dead_scratch, system_scratch

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(dead.stdout)
    left = Path(tempfile.gettempdir()) / f"{SCRATCH_PREFIX}{pid}-abc"
    left.mkdir(exist_ok=True)
    (left / "raw.onnx").write_text("half")
    with system_scratch() as mine:
        gone = remove_dead_scratch()
        assert left in gone and not left.exists()
        assert Path(mine).is_dir()  # this live process's folder stays
    assert not Path(mine).exists()


@pytest.mark.e2e
def test_an_interrupted_export_leaves_no_temporary_in_the_final_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An export killed mid-write leaves its temporaries in OUT.partial; the resumed run
    clears them, and the final folder holds none."""
    from compressor.config import DataConfig, PruneConfig, TrainConfig
    from compressor.pipeline import CompressConfig, compress, partial_dir
    from tests.helpers import replace_stage

    def killed(run: Any) -> None:
        (run.work / ".model.onnx.k3j2.tmp").write_text("a killed export's file")
        (run.work / ".model.onnx.x9.tmp").mkdir()
        raise CompressorError("killed")

    config = CompressConfig(
        method="none",
        data=DataConfig("mnist15k"),
        regularize=TrainConfig.create(stage="regularize", epochs=0),
        finetune=TrainConfig.create(stage="finetune", epochs=1),
        prune=PruneConfig(target_macs=0.6),
        latency_seconds=0.5,
    )
    out = tmp_path / "out"
    replace_stage(monkeypatch, "export", killed)
    with pytest.raises(CompressorError, match="killed"):
        compress(MODEL, out, config, progress=False)
    assert (partial_dir(out) / ".model.onnx.k3j2.tmp").exists()
    monkeypatch.undo()
    compress(MODEL, out, config, progress=False, resume=True)
    assert not list(out.glob(".*.tmp")) and not partial_dir(out).exists()


def _torch_write_failure(*_a: object, **_k: object) -> None:
    raise RuntimeError(
        "[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file "
        "data/0: file write failed"
    )


def test_a_full_disk_while_saving_a_model_is_one_line_not_a_bug(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch.save's own write error (what a full disk gives) names the file, says to free
    space and that the finished epoch is kept for --resume."""
    import torch

    out = tmp_path / "m.pt"
    monkeypatch.setattr(torch, "save", _torch_write_failure)
    res = CliRunner().invoke(
        cli,
        [
            *("train", "smallcnn", "--data", "mnist15k", "--epochs", "1"),
            *("--input-size", "12", "--val-split", "0.9", "-o", str(out), "-q"),
        ],
    )
    assert res.exit_code == 1 and res.stderr.count("\n") == 1, res.stderr
    assert "this is a bug" not in res.stderr and "cannot write" in res.stderr
    assert "the file write failed" in res.stderr and "free space and rerun" in res.stderr
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))


@pytest.mark.slow  # the chain below covers the report stage in CI's time
def test_a_full_disk_in_the_report_stage_names_the_file_and_what_was_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import matplotlib.figure

    def full(*_a: object, **_k: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", full)
    out = tmp_path / "out"
    res = CliRunner().invoke(
        cli,
        [
            *("compress", str(MODEL), "--method", "none", "--data", "mnist15k"),
            *(
                "--target-macs",
                "0.6",
                "--reg-epochs",
                "0",
                "--ft-epochs",
                "1",
                "-o",
                str(out),
                "-q",
            ),
        ],
    )
    assert res.exit_code == 1 and res.stderr.count("\n") == 1, res.stderr
    assert "No space left on device" in res.stderr and ".png" in res.stderr
    assert "keeps the finished stages" in res.stderr and "--resume" in res.stderr
    assert not out.exists() and not list((tmp_path / "out.partial").glob(".*.tmp"))


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "m.onnx"
    res = CliRunner().invoke(cli, ["export", str(MODEL), "-o", str(out), "-q"])
    assert res.exit_code == 0, res.stderr
    return out


def _poisoned(onnx_file: Path, tmp_path: Path) -> Path:
    """The file with one weight set to NaN, as a flipped exponent bit gives."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(onnx_file))
    init = next(i for i in proto.graph.initializer if numpy_helper.to_array(i).size > 10)
    array = numpy_helper.to_array(init).copy()
    array.flat[3] = np.nan
    init.CopyFrom(numpy_helper.from_array(array, init.name))
    path = tmp_path / "bad.onnx"
    onnx.save(proto, str(path))
    return path


def test_damaged_onnx_weights_are_refused_by_eval_and_benchmark(
    onnx_file: Path, tmp_path: Path
) -> None:
    bad = _poisoned(onnx_file, tmp_path)
    for args in (["eval", str(bad), "--data", "mnist15k"], ["benchmark", str(bad)]):
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 1 and res.stderr.count("\n") == 1, res.stderr
        assert "1 weight tensor holds NaN or infinite values (first: " in res.stderr
    res = CliRunner().invoke(
        cli, ["eval", str(bad), "--data", "mnist15k", "--split", "test", "--allow-nonfinite"]
    )
    assert res.exit_code == 0 and "Warning: the test loss is nan" in res.stderr


def test_onnx_input_sizes_that_disagree_with_the_file_are_refused(onnx_file: Path) -> None:
    res = CliRunner().invoke(
        cli, ["eval", str(onnx_file), "--data", "mnist15k", "--input-size", "32"]
    )
    assert res.exit_code == 1 and res.stderr.count("\n") == 1, res.stderr
    assert "takes input ['N', 1, 28, 28], not 1x32x32" in res.stderr
    res = CliRunner().invoke(cli, ["benchmark", str(onnx_file), "--input-shape", "1,32,32"])
    assert res.exit_code == 1 and "--input-shape 1,32,32 disagrees with the file" in res.stderr


def test_top1_breaks_ties_by_the_lowest_class_index_as_numpy_argmax() -> None:
    import numpy as np
    import torch

    from compressor.outputs import topk_correct

    logits = torch.tensor([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0], [0.0, 1.0, 5.0, 5.0]])
    for labels, expected in (([1, 0, 2], 3), ([2, 1, 3], 0)):
        assert topk_correct(logits, torch.tensor(labels), (1,)) == [expected]
    assert (np.argmax(logits.numpy(), axis=1) == [1, 0, 2]).all()


def test_a_symlink_loop_does_not_multiply_the_data(tmp_path: Path) -> None:
    from compressor.data import _list_images
    from tests.helpers import write_image_folder

    root = write_image_folder(tmp_path / "imgs", classes=2, per_class=6)
    plain = _list_images(root)[1]
    (root / "c0" / "self").symlink_to(root / "c0", target_is_directory=True)
    (root / "c1" / "again").symlink_to(root / "c0", target_is_directory=True)
    (root / "c1" / "twin.png").symlink_to(next((root / "c1").glob("*.png")))
    classes, samples = _list_images(root)
    assert classes == ["c0", "c1"] and samples == plain  # each real file once, in order
    assert len({os.path.realpath(p) for p, _ in samples}) == len(samples) == 12


def test_class_folders_that_differ_are_named(tmp_path: Path) -> None:
    from compressor.data import _imagefolder_dir
    from tests.helpers import write_image_folder

    write_image_folder(tmp_path / "d" / "train", classes=3, per_class=2)
    write_image_folder(tmp_path / "d" / "test", classes=2, per_class=2)
    (tmp_path / "d" / "test" / "c1").rename(tmp_path / "d" / "test" / "cat")
    with pytest.raises(CompressorError, match=r"only in train/: c1, c2; only in test/: cat"):
        _imagefolder_dir(tmp_path / "d", 0.1)


def test_a_ratio_is_corrected_for_rounding_or_its_miss_is_said(tmp_path: Path) -> None:
    """--ratio 0.2 with --round-to 8 removed 16 of 144 channels (11%) without a word;
    now the asked fraction is corrected, and what cannot be met is said and recorded."""
    res = CliRunner().invoke(
        cli, ["prune", str(MODEL), "--ratio", "0.2", "-o", str(tmp_path / "a.pt"), "--json"]
    )
    assert res.exit_code == 0, res.stderr
    result = json.loads(res.stdout)
    got = result["removed_channels"] / result["prunable_channels"]
    assert abs(got - 0.2) < abs(16 / 144 - 0.2)  # closer than the uncorrected plan
    assert result["target_miss"].startswith("asked 20.0% of the channels, removed 22.2%")
    assert "Warning: target missed: asked 20.0%" in res.stderr
    assert sum(a["chosen"] for a in result["target_attempts"]) == 1
    res = CliRunner().invoke(
        cli,
        [
            "prune",
            str(MODEL),
            "--ratio",
            "0.2",
            "--round-to",
            "1",
            "-o",
            str(tmp_path / "b.pt"),
            "--json",
        ],
    )
    result = json.loads(res.stdout)
    got = result["removed_channels"] / result["prunable_channels"]
    assert abs(got - 0.2) <= 0.02 and result["target_miss"] is None and "Warning" not in res.stderr


def test_a_folder_with_only_train_is_not_read_as_one_class(tmp_path: Path) -> None:
    from tests.helpers import write_image_folder

    write_image_folder(tmp_path / "d" / "train", classes=3, per_class=2)
    res = CliRunner().invoke(cli, ["check-data", str(tmp_path / "d")])
    assert res.exit_code == 1 and res.stderr.count("\n") == 1, res.stderr
    assert (
        f"holds only a train/ folder, which would be read as one class: give --data {tmp_path / 'd' / 'train'}"
        in res.stderr
    )


KILL_ARGS = ["--method", "l1l2", "--data", "mnist15k", "--reg-epochs", "1", "--ft-epochs", "1"]
KILL_ARGS += ["--target-macs", "0.6", "--seed", "0", "--threads", "1"]


def _compress_cmd(out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "compressor",
        "compress",
        str(MODEL),
        *KILL_ARGS,
        "-o",
        str(out),
        *extra,
    ]


def _figures(out: Path) -> dict[str, Any]:
    from tests.behaviour import weights_digest

    report = json.loads((out / "report.json").read_text())
    return {
        "weights": weights_digest(out / "model.pt"),
        "compressed": {k: report["compressed"][k] for k in ("test_top1", "val_top1", "macs")},
        "epochs": report["epochs"],
    }


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("ref") / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([*_compress_cmd(out), "-q"], check=True, env=env, capture_output=True)
    return _figures(out)


# CI's end-to-end tier kills mid-training; the other stages run in the slow tier
# (`-m slow`), which keeps `.ci/run` under its 20 minutes
@pytest.mark.parametrize(
    "stage",
    [
        pytest.param("regularize", marks=pytest.mark.e2e),
        pytest.param("export", marks=pytest.mark.slow),
        pytest.param("latency", marks=pytest.mark.slow),
    ],
)
def test_kill_9_at_a_stage_then_resume_gives_the_uninterrupted_result(
    stage: str, tmp_path: Path, uninterrupted: dict[str, Any]
) -> None:
    """kill -9 once the stage has begun (mid-epoch for the training stages), then the same
    command with --resume: the weights and figures of an uninterrupted run, the dead run's
    lock taken over, and no temporary file left."""
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(_compress_cmd(out), stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    for line in proc.stderr:
        if f"] {stage}" in line or (stage == "export" and "export ONNX" in line):
            break
    time.sleep(1.5 if stage == "regularize" else 0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    res = subprocess.run(
        _compress_cmd(out, "--resume", "-q"), capture_output=True, text=True, env=env
    )
    assert res.returncode == 0, res.stderr
    assert _figures(out) == uninterrupted
    assert not lock_path(out).exists() and not list(out.glob(".*.tmp"))


def test_a_split_with_fewer_images_than_classes_is_a_warning_with_figures(tmp_path: Path) -> None:
    from tests.helpers import write_image_folder

    data = write_image_folder(tmp_path / "imgs", classes=3, per_class=4)  # 12 images
    res = CliRunner().invoke(
        cli,
        [
            "train",
            "smallcnn",
            "--data",
            str(data),
            "--val-split",
            "0.1",
            "--input-size",
            "16",
            "--epochs",
            "0",
            "-o",
            str(tmp_path / "m.pt"),
        ],
    )
    assert res.exit_code == 0, res.stderr
    assert (
        "the validation split holds 1 images for 3 classes, fewer than one per class" in res.stderr
    )
    assert "one image moves its top-1 by 100.0 points" in res.stderr


def test_a_truncated_onnx_file_is_one_line_for_eval_and_benchmark(
    onnx_file: Path, tmp_path: Path
) -> None:
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(onnx_file.read_bytes()[: onnx_file.stat().st_size // 2])
    for args in (["eval", str(cut), "--data", "mnist15k"], ["benchmark", str(cut)]):
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 1 and res.stderr.count("\n") == 1, res.stderr
        assert "is not a valid ONNX model" in res.stderr and "this is a bug" not in res.stderr


def test_benchmark_runs_in_the_runner_install_without_onnx(
    onnx_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A device with the `runner` extra has numpy and onnxruntime, not onnx: `benchmark`
    skips the weight check there instead of asking for the full install."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a)
    )
    res = CliRunner().invoke(
        cli, ["benchmark", str(onnx_file), "--max-seconds", "1", "--no-memory"]
    )
    assert res.exit_code == 0, res.stderr


@pytest.mark.e2e
def test_a_full_disk_at_each_stage_keeps_what_finished_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills while each stage writes the file that marks it done: every time one
    line names the file and says to free space and resume, and the resumed runs finish."""
    import errno

    import compressor.utils
    from compressor.config import DataConfig, PruneConfig, TrainConfig
    from compressor.pipeline import CompressConfig, compress

    real = os.replace
    failing: list[str] = []

    def replace(src: Any, dst: Any) -> None:
        if failing and Path(dst).name == failing[0]:
            failing.clear()
            raise OSError(errno.ENOSPC, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(compressor.utils.os, "replace", replace)
    config = CompressConfig(
        method="l1",
        data=DataConfig("mnist15k"),
        regularize=TrainConfig.create(stage="regularize", epochs=1),
        finetune=TrainConfig.create(stage="finetune", epochs=1),
        prune=PruneConfig(target_macs=0.6),
        latency_seconds=0.5,
    )
    out = tmp_path / "out"
    markers = ["regularized.pt", "pruned.pt", "model.pt", "compressed.json", "onnx.json"]
    markers += ["latency.json", "report.md"]
    for k, marker in enumerate(markers):
        failing.append(marker)
        with pytest.raises(CompressorError) as err:
            compress(MODEL, out, config, progress=False, resume=k > 0)
        text = str(err.value)
        assert "\n" not in text and f"{marker}: No space left on device" in text, text
        assert "keeps the finished stages" in text and "--resume" in text
    report = compress(MODEL, out, config, progress=False, resume=True)
    assert report["method"] == "l1" and (out / "report.md").is_file()


def test_check_data_reports_the_links_it_did_not_follow(tmp_path: Path) -> None:
    from tests.helpers import write_image_folder

    root = write_image_folder(tmp_path / "imgs", classes=2, per_class=6)
    (root / "c0" / "self").symlink_to(root / "c0", target_is_directory=True)
    res = CliRunner().invoke(cli, ["check-data", str(root), "--json"])
    assert res.exit_code == 0, res.stderr
    result = json.loads(res.stdout)
    assert result["files"] == 12 and result["skipped_links"] == [str(root / "c0" / "self")]
