"""timm's CNNs through the user's path, beside Torch-Pruning's generic recipe on the same models.

For each architecture of the sample (each step in its own process, with a time limit):
build it untrained (seeded, 10 classes) with timm and ``torch.save`` its ``state_dict()``,
as a user with a fine-tuned timm checkpoint would have; then

    compressor export MODEL.pt --arch timm/NAME --input-size S -o dense.onnx --json
    compressor prune MODEL.pt --arch timm/NAME --target-macs 0.5 --input-size S -o p.pt --json
    compressor export p.pt --input-size S -o pruned.onnx --json
    compressor benchmark dense.onnx pruned.onnx --threads 1 --no-memory --json

``export`` checks onnxruntime against PyTorch (max abs difference within 1e-4 of the
output scale) and fails otherwise. A model counts as ok when every command succeeds and
the MACs fell to within 10% of half.

Torch-Pruning's row is what a generic user of it would run on the same model: its
``MetaPruner`` with its defaults (``GroupMagnitudeImportance``, local pruning), the
classifier ignored and ``pruning_ratio = 1 - 1/sqrt(2)`` (half the MACs of a chain of
convolutions), then ``torch.onnx.export`` and the same onnxruntime check. Its row counts as
ok when pruning, the forward pass and the export succeed, the outputs match within the same
tolerance, and the MACs fell to within 10% of half.

    python benchmarks/timm_coverage.py                  # the sample (an hour or two)
    python benchmarks/timm_coverage.py --size 64 NAME   # selected models, a quick look

Writes benchmarks/results/timm_coverage.{json,md} with the command and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import commit_text, machine, provenance
from prune_coverage import _cli

RESULTS = Path(__file__).parent / "results"
TOLERANCE = 1e-4  # onnxruntime vs PyTorch: max abs difference over the output scale
TARGET = 0.5  # of the MACs
TP_RATIO = 1 - 2**-0.5

# (family, timm name): at least one of each family the issue names, small variants first
SAMPLE = [
    ("resnet", "resnet18"),
    ("resnet", "resnet10t"),
    ("resnet-d", "resnet26d"),
    ("resnet-d", "resnet50d"),
    ("resnext", "resnext26ts"),
    ("seresnet", "seresnet33ts"),
    ("seresnet", "seresnext26d_32x4d"),
    ("res2net", "res2net50_14w_8s"),
    ("resnest", "resnest14d"),
    ("skresnet", "skresnet18"),
    ("gcresnet", "gcresnet33ts"),
    ("ecaresnet", "eca_resnet33ts"),
    ("nfnet", "nf_resnet26"),
    ("efficientnet", "efficientnet_b0"),
    ("efficientnet", "efficientnet_lite0"),
    ("efficientnet", "tf_efficientnet_b0"),
    ("efficientnetv2", "efficientnetv2_rw_t"),
    ("mobilenetv2", "mobilenetv2_100"),
    ("mobilenetv3", "mobilenetv3_small_100"),
    ("mobilenetv3", "mobilenetv3_large_100"),
    ("mobilenetv4", "mobilenetv4_conv_small"),
    ("mnasnet", "mnasnet_100"),
    ("fbnet", "fbnetc_100"),
    ("spnasnet", "spnasnet_100"),
    ("hardcorenas", "hardcorenas_a"),
    ("tinynet", "tinynet_a"),
    ("lcnet", "lcnet_050"),
    ("mixnet", "mixnet_s"),
    ("rexnet", "rexnet_100"),
    ("ghostnet", "ghostnet_100"),
    ("ghostnet", "ghostnetv2_100"),
    ("convnext", "convnext_atto"),
    ("convnext", "convnext_nano"),
    ("regnet", "regnetx_002"),
    ("regnet", "regnety_002"),
    ("regnet", "regnetz_005"),
    ("repvgg", "repvgg_a0"),
    ("mobileone", "mobileone_s0"),
    ("fastvit", "fastvit_t8"),
    ("gernet", "gernet_s"),
    ("cspnet", "cspresnet50"),
    ("cspnet", "cs3darknet_s"),
    ("dla", "dla34"),
    ("dla", "dla46_c"),
    ("dpn", "dpn48b"),
    ("densenet", "densenet121"),
    ("inception", "inception_v3"),
    ("xception", "xception41"),
    ("xception", "legacy_xception"),
    ("hrnet", "hrnet_w18_small"),
    ("vovnet", "ese_vovnet19b_dw"),
    ("selecsls", "selecsls42b"),
]


def compressor_row(name: str, size: int, timeout: float, speed: bool) -> dict:
    """The four commands on a state_dict file of timm ``name``."""
    import torch

    from compressor.archs import build_model

    arch = f"timm/{name}"
    row: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        src, pruned = os.path.join(tmp, "model.pt"), os.path.join(tmp, "p.pt")
        dense_onnx, pruned_onnx = os.path.join(tmp, "dense.onnx"), os.path.join(tmp, "p.onnx")
        torch.manual_seed(0)
        torch.save(build_model(arch, num_classes=10).state_dict(), src)
        shape = ["--input-size", str(size)]
        step = "export (dense)"
        try:
            _cli(["export", src, "--arch", arch, *shape, "-o", dense_onnx], timeout)
            step = "prune"
            p = _cli(
                ["prune", src, "--arch", arch, "--target-macs", str(TARGET), *shape, "-o", pruned],
                timeout,
            )
            row.update(
                groups=p["groups"],
                kept_whole=p["groups_kept_whole"],
                macs_before=p["macs_before"],
                macs_after=p["macs_after"],
                target_miss=p["target_miss"],
                prune_seconds=round(p["seconds"], 1),
            )
            step = "export (pruned)"
            e = _cli(["export", pruned, *shape, "-o", pruned_onnx], timeout)
            row["rel_diff"] = max(c["rel_diff"] for c in e["parity"])
            if speed:
                step = "benchmark"
                b = _cli(
                    ["benchmark", dense_onnx, pruned_onnx, "--threads", "1", "--no-memory"],
                    timeout,
                )
                row["speedup"] = b["results"][1]["speedup_vs_first"]
                row["speedup_ci95"] = b["results"][1]["speedup_vs_first_ci95"]
        except (RuntimeError, subprocess.TimeoutExpired) as err:
            row.update(status="error", error=f"{step}: {str(err)[:300]}")
            return row
    cut = row["macs_before"] / max(row["macs_after"], 1)
    row["macs_cut"] = cut
    row["status"] = "ok" if abs(cut / (1 / TARGET) - 1) <= 0.1 else "target missed"
    return row


def tp_worker(name: str, size: int, out: str) -> None:
    """Torch-Pruning's generic recipe on timm ``name`` (run in a child process)."""
    import numpy as np
    import onnxruntime as ort
    import timm
    import torch
    import torch_pruning as tp

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=10).eval()
    example = torch.randn(1, 3, size, size)
    macs_before, _ = tp.utils.count_ops_and_params(model, example)
    row: dict = {"macs_before": int(macs_before)}
    step = "prune"
    try:
        pruner = tp.pruner.MetaPruner(
            model,
            example,
            importance=tp.importance.GroupMagnitudeImportance(p=2),
            pruning_ratio=TP_RATIO,
            ignored_layers=[model.get_classifier()],
        )
        pruner.step()
        step = "forward"
        with torch.no_grad():
            y = model(example).numpy()
        macs_after, _ = tp.utils.count_ops_and_params(model, example)
        row["macs_after"] = int(macs_after)
        step = "export"
        path = out + ".onnx"
        torch.onnx.export(model, (example,), path, opset_version=17, dynamo=False)
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        y_ort = sess.run(None, {sess.get_inputs()[0].name: example.numpy()})[0]
        row["rel_diff"] = float(np.abs(y_ort - y).max() / max(float(np.abs(y).max()), 1e-12))
    except Exception as err:  # a generic user's failure, whatever its kind
        row.update(status="error", error=f"{step}: {type(err).__name__}: {str(err)[:240]}")
        Path(out).write_text(json.dumps(row))
        return
    cut = row["macs_before"] / max(row["macs_after"], 1)
    row["macs_cut"] = cut
    if row["rel_diff"] > TOLERANCE:
        row["status"] = "outputs differ"
    else:
        row["status"] = "ok" if abs(cut / (1 / TARGET) - 1) <= 0.1 else "target missed"
    Path(out).write_text(json.dumps(row))


