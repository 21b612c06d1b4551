"""The versions of compressor's machine-readable outputs.

Every JSON that a command writes or prints with ``--json`` names what it is and the version
of its shape: ``{"schema": "compressor/report", "schema_version": 2, ...}``. A renamed,
removed or retyped key raises the version (``tests/test_schemas.py`` fails until it does,
and ``docs/schemas/`` holds each version's JSON Schema), and ``CHANGELOG.md`` lists the
change. A reader given another version (``read``) stops with one line instead of a
KeyError deep in a script. Outputs written before versions existed count as version 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

from compressor.errors import CompressorError

if TYPE_CHECKING:
    from compressor import formats

# kind -> version of its shape now (1: the shape before versions, where it changed since)
SCHEMA_VERSIONS: dict[str, int] = {
    "report": 4,  # compress's report.json; 1 had `accuracy` where 2 has test_top1/val_top1;
    # 3 adds strength.final_decay and strength.history[].decay (the growing rule);
    # 4 adds data.preprocess.interpolation and .crop_pct (timm's resizing)
    "train": 2,  # train's <stem>.train.json and --json; 2 adds preprocess.interpolation, .crop_pct
    "eval": 2,  # eval --json; 1 had `top1` at the top, 2 has it under each split
    "prune": 2,  # 2 adds groups_unsafe (the groups a trial removal broke, and how)
    "inspect": 2,  # 2 adds preprocess.interpolation and .crop_pct
    "export": 1,
    "benchmark": 1,
    "latency-table": 1,
    "check-data": 1,
}

# kind -> older versions that differ from the current one only by keys added since: a
# reader takes them (the added keys are absent), so files written before an addition,
# such as a benchmark's cached reports, still read
READS_ALSO: dict[str, tuple[int, ...]] = {"report": (3,), "train": (1,), "inspect": (1,)}


def stamp(kind: str, payload: dict[str, Any]) -> Any:
    """``payload`` with its kind and version first. Its writer declares the type it
    returns (``compressor.formats``), which tests/test_schemas.py validates it against."""
    return {"schema": f"compressor/{kind}", "schema_version": SCHEMA_VERSIONS[kind], **payload}


def check(kind: str, payload: dict[str, Any], source: str) -> dict[str, Any]:
    """``payload`` if it is a ``kind`` of the current version; else one clear line."""
    now = SCHEMA_VERSIONS[kind]
    named = payload.get("schema")
    if named is not None and named != f"compressor/{kind}":
        raise CompressorError(f"{source} is a {named} output, not a compressor/{kind}")
    version = payload.get("schema_version", 1)
    if version != now and version not in READS_ALSO.get(kind, ()):
        older = "an older" if isinstance(version, int) and version < now else "another"
        raise CompressorError(
            f"{source} is a compressor/{kind} of schema version {version}, {older} shape than "
            f"this compressor reads (version {now}): CHANGELOG.md lists what changed; rerun "
            "the command that wrote it to get the current shape"
        )
    return payload


@overload
def read(kind: Literal["report"], path: Path | str) -> formats.Report: ...
@overload
def read(kind: Literal["train"], path: Path | str) -> formats.TrainOutput: ...
@overload
def read(kind: Literal["eval"], path: Path | str) -> formats.EvalOutput: ...
@overload
def read(kind: Literal["prune"], path: Path | str) -> formats.PruneOutput: ...
@overload
def read(kind: Literal["inspect"], path: Path | str) -> formats.InspectOutput: ...
@overload
def read(kind: Literal["export"], path: Path | str) -> formats.ExportOutput: ...
@overload
def read(kind: Literal["benchmark"], path: Path | str) -> formats.BenchmarkOutput: ...
@overload
def read(kind: Literal["latency-table"], path: Path | str) -> formats.LatencyTableOutput: ...
@overload
def read(kind: Literal["check-data"], path: Path | str) -> formats.CheckDataOutput: ...
def read(kind: str, path: Path | str) -> Any:
    """Read a ``kind`` JSON file, checked to be of the current version, as its type
    (``compressor.formats``: mypy knows its keys)."""
    try:
        payload = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CompressorError(f"{path} not found") from None
    except (OSError, ValueError) as e:
        raise CompressorError(f"{path} is not a readable JSON file: {e}") from None
    if not isinstance(payload, dict):
        raise CompressorError(f"{path} holds no compressor/{kind} object")
    return check(kind, payload, str(path))
