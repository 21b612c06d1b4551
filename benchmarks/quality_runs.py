"""The runs of ``quality.py``: compressor's rows through ``compressor compress``
(``compressor_row``), every row of a table in order with Torch-Pruning's (``run_rows``),
the rows kept from an earlier results file (``kept_rows``), the onnxruntime speed step
(``speed``) and the LeNet-5 strength sweep (``lenet_sweep``). Every run is cached under the
work folder."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import ROOT, sh
from quality_stats import compressor_split
from quality_tasks import SEED_METHODS, TASKS, Task, _split_variant, data_options
from tp_rows import _tp_epochs, tp_row

from compressor import read_output
from compressor.config import LatencyDevice

Flush = Callable[[list[dict[str, Any]]], None]  # writes the partial results of these rows

# Fixed strengths around each method's default, selected by a relative threshold. The
# sweep's "auto" rows (results/quality.md) showed that --lambda auto with a threshold
# removes nothing and costs accuracy, so compress now refuses that combination and the
# sweep runs the fixed strengths (and `none`, which has no strength to set: "auto" is
# only its default). ffr is absent: LeNet-5 has no blocks that keep their shape.
LENET_SWEEP: dict[str, list[str]] = {
    "none": ["auto"],
    "l1": ["1e-4", "1e-3"],
    "l2": ["1e-3", "1e-2"],
    "ssl": ["1e-3", "1e-2"],
    "slimming": ["1e-3", "1e-2"],
    "l1l2": ["2e-2", "2e-1"],
    "hgs": ["1e-4", "1e-3"],
    "l0sgl": ["1e-1", "1.0"],
}

# method variants: NAME+VARIANT runs NAME with these options besides the defaults
VARIANTS = {
    "r1": ["--round-to", "1"],  # channel counts unrounded, as Torch-Pruning's
    "uniform": ["--allocation", "uniform"],  # the same fraction of every layer, as its default
    # fine-tuning at the dense recipe's lr (0.01): the benchmark's, not compress's --ft-lr
    "ftlr01": ["--ft-lr", "0.01"],
}


def _variant_options(task: Task, variant: str) -> list[str]:
    split = _split_variant(variant) if variant else None
    epochs = split or (task.reg_epochs, task.ft_epochs)
    options = ["--reg-epochs", str(epochs[0]), "--ft-epochs", str(epochs[1])]
    if variant and split is None:
        if variant not in VARIANTS:
            raise SystemExit(f"unknown variant {variant!r}: one of {', '.join(VARIANTS)} or rAfB")
        options += VARIANTS[variant]
    return options


def compressor_row(
    work: Path, model: Path, method: str, target: int, seed: int, task: Task = TASKS["mnist15k"]
) -> dict[str, Any]:
    out = work / f"compressor-{method}-{target}x-s{seed}"
    name, _, variant = method.partition("+")
    if not (out / "report.json").is_file():
        sh(
            [
                "compressor",
                "compress",
                str(model),
                "--method",
                name,
                *data_options(work, task),
                *_variant_options(task, variant),
                "--target-macs",
                repr(task.targets[target]),
                "--seed",
                str(seed),
                "--threads",  # the latency comparison's onnxruntime threads: the library's
                str(LatencyDevice.threads),
                "-o",
                str(out),
                "--force",
                "-q",
            ],
            work / f"{out.name}.log",
        )
    r = read_output("report", out / "report.json")
    s = r.get("strength") or {}
    b, c = r["baseline"], r["compressed"]
    return {
        "task": task.name,
        "tool": "compressor",
        "method": method,
        "split": f"{r['epochs']['regularize']}+{r['epochs']['finetune']}",
        "target_macs_ratio": target,
        "seed": seed,
        "macs_ratio": b["macs"] / c["macs"],
        "test_accuracy": c["test_top1"],
        "val_accuracy": c["val_top1"],
        "dense_test_accuracy": b["test_top1"],
        "dense_val_accuracy": b["val_top1"],
        "params": c["params"],
        "regularized_val_accuracy": r["history"]["regularize"][-1]["val_top1"]
        if r["history"]["regularize"]
        else None,
        "share": s.get("final_share"),
        "strength": s.get("final_strength"),
        "score_seconds": r["pruning"].get("score_seconds"),
        "widths": [row["after"] for row in r["layers"]],
        "layers": [row["name"] for row in r["layers"]],
        "model": str(out / "model.pt"),
    }


def run_rows(
    args: Any,
    task: Task,
    model: Path,
    seeds: list[int],
    targets: list[int],
    methods: list[str],
    pruners: list[str],
    rows: list[dict[str, Any]],
    *,
    flush: Flush,
) -> None:
    """Every row at these seeds and targets, in place into ``rows`` (cached runs reused),
    each new row followed by ``flush(rows)`` (the partial results file).
    Order: the seed methods and ``none``, then the controls that need their split (none
    at 0 + N and at that split, Torch-Pruning at its own and at that split), then the
    other baselines."""
    first = [m for m in methods if m.split("+")[0] in [*SEED_METHODS, "none"]]
    rest = [m for m in methods if m not in first]
    for seed in seeds:
        for target in targets:
            for method in first:
                _compressor(args, task, model, method, target, seed, rows, flush)
            split = compressor_split(rows, target, seed)
            default = f"r{task.reg_epochs}f{task.ft_epochs}"
            ran = {  # the splits `none` already ran (its own early prune may pick the same)
                f"r{r['split'].replace('+', 'f')}"
                for r in rows
                if (r["tool"], r["method"], r["target_macs_ratio"], r["seed"])
                == ("compressor", "none", target, seed)
            }
            if args.splits and "none" in methods:
                for extra in sorted({f"r0f{task.total_epochs}", split or default} - ran):
                    _compressor(args, task, model, f"none+{extra}", target, seed, rows, flush)
            kinds = list(pruners)
            if args.splits and split:
                kinds += [
                    f"{p}+{split}"
                    for p in pruners
                    if _tp_epochs(p, task) != _tp_epochs(f"{p}+{split}", task)
                ]
            for kind in kinds:
                if _has(rows, "torch-pruning", kind, target, seed):
                    continue
                if (
                    not args.reuse_only
                    or (args.work / f"tp-{kind}-{target}x-s{seed}.json").is_file()
                ):
                    rows.append(tp_row(args.work, model, kind, target, seed, task))
                    flush(rows)
            for method in rest:
                _compressor(args, task, model, method, target, seed, rows, flush)


def _compressor(
    args: Any,
    task: Task,
    model: Path,
    method: str,
    target: int,
    seed: int,
    rows: list[dict[str, Any]],
    flush: Flush,
) -> None:
    if _has(rows, "compressor", method, target, seed):
        return
    done = args.work / f"compressor-{method}-{target}x-s{seed}" / "report.json"
    if not args.reuse_only or done.is_file():
        rows.append(compressor_row(args.work, model, method, target, seed, task))
        flush(rows)


def _has(rows: list[dict[str, Any]], tool: str, method: str, target: int, seed: int) -> bool:
    """Whether ``rows`` (kept ones included) hold this run already."""
    return any(
        (r["tool"], r["method"], r["target_macs_ratio"], r["seed"]) == (tool, method, target, seed)
        for r in rows
    )


def kept_rows(
    path: Path,
    task: Task,
    work: Path | None = None,
    methods: list[str] | None = None,
    pruners: list[str] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The rows of an earlier results file of this task (``--keep``), for a table that adds
    seeds to it after that run's work folder is gone; each row is marked with the commit
    that produced it. Only the rows of the asked ``methods`` and ``pruners`` (by name
    before any ``+variant``) are kept, and none of a row (method and target) that ``work``
    holds any run of: the work folder's runs win, and one row never mixes seeds from two
    sources. ``_payload`` refuses the table unless every row, kept or new, has
    the same dense model figures (test and validation top-1)."""
    prev = json.loads(path.read_text())
    if prev.get("task") != task.name:
        raise SystemExit(f"--keep {path}: a results file of task {prev.get('task')!r}")

    def wanted(r: dict[str, Any]) -> bool:
        base = r["method"].split("+")[0]
        asked = methods if r["tool"] == "compressor" else pruners
        if asked is not None and base not in {m.split("+")[0] for m in asked}:
            return False
        if work is None:
            return True
        t = r["target_macs_ratio"]
        if r["tool"] == "compressor":
            return not any(work.glob(f"compressor-{r['method']}-{t}x-s*/report.json"))
        return not any(work.glob(f"tp-{r['method']}-{t}x-s*.json"))

    rows = [{**r, "kept_from": prev["commit"]} for r in prev["rows"] if wanted(r)]
    info = {"file": str(path), "commit": prev["commit"], "date": prev["date"], "rows": len(rows)}
    return rows, {**info, "speed": prev.get("speed")}


