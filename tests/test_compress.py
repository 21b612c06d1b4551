"""`compress` end to end on the bundled data (a small residual CNN, one epoch per stage)."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from compressor.cli import cli
from compressor.config import DataConfig, PruneConfig, TrainConfig
from compressor.errors import CompressorError
from compressor.onnx_export import onnx_metadata
from compressor.pipeline import CompressConfig, compress, partial_dir
from compressor.training import TrainingInterrupted

MODEL = Path(__file__).parent.parent / "models" / "smallcnn-mnist15k.pt"
ARGS = [
    "--method",
    "hgs",
    "--data",
    "mnist15k",
    "--reg-epochs",
    "1",
    "--ft-epochs",
    "1",
    "--target-macs",
    "0.6",
]


def _config() -> CompressConfig:
    """ARGS through the library: the defaults are the CLI's (checked below)."""
    return CompressConfig(
        method="hgs",
        data=DataConfig("mnist15k"),
        regularize=TrainConfig.create(stage="regularize", epochs=1),
        finetune=TrainConfig.create(stage="finetune", epochs=1),
        prune=PruneConfig(target_macs=0.6),
        latency_seconds=1.0,
    )


def test_the_cli_builds_the_librarys_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """`compress` on the command line and `compressor.compress` with a CompressConfig of
    the same choices run the same job: the CLI holds no defaults of its own."""
    import compressor.pipeline

    seen: list[CompressConfig] = []

    def capture(model: Path, outdir: Path, config: CompressConfig, **_kw: object) -> dict:
        seen.append(config)
        raise CompressorError("captured")

    monkeypatch.setattr(compressor.pipeline, "compress", capture)
    res = CliRunner().invoke(cli, ["compress", str(MODEL), *ARGS, "-o", "unused", "-q"])
    assert res.exit_code == 1 and "captured" in res.stderr
    (built,) = seen
    expected = _config()
    # the CLI says what was left to defaults, which a start with a new head may change
    assert built == CompressConfig(
        **{**expected.__dict__, "latency_seconds": 10.0, "unset": ("augment",)}
    )
    assert built.data.augment is False  # 1-epoch stages: no augmentation
    assert (built.regularize.lr, built.finetune.lr) == (0.01, 0.02)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("compress") / "out"
    res = CliRunner().invoke(cli, ["compress", str(MODEL), *ARGS, "-o", str(out), "--json", "-q"])
    assert res.exit_code == 0, res.stderr
    return out, json.loads(res.stdout)


@pytest.mark.e2e
def test_outputs_and_report(run: tuple[Path, dict]) -> None:
    out, report = run
    for name in (
        "model.onnx",
        "model.pt",
        "baseline.onnx",
        "report.json",
        "report.md",
        "channels.png",
        "training.png",
        "config.json",
    ):
        assert (out / name).is_file(), name
    assert not partial_dir(out).exists()
    assert json.loads((out / "report.json").read_text())["compressed"] == report["compressed"]
    for key in (
        "method",
        "hyperparameters",
        "baseline",
        "compressed",
        "onnx",
        "latency",
        "layers",
        "stages",
    ):
        assert key in report
    assert report["method"] == "hgs" and report["hyperparameters"]["lam"] == 1e-3
    for side in ("baseline", "compressed"):
        assert {"val_top1", "test_top1", "val_images", "test_images", "params", "macs"} <= set(
            report[side]
        )
        # mnist15k: val is held out from the 13,000 training images; the 2,000 test images
        # are scored only at the end
        assert (report[side]["val_images"], report[side]["test_images"]) == (1300, 2000)
    assert report["data"]["val_held_out_from_train"] and report["data"]["test_images"] == 2000
    assert report["compressed"]["macs"] <= 0.6 * report["baseline"]["macs"]
    assert report["compressed"]["params"] < report["baseline"]["params"]
    assert report["compressed"]["test_top1"] > 95.0 and report["compressed"]["val_top1"] > 95.0
    md = (out / "report.md").read_text()
    assert "| test top-1 (%, 2000 images, scored only here) |" in md
    assert "| val top-1 (%, 1300 images, steers --lambda auto) |" in md
    onnx_r = report["onnx"]
    assert onnx_r["opset"] >= 17 and onnx_r["rel_diff"] < 1e-4 and onnx_r["top1_agreement"] == 100.0
    assert {"path", "max_abs_diff", "top1_agreement"} <= set(onnx_r)
    lat = report["latency"]
    assert lat["baseline_ms"] > 0 and lat["compressed_ms"] > 0 and lat["threads"] == 1
    assert lat["speedup"] == pytest.approx(lat["baseline_ms"] / lat["compressed_ms"])
    lo, hi = lat["speedup_ci95"]
    assert lo < hi and min(lat["runs"]) >= 20 and min(lat["seconds"]) >= 0.9
    assert all(0 < m < 200 for m in lat["memory_mb"])
    assert lat["file_mb"][1] < lat["file_mb"][0]  # fewer parameters, smaller file
    assert (
        "| peak memory (MB, resident-set growth, onnxruntime) |" in (out / "report.md").read_text()
    )
    assert any(r["after"] < r["before"] for r in report["layers"])
    # what the cut kept before fine-tuning, and what the removed channels held
    pruning = report["pruning"]
    assert 0.0 <= pruning["val_top1_after_prune"] <= 100.0
    assert 0.0 < pruning["removed_share"] < 1.0
    assert "right after the cut, before fine-tuning" in (out / "report.md").read_text()
    assert {"baseline", "regularize", "prune", "finetune", "export"} <= set(report["stages"])
    onnx.checker.check_model(onnx.load(str(out / "model.onnx")))
    assert onnx_metadata(out / "model.onnx")["method"] == "hgs"


