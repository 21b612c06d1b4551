"""Latency targets: the table's cache key and interpolation, the allocation under a
synthetic latency model, and (end-to-end tier) a pruned model's predicted and measured
latency on a small network."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from compressor.cli import cli
from compressor.config import LatencyDevice, PruneConfig
from compressor.errors import CompressorError
from compressor.latency import LatencyTable, Layer, model_layers, table_key
from compressor.pruning import Plan, channel_groups, plan_cost_budget
from tests.schemas import validate

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "smallcnn-mnist15k.pt"


def _net(width: int = 32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width, 10),
    ).eval()


def _layers(width: int = 32, size: int = 16) -> list[Layer]:
    model = _net(width)
    return model_layers(
        model, channel_groups(model, torch.zeros(1, 3, size, size)), (3, size, size)
    )


def test_model_layers_find_every_prunable_layer_with_its_input_size() -> None:
    layers = {lay.name: lay for lay in _layers()}
    assert set(layers) == {"0", "3", "8"}
    assert layers["0"].out_prunable and not layers["0"].in_prunable  # the input stays
    assert layers["3"].out_prunable and layers["3"].in_prunable
    assert layers["8"].in_prunable and not layers["8"].out_prunable  # the classes stay
    assert layers["3"].input_hw == (16, 16)


def test_cache_key_names_architecture_size_threads_profile_round_to_and_runtime(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = table_key(_layers(), (3, 16, 16), LatencyDevice(), 8)
    assert base == table_key(_layers(), (3, 16, 16), LatencyDevice(), 8)
    others = [
        table_key(_layers(width=48), (3, 16, 16), LatencyDevice(), 8),
        table_key(_layers(size=32), (3, 32, 32), LatencyDevice(), 8),
        table_key(_layers(), (3, 16, 16), LatencyDevice(threads=2), 8),
        table_key(_layers(), (3, 16, 16), LatencyDevice(profile="edge-1core"), 8),
        table_key(_layers(), (3, 16, 16), LatencyDevice(remote="pi@edge"), 8),
        table_key(_layers(), (3, 16, 16), LatencyDevice(), 4),
    ]
    import compressor.bench.runner as runner

    real = runner.machine()
    monkeypatch.setattr(runner, "machine", lambda: {**real, "onnxruntime": "0.0.1"})
    others.append(table_key(_layers(), (3, 16, 16), LatencyDevice(), 8))
    assert len({base, *others}) == len(others) + 1


def _bilinear_table(layer: Layer, f: Callable[[int, int], float]) -> LatencyTable:
    outs, ins = layer.grid(8)
    grids = {
        layer.shape_key: {"out": outs, "in": ins, "ms": [[f(o, i) for i in ins] for o in outs]}
    }
    return LatencyTable("k", (3, 16, 16), 8, {}, [layer], grids, dense_ms=f(outs[-1], ins[-1]))


def test_the_table_interpolates_bilinear_costs_exactly_and_round_trips() -> None:
    layer = Layer("c", "conv", 64, 48, (3, 3), (1, 1), (1, 1), (1, 1), 1, (8, 8), True, True)
    cost = lambda o, i: 0.05 + 0.001 * o + 0.002 * i + 0.0003 * o * i  # noqa: E731
    table = _bilinear_table(layer, cost)
    assert table.grids[layer.shape_key]["out"] == [8, 16, 24, 32, 40, 48, 56, 64]
    for o, i in [(64, 48), (20, 13), (9, 40), (57, 30)]:
        assert table.layer_ms(layer, o, i) == pytest.approx(cost(o, i))
    again = LatencyTable.from_dict(json.loads(json.dumps(table.to_dict())))
    assert again.layer_ms(layer, 20, 13) == pytest.approx(cost(20, 13))
    assert again.layers == table.layers


def test_a_model_pruned_by_another_tool_is_predicted_from_its_widths() -> None:
    """``predict_model`` reads the widths a model has now: for compressor's own pruned
    copy it equals the plan's prediction, so another tool's model is priced the same way."""
    from compressor.latency import Predictor
    from compressor.pruning import group_scores, plan_ratio, pruned_copy

    model = _net()
    index = channel_groups(model, torch.zeros(1, 3, 16, 16))
    layers = model_layers(model, index, (3, 16, 16))
    cost = lambda o, i: 0.01 + 0.002 * o + 0.001 * i + 0.0001 * o * i  # noqa: E731
    grids = {}
    for lay in layers:
        outs, ins = lay.grid(8)
        grids[lay.shape_key] = {"out": outs, "in": ins, "ms": [[cost(o, i) for i in ins] for o in outs]}  # fmt: skip
    table = LatencyTable("k", (3, 16, 16), 8, {}, layers, grids, dense_ms=1.0, rest_ms=0.2)
    assert table.predict_model(model) == pytest.approx(table.predict())
    plan = plan_ratio(group_scores(index, model), 0.5, round_to=8)
    pruned = pruned_copy(model, index, plan, torch.zeros(1, 3, 16, 16))
    assert table.predict_model(pruned) == pytest.approx(Predictor(table, model, index)(plan))
    assert table.predict_model(pruned) < table.predict() - 0.05
    with pytest.raises(CompressorError, match="another architecture"):
        table.predict_model(nn.Sequential(nn.Linear(3, 3)))


def test_the_allocation_meets_a_synthetic_latency_model() -> None:
    """Cost = sum over groups of kept channels x a per-channel cost: the plan lands under
    the budget with no removed block that fits back, and the expensive group pays first."""
    torch.manual_seed(0)
    scores = [torch.rand(64) + 0.5, torch.rand(64) + 0.5, torch.rand(32) + 0.5]
    per_channel = [1.0, 5.0, 2.0]

    def cost(plan: Plan) -> float:
        return sum(
            (len(s) - len(plan.remove.get(g, []))) * c
            for g, (s, c) in enumerate(zip(scores, per_channel, strict=True))
        )

    dense = cost(Plan())
    for fraction in (0.8, 0.5, 0.3):
        budget = fraction * dense
        plan = plan_cost_budget(scores, cost, budget, round_to=8)
        assert cost(plan) <= budget
        slack = budget - cost(plan)
        assert all(8 * per_channel[g] > slack for g in plan.remove)  # nothing fits back
        kept = [len(s) - len(plan.remove.get(g, [])) for g, s in enumerate(scores)]
        assert all(k % 8 == 0 for k in kept)
        assert kept[1] / 64 <= kept[0] / 64  # the 5x costlier group gives up more
    with pytest.raises(CompressorError, match="out of reach"):
        plan_cost_budget(scores, cost, 0.01 * dense, round_to=8)


def test_latency_targets_are_one_of_the_selections() -> None:
    with pytest.raises(CompressorError, match="exactly one of"):
        PruneConfig(ratio=0.5, target_speedup=2.0)
    assert PruneConfig(target_latency=3.0).latency_target


def test_auto_allocation_is_uniform_under_a_latency_target_only() -> None:
    assert PruneConfig(target_speedup=2.0).allocation == "uniform"
    assert PruneConfig(target_latency=3.0).allocation == "uniform"
    assert PruneConfig(target_macs=0.5).allocation == "global"
    assert PruneConfig(ratio=0.5).allocation == "global"
    assert PruneConfig(target_speedup=2.0, allocation="global").allocation == "global"


@pytest.mark.e2e
def test_a_pruned_models_predicted_latency_agrees_with_its_measurement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the CLI, resnet18 at 64x64: the table's check models and the target's
    measured model agree with the prediction within 50%, and the table is read from the
    cache the second time. 50% guards against a broken predictor (a wrong unit or a
    missing layer is off by 2x or more); it is not the accuracy claim: a shared
    machine's load moves 2 ms timings by a quarter between the table and the check
    (the CI run of 2026-12-07 measured 26% while another test suite ran beside it).
    benchmarks/latency_target.py measures the errors side by side."""
    from compressor.archs import build_model

    monkeypatch.setenv("COMPRESSOR_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    path = tmp_path / "resnet18.pt"
    torch.save(build_model("resnet18", num_classes=10).state_dict(), path)
    args = ["--arch", "resnet18", "--input-size", "3x64x64", "--json"]
    first = CliRunner().invoke(cli, ["latency-table", str(path), *args])
    assert first.exit_code == 0, first.output
    table = json.loads(first.stdout)
    validate("latency-table", table)  # the output is an instance of its type
    assert not table["cached"] and len(table["checks"]) == 2
    assert all(abs(c["error"]) < 0.5 for c in table["checks"]), table["checks"]
    again = json.loads(CliRunner().invoke(cli, ["latency-table", str(path), *args]).stdout)
    assert again["cached"] and again["dense_ms"] == table["dense_ms"]
    out = tmp_path / "p.pt"
    result = CliRunner().invoke(
        cli, ["prune", str(path), "--target-speedup", "2", "-o", str(out), *args]
    )
    assert result.exit_code == 0, result.output
    validate("prune", json.loads(result.stdout))  # a prune under a latency target
    lat = json.loads(result.stdout)["latency"]
    assert lat["table"]["cached"]
    chosen = next(a for a in lat["attempts"] if a.get("chosen"))
    assert abs(chosen["predicted_ms"] / chosen["measured_ms"] - 1) < 0.5, lat["attempts"]
    assert lat["speedup"] > 1.5 and out.is_file()
    greedy = CliRunner().invoke(
        cli,
        ["prune", str(path), "--target-speedup", "2", "--allocation", "global", "-o", str(out), "--force", *args],
    )  # fmt: skip
    assert greedy.exit_code == 0, greedy.output
    assert json.loads(greedy.stdout)["latency"]["speedup"] > 1.5
