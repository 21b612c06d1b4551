"""``compress``: the whole job, stage by stage, resumable, never leaving a half-written OUTDIR.

Stages: baseline evaluation -> training with the method's regularizer -> channel selection
(the method's criterion) and physical removal -> fine-tuning -> evaluation -> ONNX export
and verification -> side-by-side latency -> report. Everything is written into
``OUTDIR.partial/`` first; each stage leaves a file that marks it done, so ``--resume``
skips finished stages and continues an interrupted training stage at the step it reached.
Only a complete run is renamed to ``OUTDIR``.

Modules, each importing only those before it: ``config`` (``CompressConfig``), ``state``
(``Run``, what the stages share), ``plots``, ``report`` (report.json and report.md),
``controller`` (``--lambda auto``'s wiring), ``stages`` (the stage functions and ``TABLE``,
one record per stage), ``run`` (``compress``: the work folder, the stages in order, the
final rename).
"""

from compressor.pipeline.config import CompressConfig
from compressor.pipeline.report import device_text, latency_target_lines
from compressor.pipeline.run import compress, partial_dir
from compressor.pipeline.stages import STAGES, TABLE, Stage, held_out_text, untrained_warning

__all__ = [
    "STAGES",
    "TABLE",
    "CompressConfig",
    "Stage",
    "compress",
    "device_text",
    "held_out_text",
    "latency_target_lines",
    "partial_dir",
    "untrained_warning",
]
