"""Does a MAC cut become a speed-up? `compressor benchmark` on a model and two pruned copies.

mobilenet_v2 (random weights) is pruned by the same global ratio twice: once with kept
channel counts left as the ranking gives them (``--round-to 1``) and once rounded to
multiples of 8 (the default). The three ONNX files are measured together by
``compressor benchmark`` with its default settings, which sets each model's MAC cut beside
its measured speed-up.

    python benchmarks/mac_cut_vs_speedup.py [--arch mobilenet_v2 --size 224 --ratio 0.5]

Writes benchmarks/results/mac_cut_vs_speedup.{json,md,png} with the command and the machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from common import commit_text, provenance

RESULTS = Path(__file__).parent / "results"


def export(arch: str, size: int, path: Path, ratio: float, round_to: int) -> None:
    import torch

    from compressor.archs import build_model
    from compressor.pruning import apply_plan, channel_groups, group_scores, plan_ratio

    torch.manual_seed(0)
    model = build_model(arch, num_classes=1000).eval()
    x = torch.randn(1, 3, size, size)
    if ratio:
        index = channel_groups(model, x)
        apply_plan(index, plan_ratio(group_scores(index, model), ratio, round_to=round_to))
    torch.onnx.export(
        model,
        (x,),
        str(path),
        dynamo=False,
        input_names=["input"],
        dynamic_axes={"input": {0: "batch"}},
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="mobilenet_v2")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--ratio", type=float, default=0.5)
    args = ap.parse_args()
    command = "python benchmarks/mac_cut_vs_speedup.py " + " ".join(sys.argv[1:])
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        files = [
            (Path(tmp) / f"{args.arch}.onnx", 0.0, 1),
            (Path(tmp) / f"{args.arch}-pruned-unrounded.onnx", args.ratio, 1),
            (Path(tmp) / f"{args.arch}-pruned-round8.onnx", args.ratio, 8),
        ]
        for path, ratio, round_to in files:
            export(args.arch, args.size, path, ratio, round_to)
        md = RESULTS / "mac_cut_vs_speedup.md"
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "compressor",
                "benchmark",
                *(str(f[0]) for f in files),
                "--json",
                "-q",
                "--markdown",
                str(md),
                "--chart",
                str(RESULTS / "mac_cut_vs_speedup.png"),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    result = json.loads(proc.stdout)
    result["command"] = command
    result |= provenance()
    for item in (*result["models"], *result["results"]):
        item["model"] = Path(item["model"]).name
    (RESULTS / "mac_cut_vs_speedup.json").write_text(json.dumps(result, indent=2) + "\n")
    models = {Path(m["model"]).name: m for m in result["models"]}
    lines = [
        "# MAC cut against measured speed-up",
        "",
        f"Command: `{command}`  ",
        f"Commit: {commit_text(result)}  ",
        f"{args.arch} at {args.size}x{args.size}, random weights; {args.ratio:.0%} of prunable "
        "channels removed by compressor's pruning engine, kept counts unrounded or rounded to "
        "multiples of 8; measured together by `compressor benchmark` (default settings).",
        "",
    ]
    for r in result["results"][1:]:
        name = Path(r["model"]).name
        lines.append(
            f"- {name}: MAC cut {models[name]['macs_cut_vs_first']:.2f}x, measured speed-up "
            f"{r['speedup_vs_first']:.2f}x"
        )
    table = md.read_text().removeprefix("# Benchmark\n")
    md.write_text("\n".join(lines) + "\n" + table + "\n![chart](mac_cut_vs_speedup.png)\n")
    print(md.read_text())


if __name__ == "__main__":
    main()
