"""One process against torchrun's data-parallel processes, through `compressor train`.

    python benchmarks/ddp_train.py            # a few minutes on 2 cores
    python benchmarks/ddp_train.py --procs 1,2,4 --arch resnet18 --input-size 32 --epochs 2

Trains the same architecture on mnist15k with the same global batch and seed, once per
process count: 1 is a plain ``compressor train`` with every core; N > 1 is
``torchrun --nproc-per-node N --standalone -m compressor train`` (gloo on the CPU, NCCL
with one GPU per process where CUDA is present), each process with cores/N threads.
Reports wall time and validation top-1 (equal within noise is the aim; the speed-up
depends on the machine: on a CPU, processes only split the same cores). Writes
benchmarks/results/ddp_train.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine, provenance, results_header, save_results

from compressor import read_output


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--procs", default="1,2")
    ap.add_argument("--arch", default="smallcnn")
    ap.add_argument("--input-size", default=None)
    ap.add_argument("--epochs", default="2")
    ap.add_argument("--batch-size", default="128")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    rows = []
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(p) for p in args.procs.split(",")):
            out = Path(tmp) / f"p{n}.pt"
            launcher = (
                [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(n)]
                if n > 1
                else [sys.executable]
            )
            cmd = [
                *launcher,
                *["-m", "compressor", "train", args.arch, "--data", "mnist15k"],
                *["--epochs", args.epochs, "--batch-size", args.batch_size, "--seed", "0"],
                *["--device", args.device, "-o", str(out), "-q"],
                *(["--input-size", args.input_size] if args.input_size else []),
            ]
            env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cores // n))}
            t0 = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True, env=env)
            wall = time.perf_counter() - t0
            if done.returncode != 0:
                raise SystemExit(f"failed: {shlex.join(cmd)}\n{done.stderr[-2000:]}")
            summary = read_output("train", out.with_name(out.stem + ".train.json"))
            last = summary["history"][-1]
            rows.append(
                {
                    "processes": n,
                    "threads_per_process": max(1, cores // n),
                    "wall_seconds": wall,
                    "train_seconds": summary["seconds"],
                    "val_top1": last["val_top1"],
                    "command": shlex.join(cmd[cmd.index("-m") :] if n == 1 else cmd[1:]),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    payload = {
        "command": shlex.join(["python", *sys.argv]),
        "machine": machine(),
        **provenance(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "seconds": time.perf_counter() - t_all,
        "settings": vars(args),
        "rows": rows,
    }
    base = rows[0]
    lines = [
        *results_header(
            "`compressor train`: one process against torchrun's data-parallel processes", payload
        ),
        f"{args.arch} on mnist15k, {args.epochs} epochs, global batch {args.batch_size}, "
        f"seed 0, device {args.device}. Wall time includes start-up; training time is the "
        "loop's own (epochs and evaluation).",
        "",
        "| processes | threads each | wall s | training s | speed-up (training) | val top-1 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['processes']} | {r['threads_per_process']} | {r['wall_seconds']:.1f} | "
            f"{r['train_seconds']:.1f} | {base['train_seconds'] / r['train_seconds']:.2f}x | "
            f"{r['val_top1']:.2f} |"
        )
    save_results("ddp_train", payload, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
