"""What a validation reading says while the network changes fast: stale against fresh
BatchNorm statistics.

    python benchmarks/bn_statistics.py

The dense fmnist-resnet18 model of `benchmarks/quality.py` (trained there first if its work
folder lacks it). The channels that its 10x MAC plan removes (the default group L2 norm, as
`none` selects) have every entry they own (filters, BatchNorm scale and shift, consumers'
input slices) multiplied by a factor, as a penalty shrinking them would. Each copy is read on
the whole validation split twice: on the running statistics it has (which a training step's
momentum of 0.1 would still be catching up with) and on statistics re-estimated on 512
training images (`with_fresh_statistics`). Writes benchmarks/results/bn_statistics.{json,md}.
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path
from typing import Any

from common import results_header, run_payload, save_results

HERE = Path(__file__).resolve().parent
FACTORS = [1.0, 0.99, 0.96, 0.9, 0.7]


def with_fresh_statistics(model: Any, inputs: Any, batch: int = 256) -> Any:
    """A copy of ``model`` whose BatchNorm running statistics are re-estimated on
    ``inputs`` (the cumulative mean over them, in training mode); the model itself is not
    touched."""
    import torch
    from torch import nn

    fresh = copy.deepcopy(model)
    norms = [m for m in fresh.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    fresh.train()
    device = next(fresh.parameters()).device
    with torch.no_grad():
        for i in range(0, len(inputs), batch):
            fresh(inputs[i : i + batch].to(device))
    return fresh.eval()


def main() -> None:
    import torch

    sys.path.insert(0, str(HERE))
    import quality_tasks

    from compressor.checkpoint import load_model
    from compressor.config import DataConfig, PruneConfig
    from compressor.data import load_data, sample_batch
    from compressor.evaluation import evaluate
    from compressor.pruning import channel_groups, focus_masks, group_scores, mac_estimator
    from compressor.selection import select

    t0 = time.perf_counter()
    torch.manual_seed(0)
    task = quality_tasks.TASKS["fmnist-resnet18"]
    work = HERE / "_work" / f"quality_{task.name}"
    work.mkdir(parents=True, exist_ok=True)
    dense = load_model(quality_tasks.dense(work, task)).model.eval()
    data = DataConfig(
        quality_tasks.data_dir(work, task), val_split=task.val_split, input_size=(32,)
    )
    bundle = load_data(data, channels=3)
    index = channel_groups(dense, torch.zeros(1, 3, 32, 32))
    estimator = mac_estimator(copy.deepcopy(dense), index, (3, 32, 32))
    plan = select(
        group_scores(index, dense, "l2"),
        index,
        PruneConfig(target_macs=task.targets[10]),
        comparable=False,
        macs=estimator,
    )
    masks = focus_masks(dense, index, plan.remove)
    fresh_inputs = sample_batch(bundle, "train", 512, seed=0)[0]
    cpu = torch.device("cpu")

    def top1(model: Any) -> float:
        return float(evaluate(model, bundle.val, bundle.preprocess, device=cpu)["top1"])

    rows = []
    for factor in FACTORS:
        model = copy.deepcopy(dense)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in masks:
                    p.mul_(torch.where(masks[name], factor, 1.0))
        rows.append(
            {
                "factor": factor,
                "stale_top1": top1(model),
                "fresh_top1": top1(with_fresh_statistics(model, fresh_inputs)),
            }
        )
        print(rows[-1], flush=True)
    payload = run_payload(t0, rows)
    payload.update(val_images=len(bundle.val), planned_channels=sum(map(len, plan.remove.values())))
    lines = results_header("Stale against fresh BatchNorm statistics", payload)
    lines += [
        f"The dense fmnist-resnet18 model; the {payload['planned_channels']} channels of its "
        "10x MAC plan (group L2 norm) scaled by a factor; validation top-1 on all "
        f"{payload['val_images']} validation images.",
        "",
        "| factor | top-1, running statistics | top-1, statistics re-estimated on 512 "
        "training images |",
        "|---:|---:|---:|",
        *(f"| {r['factor']:g} | {r['stale_top1']:.2f} | {r['fresh_top1']:.2f} |" for r in rows),
    ]
    save_results("bn_statistics", payload, lines)


if __name__ == "__main__":
    main()
