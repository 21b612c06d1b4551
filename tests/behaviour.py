"""A fingerprint of what the tool produces, for checking that a refactor changed nothing.

Two runs through the CLI, each seeded, on one thread:
- ``compress`` of the bundled smallcnn on mnist15k (hgs, 1 + 1 epochs, 0.6 of the MACs);
- ``prune`` (30%) and ``export`` of a torchvision resnet18 given as a state_dict file.

The fingerprint holds a SHA-256 of every weight of each saved model, the report's
figures (timings left out), the per-layer widths, and the ONNX files' outputs on a seeded
batch. ``python tests/behaviour.py OUT.json [TREE]`` writes it for the code in TREE
(default: this checkout); ``tests/test_behaviour.py`` compares this checkout's with the
one recorded in ``tests/golden/behaviour.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
COMPRESS = ["--method", "hgs", "--data", "mnist15k", "--reg-epochs", "1", "--ft-epochs", "1"]
COMPRESS += ["--target-macs", "0.6", "--seed", "0", "--threads", "1"]
# report figures that are measured times or memory, or paths, and so differ between runs
_UNSTABLE = {"seconds", "latency", "memory", "path", "date", "images_per_s", "version"}
_UNSTABLE_ENDINGS = ("_seconds", "_ms", "_mb", "_path")


def environment() -> dict[str, str]:
    """What bitwise equality depends on besides the code."""
    import numpy
    import onnxruntime
    import torch

    return {
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "onnxruntime": onnxruntime.__version__,
        "machine": platform.machine(),
        "python": platform.python_version(),
        # the CPU's maker picks other SIMD kernels: an Intel Xeon gave other compress
        # weights than the AMD EPYC the golden file was recorded on, with the same code
        "cpu_vendor": _cpu_vendor(),
    }


def _cpu_vendor() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("vendor_id"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cli(tree: Path, *args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "compressor", *args, "-q"], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"compressor {' '.join(args)}: {proc.stderr.strip()}")


def weights_digest(path: Path) -> str:
    """SHA-256 over every tensor of a saved model (names, dtypes, shapes and bytes)."""
    import torch

    obj = torch.load(path, map_location="cpu", weights_only=True)
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name]
        if isinstance(t, torch.Tensor):
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def onnx_outputs(path: Path) -> list[float]:
    """The file's outputs on a seeded batch of two, rounded to 6 significant digits."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    shape = [d for d in session.get_inputs()[0].shape[1:]]
    x = np.random.default_rng(0).standard_normal((2, *shape)).astype(np.float32)
    out = session.run(None, {session.get_inputs()[0].name: x})[0]
    return [float(f"{v:.6g}") for v in out.ravel()]


def _stable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _stable(v) for k, v in obj.items() if not any(u in k.lower() for u in _UNSTABLE)}
    if isinstance(obj, list):
        return [_stable(v) for v in obj]
    if isinstance(obj, float):
        return float(f"{obj:.9g}")
    return obj


def _compress(tree: Path, work: Path) -> dict[str, Any]:
    out = work / "compressed"
    model = ROOT / "models" / "smallcnn-mnist15k.pt"
    _cli(tree, "compress", str(model), *COMPRESS, "-o", str(out))
    report = json.loads((out / "report.json").read_text())
    return {
        "weights": weights_digest(out / "model.pt"),
        "baseline": _stable(report["baseline"]),
        "compressed": _stable(report["compressed"]),
        "layers": report["layers"],
        "onnx_outputs": onnx_outputs(out / "model.onnx"),
    }


def _prune_export(tree: Path, work: Path) -> dict[str, Any]:
    import torch
    import torchvision

    torch.manual_seed(0)
    state = torchvision.models.resnet18(weights=None, num_classes=10).state_dict()
    torch.save(state, work / "resnet18.pt")
    pruned, onnx = work / "pruned.pt", work / "pruned.onnx"
    _cli(
        tree,
        "prune",
        str(work / "resnet18.pt"),
        "--arch",
        "resnet18",
        "--ratio",
        "0.3",
        "--input-size",
        "64",
        "-o",
        str(pruned),
    )
    _cli(tree, "export", str(pruned), "-o", str(onnx))
    return {"weights": weights_digest(pruned), "onnx_outputs": onnx_outputs(onnx)}


def fingerprint(tree: Path = ROOT) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        return {
            "environment": environment(),
            "compress": _compress(tree, work),
            "prune_export": _prune_export(tree, work),
        }


if __name__ == "__main__":
    tree = Path(sys.argv[2]).resolve() if len(sys.argv) > 2 else ROOT
    Path(sys.argv[1]).write_text(json.dumps(fingerprint(tree), indent=1) + "\n")
