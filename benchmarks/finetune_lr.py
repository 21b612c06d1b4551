"""Which fine-tuning recipe recovers a heavily pruned model best? (Sets `compress`'s
`--ft-lr` default.)

    python benchmarks/finetune_lr.py        # about 15 minutes on 2 cores

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
from quality import dense

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "_work" / "quality")
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    t0 = time.perf_counter()
    model = dense(args.work)
    seeds = [int(s) for s in args.seeds.split(",")]
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
