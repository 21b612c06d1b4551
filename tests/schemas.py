"""The machine-readable outputs' JSON Schemas, generated from their types
(``compressor/formats.py``, by pydantic), and a seeded sample of each output to validate
against them (``tests/test_schemas.py``).

    python -m tests.schemas [KIND ...]    # write docs/schemas/KIND.vN.json for a new N

It refuses to overwrite a version's file with another shape: a changed type needs a new
version (``compressor.schema.SCHEMA_VERSIONS``) and a CHANGELOG.md entry first.
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


def _onnx(tmp: Path) -> Path:
    _json(["export", str(MODEL), "-o", str(tmp / "m.onnx")])
    return tmp / "m.onnx"


# name -> (kind, a function of a scratch folder that gives one output of that kind)
SAMPLES: dict[str, Callable[[Path], dict[str, Any]]] = {
    "inspect": lambda tmp: _json(["inspect", str(MODEL)]),
    "prune": lambda tmp: _json(["prune", str(MODEL), "--ratio", "0.3", "-o", str(tmp / "p.pt")]),
    "prune:macs": lambda tmp: _json(
        ["prune", str(MODEL), "--target-macs", "0.5", "-o", str(tmp / "p.pt")]
    ),
    "eval": lambda tmp: _json(["eval", str(MODEL), "--data", "mnist15k"]),
    "eval:onnx": lambda tmp: _json(["eval", str(_onnx(tmp)), "--data", "mnist15k"]),
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
    "benchmark:onnx": lambda tmp: _json(
        ["benchmark", str(_onnx(tmp)), str(MODEL), "--max-seconds", "0.2", "--min-runs", "5"]
    ),
}


def kind_of(name: str) -> str:
    """The output kind of a sample (``prune:macs`` is a ``prune``)."""
    return name.split(":")[0]


def schema_for(kind: str) -> dict[str, Any]:
    """The JSON Schema of ``kind``'s type: every object closed to other keys, the kind and
    its version as constants."""
    from pydantic import TypeAdapter

    from compressor.formats import TYPES
    from compressor.schema import SCHEMA_VERSIONS

    schema = TypeAdapter(TYPES[kind]).json_schema(mode="serialization")
    _close(schema)
    schema["properties"]["schema"] = {"const": f"compressor/{kind}", "title": "Schema"}
    version = SCHEMA_VERSIONS[kind]
    schema["properties"]["schema_version"] = {"const": version, "title": "Schema Version"}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"compressor/{kind}.v{version}.json",
        **schema,
    }


def _close(node: Any) -> None:
    """``additionalProperties: false`` on every object that lists its properties."""
    if isinstance(node, dict):
        if "properties" in node:
            node.setdefault("additionalProperties", False)
        for value in node.values():
            _close(value)
    elif isinstance(node, list):
        for value in node:
            _close(value)


def validate(kind: str, payload: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``payload`` is a ``kind`` of its type."""
    import jsonschema

    jsonschema.Draft202012Validator(schema_for(kind)).validate(payload)


def path_for(kind: str) -> Path:
    from compressor.schema import SCHEMA_VERSIONS

    return SCHEMAS / f"{kind}.v{SCHEMA_VERSIONS[kind]}.json"


def sample(name: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        return SAMPLES[name](Path(tmp))


def text_of(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=1, sort_keys=True) + "\n"


def write(kind: str, force: bool = False) -> Path:
    """Write ``kind``'s schema file for its current version; refuse to overwrite one of
    another shape unless ``force`` (a fix to a schema that described the same outputs)."""
    path, text = path_for(kind), text_of(schema_for(kind))
    if path.is_file() and path.read_text() != text and not force:
        raise SystemExit(
            f"{path} holds another shape: raise SCHEMA_VERSIONS[{kind!r}] in "
            "compressor/schema.py and list the change in CHANGELOG.md first"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


if __name__ == "__main__":
    from compressor.formats import TYPES

    force = "--force" in sys.argv
    for kind in [a for a in sys.argv[1:] if a != "--force"] or sorted(TYPES):
        print(write(kind, force))
