"""Every machine-readable output names its kind and version and is an instance of its
type (``compressor/formats.py``): a seeded sample of each validates against the JSON Schema
generated from the type, and that schema is the one ``docs/schemas/KIND.vN.json`` records
for the current version, so a changed type without a new version fails here. A reader given
another version gets one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compressor.errors import CompressorError
from compressor.schema import READS_ALSO, SCHEMA_VERSIONS, check, read
from tests.schemas import SAMPLES, kind_of, path_for, sample, schema_for, text_of, validate

SLOW = {"report", "train"}


def _case(name: str) -> object:
    return pytest.param(name, marks=pytest.mark.e2e) if kind_of(name) in SLOW else name


def test_every_output_kind_has_a_type_a_schema_file_and_a_sample() -> None:
    from compressor.formats import TYPES

    assert set(TYPES) == set(SCHEMA_VERSIONS)
    # latency-table's sample is its end-to-end test (tests/test_latency.py): a minute
    assert {kind_of(n) for n in SAMPLES} == set(SCHEMA_VERSIONS) - {"latency-table"}
    for kind in SCHEMA_VERSIONS:
        assert path_for(kind).is_file(), f"run: python -m tests.schemas {kind}"


@pytest.mark.parametrize("kind", sorted(SCHEMA_VERSIONS))
def test_the_types_schema_is_its_versions_file(kind: str) -> None:
    assert text_of(schema_for(kind)) == path_for(kind).read_text(), (
        f"the {kind} type changed shape: raise SCHEMA_VERSIONS[{kind!r}] in "
        f"compressor/schema.py, list the change in CHANGELOG.md and run "
        f"`python -m tests.schemas {kind}`"
    )


@pytest.mark.parametrize("name", [_case(n) for n in sorted(SAMPLES)])
def test_the_output_is_an_instance_of_its_type(name: str) -> None:
    kind = kind_of(name)
    payload = sample(name)
    assert payload["schema"] == f"compressor/{kind}"
    assert payload["schema_version"] == SCHEMA_VERSIONS[kind]
    validate(kind, payload)


def test_validation_catches_a_renamed_key_and_a_retyped_value() -> None:
    import jsonschema

    good = {
        "schema": "compressor/check-data",
        "schema_version": SCHEMA_VERSIONS["check-data"],
        "data": "d",
        "files": 3,
        "unreadable": [{"path": "a.png", "reason": "truncated"}],
        "skipped_links": [],
        "seconds": 0.5,
    }
    validate("check-data", good)
    renamed = {**good, "n_files": good.pop("files")}
    with pytest.raises(jsonschema.ValidationError):
        validate("check-data", renamed)
    with pytest.raises(jsonschema.ValidationError):
        validate("check-data", {**good, "files": "3"})
    with pytest.raises(jsonschema.ValidationError):
        validate("check-data", {**good, "files": 3, "schema_version": 99})


def test_a_reader_given_another_version_gets_one_line(tmp_path: Path) -> None:
    old = tmp_path / "report.json"
    old.write_text(json.dumps({"accuracy": 91.2}))  # written before versions: version 1
    with pytest.raises(CompressorError, match=r"schema version 1, an older shape .* \(version 4\)"):
        read("report", old)
    additive = {"schema": "compressor/report", "schema_version": 3}  # 4 only adds keys
    assert check("report", additive, "x") == additive
    now = {"schema": "compressor/report", "schema_version": SCHEMA_VERSIONS["report"]}
    assert check("report", now, "x") == now
    with pytest.raises(
        CompressorError, match="is a compressor/eval output, not a compressor/report"
    ):
        check("report", {"schema": "compressor/eval", "schema_version": 2}, "x")
    with pytest.raises(CompressorError, match="not found"):
        read("report", tmp_path / "missing.json")


def _only_added(old: object, new: object, path: str = "") -> list[str]:
    """How schema ``new`` differs from ``old`` other than by optional properties added."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return [] if old == new else [f"{path}: {old!r} -> {new!r}"]
    found = [f"{path}/{k} removed" for k in old if k not in new]
    found += [
        f"{path}/{k} added" for k in new if k not in old and path.split("/")[-1] != "properties"
    ]
    added = set(new.get("properties", {})) - set(old.get("properties", {}))
    found += [f"{path}/{k} added as required" for k in added & set(new.get("required", []))]
    for k in old.keys() & new.keys():
        if k in ("$id", "required"):
            continue
        found += _only_added(old[k], new[k], f"{path}/{k}")
    if set(old.get("required", [])) != set(new.get("required", [])) - added:
        found.append(f"{path}: required keys changed")
    return found


@pytest.mark.parametrize("kind", sorted(READS_ALSO))
def test_older_versions_read_as_current_only_lack_keys(kind: str) -> None:
    """``READS_ALSO``'s claim, from the schema files: the older version's schema is the
    current one less some optional properties (and its version number)."""
    new = json.loads(path_for(kind).read_text())
    for version in READS_ALSO[kind]:
        old = json.loads(path_for(kind).with_name(f"{kind}.v{version}.json").read_text())
        old["properties"]["schema_version"]["const"] = SCHEMA_VERSIONS[kind]
        assert _only_added(old, new) == []
