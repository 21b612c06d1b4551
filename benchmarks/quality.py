"""Do the methods win? Every compressor method against Torch-Pruning's pruners, at a fixed
MAC budget, on the same dense model, through the commands users run.

    python benchmarks/quality.py                      # the full run (hours on 2 cores)
    python benchmarks/quality.py --seeds 0 --targets 30

Steps (each result is cached under --work, so an interrupted run continues):
1. Dense model: ``compressor train resnet18 --data mnist15k --input-size 32 --epochs 5``.
2. For every method, target (10x, 30x fewer MACs) and seed:
   ``compressor compress dense.pt --method M --reg-epochs 3 --ft-epochs 3 --target-macs T
   --seed S`` with every other option at its default (``--lambda auto``). ``M+r1`` (e.g.
   ``--methods slimming+r1``) adds ``--round-to 1``: channel counts left unrounded, as
   Torch-Pruning leaves them; ``M+uniform`` adds ``--allocation uniform``: the same
   fraction of every layer, Torch-Pruning's default allocation.
3. Torch-Pruning 1.6 on the same dense model and budget, through its documented API:
   ``MagnitudePruner`` (GroupMagnitudeImportance, no sparse training), ``GroupNormPruner``
   (its sparse learning, ``pruner.regularize(model)`` after every backward, for the same
   3 epochs) and ``BNScalePruner`` (likewise). Each prunes with its defaults: one ratio
   for every layer (not global), no rounding of channel counts (compressor rounds to
   multiples of 8, which costs it accuracy and gains it speed); the ratio is found by
   bisection so that the counted MACs meet the target from below. Sparse training and
   fine-tuning use compressor's own loop with the same settings as ``compress``
   (SGD, cosine, 3 epochs at peak lr 0.01, then 3 at 0.05, same seed), so only the
   pruner differs. ``P+rAfB`` (e.g. ``--tp BNScalePruner+r1f5,MagnitudePruner+r0f6``)
   splits the six epochs as compressor's early prune does: A sparse-learning epochs, B
   fine-tuning epochs, so the peer gets the same split, not only the same budget.
4. Speed: one architecture per (tool, method, target) (seed 0) is exported at 224x224 and
   timed against the dense model with ``compressor benchmark --threads 1,2``.
5. LeNet-5 sweep: ``compressor compress models/lenet5-mnist15k.pt --method M --lambda X``
   with the method's default selection, filters kept per layer and accuracy, beside SSL's
   published 5-19 filters at 0.8% error.

Writes benchmarks/results/quality.{json,md,png}.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
METHODS = ["none", "l1", "l2", "ssl", "slimming", "l1l2", "hgs", "l0sgl", "ffr"]
TP_PRUNERS = ["MagnitudePruner", "GroupNormPruner", "BNScalePruner"]
TARGETS = {10: 0.1, 30: 1 / 30}
# "auto" is the default (--lambda auto); the numbers are fixed strengths around each
# method's default. ffr is absent: LeNet-5 has no blocks that keep their shape.
LENET_SWEEP: dict[str, list[str]] = {
    "none": ["auto"],
    "l1": ["auto", "1e-4", "1e-3"],
    "l2": ["auto", "1e-3", "1e-2"],
    "ssl": ["auto", "1e-3", "1e-2"],
    "slimming": ["auto", "1e-3", "1e-2"],
    "l1l2": ["auto", "2e-2", "2e-1"],
    "hgs": ["auto", "1e-4", "1e-3"],
    "l0sgl": ["auto", "1e-1", "1.0"],
}


def sh(args: list[str], log: Path) -> None:
    print("$", shlex.join(args), flush=True)
    t0 = time.perf_counter()
    with log.open("w") as f:
        rc = subprocess.run(args, stdout=f, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise SystemExit(f"failed ({rc}): {shlex.join(args)}; see {log}")
    print(f"  done in {time.perf_counter() - t0:.0f}s", flush=True)


def compress_once(work: Path, name: str, model: Path, options: list[str]) -> dict[str, Any]:
    """``compressor compress MODEL OPTIONS -o WORK/NAME`` unless that run finished before;
    its report."""
    out = work / name
    if not (out / "report.json").is_file():
        sh(
            ["compressor", "compress", str(model), *options, "-o", str(out), "--force", "-q"],
            work / f"{name}.log",
        )
    return json.loads((out / "report.json").read_text())


def run_payload(t0: float, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What every results file records: the command, the machine, the date, the wall time
    since ``t0`` and the rows."""
    return {
        "command": shlex.join(["python", *sys.argv]),
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "seconds": time.perf_counter() - t0,
        "rows": rows,
    }


