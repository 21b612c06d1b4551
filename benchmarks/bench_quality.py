"""How trustworthy is `compressor benchmark` on this machine?

1. Repeatability: the runner is started ``--repeats`` times (fresh processes, default
   settings) on one model; the coefficient of variation of the reported p50 across the
   repeats is the figure to keep under 3%. Also counted: how many of the runs' 95%
   intervals hold the median of all runs' p50s.
2. Whose variation: the same, ``--witness-repeats`` times, while a witness process on the
   other core runs a bare ``session.run`` loop on the same model the whole time and logs
   every run's time. The witness's median over each runner's window is the machine's speed
   then; dividing it out leaves the runner's own variation. The witness's log also gives
   the machine's drift: the CV of its means over 5, 10 and 20 s blocks.
3. Overhead: in one process, rounds of the runner's timing loop alternate (ABBA) with
   blocks of a bare ``session.run`` loop on the same session; the median of the per-pair
   ratios is the runner's overhead (aim: at most 2%).
4. Ratios: the model and a copy with half its channels pruned (rounded to multiples of 8,
   as `compressor prune` and `compress` do by default) are measured together in fresh
   runner processes; the spread of the speed-up is set against the base's p50.

    python benchmarks/bench_quality.py [--arch mobilenet_v2 --size 224 --repeats 20]

Writes benchmarks/results/bench_quality.{json,md,png} with the command and the machine;
each run is also appended to the history kept in the JSON, since this VM's noise changes
from hour to hour.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import commit_text, provenance

RESULTS = Path(__file__).parent / "results"
RUNNER = Path(__file__).parent.parent / "compressor" / "bench" / "runner.py"


def export(arch: str, size: int, path: str, prune_ratio: float = 0.0) -> None:
    """The architecture with random weights, optionally with ``prune_ratio`` of its
    channels removed by compressor's pruning engine with the CLI's default rounding of
    kept channels to multiples of 8 (the pair a user compares)."""
    import torch

    from compressor.archs import build_model
    from compressor.pruning import apply_plan, channel_groups, group_scores, plan_ratio

    torch.manual_seed(0)
    model = build_model(arch, num_classes=1000).eval()
    x = torch.randn(1, 3, size, size)
    if prune_ratio:
        index = channel_groups(model, x)
        apply_plan(index, plan_ratio(group_scores(index, model), prune_ratio, round_to=8))
    torch.onnx.export(model, (x,), path, dynamo=False, input_names=["input"])


def ratio_repeatability(base: str, pruned: str, repeats: int) -> list[dict[str, Any]]:
    """The speed-up of the pruned model over the base, each repeat a fresh runner process
    measuring both interleaved with the default settings."""
    out = []
    for _ in range(repeats):
        proc = subprocess.run(
            [sys.executable, str(RUNNER), base, pruned, "--no-memory"],
            capture_output=True,
            text=True,
            check=True,
        )
        first, second = json.loads(proc.stdout)["results"]
        out.append(
            {
                "base_p50_ms": first["p50_ms"],
                "pruned_p50_ms": second["p50_ms"],
                "speedup": first["p50_ms"] / second["p50_ms"],
                "speedup_ci95": second["speedup_vs_first_ci95"],
                "seconds": first["seconds"],
            }
        )
    return out


def repeatability(path: str, repeats: int) -> list[dict[str, Any]]:
    """The runner's default settings, each repeat a fresh process; with the monotonic-clock
    window of each (CLOCK_MONOTONIC is one clock for all processes on Linux)."""
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, str(RUNNER), path, "--no-memory"],
            capture_output=True,
            text=True,
            check=True,
        )
        t1 = time.perf_counter()
        result = json.loads(proc.stdout)
        r = result["results"][0]
        out.append(
            {
                "p50_ms": r["p50_ms"],
                "p50_ci95_ms": r["p50_ci95_ms"],
                "seconds": r["seconds"],
                "p50_rse": r["p50_rse"],
                "warned": bool(result["warnings"]),
                "window": [t0, t1],
            }
        )
    return out


WITNESS = """
import sys, time, functools
import numpy as np
sys.path.insert(0, sys.argv[1])
import runner
session = runner.make_session(sys.argv[2], 1)
feeds = runner._input_for(session, 1)
call = functools.partial(session.run, None, feeds)
for _ in range(10):
    call()
with open(sys.argv[3], "ab") as log:
    while True:
        rows = []
        end = time.perf_counter() + 0.25
        while (t := time.perf_counter()) < end:
            call()
            rows.append((t, time.perf_counter() - t))
        np.asarray(rows, dtype=np.float64).tofile(log)
        log.flush()
