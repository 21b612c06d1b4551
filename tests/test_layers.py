"""The package's import structure: every module imports only from its own layer or the
layers below, so no lower layer reaches up, and no two modules import each other at run
time. Lazy imports inside functions count; ``TYPE_CHECKING`` imports count for the layers
(a type-only import between siblings of one layer, such as a plan's type in the groups
module, is no circle)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "compressor"

# bottom to top; a module may import from its own layer and any layer below it
LAYERS: list[list[str]] = [
    [
        "errors",
        "version",
        "outputs",
        "formats",
        "nets",
        "syncbn",
        "bench",
        "bench.runner",
        "bench.onnx_cost",
    ],
    ["schema"],
    ["bench.device"],
    ["utils", "distributed", "analysis", "lock"],
    ["config", "archs", "timm_archs", "timm_rewrites"],
    ["data", "pruning", "pruning.*"],
    ["methods", "methods.*", "checkpoint", "evaluation"],
    ["weights", "strength", "onnx_export", "training", "latency", "selection", "reference"],
    ["operations", "bench.compare"],
    # the compress pipeline's own modules, bottom to top
    ["pipeline.config", "pipeline.records"],
    ["pipeline.state", "pipeline.plots"],
    ["pipeline.report", "pipeline.controller"],
    ["pipeline.stages"],
    ["pipeline.run"],
    ["pipeline"],
    ["cli.app", "cli.options"],
    ["cli", "cli.*", "__main__", "__init__"],
]


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)
        out[name] = path
    return out


def _type_only(tree: ast.Module) -> set[int]:
    """Line numbers of the imports under ``if TYPE_CHECKING:``."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            for inner in node.body:
                lines.update(range(inner.lineno, (inner.end_lineno or inner.lineno) + 1))
    return lines


def _imports(path: Path, modules: dict[str, Path], runtime: bool = False) -> set[str]:
    found = set()
    tree = ast.parse(path.read_text())
    skip = _type_only(tree) if runtime else set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for full in names:
            if full.startswith("compressor."):
                rel = full.removeprefix("compressor.")
                if rel in modules:
                    found.add(rel)
                    break
            elif full == "compressor":
                found.add("__init__")
    return found


def _layer(name: str) -> int:
    for i, layer in enumerate(LAYERS):
        for pattern in layer:
            if name == pattern or (pattern.endswith(".*") and name.startswith(pattern[:-1])):
                return i
    raise AssertionError(f"compressor/{name} is in no layer of tests/test_layers.py")


def test_every_module_imports_only_its_layer_or_below() -> None:
    modules = _modules()
    upward = [
        f"{name} (layer {_layer(name)}) imports {dep} (layer {_layer(dep)})"
        for name, path in sorted(modules.items())
        for dep in sorted(_imports(path, modules))
        if dep != name and _layer(dep) > _layer(name)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_circle() -> None:
    modules = _modules()
    graph = {name: _imports(path, modules, runtime=True) - {name} for name, path in modules.items()}
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                raise AssertionError("import circle: " + " -> ".join([*stack, node, dep]))
            if dep not in state:
                visit(dep, [*stack, node])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_no_module_imports_another_modules_private_names() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("compressor"):
                offenders += [
                    f"{path.relative_to(PACKAGE)}: {node.module}.{a.name}"
                    for a in node.names
                    if a.name.startswith("_") and a.name != "__version__"
                ]
    assert not offenders, "\n".join(offenders)