def dense(work: Path) -> Path:
    out = work / "dense.pt"
    if not out.is_file():
        sh(
            [
                "compressor",
                "train",
                "resnet18",
                "--data",
                "mnist15k",
                "--input-size",
                "32",
                "--epochs",
                "5",
                "-o",
                str(out),
                "-q",
            ],
            work / "dense.log",
        )
    return out


# method variants: NAME+VARIANT runs NAME with these options besides the defaults
VARIANTS = {
    "r1": ["--round-to", "1"],  # channel counts unrounded, as Torch-Pruning's
    "uniform": ["--allocation", "uniform"],  # the same fraction of every layer, as its default
}


def compressor_row(work: Path, model: Path, method: str, target: int, seed: int) -> dict[str, Any]:
    out = work / f"compressor-{method}-{target}x-s{seed}"
    name, _, variant = method.partition("+")
    if not (out / "report.json").is_file():
        sh(
            [
                "compressor",
                "compress",
                str(model),
                *(VARIANTS[variant] if variant else []),
                "--method",
                name,
                "--data",
                "mnist15k",
                "--reg-epochs",
                "3",
                "--ft-epochs",
                "3",
                "--target-macs",
                repr(TARGETS[target]),
                "--seed",
                str(seed),
                "--threads",
                "1",
                "-o",
                str(out),
                "--force",
                "-q",
            ],
            work / f"{out.name}.log",
        )
    r = json.loads((out / "report.json").read_text())
    s = r.get("strength") or {}
    return {
        "tool": "compressor",
        "method": method,
        "target_macs_ratio": target,
        "seed": seed,
        "macs_ratio": r["baseline"]["macs"] / r["compressed"]["macs"],
        "accuracy": r["compressed"]["accuracy"],
        "dense_accuracy": r["baseline"]["accuracy"],
        "params": r["compressed"]["params"],
        "regularized_accuracy": r["history"]["regularize"][-1]["val_top1"],
        "epochs": [r["epochs"]["regularize"], r["epochs"]["finetune"]] if "epochs" in r else [3, 3],
        "share": s.get("final_share"),
        "strength": s.get("final_strength"),
        "score_seconds": r["pruning"].get("score_seconds"),
        "channels": {row["name"]: row["after"] for row in r["layers"]},
        "model": str(out / "model.pt"),
    }


# --------------------------------------------------------------------------- torch-pruning


class _TPSparsity:
    """Torch-Pruning's sparse learning as a compressor regularizer: after every backward,
    ``pruner.regularize(model)`` adds its gradient (the documented training loop)."""

    def __new__(cls, pruner: Any) -> Any:
        from compressor.methods.base import Regularizer

        class TPSparsity(Regularizer):
            name = "tp-sparsity"
            paper = "Torch-Pruning's own sparse learning"

            def penalty(self, model: Any, features: Any) -> None:
                return None

            def setup(self, model: Any, **kw: Any) -> None:
                pruner.update_regularizer()

            def after_backward(self, model: Any) -> None:
                pruner.regularize(model)

        return TPSparsity()


def _tp_pruner(kind: str, model: Any, ratio: float) -> Any:
    import torch
    import torch_pruning as tp

    example = torch.zeros(1, 3, 32, 32)
    common = {
        "example_inputs": example,
        "pruning_ratio": ratio,
        "ignored_layers": [model.fc],
    }
    if kind == "MagnitudePruner":
        return tp.pruner.MagnitudePruner(
            model, importance=tp.importance.GroupMagnitudeImportance(p=2), **common
        )
    if kind == "GroupNormPruner":
        return tp.pruner.GroupNormPruner(
            model, importance=tp.importance.GroupMagnitudeImportance(p=2), **common
        )
    return tp.pruner.BNScalePruner(model, importance=tp.importance.BNScaleImportance(), **common)


