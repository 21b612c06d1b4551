"""What the unreadable-image check costs, beside one pass of decoding for training.

Writes an ImageFolder of JPEG files (the bundled mnist15k digits, upscaled to 224x224 RGB,
as photos are) plus a few broken files, then times, in one run:

- ``find_unreadable`` (what `train`/`compress` run when they open an ImageFolder, and what
  `compressor check-data` runs), at 1 and all threads;
- one pass of the training loader's decoding (``ImageFiles[i]`` for every file, 224x224).

    python benchmarks/data_check.py            # 5,000 images
    python benchmarks/data_check.py --images 20000

Writes benchmarks/results/data_check.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from common import commit_text, provenance

RESULTS = Path(__file__).resolve().parent / "results"


def build(root: Path, n: int) -> list[Path]:
    import numpy as np
    from PIL import Image

    from compressor.data import load_mnist15k

    raw = load_mnist15k()
    x, y = raw.train_x, raw.train_y
    for i in range(n):
        d = root / f"c{int(y[i % len(y)])}"
        d.mkdir(parents=True, exist_ok=True)
        img = Image.fromarray(np.repeat(x[i % len(x)][0][..., None], 3, axis=2)).resize((224, 224))
        img.save(d / f"{i}.jpg", quality=90)
    broken = [root / "c0" / "broken.jpg", root / "c1" / "garbage.png"]
    broken[0].write_bytes((root / "c0" / next(iter(os.listdir(root / "c0")))).read_bytes()[:500])
    broken[1].write_bytes(b"not an image")
    return broken


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=5000)
    args = ap.parse_args()
    from compressor.data import ImageFiles, find_unreadable, list_image_files

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        broken = build(root, args.images)
        files = list_image_files(str(root))
        rows = []
        for workers in sorted({1, min(8, os.cpu_count() or 1)}):
            t0 = time.perf_counter()
            bad = find_unreadable(files, workers)
            rows.append(
                {"step": f"check, {workers} thread(s)", "seconds": time.perf_counter() - t0}
            )
            assert {p for p, _ in bad} == {str(p) for p in broken}, bad
        good = [(p, 0) for p in files if p not in {str(b) for b in broken}]
        ds = ImageFiles(good, (3, 224, 224))
        t0 = time.perf_counter()
        for i in range(len(ds)):
            ds[i]
        rows.append(
            {
                "step": "one decoding pass (training loader, 1 process)",
                "seconds": time.perf_counter() - t0,
            }
        )
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.platform()}"
    payload = {
        "command": "python benchmarks/data_check.py " + " ".join(sys.argv[1:]),
        "machine": machine,
        **provenance(),
        "files": len(files),
        "rows": [{**r, "files_per_s": len(files) / r["seconds"]} for r in rows],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "data_check.json").write_text(json.dumps(payload, indent=2) + "\n")
    lines = [
        "# The unreadable-image check, beside one pass of decoding",
        "",
        f"Command: `{payload['command']}`  ",
        f"Machine: {machine}  ",
        f"Commit: {commit_text(payload)}  ",
        f"{len(files)} JPEG files of 224x224 (2 of them broken; both found).",
        "",
        "| step | seconds | files/s |",
        "| --- | --- | --- |",
        *[
            f"| {r['step']} | {r['seconds']:.1f} | {r['files_per_s']:.0f} |"
            for r in payload["rows"]
        ],
    ]
    (RESULTS / "data_check.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
