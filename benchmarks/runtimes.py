"""Do other runtimes run the shipped files as onnxruntime does? OpenVINO against onnxruntime.

    python benchmarks/runtimes.py [--images 2000]

Exports the bundled smallcnn (mnist15k) and the trained regime's dense resnet18
(Fashion-MNIST, 32x32; trained by ``quality_regimes.py`` when missing) with ``compressor
export --int8``, then runs each FP32 and INT8 file on the test images in onnxruntime (CPU)
and in OpenVINO (CPU) twice: with OpenVINO's default precision (bfloat16 on a CPU with
bf16 support, such as AMX or AVX512_BF16) and with ``INFERENCE_PRECISION_HINT=f32``. Per
file and runtime: test top-1 (ties by the lowest class, as compressor scores), the share
of images whose label agrees with onnxruntime's, and the largest logit difference.

Writes benchmarks/results/runtimes.{json,md}. Needs ``pip install openvino``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from common import RESULTS, commit_text, run_payload, sh
from quality_regimes import WORK, data_options, reference_for
from regimes import REGIMES

ROOT = Path(__file__).resolve().parent.parent


def models() -> list[tuple[str, Path, list[str]]]:
    """(name, model file, its data options) for each model the benchmark exports."""
    regime = REGIMES["fmnist-resnet18-trained"]
    work = WORK / f"quality_{regime.name}-{regime.input_size}px"
    curve = json.loads((RESULTS / f"quality_{regime.name}.json").read_text())["curve"]
    resnet = Path(reference_for(work, regime, curve)["model"])
    return [
        ("smallcnn (mnist15k)", ROOT / "models" / "smallcnn-mnist15k.pt", ["--data", "mnist15k"]),
        ("resnet18 (Fashion-MNIST 32x32)", resnet, data_options(work, regime)[:4]),
    ]


def export(name: str, model: Path, data: list[str], work: Path) -> Path:
    out = work / (name.split()[0] + ".onnx")
    if not out.is_file():
        sh(
            ["compressor", "export", str(model), "-o", str(out), "--int8", "--calib-data", data[1]],
            work / f"{out.stem}.log",
        )
    return out


def test_images(model: Path, data: list[str], n: int) -> tuple[Any, Any]:
    from compressor.checkpoint import load_model
    from compressor.config import DataConfig
    from compressor.data import load_data, sample_batch

    loaded = load_model(model)
    options = dict(zip(data[::2], data[1::2], strict=True))
    bundle = load_data(
        DataConfig(options["--data"], val_split=float(options.get("--val-split", 0.1))),
        channels=loaded.in_channels,
        recorded=loaded.preprocess,
    )
    x, y = sample_batch(bundle, "test", n)
    return x.numpy(), y.numpy()


def run_ort(path: Path, x: Any) -> Any:
    from compressor.onnx_export import run_onnx

    return run_onnx(path, x)


def run_openvino(path: Path, x: Any, precision: str | None) -> Any:
    import numpy as np
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": precision} if precision else {}
    compiled = core.compile_model(str(path), "CPU", config)
    used = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
    out = [compiled(x[i : i + 256])[0] for i in range(0, len(x), 256)]
    return np.concatenate(out), used


def compare(label: str, logits: Any, ref: Any, y: Any) -> dict[str, Any]:
    import numpy as np

    return {
        "runtime": label,
        "top1": float(100 * np.mean(np.argmax(logits, 1) == y)),
        "agree": float(100 * np.mean(np.argmax(logits, 1) == np.argmax(ref, 1))),
        "max_abs_diff": float(np.abs(logits - ref).max()),
    }


def rows_for(name: str, fp32: Path, x: Any, y: Any) -> list[dict[str, Any]]:
    rows = []
    for kind, path in (("FP32", fp32), ("INT8", fp32.with_name(fp32.stem + ".int8.onnx"))):
        ref = run_ort(path, x)
        rows.append({"model": name, "file": kind, **compare("onnxruntime", ref, ref, y)})
        for precision in (None, "f32"):
            hint = "default" if precision is None else "f32 hint"
            try:
                logits, used = run_openvino(path, x, precision)
            except RuntimeError as e:  # OpenVINO refuses to compile the file
                reason = " ".join(str(e).split())
                reason = reason[reason.find("Check") :][:160] if "Check" in reason else reason[:160]
                rows.append(
                    {"model": name, "file": kind, "runtime": f"OpenVINO ({hint})", "error": reason}
                )
            else:
                label = f"OpenVINO ({hint}: {used.split(chr(39))[1] if chr(39) in used else used})"
                rows.append({"model": name, "file": kind, **compare(label, logits, ref, y)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(payload: dict[str, Any]) -> str:
    lines = [
        "# Runtimes: OpenVINO against onnxruntime on the shipped files",
        "",
        f"Command: `{payload['command']}`  ",
        f"Machine: {payload['machine']}  ",
        f"Commit: {commit_text(payload)}  ",
        f"Date: {payload['date']}; OpenVINO {payload['openvino']}, onnxruntime {payload['onnxruntime']}",
        "",
        f"CPU bfloat16 support: {payload['cpu_bf16'] or 'none'} (OpenVINO computes FP32 "
        "files in bfloat16 by default on such a CPU).",
        "",
        f"{payload['images']} test images per model. **agree** = images whose label matches "
        "onnxruntime's on the same file; **max diff** = the largest absolute logit "
        "difference from onnxruntime's.",
        "",
        "| model | file | runtime (precision used) | test top-1 | agree | max diff |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in payload["rows"]:
        if "error" in r:
            lines.append(
                f"| {r['model']} | {r['file']} | {r['runtime']} | fails to compile: {r['error']} | - | - |"
            )
            continue
        lines.append(
            f"| {r['model']} | {r['file']} | {r['runtime']} | {r['top1']:.2f} | "
            f"{r['agree']:.2f} | {r['max_abs_diff']:.2e} |"
        )
    return "\n".join(lines) + "\n"


def cpu_bf16() -> str:
    """The CPU's bfloat16 features, from /proc/cpuinfo (empty elsewhere or without them)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return ""
    return ", ".join(sorted({f for f in flags if "bf16" in f}))


def main() -> None:
    import onnxruntime
    import openvino

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    args = ap.parse_args()
    t0 = time.perf_counter()
    work = WORK / "runtimes"
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, model, data in models():
        fp32 = export(name, model, data, work)
        x, y = test_images(model, data, args.images)
        rows += rows_for(name, fp32, x, y)
    payload = {
        **run_payload(t0, rows),
        "images": args.images,
        "openvino": openvino.__version__,
        "onnxruntime": onnxruntime.__version__,
        "cpu_bf16": cpu_bf16(),
    }
    (RESULTS / "runtimes.json").write_text(json.dumps(payload, indent=2) + "\n")
    (RESULTS / "runtimes.md").write_text(markdown(payload))
    print(markdown(payload))


if __name__ == "__main__":
    main()
