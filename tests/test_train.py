from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from compressor.checkpoint import load_model
from compressor.config import DataConfig, TrainConfig
from compressor.data import load_data
from compressor.evaluation import evaluate
from compressor.methods.base import Regularizer
from compressor.operations import resume_path, train_model
from compressor.training import TrainingInterrupted, fit


def _weights_equal(a: Path, b: Path) -> bool:
    sa, sb = load_model(a).model.state_dict(), load_model(b).model.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_training_lowers_the_loss(mnist_root: Path) -> None:
    torch.manual_seed(0)
    from compressor.archs import build_model

    bundle = load_data(DataConfig(str(mnist_root)))
    model = build_model("smallcnn", num_classes=10)
    result = fit(
        model,
        bundle,
        TrainConfig(epochs=8, lr=0.05, device="cpu"),
        # no augmentation: shifting would move the class-defining band
        DataConfig(str(mnist_root), batch_size=10, augment=False),
        progress=False,
    )
    losses = [h.train_loss for h in result.history]
    assert losses[-1] < 0.5 * losses[0]
    # the band pattern is easy: far above 10% chance on the 20 test images (the 6 validation
    # images held out from the 60 training images are too few to read)
    test = evaluate(model, bundle.test, bundle.preprocess, device=torch.device("cpu"))
    assert test["images"] == 20 and test["top1"] > 50


def test_lenet5_reaches_97_percent_on_mnist15k(tmp_path: Path) -> None:
    out = tmp_path / "lenet5.pt"
    summary = train_model(
        "lenet5",
        data=DataConfig("mnist15k", augment=True),
        train=TrainConfig(epochs=2, lr=0.05, device="cpu"),
        output=out,
        progress=False,
    )
    assert summary["history"][-1]["val_top1"] > 97.0
    loaded = load_model(out)
    assert loaded.metadata["train"]["val_top1"] == summary["history"][-1]["val_top1"]
    assert loaded.preprocess is not None and loaded.preprocess.input_size == (1, 28, 28)
    assert (tmp_path / "lenet5.train.json").is_file()
    assert not resume_path(out).exists()  # removed once training completed


def _small_run(tmp_path: Path, name: str, **kwargs) -> tuple[Path, dict]:
    out = tmp_path / f"{name}.pt"
    summary = train_model(
        "smallcnn",
        data=DataConfig("mnist15k", batch_size=256, augment=True),
        train=TrainConfig(epochs=2, lr=0.05, device="cpu", seed=3),
        output=out,
        progress=False,
        **kwargs,
    )
    return out, summary


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    return _small_run(tmp_path_factory.mktemp("ref"), "ref")


@pytest.mark.e2e
def test_seeded_runs_are_identical(tmp_path: Path, uninterrupted: tuple[Path, dict]) -> None:
    out, summary = _small_run(tmp_path, "again")
    assert _weights_equal(out, uninterrupted[0])
    assert summary["history"][-1]["val_top1"] == uninterrupted[1]["history"][-1]["val_top1"]


@pytest.mark.e2e
@pytest.mark.parametrize("stop_after", [17, 50])  # mid-epoch 1, and exactly at the epoch boundary
def test_interrupt_and_resume_gives_identical_weights(
    tmp_path: Path, uninterrupted: tuple[Path, dict], stop_after: int
) -> None:
    out = tmp_path / "run.pt"
    with pytest.raises(TrainingInterrupted, match="resume"):
        _small_run(tmp_path, "run", stop_after_steps=stop_after)
    assert resume_path(out).is_file() and not out.exists()
    out, summary = _small_run(tmp_path, "run", resume=True)
    assert _weights_equal(out, uninterrupted[0])
    ref_hist = uninterrupted[1]["history"]
    assert [h["val_top1"] for h in summary["history"]] == [h["val_top1"] for h in ref_hist]
    # the resumed epoch's training figures cover its steps before the interrupt too
    for key in ("train_loss", "train_top1"):
        assert [h[key] for h in summary["history"]] == pytest.approx([h[key] for h in ref_hist])


def test_resume_refuses_changed_settings(tmp_path: Path) -> None:
    with pytest.raises(TrainingInterrupted):
        _small_run(tmp_path, "run", stop_after_steps=5)
    with pytest.raises(Exception, match=r"different settings: lr was 0\.05"):
        train_model(
            "smallcnn",
            data=DataConfig("mnist15k", batch_size=256, augment=True),
            train=TrainConfig(epochs=2, lr=0.1, device="cpu", seed=3),
            output=tmp_path / "run.pt",
            resume=True,
            progress=False,
        )


