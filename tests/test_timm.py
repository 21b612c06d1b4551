"""timm's classifiers through the user's path (only where timm is installed): a state_dict
file of ``--arch timm/NAME`` pruned, exported and checked; timm's preprocessing recorded;
weights from the local Hugging Face cache; and a module that splits its input by stored
widths, kept whole by the trial removal instead of being broken."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from compressor.cli import cli
from compressor.errors import CompressorError
from compressor.onnx_export import onnx_metadata

timm = pytest.importorskip("timm")


def _state_dict_file(tmp_path: Path, name: str, classes: int = 10) -> Path:
    from compressor.archs import build_model

    torch.manual_seed(0)
    path = tmp_path / f"{name}.pt"
    torch.save(build_model(f"timm/{name}", num_classes=classes).state_dict(), path)
    return path


FAST_SAMPLE = [
    "resnet10t",
    "mobilenetv3_small_050",
    "nf_resnet26",
    "mixnet_s",
    "rexnet_100",
    "gcresnet33ts",
    "resnetblur18",
    "cs3darknet_s",
    "skresnet18",
]


@pytest.mark.parametrize("name", FAST_SAMPLE)
def test_a_timm_state_dict_is_pruned_exported_and_checked(tmp_path: Path, name: str) -> None:
    """nf_resnet26's weight-standardised convolutions are folded first (every group was
    unsafe with them), and the pruned file rebuilds folded; mixnet_s's ``MixedConv2d``
    split sizes follow its convolutions after the cut and when the file is rebuilt;
    rexnet_100's partial residual and gcresnet33ts's attention pooling made torch-pruning's
    group walk run without end (over 300 s at 224x224); they now trace in under a second;
    resnetblur18's ``BlurPool2d`` filters as many channels as it is given; cs3darknet_s
    (failed to trace) and skresnet18 (every group through its SelectiveKernel unsafe) are
    built with slices (``compressor/timm_rewrites.py``). None of these models has a group
    kept whole."""
    assert _prune_export_check(tmp_path, name, 64)["groups_unsafe"] == {}


# families beyond the fast tier's (benchmarks/timm_coverage.py runs 52 models at 224x224)
SLOW_SAMPLE = [
    "ghostnet_100",  # channels tied through cat([x, depthwise(x)])
    "dpn48b",
    "densenet121",
    "hrnet_w18_small",
    "regnety_002",
    "convnext_atto",
    "repvgg_a0",
    "efficientnet_b0",
    "mobilenetv4_conv_small",
    "selecsls42b",
    "ese_vovnet19b_dw",
    "cspresnet50",  # CrossStage's split, built as slices
]


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW_SAMPLE)
def test_more_timm_families_prune_export_and_check(tmp_path: Path, name: str) -> None:
    _prune_export_check(tmp_path, name, 96)


def _prune_export_check(tmp_path: Path, name: str, size: int) -> dict:
    src = _state_dict_file(tmp_path, name)
    pruned, onnx = tmp_path / "p.pt", tmp_path / "p.onnx"
    args = ["--input-size", str(size), "--json", "-q"]
    res = CliRunner().invoke(
        cli, ["prune", str(src), "--arch", f"timm/{name}", "--target-macs", "0.5", "-o", str(pruned), *args]
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert 1.8 <= out["macs_before"] / out["macs_after"] <= 2.2 and out["target_miss"] is None
    res = CliRunner().invoke(cli, ["export", str(pruned), "-o", str(onnx), *args])
    assert res.exit_code == 0, res.output
    assert max(p["rel_diff"] for p in json.loads(res.stdout)["parity"]) < 1e-4
    # the model file and the ONNX file keep timm's preprocessing and architecture
    info = json.loads(CliRunner().invoke(cli, ["inspect", str(pruned), "--json"]).stdout)
    cfg = timm.get_pretrained_cfg(name)
    assert info["arch"] == f"timm/{name}" and info["pruned"]
    assert info["preprocess"]["mean"] == list(cfg.mean)
    resizing = [cfg.interpolation, cfg.crop_pct]
    assert [info["preprocess"][k] for k in ("interpolation", "crop_pct")] == resizing
    meta = onnx_metadata(onnx)
    assert [meta["interpolation"], float(meta["crop_pct"])] == resizing
    return out


def test_timm_names_and_a_missing_timm_get_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from compressor.archs import arch_info

    with pytest.raises(
        CompressorError, match=r"unknown timm architecture 'resnet1'.*timm/resnet18"
    ):
        arch_info("timm/resnet1")
    monkeypatch.setitem(sys.modules, "timm", None)  # as if it were not installed
    with pytest.raises(CompressorError, match=r"needs timm: pip install 'compressor\[timm\]'"):
        arch_info("timm/resnet18")


def test_weights_come_from_the_local_hub_cache_or_name_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors.torch import save_file

    from compressor.archs import build_model
    from compressor.weights import load_pretrained

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(
        CompressorError, match=r"not in the local Hugging Face cache.*models--timm--resnet10t"
    ):
        load_pretrained("timm/resnet10t", "DEFAULT", 3)
    hub_id = timm.get_pretrained_cfg("resnet10t").hf_hub_id
    snapshot = tmp_path / "hub" / f"models--{hub_id.replace('/', '--')}" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    torch.manual_seed(1)
    weights = build_model("timm/resnet10t", num_classes=1000).state_dict()
    save_file({k: v.contiguous() for k, v in weights.items()}, str(snapshot / "model.safetensors"))
    model, start = load_pretrained("timm/resnet10t", "DEFAULT", 3)
    assert start.classes_in_weights == 1000 and start.head_replaced == ["fc"]
    assert model.get_classifier().out_features == 3
    assert torch.equal(model.conv1[0].weight, weights["conv1.0.weight"])


@pytest.mark.parametrize(
    ("name", "rewritten"),
    [
        ("cs3darknet_s", "stages.0"),  # CrossStage3
        ("cspresnet50", "stages.0"),  # CrossStage
        ("rexnet_100", "features.1"),  # LinearBottleneck
        ("skresnet18", "layer1.0.conv1"),  # SelectiveKernel
    ],
)
def test_rewritten_timm_modules_compute_the_same(name: str, rewritten: str) -> None:
    """timm modules that torch-pruning cannot follow are built with their splits as slices
    at the width their layers read (``compressor/timm_rewrites.py``): the same outputs as
    timm's own classes on the same weights. (That they trace and prune every group: the
    fast sample above and benchmarks/timm_coverage.py.)"""
    from compressor.archs import build_model

    torch.manual_seed(0)
    model = build_model(f"timm/{name}", num_classes=10).eval()
    with timm.layers.set_layer_config(scriptable=False, exportable=True, no_jit=True):
        original = timm.create_model(name, num_classes=10).eval()
    original.load_state_dict(model.state_dict())
    module = model.get_submodule(rewritten)
    assert type(module).__name__.startswith("Sliced")
    assert type(module).__bases__[0] is type(original.get_submodule(rewritten))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), original(x))


class _SplitByWidths(nn.Module):
    """Splits its input by widths it stores: a list (as timm's MixedConv2d does, without
    compressor's fix-up for it) or one part size (SelectiveKernel's ``in_channels // 2``,
    which splits 15 channels into [8, 7] without an error)."""

    def __init__(self, channels: int, one_size: bool) -> None:
        super().__init__()
        self.splits: list[int] | int = [channels // 2, channels - channels // 2]
        self.a = nn.Conv2d(channels // 2, 8, 3, padding=1)
        self.b = nn.Conv2d(channels - channels // 2, 8, 5, padding=2)
        if one_size:
            self.splits = channels // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left, right = torch.split(x, self.splits, 1)
        return torch.cat([self.a(left), self.b(right)], 1)


@pytest.mark.parametrize("one_size", [False, True])
def test_a_module_that_splits_by_stored_widths_is_kept_whole_not_broken(one_size: bool) -> None:
    from compressor.pruning import channel_groups

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        _SplitByWidths(16, one_size),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 4),
    ).eval()
    index = channel_groups(model, torch.zeros(1, 3, 16, 16))
    assert "0" in index.unsafe and ("split" in index.unsafe["0"] or "channels" in index.unsafe["0"])
    assert "0" not in [g.root for g in index]
    assert [g.root for g in index] and all(r in index.skipped for r in index.unsafe)


def test_a_cut_is_checked_against_the_model_with_those_channels_zeroed() -> None:
    """The pruned model must compute what the original computes with the removed channels
    zeroed; anything else is an error, never a silently different model."""
    from compressor.pruning import Plan, apply_plan, channel_groups
    from compressor.pruning.verify import checked_cut, zeroed_copy

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(),
        nn.Conv2d(12, 12, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 4),
    ).eval()  # fmt: skip
    index = channel_groups(model, torch.zeros(1, 3, 16, 16))
    plan = Plan({0: [1, 5, 7]})
    reference = zeroed_copy(model, index, plan.remove)
    apply_plan(index, plan)
    checked_cut(reference, model, index, plan, (3, 16, 16))  # the honest cut passes
    with torch.no_grad():
        model[3].weight[0, 0, 0, 0] += 1.0  # what a wrong slice would do
    with pytest.raises(CompressorError, match="the cut broke the model"):
        checked_cut(reference, model, index, plan, (3, 16, 16))


@pytest.mark.slow
def test_a_model_that_amplifies_round_off_is_named_in_the_parity_error(tmp_path: Path) -> None:
    """efficientnetv2_rw_t untrained (BatchNorm statistics 0/1): activations reach ~1e4 and
    PyTorch's float32 outputs differ from float64 by more than the tolerance; onnxruntime
    is no further from float64, and the error says so."""
    src = _state_dict_file(tmp_path, "efficientnetv2_rw_t")
    res = CliRunner().invoke(
        cli,
        ["export", str(src), "--arch", "timm/efficientnetv2_rw_t", "--input-size", "96",
         "-o", str(tmp_path / "d.onnx"), "-q"],
    )  # fmt: skip
    assert res.exit_code == 1 and "the model amplifies round-off" in res.output, res.output
    assert not (tmp_path / "d.onnx").exists()
