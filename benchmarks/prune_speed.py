"""How long tracing the dependency graph plus pruning takes, at 224x224.

Times ``channel_groups`` (torch-pruning's graph and this project's group index) + scoring +
selection + physical removal at ratio 0.3, three times per model on a fresh build, and
reports the median. Model construction and MAC counting are not included.

    python benchmarks/prune_speed.py [resnet18 resnet50 ...]

Writes benchmarks/results/prune_speed.{json,md} with the command and the machine.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from common import commit_text, provenance

RESULTS = Path(__file__).parent / "results"
DEFAULT = ["resnet18", "resnet50", "mobilenet_v2", "efficientnet_b0", "densenet121", "vit_b_16"]


def main(archs: list[str]) -> None:
    import torch

    from compressor.archs import build_model
    from compressor.pruning import apply_plan, channel_groups, group_scores, plan_ratio

    rows = []
    for arch in archs:
        times = []
        for _ in range(3):
            torch.manual_seed(0)
            model = build_model(arch, num_classes=1000).eval()
            t0 = time.perf_counter()
            index = channel_groups(model, torch.zeros(1, 3, 224, 224))
            apply_plan(index, plan_ratio(group_scores(index, model), 0.3, round_to=8))
            times.append(time.perf_counter() - t0)
        rows.append(
            {"model": arch, "groups": len(index), "seconds": statistics.median(times), "all": times}
        )
        print(json.dumps(rows[-1]), flush=True)
    meta = {
        "command": "python benchmarks/prune_speed.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        **provenance(),
        "torch": torch.__version__,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "prune_speed.json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    lines = [
        "# Graph building + pruning time at 224x224 (ratio 0.3, round-to 8)",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}; torch {meta['torch']}  ",
        f"Commit: {commit_text(meta)}  ",
        "",
        "| model | groups | median seconds (of 3) |",
        "| --- | --- | --- |",
        *[f"| {r['model']} | {r['groups']} | {r['seconds']:.2f} |" for r in rows],
    ]
    (RESULTS / "prune_speed.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:] or DEFAULT)