@pytest.mark.e2e
def test_sigint_saves_state_and_resume_matches(
    tmp_path: Path, uninterrupted: tuple[Path, dict]
) -> None:
    out = tmp_path / "sig.pt"
    cmd = [
        sys.executable,
        "-m",
        "compressor",
        "train",
        "smallcnn",
        "--data",
        "mnist15k",
        "--batch-size",
        "256",
        "--epochs",
        "2",
        "--lr",
        "0.05",
        "--seed",
        "3",
        "--device",
        "cpu",
        "--augment",  # the reference run augments (augment=True); 2 epochs would not
        "-o",
        str(out),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    # wait for the end of epoch 1, so the signal lands inside epoch 2 with handlers installed
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if line.startswith("epoch 1/2"):
            break
    assert lines and lines[-1].startswith("epoch 1/2"), lines
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "interrupted" in err
    assert resume_path(out).is_file() and not out.exists()
    done = subprocess.run(
        [*cmd, "--resume", "-q"], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert _weights_equal(out, uninterrupted[0])


class _FeaturePenalty(Regularizer):
    """Penalises the mean square of the residual block's output; counts its hook calls."""

    name = "test-feature-penalty"
    paper = "none (test double)"

    def __init__(self) -> None:
        self.calls = {"setup": 0, "after_backward": 0, "after_step": 0}
        self.grad_seen = False

    def setup(self, model, *, example_input, groups=None, train_size=1):
        self.calls["setup"] += 1
        assert train_size == 54  # 60 training images, 6 held out as the validation split
        assert example_input.shape == (1, 1, 28, 28)

    def feature_modules(self, model):
        return {"block": model[7]}

    def penalty(self, model, features):
        assert set(features) == {"block"}
        return 0.1 * features["block"].pow(2).mean()

    def after_backward(self, model):
        self.calls["after_backward"] += 1
        self.grad_seen = self.grad_seen or model[7].conv1.weight.grad is not None

    def after_step(self, model, *, epoch, step):
        self.calls["after_step"] += 1

    def state_dict(self):
        return {"calls": dict(self.calls)}


def test_regularizer_contract(mnist_root: Path) -> None:
    from compressor.archs import build_model

    torch.manual_seed(0)
    bundle = load_data(DataConfig(str(mnist_root)))
    model = build_model("smallcnn", num_classes=10)
    reg = _FeaturePenalty()
    data = DataConfig(str(mnist_root), batch_size=20, augment=True)
    config = TrainConfig(epochs=2, lr=0.01, device="cpu")
    result = fit(model, bundle, config, data, regularizer=reg, progress=False)
    steps = 2 * (54 // 20)
    assert reg.calls == {"setup": 1, "after_backward": steps, "after_step": steps}
    assert reg.grad_seen
    assert all(h.train_penalty > 0 for h in result.history)
    # hooks are removed after training: a forward pass no longer feeds the penalty
    assert not model[7]._forward_hooks


def test_distillation_loss_blends_labels_and_teacher() -> None:
    import torch.nn.functional as F

    from compressor.training import task_loss

    torch.manual_seed(0)
    logits, teacher, y = torch.randn(16, 5), torch.randn(16, 5), torch.randint(0, 5, (16,))
    ce = F.cross_entropy(logits, y)
    assert torch.allclose(task_loss(logits, [], y, TrainConfig(), teacher), ce)  # off by default
    # a student that already matches the teacher pays only the labels' share
    same = task_loss(logits, [], y, TrainConfig(distill=0.25), logits.clone())
    assert torch.allclose(same, 0.75 * ce)
    # the soft term: T^2 * KL(teacher_T || student_T), by hand
    t = 2.0
    p = F.softmax(teacher / t, 1)
    kl = (p * (p.log() - F.log_softmax(logits / t, 1))).sum(1).mean()
    got = task_loss(logits, [], y, TrainConfig(distill=1.0, temperature=t), teacher)
    assert torch.allclose(got, t * t * kl, atol=1e-6)


def test_distillation_moves_the_student_towards_the_teacher(mnist_root: Path) -> None:
    """Trained on the teacher's outputs alone (distill 1), a student ends closer to the
    teacher than the same student trained on labels; without a teacher fit refuses."""
    import torch.nn.functional as F

    from compressor.archs import build_model
    from compressor.errors import CompressorError

    data = DataConfig(str(mnist_root), batch_size=10, augment=False)
    bundle = load_data(data)
    torch.manual_seed(1)
    teacher = build_model("smallcnn", num_classes=10)  # random: its outputs are not the labels
    torch.manual_seed(0)
    start = build_model("smallcnn", num_classes=10)
    from compressor.data import BatchTransform

    raw = torch.stack([bundle.val[i][0] for i in range(len(bundle.val))])
    x = BatchTransform(bundle.preprocess, flip=False, device=torch.device("cpu"))(raw)

    def gap(model: torch.nn.Module) -> float:
        model.eval()
        with torch.no_grad():
            t = F.log_softmax(teacher(x), 1)
            s = F.log_softmax(model(x), 1)
        return float(F.kl_div(s, t, reduction="batchmean", log_target=True))

    runs = {}
    for distill in (0.0, 1.0):
        student = build_model("smallcnn", num_classes=10)
        student.load_state_dict(start.state_dict())
        config = TrainConfig(epochs=3, lr=0.05, device="cpu", distill=distill, temperature=1.0)
        fit(student, bundle, config, data, progress=False, teacher=teacher)
        runs[distill] = gap(student)
    assert runs[1.0] < 0.5 * runs[0.0], runs
    with pytest.raises(CompressorError, match="needs a teacher"):
        fit(start, bundle, TrainConfig(epochs=1, device="cpu", distill=0.5), data, progress=False)
    with pytest.raises(CompressorError, match="--distill must be in"):
        TrainConfig(distill=1.5)
