"""Every torchvision classifier through the user's path: a state_dict file, the CLI.

For each architecture (each in its own process, with a time limit): build it untrained
with 10 classes and ``torch.save`` its ``state_dict()`` to a file, as a user would; then

    compressor prune MODEL.pt --arch M --ratio 0.3 --input-size S -o pruned.pt --json
    compressor export pruned.pt --input-size S -o pruned.onnx --json

``export`` runs onnxruntime on the file it wrote and compares it with PyTorch (max abs
difference relative to the output scale, 1e-4) and fails otherwise. A model counts as
ok when both commands succeed and the MACs fell.

    python benchmarks/prune_coverage.py                 # the whole zoo (hours on 2 cores)
    python benchmarks/prune_coverage.py resnet18 swin_t  # selected models

Writes benchmarks/results/prune_coverage.{json,md}, with the command and the machine.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from common import commit_text, provenance

RESULTS = Path(__file__).parent / "results"
RATIO = 0.3


_PREVIOUS_COMMAND = ""  # with --update: the commands of the runs merged into


def _cli(args: list[str], timeout: float) -> dict:
    """Run ``compressor ARGS --json``; its JSON, plus ``peak_mb``: the command's peak
    resident memory (its own process's maximum RSS, from ``wait4``)."""
    import tempfile

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(["compressor", *args, "--json", "-q"], stdout=out, stderr=err)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise subprocess.TimeoutExpired(proc.args, timeout)
            time.sleep(0.2)
        out.seek(0)
        err.seek(0)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            lines = [ln for ln in err.read().strip().splitlines() if ln.strip()]
            raise RuntimeError(f"compressor {args[0]}: {lines[-1] if lines else code}")
        return {**json.loads(out.read()), "peak_mb": usage.ru_maxrss / 1024}  # KiB on Linux


def one(arch: str, timeout: float) -> dict:
    """Save ``arch``'s state_dict to a file, then prune and export it with the CLI."""
    import tempfile

    import torch

    from compressor.archs import arch_info, build_model

    torch.manual_seed(0)
    size = max(64, arch_info(arch).min_input_size)
    row: dict = {"model": arch, "input": size}
    with tempfile.TemporaryDirectory() as tmp:
        src, pruned, onnx = (os.path.join(tmp, n) for n in ("model.pt", "pruned.pt", "m.onnx"))
        model = build_model(arch, num_classes=10)
        from compressor.pruning import classifier_layers

        for layer in classifier_layers(model):  # torchvision zero-initialises ViT heads,
            torch.nn.init.normal_(layer.weight, std=0.05)  # which makes parity vacuous
        torch.save(model.state_dict(), src)
        t0 = time.perf_counter()
        try:
            p = _cli(
                [
                    "prune",
                    src,
                    "--arch",
                    arch,
                    "--ratio",
                    str(RATIO),
                    "--input-size",
                    str(size),
                    "-o",
                    pruned,
                ],
                timeout,
            )
            row.update(
                groups=p["groups"],
                skipped_groups=len(p["groups_kept_whole"]),
                macs_before=p["macs_before"],
                macs_after=p["macs_after"],
                seconds=round(p["seconds"], 2),
                prune_peak_mb=round(p["peak_mb"]),
            )
            e = _cli(["export", pruned, "--input-size", str(size), "-o", onnx], timeout)
            row.update(export_peak_mb=round(e["peak_mb"]), onnx_bytes=e.get("size_bytes"))
        except (RuntimeError, subprocess.TimeoutExpired) as err:
            row.update(status="error", error=str(err)[:300])
            row["wall_seconds"] = round(time.perf_counter() - t0, 1)
            return row
        row["exporter"] = e["exporter"]
        row["onnx_rel_diff"] = max(c["rel_diff"] for c in e["parity"])
        row["status"] = "ok" if row["macs_after"] < row["macs_before"] else "not pruned"
    return row


def main(argv: list[str]) -> None:
    import torchvision

    zoo = sorted(torchvision.models.list_models(module=torchvision.models))
    update = argv[:1] == ["--update"]
    if update:  # re-run some models and merge them into the existing results
        argv = argv[1:]
    archs = argv or zoo
    timeout = int(os.environ.get("COVERAGE_TIMEOUT", "600"))
    RESULTS.mkdir(exist_ok=True)
    previous: dict[str, dict] = {}
    global _PREVIOUS_COMMAND
    if update and (RESULTS / "prune_coverage.json").is_file():
        merged = json.loads((RESULTS / "prune_coverage.json").read_text())
        previous = {r["model"]: r for r in merged["rows"]}
        _PREVIOUS_COMMAND = merged["command"]
    rows = []
    for arch in archs:
        t0 = time.perf_counter()
        row = one(arch, timeout)
        row["wall_seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
        if update:
            previous[arch] = row
            _write([previous[a] for a in zoo if a in previous], zoo)
        else:
            _write(rows, archs)


def _write(rows: list[dict], archs: list[str]) -> None:
    import torch

    meta = {
        "command": (_PREVIOUS_COMMAND + "` then `" if _PREVIOUS_COMMAND else "")
        + "python benchmarks/prune_coverage.py "
        + " ".join(sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        **provenance(),
        "torch": torch.__version__,
        "ratio": RATIO,
        "requested": len(archs),
    }
    (RESULTS / "prune_coverage.json").write_text(
        json.dumps({**meta, "rows": rows}, indent=2) + "\n"
    )
    ok = sum(r["status"] == "ok" for r in rows)
    lines = [
        "# Pruning coverage of the torchvision zoo, through a state_dict file and the CLI",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}; torch {meta['torch']}  ",
        f"Commit: {commit_text(meta)}  ",
        f"Ratio {RATIO}: {ok} of {len(rows)} models ok: the untrained model's `state_dict()` "
        "saved with `torch.save`, then `compressor prune FILE --arch M --ratio 0.3` and "
        "`compressor export` (which checks onnxruntime against PyTorch: max abs difference "
        "within 1e-4 of the output scale) both succeed and the MACs fall.",
        ""
        if len(rows) == len(archs)
        else f"Partial run: {len(rows)} of {len(archs)} requested models measured.",
        "",
        "Peak memory: each command's maximum resident set (its process, from `wait4`); "
        "`-` where the row predates the column.",
        "",
        "| model | input | groups | groups kept whole | MACs before | MACs after | MACs cut | prune s | peak MB prune / export | ONNX rel. diff | status |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if "macs_before" in r and "macs_after" in r:
            lines.append(
                f"| {r['model']} | {r['input']} | {r['groups']} | {r['skipped_groups']} | "
                f"{r['macs_before'] / 1e6:.1f}M | {r['macs_after'] / 1e6:.1f}M | "
                f"{r['macs_before'] / max(r['macs_after'], 1):.2f}x | {r['seconds']} | "
                f"{r.get('prune_peak_mb', '-')} / {r.get('export_peak_mb', '-')} | "
                f"{r.get('onnx_rel_diff', float('nan')):.1e} | {r['status']}"
                f"{': ' + r['error'] if r.get('error') else ''} |"
            )
        else:
            lines.append(
                f"| {r['model']} | | | | | | | | | | {r['status']}: {r.get('error', '')} |"
            )
    (RESULTS / "prune_coverage.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
