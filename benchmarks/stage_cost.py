"""What a regularize epoch costs against a plain training epoch, per method and rule.

    python benchmarks/stage_cost.py [--methods none,l1l2,hgs,...] [--rules bounded,growing]

On the trained regime's dense resnet18 (Fashion-MNIST at 32x32: 9,000 training and 3,000
validation images, one thread), side by side in one run: ``compressor train MODEL
--epochs 1`` (a plain epoch with its validation pass) and, for each method and
``--lambda auto`` rule, ``compressor compress MODEL --reg-epochs 1 --target-macs 0.1`` whose
``stages.json`` gives the regularize stage's seconds (calibration, the epoch with its
penalty and the controller's checks, and the same validation pass). Plain epochs are
interleaved with the stages (one before the first and one after every method), and each
stage is read against the median of the plain epochs. The bounded rule reads validation
top-1 at each of its 8 checks an epoch; the growing rule (new heads and long stages)
reads none.

Two figures per stage: its epoch (the steps with their penalty, the controller's checks and
the validation pass: what each further epoch of a long stage costs), read against the plain
epoch's own seconds, and the whole one-epoch stage, whose one-off part (the method's
groups, the calibration) a stage of E epochs pays once.

    python benchmarks/stage_cost.py --name stage_cost_loaded --conditions "beside ..."

Writes benchmarks/results/NAME.{json,md} (default stage_cost).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from common import RESULTS, commit_text, run_payload, sh
from quality_regimes import WORK, data_options, reference_for
from regimes import REGIMES

from compressor import read_output

METHODS = "none,l1,l2,ssl,slimming,l1l2,hgs,l0sgl,ffr"


def plain_epoch(work: Path, regime: Any, model: Path, i: int) -> float:
    out = work / f"plain-{i}.pt"
    for stale in (out, out.with_name(f"plain-{i}.train.json")):
        stale.unlink(missing_ok=True)
    t0 = time.perf_counter()
    sh(
        [
            *["compressor", "train", str(model), *data_options(work, regime)],
            *["--epochs", "1", "--lr", "0.01", "-o", str(out), "-q"],
        ],
        work / f"plain-{i}.log",
    )
    wall = time.perf_counter() - t0
    summary = read_output("train", out.with_name(f"plain-{i}.train.json"))
    epochs = summary["history"]
    return float(epochs[0]["seconds"]) if epochs else wall


def stage(work: Path, regime: Any, model: Path, method: str, rule: str) -> dict[str, Any]:
    out = work / f"stage-{method}-{rule}"
    sh(
        [
            *["compressor", "compress", str(model), "--method", method],
            *data_options(work, regime),
            *["--reg-epochs", "1", "--ft-epochs", "0", "--target-macs", "0.1"],
            *["--strength-rule", rule, "--threads", "1", "-o", str(out), "--force", "-q"],
        ],
        work / f"stage-{method}-{rule}.log",
    )
    report = read_output("report", out / "report.json")
    epoch = float(report["history"]["regularize"][0]["seconds"])
    return {
        "method": method,
        "rule": rule,
        "seconds": report["stages"]["regularize"],
        "epoch_seconds": epoch,
    }


def bracketing(payload: dict[str, Any]) -> list[float]:
    """Per row, the mean of the two plain epochs run just before and just after its
    method's stages: the machine's speed drifts (plain epochs of one quiet run spread over
    30-41 s), so each stage is read against its neighbours, not a run-wide median."""
    plain, methods = payload["plain_seconds"], []
    for r in payload["rows"]:
        if r["method"] not in methods:
            methods.append(r["method"])
    out = []
    for r in payload["rows"]:
        k = methods.index(r["method"])
        out.append((plain[k] + plain[min(k + 1, len(plain) - 1)]) / 2)
    return out


def markdown(payload: dict[str, Any]) -> str:
    plain = payload["plain_seconds"]
    lines = [
        "# The regularize stage's cost against a plain training epoch",
        "",
        f"Command: `{payload['command']}`  ",
        f"Machine: {payload['machine']}  ",
        f"Commit: {commit_text(payload)}  ",
        f"Date: {payload['date']}  ",
        f"Conditions: {payload['conditions']}",
        "",
        "resnet18 at 32x32, 9,000 Fashion-MNIST training images, one thread. A plain epoch "
        f"(`train --epochs 1`: its steps and its validation pass) ran {len(plain)} times, "
        f"one before the first method and one after each ({min(plain):.1f}-{max(plain):.1f} s, "
        f"median {statistics.median(plain):.1f} s: the machine's speed drifts, so each stage "
        "is read against the mean of the plain epochs just before and after its method, "
        "**plain s**). The stage's epoch: the same, with the penalty and the controller's "
        "checks (what every epoch of a long stage costs). The one-off part: the stage's "
        "seconds besides its epoch (the method's channel groups, the calibration), paid once "
        "per stage.",
        "",
        "| method | rule | plain s | epoch s | epoch x plain | one-off s | 1-epoch stage x plain |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r, base in zip(payload["rows"], bracketing(payload), strict=True):
        epoch = r["epoch_seconds"]
        lines.append(
            f"| {r['method']} | {r['rule']} | {base:.1f} | {epoch:.1f} | {epoch / base:.2f}x | "
            f"{r['seconds'] - epoch:.1f} | {r['seconds'] / base:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default=METHODS)
    ap.add_argument("--rules", default="growing,bounded")
    ap.add_argument("--name", default="stage_cost", help="results file stem")
    ap.add_argument(
        "--conditions",
        default="quiet (nothing else ran on the 2 cores)",
        help="what else ran on the machine, for the results file",
    )
    ap.add_argument(
        "--render", action="store_true", help="rewrite NAME.md from NAME.json, running nothing"
    )
    args = ap.parse_args()
    if args.render:
        payload = json.loads((RESULTS / f"{args.name}.json").read_text())
        (RESULTS / f"{args.name}.md").write_text(markdown(payload))
        return
    regime = REGIMES["fmnist-resnet18-trained"]
    work = WORK / f"quality_{regime.name}-{regime.input_size}px"
    curve = json.loads((RESULTS / f"quality_{regime.name}.json").read_text())["curve"]
    model = Path(reference_for(work, regime, curve)["model"])
    work = work / "stage_cost"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    plain, rows = [plain_epoch(work, regime, model, 0)], []
    for i, method in enumerate(args.methods.split(","), start=1):
        for rule in args.rules.split(","):
            rows.append(stage(work, regime, model, method, rule))
            print(json.dumps(rows[-1]), flush=True)
        plain.append(plain_epoch(work, regime, model, i))
    payload = {**run_payload(t0, rows), "conditions": args.conditions, "plain_seconds": plain}
    (RESULTS / f"{args.name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (RESULTS / f"{args.name}.md").write_text(markdown(payload))
    print(markdown(payload))


if __name__ == "__main__":
    main()
