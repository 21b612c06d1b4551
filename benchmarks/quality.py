"""Do the methods win? Every compressor method against Torch-Pruning's pruners, at a fixed
MAC budget, from the same dense model, through the commands users run, scored on a held-out
test set that nothing steers on.

    python benchmarks/quality.py --task fmnist-resnet18 --quick     # seed 0 of every row
    python benchmarks/quality.py --task fmnist-resnet18             # seeds 0-2, then 3-4
    python benchmarks/quality.py --task fmnist-mobilenetv2 --quick
    python benchmarks/quality.py --task mnist15k                    # the quick smoke task

Superseded for Fashion-MNIST by ``quality_regimes.py`` (every row at equal total epochs,
against a converged dense reference and a dense control); its tables of these tasks are in
``results/archive/2026-12-07-d698b0e/``. The tasks stay: ``finetune_lr.py``,
``latency_target.py`` and ``bn_statistics.py`` train their dense models from them, and
``quality_regimes.py`` takes its data subsets and Torch-Pruning rows from them.

Tasks (``TASKS``):
- ``fmnist-resnet18``: resnet18 from scratch at 32x32 on Fashion-MNIST; 10x and 30x fewer MACs.
- ``fmnist-mobilenetv2``: torchvision mobilenet_v2 from the ImageNet-pretrained backbone in
  ``../shared/weights`` (converted by ``mobilenetv2_backbone.py``), fine-tuned at 64x64;
  2x and 4x fewer MACs.
- ``mnist15k``: resnet18 at 32x32 on the bundled mnist15k; 10x and 30x (the earlier tables).

The Fashion-MNIST tasks train on a fixed, class-balanced subset of the 60,000 training
images (``Task.train_images``), written once as an IDX folder, so that a table fits the
2-core machine; ``--val-split`` holds a quarter of it out as the validation split that
steers (``--lambda auto``, early prune). The full 10,000-image test set is scored only at
the end of every run, and it is the figure the tables compare.

Steps (each result is cached under --work, so an interrupted run continues):
1. Dense model: ``compressor train ARCH --data DIR --input-size S --epochs E`` (with
   ``--weights backbone.pt`` for mobilenet_v2).
2. For every method, target and seed: ``compressor compress dense.pt --method M
   --reg-epochs R --ft-epochs F --target-macs T --seed S`` with every other option at its
   default. Variants: ``M+r1`` (``--round-to 1``), ``M+uniform`` (``--allocation uniform``),
   ``M+rAfB`` (``--reg-epochs A --ft-epochs B``: ``none+r0f4`` is all fine-tuning).
   ``none`` also runs at the split that the seed methods' early prune chose (the most
   common one among them, per target and seed), and at 0 + R + F.
3. Torch-Pruning on the same dense model and budget, through its documented API:
   ``MagnitudePruner`` (no sparse learning: 0 + R + F), ``GroupNormPruner`` and
   ``BNScalePruner`` (their sparse learning, ``pruner.regularize(model)`` after every
   backward, R + F); each also at compressor's split. One ratio for every layer, no
   rounding (its defaults), found by bisection so that the MACs meet the target from
   below. Training uses compressor's loop with ``compress``'s settings, so only the
   pruner differs.
4. Seeds 3 and 4 for the best compressor method and the best Torch-Pruning row per target.
5. Speed: every seed-0 architecture exported at 224x224 and timed against the dense model
   in one interleaved ``compressor benchmark --threads 1,2`` run.
6. (mnist15k) LeNet-5 strength sweep.

Writes benchmarks/results/quality_<task>.{json,md,png} (mnist15k: quality.*).

This file is the command line; the work is in ``quality_tasks.py`` (the tasks, their data
and dense models), ``quality_stats.py`` (the summary's statistics), ``tp_rows.py`` (the
Torch-Pruning rows), ``quality_runs.py`` (compressor's rows, the order of a table's runs,
kept rows, the speed step, the LeNet-5 sweep) and ``quality_report.py`` (markdown and plot).
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path
from typing import Any

from common import RESULTS, ROOT, run_payload
from quality_report import _diff_text, _pm, plot, write
from quality_runs import (
    LENET_SWEEP,
    VARIANTS,
    _has,
    kept_rows,
    lenet_sweep,
    run_rows,
    speed,
    speed_rows,
)
from quality_stats import best_rows, compressor_split, mark_architectures, summarise
from quality_tasks import (
    FMNIST,
    METHODS,
    SEED_METHODS,
    SHARED,
    TARGETS,
    TASKS,
    Task,
    data_dir,
    data_options,
    dense,
)
from tp_rows import (
    TP_PRUNERS,
    _tp_epochs,
    _tp_prune_to,
    _tp_pruner,
    _tp_scores,
    _tp_sparse_learning,
    tp_prune,
    tp_row,
    tp_step,
)

from compressor import read_output

# the names other scripts and the tests read from here, defined in the modules above
__all__ = [
    "FMNIST",
    "LENET_SWEEP",
    "METHODS",
    "SEED_METHODS",
    "SHARED",
    "TARGETS",
    "TASKS",
    "TP_PRUNERS",
    "VARIANTS",
    "Task",
    "_diff_text",
    "_has",
    "_payload",
    "_pm",
    "_tp_epochs",
    "_tp_prune_to",
    "_tp_pruner",
    "_tp_scores",
    "_tp_sparse_learning",
    "best_rows",
    "compressor_split",
    "data_dir",
    "data_options",
    "dense",
    "kept_rows",
    "lenet_sweep",
    "main",
    "mark_architectures",
    "plot",
    "speed",
    "speed_rows",
    "summarise",
    "tp_prune",
    "tp_row",
    "tp_step",
    "write",
]


def _flush(args: Any, task: Task, rows: list[dict[str, Any]]) -> None:
    write(_payload(args, task, rows), task)  # partial results as they come


def _payload(args: Any, task: Task, rows: list[dict[str, Any]]) -> dict[str, Any]:
    data = data_dir(args.work, task)
    payload = run_payload(args.t0, rows)
    payload["task"] = task.name
    payload["data"] = data
    payload["data_summary"] = args.data_summary
    payload["summary"] = summarise(rows)
    dense = {(r["dense_test_accuracy"], r["dense_val_accuracy"]) for r in rows}
    if len(dense) > 1:
        raise SystemExit(f"rows from different dense models (test, val top-1): {sorted(dense)}")
    if args.kept:
        payload["kept"] = {k: v for k, v in args.kept.items() if k != "speed"}
    return payload


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", choices=sorted(TASKS), default="fmnist-resnet18")
    ap.add_argument(
        "--work", type=Path, default=None, help="default: benchmarks/_work/quality_<task>"
    )
    ap.add_argument("--quick", action="store_true", help="seed 0 of every row, no extra seeds")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--extra-seeds", default="3,4", help="for the best method and TP row")
    ap.add_argument("--targets", default=None, help="default: the task's")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--tp", default=",".join(TP_PRUNERS))
    ap.add_argument(
        "--no-splits",
        dest="splits",
        action="store_false",
        help="skip none at 0+N and at compressor's split, and TP at compressor's split",
    )
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="an earlier results JSON of this task: its rows of the asked methods and pruners "
        "join the table and are not run again, unless --work holds that run (the dense "
        "model must score the same); its speed step is kept when no seed-0 row is new",
    )
    ap.add_argument("--no-lenet", action="store_true")
    ap.add_argument(
        "--reuse-only",
        action="store_true",
        help="assemble the files from the runs finished under --work; run no training, and "
        "reuse the last speed step when it measured the same files",
    )
    return ap


def main() -> None:
    args = _parser().parse_args()
    task = TASKS[args.task]
    args.work = args.work or ROOT / "benchmarks" / "_work" / f"quality_{task.name}"
    args.work.mkdir(parents=True, exist_ok=True)
    args.t0 = time.perf_counter()
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    targets = [int(t) for t in args.targets.split(",")] if args.targets else list(task.targets)
    methods = [m for m in args.methods.split(",") if m]
    pruners = [p for p in args.tp.split(",") if p]
    model = dense(args.work, task)
    args.data_summary = _data_summary(args.work, task)
    rows: list[dict[str, Any]] = []
    args.kept = None
    if args.keep:
        rows, args.kept = kept_rows(args.keep, task, args.work, methods, pruners)
    flush = functools.partial(_flush, args, task)
    run_rows(args, task, model, seeds, targets, methods, pruners, rows, flush=flush)
    if not args.quick and args.extra_seeds:
        extra = [int(s) for s in args.extra_seeds.split(",")]
        for target in targets:
            for tool, method in best_rows(rows, target):
                run_rows(
                    args,
                    task,
                    model,
                    extra,
                    [target],
                    [method] if tool == "compressor" else [],
                    [method] if tool != "compressor" else [],
                    rows,
                    flush=flush,
                )
    payload = _payload(args, task, rows)
    if task.name == "mnist15k" and not args.no_lenet:
        payload["lenet"] = lenet_sweep(args.work, methods)
    if args.kept and not any(r["seed"] == 0 and "kept_from" not in r for r in rows):
        payload["speed"] = args.kept["speed"]  # the same seed-0 architectures
    elif not args.no_speed:
        payload["speed"] = speed(args.work, model, rows, reuse=args.reuse_only)
    payload["seconds"] = time.perf_counter() - args.t0
    write(payload, task)
    print((RESULTS / f"{task.results}.md").read_text())


def _data_summary(work: Path, task: Task) -> str:
    train = read_output("train", work / "dense.train.json")["data"]
    return (
        f"{train['train_images']} train / {train['val_images']} val held out from the training "
        f"images / {train['test_images']} test"
    )


if __name__ == "__main__":
    main()
