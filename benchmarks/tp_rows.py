"""Torch-Pruning's rows of ``quality.py``: its pruners through its documented API on the
same dense model and budget, one ratio for every layer found by bisection (``tp_prune``),
its sparse learning as a compressor regularizer, then fine-tuned with compressor's loop at
``compress``'s settings, so only the pruner differs (``tp_row``). ``quality_regimes.py`` and
``latency_target.py`` run them too."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from quality_tasks import TASKS, Task, _split_variant, data_dir

TP_PRUNERS = ["MagnitudePruner", "GroupNormPruner", "BNScalePruner"]


class _TPSparsity:
    """Torch-Pruning's sparse learning as a compressor regularizer: after every backward,
    ``pruner.regularize(model)`` adds its gradient (the documented training loop)."""

    def __new__(cls, pruner: Any) -> Any:
        from compressor.methods.base import Regularizer

        class TPSparsity(Regularizer):
            name = "tp-sparsity"
            paper = "Torch-Pruning's own sparse learning"

            def penalty(self, model: Any, features: Any) -> None:
                return None

            def setup(self, model: Any, **kw: Any) -> None:
                pruner.update_regularizer()

            def after_backward(self, model: Any) -> None:
                pruner.regularize(model)

        return TPSparsity()


def _tp_pruner(kind: str, model: Any, ratio: float, size: int, round_to: int | None = None) -> Any:
    import torch
    import torch_pruning as tp

    from compressor.pruning import classifier_layers

    common = {
        "example_inputs": torch.zeros(1, 3, size, size),
        "pruning_ratio": ratio,
        "ignored_layers": classifier_layers(model),
        "round_to": round_to,
    }
    if kind == "MagnitudePruner":
        return tp.pruner.MagnitudePruner(
            model, importance=tp.importance.GroupMagnitudeImportance(p=2), **common
        )
    if kind == "GroupNormPruner":
        return tp.pruner.GroupNormPruner(
            model, importance=tp.importance.GroupMagnitudeImportance(p=2), **common
        )
    return tp.pruner.BNScalePruner(model, importance=tp.importance.BNScaleImportance(), **common)


def _tp_prune_to(
    kind: str,
    model: Any,
    target: float,
    size: int,
    cost: Callable[[Any], float] | None = None,
    round_to: int | None = None,
) -> Any:
    """Prune a copy of ``model`` at the per-layer ratio whose cost meets ``target`` (a
    fraction of the dense model's) from below, by bisection on the ratio. ``cost``: MACs
    by compressor's fvcore convention unless given (e.g. a latency table's prediction)."""

    return tp_prune(kind, model, target, size, cost, round_to)[0]


def tp_prune(
    kind: str,
    model: Any,
    target: float,
    size: int,
    cost: Callable[[Any], float] | None = None,
    round_to: int | None = None,
) -> tuple[Any, float]:
    """``_tp_prune_to``'s pruned copy and the share of the group L2-norm mass that the
    removed channels held (``tp_step``)."""
    from compressor.analysis import count_macs

    cost = cost or (lambda m: count_macs(m, (3, size, size)))
    total = cost(model)
    lo, hi, best = 0.0, 0.99, None
    for _ in range(14):
        mid = (lo + hi) / 2
        trial = copy.deepcopy(model)
        share = tp_step(_tp_pruner(kind, trial, mid, size, round_to))
        frac = cost(trial) / total
        if frac <= target:
            hi, best = mid, (trial, share)
            if frac >= 0.97 * target:
                break
        else:
            lo = mid
    if best is None:
        raise ValueError(
            f"out of reach: at ratio {mid:.3f} the model still costs {frac:.3f} of the dense "
            f"model's, above {target:.3f}"
        )
    return best


def tp_step(pruner: Any) -> float:
    """``pruner.step()``, and the share of the group L2-norm mass (over every group it
    ranked) that the channels it removed held."""
    import torch_pruning as tp

    ranked: dict[Any, Any] = {}
    estimate = pruner.estimate_importance
    # the mass: each channel's group L2 norm, unnormalised (the pruners' own importance is
    # normalised per group, which would make the share the fraction of channels removed);
    # compressor's `none` ranks by the same norms
    norms = tp.importance.GroupMagnitudeImportance(p=2, group_reduction="sum", normalizer=None)

    def record(group: Any) -> Any:
        imp = estimate(group)
        if imp is not None:
            ranked[group[0].dep.target.module] = norms(group).detach().clamp(min=0).sqrt().cpu()
        return imp

    pruner.estimate_importance = record
    removed = 0.0
    for group in pruner.step(interactive=True):
        imp = ranked.get(group[0].dep.target.module)
        if imp is not None:
            removed += float(imp[[i for i in group[0].idxs if i < len(imp)]].sum())
        group.prune()
    total = sum(float(imp.sum()) for imp in ranked.values())
    return removed / total if total > 0 else 0.0


def _tp_epochs(kind: str, task: Task = TASKS["mnist15k"]) -> list[int]:
    """[sparse-learning epochs, fine-tuning epochs] of a pruner, with its ``+rAfB`` split;
    by default the task's split, all fine-tuning for MagnitudePruner (no sparse learning)."""
    base, _, variant = kind.partition("+")
    if variant:
        split = _split_variant(variant)
        if split is None:
            raise SystemExit(f"unknown Torch-Pruning variant {variant!r}; use rAfB, e.g. r1f5")
        return list(split)
    if base == "MagnitudePruner":
        return [0, task.total_epochs]
    return [task.reg_epochs, task.ft_epochs]


