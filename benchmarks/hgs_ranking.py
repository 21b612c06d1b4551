"""HGS's channel ranking: raw loss increases (the paper) against per-group normalised ones.

    python benchmarks/hgs_ranking.py [--seeds 0,1] [--ft-epochs 2]

On the dense models of both regimes of ``quality_regimes.py`` (resnet18 trained on
Fashion-MNIST, at 10x and 30x fewer MACs; the ImageNet-pretrained MobileNetV2 fine-tuned on
it, at 2x and 4x), ``compressor compress --method hgs --reg-epochs 0`` ranks the channels
by HGS's estimated loss increase, ``--set normalize=1`` (each group's increases divided by
their mean, the default before this measurement) or ``normalize=0`` (raw, as the paper
ranks them), prunes to the target and fine-tunes ``--ft-epochs``. No regularize stage: the
rows differ only in the ranking. Per row: validation top-1 right after the cut (the
ranking's direct effect), validation and test top-1 after fine-tuning, and the widths.
The seed changes the 256 training samples the increases are taken on, and fine-tuning.
The default follows validation; test is reported.

Writes benchmarks/results/hgs_ranking.{json,md}. Needs the dense models, which
``quality_regimes.py`` trains into benchmarks/_work/ (this script trains them if missing).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from common import RESULTS, commit_text, compress_once, run_payload
from quality_regimes import WORK, data_options, reference_for
from regimes import REGIMES


def dense_model(name: str) -> tuple[Any, Path, Path]:
    """The regime, its work folder and the dense model its rows compress."""
    regime = REGIMES[name]
    work = WORK / f"quality_{regime.name}-{regime.input_size}px"
    work.mkdir(parents=True, exist_ok=True)
    curve = json.loads((RESULTS / f"quality_{regime.name}.json").read_text())["curve"]
    return regime, work, Path(reference_for(work, regime, curve)["model"])


def run(name: str, target: int, normalize: int, seed: int, ft_epochs: int) -> dict[str, Any]:
    regime, work, model = dense_model(name)
    out = f"hgs-rank-n{normalize}-{target}x-f{ft_epochs}-s{seed}"
    (work / "hgs_ranking").mkdir(exist_ok=True)
    report = compress_once(
        work / "hgs_ranking",
        out,
        model,
        [
            *["--method", "hgs", "--set", f"normalize={normalize}"],
            *data_options(work, regime),
            *["--reg-epochs", "0", "--ft-epochs", str(ft_epochs)],
            *["--target-macs", repr(regime.targets[target])],
            *["--seed", str(seed), "--threads", "1"],
        ],
    )
    b, c = report["baseline"], report["compressed"]
    return {
        "task": name,
        "target": target,
        "normalize": normalize,
        "seed": seed,
        "ft_epochs": ft_epochs,
        "macs_ratio": b["macs"] / c["macs"],
        "val_after_prune": report["pruning"]["val_top1_after_prune"],
        "val_top1": c["val_top1"],
        "test_top1": c["test_top1"],
        "dense_val_top1": b["val_top1"],
        "widths": [r["after"] for r in report["layers"]],
    }


def _pm(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def markdown(payload: dict[str, Any]) -> str:
    rows = payload["rows"]
    lines = [
        "# HGS ranking: raw against per-group normalised loss increases",
        "",
        f"Command: `{payload['command']}`  ",
        f"Machine: {payload['machine']}  ",
        f"Commit: {commit_text(payload)}  ",
        f"Date: {payload['date']}",
        "",
        "`compress --method hgs --reg-epochs 0` on each regime's dense model: the rows differ "
        "only in the ranking. Mean ± sd over seeds (the seed draws the 256 scoring samples "
        "and the fine-tuning order). Validation steers the default; test is reported.",
        "",
        "| task | target | ranking | seeds | MACs cut | val right after the cut | val after fine-tuning | test after fine-tuning |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    cells = sorted({(r["task"], r["target"], r["normalize"]) for r in rows})
    for task, target, norm in cells:
        sel = [r for r in rows if (r["task"], r["target"], r["normalize"]) == (task, target, norm)]
        lines.append(
            f"| {task} | {target}x | {'normalised' if norm else 'raw'} | {len(sel)} | "
            f"{statistics.mean(r['macs_ratio'] for r in sel):.1f}x | "
            f"{_pm([r['val_after_prune'] for r in sel])} | {_pm([r['val_top1'] for r in sel])} | "
            f"{_pm([r['test_top1'] for r in sel])} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--ft-epochs", type=int, default=2)
    ap.add_argument("--tasks", default="fmnist-resnet18-trained,fmnist-mobilenetv2-pretrained")
    args = ap.parse_args()
    t0 = time.perf_counter()
    rows = []
    for name in args.tasks.split(","):
        for target in REGIMES[name].targets:
            for seed in (int(s) for s in args.seeds.split(",")):
                for normalize in (1, 0):
                    rows.append(run(name, target, normalize, seed, args.ft_epochs))
                    print(json.dumps(rows[-1]), flush=True)
    payload = run_payload(t0, rows)
    (RESULTS / "hgs_ranking.json").write_text(json.dumps(payload, indent=2) + "\n")
    (RESULTS / "hgs_ranking.md").write_text(markdown(payload))
    print(markdown(payload))


if __name__ == "__main__":
    main()
