"""Which fine-tuning recipe recovers a heavily pruned model best? (Sets `compress`'s
`--ft-lr` default.)

    python benchmarks/finetune_lr.py        # about 15 minutes on 2 cores
    python benchmarks/finetune_lr.py --task fmnist-mobilenetv2 --seeds 0,1  # held-out test

With ``--task`` (``fmnist-resnet18`` or ``fmnist-mobilenetv2``, `quality.py`'s tasks and
dense models): the task's MAC targets with no regularize stage and all its epochs fine-tuning
(``--reg-epochs 0 --ft-epochs 4``), at peak learning rates 0.01, 0.02 and 0.05; test top-1
on the held-out test split, the differences to 0.05 paired by seed. Writes
benchmarks/results/finetune_lr_{task}.{json,md}.

Without it (the first measurement, on mnist15k):
The dense resnet18 of `benchmarks/quality.py` (mnist15k at 32x32, 5 epochs) is cut to 1/10
and 1/30 of its MACs with no regularize stage, then fine-tuned for 3 epochs, through the
command users run:
``compressor compress dense.pt --method none --reg-epochs 0 --ft-epochs 3
--target-macs T --ft-lr LR [--distill D] --seed S``; seeds 0, 1, 2. Rows: the peak
learning rate (0.01, the regularize stage's; 0.05, `train`'s) and, at 30x, distillation
from the dense model (`--distill 0.9`) at either rate. Writes benchmarks/results/finetune_lr.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from common import ROOT, compress_once, results_header, run_payload, save_results
from quality_tasks import TASKS, Task, data_options, dense

RECIPES = {  # name -> extra options
    "lr 0.01": ["--ft-lr", "0.01"],
    "lr 0.05": ["--ft-lr", "0.05"],
    "lr 0.01, distill 0.9": ["--ft-lr", "0.01", "--distill", "0.9"],
    "lr 0.05, distill 0.9": ["--ft-lr", "0.05", "--distill", "0.9"],
}
TARGETS = {10: ["lr 0.01", "lr 0.05"], 30: list(RECIPES)}


def run(work: Path, model: Path, target: int, recipe: str, seed: int) -> dict:
    name = f"ft-{target}x-{recipe.replace(' ', '').replace(',', '-')}-s{seed}"
    r = compress_once(
        work,
        name,
        model,
        [
            *["--method", "none", "--data", "mnist15k", "--reg-epochs", "0", "--ft-epochs", "3"],
            *["--target-macs", repr(1 / target), *RECIPES[recipe], "--seed", str(seed)],
        ],
    )
    return {
        "target_macs_ratio": target,
        "recipe": recipe,
        "seed": seed,
        "macs_ratio": r["baseline"]["macs"] / r["compressed"]["macs"],
        "accuracy": r["compressed"]["test_top1"],
        "dense_accuracy": r["baseline"]["test_top1"],
        "finetune_seconds": r["stages"].get("finetune"),
    }


TASK_RATES = ["0.01", "0.02", "0.05"]


def task_run(work: Path, model: Path, task: Task, target: int, lr: str, seed: int) -> dict:
    epochs = str(task.total_epochs)
    r = compress_once(
        work,
        f"ft-{target}x-lr{lr}-s{seed}",
        model,
        [
            *["--method", "none", *data_options(work, task), "--reg-epochs", "0"],
            *["--ft-epochs", epochs, "--target-macs", repr(task.targets[target])],
            *["--ft-lr", lr, "--seed", str(seed), "--threads", "1"],
        ],
    )
    return {
        "task": task.name,
        "target_macs_ratio": target,
        "lr": float(lr),
        "seed": seed,
        "macs_ratio": r["baseline"]["macs"] / r["compressed"]["macs"],
        "test_accuracy": r["compressed"]["test_top1"],
        "val_accuracy": r["compressed"]["val_top1"],
        "first_epoch_val": r["history"]["finetune"][0]["val_top1"],
        "dense_test_accuracy": r["baseline"]["test_top1"],
        "dense_val_accuracy": r["baseline"]["val_top1"],
    }


def task_table(task: Task, rows: list[dict]) -> list[str]:
    """Per target and rate: test top-1 mean ± sd, each seed's figure, the paired difference
    to lr 0.05, and validation top-1 after the first fine-tuning epoch."""
    lines = [
        "| target | peak lr | MACs cut | test top-1 | per seed | vs lr 0.05, paired | "
        "val after epoch 1 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for target in task.targets:
        base = {
            r["seed"]: r["test_accuracy"]
            for r in rows
            if r["target_macs_ratio"] == target and r["lr"] == 0.05
        }
        for lr in TASK_RATES:
            got = [r for r in rows if r["target_macs_ratio"] == target and r["lr"] == float(lr)]
            acc = [r["test_accuracy"] for r in got]
            sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
            diff = [r["test_accuracy"] - base[r["seed"]] for r in got]
            paired = (
                "-"
                if lr == "0.05"
                else f"{statistics.mean(diff):+.2f} ({sum(d > 0 for d in diff)}/{len(diff)} ahead)"
            )
            first = ", ".join(f"{r['first_epoch_val']:.1f}" for r in got)
            lines.append(
                f"| {target}x | {lr} | {got[0]['macs_ratio']:.2f}x | "
                f"{statistics.mean(acc):.2f} ± {sd:.2f} | "
                f"{', '.join(f'{a:.2f}' for a in acc)} | {paired} | {first} |"
            )
    return lines


def run_task(args: argparse.Namespace, seeds: list[int]) -> None:
    t0 = time.perf_counter()
    task = TASKS[args.task]
    work = ROOT / "benchmarks" / "_work" / f"quality_{task.name}"
    model = dense(work, task)
    rows = [
        task_run(work, model, task, target, lr, seed)
        for target in task.targets
        for seed in seeds
        for lr in TASK_RATES
    ]
    payload = run_payload(t0, rows)
    lines = [
        *results_header(f"Fine-tuning's peak learning rate after pruning: {task.name}", payload),
        f"{task.arch} at {task.input_size}x{task.input_size} on Fashion-MNIST ({task.name} of "
        f"`quality.py`; dense test top-1 {rows[0]['dense_test_accuracy']:.2f}%), channels "
        f"removed by magnitude (`--method none`), no regularize stage, {task.total_epochs} "
        "fine-tuning epochs (SGD, cosine) at each peak lr. **test** = top-1 (%) on the "
        "10,000 test images, never steered on; seeds "
        f"{args.seeds}; differences paired by seed. **val after epoch 1**: validation top-1 "
        "after the first fine-tuning epoch, per seed (how far the start threw the model).",
        "",
        *task_table(task, rows),
    ]
    save_results(f"finetune_lr_{task.name}", payload, lines)
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "_work" / "quality")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument(
        "--task",
        choices=[name for name, task in TASKS.items() if task.data == "fmnist"],
        default=None,
        help="a Fashion-MNIST task of quality.py (its own work folder; --work is ignored)",
    )
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.task:
        run_task(args, seeds)
        return
    t0 = time.perf_counter()
    model = dense(args.work)
    rows = [
        run(args.work, model, target, recipe, seed)
        for target, recipes in TARGETS.items()
        for recipe in recipes
        for seed in seeds
    ]
    payload = run_payload(t0, rows)
    lines = [
        *results_header("Fine-tuning recipe after pruning (no regularize stage)", payload),
        "resnet18 on mnist15k at 32x32 (dense "
        f"{rows[0]['dense_accuracy']:.2f}%), channels removed by magnitude (`--method none`), "
        "3 fine-tuning epochs (SGD, cosine). Validation top-1 (%), mean ± sd over seeds "
        f"{args.seeds}; each seed's figure beside it.",
        "",
        "| target | recipe | MACs cut | top-1 | per seed |",
        "| --- | --- | --- | --- | --- |",
    ]
    for target, recipes in TARGETS.items():
        for recipe in recipes:
            got = [r for r in rows if r["target_macs_ratio"] == target and r["recipe"] == recipe]
            acc = [r["accuracy"] for r in got]
            sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
            lines.append(
                f"| {target}x | {recipe} | {got[0]['macs_ratio']:.1f}x | "
                f"{statistics.mean(acc):.2f} ± {sd:.2f} | "
                f"{', '.join(f'{a:.2f}' for a in acc)} |"
            )
    save_results("finetune_lr", payload, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
