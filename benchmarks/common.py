"""What every benchmark script shares: where results go, what each results file records
(command, machine, date, the commit and whether the tree was clean), and how a script runs
the CLI. Scripts run as ``python benchmarks/NAME.py``, so this module is importable as
``common`` without any path set-up.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from compressor import read_output

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def machine() -> str:
    """CPU model, core count and OS of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def provenance() -> dict[str, Any]:
    """The commit the code came from and whether the work tree was clean (results files
    and ignored work folders aside); ``None`` outside a git checkout."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "--short=12", "HEAD")
    status = git("status", "--porcelain", "--", ".", ":(exclude)benchmarks/results")
    return {"commit": commit, "clean": None if status is None else status == ""}


def run_payload(t0: float, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What every results file records: the command, the machine, the date, the commit,
    the wall time since ``t0`` and the rows."""
    return {
        "command": shlex.join(["python", *sys.argv]),
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        **provenance(),
        "seconds": time.perf_counter() - t0,
        "rows": rows,
    }


def commit_text(payload: dict[str, Any]) -> str:
    """ "abc123 (clean tree)" / "abc123 plus uncommitted changes" / "not recorded"."""
    commit = payload.get("commit")
    if not commit:
        return "not recorded"
    clean = payload.get("clean")
    return f"{commit} ({'clean tree' if clean else 'plus uncommitted changes'})"


def results_header(title: str, payload: dict[str, Any], machine_extra: str = "") -> list[str]:
    """The markdown head every results file starts with: title, command, machine, commit,
    date (and wall time when ``payload`` has ``seconds``)."""
    wall = f"; wall time {payload['seconds'] / 60:.0f} min" if "seconds" in payload else ""
    return [
        f"# {title}",
        "",
        f"Command: `{payload['command']}`  ",
        f"Machine: {payload['machine']}{machine_extra}  ",
        f"Commit: {commit_text(payload)}  ",
        f"Date: {payload['date']}{wall}",
        "",
    ]


def save_results(name: str, payload: Any, lines: list[str]) -> None:
    """``results/NAME.json`` (the payload) and ``results/NAME.md`` (the lines)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")


def sh(args: list[str], log: Path) -> None:
    """Run ``args`` with its output in ``log``; stop the script if it fails."""
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
    return read_output("report", out / "report.json")
