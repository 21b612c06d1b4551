"""The statistics of ``quality.py``'s tables: mean and sd over seeds, the rows whose
architecture differs from ``none``'s, paired differences by seed (``regimes.paired``: mean,
95% t-interval, seeds ahead) against ``none`` and the best Torch-Pruning row, the best rows
per target and the split the seed methods' early prune chose."""

from __future__ import annotations

import collections
import statistics
from typing import Any

from quality_tasks import SEED_METHODS
from regimes import paired


def _mean_sd(xs: list[float]) -> tuple[float, float | None]:
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else None)


def _key(r: dict[str, Any]) -> tuple[str, str, int]:
    return (r["tool"], r["method"], r["target_macs_ratio"])


def mark_architectures(rows: list[dict[str, Any]]) -> None:
    """``differs_from_none``: whether a row's per-layer widths differ from those of
    compressor's ``none`` (default split) for the same target and seed."""
    none = {
        (r["target_macs_ratio"], r["seed"]): r["widths"]
        for r in rows
        if (r["tool"], r["method"]) == ("compressor", "none")
    }
    for r in rows:
        ref = none.get((r["target_macs_ratio"], r["seed"]))
        r["differs_from_none"] = None if ref is None else r["widths"] != ref


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    mark_architectures(rows)
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(_key(r), []).append(r)
    best_tp = {}
    for (tool, _, target), rs in groups.items():
        mean = statistics.mean(r["test_accuracy"] for r in rs)
        if tool == "torch-pruning" and mean > best_tp.get(target, (None, -1.0))[1]:
            best_tp[target] = (rs, mean)
    out = []
    for (tool, method, target), rs in groups.items():
        test_mean, test_sd = _mean_sd([r["test_accuracy"] for r in rs])
        val_mean, val_sd = _mean_sd([r["val_accuracy"] for r in rs])
        shares = [r["share"] for r in rs if r.get("share") is not None]
        none = groups.get(("compressor", "none", target))
        tp = best_tp.get(target)
        out.append(
            {
                "tool": tool,
                "method": method,
                "target": target,
                "seeds": len(rs),
                "splits": sorted({r["split"] for r in rs}),
                "test_mean": test_mean,
                "test_sd": test_sd,
                "val_mean": val_mean,
                "val_sd": val_sd,
                "macs_ratio_mean": statistics.mean(r["macs_ratio"] for r in rs),
                "share_mean": statistics.mean(shares) if shares else None,
                "differs_from_none": sum(bool(r.get("differs_from_none")) for r in rs),
                # seeds with a `none` row to compare with (seeds 3-4 have none)
                "compared_with_none": sum(r.get("differs_from_none") is not None for r in rs),
                "vs_none": paired(rs, none)
                if none and (tool, method) != ("compressor", "none")
                else None,
                "vs_best_tp": paired(rs, tp[0]) if tp and rs is not tp[0] else None,
                "best_tp": f"{tp[0][0]['method']}" if tp else None,
                "dense_test": rs[0]["dense_test_accuracy"],
                "dense_val": rs[0]["dense_val_accuracy"],
            }
        )
    return sorted(out, key=lambda s: (s["target"], s["tool"], -s["test_mean"]))


def compressor_split(rows: list[dict[str, Any]], target: int, seed: int) -> str | None:
    """The split the seed methods' early prune chose most often at (target, seed), as rAfB."""
    splits = [
        r["split"]
        for r in rows
        if r["tool"] == "compressor"
        and r["method"] in SEED_METHODS
        and (r["target_macs_ratio"], r["seed"]) == (target, seed)
    ]
    if not splits:
        return None
    reg, ft = collections.Counter(splits).most_common(1)[0][0].split("+")
    return f"r{reg}f{ft}"


def best_rows(rows: list[dict[str, Any]], target: int) -> list[tuple[str, str]]:
    """(tool, method) of the best compressor method and the best Torch-Pruning row at a
    target, by mean test top-1."""
    out = []
    for tool in ("compressor", "torch-pruning"):
        means: dict[str, list[float]] = {}
        for r in rows:
            if (
                r["tool"] == tool
                and r["target_macs_ratio"] == target
                and r["method"].split("+")[0] != "none"
            ):
                means.setdefault(r["method"], []).append(r["test_accuracy"])
        if means:
            out.append((tool, max(means, key=lambda m: statistics.mean(means[m]))))
    return out
