"""What does the selection alone change at 30x fewer MACs? Criterion, allocation and
rounding, separated on one start.

    python benchmarks/selection.py          # about 20 minutes on 2 cores

The dense resnet18 of `benchmarks/quality.py` (mnist15k at 32x32, 5 epochs) is cut to 1/30
of its MACs with no regularize stage and fine-tuned for 3 epochs at the defaults, through
the command users run:
``compressor compress dense.pt --method M --reg-epochs 0 --ft-epochs 3 --target-macs 1/30
--allocation A --round-to R --seed S``; seeds 0, 1, 2. Rows:

- criterion: ``none`` scores a channel group by its L2 norm (Torch-Pruning's
  ``MagnitudePruner``), ``slimming`` by the |gamma| of its BatchNorm layers
  (``BNScalePruner``);
- allocation: ``global`` ranks all channels together, ``uniform`` takes the same fraction
  of every layer (Torch-Pruning's default);
- rounding: kept counts at multiples of 8 (compressor's default) or unrounded (1).

``uniform`` with ``--round-to 1`` is Torch-Pruning's architecture; the quality benchmark's
gap between ``slimming`` and ``BNScalePruner`` is the question this answers in part (there,
each has its own sparse-training stage as well). Writes
benchmarks/results/selection.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from common import ROOT, compress_once, results_header, run_payload, save_results
from quality_tasks import dense

CRITERIA = {"none": "group L2 norm", "slimming": "BatchNorm scale gamma"}
ALLOCATIONS = ["global", "uniform"]
ROUND_TO = [8, 1]
TARGET = 30


def run(work: Path, model: Path, method: str, allocation: str, round_to: int, seed: int) -> dict:
    r = compress_once(
        work,
        f"sel-{method}-{allocation}-r{round_to}-s{seed}",
        model,
        [
            *["--method", method, "--data", "mnist15k", "--reg-epochs", "0", "--ft-epochs", "3"],
            *["--target-macs", repr(1 / TARGET), "--allocation", allocation],
            *["--round-to", str(round_to), "--seed", str(seed), "--threads", "1"],
        ],
    )
    return {
        "method": method,
        "allocation": allocation,
        "round_to": round_to,
        "seed": seed,
        "macs_ratio": r["baseline"]["macs"] / r["compressed"]["macs"],
        "accuracy": r["compressed"]["test_top1"],
        "dense_accuracy": r["baseline"]["test_top1"],
        "channels": [layer["after"] for layer in r["layers"]],
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
        run(args.work, model, method, allocation, round_to, seed)
        for method in CRITERIA
        for allocation in ALLOCATIONS
        for round_to in ROUND_TO
        for seed in seeds
    ]
    payload = run_payload(t0, rows)
    lines = [
        *results_header(f"Selection alone at {TARGET}x fewer MACs", payload),
        f"resnet18, mnist15k at 32x32, dense top-1 {rows[0]['dense_accuracy']:.2f}%; no "
        "regularize stage; 3 fine-tuning epochs at the defaults; seeds "
        f"{args.seeds}. Channels: the residual streams' widths per stage (layer1-4) and the "
        "blocks' inner widths, seed 0.",
        "",
        "| criterion | allocation | round to | MACs cut | top-1 (mean ± sd) | streams | inner |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for method in CRITERIA:
        for allocation in ALLOCATIONS:
            for round_to in ROUND_TO:
                rs = [
                    r
                    for r in rows
                    if (r["method"], r["allocation"], r["round_to"])
                    == (method, allocation, round_to)
                ]
                acc = [r["accuracy"] for r in rs]
                sd = f" ± {statistics.stdev(acc):.2f}" if len(acc) > 1 else " (one seed)"
                ch = rs[0]["channels"]  # resnet18: conv1, then each block's conv1, conv2
                streams = [ch[2], ch[6], ch[11], ch[16]]
                inner = [ch[1], ch[3], ch[5], ch[8], ch[10], ch[13], ch[15], ch[18]]
                lines.append(
                    f"| {method} ({CRITERIA[method]}) | {allocation} | {round_to} | "
                    f"{statistics.mean(r['macs_ratio'] for r in rs):.1f}x | "
                    f"{statistics.mean(acc):.2f}{sd} | "
                    f"{'/'.join(map(str, streams))} | {'/'.join(map(str, inner))} |"
                )
    save_results("selection", payload, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
