"""The quality benchmark's two regimes at equal total epochs: their tasks, the dense
references and the rows each regime runs. ``quality_regimes.py`` runs them and writes the
tables; this module holds what a row is, so that the tests can check the bookkeeping
without training anything.

- **trained** (a user who has a task model): a dense resnet18 trained on Fashion-MNIST until
  doubling its epochs gains under 0.2 points of validation top-1 is compressed with B
  epochs after it. Every row spends exactly B epochs: ``dense`` (the control: B more
  epochs of the fine-tuning recipe, nothing removed), ``none`` 0 + B and R + (B - R),
  Torch-Pruning's MagnitudePruner 0 + B and GroupNormPruner (its sparse learning) R + (B - R),
  with R = B / 2 (Torch-Pruning's reproduce recipe: as many sparse-learning epochs as
  fine-tuning epochs).
- **pretrained** (the mission's flow): the ImageNet-pretrained MobileNetV2 backbone with a
  new head is fine-tuned on Fashion-MNIST for E task epochs, pruned and fine-tuned k more.
  Every row spends E + k epochs from the pretrained start: ``dense`` (the control: a dense
  fine-tune of E + k), ``none`` E + k (fine-tune E, prune, k), ``none`` 0 + (E + k) (prune the
  pretrained model first), MagnitudePruner (a dense fine-tune of E, prune, k) and
  GroupNormPruner (its sparse learning over the E epochs, prune, k). A method's row is
  ``compress`` from the new-head model with ``--reg-epochs E --ft-epochs k``.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Regime:
    """One task of the equal-budget quality benchmark."""

    name: str  # the task: results/quality_<name>.{json,md,png}
    regime: str  # "trained" or "pretrained"
    arch: str
    input_size: int
    train_images: int  # the class-balanced Fashion-MNIST subset (before the validation split)
    val_split: float
    targets: dict[int, float]  # label (x fewer MACs) -> --target-macs
    budgets: tuple[int, ...]  # trained: B; pretrained: E (k = E // 4)
    reference_epochs: tuple[int, ...]  # the convergence curve of the dense reference
    dense_lr: float  # the dense recipe's peak lr (train's default 0.05 from scratch)
    backbone: bool = False
    start_epochs: int = 10  # the pretrained start against scratch, each this many epochs

    def split(self, budget: int) -> tuple[int, int]:
        """(epochs before pruning, epochs after) of the rows that train on both sides:
        trained: (B / 2, B / 2); pretrained: (E, k) with k = max(1, E // 4)."""
        if self.regime == "trained":
            return budget // 2, budget - budget // 2
        return budget, max(1, budget // 4)

    def total(self, budget: int) -> int:
        """Every row's epochs: B after the dense model, or E + k from the pretrained start."""
        return budget if self.regime == "trained" else sum(self.split(budget))


REGIMES = {
    "fmnist-resnet18-trained": Regime(
        "fmnist-resnet18-trained",
        "trained",
        "resnet18",
        32,
        12000,
        0.25,
        {10: 0.1, 30: 1 / 30},
        (4, 16),
        # each doubling still gains (160 epochs: results/quality_*_curve.md); the table
        # compresses the 80-epoch model, after which dense + B no longer gained
        (10, 20, 40, 80),
        0.05,
    ),
    "fmnist-mobilenetv2-pretrained": Regime(
        "fmnist-mobilenetv2-pretrained",
        "pretrained",
        "mobilenet_v2",
        32,
        8000,
        0.25,
        {2: 0.5, 4: 0.25},
        (16,),  # E: doubling the dense fine-tune from 10 to 20 epochs still gained
        (5, 10, 20, 40),
        0.01,  # train's 0.05 disrupted the backbone (results/archive/2026-12-06-*)
        backbone=True,
    ),
}


@dataclass(frozen=True)
class Row:
    """One row of a table: what runs, and the epochs it spends on each side of pruning."""

    tool: str  # "control", "compressor" or "torch-pruning"
    method: str  # "dense", a compressor method or a Torch-Pruning pruner
    before: int  # epochs before pruning (regularize, sparse learning or dense fine-tune)
    after: int  # epochs after pruning (for the control: its extra dense epochs)
    start: str  # "dense" (the trained reference) or "head" (the pretrained backbone, new head)

    @property
    def label(self) -> str:
        """The row's name in tables and files: ``none 2+2``, ``GroupNormPruner 8+2``."""
        return f"{self.method} {self.before}+{self.after}"

    @property
    def epochs(self) -> int:
        return self.before + self.after


def baseline_rows(regime: Regime, budget: int) -> list[Row]:
    """The rows every table has at this budget (the method rows slot in with
    ``method_row``). Each spends ``regime.total(budget)`` epochs."""
    pre, post = regime.split(budget)
    total = regime.total(budget)
    if regime.regime == "trained":
        return [
            Row("control", "dense", 0, total, "dense"),
            Row("compressor", "none", 0, total, "dense"),
            Row("compressor", "none", pre, post, "dense"),
            Row("torch-pruning", "MagnitudePruner", 0, total, "dense"),
            Row("torch-pruning", "GroupNormPruner", pre, post, "dense"),
        ]
    return [
        Row("control", "dense", 0, total, "head"),
        Row("compressor", "none", pre, post, "head"),
        Row("compressor", "none", 0, total, "head"),
        Row("torch-pruning", "MagnitudePruner", pre, post, "head"),
        Row("torch-pruning", "GroupNormPruner", pre, post, "head"),
    ]


def method_row(regime: Regime, budget: int, method: str) -> Row:
    """A compressor method's row: its penalty over the epochs before pruning."""
    pre, post = regime.split(budget)
    return Row("compressor", method, pre, post, "dense" if regime.regime == "trained" else "head")


def row_key(r: dict[str, Any]) -> tuple[str, int, int, str, str, int]:
    """A result row's identity: (task, budget, target, tool, label, seed); the control
    has one run per budget and seed, listed under every target."""
    return (
        r["task"],
        r["budget_epochs"],
        r["target_macs_ratio"],
        r["tool"],
        r["label"],
        r["seed"],
    )


def ran_as_budgeted(r: dict[str, Any]) -> bool:
    """Whether a result row's stages ran the epochs its budget gave them (compressor's
    early prune moves regularize epochs to fine-tuning; a stage may also stop short)."""
    return r["epochs_run"] == [r["epochs_before"], r["epochs_after"]]


# --------------------------------------------------------------------------- statistics

T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262]  # t(0.975, df 1..9)


def paired(rows: list[dict[str, Any]], ref: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Test top-1 of ``rows`` minus ``ref``'s, paired by seed: the mean difference, its
    95% t-interval (None with one pair), the number of pairs and how many were ahead."""
    by_seed = {r["seed"]: r["test_accuracy"] for r in ref}
    diffs = [r["test_accuracy"] - by_seed[r["seed"]] for r in rows if r["seed"] in by_seed]
    if not diffs:
        return None
    mean = statistics.mean(diffs)
    ci = None
    if len(diffs) > 1:
        half = T95[min(len(diffs) - 1, len(T95)) - 1] * statistics.stdev(diffs) / len(diffs) ** 0.5
        ci = [mean - half, mean + half]
    return {"mean": mean, "ci95": ci, "seeds": len(diffs), "ahead": sum(d > 0 for d in diffs)}


def _mean(xs: list[Any]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.mean(xs) if xs else None


def _sd(xs: list[float]) -> float | None:
    return statistics.stdev(xs) if len(xs) > 1 else None


def _best(
    groups: dict[tuple[Any, ...], list[dict[str, Any]]], cell: tuple[int, int], keep: Any
) -> Any:
    """The group of ``cell`` (budget, target) with the best mean validation top-1 among
    those ``keep(tool, method)`` accepts (None if there is none): chosen on the split that
    steers, so that the test differences read against it are not picked on the test set."""
    best = None
    for (budget, target, tool, label), rs in groups.items():
        if (budget, target) != cell or not keep(tool, rs[0]["method"]):
            continue
        mean = statistics.mean(r["val_accuracy"] for r in rs)
        if best is None or mean > best[0]:
            best = (mean, label, rs)
    return best


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per (budget, target, tool, label): test and validation top-1 (mean, sd),
    validation right after pruning, the removed score share, the MACs cut, and the paired
    test difference against the control, the best ``none`` row and the best Torch-Pruning
    row of the same cell."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        key = (r["budget_epochs"], r["target_macs_ratio"], r["tool"], r["label"])
        groups.setdefault(key, []).append(r)
    out = []
    for (budget, target, tool, label), rs in groups.items():
        cell = (budget, target)
        refs = {
            "control": _best(groups, cell, lambda t, m: t == "control"),
            "none": _best(groups, cell, lambda t, m: t == "compressor" and m == "none"),
            "best_tp": _best(groups, cell, lambda t, m: t == "torch-pruning"),
        }
        test = [r["test_accuracy"] for r in rs]
        line = {
            "budget_epochs": budget,
            "target": target,
            "tool": tool,
            "method": rs[0]["method"],
            "label": label,
            "seeds": len(rs),
            "test_mean": statistics.mean(test),
            "test_sd": _sd(test),
            "val_mean": _mean([r["val_accuracy"] for r in rs]),
            "val_after_prune_mean": _mean([r.get("val_after_prune") for r in rs]),
            "share_mean": _mean([r.get("share") for r in rs]),
            "macs_ratio_mean": statistics.mean(r["macs_ratio"] for r in rs),
            "not_as_budgeted": sum(not r["as_budgeted"] for r in rs),
            "dense_test": rs[0]["dense_test_accuracy"],
        }
        for name, ref in refs.items():
            line[f"vs_{name}"] = paired(rs, ref[2]) if ref and ref[1] != label else None
            line[f"{name}_label"] = ref[1] if ref else None
        out.append(line)
    order = {"control": 0, "compressor": 1, "torch-pruning": 2}
    return sorted(
        out, key=lambda s: (s["budget_epochs"], s["target"], order[s["tool"]], -s["test_mean"])
    )
