"""The plots of report.md: channels per layer, and the training curves (with the
``--lambda auto`` controller's strength and share). matplotlib is imported when a plot is
drawn."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from compressor.utils import atomic_path


def plot_channels(layers: Sequence[Mapping[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [_layer_label(r) for r in layers]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.28 * len(names)), 3.6))
    xs = range(len(names))
    ax.bar(xs, [r["before"] for r in layers], color="#c0c0c0", label="before")
    ax.bar(xs, [r["after"] for r in layers], color="#2a6fb0", label="after")
    ax.set_xticks(list(xs), names, rotation=90, fontsize=7)
    ax.set_xlabel("layer")
    ax.set_ylabel("output channels")
    ax.set_title("Channels per layer")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:  # a failed write names its file
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


_SHORT_TYPES = {"Conv2d": "conv", "Linear": "fc", "ConvTranspose2d": "deconv", "Conv1d": "conv1d"}


def _layer_label(row: Mapping[str, Any]) -> str:
    """``layer1.0.conv1`` as it is; a name that starts with an index (``0``, ``7.conv1``,
    from an ``nn.Sequential``) gets its type in front: ``conv 0``, ``conv 7.conv1``."""
    name = str(row["name"])
    kind = _SHORT_TYPES.get(str(row.get("type", "")), str(row.get("type", "")).lower())
    if name.split(".")[0].isdigit() and kind:
        return f"{kind} {name}"
    return name


def plot_training(
    reg: Sequence[Mapping[str, Any]],
    ft: Sequence[Mapping[str, Any]],
    strength: Mapping[str, Any] | None,
    path: Path,
) -> None:
    """Loss (penalty on its own axis), validation top-1 (with the controller's checks
    inside the regularize stage, so a one-epoch stage is a line, not a dot) and, under
    ``--lambda auto``, the strength and the share."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 3 if strength else 2
    # stacked, one epoch axis for every panel: wide side-by-side panels had small fonts and
    # different epoch ranges
    fig, axes = plt.subplots(panels, 1, figsize=(7.5, 3.0 * panels), sharex=True)
    a, b = axes[0], axes[1]
    epochs = [h["epoch"] for h in reg] + [len(reg) + h["epoch"] for h in ft]
    runs = [*reg, *ft]
    a.plot(epochs, [h["train_loss"] for h in runs], marker="o", label="loss")
    a.set_ylabel("training loss (cross-entropy)")
    if reg:
        pen = a.twinx()
        pen.plot(
            [h["epoch"] for h in reg],
            [h["train_penalty"] for h in reg],
            marker="x",
            linestyle="--",
            color="#8e44ad",
            label="penalty",
        )
        pen.set_ylabel("penalty (regularize stage)")
        pen.legend(fontsize=7, loc="upper center")
    checks = [p for p in (strength or {}).get("history", []) if p.get("val_top1") is not None]
    if checks:
        b.plot(
            [p["epoch"] for p in checks],
            [p["val_top1"] for p in checks],
            marker=".",
            color="#7f8c8d",
            label="controller checks",
        )
    b.plot(epochs, [h["val_top1"] for h in runs], marker="o", label="end of epoch")
    b.set_ylabel("top-1 (%)")
    for ax in (a, b):
        ax.axvline(len(reg), color="#b03a2e", linestyle=":", label="pruned")
        ax.legend(fontsize=8, loc="best")
    a.set_title("training loss")
    b.set_title("validation top-1")
    if strength:
        _plot_strength(axes[2], strength)
    axes[-1].set_xlabel("epoch (regularize, then fine-tune)")
    axes[-1].set_xlim(0, max(len(reg) + len(ft), 1))
    fig.tight_layout()
    with atomic_path(path) as tmp:  # a failed write names its file
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _plot_strength(ax: Any, strength: Mapping[str, Any]) -> None:
    pts = strength["history"]
    lines = ax.step(
        [p["epoch"] for p in pts],
        [p["strength"] for p in pts],
        where="post",
        label="strength",
    )
    ax.set_yscale("log")
    ax.set_ylabel("strength (log)")
    ax.set_title("--lambda auto")
    shares = [(p["epoch"], p["share"]) for p in pts if p["share"] is not None]
    if shares:
        d = ax.twinx()
        lines += d.plot(*zip(*shares, strict=True), color="#c77c02", marker=".", label="share")
        d.set_ylim(0, 1)
        d.set_ylabel("share of the score mass to remove")
    ax.legend(lines, [ln.get_label() for ln in lines], fontsize=8, loc="best")