@pytest.mark.e2e
def test_report_shows_the_automatic_strength(run: tuple[Path, dict]) -> None:
    """--lambda auto is the default: every check is in the report, and the plot shows it."""
    out, report = run
    s = report["strength"]
    points = s["history"]
    assert points[0]["action"] == "calibrate" and len(points) >= 2
    assert {"step", "epoch", "strength", "val_top1", "share", "action"} <= set(points[0])
    # the plan is hgs's own, made after its penalty acted on the whole network: the stage
    # does not start focused on the dense model's plan
    assert points[0]["phase"] == "global" and "focused_at" in s
    assert all(p["phase"] == "focus" for p in points if p["epoch"] > (s["focused_at"] or 9))
    assert s["final_strength"] == points[-1]["strength"] > 0
    assert 0.0 <= s["final_share"] <= 1.0  # the 0.6 MAC target gives a share to report
    assert s["baseline_top1"] - s["final_top1"] <= s["config"]["max_drop"] + 1e-9
    # the controller's subset follows the rule: sd of one top-1 at most max_drop / 3
    assert 0 < s["val_images"] <= 1300 and s["top1_standard_error"] <= s["config"]["max_drop"] / 3
    if s["val_images"] == report["baseline"]["val_images"]:  # the baseline stage's reading
        assert s["baseline_top1"] == report["baseline"]["val_top1"]
    assert report["history"]["regularize"][-1]["strength"] == pytest.approx(s["final_strength"])
    assert "Strength (`--lambda auto`)" in (out / "report.md").read_text()
    assert report["pruning"]["score_seconds"] >= 0


@pytest.mark.e2e
@pytest.mark.parametrize("early", [True, False])
def test_early_prune_hands_the_regularize_epochs_to_fine_tuning(
    tmp_path: Path, early: bool
) -> None:
    """`none` has no penalty: the target's share cannot fall, so the regularize stage ends
    after its first epoch and fine-tuning gets its other epoch (the default), unless
    --no-early-prune."""
    args = ["--method", "none", "--data", "mnist15k", "--reg-epochs", "2", "--ft-epochs", "1"]
    args += ["--target-macs", "0.5", "--json", "-q"]
    args += [] if early else ["--no-early-prune"]
    res = CliRunner().invoke(cli, ["compress", str(MODEL), *args, "-o", str(tmp_path / "o")])
    assert res.exit_code == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["epochs"] == (
        {"regularize": 1, "finetune": 2} if early else {"regularize": 2, "finetune": 1}
    )
    assert report["strength"]["stopped_after"] == (1 if early else None)
    assert len(report["strength"]["epoch_shares"]) == (2 if early else 3)
    assert ("Early prune" in (tmp_path / "o" / "report.md").read_text()) is early


@pytest.mark.e2e
def test_a_fixed_lambda_keeps_its_strength(tmp_path: Path) -> None:
    config = _config()
    config = CompressConfig(
        **{**config.__dict__, "method_options": {"lam": 1e-4}, "strength": None}
    )
    report = compress(MODEL, tmp_path / "out", config, progress=False)
    assert report["strength"] is None and report["hyperparameters"]["lam"] == 1e-4
    assert report["history"]["regularize"][-1]["strength"] == 1.0


@pytest.mark.e2e
def test_existing_outdir_is_refused(run: tuple[Path, dict]) -> None:
    out, _ = run
    before = (out / "report.json").read_bytes()
    res = CliRunner().invoke(cli, ["compress", str(MODEL), *ARGS, "-o", str(out)])
    assert res.exit_code == 1 and "exists; pass --force" in res.stderr
    assert (out / "report.json").read_bytes() == before


