"""The public Python API: what `import compressor` offers, that importing it stays cheap,
and the example of docs/python.md, run as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import compressor

ROOT = Path(__file__).resolve().parent.parent


def test_every_public_name_resolves() -> None:
    from compressor import pipeline

    assert set(compressor.__all__) == {"CompressorError", "__version__", *compressor._API}
    for name in compressor.__all__:
        assert getattr(compressor, name) is not None, name
    assert compressor.compress is pipeline.compress
    assert compressor.compress.__module__ == "compressor.pipeline.run"
    assert compressor.export.__name__ == "export_model_file"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        compressor.nope  # noqa: B018


def test_importing_the_package_imports_no_torch() -> None:
    code = "import sys, compressor; print('torch' in sys.modules, 'onnx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def _docs_example() -> str:
    text = (ROOT / "docs" / "python.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", text, re.S)
    return code


@pytest.mark.e2e
def test_the_docs_example_runs(tmp_path: Path) -> None:
    (tmp_path / "models").symlink_to(ROOT / "models")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _docs_example()],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"test top-1 \d+\.\d\d% -> \d+\.\d\d%", proc.stdout)
    assert "fewer MACs again" in proc.stdout and "'hgs'" in proc.stdout
    assert (tmp_path / "api-out" / "p.onnx").is_file()
