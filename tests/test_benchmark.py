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
from compressor.errors import CompressorError

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


def test_benchmark_command_runs_without_torch(onnx_pair: tuple[Path, Path]) -> None:
    """`compressor benchmark` on ONNX files, as on a device with only
    `compressor[runner]`: torch, torchvision, fvcore and torch-pruning cannot be imported."""
    code = (
        "import builtins, sys; real = builtins.__import__\n"
        "def guard(name, *a, **k):\n"
        "    if name.split('.')[0] in ('torch', 'torchvision', 'fvcore', 'torch_pruning'):\n"
        "        raise ImportError('benchmark imported ' + name)\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = guard\n"
        "from compressor.cli import main\n"
        "sys.argv = ['compressor', 'benchmark', *sys.argv[1:]]\n"
        "main()"
    )
    args = ["--min-runs", "5", "--min-seconds", "0", "--max-seconds", "0.2", "--no-memory"]
    proc = subprocess.run(
        [sys.executable, "-c", code, *map(str, onnx_pair), *args, "--json", "-q"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert [Path(r["model"]).name for r in result["results"]] == ["wide.onnx", "narrow.onnx"]
    assert result["results"][1]["speedup_vs_first"] > 0


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


def test_sessions_with_several_threads_do_not_spin(onnx_pair: tuple[Path, Path]) -> None:
    """Interleaved sessions must not take each other's cores: with more than one thread
    a session's idle workers block instead of spinning (a spinning neighbour doubled
    resnet18's 2-thread latency on the 2-core VM)."""
    key = "session.intra_op.allow_spinning"
    two = runner.make_session(str(onnx_pair[0]), 2).get_session_options()
    assert two.get_session_config_entry(key) == "0"
    assert two.intra_op_num_threads == 2
    one = runner.make_session(str(onnx_pair[0]), 1).get_session_options()
    with pytest.raises(RuntimeError, match="does not have configuration"):
        one.get_session_config_entry(key)  # one thread: no workers, left at the default


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
    lo, hi = second["speedup_vs_first_ci95"]  # no timing claim: a loaded machine moves it
    assert lo < hi and (lo + hi) / 2 == pytest.approx(second["speedup_vs_first"])
    assert f"{second['speedup_vs_first']:.2f}x ({lo:.2f}-{hi:.2f})" in md.read_text()
    assert all(m["params"] > 0 for m in result["models"])
    assert "| wide.onnx |" in md.read_text() and png.stat().st_size > 1000


def test_emit_runner(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["benchmark", "--emit-runner", str(tmp_path / "device")])
    assert res.exit_code == 0
    assert (tmp_path / "device" / "compressor_bench.py").read_text() == RUNNER.read_text()


@pytest.mark.e2e
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
        # the narrow net under the wide one's file name: both must travel, not overwrite
        same_name = tmp_path / "other" / onnx_pair[0].name
        same_name.parent.mkdir()
        shutil.copyfile(onnx_pair[1], same_name)
        # the wide net with its weights in an external file (as export writes over 2 GB)
        import onnx

        external = tmp_path / "external" / onnx_pair[0].name
        external.parent.mkdir()
        data_name = external.name + ".data"
        onnx.save_model(
            onnx.load(str(onnx_pair[0])),
            str(external),
            save_as_external_data=True,
            location=data_name,
            size_threshold=0,
        )
        assert compare.external_files(external) == [data_name]
        assert compare.external_files(onnx_pair[0]) == []
        models = [*onnx_pair, same_name, external]
        result = compare.run_remote(
            "root@127.0.0.1", models, args, port=port, python=sys.executable, ssh_options=opts
        )
        assert result["host"] == "root@127.0.0.1"
        assert [r["model"] for r in result["results"]] == [str(p) for p in models]
        wide, narrow, renamed, wide_external = (r["p50_ms"] for r in result["results"])
        assert renamed < wide / 2 and narrow < wide / 2 and wide_external > 2 * narrow
        # a missing external file is named before anything is copied
        (external.parent / data_name).unlink()
        with pytest.raises(CompressorError, match="which is missing"):
            compare.run_remote(
                "root@127.0.0.1",
                [external],
                args,
                port=port,
                python=sys.executable,
                ssh_options=opts,
            )
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
    # typing_extensions: pure Python, for the output types (compressor/formats.py)
    assert names <= {"click", "numpy", "onnxruntime", "rich", "typing_extensions"}
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


def test_max_seconds_caps_the_slowest_model_not_the_fastest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a noisy machine (precision never reached) a setting stops once the slowest model
    has had --max-seconds, not once the fastest has (which took 10x longer)."""
    monkeypatch.setattr(runner, "ROUND_SECONDS", 0.02)
    t0 = time.perf_counter()
    slow, fast = runner.measure_calls(
        [lambda: _busy(2.0), lambda: _busy(0.2)],
        min_runs=5,
        min_seconds=0.0,
        max_seconds=0.3,
        precision=1e-9,
    )
    assert time.perf_counter() - t0 < 1.0
    assert slow["seconds"] >= 0.3 and fast["seconds"] < 0.3


def test_round_statistics_by_hand() -> None:
    stats = runner.round_stats([1.0, 2.0, 3.0], 2.0)
    se = 1.0 / 3**0.5  # stdev 1 over sqrt(3 rounds)
    assert stats["rounds"] == 3 and stats["p50_rse"] == pytest.approx(se / 2.0)
    assert stats["p50_ci95_ms"] == pytest.approx([2.0 - 4.303 * se, 2.0 + 4.303 * se])
    assert runner.round_stats([2.0], 2.0)["p50_rse"] is None
    assert runner.t95(4) == 2.776 and runner.t95(500) == 1.96


def test_standard_error_allows_for_drift_by_hand() -> None:
    # 1,1,2,2,3,3,4,4: lag-1 autocorrelation 6.25/10; bias-corrected (8 * 0.625 + 1) / 4,
    # clipped to 0.8, so the variance of the mean grows 9-fold
    se, df = runner.mean_se([1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0])
    assert se == pytest.approx((10 / 7) ** 0.5 / 8**0.5 * 3) and df == 2
    # 12 rounds rising then falling: r = 0.68, bias-corrected (12 r + 1) / 8 > 0.8, so 0.8;
    # 12 / 9 effective rounds, and never fewer than 2 degrees of freedom
    assert runner.mean_se([1.0, 2, 3, 4, 5, 6, 6, 5, 4, 3, 2, 1])[1] == 2
    # alternating values: negative autocorrelation counts as none
    se, df = runner.mean_se([1.0, 3.0] * 4)
    assert se == pytest.approx((8 / 7) ** 0.5 / 8**0.5) and df == 7
    assert runner.mean_se([1.0]) is None


def test_intervals_cover_the_mean_of_a_drifting_series() -> None:
    """On AR(1) series like a drifting machine's rounds (rho 0.7, 20 rounds), the 95%
    interval holds the true mean far more often than the naive sd/sqrt(n) one."""
    import random
    import statistics

    rng = random.Random(0)
    covered = naive = 0
    trials = 400
    for _ in range(trials):
        x = [rng.gauss(0, 1) / (1 - 0.7**2) ** 0.5]
        for _ in range(19):
            x.append(0.7 * x[-1] + rng.gauss(0, 1))
        mean = statistics.fmean(x)
        se, df = runner.mean_se(x)
        covered += abs(mean) <= runner.t95(df) * se
        naive += abs(mean) <= runner.t95(19) * statistics.stdev(x) / 20**0.5
    assert covered / trials > 0.88 and naive / trials < 0.7


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


def test_onnx_macs_by_hand(onnx_pair: tuple[Path, Path]) -> None:
    from compressor.bench.onnx_cost import onnx_cost

    wide, narrow = onnx_pair
    # 3x3 convs at 32x32 out: 32*32*C_out*(C_in*9), then a C->10 linear layer
    assert onnx_cost(str(wide)) == {
        "params": 3 * 64 * 9 + 64 + 64 * 64 * 9 + 64 + 64 * 10 + 10,
        "macs": 32 * 32 * 64 * 27 + 32 * 32 * 64 * 64 * 9 + 64 * 10,
    }
    assert onnx_cost(str(narrow))["macs"] == 32 * 32 * 8 * 27 + 32 * 32 * 8 * 8 * 9 + 8 * 10


def test_onnx_macs_transposed_conv_and_matmul(tmp_path: Path) -> None:
    from compressor.bench.onnx_cost import onnx_cost

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.up = torch.nn.ConvTranspose2d(4, 6, 2, stride=2, groups=2)
            self.w = torch.nn.Parameter(torch.randn(16, 5))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.up(x).flatten(2) @ torch.ones(256, 16) @ self.w

    path = tmp_path / "t.onnx"
    torch.onnx.export(Net(), (torch.randn(1, 4, 8, 8),), str(path), dynamo=False)
    # transposed conv: each input element feeds (6/2 out channels x 2x2 kernel);
    # matmuls: (1,6,256)@(256,16) and (1,6,16)@(16,5)
    assert onnx_cost(str(path))["macs"] == 4 * 8 * 8 * 3 * 4 + 6 * 16 * 256 + 6 * 5 * 16


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2", "shufflenet_v2_x0_5"])
def test_onnx_macs_agree_with_fvcore(arch: str, tmp_path: Path) -> None:
    """Strided, grouped and depthwise convolutions, channel shuffles (whose run-time split
    ONNX's shape inference cannot follow) and the classifier, counted from the graph,
    equal fvcore's count of the PyTorch model's dense operators."""
    from compressor.analysis import dense_macs
    from compressor.archs import build_model
    from compressor.bench.onnx_cost import onnx_cost

    model = build_model(arch, num_classes=10).eval()
    path = tmp_path / f"{arch}.onnx"
    torch.onnx.export(
        model,
        (torch.randn(1, 3, 64, 64),),
        str(path),
        dynamo=False,
        input_names=["input"],
        dynamic_axes={"input": {0: "batch"}},
    )
    assert onnx_cost(str(path))["macs"] == dense_macs(model, (3, 64, 64))


def test_mac_cuts_against_the_first_model() -> None:
    models = [{"macs": 300}, {"macs": 100}, {"macs": None}, {}]
    compare.add_mac_cuts(models)
    assert [m["macs_cut_vs_first"] for m in models] == [1.0, 3.0, None, None]
    assert compare.format_cut(models[1]) == "3.00x" and compare.format_cut(models[2]) == "-"


def test_cli_reports_costs_for_onnx_and_pytorch_models(
    onnx_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    """Every model gets parameters and MACs (ONNX from its graph, .pt by fvcore), the MAC
    cut against the first, and the .pt one its own isolated memory probe."""
    wide, narrow = onnx_pair
    lenet = Path(__file__).parent.parent / "models" / "lenet5-mnist15k.pt"
    md = tmp_path / "b.md"
    args = [str(wide), str(narrow), str(lenet), *QUICK[:-1], "--json", "-q", "--markdown", str(md)]
    res = CliRunner().invoke(cli, ["benchmark", *args])
    assert res.exit_code == 0, res.stderr
    models = {Path(m["model"]).name: m for m in json.loads(res.stdout)["models"]}
    assert models["wide.onnx"]["macs_source"] == "onnx graph"
    cut = models["wide.onnx"]["macs"] / models["narrow.onnx"]["macs"]
    assert models["narrow.onnx"]["macs_cut_vs_first"] == pytest.approx(cut) and cut > 40
    pt = models["lenet5-mnist15k.pt"]
    # LeNet-5 (Caffe's): 5x5 convs 1->20 at 24x24 out and 20->50 at 8x8, then 800->500->10
    assert pt["macs_source"] == "fvcore" and pt["params"] == 431080
    assert pt["macs"] == 24 * 24 * 20 * 25 + 8 * 8 * 50 * 500 + 800 * 500 + 500 * 10
    assert (
        pt["memory"]["peak_growth_mb"] > 0 and models["narrow.onnx"]["memory"]["peak_growth_mb"] > 0
    )
    assert "| narrow.onnx |" in md.read_text() and f"{cut:.2f}x" in md.read_text()


def test_memory_probes_count_their_own_process_only(
    onnx_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    """The probes run in fresh processes started by a large one (here this test, holding
    400 MB): they must report their own growth, not the parent's size carried over fork
    and exec (as ``ru_maxrss`` does); a 16 MB weight matrix must show as such."""
    import numpy as np

    ballast = np.ones(100_000_000, dtype=np.float32)  # 400 MB resident in the parent
    models = {}
    for name, n in (("big", 2048), ("tiny", 16)):
        models[name] = tmp_path / f"{name}.onnx"
        torch.onnx.export(
            torch.nn.Linear(n, n), (torch.randn(1, n),), str(models[name]), dynamo=False
        )
    big = runner.isolated_memory(str(models["big"]), 1, 1)["peak_growth_mb"]
    tiny = runner.isolated_memory(str(models["tiny"]), 1, 1)["peak_growth_mb"]
    assert tiny < 100 and big - tiny > 2048 * 2048 * 4 / 2**20 * 0.9
    lenet = Path(__file__).parent.parent / "models" / "lenet5-mnist15k.pt"
    pt = compare.torch_info(lenet, threads=1, batch=1, memory=True)["memory"]
    assert 0 < pt["peak_growth_mb"] < 100 and ballast.sum() == 1e8


@pytest.fixture(scope="module")
def open_dims_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A conv net whose ONNX input leaves batch, height and width open, with no metadata."""
    path = tmp_path_factory.mktemp("open") / "open.onnx"
    torch.onnx.export(
        torch.nn.Conv2d(3, 4, 3).eval(),
        (torch.randn(1, 3, 16, 16),),
        str(path),
        dynamo=False,
        input_names=["x"],
        dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}},
    )
    return path


def test_open_input_dims_need_a_shape_never_a_guess(open_dims_model: Path) -> None:
    proc = _runner(str(open_dims_model), *QUICK)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert "open dimensions" in proc.stderr and "--input-shape" in proc.stderr
    proc = _runner(str(open_dims_model), *QUICK, "--input-shape", "3,40,40", "--batch", "2")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["settings"]["input_shape"] == [3, 40, 40]
    res = CliRunner().invoke(cli, ["benchmark", str(open_dims_model), *QUICK, "--json", "-q"])
    assert res.exit_code == 1 and "--input-shape" in res.stderr
    res = CliRunner().invoke(
        cli, ["benchmark", str(open_dims_model), *QUICK, "--json", "-q", "--input-shape", "3,x"]
    )
    assert res.exit_code == 2 and "--input-shape" in res.stderr


def test_fixed_batch_mismatch_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "b2.onnx"
    torch.onnx.export(torch.nn.Linear(4, 2), (torch.randn(2, 4),), str(path), dynamo=False)
    proc = _runner(str(path), *QUICK)
    assert proc.returncode == 1 and "fixed batch of 2: use --batch 2" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert _runner(str(path), *QUICK, "--batch", "2").returncode == 0
    from compressor.bench.onnx_cost import onnx_cost

    assert onnx_cost(str(path))["macs"] == 4 * 2  # per image, not per fixed batch of 2


def test_eager_rows_beside_a_remote_device_get_no_speedup() -> None:
    results = [
        {"model": "a.onnx", "host": "pi@dev", "threads": 1, "batch": 1, "p50_ms": 10.0},
        {"model": "b.onnx", "host": "pi@dev", "threads": 1, "batch": 1, "p50_ms": 5.0},
        {"model": "b.pt", "runtime": "pytorch-eager", "threads": 1, "batch": 1, "p50_ms": 2.0},
    ]
    compare.add_ratios(results)
    assert [r["speedup_vs_first"] for r in results] == [1.0, 2.0, None]
    assert compare.format_speedup(results[2]) == "-"


def test_costs_of_unreadable_files_stay_unknown(
    onnx_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    """An .ort file (or anything onnx cannot parse that onnxruntime ran) keeps no count
    instead of failing the whole benchmark."""
    bad = tmp_path / "model.ort"
    bad.write_bytes(b"\x00ORT not a protobuf")
    models = [{"model": str(onnx_pair[0])}, {"model": str(bad)}]
    compare.add_onnx_costs(models)
    assert models[0]["macs"] > 0 and "macs" not in models[1]


def test_dense_macs_count_plain_matrix_products() -> None:
    from compressor.analysis import dense_macs

    class MM(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(5, 4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.mm(x.flatten(1)[:, :5], self.w)

    assert dense_macs(MM(), (1, 3, 4)) == 5 * 4  # (1,5) @ (5,4)


def test_models_with_the_same_file_name_are_told_apart() -> None:
    """Tables and charts name models by file name, or by as much of the path as tells two
    files of the same name apart."""
    from compressor.bench.compare import short_names

    names = short_names(["runs/a/model.onnx", "runs/b/model.onnx", "x/baseline.onnx"])
    assert names == {
        "runs/a/model.onnx": "a/model.onnx",
        "runs/b/model.onnx": "b/model.onnx",
        "x/baseline.onnx": "baseline.onnx",
    }
    assert short_names(["m.int8.onnx"]) == {"m.int8.onnx": "m.int8.onnx"}


def test_layers_show_where_the_time_goes(onnx_pair: tuple[Path, Path]) -> None:
    """`--layers N`: onnxruntime's own profile of each model, its N slowest nodes first;
    in the wide net the 64->64 convolution is the slowest node."""
    proc = _runner(str(onnx_pair[0]), "--layers", "2", "--min-runs", "5", "--min-seconds", "0.1", "--no-memory")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (info,) = json.loads(proc.stdout)["models"]
    rows = info["layers"]
    assert len(rows) == 2 and rows[0]["ms"] >= rows[1]["ms"] > 0
    assert rows[0]["op"] == "Conv" and 0.3 < rows[0]["share"] <= 1.0
    assert "layers" not in json.loads(_runner(str(onnx_pair[0]), "--min-runs", "5", "--min-seconds", "0.1", "--no-memory").stdout)["models"][0]  # fmt: skip
    bad = _runner(str(onnx_pair[0]), "--layers", "-1")
    assert bad.returncode == 1 and "--layers must be 0 or more" in bad.stderr
