"""compressor: structured-sparsity compression of CNN classifiers.

Importing this package is cheap: torch and friends are imported only by the modules
that need them, so ``compressor --help`` answers quickly.
"""

from __future__ import annotations

__all__ = ["CompressorError", "__version__"]

from compressor.errors import CompressorError
from compressor.version import __version__
