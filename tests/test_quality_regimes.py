"""benchmarks/regimes.py's bookkeeping: every row of a table spends its budget, rows are
identified and marked as the tables read them, and the paired statistics match a case
computed by hand."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import regimes
from regimes import REGIMES, Row


@pytest.mark.parametrize("name", sorted(REGIMES))
def test_every_row_of_every_budget_spends_the_same_epochs(name: str) -> None:
    regime = REGIMES[name]
    for budget in (*regime.budgets, 4, 8, 16, 20):
        rows = [*regimes.baseline_rows(regime, budget), regimes.method_row(regime, budget, "hgs")]
        assert {r.epochs for r in rows} == {regime.total(budget)}
        assert len({r.label for r in rows}) == len(rows)  # no two rows share a name


def test_the_trained_regime_splits_half_and_half_and_the_pretrained_one_e_plus_a_quarter() -> None:
    trained, pretrained = (
        REGIMES["fmnist-resnet18-trained"],
        REGIMES["fmnist-mobilenetv2-pretrained"],
    )
    assert trained.split(16) == (8, 8) and trained.total(16) == 16
    assert trained.split(5) == (2, 3)
    assert pretrained.split(16) == (16, 4) and pretrained.total(16) == 20
    assert pretrained.split(8) == (8, 2) and pretrained.total(8) == 10
    assert pretrained.split(2) == (2, 1)  # k is at least one epoch
    labels = [r.label for r in regimes.baseline_rows(trained, 4)]
    assert labels == [
        "dense 0+4",
        "none 0+4",
        "none 2+2",
        "MagnitudePruner 0+4",
        "GroupNormPruner 2+2",
    ]
    # pretrained: every row starts from the backbone with a new head
    rows = regimes.baseline_rows(pretrained, 8)
    assert {r.start for r in rows} == {"head"}
    assert [r.label for r in rows] == [
        "dense 0+10",
        "none 8+2",
        "none 0+10",
        "MagnitudePruner 8+2",
        "GroupNormPruner 8+2",
    ]
    assert regimes.method_row(pretrained, 8, "hgs") == Row("compressor", "hgs", 8, 2, "head")


def _row(
    tool: str, label: str, seed: int, test: float, target: int = 10, **kw: Any
) -> dict[str, Any]:
    method = label.split(" ")[0]
    before, after = (int(x) for x in label.split(" ")[1].split("+"))
    row = {
        "task": "t",
        "tool": tool,
        "method": method,
        "label": label,
        "budget_epochs": before + after,
        "target_macs_ratio": target,
        "seed": seed,
        "test_accuracy": test,
        "val_accuracy": test + 1,
        "macs_ratio": float(target),
        "dense_test_accuracy": 90.0,
        "epochs_before": before,
        "epochs_after": after,
        "epochs_run": [before, after],
    }
    row.update(kw)
    row["as_budgeted"] = regimes.ran_as_budgeted(row)
    return row


def test_paired_differences_match_a_hand_computed_case() -> None:
    rows = [_row("compressor", "hgs 2+2", s, t) for s, t in enumerate([88.0, 89.0, 90.5])]
    ref = [_row("compressor", "none 0+4", s, t) for s, t in enumerate([87.0, 88.5, 89.0])]
    ref.append(_row("compressor", "none 0+4", 7, 50.0))  # no partner: not paired
    d = regimes.paired(rows, ref)
    assert d is not None
    # differences 1.0, 0.5, 1.5: mean 1.0, sd 0.5, t(0.975, 2) = 4.303
    half = 4.303 * 0.5 / 3**0.5
    assert d["mean"] == pytest.approx(1.0)
    assert d["ci95"] == pytest.approx([1.0 - half, 1.0 + half])
    assert (d["seeds"], d["ahead"]) == (3, 3)
    one = regimes.paired(rows[:1], ref)
    assert one is not None and one["ci95"] is None and one["mean"] == pytest.approx(1.0)
    assert regimes.paired(rows, []) is None


def test_a_row_whose_stages_ran_other_epochs_is_marked() -> None:
    assert _row("compressor", "none 2+2", 0, 88.0)["as_budgeted"]
    moved = _row("compressor", "none 2+2", 0, 88.0, epochs_run=[1, 3])  # early prune
    assert not moved["as_budgeted"]
    short = _row("torch-pruning", "GroupNormPruner 2+2", 0, 88.0, epochs_run=[2, 1])
    assert not short["as_budgeted"]
    summary = regimes.summarise([moved, _row("compressor", "none 2+2", 1, 88.0)])
    assert summary[0]["not_as_budgeted"] == 1


def test_the_summary_pairs_each_row_with_the_control_and_the_best_baselines() -> None:
    rows = []
    for seed in range(3):
        rows += [
            _row("control", "dense 0+4", seed, 91.0 + seed),
            _row("compressor", "none 0+4", seed, 89.0 + seed),
            _row("compressor", "none 2+2", seed, 88.0 + seed),
            _row("torch-pruning", "MagnitudePruner 0+4", seed, 88.5 + seed),
            _row("torch-pruning", "GroupNormPruner 2+2", seed, 87.0),
            _row("compressor", "hgs 2+2", seed, 89.5 + seed),
        ]
        rows.append(_row("compressor", "none 0+4", seed, 70.0, target=30))  # another cell
    lines = {(s["target"], s["label"]): s for s in regimes.summarise(rows)}
    hgs = lines[(10, "hgs 2+2")]
    assert hgs["seeds"] == 3 and hgs["test_mean"] == pytest.approx(90.5)
    assert hgs["vs_control"]["mean"] == pytest.approx(-1.5)
    assert hgs["none_label"] == "none 0+4" and hgs["vs_none"]["mean"] == pytest.approx(0.5)
    assert hgs["best_tp_label"] == "MagnitudePruner 0+4"
    assert hgs["vs_best_tp"]["mean"] == pytest.approx(1.0)
    # a row is not compared with itself, and cells do not mix
    assert lines[(10, "none 0+4")]["vs_none"] is None
    assert lines[(10, "dense 0+4")]["vs_control"] is None
    assert lines[(30, "none 0+4")]["vs_control"] is None
    assert lines[(30, "none 0+4")]["test_mean"] == pytest.approx(70.0)
    # order: the control first, then compressor's rows, then Torch-Pruning's, best first
    tools = [s["tool"] for s in regimes.summarise(rows) if s["target"] == 10]
    assert tools == [
        "control",
        "compressor",
        "compressor",
        "compressor",
        "torch-pruning",
        "torch-pruning",
    ]


def test_row_keys_tell_apart_what_a_table_must_not_merge() -> None:
    a = _row("compressor", "none 2+2", 0, 88.0)
    assert regimes.row_key(a) == ("t", 4, 10, "compressor", "none 2+2", 0)
    others = [
        _row("compressor", "none 0+4", 0, 88.0),
        _row("compressor", "none 2+2", 1, 88.0),
        _row("compressor", "none 2+2", 0, 88.0, target=30),
        _row("torch-pruning", "none 2+2", 0, 88.0),
    ]
    assert len({regimes.row_key(r) for r in [a, *others]}) == 5


def test_the_reference_is_the_shortest_run_that_doubling_no_longer_improves() -> None:
    import quality_regimes

    curve = [
        {"epochs": 10, "val_top1": 90.0},
        {"epochs": 20, "val_top1": 91.0},
        {"epochs": 40, "val_top1": 91.15},
    ]
    chosen = quality_regimes.converged(curve)
    assert chosen is not None and chosen["epochs"] == 20
    assert quality_regimes.converged(curve[:2]) is None  # 20 has no doubling to compare with
    curve[2]["val_top1"] = 91.2  # a gain of exactly 0.2 is not under 0.2
    assert quality_regimes.converged(curve) is None


def test_the_best_baseline_is_picked_on_validation_not_on_test() -> None:
    rows = []
    for seed in range(2):
        # MagnitudePruner leads on test but trails on validation: GroupNormPruner is "best"
        rows.append(_row("torch-pruning", "MagnitudePruner 0+4", seed, 89.0, val_accuracy=85.0))
        rows.append(_row("torch-pruning", "GroupNormPruner 2+2", seed, 88.0, val_accuracy=86.0))
        rows.append(_row("compressor", "none 0+4", seed, 88.5))
    none = next(s for s in regimes.summarise(rows) if s["label"] == "none 0+4")
    assert none["best_tp_label"] == "GroupNormPruner 2+2"
    assert none["vs_best_tp"]["mean"] == pytest.approx(0.5)