def _tp_scores(model: Any, bundle: Any) -> dict[str, float]:
    import torch

    from compressor.evaluation import evaluate

    return {
        split: evaluate(model, bundle.split(split), bundle.preprocess, device=torch.device("cpu"))[
            "top1"
        ]
        for split in ("val", "test")
    }


def _tp_sparse_learning(
    kind: str, loaded: Any, bundle: Any, train: Any, data: Any, size: int, cached: Path
) -> tuple[Any, float]:
    """Torch-Pruning's sparse learning (none for MagnitudePruner: plain training) on
    ``loaded``'s model, saved to (or read back from) ``cached``: (the model, its last
    validation top-1)."""
    from compressor.checkpoint import load_model, save_model
    from compressor.training import fit

    if cached.is_file():
        reg = load_model(cached)
        return reg.model, reg.metadata["regularized_top1"]
    sparsity = None
    if kind != "MagnitudePruner":  # the ratio is chosen after sparse learning
        sparsity = _TPSparsity(_tp_pruner(kind, loaded.model, 0.5, size))
    hist = fit(loaded.model, bundle, train, data, regularizer=sparsity, progress=False)
    regularized = hist.history[-1].val_top1
    loaded.metadata["regularized_top1"] = regularized
    loaded.metadata["sparse_epochs"] = len(hist.history)
    save_model(loaded, cached)
    return loaded.model, regularized


def _stage_configs(reg_epochs: int, ft_epochs: int, seed: int) -> tuple[Any, Any]:
    """The sparse-learning and fine-tuning stages' settings: compress's two stages (their
    learning rates, ``--lr`` and ``--ft-lr``, and every other default), on the CPU."""
    from compressor.config import TrainConfig

    device = "cpu"  # the benchmark's (the library's default is "auto")
    return (
        TrainConfig.create(stage="regularize", epochs=reg_epochs, seed=seed, device=device),
        TrainConfig.create(stage="finetune", epochs=ft_epochs, seed=seed, device=device),
    )


def _layer_widths(model: Any) -> list[tuple[str, int]]:
    """(name, output channels or features) of every convolution and linear layer."""
    from torch import nn

    return [
        (n, m.out_channels if isinstance(m, nn.Conv2d) else m.out_features)
        for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]


def tp_row(
    work: Path,
    model_path: Path,
    kind: str,
    target: int,
    seed: int,
    task: Task = TASKS["mnist15k"],
    *,
    cost: tuple[str, Callable[[Any], float], float] | None = None,
    round_to: int | None = None,
) -> dict[str, Any]:
    """Torch-Pruning's ``kind`` at ``target`` x fewer MACs (the task's budget), then
    fine-tuned as compressor fine-tunes; ``cost``: (a name for the row's files, the cost
    of a model, the fraction of the dense model's cost to meet) in place of MACs;
    ``round_to``: Torch-Pruning's own option (channel counts in multiples of it)."""
    label = f"{cost[0]}-" if cost else ""
    out = work / f"tp-{kind}-{label}{target}x-s{seed}.json"
    if out.is_file():
        return json.loads(out.read_text())
    reg_epochs, ft_epochs = _tp_epochs(kind, task)
    kind = kind.partition("+")[0]
    from compressor.analysis import count_macs, count_params
    from compressor.checkpoint import load_model, save_model
    from compressor.config import DataConfig
    from compressor.data import load_data
    from compressor.training import fit
    from compressor.utils import seed_everything

    print(f"# torch-pruning {kind} {reg_epochs}+{ft_epochs} {target}x seed {seed}", flush=True)
    t0 = time.perf_counter()
    loaded = load_model(model_path)
    # no augmentation: what compress picks for runs under AUGMENT_FROM_EPOCHS, as every split is
    data = DataConfig(data_dir(work, task), augment=False, val_split=task.val_split)
    bundle = load_data(data, channels=3, recorded=loaded.preprocess)
    size = task.input_size
    train, finetune = _stage_configs(reg_epochs, ft_epochs, seed)
    model = loaded.model
    dense_macs = count_macs(model, (3, size, size))
    dense_scores = _tp_scores(model, bundle)
    seed_everything(seed)
    regularized = None
    if reg_epochs > 0:  # training before pruning does not depend on the target: once per seed
        cached = work / f"tp-{kind}-s{seed}-regularized-r{reg_epochs}.pt"
        model, regularized = _tp_sparse_learning(kind, loaded, bundle, train, data, size, cached)
    if cost:
        pruned = _tp_prune_to(kind, model, cost[2], size, cost[1], round_to)
    else:
        pruned = _tp_prune_to(kind, model, task.targets[target], size)
    seed_everything(seed)
    fit(pruned, bundle, finetune, data, progress=False)
    scores = _tp_scores(pruned, bundle)
    loaded.model = pruned.cpu()
    name = out.name.removesuffix(".json")
    save_model(loaded, work / f"{name}.pt")
    layers = _layer_widths(pruned)
    row = {
        "task": task.name,
        "tool": "torch-pruning",
        "method": name.split("-")[1],
        "split": f"{reg_epochs}+{ft_epochs}",
        "target_macs_ratio": target,
        "seed": seed,
        "macs_ratio": dense_macs / count_macs(pruned, (3, size, size)),
        "test_accuracy": scores["test"],
        "val_accuracy": scores["val"],
        "dense_test_accuracy": dense_scores["test"],
        "dense_val_accuracy": dense_scores["val"],
        "params": count_params(pruned),
        "regularized_val_accuracy": regularized,
        "widths": [w for _, w in layers],
        "layers": [n for n, _ in layers],
        "model": str(work / f"{name}.pt"),
        "seconds": time.perf_counter() - t0,
    }
    out.write_text(json.dumps(row, indent=2))
    return row
