"""How long HGS's channel scoring takes on resnet18 (the `prune` stage of `compress`).

    python benchmarks/hgs_scoring.py

Times `HGS.scores` (the default second-order estimate of each channel's loss increase, on
256 samples) on resnet18 at 32x32 and 224x224, and, at 32x32, the exact masked forward
passes (`exact=1`, the paper's procedure) on the first groups only, extrapolated to all
channels. Random weights and random inputs: the time depends on shapes, not on values.
Writes benchmarks/results/hgs_scoring.{json,md}.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from common import commit_text, machine, provenance

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    import torch
    import torchvision

    from compressor.methods import get_method
    from compressor.methods.hgs import loss_increase_scores
    from compressor.pruning import channel_groups

    torch.manual_seed(0)
    rows = []
    for size in (32, 224):
        model = torchvision.models.resnet18(num_classes=10).eval()
        index = channel_groups(model, torch.zeros(1, 3, size, size))
        x = torch.randn(256, 3, size, size)
        y = torch.randint(0, 10, (256,))
        method = get_method("hgs")
        t0 = time.perf_counter()
        method.scores(model, index, calibration=(x, y))
        seconds = time.perf_counter() - t0
        rows.append(
            {
                "input": size,
                "mode": "estimate (default)",
                "samples": 256,
                "channels": index.prunable_channels,
                "seconds": seconds,
            }
        )
        print(rows[-1], flush=True)
        if size == 32:
            # exact: the first two groups, extrapolated per channel
            sub = index.groups[:2]  # any iterable of groups will do
            n = sum(g.size for g in sub)
            skip = [torch.zeros(g.size, dtype=torch.bool) for g in sub]
            t0 = time.perf_counter()
            loss_increase_scores(model, sub, (x[:64], y[:64]), skip=skip, batch_channels=16)  # type: ignore[arg-type]
            per_channel = (time.perf_counter() - t0) / n
            rows.append(
                {
                    "input": size,
                    "mode": "exact (exact=1), extrapolated",
                    "samples": 64,
                    "channels": index.prunable_channels,
                    "seconds": per_channel * index.prunable_channels,
                    "measured_channels": n,
                }
            )
            print(rows[-1], flush=True)
    payload = {
        "command": "python benchmarks/hgs_scoring.py",
        "machine": f"{machine()}, torch {torch.__version__}",
        **provenance(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "hgs_scoring.json").write_text(json.dumps(payload, indent=2) + "\n")
    lines = [
        "# HGS channel scoring time, resnet18",
        "",
        f"Command: `{payload['command']}`  ",
        f"Machine: {payload['machine']}  ",
        f"Commit: {commit_text(payload)}  ",
        f"Date: {payload['date']}",
        "",
        "| input | mode | samples | channels | seconds |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['input']}x{r['input']} | {r['mode']} | {r['samples']} | {r['channels']} | "
            f"{r['seconds']:.1f} |"
        )
    (RESULTS / "hgs_scoring.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