"""


def witnessed(path: str, repeats: int, log: str) -> tuple[list[dict[str, Any]], Any]:
    """``repeatability`` while a witness process times a bare loop on the same model
    without pause; returns the repeats and the witness's (start time, seconds) rows."""
    import numpy as np

    witness = subprocess.Popen(
        [sys.executable, "-c", WITNESS, str(RUNNER.parent), path, log],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(3)  # loaded and warm before the first repeat
        if witness.poll() is not None:
            raise RuntimeError(f"the witness process died: {witness.stderr.read()[-500:]}")
        reps = repeatability(path, repeats)
    finally:
        witness.terminate()
        witness.wait()
    rows = np.fromfile(log, dtype=np.float64).reshape(-1, 2)
    for r in reps:
        t0, t1 = r["window"]
        inside = rows[(rows[:, 0] >= t0) & (rows[:, 0] <= t1), 1]
        r["witness_p50_ms"] = float(np.median(inside)) * 1e3
    return reps, rows


def drift(rows: Any, blocks: tuple[float, ...] = (5.0, 10.0, 20.0)) -> dict[str, float]:
    """CV of the witness's mean latency over consecutive blocks of each length (s): how
    much the machine's own speed moves at that time scale."""
    import numpy as np

    t, dt = rows[:, 0] - rows[0, 0], rows[:, 1]
    out = {}
    for b in blocks:
        k = int(t[-1] // b)
        if k < 3:
            continue
        means = np.array([dt[(t >= i * b) & (t < (i + 1) * b)].mean() for i in range(k)])
        out[f"{b:g}s"] = float(means.std(ddof=1) / means.mean())
    return out


def covered(values: list[float], intervals: list[list[float] | None]) -> int:
    """How many intervals hold the median of ``values``."""
    mid = statistics.median(values)
    return sum(1 for ci in intervals if ci and ci[0] <= mid <= ci[1])


def cv(values: list[float]) -> float:
    return statistics.stdev(values) / statistics.mean(values)


def cv_interval(values: list[float], draws: int = 10000) -> tuple[float, float]:
    """Bootstrap 95% interval of the coefficient of variation."""
    import numpy as np

    v = np.asarray(values)
    rng = np.random.default_rng(0)
    samples = v[rng.integers(0, len(v), size=(draws, len(v)))]
    cvs = samples.std(axis=1, ddof=1) / samples.mean(axis=1)
    lo, hi = np.percentile(cvs, [2.5, 97.5])
    return float(lo), float(hi)


def overhead(path: str, pairs: int) -> dict[str, Any]:
    """The runner's timing loop against a bare ``session.run`` loop on the same session.

    Each pair is one round of the runner's ``measure_calls`` and a bare loop of the same
    number of runs, in ABBA order so that a linear drift of the machine cancels; the wall
    time per inference of the two is compared, pair by pair (median of the ratios, with a
    bootstrap interval). The loop's own cost is also measured directly, by timing a call
    that does nothing."""
    import functools

    import numpy as np

    sys.path.insert(0, str(RUNNER.parent))
    import runner  # the file itself, as a device would run it

    session = runner.make_session(path, 1)
    feeds = runner._input_for(session, 1)
    call = functools.partial(session.run, None, feeds)
    for _ in range(10):
        call()
    one_round = {"min_runs": 1, "min_seconds": 0.0, "max_seconds": 0.0}

    def timed() -> tuple[float, int, float]:
        t0 = time.perf_counter()
        (r,) = runner.measure_calls([call], **one_round)
        wall = time.perf_counter() - t0
        return wall / r["runs"] * 1e3, r["runs"], float(r["mean_ms"])

    def bare(n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            call()
        return (time.perf_counter() - t0) / n * 1e3

    ratios, bares, timeds, reported = [], [], [], []
    for k in range(pairs):
        if k % 2 == 0:
            t, n, rep = timed()
            b = bare(n)
        else:
            b = bare(n)
            t, n, rep = timed()
        bares.append(b)
        timeds.append(t)
        reported.append(rep)
        ratios.append(t / b)
    arr = np.asarray(ratios)
    boot = np.median(arr[np.random.default_rng(0).integers(0, len(arr), (10000, len(arr)))], axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    (noop,) = runner.measure_calls([lambda: None], min_runs=1, min_seconds=0.0, max_seconds=0.0)
    loop_us = runner.ROUND_SECONDS / noop["runs"] * 1e6  # wall time per iteration, no work
    return {
        "bare_ms": statistics.median(bares),
        "runner_ms": statistics.median(timeds),
        "runner_reported_ms": statistics.median(reported),
        "overhead": statistics.median(ratios) - 1,
        "overhead_ci95": [float(lo) - 1, float(hi) - 1],
        "overhead_ratios": ratios,
        "loop_cost_us": loop_us,
        "loop_cost_fraction": loop_us / 1e3 / statistics.median(bares),
    }


def runner_round() -> str:
    sys.path.insert(0, str(RUNNER.parent))
    import runner

    return f"{runner.ROUND_SECONDS:g}"


def plot(reps: list[dict[str, Any]], wit: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.4), sharey=True)
    for axis, runs, title in ((ax, reps, "alone"), (bx, wit, "beside the witness")):
        p50 = [r["p50_ms"] for r in runs]
        lo = [r["p50_ms"] - r["p50_ci95_ms"][0] if r["p50_ci95_ms"] else 0.0 for r in runs]
        hi = [r["p50_ci95_ms"][1] - r["p50_ms"] if r["p50_ci95_ms"] else 0.0 for r in runs]
        x = range(1, len(runs) + 1)
        axis.errorbar(x, p50, yerr=[lo, hi], fmt="o", capsize=3, label="runner p50, 95% interval")
        mean = statistics.mean(p50)
        axis.axhspan(mean * 0.97, mean * 1.03, alpha=0.15, label="mean +-3%")
        if "witness_p50_ms" in runs[0]:
            w = [r["witness_p50_ms"] for r in runs]
            scale = mean / statistics.mean(w)
            axis.plot(x, [v * scale for v in w], "s--", ms=4, label="witness (scaled)")
        axis.set_title(f"fresh runner processes, {title}", fontsize=9)
        axis.set_xlabel("run")
        axis.legend(loc="upper right", fontsize=7)
    ax.set_ylabel("p50 latency (ms)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="mobilenet_v2")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--witness-repeats", type=int, default=12, help="fresh runs beside the witness")
    ap.add_argument("--pairs", type=int, default=80, help="ABBA block pairs for the overhead")
    ap.add_argument(
        "--ratio-repeats", type=int, default=10, help="fresh runs of the base/pruned pair"
    )
    ap.add_argument("--prune-ratio", type=float, default=0.5)
    args = ap.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{args.arch}.onnx")
        export(args.arch, args.size, path)
        pruned = os.path.join(tmp, f"{args.arch}-pruned.onnx")
        export(args.arch, args.size, pruned, args.prune_ratio)
        reps = repeatability(path, args.repeats)
        wit, rows = witnessed(path, args.witness_repeats, os.path.join(tmp, "witness.bin"))
        ovh = overhead(path, args.pairs)
        pair = ratio_repeatability(path, pruned, args.ratio_repeats)
    p50s = [r["p50_ms"] for r in reps]
    p50_cv = cv(p50s)
    cv_lo, cv_hi = cv_interval(p50s)
    # beside the witness: the runner's p50 with the machine's speed in its window divided out
    wit_p50 = [r["p50_ms"] for r in wit]
    wit_machine = [r["witness_p50_ms"] for r in wit]
    own = [a / b for a, b in zip(wit_p50, wit_machine, strict=True)]
    machine_drift = drift(rows)
    speedups = [r["speedup"] for r in pair]
    base_p50s = [r["base_p50_ms"] for r in pair]
    ratio_cv, base_cv = cv(speedups), cv(base_p50s)
    import onnxruntime

    meta = {
        "command": "python benchmarks/bench_quality.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        **provenance(),
        "onnxruntime": onnxruntime.__version__,
        "started": started,
        **vars(args),
    }
    RESULTS.mkdir(exist_ok=True)
    json_path = RESULTS / "bench_quality.json"
    history = []
    if json_path.exists():  # earlier runs of this script (the machine's noise changes by the hour)
        previous = json.loads(json_path.read_text())
        history = previous.get("history", [])
    summary = {
        "started": started,
        "command": meta["command"],
        "p50_cv": p50_cv,
        "p50_cv_ci95": [cv_lo, cv_hi],
        "mean_seconds": statistics.mean(r["seconds"] for r in reps),
        "p50_interval_coverage": covered(p50s, [r["p50_ci95_ms"] for r in reps]) / len(reps),
        "witnessed_p50_cv": cv(wit_p50),
        "witness_cv": cv(wit_machine),
        "runner_own_cv": cv(own),
        "machine_drift_cv": machine_drift,
        "overhead": ovh["overhead"],
        "overhead_ci95": ovh["overhead_ci95"],
        "speedup_cv": ratio_cv,
        "pair_base_p50_cv": base_cv,
        "standard_error": "autocorrelation-corrected",
    }
    history.append(summary)
    payload = {**meta, "repeats_detail": reps, "witnessed_detail": wit, "summary": summary}
    payload |= {"pair_detail": pair, **ovh, "history": history}
    json_path.write_text(json.dumps(payload, indent=2) + "\n")
    plot(reps, wit, RESULTS / "bench_quality.png")
    seconds = [r["seconds"] for r in reps]
    drift_text = ", ".join(f"{v:.2%} over {k} blocks" for k, v in machine_drift.items())
    lines = [
        "# Benchmark measurement quality",
        "",
        f"Command: `{meta['command']}` (started {started})  ",
        f"Machine: {meta['machine']}; onnxruntime {meta['onnxruntime']}  ",
        f"Commit: {commit_text(meta)}  ",
        "",
        f"{args.arch} at {args.size}x{args.size}, batch 1, 1 thread, the runner's default settings "
        "(10 warm-up runs; at least 50 runs and 5 s, then on until the p50's relative standard "
        "error, allowing for autocorrelation between rounds, is at most 1%, for at most 20 s).",
        "",
        f"- Repeatability: p50 over {args.repeats} fresh runner processes: "
        + ", ".join(f"{v:.2f}" for v in p50s)
        + f" ms; coefficient of variation **{p50_cv:.2%}** (bootstrap 95% interval "
        f"{cv_lo:.2%}-{cv_hi:.2%}; aim: at most 3%). Measured time per run "
        f"{min(seconds):.1f}-{max(seconds):.1f} s (mean {statistics.mean(seconds):.1f} s); "
        f"{sum(r['warned'] for r in reps)} of {args.repeats} runs warned of an imprecise p50; "
        f"{covered(p50s, [r['p50_ci95_ms'] for r in reps])} of {args.repeats} runs' 95% intervals "
        "hold the median of all runs' p50s.",
        f"- Whose variation: {args.witness_repeats} more fresh runs, beside a witness process "
        f"timing a bare session.run loop on the same model throughout. Runner p50 CV "
        f"{cv(wit_p50):.2%}; the witness's p50 over the same windows {cv(wit_machine):.2%}; "
        f"their ratio (the runner's own variation, the machine's speed divided out) "
        f"**{cv(own):.2%}**. The machine's drift, from the witness's log: {drift_text}.",
        f"- Overhead: the runner's loop {ovh['runner_ms']:.3f} ms vs a bare session.run loop "
        f"{ovh['bare_ms']:.3f} ms of wall time per inference; median of {args.pairs} ABBA-ordered "
        f"pairs of one {runner_round()} s round and as many bare runs: **{ovh['overhead']:+.2%}** "
        f"(bootstrap 95% interval {ovh['overhead_ci95'][0]:+.2%} to {ovh['overhead_ci95'][1]:+.2%}; "
        "aim: at most 2%). The loop's own cost, timed on a call that does nothing, is "
        f"{ovh['loop_cost_us']:.2f} us per run, {ovh['loop_cost_fraction']:.3%} of this model's "
        "latency.",
        f"- Ratios: {args.arch} against itself with {args.prune_ratio:.0%} of its channels pruned "
        f"(kept counts multiples of 8), measured together in {args.ratio_repeats} fresh runner "
        "processes: speed-up "
        + ", ".join(f"{v:.3f}" for v in speedups)
        + f"; CV **{ratio_cv:.2%}**, against {base_cv:.2%} for the base model's p50 in the same "
        f"runs. {covered(speedups, [r['speedup_ci95'] for r in pair])} of {args.ratio_repeats} "
        "per-run 95% intervals of the speed-up hold the median speed-up of all runs.",
        "",
        "![p50 of each fresh run](bench_quality.png)",
        "",
        "## All runs of this script",
        "",
        "Runs before 2026-11-25 used a standard error that ignored the autocorrelation of rounds "
        "(narrower intervals, earlier stops) and pruned without rounding channel counts.",
        "",
        "| started | p50 CV (95% interval) | mean s per run | runner's own CV | machine drift CV, 10 s blocks | overhead (95% interval) | speed-up CV |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for h in history:
        lo, hi = h["p50_cv_ci95"]
        own_cv = f"{h['runner_own_cv']:.2%}" if "runner_own_cv" in h else "-"
        drift10 = h.get("machine_drift_cv", {}).get("10s")
        lines.append(
            f"| {h['started']} | {h['p50_cv']:.2%} ({lo:.2%}-{hi:.2%}) | "
            f"{h['mean_seconds']:.1f} | {own_cv} | {'-' if drift10 is None else f'{drift10:.2%}'} | "
            f"{h['overhead']:+.2%}"
            + (
                " ({:+.2%} to {:+.2%})".format(*h["overhead_ci95"])
                if h.get("overhead_ci95")
                else " (older, noisier method)"
            )
            + (f" | {h['speedup_cv']:.2%} |" if "speedup_cv" in h else " | - |")
        )
    (RESULTS / "bench_quality.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
