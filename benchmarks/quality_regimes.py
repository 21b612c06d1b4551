"""Does compression keep accuracy at equal total epochs? The quality benchmark in the two
regimes of ``regimes.py`` (trained and pretrained), each row spending the same epochs,
read against a dense reference that no longer gains from more training and against a
control that trains the dense model for the same extra epochs.

    python benchmarks/quality_regimes.py --task fmnist-resnet18-trained --part reference
    python benchmarks/quality_regimes.py --task fmnist-resnet18-trained --quick
    python benchmarks/quality_regimes.py --task fmnist-resnet18-trained      # seeds 0-2, then 3-4
    python benchmarks/quality_regimes.py --task fmnist-mobilenetv2-pretrained --part start

Parts:
- ``reference``: the dense model at each of the task's ``reference_epochs`` (seed 0, train's
  recipe, augmentation on as for any run of 10 epochs or more), with the validation top-1
  of each: the curve that shows whether doubling the epochs still gains. The trained
  regime compresses the shortest run that doubling gains under 0.2 points over.
- ``start`` (pretrained regime): the pretrained backbone against the same network from
  scratch, at the task's input size, each for ``start_epochs``: the pretrained start must
  win by a clear margin, or the regime measures nothing of it.
- ``rows`` (the default): every row of ``regimes.baseline_rows`` (and ``--methods``) at each
  budget, target and seed.

Every run goes through the commands users run (``compressor train``, ``compressor
compress``), Torch-Pruning's rows through its documented API with compressor's training
loop and the same recipe. Results: benchmarks/results/quality_<task>.{json,md,png}; each
finished row is kept there, so a later session adds seeds to it (the dense reference is
retrained deterministically and must score the same, or the script stops).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from common import RESULTS, ROOT, compress_once, run_payload, sh
from quality_tasks import Task, data_dir
from regimes import (
    REGIMES,
    Regime,
    Row,
    baseline_rows,
    method_row,
    ran_as_budgeted,
    row_key,
    summarise,
)
from tp_rows import _tp_scores, _tp_sparse_learning, tp_prune

from compressor import read_output

WORK = ROOT / "benchmarks" / "_work"


def as_task(regime: Regime) -> Task:
    """The ``quality_tasks.Task`` that ``quality_tasks.data_dir`` and ``tp_rows.tp_row`` read."""
    return Task(
        regime.name,
        regime.arch,
        "fmnist",
        regime.input_size,
        0,
        regime.targets,
        0,
        0,
        f"quality_{regime.name}",
        train_images=regime.train_images,
        val_split=regime.val_split,
        backbone=regime.backbone,
    )


def data_options(work: Path, regime: Regime) -> list[str]:
    return [
        *["--data", data_dir(work, as_task(regime))],
        *["--val-split", repr(regime.val_split)],
        *["--input-size", str(regime.input_size)],
        "--augment",  # every run of the table, as the dense reference trains
    ]


def backbone_file(work: Path) -> Path:
    """The shared MobileNetV2 backbone under torchvision's names (what a user converts once)."""
    out = work / "backbone.pt"
    if not out.is_file():
        import torch
        from mobilenetv2_backbone import SHARED, convert

        torch.save(convert(torch.load(SHARED, weights_only=True)), out)
    return out


def train(
    work: Path,
    regime: Regime,
    name: str,
    epochs: int,
    seed: int = 0,
    *,
    pretrained: bool | None = None,
    lr: float | None = None,
    weights: Path | None = None,
) -> dict[str, Any]:
    """``compressor train`` into ``work/name.pt`` unless it ran; its summary: the path,
    the last epoch's validation top-1, the test top-1 and the epochs that ran."""
    out = work / f"{name}.pt"
    if not out.is_file():
        start: list[str] = []
        if weights is not None:
            start = ["--weights", str(weights)]
        elif pretrained if pretrained is not None else regime.backbone:
            start = ["--weights", str(backbone_file(work))]
        sh(
            [
                *["compressor", "train", regime.arch, *start],
                *data_options(work, regime),
                *["--epochs", str(epochs), "--seed", str(seed)],
                *["--lr", repr(lr if lr is not None else regime.dense_lr)],
                *["-o", str(out), "-q"],
            ],
            work / f"{name}.log",
        )
    summary = read_output("train", out.with_name(f"{name}.train.json"))
    history = summary["history"]
    return {
        "model": str(out),
        "epochs": len(history),
        "val_top1": history[-1]["val_top1"] if history else None,
        "test_top1": (summary.get("test") or {}).get("top1"),
        "seconds": summary.get("seconds"),
        "val_curve": [h["val_top1"] for h in history],
    }


