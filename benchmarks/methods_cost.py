"""What each method costs: its share of a training step, and HGS's selection time.

1. Overhead: resnet18 (32x32 input, batch 64, CPU), one SGD step (forward, loss, penalty,
   backward, hooks, optimizer) per method, timed in interleaved rounds next to the
   no-regularizer step; the share is (t_method - t_none) / t_method.
2. HGS selection: the loss-increase scores of every channel of resnet18 at 32x32 on 64
   random training samples, with no channel skipped (worst case) and with half of each
   group's channels already at zero (skipped, as after sparsity training).

    python benchmarks/methods_cost.py [--rounds 8 --steps 3]

Writes benchmarks/results/methods_cost.{json,md,png} with the command and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from common import commit_text, provenance

RESULTS = Path(__file__).parent / "results"


def step_times(rounds: int, steps: int) -> dict[str, list[float]]:
    import torch
    import torch.nn.functional as F

    from compressor.archs import build_model
    from compressor.methods import get_method, list_methods

    torch.manual_seed(0)
    x = torch.randn(64, 3, 32, 32)
    y = torch.randint(0, 10, (64,))
    runs = {}
    for name in list_methods():
        torch.manual_seed(0)
        model = build_model("resnet18", num_classes=10)
        method = get_method(name)
        method.setup(model, example_input=x[:1], train_size=50000)
        method.start_epoch(model, epoch=0)
        feats: dict[str, torch.Tensor] = {}
        for n, m in method.feature_modules(model).items():
            m.register_forward_hook(lambda _m, _i, o, n=n, f=feats: f.__setitem__(n, o))
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        runs[name] = (model, method, opt, feats)

    def one_step(name: str) -> None:
        model, method, opt, feats = runs[name]
        feats.clear()
        loss = F.cross_entropy(model(x), y)
        pen = method.penalty(model, feats)
        if pen is not None:
            loss = loss + pen
        opt.zero_grad(set_to_none=True)
        loss.backward()
        method.after_backward(model)
        opt.step()
        method.after_step(model, epoch=0, step=0)

    for name in runs:  # warm-up
        one_step(name)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name in runs:
            t0 = time.perf_counter()
            for _ in range(steps):
                one_step(name)
            times[name].append((time.perf_counter() - t0) / steps * 1e3)
    return times


def weight_traffic() -> dict[str, float]:
    """Reference costs on resnet18's 11 M weights: an SGD step (momentum, weight decay)
    and one read pass over all parameters. A penalty that touches every weight cannot be
    much cheaper than a few such passes."""
    import torch

    from compressor.archs import build_model

    model = build_model("resnet18", num_classes=10)
    params = list(model.parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)

    def timed(fn) -> float:
        for _ in range(3):
            fn()
        t0 = time.perf_counter()
        for _ in range(20):
            fn()
        return (time.perf_counter() - t0) / 20 * 1e3

    return {
        "sgd_step_ms": timed(opt.step),
        "read_pass_ms": timed(lambda: torch._foreach_norm(params, 1)),
    }


def hgs_selection(samples: int) -> dict[str, float]:
    import torch

    from compressor.archs import build_model
    from compressor.methods.hgs import loss_increase_scores
    from compressor.pruning import channel_groups

    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=10).eval()
    x = torch.randn(samples, 3, 32, 32)
    y = torch.randint(0, 10, (samples,))
    index = channel_groups(model, x[:1])
    out = {"channels": float(index.prunable_channels)}
    for label, frac in (("none_skipped", 0.0), ("half_skipped", 0.5)):
        skip = [torch.arange(g.size) < int(g.size * frac) for g in index]
        t0 = time.perf_counter()
        loss_increase_scores(model, index, (x, y), skip=skip, batch_channels=16)
        out[f"seconds_{label}"] = time.perf_counter() - t0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--samples", type=int, default=64)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    times = step_times(args.rounds, args.steps)
    base = statistics.median(times["none"])
    rows = []
    for name, ts in times.items():
        med = statistics.median(ts)
        rows.append(
            {
                "method": name,
                "step_ms": med,
                "share": (med - base) / med,
                "cv": statistics.stdev(ts) / statistics.mean(ts),
            }
        )
    traffic = weight_traffic()
    hgs = hgs_selection(args.samples)
    meta = {
        "command": "python benchmarks/methods_cost.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        **provenance(),
        "torch": torch.__version__,
        **vars(args),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "methods_cost.json").write_text(
        json.dumps({**meta, "overhead": rows, "reference": traffic, "hgs_selection": hgs}, indent=2)
        + "\n"
    )
    lines = [
        "# Method overhead and HGS selection time",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}; torch {meta['torch']}  ",
        f"Commit: {commit_text(meta)}  ",
        "",
        f"resnet18, 32x32, batch 64, one SGD step; median of {args.rounds} interleaved rounds of {args.steps} steps.",
        "",
        "| method | step ms | share of the step | CV |",
        "| --- | --- | --- | --- |",
        *[
            f"| {r['method']} | {r['step_ms']:.1f} | {r['share']:+.1%} | {r['cv']:.1%} |"
            for r in rows
        ],
        "",
        f"For scale: the optimizer's own SGD step takes {traffic['sgd_step_ms']:.1f} ms "
        f"({traffic['sgd_step_ms'] / base:.1%} of the plain step) and one read pass over the "
        f"11 M weights {traffic['read_pass_ms']:.1f} ms ({traffic['read_pass_ms'] / base:.1%}).",
        "",
        f"HGS selection on resnet18 at 32x32, {args.samples} samples, {int(hgs['channels'])} prunable channels: "
        f"{hgs['seconds_none_skipped']:.1f} s with every channel evaluated, "
        f"{hgs['seconds_half_skipped']:.1f} s with half already at zero (skipped).",
    ]
    (RESULTS / "methods_cost.md").write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.bar([r["method"] for r in rows], [100 * r["share"] for r in rows])
    ax.axhline(10, color="grey", linestyle="--", linewidth=1)
    ax.set_ylabel("% of a training step")
    ax.set_title("Regularizer overhead, resnet18 32x32 batch 64 (CPU)")
    fig.tight_layout()
    fig.savefig(RESULTS / "methods_cost.png", dpi=120)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
