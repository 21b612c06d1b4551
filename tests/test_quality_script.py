"""benchmarks/quality.py's bookkeeping: kept rows (``--keep``) join a table only from the
same task and the same dense model, and are not run again."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import quality


def _row(method: str, seed: int, test: float = 88.0, dense: float = 88.31) -> dict[str, Any]:
    return {
        "task": "fmnist-resnet18",
        "tool": "compressor",
        "method": method,
        "split": "1+3",
        "target_macs_ratio": 10,
        "seed": seed,
        "macs_ratio": 10.0,
        "test_accuracy": test,
        "val_accuracy": test + 1,
        "dense_test_accuracy": dense,
        "dense_val_accuracy": 89.08,
        "share": None,
        "widths": [8, 16],
    }


def _results(tmp_path: Path, task: str, rows: list[dict[str, Any]]) -> Path:
    path = tmp_path / "prev.json"
    payload = {"task": task, "commit": "abc123", "date": "2026-12-02", "rows": rows, "speed": []}
    path.write_text(json.dumps(payload))
    return path


def test_kept_rows_are_marked_and_not_run_again(tmp_path: Path) -> None:
    task = quality.TASKS["fmnist-resnet18"]
    rows, info = quality.kept_rows(_results(tmp_path, task.name, [_row("none", 0)]), task)
    assert rows[0]["kept_from"] == "abc123" and info["rows"] == 1 and info["speed"] == []
    assert quality._has(rows, "compressor", "none", 10, 0)
    assert not quality._has(rows, "compressor", "none", 10, 1)
    assert not quality._has(rows, "torch-pruning", "none", 10, 0)


def test_kept_rows_only_of_asked_methods_and_not_where_the_work_folder_ran(
    tmp_path: Path,
) -> None:
    task = quality.TASKS["fmnist-resnet18"]
    tp = {**_row("MagnitudePruner+r1f3", 0), "tool": "torch-pruning"}
    rows = [_row("none", 0), _row("l1", 0), _row("hgs", 0), _row("hgs", 3), tp]
    prev = _results(tmp_path, task.name, rows)
    work = tmp_path / "work"
    (work / "compressor-hgs-10x-s0").mkdir(parents=True)
    (work / "compressor-hgs-10x-s0" / "report.json").write_text("{}")  # seed 3 goes too
    rows, _ = quality.kept_rows(prev, task, work, ["none+r0f4", "hgs"], ["MagnitudePruner"])
    assert [(r["tool"], r["method"]) for r in rows] == [
        ("compressor", "none"),
        ("torch-pruning", "MagnitudePruner+r1f3"),
    ]


def test_kept_rows_of_another_task_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="task 'mnist15k'"):
        quality.kept_rows(_results(tmp_path, "mnist15k", []), quality.TASKS["fmnist-resnet18"])


def test_rows_of_another_dense_model_are_refused(tmp_path: Path, monkeypatch: Any) -> None:
    task = quality.TASKS["fmnist-resnet18"]
    monkeypatch.setattr(quality, "data_dir", lambda work, task: "data")
    monkeypatch.setattr(quality, "run_payload", lambda t0, rows: {"rows": rows})
    args = types.SimpleNamespace(t0=0.0, work=tmp_path, data_summary="", kept=None)
    same = [_row("none", 0), _row("hgs", 0, test=87.0)]
    assert len(quality._payload(args, task, same)["summary"]) == 2
    with pytest.raises(SystemExit, match="different dense models"):
        quality._payload(args, task, [*same, _row("none", 1, dense=88.0)])


def test_fresh_statistics_read_the_network_not_the_lag() -> None:
    """A filter scaled before its BatchNorm computes the same function once the statistics
    follow; the running statistics read it as changed. The copy's are re-estimated, the
    model's are left alone."""
    from bn_statistics import with_fresh_statistics

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten())
    x = torch.randn(64, 2, 6, 6)
    model.train()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        model(x)
    model.eval()
    with torch.no_grad():
        before = model(x)
        model[0].weight.mul_(0.5)
        model[0].bias.mul_(0.5)
        stale = model(x)
        fresh = with_fresh_statistics(model, x)(x)
    assert not torch.allclose(stale, before, atol=1e-2)
    assert torch.allclose(fresh, before, atol=1e-3)
    assert model[1].momentum is None and not model.training  # the model itself untouched
    assert torch.equal(model(x), stale)


def test_torch_pruning_meets_a_cost_budget_from_below_or_says_it_cannot() -> None:
    """The Torch-Pruning rows at equal latency: one ratio for every layer, bisected on a
    given cost (here the parameter count), lands at or under the budget, in multiples of
    ``round_to``; a budget its one ratio cannot reach is a ValueError, not a wrong row."""
    from compressor.analysis import count_params

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 10),
    ).eval()
    dense = count_params(model)
    pruned = quality._tp_prune_to("MagnitudePruner", model, 0.4, 16, count_params, round_to=8)
    assert 0.3 * dense < count_params(pruned) <= 0.4 * dense
    widths = [pruned[0].out_channels, pruned[3].out_channels]
    assert all(w % 8 == 0 for w in widths) and widths != [32, 64]
    assert pruned[8].out_features == 10  # the classifier keeps its classes
    with pytest.raises(ValueError, match="out of reach"):
        quality._tp_prune_to("MagnitudePruner", model, 0.001, 16, count_params, round_to=8)


def test_torch_pruning_share_is_the_removed_channels_part_of_the_group_norm_mass() -> None:
    """``tp_step``: channels with nothing in them cost no mass when they go; channels that
    hold some do, in proportion to their group L2 norms."""
    torch.manual_seed(0)

    def net(empty: int) -> nn.Module:
        model = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8, 10),
        ).eval()
        with torch.no_grad():  # channels 0..empty-1 own nothing: filters, BatchNorm, inputs
            model[0].weight[:empty] = 0
            model[0].bias[:empty] = 0
            model[1].weight[:empty] = 0
            model[1].bias[:empty] = 0
            model[5].weight[:, :empty] = 0
        return model

    def share(empty: int, ratio: float) -> tuple[float, int]:
        model = net(empty)
        value = quality.tp_step(quality._tp_pruner("MagnitudePruner", model, ratio, 8))
        return value, model[0].out_channels

    assert share(empty=4, ratio=0.5) == (0.0, 4)  # exactly the empty channels go
    some, width = share(empty=2, ratio=0.5)  # two empty ones and two that hold mass
    assert width == 4 and 0.0 < some < 0.5
    everything, _ = share(empty=0, ratio=0.5)
    assert some < everything < 1.0