def reference(
    work: Path, regime: Regime, kept: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """The dense model at each ``reference_epochs`` (seed 0): the convergence curve; the
    points a results file ``kept`` are not trained again."""
    have = {c["epochs"]: c for c in kept or []}
    return [
        have.get(e) or {"epochs": e, **train(work, regime, f"dense-e{e}-s0", e)}
        for e in regime.reference_epochs
    ]


def converged(curve: list[dict[str, Any]], tolerance: float = 0.2) -> dict[str, Any] | None:
    """The shortest run of the curve that its doubling gains less than ``tolerance``
    points of validation top-1 over (None: no run of the curve is converged)."""
    by_epochs = {c["epochs"]: c for c in curve}
    for c in sorted(curve, key=lambda c: c["epochs"]):
        longer = by_epochs.get(2 * c["epochs"])
        # rounded: top-1 figures are counts of images, their difference is exact
        if longer is not None and round(longer["val_top1"] - c["val_top1"], 6) < tolerance:
            return c
    return None


def start_check(work: Path, regime: Regime, epochs: int) -> list[dict[str, Any]]:
    """The pretrained start against training from scratch, each for ``epochs`` at the
    task's input size (from scratch at train's default lr, as a user would)."""
    return [
        {"start": "pretrained", **train(work, regime, f"dense-e{epochs}-s0", epochs)},
        {
            "start": "scratch",
            **train(work, regime, f"scratch-e{epochs}-s0", epochs, pretrained=False, lr=0.05),
        },
    ]


# --------------------------------------------------------------------------- the rows


def head_model(work: Path, regime: Regime, seed: int) -> Path:
    """The pretrained backbone with a new head for the data (``train --epochs 0``): where
    every pretrained-regime row starts; the seed draws the head."""
    return Path(train(work, regime, f"head-s{seed}", 0, seed)["model"])


def start_model(work: Path, regime: Regime, row: Row, seed: int, reference: Path) -> Path:
    """The file a row's first command reads: the dense reference (trained regime), the
    new-head model, or (pretrained MagnitudePruner, which prunes a fine-tuned model) a
    dense fine-tune of ``row.before`` epochs from it."""
    if row.start == "dense":
        return reference
    if row.tool == "torch-pruning" and row.method == "MagnitudePruner":
        return Path(train(work, regime, f"dense-e{row.before}-s{seed}", row.before, seed)["model"])
    return head_model(work, regime, seed)


def compressor_run(
    work: Path, regime: Regime, row: Row, target: int, seed: int, model: Path
) -> tuple[str, dict[str, Any]]:
    """``compressor compress`` for a row (the control: ``--ratio 0``, nothing removed,
    ``row.after`` epochs of the fine-tuning recipe); (its folder's name, its report)."""
    control = row.tool == "control"
    name = f"{model.stem}-{row.method}-r{row.before}f{row.after}-" + (
        f"s{seed}" if control else f"{target}x-s{seed}"
    )
    cut = ["--ratio", "0"] if control else ["--target-macs", repr(regime.targets[target])]
    options = [
        *["--method", row.method if not control else "none"],
        *data_options(work, regime),
        *["--reg-epochs", str(row.before), "--ft-epochs", str(row.after)],
        *cut,
        *["--seed", str(seed), "--threads", "1"],
    ]
    if row.method == "none" and row.before > 0 and not control:
        # the row is "train B epochs, prune, fine-tune": early prune (on for `none` too,
        # which has no penalty to strengthen) would move epochs across the cut
        options.append("--no-early-prune")
    return name, compress_once(work, name, model, options)


def compressor_fields(report: dict[str, Any]) -> dict[str, Any]:
    """What a table row keeps of a compress report."""
    b, c, pruning = report["baseline"], report["compressed"], report["pruning"]
    return {
        "macs_ratio": b["macs"] / c["macs"],
        "test_accuracy": c["test_top1"],
        "val_accuracy": c["val_top1"],
        "val_after_prune": pruning.get("val_top1_after_prune"),
        "share": pruning.get("removed_share"),
        "params": c["params"],
        "widths": [r["after"] for r in report["layers"]],
        "layers": [r["name"] for r in report["layers"]],
        "epochs_run": [report["epochs"]["regularize"], report["epochs"]["finetune"]],
    }


def dense_control(work: Path, regime: Regime, row: Row, seed: int) -> dict[str, Any]:
    """The pretrained regime's ceiling: a dense fine-tune of ``row.after`` epochs from the
    backbone (train's recipe for the dense model)."""
    t = train(work, regime, f"dense-e{row.after}-s{seed}", row.after, seed)
    return {
        "macs_ratio": 1.0,
        "test_accuracy": t["test_top1"],
        "val_accuracy": t["val_top1"],
        "val_after_prune": None,
        "share": None,
        "params": None,
        "widths": None,
        "layers": None,
        "epochs_run": [0, t["epochs"]],
    }


def tp_fields(
    work: Path, regime: Regime, row: Row, target: int, seed: int, model: Path
) -> dict[str, Any]:
    """Torch-Pruning's row: its sparse learning for ``row.before`` epochs (GroupNormPruner;
    cached per seed, as it does not depend on the target), one pruning ratio for every
    layer found by bisection so that the MACs meet the target from below, then
    ``row.after`` epochs of fine-tuning, all with compressor's loop and compress's
    recipe (peak lr 0.01 before pruning, 0.02 after, augmentation on)."""
    import torch
    from torch import nn

    from compressor.analysis import count_macs, count_params
    from compressor.checkpoint import load_model
    from compressor.config import DataConfig, TrainConfig
    from compressor.data import load_data
    from compressor.evaluation import evaluate
    from compressor.training import fit
    from compressor.utils import seed_everything

    loaded = load_model(model)
    data = DataConfig(data_dir(work, as_task(regime)), augment=True, val_split=regime.val_split)
    bundle = load_data(data, channels=3, recorded=loaded.preprocess)
    size = regime.input_size
    sparse = row.before if row.method != "MagnitudePruner" else 0
    seed_everything(seed)
    current = loaded.model
    before = row.before
    if sparse:
        cached = work / f"tp-{row.method}-{model.stem}-s{seed}-sparse{sparse}.pt"
        train_config = TrainConfig(epochs=sparse, lr=0.01, seed=seed, device="cpu")
        current, _ = _tp_sparse_learning(
            row.method, loaded, bundle, train_config, data, size, cached
        )
        before = load_model(cached).metadata["sparse_epochs"]
    elif row.before:  # a dense fine-tune by `compressor train` made the start model
        before = len(read_output("train", model.with_name(model.stem + ".train.json"))["history"])
    dense_macs = count_macs(current, (3, size, size))
    pruned, share = tp_prune(row.method, current, regime.targets[target], size)
    cpu = torch.device("cpu")
    after_prune = evaluate(pruned, bundle.split("val"), bundle.preprocess, device=cpu)["top1"]
    seed_everything(seed)
    finetune = TrainConfig(epochs=row.after, lr=0.02, seed=seed, device="cpu")
    history = fit(pruned, bundle, finetune, data, progress=False).history
    scores = _tp_scores(pruned, bundle)
    layers = [
        (n, m.out_channels if isinstance(m, nn.Conv2d) else m.out_features)
        for n, m in pruned.named_modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    return {
        "macs_ratio": dense_macs / count_macs(pruned, (3, size, size)),
        "test_accuracy": scores["test"],
        "val_accuracy": scores["val"],
        "val_after_prune": after_prune,
        "share": share,
        "params": count_params(pruned),
        "widths": [w for _, w in layers],
        "layers": [n for n, _ in layers],
        "epochs_run": [before, len(history)],
    }


def run_row(
    work: Path,
    regime: Regime,
    row: Row,
    budget: int,
    target: int,
    seed: int,
    reference: dict[str, Any],
) -> dict[str, Any]:
    """One row at one budget, target and seed (cached in the work folder)."""
    # keyed by the reference too: a row of another dense model is never taken for this one's
    rows = work / "rows" / Path(reference["model"]).stem
    cache = rows / f"{row.tool}-{row.label.replace(' ', '-')}-{target}x-s{seed}.json"
    if row.tool == "control":  # one run per seed, listed under every target
        cache = cache.with_name(f"control-{row.label.replace(' ', '-')}-s{seed}.json")
    if cache.is_file():
        return {**json.loads(cache.read_text()), "target_macs_ratio": target}
    print(f"# {regime.name} {row.tool} {row.label} {target}x seed {seed}", flush=True)
    t0 = time.perf_counter()
    model = start_model(work, regime, row, seed, Path(reference["model"]))
    if row.tool == "torch-pruning":
        fields = tp_fields(work, regime, row, target, seed, model)
    elif row.tool == "control" and regime.regime == "pretrained":
        fields = dense_control(work, regime, row, seed)
    else:
        fields = compressor_fields(compressor_run(work, regime, row, target, seed, model)[1])
    if row.tool == "control":  # nothing is cut
        fields.update(val_after_prune=None, share=None)
    out = {
        "task": regime.name,
        "regime": regime.regime,
        "tool": row.tool,
        "method": row.method,
        "label": row.label,
        "split": f"{row.before}+{row.after}",
        "epochs_before": row.before,
        "epochs_after": row.after,
        "budget_epochs": regime.total(budget),
        "target_macs_ratio": target,
        "seed": seed,
        **fields,
        "dense_test_accuracy": reference["test_top1"],
        "dense_val_accuracy": reference["val_top1"],
        "seconds": time.perf_counter() - t0,
    }
    out["as_budgeted"] = ran_as_budgeted(out)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(out, indent=2))
    return out


# --------------------------------------------------------------------------- the table


def reference_for(work: Path, regime: Regime, curve: list[dict[str, Any]]) -> dict[str, Any]:
    """The dense model every row of the trained regime compresses (the shortest converged
    run of the curve, else the longest, marked) or, pretrained, the seed-0 dense fine-tune
    of E + k epochs that the rows are read against."""
    if regime.regime == "pretrained":
        total = regime.total(regime.budgets[0])
        doubled = {c["epochs"]: c["val_top1"] for c in curve}
        return {
            "converged": round(doubled[2 * total] - doubled[total], 6) < 0.2
            if {total, 2 * total} <= set(doubled)
            else None,
            "epochs": total,
            **train(work, regime, f"dense-e{total}-s0", total),
        }
    chosen = converged(curve) or max(curve, key=lambda c: c["epochs"])
    # a later session retrains it (the work folder is gone); training is deterministic on
    # the CPU, so it must score as the curve recorded
    ref = train(work, regime, f"dense-e{chosen['epochs']}-s0", chosen["epochs"])
    if (ref["val_top1"], ref["test_top1"]) != (chosen["val_top1"], chosen["test_top1"]):
        raise SystemExit(
            f"the dense reference retrained to val/test {ref['val_top1']}/{ref['test_top1']}, "
            f"the curve recorded {chosen['val_top1']}/{chosen['test_top1']}: not the same model"
        )
    return {"converged": converged(curve) is not None, "epochs": chosen["epochs"], **ref}


def run_table(
    args: Any, regime: Regime, reference: dict[str, Any], rows: list[dict[str, Any]]
) -> None:
    """Every asked row at every budget, target and seed, in place into ``rows`` (results
    already there are kept: a row of the results file is not run again)."""
    have = {row_key(r) for r in rows}
    for seed in args.seeds:
        for budget in args.budgets:
            wanted = baseline_rows(regime, budget) + [
                method_row(regime, budget, m) for m in args.methods
            ]
            for target in args.targets:
                for row in wanted:
                    if args.labels and not {row.label, row.label.split(" ")[0]} & set(args.labels):
                        continue
                    # the control runs once and is listed under every target at once, so
                    # that an interrupted table never has it under some targets only
                    cells = args.targets if row.tool == "control" else [target]
                    for cell in cells:
                        key = (regime.name, regime.total(budget), cell, row.tool, row.label, seed)
                        if key not in have:
                            rows.append(
                                run_row(args.work, regime, row, budget, cell, seed, reference)
                            )
                            have.add(key)
                    write(args, regime, rows)


def extra_seed_labels(rows: list[dict[str, Any]]) -> list[str]:
    """The rows whose pairs an aim reads: the control, the best ``none`` row, the best
    compressor method and the best Torch-Pruning row of any cell (by mean validation
    top-1, the split that steers)."""
    labels = {"dense"}
    for s in summarise(rows):
        for name in ("none_label", "best_tp_label"):
            if s.get(name):
                labels.add(s[name].split(" ")[0])
    methods = [s for s in summarise(rows) if s["tool"] == "compressor" and s["method"] != "none"]
    if methods:
        labels.add(max(methods, key=lambda s: s["val_mean"])["method"])
    return sorted(labels)


def load_rows(regime: Regime, reference: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of this task's results file, when they come from the same dense
    reference (test and validation top-1); stop otherwise."""
    path = RESULTS / f"quality_{regime.name}.json"
    if not path.is_file():
        return []
    prev = json.loads(path.read_text())
    dense = {(r["dense_test_accuracy"], r["dense_val_accuracy"]) for r in prev.get("rows", [])}
    if dense - {(reference["test_top1"], reference["val_top1"])}:
        raise SystemExit(
            f"{path} holds rows of another dense reference {sorted(dense)}; this run's is "
            f"({reference['test_top1']}, {reference['val_top1']}): move the file away first"
        )
    return [
        {**r, "kept_from": r.get("kept_from") or prev.get("commit")} for r in prev.get("rows", [])
    ]


def payload(args: Any, regime: Regime, rows: list[dict[str, Any]]) -> dict[str, Any]:
    out = run_payload(args.t0, rows)
    out.update(
        task=regime.name,
        regime=regime.regime,
        arch=regime.arch,
        input_size=regime.input_size,
        data=args.data_summary,
        reference=args.reference,
        curve=args.curve,
        start_check=args.start_check,
        summary=summarise(rows),
    )
    return out


def write(args: Any, regime: Regime, rows: list[dict[str, Any]]) -> None:
    from regime_report import write_results

    write_results(payload(args, regime, rows), regime)


def main() -> None:
    args = parse_args()
    regime = REGIMES[args.task]
    folder = f"quality_{regime.name}-{args.size or regime.input_size}px"
    if args.size:  # a trial at another size: its own results files
        name = f"{regime.name}-{args.size}px"
        regime = dataclasses.replace(regime, input_size=args.size, name=name)
    args.work = args.work or WORK / folder
    args.work.mkdir(parents=True, exist_ok=True)
    args.t0 = time.perf_counter()
    prev = RESULTS / f"quality_{regime.name}.json"
    kept = json.loads(prev.read_text()) if prev.is_file() else {}
    args.start_check = kept.get("start_check")
    if regime.backbone and (args.part == "start" or not args.start_check):
        args.start_check = start_check(args.work, regime, regime.start_epochs)
    if args.part == "start":
        print(json.dumps(args.start_check, indent=2))
        return
    if args.curve:
        epochs = tuple(int(e) for e in args.curve.split(","))
        regime = dataclasses.replace(regime, reference_epochs=epochs)
    args.curve = reference(args.work, regime, kept.get("curve"))
    if args.part == "reference":
        from regime_report import write_curve

        write_curve(run_payload(args.t0, args.curve), regime)
        print((RESULTS / f"quality_{regime.name}_curve.md").read_text())
        return
    args.reference = reference_for(args.work, regime, args.curve)
    args.data_summary = data_summary(Path(args.reference["model"]))
    rows = load_rows(regime, args.reference)
    args.seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    args.budgets = (
        [int(b) for b in args.budgets.split(",")] if args.budgets else list(regime.budgets)
    )
    args.budgets = args.budgets[:1] if args.quick and not args.budgets_given else args.budgets
    args.targets = (
        [int(t) for t in args.targets.split(",")] if args.targets else list(regime.targets)
    )
    run_table(args, regime, args.reference, rows)
    if not args.quick and args.extra_seeds:
        args.labels = extra_seed_labels(rows)
        args.seeds = [int(s) for s in args.extra_seeds.split(",")]
        run_table(args, regime, args.reference, rows)
    write(args, regime, rows)
    print((RESULTS / f"quality_{regime.name}.md").read_text())


def data_summary(model: Path) -> str:
    data = read_output("train", model.with_name(model.stem + ".train.json"))["data"]
    return (
        f"{data['train_images']} train / {data['val_images']} validation images held out from "
        f"them / {data.get('test_images')} test"
    )


def parse_args() -> Any:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", choices=sorted(REGIMES), default="fmnist-resnet18-trained")
    ap.add_argument("--part", choices=["reference", "start", "rows"], default="rows")
    ap.add_argument("--work", type=Path, default=None, help="default: benchmarks/_work/<task>")
    ap.add_argument("--quick", action="store_true", help="seed 0 at the first budget")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--extra-seeds", default="3,4", help="for the rows the aims pair")
    ap.add_argument(
        "--budgets", default=None, help="B (trained) or E (pretrained); default: the task's"
    )
    ap.add_argument("--targets", default=None, help="x fewer MACs; default: the task's")
    ap.add_argument("--methods", default="", help="compressor methods besides none, e.g. hgs,l1l2")
    ap.add_argument(
        "--rows", default="", help="only these rows: methods (dense,none) or labels ('none 0+16')"
    )
    ap.add_argument(
        "--curve", default=None, help="the reference's epochs, e.g. 10,20,40 (default: the task's)"
    )
    ap.add_argument(
        "--size",
        type=int,
        default=None,
        help="input size (a trial: results under the task's name + -<size>px)",
    )
    args = ap.parse_args()
    args.methods = [m for m in args.methods.split(",") if m]
    args.labels = [m for m in args.rows.split(",") if m]
    args.budgets_given = args.budgets is not None
    return args


if __name__ == "__main__":
    main()