def _tp_prune_to(kind: str, model: Any, target: float) -> Any:
    """Prune a copy of ``model`` at the per-layer ratio whose MACs meet ``target`` from
    below (bisection on the ratio, MACs counted by compressor's fvcore convention)."""
    from compressor.analysis import count_macs

    total = count_macs(model, (3, 32, 32))
    lo, hi, best = 0.0, 0.99, None
    for _ in range(14):
        mid = (lo + hi) / 2
        trial = copy.deepcopy(model)
        _tp_pruner(kind, trial, mid).step()
        frac = count_macs(trial, (3, 32, 32)) / total
        if frac <= target:
            hi, best = mid, (trial, frac)
            if frac >= 0.97 * target:
                break
        else:
            lo = mid
    assert best is not None, "target out of reach"
    return best[0]


def _tp_epochs(kind: str) -> list[int]:
    """[sparse-learning epochs, fine-tuning epochs] of a pruner, with its ``+rAfB`` split."""
    base, _, variant = kind.partition("+")
    if variant:
        match = re.fullmatch(r"r(\d+)f(\d+)", variant)
        if match is None:
            raise SystemExit(f"unknown Torch-Pruning variant {variant!r}; use rAfB, e.g. r1f5")
        return [int(match[1]), int(match[2])]
    return [0, 3] if base == "MagnitudePruner" else [3, 3]


def tp_row(work: Path, model_path: Path, kind: str, target: int, seed: int) -> dict[str, Any]:
    out = work / f"tp-{kind}-{target}x-s{seed}.json"
    if out.is_file():
        return {"epochs": _tp_epochs(kind), **json.loads(out.read_text())}
    kind, _, variant = kind.partition("+")
    reg_epochs, ft_epochs = _tp_epochs(f"{kind}+{variant}" if variant else kind)
    import torch

    from compressor.analysis import count_macs, count_params
    from compressor.checkpoint import load_model, save_model
    from compressor.config import DataConfig, TrainConfig
    from compressor.data import load_data
    from compressor.train import evaluate, fit
    from compressor.utils import seed_everything

    print(f"# torch-pruning {kind} {target}x seed {seed}", flush=True)
    t0 = time.perf_counter()
    loaded = load_model(model_path)
    data = DataConfig("mnist15k", augment=False)
    bundle = load_data(data, channels=3, recorded=loaded.preprocess)
    train = TrainConfig(epochs=reg_epochs, lr=0.01, seed=seed, device="cpu")  # compress's --lr
    finetune = TrainConfig(epochs=ft_epochs, lr=0.05, seed=seed, device="cpu")  # its --ft-lr
    model = loaded.model
    dense_macs = count_macs(model, (3, 32, 32))
    dense_acc = evaluate(model, bundle.val, bundle.preprocess, device=torch.device("cpu"))["top1"]
    seed_everything(seed)
    regularized_acc = None
    if reg_epochs > 0:  # sparse learning does not depend on the target: once per seed
        tag = "" if reg_epochs == 3 else f"-r{reg_epochs}"
        cached = work / f"tp-{kind}-s{seed}-regularized{tag}.pt"
        if cached.is_file():
            reg = load_model(cached)
            model = reg.model
            regularized_acc = reg.metadata["regularized_top1"]
        else:
            pruner = _tp_pruner(kind, model, 0.5)  # the ratio is chosen after sparse learning
            hist = fit(model, bundle, train, data, regularizer=_TPSparsity(pruner), progress=False)
            regularized_acc = hist.history[-1].val_top1
            loaded.metadata["regularized_top1"] = regularized_acc
            save_model(loaded, cached)
    pruned = _tp_prune_to(kind, model, TARGETS[target])
    seed_everything(seed)
    fit(pruned, bundle, finetune, data, progress=False)
    acc = evaluate(pruned, bundle.val, bundle.preprocess, device=torch.device("cpu"))["top1"]
    loaded.model = pruned.cpu()
    name = out.name.removesuffix(".json")
    save_model(loaded, work / f"{name}.pt")
    from torch import nn

    row = {
        "tool": "torch-pruning",
        "method": name.split("-")[1],
        "epochs": [reg_epochs, ft_epochs],
        "target_macs_ratio": target,
        "seed": seed,
        "macs_ratio": dense_macs / count_macs(pruned, (3, 32, 32)),
        "accuracy": acc,
        "dense_accuracy": dense_acc,
        "params": count_params(pruned),
        "regularized_accuracy": regularized_acc,
        "channels": {
            n: m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
            for n, m in pruned.named_modules()
            if isinstance(m, nn.Conv2d | nn.Linear)
        },
        "model": str(work / f"{name}.pt"),
        "seconds": time.perf_counter() - t0,
    }
    out.write_text(json.dumps(row, indent=2))
    return row


