"""compressor: structured-sparsity compression of CNN classifiers.

The library behind the CLI, one function per command, each taking the configs the CLI
builds (their defaults are the CLI's)::

    import compressor

    report = compressor.compress(
        "resnet18.pt",
        "out/",
        compressor.CompressConfig("hgs", compressor.DataConfig("./data")),
    )

Importing this package is cheap: the names below load their modules on first use, and
torch and friends are imported only by the modules that need them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from compressor.errors import CompressorError
from compressor.version import __version__

# public name -> (module, attribute)
_API = {
    "compress": ("pipeline", "compress"),
    "CompressConfig": ("pipeline", "CompressConfig"),
    "train": ("operations", "train_model"),
    "prune": ("operations", "prune_model_file"),
    "export": ("operations", "export_model_file"),
    "evaluate": ("operations", "evaluate_model"),
    "evaluate_onnx": ("operations", "evaluate_onnx_file"),
    "inspect": ("operations", "inspect_model"),
    "load_model": ("checkpoint", "load_model"),
    "save_model": ("checkpoint", "save_model"),
    "prune_loaded": ("selection", "prune_loaded"),
    "benchmark": ("bench.compare", "benchmark"),
    "DataConfig": ("config", "DataConfig"),
    "TrainConfig": ("config", "TrainConfig"),
    "PruneConfig": ("config", "PruneConfig"),
    "ExportConfig": ("onnx_export", "ExportConfig"),
    "StrengthConfig": ("strength", "StrengthConfig"),
    "BenchmarkConfig": ("bench.compare", "BenchmarkConfig"),
    "list_methods": ("methods", "list_methods"),
    "get_method": ("methods", "get_method"),
    "read_output": ("schema", "read"),
}
__all__ = [
    "BenchmarkConfig",
    "CompressConfig",
    "CompressorError",
    "DataConfig",
    "ExportConfig",
    "PruneConfig",
    "StrengthConfig",
    "TrainConfig",
    "__version__",
    "benchmark",
    "compress",
    "evaluate",
    "evaluate_onnx",
    "export",
    "get_method",
    "inspect",
    "list_methods",
    "load_model",
    "prune",
    "prune_loaded",
    "read_output",
    "save_model",
    "train",
]  # the names of _API, and the two above (tests/test_api.py checks)

if TYPE_CHECKING:
    from compressor.bench.compare import BenchmarkConfig, benchmark
    from compressor.checkpoint import load_model, save_model
    from compressor.config import DataConfig, PruneConfig, TrainConfig
    from compressor.methods import get_method, list_methods
    from compressor.onnx_export import ExportConfig
    from compressor.operations import evaluate_model as evaluate
    from compressor.operations import evaluate_onnx_file as evaluate_onnx
    from compressor.operations import export_model_file as export
    from compressor.operations import inspect_model as inspect
    from compressor.operations import prune_model_file as prune
    from compressor.operations import train_model as train
    from compressor.pipeline import CompressConfig, compress
    from compressor.schema import read as read_output
    from compressor.selection import prune_loaded
    from compressor.strength import StrengthConfig


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'compressor' has no attribute {name!r}")
    module, attribute = _API[name]
    value = getattr(importlib.import_module(f"compressor.{module}"), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
