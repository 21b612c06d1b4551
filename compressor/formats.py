"""The formats of compressor's machine-readable outputs, as types: report.json and each
command's ``--json``.

These TypedDicts are the one definition of each output's keys and types:

- writers return them (``compressor.schema.stamp`` names the kind and version) and
  ``tests/test_schemas.py`` validates a seeded sample of every output against the JSON
  Schema generated from its type, so a writer that drifts from its type fails;
- readers (the CLI, the benchmarks, a user's script via ``compressor.read_output``) index
  them through these types, so mypy knows every key;
- ``docs/schemas/KIND.vN.json`` is generated from them (``python -m tests.schemas``) and
  the test fails when a type changes without a new version (``SCHEMA_VERSIONS``).

A section that is a dataclass's fields (a config, one epoch of training) is typed
``Annotated[dict[str, Any], Fields(module, name)]``: the dataclass stays its one definition
and its schema comes from it. ``NotRequired`` marks a key that only some runs write.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, NotRequired

from typing_extensions import TypedDict  # pydantic reads typing's only from Python 3.12

if TYPE_CHECKING:
    from pydantic import GetCoreSchemaHandler
    from pydantic_core import CoreSchema


class Fields:
    """Marks a ``dict[str, Any]`` as the fields (``dataclasses.asdict``) of the dataclass
    ``name`` in ``module``: the generated schema is the dataclass's. pydantic reads this
    marker when tests/schemas.py generates the schemas; nothing imports pydantic, or the
    dataclass's module, at run time."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __get_pydantic_core_schema__(
        self, _source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        import importlib

        return handler.generate_schema(getattr(importlib.import_module(self.module), self.name))


PruneConfigFields = Annotated[dict[str, Any], Fields("compressor.config", "PruneConfig")]
TrainConfigFields = Annotated[dict[str, Any], Fields("compressor.config", "TrainConfig")]
DataConfigFields = Annotated[dict[str, Any], Fields("compressor.config", "DataConfig")]
PreprocessFields = Annotated[dict[str, Any], Fields("compressor.config", "Preprocess")]
EpochFields = Annotated[dict[str, Any], Fields("compressor.training", "EpochStats")]
ParityFields = Annotated[dict[str, Any], Fields("compressor.onnx_export", "Parity")]
StrengthConfigFields = Annotated[dict[str, Any], Fields("compressor.strength", "StrengthConfig")]
StrengthPointFields = Annotated[dict[str, Any], Fields("compressor.strength", "StrengthPoint")]
LayerInfoFields = Annotated[dict[str, Any], Fields("compressor.analysis", "LayerInfo")]


# ---- pieces shared by several outputs ---------------------------------------------------


class SkippedFile(TypedDict):
    path: str
    reason: str


class DataSummary(TypedDict):
    """The data a run read (``compressor.data.describe``)."""

    source: str
    train_images: int
    val_images: int
    test_images: int
    val_held_out_from_train: bool
    classes: int
    preprocess: PreprocessFields
    skipped_images: int
    skipped_files: list[SkippedFile]  # the first 100


class LayerChange(TypedDict):
    """One layer's output channels before and after pruning."""

    name: str
    type: str | None
    before: int
    after: int


class RatioAttempt(TypedDict):
    """``--ratio``: one plan tried, the fraction of prunable channels it removed."""

    goal: float
    removed_fraction: float
    chosen: bool


class BudgetAttempt(TypedDict):
    """``--target-macs``: one budget tried and the fraction of the MACs it kept."""

    budget: float
    reached: float


class LatencyAttempt(TypedDict):
    """A latency target: one plan measured."""

    budget_ms: float
    predicted_ms: float
    measured_ms: float
    measured_ci95_ms: list[float] | None
    dense_measured_ms: float
    speedup: float
    speedup_ci95: list[float] | None
    miss: float
    chosen: NotRequired[bool]


class TableCheck(TypedDict):
    """A latency table's check: an unevenly pruned model, predicted and measured."""

    keep: float
    predicted_ms: float
    measured_ms: float
    error: float


class TableSummary(TypedDict):
    file: str
    cached: bool
    seconds: float
    checks: list[TableCheck]
    dense_ms: float


class LayerPrediction(TypedDict):
    """One layer's predicted ms before and after the cut, and its (out, in) widths."""

    name: str
    before_ms: float
    after_ms: float
    channels: list[float]


class LatencySelection(TypedDict):
    """How a latency target was met (``prune`` and ``compress`` under one): the chosen
    plan's prediction and measurement, every plan measured, the layers' predictions."""

    target_ms: float | None
    target_speedup: float | None
    budget_ms: float
    input_size: list[int]
    device: dict[str, Any]
    table: TableSummary
    predicted_ms: float
    measured_ms: float
    measured_ci95_ms: list[float] | None
    dense_measured_ms: float
    speedup: float
    speedup_ci95: list[float] | None
    met: bool
    attempts: list[LatencyAttempt]
    layers: list[LayerPrediction]