# --------------------------------------------------------------------------- speed


def speed(
    work: Path, dense_path: Path, rows: list[dict[str, Any]], reuse: bool = False
) -> list[dict[str, Any]]:
    """Export every distinct seed-0 architecture at 224x224 and time them all against the
    dense model in one interleaved `compressor benchmark` run. Rows with the same
    per-layer widths share one file (named after the first; ``same_as`` lists the rest).
    ``reuse``: the last run's ``speed.json`` when it measured exactly these files."""
    chosen: dict[tuple[int, tuple[int, ...]], list[dict[str, Any]]] = {}
    for r in rows:
        if r["seed"] == 0:
            chosen.setdefault((r["target_macs_ratio"], tuple(r["widths"])), []).append(r)
    files, sharing = [], {}
    models = [("dense", str(dense_path))]
    for (target, _), rs in chosen.items():
        name = f"{rs[0]['tool']}-{rs[0]['method']}-{target}x"
        models.append((name, rs[0]["model"]))
        sharing[name] = [f"{r['tool']}-{r['method']}" for r in rs[1:]]
    for name, src in models:
        onnx_path = work / "onnx224" / f"{name}.onnx"
        onnx_path.parent.mkdir(exist_ok=True)
        if not onnx_path.is_file():
            sh(
                ["compressor", "export", src, "--input-size", "224", "-o", str(onnx_path), "-q"],
                work / "onnx224" / f"{name}.log",
            )
        files.append(str(onnx_path))
    result = work / "speed.json"
    if reuse and result.is_file():
        measured = [m["model"] for m in json.loads(result.read_text())["models"]]
        if measured == files:
            print(f"speed: reusing {result} (the same {len(files)} files)", flush=True)
            return _shared(speed_rows(json.loads(result.read_text())), sharing)
    with result.open("w") as f:
        subprocess.run(
            [
                *["compressor", "benchmark", *files],
                # the benchmark's: 10 s of the library's 20 (BenchmarkConfig.max_seconds)
                *["--threads", "1,2", "--max-seconds", "10"],
                "--json",
                "-q",
            ],
            stdout=f,
            check=True,
        )
    return _shared(speed_rows(json.loads(result.read_text())), sharing)


def _shared(out: list[dict[str, Any]], sharing: dict[str, list[str]]) -> list[dict[str, Any]]:
    for r in out:
        r["same_as"] = sharing.get(r["model"], [])
    return out


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
                        "--reg-epochs",  # the sweep's 3 + 3, not compress's defaults
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
            r = read_output("report", out / "report.json")
            convs = [row for row in r["layers"] if row["type"] == "Conv2d"][:2]
            rows.append(
                {
                    "method": method,
                    "lambda": lam,
                    "filters": [row["after"] for row in convs],
                    "filters_before": [row["before"] for row in convs],
                    "test_accuracy": r["compressed"]["test_top1"],
                    "dense_test_accuracy": r["baseline"]["test_top1"],
                    "macs_ratio": r["baseline"]["macs"] / r["compressed"]["macs"],
                }
            )
    return rows
