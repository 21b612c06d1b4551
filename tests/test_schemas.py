"""Every machine-readable output names its kind and version, and keeps the keys and types
its version's JSON Schema (``docs/schemas/KIND.vN.json``) records: a change of shape without
a version bump fails here. A reader given another version gets one clear line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from compressor.errors import CompressorError
from compressor.schema import SCHEMA_VERSIONS, check, read
from tests.schemas import SAMPLES, path_for, sample, schema_of

SLOW = {"report", "train"}


def _case(kind: str) -> object:
    return pytest.param(kind, marks=pytest.mark.e2e) if kind in SLOW else kind


def test_every_output_kind_has_a_sample_and_a_schema_file() -> None:
    assert set(SAMPLES) == set(SCHEMA_VERSIONS) - {"latency-table"}  # that one: e2e elsewhere
    for kind in SCHEMA_VERSIONS:
        if kind in SAMPLES:
            assert path_for(kind).is_file(), f"run: python -m tests.schemas {kind}"


@pytest.mark.parametrize("kind", [_case(k) for k in sorted(SAMPLES)])
def test_the_output_keeps_its_versions_shape(kind: str) -> None:
    payload = sample(kind)
    assert payload["schema"] == f"compressor/{kind}"
    assert payload["schema_version"] == SCHEMA_VERSIONS[kind]
    recorded = json.loads(path_for(kind).read_text())
    assert _same_shape(schema_of(payload), recorded), (
        f"the {kind} output changed shape: raise SCHEMA_VERSIONS[{kind!r}] in "
        f"compressor/schema.py, list the change in CHANGELOG.md and run "
        f"`python -m tests.schemas {kind}`"
    )


def _same_shape(now: Any, recorded: Any) -> bool:
    """Equal schemas, except that a list that came out empty (a run without warnings, say)
    matches whatever items the recorded one holds."""
    if isinstance(now, dict) and isinstance(recorded, dict):
        if now.get("type") == "array" and "items" not in now:
            return recorded.get("type") == "array"
        if recorded.get("type") == "array" and "items" not in recorded:
            return now.get("type") == "array"
        return now.keys() == recorded.keys() and all(_same_shape(now[k], recorded[k]) for k in now)
    if isinstance(now, list) and isinstance(recorded, list):
        return len(now) == len(recorded) and all(
            _same_shape(a, b) for a, b in zip(now, recorded, strict=True)
        )
    return bool(now == recorded)


def test_shape_comparison_accepts_empty_lists_only() -> None:
    full = {"type": "object", "properties": {"w": {"type": "array", "items": {"type": "string"}}}}
    empty = {"type": "object", "properties": {"w": {"type": "array"}}}
    renamed = {"type": "object", "properties": {"warnings": {"type": "array"}}}
    assert _same_shape(empty, full) and _same_shape(full, empty)
    assert not _same_shape(renamed, full)
    assert not _same_shape({"type": "integer"}, {"type": "string"})


def test_a_reader_given_another_version_gets_one_line(tmp_path: Path) -> None:
    old = tmp_path / "report.json"
    old.write_text(json.dumps({"accuracy": 91.2}))  # written before versions: version 1
    with pytest.raises(CompressorError, match=r"schema version 1, an older shape .* \(version 3\)"):
        read("report", old)
    now = {"schema": "compressor/report", "schema_version": SCHEMA_VERSIONS["report"]}
    assert check("report", now, "x") == now
    with pytest.raises(
        CompressorError, match="is a compressor/eval output, not a compressor/report"
    ):
        check("report", {"schema": "compressor/eval", "schema_version": 2}, "x")
    with pytest.raises(CompressorError, match="not found"):
        read("report", tmp_path / "missing.json")
