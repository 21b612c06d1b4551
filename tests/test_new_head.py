"""`compress` from a pretrained model in one command: a model whose classifier does not fit
the data, or a backbone without one, gets a new head; the regularize stage is then the task
fine-tuning (the growing strength rule, epochs from ``NEW_HEAD_EPOCHS`` unless given), and
the report says the baseline is no task model and compares with ``--reference``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from compressor.archs import build_model
from compressor.cli import cli
from compressor.config import NEW_HEAD_EPOCHS, DataConfig, PruneConfig, TrainConfig
from compressor.errors import CompressorError
from compressor.pipeline import CompressConfig, compress, partial_dir
from tests.helpers import write_image_folder
from tests.schemas import validate


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("data") / "imgs", classes=3, per_class=10)


def _five_classes(path: Path) -> Path:
    torch.manual_seed(0)
    torch.save(build_model("smallcnn", num_classes=5, in_channels=3).state_dict(), path)
    return path


def _config(folder: Path, unset: tuple[str, ...] = ()) -> CompressConfig:
    return CompressConfig(
        method="l1l2",
        data=DataConfig(str(folder), input_size=(3, 20, 20), val_split=0.3, batch_size=8),
        regularize=TrainConfig.create(stage="regularize", epochs=1),
        finetune=TrainConfig.create(stage="finetune", epochs=1),
        prune=PruneConfig(ratio=0.25, round_to=1),
        latency_seconds=0.5,
        unset=unset,
    )


def test_new_head_defaults_replace_only_what_was_left_unset(folder: Path) -> None:
    config = _config(folder, unset=("reg_epochs", "augment"))
    assert config.data.augment is False  # 1-epoch stages
    new = config.for_new_head()
    assert (new.regularize.epochs, new.finetune.epochs) == (NEW_HEAD_EPOCHS[0], 1)
    assert new.data.augment is True  # decided again for 16 epochs
    kept = _config(folder).for_new_head()
    assert (kept.regularize.epochs, kept.finetune.epochs, kept.data.augment) == (1, 1, False)
    plain = dataclasses.replace(_config(folder, unset=("reg_epochs", "ft_epochs")), method="none")
    first = plain.for_new_head()  # no penalty: prune the pretrained model, then fine-tune all
    assert (first.regularize.epochs, first.finetune.epochs) == (0, sum(NEW_HEAD_EPOCHS))


def test_a_model_with_other_classes_is_compressed_with_a_new_head(
    tmp_path: Path, folder: Path
) -> None:
    model = _five_classes(tmp_path / "five.pt")
    ref = tmp_path / "ref.pt"
    res = CliRunner().invoke(
        cli,
        [
            *("train", "smallcnn", "--data", str(folder), "--input-size", "20"),
            *("--val-split", "0.3", "--batch-size", "8", "--epochs", "1", "-o", str(ref), "-q"),
        ],
    )
    assert res.exit_code == 0, res.stderr
    logs: list[str] = []
    out = tmp_path / "out"
    report = compress(
        model, out, _config(folder), arch="smallcnn", reference=ref, progress=False, log=logs.append
    )
    # a report of another kind of run than tests/schemas.py's sample: a new head, a
    # reference, the growing rule, no test split (its keys null)
    validate("report", json.loads((out / "report.json").read_text()))
    assert report["baseline"]["test_top1"] is None
    start = report["start"]
    assert start["new_head"] and not start["baseline_is_task_model"]
    assert (start["classes_in_weights"], start["head_replaced"]) == (5, ["14"])
    assert report["strength"]["rule"] == "growing"  # a new head: no accuracy to hold
    assert all(p["val_top1"] is None for p in report["strength"]["history"][1:])
    assert "replaced the classifier head (14): 5 classes in the weights, 3 in the data" in logs
    ref_scores = start["reference"]
    assert (
        ref_scores["model"] == str(ref)
        and ref_scores["val_images"] == report["baseline"]["val_images"]
    )
    assert ref_scores["macs"] == report["baseline"]["macs"]  # the same dense architecture
    text = (out / "report.md").read_text()
    assert "scores an untrained head, not a task model" in text
    assert f"Against the dense reference `{ref}`: val top-1 {ref_scores['val_top1']:.2f}%" in text
    assert json.loads((out / "config.json").read_text())["reference"] == str(ref)


def test_a_backbone_without_classifier_gets_a_new_head(tmp_path: Path, folder: Path) -> None:
    from compressor.operations import load_start

    sd = build_model("mobilenet_v3_small", num_classes=5).state_dict()
    path = tmp_path / "backbone.pt"
    torch.save({k: v for k, v in sd.items() if not k.startswith("classifier.3.")}, path)
    data = DataConfig(str(folder), input_size=(3, 32, 32))
    loaded, _, start = load_start(path, data, arch="mobilenet_v3_small")
    assert start.backbone and start.head_replaced == ["classifier.3"]
    assert loaded.num_classes == 3 and loaded.model.classifier[3].out_features == 3
    with pytest.raises(CompressorError, match="--arch"):
        load_start(path, data)  # a bare state_dict names no architecture: the file's own error


def test_bad_starts_and_references_write_nothing(tmp_path: Path, folder: Path) -> None:
    model = _five_classes(tmp_path / "five.pt")
    out = tmp_path / "out"
    with pytest.raises(CompressorError, match=r"ref\.pt has 5 outputs but the data has 3 classes"):
        compress(
            model,
            out,
            _config(folder),
            arch="smallcnn",
            reference=_five_classes(tmp_path / "ref.pt"),
        )
    with pytest.raises(CompressorError, match=r"--reference .*missing\.pt: no such file"):
        compress(model, out, _config(folder), arch="smallcnn", reference=tmp_path / "missing.pt")
    assert not out.exists() and not partial_dir(out).exists()
    res = CliRunner().invoke(
        cli,
        [
            "compress",
            "smallcnn",
            "--data",
            str(folder),
            "--method",
            "l1l2",
            "--ratio",
            "0.3",
            "-o",
            str(out),
        ],
    )
    assert (
        res.exit_code == 1
        and "smallcnn is an architecture, not a file: add --weights" in res.stderr
    )
    assert "Traceback" not in res.output + res.stderr and not out.exists()


def test_a_trained_model_with_no_stage_budgeted_is_pruned_then_fine_tuned(folder: Path) -> None:
    """The trained regime's evidence: with --reg-epochs unset and a target, no stage, and
    fine-tuning gets every epoch; a threshold selection keeps its stage."""
    from compressor.config import FINETUNE_EPOCHS, REGULARIZE_EPOCHS

    every = REGULARIZE_EPOCHS + FINETUNE_EPOCHS
    config = _config(folder, unset=("reg_epochs", "ft_epochs", "augment")).for_trained()
    assert (config.regularize.epochs, config.finetune.epochs) == (0, every)
    assert config.data.augment is (every >= 10)
    given = _config(folder, unset=("ft_epochs",))  # --reg-epochs 1 given: the stage runs
    assert given.for_trained() == given
    zero = dataclasses.replace(
        _config(folder, unset=("ft_epochs",)),
        regularize=TrainConfig.create(stage="regularize", epochs=0),
    )
    assert zero.for_trained().finetune.epochs == every  # no stage: every epoch to fine-tuning
    threshold = CompressConfig(
        method="l1l2",
        data=DataConfig(str(folder)),
        strength=None,
        unset=("reg_epochs", "ft_epochs"),
    )
    assert threshold.prune.threshold is not None and threshold.for_trained() == threshold


def test_the_report_says_why_no_stage_ran(tmp_path: Path, folder: Path) -> None:
    torch.manual_seed(0)
    model = tmp_path / "three.pt"
    torch.save(build_model("smallcnn", num_classes=3, in_channels=3).state_dict(), model)
    config = dataclasses.replace(
        _config(folder, unset=("reg_epochs", "ft_epochs")),
        finetune=TrainConfig.create(stage="finetune", epochs=1),
        unset=("reg_epochs",),
    )
    report = compress(model, tmp_path / "out", config, arch="smallcnn", progress=False)
    assert report["epochs"] == {"regularize": 0, "finetune": 1}
    assert not report["start"]["new_head"] and report["start"]["baseline_is_task_model"]
    text = (tmp_path / "out" / "report.md").read_text()
    assert "No regularize stage ran: `l1l2`'s scores chose the channels" in text