@pytest.mark.e2e
def test_resume_reproduces_the_uninterrupted_figures(
    tmp_path: Path, run: tuple[Path, dict]
) -> None:
    _, reference = run
    out = tmp_path / "out"
    with pytest.raises(TrainingInterrupted):
        compress(MODEL, out, _config(), progress=False, stop_after_steps=20)
    assert partial_dir(out).is_dir() and not out.exists()  # nothing half-written in OUTDIR
    report = compress(MODEL, out, _config(), progress=False, resume=True)
    assert out.is_dir() and not partial_dir(out).exists()
    for side in ("baseline", "compressed"):
        assert report[side] == reference[side]
    assert report["layers"] == reference["layers"]
    assert report["strength"]["history"] == reference["strength"]["history"]
    assert report["pruning"]["removed_channels"] == reference["pruning"]["removed_channels"]


@pytest.mark.e2e
def test_resume_with_other_settings_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(TrainingInterrupted):
        compress(MODEL, out, _config(), progress=False, stop_after_steps=5)
    other = _config()
    other = CompressConfig(**{**other.__dict__, "method": "l1l2"})
    from compressor.errors import CompressorError

    with pytest.raises(CompressorError, match="different settings"):
        compress(MODEL, out, other, progress=False, resume=True)


@pytest.mark.e2e
def test_failure_after_training_keeps_the_partial_folder_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.helpers import replace_stage

    def broken(_run: object) -> None:
        raise CompressorError("the exporter broke")

    out = tmp_path / "out"
    replace_stage(monkeypatch, "export", broken)
    with pytest.raises(
        CompressorError, match=r"the exporter broke \(.*keeps the finished stages.*--resume\)"
    ):
        compress(MODEL, out, _config(), progress=False)
    assert (partial_dir(out) / "model.pt").is_file() and not out.exists()
    monkeypatch.undo()
    report = compress(MODEL, out, _config(), progress=False, resume=True)
    assert out.is_dir() and report["onnx"]


@pytest.mark.e2e
def test_an_untrained_baseline_is_warned_about() -> None:
    """A model near chance makes "within --max-drop of the baseline" meaningless: say so."""
    from compressor.pipeline import untrained_warning

    assert untrained_warning(99.0, 10) is None
    assert untrained_warning(19.5, 10) is None  # 10% + a tenth of the way to 100%: 19%
    text = untrained_warning(9.45, 10)
    assert text is not None and "near chance (10.0% for 10 classes)" in text
    assert "compressor train ARCH --weights FILE" in text
    assert untrained_warning(0.2, 1000) is not None and untrained_warning(50.0, 1000) is None


def test_automatic_strength_without_a_target_is_refused() -> None:
    """l1l2 and l0sgl select by a threshold unless given a target: --lambda auto then has
    no share to aim at (it removed nothing on LeNet-5), so the config refuses it and says
    what to pass; a fixed strength, a target, or `none` (no strength to set) are fine."""
    from compressor.strength import StrengthConfig

    data = DataConfig("mnist15k")
    for method in ("l1l2", "l0sgl"):
        with pytest.raises(CompressorError, match="pass --target-macs X or --ratio R"):
            CompressConfig(method, data)
        assert CompressConfig(method, data, strength=None).prune.threshold is not None
        assert CompressConfig(method, data, prune=PruneConfig(target_macs=0.5)).strength
    none = CompressConfig("none", data, prune=PruneConfig(threshold=0.01, relative=True))
    assert isinstance(none.strength, StrengthConfig)


@pytest.mark.e2e
def test_a_latency_target_is_planned_during_the_stage_and_measured_at_pruning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--target-speedup` on the runner's edge profile: the controller's share is planned
    on the latency table during the regularize stage, pruning measures the plan on the
    device, the before/after comparison runs there too, and report.json and report.md
    give the target, the prediction and the measurement."""
    monkeypatch.setenv("COMPRESSOR_CACHE", str(tmp_path / "cache"))
    args = [a if a != "--target-macs" else "--target-speedup" for a in ARGS]
    args[args.index("--target-speedup") + 1] = "1.3"
    out = tmp_path / "out"
    res = CliRunner().invoke(
        cli,
        ["compress", str(MODEL), *args, "--profile", "edge-1core", "-o", str(out), "--json", "-q"],
    )
    assert res.exit_code == 0, res.stderr
    report = json.loads(res.stdout)
    lat = report["pruning"]["latency"]
    assert lat["target_speedup"] == 1.3 and lat["input_size"] == [1, 28, 28]
    assert lat["device"] == {"threads": 1, "profile": "edge-1core"}
    assert any(a.get("chosen") for a in lat["attempts"]) and lat["speedup"] > 1.1
    assert report["strength"]["history"][0]["share"] is not None  # planned on the table
    assert report["latency"]["profile"] == "edge-1core" and report["latency"]["speedup"] > 1.0
    md = (out / "report.md").read_text()
    assert "Latency target 1.3x faster" in md and "1 thread(s), profile edge-1core" in md
