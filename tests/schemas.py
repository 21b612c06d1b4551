"""The machine-readable outputs' shapes, as JSON Schema inferred from a seeded sample of
each (genson), for ``docs/schemas/`` and ``tests/test_schemas.py``.

    python -m tests.schemas [KIND ...]    # (re)write docs/schemas/KIND.vN.json

Run it after raising ``compressor.schema.SCHEMA_VERSIONS[KIND]`` for an intended change of
an output's keys or types, and list the change in CHANGELOG.md.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "docs" / "schemas"
MODEL = ROOT / "models" / "smallcnn-mnist15k.pt"


def _json(args: list[str]) -> dict[str, Any]:
    from compressor.cli import cli

    res = CliRunner().invoke(cli, [*args, "--json", "-q"])
    if res.exit_code != 0:
        raise RuntimeError(f"compressor {' '.join(args)}: {res.stderr}")
    return dict(json.loads(res.stdout))


def _folder(tmp: Path) -> Path:
    from tests.helpers import write_image_folder

    return write_image_folder(tmp / "imgs", classes=3, per_class=6)


SAMPLES: dict[str, Callable[[Path], dict[str, Any]]] = {
    "inspect": lambda tmp: _json(["inspect", str(MODEL)]),
    "prune": lambda tmp: _json(["prune", str(MODEL), "--ratio", "0.3", "-o", str(tmp / "p.pt")]),
    "eval": lambda tmp: _json(["eval", str(MODEL), "--data", "mnist15k"]),
    "export": lambda tmp: _json(["export", str(MODEL), "-o", str(tmp / "m.onnx")]),
    "check-data": lambda tmp: _json(["check-data", str(_folder(tmp))]),
    "train": lambda tmp: _json(
        [
            "train",
            "smallcnn",
            "--data",
            str(_folder(tmp)),
            "--input-size",
            "12",
            "--epochs",
            "1",
            "-o",
            str(tmp / "t.pt"),
        ]
    ),
    "report": lambda tmp: _json(
        [
            "compress",
            str(MODEL),
            "--method",
            "l1",
            "--data",
            "mnist15k",
            "--reg-epochs",
            "1",
            "--ft-epochs",
            "1",
            "--target-macs",
            "0.6",
            "-o",
            str(tmp / "out"),
        ]
    ),
    "benchmark": lambda tmp: _json(
        ["benchmark", str(MODEL), "--max-seconds", "0.2", "--min-runs", "5", "--no-memory"]
    ),
}


def schema_of(payload: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema of ``payload``'s keys and types (genson)."""
    from genson import SchemaBuilder

    builder = SchemaBuilder()
    builder.add_object(payload)
    return dict(builder.to_schema())


def path_for(kind: str) -> Path:
    from compressor.schema import SCHEMA_VERSIONS

    return SCHEMAS / f"{kind}.v{SCHEMA_VERSIONS[kind]}.json"


def sample(kind: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        return SAMPLES[kind](Path(tmp))


def write(kind: str, payload: dict[str, Any]) -> Path:
    path = path_for(kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(schema_of(payload), indent=1, sort_keys=True) + "\n")
    return path


if __name__ == "__main__":
    for kind in sys.argv[1:] or sorted(SAMPLES):
        print(write(kind, sample(kind)))