def tp_row(name: str, size: int, timeout: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "row.json")
        args = [sys.executable, __file__, "--tp-worker", name, "--size", str(size), "--out", out]
        try:
            proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"status": "error", "error": f"timed out after {timeout:.0f}s"}
        if not os.path.isfile(out):
            lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
            return {"status": "error", "error": (lines[-1] if lines else "crashed")[:300]}
        return dict(json.loads(Path(out).read_text()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="timm names (default: the sample)")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--no-speed", action="store_true", help="skip the latency measurement")
    ap.add_argument("--no-tp", action="store_true", help="skip Torch-Pruning's rows")
    ap.add_argument(
        "--keep", action="store_true", help="keep the rows of the results file; run the rest"
    )
    ap.add_argument("--retry", default="", help="with --keep: comma-separated models to run again")
    ap.add_argument("--tp-worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.tp_worker:
        return tp_worker(args.tp_worker, args.size, args.out)
    family = dict((n, f) for f, n in SAMPLE)
    names = args.names or [n for _, n in SAMPLE]
    timeout = float(os.environ.get("COVERAGE_TIMEOUT", "900"))
    rows = []
    if args.keep and (RESULTS / "timm_coverage.json").is_file():
        kept = json.loads((RESULTS / "timm_coverage.json").read_text())
        retry = set(filter(None, args.retry.split(",")))
        rows = [
            r
            for r in kept["rows"]
            if r["model"] in names and r["input"] == args.size and r["model"] not in retry
        ]
        args.previous = kept["command"]
    done = {r["model"] for r in rows}
    for name in [n for n in names if n not in done]:
        t0 = time.perf_counter()
        row = {"family": family.get(name, ""), "model": name, "input": args.size}
        row["compressor"] = compressor_row(name, args.size, timeout, not args.no_speed)
        row["torch_pruning"] = {} if args.no_tp else tp_row(name, args.size, timeout)
        row["wall_seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        rows.sort(key=lambda r: names.index(r["model"]))  # the sample's order, retries too
        print(json.dumps(row), flush=True)
        write(rows, names, args)


def write(rows: list[dict], names: list[str], args: argparse.Namespace) -> None:
    import timm
    import torch
    import torch_pruning as tp

    meta = {
        "command": (f"{args.previous}` then `" if getattr(args, "previous", "") else "")
        + "python benchmarks/timm_coverage.py "
        + " ".join(sys.argv[1:]),
        "machine": machine(),
        **provenance(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "torch_pruning": tp.__version__,
        "requested": len(names),
        "input": args.size,
    }
    stem = "timm_coverage" if not args.names else "timm_coverage_selected"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(markdown(meta, rows))


def _status(r: dict) -> str:
    if not r:
        return "-"
    return r["status"] + (f": {r['error']}" if r.get("error") else "")


def _num(row: dict, key: str, fmt: str) -> str:
    return fmt.format(row[key]) if row.get(key) is not None else "-"


def markdown(meta: dict, rows: list[dict]) -> str:
    ok = sum(r["compressor"].get("status") == "ok" for r in rows)
    tp_ok = sum(r["torch_pruning"].get("status") == "ok" for r in rows)
    lines = [
        "# timm CNNs: compressor and Torch-Pruning on the same sample",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}; torch {meta['torch']}, timm {meta['timm']}, "
        f"torch-pruning {meta['torch_pruning']}  ",
        f"Commit: {commit_text(meta)}  ",
        f"Input {meta['input']}x{meta['input']}, untrained seeded weights, 10 classes, target "
        f"half the MACs. **compressor: {ok} of {len(rows)} ok** (load, prune to within 10% "
        f"of 2x, export, onnxruntime within {TOLERANCE:g} of PyTorch); "
        + (
            f"**Torch-Pruning's generic MetaPruner: {tp_ok} of {len(rows)} ok** (same checks)."
            if any(r["torch_pruning"] for r in rows)
            else "Torch-Pruning not run (`--no-tp`)."
        ),
        ""
        if len(rows) == meta["requested"]
        else f"Partial run: {len(rows)} of {meta['requested']} requested models measured.",
        "",
        "Speed-up: onnxruntime, 1 thread, batch 1, the pruned file against the dense one, "
        "measured side by side in one run (95% interval).",
        "",
        "| family | model | MACs cut | speed-up (1 thread) | groups kept whole | ONNX rel. diff | compressor | TP MACs cut | TP rel. diff | Torch-Pruning |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        c, t = r["compressor"], r["torch_pruning"]
        ci = c.get("speedup_ci95")
        speed = (
            f"{c['speedup']:.2f}x" + (f" ({ci[0]:.2f}-{ci[1]:.2f})" if ci else "")
            if c.get("speedup")
            else "-"
        )
        kept = c.get("kept_whole")
        cells = [
            r["family"],
            r["model"],
            _num(c, "macs_cut", "{:.2f}x"),
            speed,
            str(len(kept)) if kept is not None else "-",
            _num(c, "rel_diff", "{:.1e}"),
            _status(c),
            _num(t, "macs_cut", "{:.2f}x"),
            _num(t, "rel_diff", "{:.1e}"),
            _status(t),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
