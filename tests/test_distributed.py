"""Data-parallel training under torchrun (gloo, 2 CPU processes) against one process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from compressor.checkpoint import load_model
from compressor.operations import resume_path

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def _train(out: Path, data: str, *args: str, procs: int = 1) -> list[str]:
    torchrun = ["-m", "torch.distributed.run", "--nproc-per-node", str(procs), "--standalone"]
    launcher = [sys.executable, *(torchrun if procs > 1 else []), "-m", "compressor"]
    return [
        *launcher,
        "train",
        *args,
        "--data",
        data,
        "--device",
        "cpu",
        "--no-augment",
        "--seed",
        "0",
        "-o",
        str(out),
    ]


def _run(cmd: list[str], timeout: int = 600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _max_weight_gap(a: Path, b: Path) -> float:
    sa, sb = load_model(a).model.state_dict(), load_model(b).model.state_dict()
    assert sa.keys() == sb.keys()
    return max(float((sa[k].float() - sb[k].float()).abs().max()) for k in sa)


@pytest.mark.e2e
def test_two_processes_take_the_steps_of_one(tmp_path: Path, mnist_root: Path) -> None:
    """LeNet-5 has no BatchNorm: averaging the shards' gradients is the global batch's
    gradient, so two processes end where one does (up to float summation order)."""
    args = ["lenet5", "--epochs", "3", "--batch-size", "20", "--lr", "0.05"]
    runs = tmp_path / "runs"
    runs.mkdir()
    one = _run(_train(runs / "one.pt", str(mnist_root), *args))
    two = _run(_train(runs / "two.pt", str(mnist_root), *args, procs=2))
    assert _max_weight_gap(runs / "one.pt", runs / "two.pt") < 1e-4
    # rank 0 alone reports and writes: one result line, one model, one summary
    assert two.stdout.count("wrote ") == one.stdout.count("wrote ") == 1, two.stdout
    assert sorted(p.name for p in runs.iterdir()) == [
        "one.pt",
        "one.train.json",
        "two.pt",
        "two.train.json",
    ]
    last = {p: load_model(runs / p).metadata["train"]["val_top1"] for p in ("one.pt", "two.pt")}
    assert last["one.pt"] == last["two.pt"]


@pytest.mark.e2e
def test_two_processes_match_one_in_accuracy_with_batchnorm(tmp_path: Path) -> None:
    """smallcnn normalises each shard with its own statistics (without --sync-bn):
    not the same steps, the same accuracy within noise (mnist15k: 1,300 val images held
    out from the training images; one epoch of 91 steps)."""
    args = ["smallcnn", "--epochs", "1", "--batch-size", "128", "--lr", "0.05"]
    _run(_train(tmp_path / "one.pt", "mnist15k", *args))
    _run(_train(tmp_path / "two.pt", "mnist15k", *args, procs=2))
    top1 = {p: load_model(tmp_path / p).metadata["train"]["val_top1"] for p in ("one.pt", "two.pt")}
    assert min(top1.values()) > 90, top1  # chance is 10%
    assert abs(top1["one.pt"] - top1["two.pt"]) <= 1.0, top1


@pytest.mark.e2e
def test_sync_bn_takes_the_steps_of_one_process_with_batchnorm(
    tmp_path: Path, mnist_root: Path
) -> None:
    """With --sync-bn the shards are normalised with the global batch's statistics, and
    the gradients flow back through them: two processes end where one does, as LeNet-5
    does. Without it they do not (each shard its own statistics): the test can fail."""
    args = ["smallcnn", "--epochs", "2", "--batch-size", "20", "--lr", "0.05"]
    runs = tmp_path / "runs"
    runs.mkdir()
    _run(_train(runs / "one.pt", str(mnist_root), *args))
    two = _run(_train(runs / "synced.pt", str(mnist_root), *args, "--sync-bn", procs=2))
    _run(_train(runs / "shards.pt", str(mnist_root), *args, procs=2))
    synced = _max_weight_gap(runs / "one.pt", runs / "synced.pt")
    shards = _max_weight_gap(runs / "one.pt", runs / "shards.pt")
    assert synced < 1e-4, (synced, shards)
    assert shards > 100 * synced, (synced, shards)
    assert two.stderr.count("layers synchronised") == 1, two.stderr[-2000:]
    # one process has nothing to synchronise: the flag changes nothing
    _run(_train(runs / "one_flag.pt", str(mnist_root), *args, "--sync-bn"))
    assert _max_weight_gap(runs / "one.pt", runs / "one_flag.pt") == 0.0
    # the saved model holds plain BatchNorm layers (pruning and export rely on them)
    kinds = {type(m).__name__ for m in load_model(runs / "synced.pt").model.modules()}
    assert "BatchNorm2d" in kinds and not any(k.startswith("Synced") for k in kinds), kinds


@pytest.mark.e2e
def test_interrupted_torchrun_resumes_to_the_same_weights(tmp_path: Path) -> None:
    args = ["lenet5", "--epochs", "2", "--batch-size", "256", "--lr", "0.05"]
    _run(_train(tmp_path / "whole.pt", "mnist15k", *args, procs=2))
    out = tmp_path / "cut.pt"
    cmd = _train(out, "mnist15k", *args, procs=2)
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV)
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if line.startswith("epoch 1/2"):
            break
    assert lines and lines[-1].startswith("epoch 1/2"), lines
    proc.send_signal(signal.SIGINT)  # torchrun passes it on to both ranks
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0, err
    assert "interrupted" in err, err[-3000:]
    assert resume_path(out).is_file() and not out.exists()
    state = torch.load(resume_path(out), weights_only=True)
    assert state["step"] > 0 or state["epoch"] == 1
    _run([*cmd, "--resume"])
    assert _max_weight_gap(out, tmp_path / "whole.pt") == 0.0


@pytest.mark.e2e
@pytest.mark.parametrize("method", ["l1", "l0sgl", "hgs"])
def test_compress_under_torchrun_trains_both_stages_data_parallel(
    tmp_path: Path, mnist_root: Path, method: str
) -> None:
    """LeNet-5 (no BatchNorm), a fixed strength: two processes regularize, prune and
    fine-tune to the weights one process gets (l0sgl's auxiliary variables follow the
    weights; hgs scores on rank 0); rank 0 alone writes OUTDIR and reports."""

    def cmd(out: Path, procs: int) -> list[str]:
        train = _train(out, str(mnist_root), procs=procs)
        at = train.index("train")
        return [
            *train[:at],
            "compress",
            "models/lenet5-mnist15k.pt",
            *["--method", method, "--lambda", "1e-4", "--ratio", "0.3", "--batch-size", "20"],
            *["--reg-epochs", "2", "--ft-epochs", "2", "--lr", "0.02", "--ft-lr", "0.02"],
            "--sync-bn",  # accepted by compress; LeNet-5 has no BatchNorm to synchronise
            *train[at + 1 :],
        ]

    one = _run(cmd(tmp_path / "one", 1))
    two = _run(cmd(tmp_path / "two", 2))
    assert two.stdout.count("wrote ") == one.stdout.count("wrote ") == 1, two.stdout
    assert not (tmp_path / "two.partial").exists()
    assert _max_weight_gap(tmp_path / "one" / "model.pt", tmp_path / "two" / "model.pt") < 1e-4
    import json

    reports = [json.loads((tmp_path / d / "report.json").read_text()) for d in ("one", "two")]
    assert reports[0]["compressed"]["test_top1"] == reports[1]["compressed"]["test_top1"]
    assert reports[1]["onnx"]["top1_agreement"] == 100.0


@pytest.mark.e2e
@pytest.mark.parametrize("procs", [2])
def test_batch_that_does_not_split_is_one_line(
    tmp_path: Path, mnist_root: Path, procs: int
) -> None:
    cmd = _train(tmp_path / "m.pt", str(mnist_root), "lenet5", "--batch-size", "15", procs=procs)
    done = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode != 0
    # every rank refuses; rank 0 alone says so
    assert done.stderr.count("Error: --batch-size 15 does not split into 2 processes") == 1
    # refused before the data is read: a missing folder is not what it reports
    missing = str(tmp_path / "no-such-data")
    cmd = _train(tmp_path / "m.pt", missing, "lenet5", "--batch-size", "15", procs=procs)
    done = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
    assert "does not split into 2 processes" in done.stderr
    assert "no-such-data" not in done.stderr
    assert "Traceback" not in done.stderr.split("Error:")[0][-200:]
    assert not (tmp_path / "m.pt").exists()