# --------------------------------------------------------------------------- speed


def speed(work: Path, dense_path: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Export one model per (tool, method, target) at 224x224 and time them all against
    the dense model in one `compressor benchmark` run."""
    chosen: dict[tuple[str, str, int], dict[str, Any]] = {}
    for r in sorted(rows, key=lambda r: r["seed"]):
        chosen.setdefault((r["tool"], r["method"], r["target_macs_ratio"]), r)
    files = []
    for name, src in [("dense", str(dense_path))] + [
        (f"{t}-{m}-{x}x", r["model"]) for (t, m, x), r in chosen.items()
    ]:
        onnx_path = work / "onnx224" / f"{name}.onnx"
        onnx_path.parent.mkdir(exist_ok=True)
        if not onnx_path.is_file():
            sh(
                [
                    "compressor",
                    "export",
                    src,
                    "--input-size",
                    "224",
                    "-o",
                    str(onnx_path),
                    "-q",
                ],
                work / "onnx224" / f"{name}.log",
            )
        files.append(str(onnx_path))
    result = work / "speed.json"
    with result.open("w") as f:
        subprocess.run(
            ["compressor", "benchmark", *files, "--threads", "1,2", "--json", "-q"],
            stdout=f,
            check=True,
        )
    return speed_rows(json.loads(result.read_text()))


def speed_rows(bench: dict[str, Any]) -> list[dict[str, Any]]:
    """``compressor benchmark --json`` output -> one row per (model, threads), with the
    MACs cut its ONNX graph gives beside the measured speed-up."""
    cuts = {m["model"]: m.get("macs_cut_vs_first") for m in bench["models"]}
    return [
        {
            "model": Path(r["model"]).stem,
            "threads": r["threads"],
            "p50_ms": r["p50_ms"],
            "p50_ci95_ms": r.get("p50_ci95_ms"),
            "speedup_vs_first": r.get("speedup_vs_first"),
            "mac_cut_vs_first": cuts.get(r["model"]),
        }
        for r in bench["results"]
    ]


# --------------------------------------------------------------------------- lenet


def lenet_sweep(work: Path, methods: list[str]) -> list[dict[str, Any]]:
    model = ROOT / "models" / "lenet5-mnist15k.pt"
    rows = []
    for method in methods:
        for lam in LENET_SWEEP.get(method, []):
            out = work / f"lenet-{method}-{lam}"
            if not (out / "report.json").is_file():
                sh(
                    [
                        "compressor",
                        "compress",
                        str(model),
                        "--method",
                        method,
                        "--data",
                        "mnist15k",
                        "--reg-epochs",
                        "3",
                        "--ft-epochs",
                        "3",
                        "--lambda",
                        lam,
                        # what each method emptied: under 1% of its group's best score
                        "--threshold",
                        "0.01",
                        "--relative",
                        "-o",
                        str(out),
                        "--force",
                        "-q",
                    ],
                    work / f"{out.name}.log",
                )
            r = json.loads((out / "report.json").read_text())
            convs = [row for row in r["layers"] if row["type"] == "Conv2d"][:2]
            rows.append(
                {
                    "method": method,
                    "lambda": lam,
                    "filters": [row["after"] for row in convs],
                    "filters_before": [row["before"] for row in convs],
                    "accuracy": r["compressed"]["accuracy"],
                    "dense_accuracy": r["baseline"]["accuracy"],
                    "macs_ratio": r["baseline"]["macs"] / r["compressed"]["macs"],
                }
            )
    return rows


# --------------------------------------------------------------------------- output


def results_header(title: str, payload: dict[str, Any], machine_extra: str = "") -> list[str]:
    """The markdown head every results file starts with: title, command, machine, date
    (and wall time when ``payload`` has ``seconds``)."""
    wall = f"; wall time {payload['seconds'] / 60:.0f} min" if "seconds" in payload else ""
    return [
        f"# {title}",
        "",
        f"Command: `{payload['command']}`  ",
        f"Machine: {payload['machine']}{machine_extra}  ",
        f"Date: {payload['date']}{wall}",
        "",
    ]


def save_results(name: str, payload: Any, lines: list[str]) -> None:
    """``results/NAME.json`` (the payload) and ``results/NAME.md`` (the lines)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")


def machine() -> str:
    import os

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["tool"], r["method"], r["target_macs_ratio"]), []).append(r)
    out = []
    for (tool, method, target), rs in groups.items():
        accs = [r["accuracy"] for r in rs]
        macs = [r["macs_ratio"] for r in rs]
        reg = [r["regularized_accuracy"] for r in rs if r.get("regularized_accuracy") is not None]
        shares = [r["share"] for r in rs if r.get("share") is not None]
        out.append(
            {
                "tool": tool,
                "method": method,
                "target": target,
                "seeds": len(rs),
                "accuracy_mean": statistics.mean(accs),
                "accuracy_sd": statistics.stdev(accs) if len(accs) > 1 else None,
                "macs_ratio_mean": statistics.mean(macs),
                "regularized_mean": statistics.mean(reg) if reg else None,
                "share_mean": statistics.mean(shares) if shares else None,
                "epochs": sorted({"+".join(map(str, r["epochs"])) for r in rs if r.get("epochs")}),
                "dense_accuracy": rs[0]["dense_accuracy"],
            }
        )
    return sorted(out, key=lambda s: (s["target"], s["tool"], -s["accuracy_mean"]))


