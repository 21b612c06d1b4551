"""The benchmark runner (numpy + onnxruntime only) and `compressor benchmark`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from compressor.bench import compare, runner
from compressor.bench.runner import PROFILES, RUNNER_VERSION
from compressor.cli import cli

RUNNER = Path(compare.__file__).with_name("runner.py")
# A few runs and a single round: for tests of what the runner reports, not of its timing.
QUICK = ("--min-runs", "5", "--min-seconds", "0", "--max-seconds", "0", "--no-memory")


@pytest.fixture(scope="module")
def onnx_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A wide and a narrow conv net: the narrow one must measure faster."""
    folder = tmp_path_factory.mktemp("onnx")
    paths = []
    for name, width in (("wide", 64), ("narrow", 8)):
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Conv2d(3, width, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(width, width, 3, padding=1),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
            torch.nn.Linear(width, 10),
        ).eval()
        path = folder / f"{name}.onnx"
        torch.onnx.export(
            model,
            (torch.randn(1, 3, 32, 32),),
            str(path),
            dynamo=False,
            input_names=["input"],
            dynamic_axes={"input": {0: "batch"}},
        )
        paths.append(path)
    return paths[0], paths[1]


def _runner(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RUNNER), *args], capture_output=True, text=True, timeout=300
    )


