"""1,000 random networks pruned and exported: the property tests at benchmark size.

Runs ``tests/test_property.py`` with the ``benchmark`` Hypothesis profile (1,000 examples
of random CNNs with plain, grouped and depthwise convolutions, residual additions,
concatenations, channel split and shuffle, and pooling, pruned at random ratios with
random scores; each must keep its output, its output shape, and export to ONNX matching
onnxruntime), and records the outcome, the time and Hypothesis's statistics.

    python benchmarks/property_pruning.py

Writes benchmarks/results/property_pruning.{json,md}.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

from common import commit_text, provenance

ROOT = Path(__file__).resolve().parent.parent
# What earlier runs found (each fixed, with a regression test), newest first.
PAST_FINDINGS = [
    "2026-11-28, first run (failed after 245 examples): two branches concatenated into a "
    "depthwise convolution, 75% removed with random scores; the lowest scores all sat in "
    "one branch, whose convolution was emptied ('removing 5 channels of 3.0 would empty a "
    "layer'). Planning now keeps the last channel of every producing layer "
    "(`GroupIndex.segments`); test: `tests/test_pruning.py::"
    "test_a_concatenation_branch_never_loses_its_last_channel`.",
]
RESULTS = ROOT / "benchmarks" / "results"


def main() -> None:
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-W",
        "ignore::DeprecationWarning",
        "--hypothesis-show-statistics",
        "tests/test_property.py::test_random_networks_prune_exactly_and_export",
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd,
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "HYPOTHESIS_PROFILE": "benchmark"},
    )
    seconds = time.perf_counter() - t0
    out = proc.stdout + proc.stderr
    passing = re.search(r"(\d+) passing examples?, (\d+) failing examples?, (\d+) invalid", out)
    falsifying = re.findall(r"Falsifying example:.*?(?=\n\n|\Z)", out, flags=re.S)
    payload = {
        "command": "python benchmarks/property_pruning.py",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{platform.platform()}",
        **provenance(),
        "passed": proc.returncode == 0,
        "passing_examples": int(passing.group(1)) if passing else None,
        "failing_examples": int(passing.group(2)) if passing else None,
        "invalid_examples": int(passing.group(3)) if passing else None,
        "seconds": seconds,
        "falsifying": falsifying[:5],
        "statistics": [ln for ln in out.splitlines() if ln.strip().startswith("-")][:20],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "property_pruning.json").write_text(json.dumps(payload, indent=2) + "\n")
    lines = [
        "# Property tests at benchmark size: 1,000 random networks",
        "",
        f"Command: `{payload['command']}`  ",
        f"Machine: {payload['machine']}  ",
        f"Commit: {commit_text(payload)}  ",
        f"Result: {'all passed' if payload['passed'] else 'FAILED'}: "
        f"{payload['passing_examples']} passing, {payload['failing_examples']} failing, "
        f"{payload['invalid_examples']} invalid examples in {seconds / 60:.1f} min.",
        "",
        "Each example: a random CNN (3x12x12 input, 1-5 blocks drawn from plain/grouped/"
        "depthwise convolution, residual addition, concatenation, channel split + shuffle, "
        "max/average pooling; BatchNorm and ReLU/SiLU/Hardswish), random weights, BatchNorm "
        "statistics and channel scores, a random ratio (0.05-0.8) and rounding (1, 2, 8). "
        "The channels to remove are zeroed first, so pruning must leave the output unchanged "
        "(1e-4 of its scale); the pruned model must export to ONNX and match onnxruntime.",
        "",
        "## Findings",
        "",
        *(
            ["This run: none, every example passed."]
            if payload["passed"]
            else ["This run:", "", "```", *payload["falsifying"], "```"]
        ),
        "",
        "Earlier runs:",
        "",
        *(f"- {f}" for f in PAST_FINDINGS),
        "",
        "## Hypothesis statistics",
        "",
        "```",
        *payload["statistics"],
        "```",
    ]
    (RESULTS / "property_pruning.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    sys.exit(0 if payload["passed"] else 1)


if __name__ == "__main__":
    main()
