"""What each install brings: the size on disk of every distribution that
``pip install compressor[EXTRA]`` pulls in, read from this environment.

    python benchmarks/install_size.py

Walks the requirements of ``compressor[full]`` and ``compressor[runner]`` through the
installed distributions (``importlib.metadata``, markers evaluated here) and sums the
installed files' sizes. That is the size on disk after the install, not the download
(wheels are compressed). NVIDIA's CUDA libraries, which pip's default PyTorch wheel brings
on Linux even without a GPU, are shown on their own. Writes
``results/install_size.{json,md}``.
"""

from __future__ import annotations

import contextlib
import time
from importlib import metadata

from common import results_header, run_payload, save_results
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def _size(dist: metadata.Distribution) -> int:
    total = 0
    for f in dist.files or []:
        with contextlib.suppress(OSError):  # a listed file that is gone
            total += f.locate().stat().st_size
    return total


def closure(root: str, extras: set[str]) -> dict[str, metadata.Distribution]:
    """Every installed distribution that ``root[extras]`` requires, directly or not."""
    seen: dict[str, metadata.Distribution] = {}
    todo = [(root, extras)]
    while todo:
        name, extra = todo.pop()
        key = canonicalize_name(name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        first = key not in seen
        seen[key] = dist
        for spec in dist.requires or []:
            req = Requirement(spec)
            envs = [{"extra": e} for e in extra] or [{"extra": ""}]
            if req.marker and not any(req.marker.evaluate(e) for e in envs):
                continue
            if first or req.marker:  # extras may add requirements on a later visit
                todo.append((req.name, set(req.extras)))
    return seen


def row(extra: str) -> dict[str, object]:
    dists = closure("compressor", {extra})
    sizes = {k: _size(d) for k, d in dists.items() if k != "compressor"}
    cuda = sum(v for k, v in sizes.items() if k.startswith("nvidia-") or k == "triton")
    top = sorted(sizes.items(), key=lambda kv: -kv[1])[:5]
    return {
        "extra": extra,
        "distributions": len(sizes),
        "bytes": sum(sizes.values()),
        "cuda_bytes": cuda,
        "largest": [{"name": k, "bytes": v} for k, v in top],
    }


def main() -> None:
    t0 = time.perf_counter()
    rows = [row("full"), row("runner")]
    payload = run_payload(t0, rows)
    payload["torch"] = metadata.version("torch")
    lines = results_header("Install size: compressor[full] and compressor[runner]", payload)
    lines += [
        f"torch {payload['torch']} from PyPI (its default Linux wheel). Sizes on disk after "
        "the install, from this environment.",
        "",
        "| install | distributions | size on disk | of which CUDA libraries and triton | largest |",
        "|---|---:|---:|---:|---|",
    ]
    for r in rows:
        largest = ", ".join(f"{d['name']} {d['bytes'] / 1e9:.2f} GB" for d in r["largest"][:3])
        lines.append(
            f"| `compressor[{r['extra']}]` | {r['distributions']} | {r['bytes'] / 1e9:.2f} GB "
            f"| {r['cuda_bytes'] / 1e9:.2f} GB | {largest} |"
        )
    save_results("install_size", payload, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