def test_runner_json_schema_and_ordering(onnx_pair: tuple[Path, Path]) -> None:
    wide, narrow = onnx_pair
    proc = _runner(
        str(wide),
        str(narrow),
        "--batch",
        "1,4",
        "--min-runs",
        "20",
        "--min-seconds",
        "0.2",
        "--max-seconds",
        "1",
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["runner_version"] == RUNNER_VERSION
    assert {"machine", "settings", "models", "results", "warnings"} <= set(result)
    assert {"platform", "cpus", "onnxruntime"} <= set(result["machine"])
    assert len(result["results"]) == 4  # 2 models x 2 batch sizes
    for r in result["results"]:
        assert {
            "model",
            "threads",
            "batch",
            "runs",
            "p50_ms",
            "p90_ms",
            "p99_ms",
            "mean_ms",
            "cv",
            "throughput_ips",
            "seconds",
            "rounds",
            "p50_rse",
            "p50_ci95_ms",
        } <= set(r)
        assert r["runs"] >= 20 and 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
        assert r["seconds"] >= 0.2 and r["rounds"] >= 1
        assert r["provider"] in runner.available_providers()
        assert r["runtime"] == f"onnxruntime-{r['provider']}"
        if r["rounds"] >= 2:
            lo, hi = r["p50_ci95_ms"]
            assert lo <= r["p50_ms"] <= hi and r["p50_rse"] >= 0
        assert r["throughput_ips"] == pytest.approx(r["batch"] * 1000 / r["mean_ms"])
    for info in result["models"]:
        assert info["file_bytes"] == os.path.getsize(info["model"])
        assert info["memory"]["peak_growth_mb"] > 0
    by = {(Path(r["model"]).stem, r["batch"]): r["p50_ms"] for r in result["results"]}
    assert by[("narrow", 4)] < by[("wide", 4)]


def test_runner_imports_no_torch(onnx_pair: tuple[Path, Path], tmp_path: Path) -> None:
    target = compare.emit_runner(tmp_path)
    code = (
        "import runpy, sys; sys.argv = ['x', sys.argv[1], '--min-runs', '5', '--min-seconds', '0', '--max-seconds', '0', '--no-memory'];\n"
        "import builtins; real = builtins.__import__\n"
        "def guard(name, *a, **k):\n"
        "    if name == 'torch' or name.startswith('torch.') or name.startswith('compressor'):\n"
        "        raise ImportError('the runner imported ' + name)\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = guard\n"
        f"runpy.run_path({str(target)!r}, run_name='__main__')"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(onnx_pair[0])],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "torch" not in proc.stderr


def test_profiles_apply_threads_and_cores(onnx_pair: tuple[Path, Path]) -> None:
    proc = _runner(
        str(onnx_pair[1]),
        "--profile",
        "edge-1core",
        *QUICK,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert (
        result["profile"] == "edge-1core"
        and len(result["cores"]) == PROFILES["edge-1core"]["cores"]
    )
    assert {r["threads"] for r in result["results"]} == {1}
    if (os.cpu_count() or 1) >= 2:
        proc = _runner(
            str(onnx_pair[1]),
            "--profile",
            "edge-2core",
            *QUICK,
        )
        assert {r["threads"] for r in json.loads(proc.stdout)["results"]} == {2}


def test_ratios_against_the_first_model() -> None:
    results = [
        {"model": "a", "threads": 1, "batch": 1, "p50_ms": 10.0},
        {"model": "b", "threads": 1, "batch": 1, "p50_ms": 4.0},
        {"model": "a", "threads": 2, "batch": 1, "p50_ms": 6.0},
        {"model": "b", "threads": 2, "batch": 1, "p50_ms": 2.0},
    ]
    compare.add_ratios(results)
    assert [r["speedup_vs_first"] for r in results] == pytest.approx([1.0, 2.5, 1.0, 3.0])
    # each provider has its own reference; PyTorch eager compares with the CPU one
    mixed = [
        {"model": "a", "provider": "cuda", "threads": 1, "batch": 1, "p50_ms": 1.0},
        {"model": "a", "provider": "cpu", "threads": 1, "batch": 1, "p50_ms": 8.0},
        {"model": "b", "provider": "cuda", "threads": 1, "batch": 1, "p50_ms": 0.5},
        {"model": "b.pt", "runtime": "pytorch-eager", "threads": 1, "batch": 1, "p50_ms": 16.0},
    ]
    compare.add_ratios(mixed)
    assert [r["speedup_vs_first"] for r in mixed] == pytest.approx([1.0, 1.0, 2.0, 0.5])


@pytest.mark.parametrize("content", [b"", b"not an onnx file at all"])
def test_corrupt_model_is_one_line(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    proc = _runner(str(bad), "--no-memory")
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error: ") and "not a valid ONNX model" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    res = CliRunner().invoke(cli, ["benchmark", str(bad)])
    assert res.exit_code == 1 and "not a valid ONNX model" in res.stderr


def test_cli_table_json_markdown_chart(onnx_pair: tuple[Path, Path], tmp_path: Path) -> None:
    wide, narrow = onnx_pair
    md, png = tmp_path / "b.md", tmp_path / "b.png"
    res = CliRunner().invoke(
        cli,
        [
            "benchmark",
            str(wide),
            str(narrow),
            "--min-runs",
            "10",
            "--min-seconds",
            "0.1",
            "--max-seconds",
            "0.5",
            "--no-memory",
            "--json",
            "-q",
            "--markdown",
            str(md),
            "--chart",
            str(png),
        ],
    )
    assert res.exit_code == 0, res.stderr
    result = json.loads(res.stdout)
    first, second = result["results"]
    assert first["speedup_vs_first"] == 1.0
    assert second["speedup_vs_first"] == pytest.approx(first["p50_ms"] / second["p50_ms"])
    assert first["speedup_vs_first_ci95"] is None
    lo, hi = second["speedup_vs_first_ci95"]
    assert 1.0 < lo < hi  # the narrow net is faster, and measured in the same rounds
    assert f"{second['speedup_vs_first']:.2f}x ({lo:.2f}-{hi:.2f})" in md.read_text()
    assert all(m["params"] > 0 for m in result["models"])
    assert "| wide.onnx |" in md.read_text() and png.stat().st_size > 1000


def test_emit_runner(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["benchmark", "--emit-runner", str(tmp_path / "device")])
    assert res.exit_code == 0
    assert (tmp_path / "device" / "compressor_bench.py").read_text() == RUNNER.read_text()


def test_remote_over_loopback_ssh(onnx_pair: tuple[Path, Path], tmp_path: Path) -> None:
    sshd = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)
    if sshd is None or shutil.which("ssh") is None or os.geteuid() != 0:
        pytest.skip("needs root, ssh and sshd (apt-get install openssh-server openssh-client)")
    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    hostkey = tmp_path / "hostkey"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hostkey)], check=True)
    auth = tmp_path / "authorized_keys"
    auth.write_text((tmp_path / "id.pub").read_text())
    auth.chmod(0o600)
    config = tmp_path / "sshd_config"
    port = 22000 + os.getpid() % 1000
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {hostkey}\nAuthorizedKeysFile {auth}\n"
        "PasswordAuthentication no\nStrictModes no\nPermitRootLogin yes\nPidFile none\n"
        "Subsystem sftp internal-sftp\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)
    server = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE)
    try:
        import time

        time.sleep(1.0)
        opts = [
            "-i",
            str(key),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
        ]
        args = compare.runner_args(
            threads=[1], batches=[1], profile=None, min_runs=5, min_seconds=0.0, memory=False
        )
        result = compare.run_remote(
            "root@127.0.0.1",
            list(onnx_pair),
            args,
            port=port,
            python=sys.executable,
            ssh_options=opts,
        )
        assert result["host"] == "root@127.0.0.1"
        assert [r["model"] for r in result["results"]] == [str(p) for p in onnx_pair]
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_runner_install_extra_pulls_no_torch() -> None:
    import re
    import tomllib

    project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())[
        "project"
    ]
    needed = [*project["dependencies"], *project["optional-dependencies"]["runner"]]
    names = {re.split(r"[<>=!\[ ;]", d, maxsplit=1)[0].lower() for d in needed}
    assert names <= {"click", "numpy", "onnxruntime", "rich"}
    full = {
        re.split(r"[<>=!\[ ;]", d, maxsplit=1)[0].lower()
        for d in project["optional-dependencies"]["full"]
    }
    assert {"torch", "torchvision", "torch-pruning"} <= full


def _busy(ms: float) -> None:
    end = time.perf_counter() + ms / 1e3
    while time.perf_counter() < end:
        pass


