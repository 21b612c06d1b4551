"""How the benchmark runner runs on a device: the arguments it takes, in a child process
here (its CPU pinning must not touch this process), or copied to a host over SSH. Both
``compressor benchmark`` and the latency table (``compressor.latency``) measure through
these."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from compressor.errors import CompressorError

RUNNER = Path(__file__).with_name("runner.py")
RUNNER_NAME = "compressor_bench.py"


def emit_runner(folder: Path) -> Path:
    """Write the runner as one file into ``folder``; it needs only numpy and onnxruntime."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / RUNNER_NAME
    shutil.copyfile(RUNNER, target)
    target.chmod(0o755)
    return target


def runner_args(
    *,
    threads: list[int],
    batches: list[int],
    profile: str | None,
    min_runs: int,
    min_seconds: float,
    memory: bool,
    max_seconds: float = 20.0,  # the runner's defaults (and BenchmarkConfig's)
    precision: float = 0.01,
    provider: str = "auto",
    input_shape: tuple[int, ...] | None = None,
    layers: int = 0,
) -> list[str]:
    args = [
        "--threads",
        ",".join(map(str, threads)),
        "--batch",
        ",".join(map(str, batches)),
        "--min-runs",
        str(min_runs),
        "--min-seconds",
        str(min_seconds),
        "--max-seconds",
        str(max_seconds),
        "--precision",
        str(precision),
        "--provider",
        provider,
    ]
    if profile:
        args += ["--profile", profile]
    if input_shape:
        args += ["--input-shape", ",".join(map(str, input_shape))]
    if not memory:
        args.append("--no-memory")
    if layers:
        args += ["--layers", str(layers)]
    return args


def run_local(models: list[Path], args: list[str]) -> dict[str, Any]:
    """The runner in a child process (its CPU pinning must not touch this process)."""
    proc = subprocess.run(
        [sys.executable, str(RUNNER), *map(str, models), *args], capture_output=True, text=True
    )
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        raise CompressorError(
            lines[-1].removeprefix("Error: ") if lines else "the benchmark runner failed"
        )
    return json.loads(proc.stdout)


def external_files(path: Path) -> list[str]:
    """The external-data files an ONNX model names (relative to its folder): a model over
    2 GB keeps its weights beside it (``compressor export`` writes ``OUTPUT.data``)."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    names: set[str] = set()

    def visit(graph: Any) -> None:
        tensors = list(graph.initializer)
        for node in graph.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    tensors.append(attr.t)
                tensors.extend(attr.tensors)
                if attr.HasField("g"):
                    visit(attr.g)
                for sub in attr.graphs:
                    visit(sub)
        for t in tensors:
            if uses_external_data(t):
                names.add(ExternalDataInfo(t).location)

    visit(model.graph)
    missing = [n for n in sorted(names) if not (path.parent / n).is_file()]
    if missing:
        raise CompressorError(f"{path} keeps its weights in {', '.join(missing)}, which is missing")
    return sorted(names)


def _ssh_options(port: int | None, flag: str = "-p") -> list[str]:
    return [flag, str(port)] if port else []


def _last_line(text: str, default: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else default


def check_remote(host: str, *, port: int | None = None, python: str = "python3") -> None:
    """Stop early, with one line, unless ``host`` answers over SSH without a prompt and
    its ``python`` imports numpy and onnxruntime (what the runner needs there)."""
    probe = shlex.join([python, "-c", "import numpy, onnxruntime"])
    cmd = ["ssh", "-o", "BatchMode=yes", *_ssh_options(port), host, probe]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except FileNotFoundError as e:
        raise CompressorError("ssh is not installed here") from e
    except subprocess.TimeoutExpired as e:
        raise CompressorError(f"cannot reach {host} over ssh: no answer in 60 s") from e
    if proc.returncode == 255:  # ssh's own failure
        raise CompressorError(
            f"cannot reach {host} over ssh: {_last_line(proc.stderr, 'ssh failed')}"
        )
    if proc.returncode != 0:
        raise CompressorError(
            f"{host} cannot run the benchmark runner ({python} with numpy and onnxruntime): "
            f"{_last_line(proc.stderr, 'the import failed')}"
        )


def run_remote(
    host: str,
    models: list[Path],
    args: list[str],
    *,
    port: int | None = None,
    python: str = "python3",
    ssh_options: list[str] | None = None,
) -> dict[str, Any]:
    """Copy the runner and models to ``host`` over SSH, run there, bring the JSON back."""
    opts = list(ssh_options or [])
    opts_ssh, opts_scp = [*opts, *_ssh_options(port)], [*opts, *_ssh_options(port, "-P")]
    remote_dir = "/tmp/compressor-bench"

    def call(cmd: list[str]) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        except FileNotFoundError as e:
            raise CompressorError(f"{cmd[0]} is not installed here") from e

    # one remote folder per model: two local files may share a name (a/model.onnx,
    # b/model.onnx), and so may their external weights (model.onnx.data)
    folders = [f"{remote_dir}/{i}" for i in range(len(models))]
    remote_models = [f"{d}/{m.name}" for d, m in zip(folders, models, strict=True)]
    copies = [(RUNNER, f"{remote_dir}/runner.py")]
    for model, folder, remote in zip(models, folders, remote_models, strict=True):
        copies.append((model, remote))
        copies += [(model.parent / name, f"{folder}/{name}") for name in external_files(model)]
    proc = call(["ssh", *opts_ssh, host, shlex.join(["mkdir", "-p", remote_dir, *folders])])
    if proc.returncode != 0:
        raise CompressorError(
            f"cannot reach {host} over ssh: {_last_line(proc.stderr, 'ssh failed')}"
        )
    for local, remote in copies:
        proc = call(["scp", "-q", *opts_scp, str(local), f"{host}:{remote}"])
        if proc.returncode != 0:
            raise CompressorError(f"copying to {host} failed: {proc.stderr.strip()[:300]}")
    command = " ".join(
        shlex.quote(c) for c in [python, f"{remote_dir}/runner.py", *remote_models, *args]
    )
    proc = call(["ssh", *opts_ssh, host, command])
    if proc.returncode != 0:
        raise CompressorError(f"on {host}: {_last_line(proc.stderr, 'the runner failed')}")
    result = json.loads(proc.stdout)
    local_names = {r: str(m) for r, m in zip(remote_models, models, strict=True)}
    for item in (*result["models"], *result["results"]):
        item["model"] = local_names.get(item["model"], item["model"])
    result["host"] = host
    for r in result["results"]:
        r["host"] = host
    return result
