"""The ``compressor`` command line. Thin: parse options, build a config, call the library, print.

One module per command group (``data``, ``training``, ``evaluation``, ``pruning``,
``compressing``, ``exporting``, ``benchmarking``, ``latency``), each registering its commands on the
group in ``app``; ``options`` holds what they share. Only click and the standard library
are imported at module level, so ``compressor --help`` answers without loading torch.
"""

from __future__ import annotations

from compressor.cli import (  # noqa: F401  (each registers its commands)
    benchmarking,
    compressing,
    data,
    evaluation,
    exporting,
    latency,
    pruning,
    training,
)
from compressor.cli.app import cli, main

__all__ = ["cli", "main"]