class PruneResult(TypedDict):
    """What a cut removed (``compressor.selection.prune_loaded``)."""

    groups: int
    groups_kept_whole: list[str]  # roots of the groups left whole
    # of those, the ones a trial removal broke, and how (prune version 2)
    groups_unsafe: dict[str, str]
    removed_share: float | None
    prunable_channels: int
    removed_channels: int
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    macs_ratio: float
    target_attempts: list[RatioAttempt | BudgetAttempt]
    latency: NotRequired[LatencySelection]
    input_size: list[int]
    seconds: float
    layers: list[LayerChange]
    target_miss: str | None


class Stamped(TypedDict):
    """Every output names its kind (``compressor/KIND``) and its shape's version."""

    schema: str
    schema_version: int


# ---- compress: report.json ------------------------------------------------------------


class Scores(TypedDict):
    """A model's figures on the run's splits (the test ones where the data has a test
    split), its parameters and MACs."""

    val_top1: float
    val_top5: float | None
    val_images: int
    test_top1: float | None  # None: the data has no test split
    test_top5: float | None
    test_images: int | None
    params: int
    macs: int


class ReferenceScores(Scores):
    """``--reference FILE``: the dense fine-tuned model's figures, read the same way."""

    model: str
    val_loss: float
    test_loss: float | None


class StartSummary(TypedDict):
    """Where the weights came from, and whether the head is new (then the baseline has no
    task accuracy)."""

    weights: str | None
    new_head: bool
    head_replaced: list[str]
    classes_in_weights: int | None
    backbone: bool
    baseline_is_task_model: bool
    reference: ReferenceScores | None


class StrengthSummary(TypedDict):
    """``--lambda auto``: the rule, its settings and every check of the controller."""

    config: StrengthConfigFields
    rule: str
    baseline_top1: float | None
    final_strength: float
    final_decay: float | None
    epoch_shares: list[float]
    stopped_after: int | None
    focused_at: float | None
    history: list[StrengthPointFields]
    val_images: int
    top1_standard_error: float
    final_top1: float | None
    final_share: float | None  # the removed channels' share of the score mass (`share`)


class ReportPruning(TypedDict):
    """What report.json keeps of the cut."""

    groups: int
    prunable_channels: int
    removed_channels: int
    seconds: float
    score_seconds: float
    macs_ratio: float
    removed_share: float | None
    val_top1_after_prune: float  # before any fine-tuning (`val_after_prune`)
    target_attempts: list[RatioAttempt | BudgetAttempt]
    target_miss: str | None
    latency: NotRequired[LatencySelection]


class ReportOnnx(TypedDict):
    path: str
    opset: int
    exporter: str
    size_bytes: int
    max_abs_diff: float
    rel_diff: float
    top1_agreement: float
    parity: list[ParityFields]
    notes: list[str]


class ReportLatency(TypedDict):
    """Baseline and compressed ONNX files side by side in onnxruntime; each list holds
    [baseline, compressed]."""

    baseline_ms: float
    compressed_ms: float
    speedup: float
    speedup_ci95: list[float] | None
    threads: int
    profile: NotRequired[str]
    remote: NotRequired[str]
    batch: int
    cv: list[float]
    p50_ci95_ms: list[list[float] | None]
    runs: list[int]
    seconds: list[float]
    memory_mb: list[float] | None  # None when the models ran on --remote
    file_mb: list[float]
    warnings: list[str]


class ReportHistory(TypedDict):
    regularize: list[EpochFields]
    finetune: list[EpochFields]


class ReportEpochs(TypedDict):
    regularize: int
    finetune: int


class Report(Stamped):
    """``compress``'s report.json (``compressor/report``)."""

    model: str
    arch: str
    start: StartSummary
    method: str
    hyperparameters: dict[str, float | int | str | bool | None]
    strength: StrengthSummary | None
    selection: PruneConfigFields
    data: DataSummary
    baseline: Scores
    compressed: Scores
    pruning: ReportPruning
    onnx: ReportOnnx
    latency: ReportLatency
    layers: list[LayerChange]
    history: ReportHistory
    epochs: ReportEpochs
    stages: dict[str, float]  # seconds per stage


# ---- train --------------------------------------------------------------------------


class MethodSummary(TypedDict):
    name: str
    params: dict[str, Any]


class SplitScores(TypedDict):
    """One split's figures (``eval``, and ``train``'s test split)."""

    top1: float
    top5: float | None
    loss: float
    images: int
    left_out: NotRequired[int]  # an ONNX file of fixed batch size: the last partial batch


class PretrainedStart(TypedDict):
    """``train --weights``: where the weights came from (``compressor.weights.Start``)."""

    weights: str
    classes_in_weights: int | None
    head_replaced: list[str]
    backbone: bool
    new_head: bool


class TrainOutput(Stamped):
    """``train``'s ``<stem>.train.json`` and ``--json`` (``compressor/train``)."""

    output: NotRequired[str]  # --json only
    arch: str
    method: MethodSummary | None
    data: DataSummary
    train_config: TrainConfigFields
    data_config: DataConfigFields
    pretrained: PretrainedStart | None
    seconds: float
    history: list[EpochFields]
    test: SplitScores | None


# ---- eval, inspect, prune, export, check-data ------------------------------------------