def test_stopping_rule_quiet_call_stops_at_minimum(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "ROUND_SECONDS", 0.02)
    (r,) = runner.measure_calls(
        [lambda: _busy(1.0)], min_runs=5, min_seconds=0.0, max_seconds=5.0, precision=0.05
    )
    assert r["rounds"] <= runner.MIN_ROUNDS + 3 and r["seconds"] < 1.0  # quiet: done early
    assert r["p50_rse"] <= 0.05 and r["p50_ms"] == pytest.approx(1.0, rel=0.3)


def test_stopping_rule_noisy_call_runs_to_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "ROUND_SECONDS", 0.02)

    def drifting() -> None:  # the machine's speed changes from round to round
        _busy(0.3 if int(time.perf_counter() / 0.05) % 2 else 1.5)

    (r,) = runner.measure_calls(
        [drifting], min_runs=5, min_seconds=0.0, max_seconds=0.3, precision=0.001
    )
    assert r["seconds"] >= 0.3 and r["rounds"] > runner.MIN_ROUNDS
    assert r["p50_rse"] > 0.001
    (warning,) = runner.warnings_for([{**r, "model": "m", "threads": 1, "batch": 1}], 0.001)
    assert "known only" in warning


def test_speedup_interval_from_shared_rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "ROUND_SECONDS", 0.02)
    slow, fast = runner.measure_calls(
        [lambda: _busy(1.0), lambda: _busy(0.5)],
        min_runs=5,
        min_seconds=0.2,
        max_seconds=0.5,
        precision=0.05,
    )
    assert "speedup_vs_first_ci95" not in slow
    lo, hi = fast["speedup_vs_first_ci95"]
    assert 1.5 < lo <= hi < 2.5


def test_round_statistics_by_hand() -> None:
    stats = runner.round_stats([1.0, 2.0, 3.0], 2.0)
    se = 1.0 / 3**0.5  # stdev 1 over sqrt(3 rounds)
    assert stats["rounds"] == 3 and stats["p50_rse"] == pytest.approx(se / 2.0)
    assert stats["p50_ci95_ms"] == pytest.approx([2.0 - 4.303 * se, 2.0 + 4.303 * se])
    assert runner.round_stats([2.0], 2.0)["p50_rse"] is None
    assert runner.t95(4) == 2.776 and runner.t95(500) == 1.96


def test_warnings_only_when_they_matter() -> None:
    base = {"model": "m", "threads": 1, "batch": 1, "seconds": 20.0}
    assert runner.warnings_for([{**base, "p50_rse": 0.004, "cv": 0.12}], 0.01) == []
    (w,) = runner.warnings_for([{**base, "p50_rse": 0.004, "cv": 0.4}], 0.01)
    assert "vary widely" in w
    (w,) = runner.warnings_for([{**base, "p50_rse": 0.03, "cv": 0.4}], 0.01)
    assert "known only to +-3.0%" in w


@pytest.mark.parametrize(
    "args",
    [["--precision", "0"], ["--precision", "1.5"], ["--min-runs", "0"], ["--max-seconds", "-1"]],
)
def test_bad_measuring_options_are_one_line(onnx_pair: tuple[Path, Path], args: list[str]) -> None:
    proc = _runner(str(onnx_pair[1]), "--no-memory", *args)
    assert proc.returncode == 1 and proc.stderr.startswith("Error: ")
    assert len(proc.stderr.strip().splitlines()) == 1
    res = CliRunner().invoke(cli, ["benchmark", str(onnx_pair[1]), *args])
    assert res.exit_code == 2 and "Invalid value" in res.stderr and "Traceback" not in res.output


@pytest.mark.parametrize("spec", ["cuda", "tpu", ","])
def test_unavailable_or_unknown_provider_is_one_line(
    onnx_pair: tuple[Path, Path], spec: str
) -> None:
    if spec == "cuda" and "cuda" in runner.available_providers():
        pytest.skip("this onnxruntime has CUDA")
    proc = _runner(str(onnx_pair[1]), "--no-memory", "--provider", spec)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("Error: ") and "provider" in proc.stderr.lower()
    res = CliRunner().invoke(cli, ["benchmark", str(onnx_pair[1]), "--provider", spec])
    assert res.exit_code == 1 and res.stderr.strip().splitlines()[-1].startswith("Error: ")
    assert "Traceback" not in res.output


@pytest.mark.gpu
def test_cuda_provider_measures_on_the_gpu(onnx_pair: tuple[Path, Path]) -> None:
    if "cuda" not in runner.available_providers():
        pytest.skip("this onnxruntime has no CUDA provider (pip install onnxruntime-gpu)")
    proc = _runner(
        str(onnx_pair[0]),
        "--provider",
        "cpu,cuda",
        *QUICK,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert [r["provider"] for r in result["results"]] == ["cpu", "cuda"]
    assert result["settings"]["providers"] == ["cpu", "cuda"]