def write(payload: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "quality.json").write_text(json.dumps(payload["rows"], indent=2) + "\n")
    (RESULTS / "quality_run.json").write_text(json.dumps(payload, indent=2) + "\n")
    lines = [
        "# Methods against Torch-Pruning at a fixed MAC budget",
        "",
        f"Command: `{payload['command']}`  ",
        f"Machine: {payload['machine']}  ",
        f"Date: {payload['date']}; this invocation {payload['seconds'] / 60:.0f} min "
        "(runs finished earlier under the same --work are reused, not rerun)",
        "",
        "resnet18 on mnist15k at 32x32 (13,000 train / 2,000 val images); the dense model "
        "from `compressor train` (5 epochs); then `--reg-epochs 3 --ft-epochs 3`. "
        "Accuracy is validation top-1 (%), mean ± sd over the seeds run. Epochs: the "
        "regularize (or sparse-learning) and fine-tuning epochs actually run; compressor's "
        "early prune hands regularize epochs to fine-tuning when the target's channels "
        "cannot be emptied in time.",
        "",
        "| target | tool | method | seeds | epochs | MACs cut | top-1 after | after regularize | share removed | dense |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in payload["summary"]:
        reg = f"{s['regularized_mean']:.2f}" if s["regularized_mean"] is not None else "-"
        share = f"{100 * s['share_mean']:.1f}%" if s["share_mean"] is not None else "-"
        lines.append(
            f"| {s['target']}x | {s['tool']} | {s['method']} | {s['seeds']} | "
            f"{', '.join(s.get('epochs') or []) or '-'} | {s['macs_ratio_mean']:.1f}x | {s['accuracy_mean']:.2f}"
            f"{f' ± {sd:.2f}' if (sd := s['accuracy_sd']) is not None else ' (one seed)'} | "
            f"{reg} | {share} | {s['dense_accuracy']:.2f} |"
        )
    if payload.get("speed"):
        lines += [
            "",
            "## onnxruntime speed-up at 224x224 beside the MACs cut (seed 0 architectures)",
            "",
            "| model | threads | p50 (ms) | speed-up | MACs cut |",
            "| --- | --- | --- | --- | --- |",
        ]
        lines[-2:-2] = _thread_warning(payload["speed"])
        for r in payload["speed"]:
            name = r["model"]
            sp = r.get("speedup_vs_first")
            cut = r.get("mac_cut_vs_first")
            lines.append(
                f"| {name} | {r['threads']} | {r['p50_ms']:.2f} | "
                f"{f'{sp:.2f}x' if sp else '-'} | {f'{cut:.2f}x' if cut else '-'} |"
            )
    if payload.get("lenet"):
        lines += [
            "",
            "## LeNet-5 (20-50 filters) strength sweep, default selection",
            "",
            "SSL (Wen et al. 2016) reports 5-19 filters at 0.8% error (baseline 0.9%), after "
            "full training on the 60,000 MNIST images; these runs fine-tune the reference "
            "LeNet-5 (`models/lenet5-mnist15k.pt`) for 3 + 3 epochs on mnist15k and remove "
            "every channel under 1% of its group's best score (`--threshold 0.01 --relative`).",
            "",
            "| method | lambda | filters kept (conv1-conv2) | top-1 | MACs cut |",
            "| --- | --- | --- | --- | --- |",
        ]
        for r in payload["lenet"]:
            lines.append(
                f"| {r['method']} | {r['lambda']} | {'-'.join(map(str, r['filters']))} | "
                f"{r['accuracy']:.2f} | {r['macs_ratio']:.1f}x |"
            )
    (RESULTS / "quality.md").write_text("\n".join(lines) + "\n")
    plot(payload["rows"])


def _thread_warning(speed: list[dict[str, Any]]) -> list[str]:
    """A line when the dense model ran slower with more threads: then the extra threads
    contended (before runner version 2, a neighbouring session's spinning workers did),
    and only the 1-thread ratios are speed figures."""
    dense = {r["threads"]: r["p50_ms"] for r in speed if r["model"] == "dense"}
    slow = [t for t in dense if t > min(dense) and dense[t] > dense[min(dense)]]
    if not slow:
        return []
    t = max(slow)
    return [
        f"Warning: in this run the dense model took {dense[t]:.1f} ms at {t} threads "
        f"against {dense[min(dense)]:.1f} ms at {min(dense)}: its extra threads contended. "
        f"Read the {min(dense)}-thread rows; the others are listed as measured, not as "
        "speed figures.",
        "",
    ]


def plot(rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    names = sorted({(r["tool"], r["method"]) for r in rows})
    cmap = plt.get_cmap("tab20")
    for i, (tool, method) in enumerate(names):
        rs = [r for r in rows if (r["tool"], r["method"]) == (tool, method)]
        ax.scatter(
            [r["macs_ratio"] for r in rs],
            [r["accuracy"] for r in rs],
            color=cmap(i % 20),
            marker="o" if tool == "compressor" else "s",
            label=f"{'' if tool == 'compressor' else 'TP '}{method}",
            alpha=0.8,
        )
    if rows:
        ax.axhline(rows[0]["dense_accuracy"], color="grey", linestyle=":", label="dense")
    ax.set_xscale("log")
    ax.set_xlabel("MACs cut (x, log)")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title("resnet18, mnist15k 32x32: accuracy at a MAC budget")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(RESULTS / "quality.png", dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "_work" / "quality")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--targets", default="10,30")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--tp", default=",".join(TP_PRUNERS))
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--no-lenet", action="store_true")
    ap.add_argument(
        "--reuse-only",
        action="store_true",
        help="assemble the files from the runs finished under --work; run nothing new",
    )
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    seeds = [int(s) for s in args.seeds.split(",")]
    targets = [int(t) for t in args.targets.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    pruners = [p for p in args.tp.split(",") if p]
    model = dense(args.work)
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        for target in targets:
            for kind in pruners:
                if (
                    not args.reuse_only
                    or (args.work / f"tp-{kind}-{target}x-s{seed}.json").is_file()
                ):
                    rows.append(tp_row(args.work, model, kind, target, seed))
            for method in methods:
                done = args.work / f"compressor-{method}-{target}x-s{seed}" / "report.json"
                if not args.reuse_only or done.is_file():
                    rows.append(compressor_row(args.work, model, method, target, seed))
            payload = {
                "command": shlex.join([sys.executable.rsplit("/", 1)[-1], *sys.argv]),
                "machine": machine(),
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "seconds": time.perf_counter() - t0,
                "rows": rows,
                "summary": summarise(rows),
            }
            write(payload)  # partial results as they come
    if not args.no_lenet:
        payload["lenet"] = lenet_sweep(args.work, methods)
    if not args.no_speed:
        payload["speed"] = speed(args.work, model, rows)
    payload["seconds"] = time.perf_counter() - t0
    write(payload)
    print((RESULTS / "quality.md").read_text())


if __name__ == "__main__":
    main()