def split_scores(out: EvalOutput, split: str) -> SplitScores:
    """One split's figures of an ``eval`` output: its keys are the split names it lists."""
    by_name: Mapping[str, Any] = out
    scores: SplitScores = by_name[split]
    return scores


class EvalOutput(Stamped):
    """``eval --json`` (``compressor/eval``): each split's figures under its name."""

    model: str
    arch: str
    data: str
    input_size: str  # "3x32x32"
    val_held_out_from_train: bool
    splits: list[str]
    val: NotRequired[SplitScores]
    test: NotRequired[SplitScores]
    train: NotRequired[SplitScores]
    seconds: float
    runtime: NotRequired[str]  # an ONNX file's: "onnxruntime-cpu"


class InspectLayer(TypedDict):
    name: str
    type: str
    in_channels: int
    out_channels: int
    groups: int
    kernel: list[int]
    params: int
    macs: int
    original_out_channels: NotRequired[int | None]  # a pruned model's, before pruning


class InspectOutput(Stamped):
    """``inspect --json`` (``compressor/inspect``)."""

    model: str
    arch: str
    pruned: bool
    source_format: str
    num_classes: int | None
    preprocess: PreprocessFields | None
    params: int
    macs: int
    input_size: list[int]
    layers: list[InspectLayer]


class PruneOutput(Stamped, PruneResult):
    """``prune --json`` (``compressor/prune``)."""

    model: str
    output: str
    arch: str
    config: PruneConfigFields


class Int8Summary(TypedDict):
    """``export --int8``: the INT8 file against the float one."""

    path: str
    size_bytes: int
    fp32_size_bytes: int
    calibration_samples: int
    eval_split: str
    eval_images: int
    accuracy_fp32: float
    accuracy_int8: float
    latency_fp32_ms: float
    latency_int8_ms: float
    speedup: float
    speedup_ci95: list[float] | None
    latency_threads: int


class ExportResultFields(TypedDict):
    """An export's record (``compressor.onnx_export.ExportResult``)."""

    path: str
    exporter: str
    opset: int
    nodes: int
    nodes_before_simplify: int | None
    simplified: bool
    size_bytes: int
    parity: list[ParityFields]
    notes: list[str]


class ExportOutput(Stamped, ExportResultFields):
    """``export --json`` (``compressor/export``)."""

    model: str
    arch: str
    input_size: list[int]
    int8: NotRequired[Int8Summary]


class CheckDataOutput(Stamped):
    """``check-data --json`` (``compressor/check-data``)."""

    data: str
    files: int
    unreadable: list[SkippedFile]
    skipped_links: list[str]
    seconds: float


# ---- benchmark, latency-table ------------------------------------------------------------


class Machine(TypedDict):
    platform: str
    processor: str
    cpus: int | None
    python: str
    onnxruntime: str


class ModelInfo(TypedDict):
    """One benchmarked file: its size and costs (and peak memory, unless --no-memory)."""

    model: str
    file_bytes: int
    params: NotRequired[int]
    macs: NotRequired[int | None]
    macs_source: NotRequired[str]
    macs_cut_vs_first: float | None
    memory: NotRequired[dict[str, float]]
    metadata: NotRequired[dict[str, str]]  # an ONNX file's metadata_props
    layers: NotRequired[list[dict[str, Any]]]  # --layers: the slowest operators


class Timing(TypedDict):
    """One file at one (runtime, threads, batch): the runner's percentiles and the
    speed-up against the first file measured in the same rounds."""

    model: str
    runtime: str
    provider: NotRequired[str]
    threads: int
    batch: int
    host: NotRequired[str]
    runs: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    cv: float
    rounds: int
    p50_rse: float | None
    p50_ci95_ms: list[float] | None
    throughput_ips: float
    speedup_vs_first: float | None
    speedup_vs_first_ci95: list[float] | None


class BenchmarkOutput(Stamped):
    """``benchmark --json`` (``compressor/benchmark``)."""

    runner_version: NotRequired[int]
    machine: Machine
    profile: str | None
    cores: list[int] | None
    settings: NotRequired[dict[str, Any]]
    models: list[ModelInfo]
    results: list[Timing]
    warnings: list[str]


class SlowLayer(TypedDict):
    name: str
    ms: float


class LatencyTableOutput(Stamped):
    """``latency-table --json`` (``compressor/latency-table``)."""

    model: str
    arch: str
    input_size: list[int]
    file: str
    cached: bool
    key: str
    seconds: float
    device: dict[str, Any]
    dense_ms: float
    rest_ms: float
    layers: int
    probes: int
    checks: list[TableCheck]
    slowest: list[SlowLayer]


# kind -> its type (``compressor.schema.SCHEMA_VERSIONS`` has the same kinds)
TYPES: dict[str, type] = {
    "report": Report,
    "train": TrainOutput,
    "eval": EvalOutput,
    "prune": PruneOutput,
    "inspect": InspectOutput,
    "export": ExportOutput,
    "benchmark": BenchmarkOutput,
    "latency-table": LatencyTableOutput,
    "check-data": CheckDataOutput,
}
