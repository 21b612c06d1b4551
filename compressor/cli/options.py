"""What the commands share: option groups, parsing, the console, output-file checks and the
table printer."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import click

from compressor.config import OPTIMIZERS, DataConfig, LatencyDevice, PruneConfig, TrainConfig
from compressor.errors import CompressorError
from compressor.onnx_export import ExportConfig


def parse_size(value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        parts = tuple(int(p) for p in value.lower().replace(",", "x").split("x"))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a size; use S, HxW or CxHxW (e.g. 32, 3x32x32)"
        ) from None
    if not 1 <= len(parts) <= 3 or min(parts) < 1:
        raise click.BadParameter(f"{value!r} is not a size; use S, HxW or CxHxW (e.g. 32, 3x32x32)")
    if len(parts) == 3 and parts[0] not in (1, 3):
        raise click.BadParameter(f"{value!r}: the channel count must be 1 or 3")
    return parts


def parse_floats(value: str | None) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        return tuple(float(p) for p in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of numbers") from None


def output_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("-v", "--verbose", is_flag=True, help="More detail on stderr.")(f)
    f = click.option(
        "-q", "--quiet", is_flag=True, help="No progress bars or messages, only results."
    )(f)
    f = click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON on stdout.")(f)
    return f


def model_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option(
        "--trust-pickle",
        is_flag=True,
        help="Allow a file that needs code to load (a pickled nn.Module). Only for files you trust.",
    )(f)
    f = click.option(
        "--arch",
        metavar="NAME",
        help="Architecture of a bare state_dict: any torchvision classifier name, or lenet5 / smallcnn.",
    )(f)
    return f


def option_group(
    name: str, build: Callable[..., Any], options: list[Callable[..., Any]]
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add ``options`` to a command; its function receives one argument, ``name``: ``build``
    called with those options' values."""
    keys = _param_names(options)

    def wrap(f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        def inner(*args: Any, **kwargs: Any) -> Any:
            kwargs[name] = build(**{k: kwargs.pop(k) for k in keys})
            return f(*args, **kwargs)

        for opt in reversed(options):
            inner = opt(inner)
        return inner

    return wrap


def _param_names(options: list[Callable[..., Any]]) -> list[str]:
    def probe() -> None: ...

    for opt in options:
        opt(probe)
    return [str(p.name) for p in probe.__click_params__]  # type: ignore[attr-defined]


def data_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The data options, handed to the command as ``data``: a DataConfig (augment unset)."""
    return option_group(
        "data",
        _data_config,
        [
            click.option(
                "--data",
                required=True,
                metavar="DIR|mnist15k",
                help="ImageFolder (train/ and val/, or one folder split by --val-split), CIFAR or MNIST root, or mnist15k.",
            ),
            click.option(
                "--input-size",
                metavar="S|HxW|CxHxW",
                help="Model input size (default: recorded with the model, else the data's).",
            ),
            click.option(
                "--mean",
                metavar="M[,M,M]",
                help="Normalisation mean in [0,1] per channel (with --std).",
            ),
            click.option(
                "--std", metavar="S[,S,S]", help="Normalisation std per channel (with --mean)."
            ),
            click.option(
                "--val-split",
                type=float,
                default=DataConfig.val_split,
                show_default=True,
                help="Held-out fraction for a single-folder ImageFolder.",
            ),
            click.option(
                "--batch-size", type=int, default=DataConfig.batch_size, show_default=True
            ),
            click.option(
                "--workers",
                type=int,
                default=None,
                help="Data-loading processes (default: 0 for in-memory data, else up to 8).",
            ),
            click.option(
                "--strict-data",
                is_flag=True,
                help="Fail on image files that cannot be decoded (default: skip them with a "
                "warning; the report counts them).",
            ),
        ],
    )(f)


def _data_config(
    data: str,
    input_size: str | None,
    mean: str | None,
    std: str | None,
    val_split: float,
    batch_size: int,
    workers: int | None,
    strict_data: bool,
) -> DataConfig:
    return DataConfig(
        data=data,
        input_size=parse_size(input_size),
        mean=parse_floats(mean),
        std=parse_floats(std),
        val_split=val_split,
        batch_size=batch_size,
        workers=workers,
        strict=strict_data,
    )


def runtime_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option(
        "--seed",
        type=int,
        default=TrainConfig.seed,
        show_default=True,
        help="Random seed (runs are deterministic on CPU).",
    )(f)
    f = click.option(
        "--device",
        default=TrainConfig.device,
        show_default=True,
        help="auto, cpu, cuda or cuda:N.",
    )(f)
    return f


@dataclasses.dataclass(frozen=True)
class MethodArgs:
    """--method and its options as given: ``options`` merges --method-config, then --set,
    then --lambda X (later ones win); ``lambda_auto``: --lambda auto was given."""

    name: str | None
    options: dict[str, Any]
    lambda_auto: bool

    @property
    def auto(self) -> bool:
        """Whether the strength is automatic: unless a number was given (``--lambda X``,
        or ``lam`` through --set or --method-config)."""
        return "lam" not in self.options and "lambda" not in self.options


def method_options(required: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The method options, handed to the command as ``method``: a MethodArgs."""
    return option_group(
        "method",
        _method_args,
        [
            click.option(
                "--method",
                required=required,
                metavar="NAME",
                help="Structured-sparsity method (see `compressor methods`).",
            ),
            click.option(
                "--lambda",
                "lam",
                metavar="auto|X",
                default=None,
                help="The method's strength: `auto` (compress's default) sets and adapts it "
                "during training to hold validation accuracy within --max-drop of the "
                "baseline; a number fixes the method's `lam`.",
            ),
            click.option(
                "--set",
                "method_set",
                multiple=True,
                metavar="KEY=VALUE",
                help="A method option, e.g. --set lam2=0.5 (repeatable).",
            ),
            click.option(
                "--method-config",
                type=click.Path(path_type=Path),
                help="JSON or TOML file of method options.",
            ),
        ],
    )


def _method_args(
    method: str | None, lam: str | None, method_set: tuple[str, ...], method_config: Path | None
) -> MethodArgs:
    options: dict[str, Any] = {}
    if method_config is not None:
        from compressor.config import read_options_file

        options.update(read_options_file(method_config))
    for item in method_set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--set")
        options[key.strip()] = value.strip()
    auto = lam is not None and lam.lower() == "auto"
    if lam is not None and not auto:
        try:
            options["lam"] = float(lam)
        except ValueError:
            raise click.BadParameter(
                f"{lam!r} is neither `auto` nor a number", param_hint="--lambda"
            ) from None
    return MethodArgs(method, options, auto)


@dataclasses.dataclass(frozen=True)
class OptimizerArgs:
    """--optimizer, --momentum and --weight-decay (shared by `train` and `compress`)."""

    optimizer: str
    momentum: float
    weight_decay: float


def optimizer_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Handed to the command as ``optim``: an OptimizerArgs."""
    return option_group(
        "optim",
        OptimizerArgs,
        [
            click.option(
                "--optimizer",
                type=click.Choice(list(OPTIMIZERS)),
                default=TrainConfig.optimizer,
                show_default=True,
            ),
            click.option("--momentum", type=float, default=TrainConfig.momentum, show_default=True),
            click.option(
                "--weight-decay", type=float, default=TrainConfig.weight_decay, show_default=True
            ),
        ],
    )(f)


sync_bn_option = click.option(
    "--sync-bn",
    is_flag=True,
    help="Under torchrun: BatchNorm statistics over the global batch, not each "
    "process's shard (any device; no effect in one process).",
)


def onnx_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """ONNX export settings shared by `export` and `compress`, handed to the command as
    ``onnx``: an ExportConfig."""
    return option_group(
        "onnx",
        ExportConfig,
        [
            click.option("--opset", type=int, default=ExportConfig.opset, show_default=True),
            click.option(
                "--simplify/--no-simplify",
                default=ExportConfig.simplify,
                show_default=True,
                help="Simplify the graph with onnxslim when it removes nodes (not for weights over 1.9 GB).",
            ),
            click.option(
                "--tolerance",
                type=float,
                default=ExportConfig.tolerance,
                show_default=True,
                help="ONNX parity tolerance: max abs difference relative to the output scale.",
            ),
        ],
    )(f)


class Console:
    """Where a command writes: results to stdout, messages and progress to stderr."""

    def __init__(self, *, quiet: bool, verbose: bool, as_json: bool, main: bool = True) -> None:
        # under torchrun only rank 0 (``main``) says anything
        self.quiet = quiet or not main
        self.verbose = verbose
        self.as_json = as_json
        self.main = main

    @property
    def progress(self) -> bool:
        return not self.quiet

    def info(self, msg: str) -> None:
        if not self.quiet:
            click.echo(msg, err=True)

    def debug(self, msg: str) -> None:
        if self.verbose and not self.quiet:
            click.echo(msg, err=True)

    def result(self, payload: Mapping[str, Any], render: Callable[[], None]) -> None:
        if not self.main:
            return
        if self.as_json:
            click.echo(json.dumps(payload, indent=2))
        else:
            render()


def with_console(f: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(f)
    def wrapper(*args: Any, quiet: bool, verbose: bool, as_json: bool, **kwargs: Any) -> Any:
        import warnings

        shown = warnings.showwarning

        def show(message: Any, category: type[Warning], *rest: Any, **kw: Any) -> None:
            if category.__name__ in ("UnreadableImages", "SmallSplit"):  # ours: one line
                click.echo(f"Warning: {message}", err=True)
            else:
                shown(message, category, *rest, **kw)

        with warnings.catch_warnings():
            warnings.showwarning = show
            from compressor.distributed import is_main

            console = Console(quiet=quiet, verbose=verbose, as_json=as_json, main=is_main())
            return f(*args, console=console, **kwargs)

    return wrapper


def check_output(path: Path, force: bool) -> None:
    if path.is_dir():
        raise CompressorError(f"{path} is a directory; give a file name")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise CompressorError(f"cannot write {path}: {parent} is a file")
            if not os.access(parent, os.W_OK):
                raise CompressorError(f"cannot write {path}: {parent} is not writable")
            break
    if path.exists() and not force:
        raise CompressorError(f"{path} exists; pass --force to overwrite it")


@contextlib.contextmanager
def output_dir(path: Path) -> Iterator[None]:
    """Create ``path``'s missing parent folders (removed again if the command fails) and
    hold ``path``'s lock while the command writes it: a second run into the same file stops
    with one line (``compressor.lock``)."""
    from compressor.distributed import is_main
    from compressor.lock import exclusive

    created = []
    parent = path.parent
    while not parent.exists():
        created.append(parent)
        parent = parent.parent
    for d in reversed(created):
        d.mkdir(exist_ok=True)  # under torchrun every rank gets here
    try:
        with exclusive(path) if is_main() else contextlib.nullcontext():
            yield
    except BaseException:
        for d in created:
            if d.exists() and not any(d.iterdir()):
                d.rmdir()
        raise


def _numeric(value: Any) -> bool:
    """A figure (right-aligned in tables): a number, or text such as ``1.2x``, ``3.4 ms``,
    ``12%``, ``1.2M`` or ``-``."""
    if isinstance(value, int | float):
        return True
    return bool(re.fullmatch(r"[-+]?[\d.,]+\s*(x|%|ms|MB|[kMG])?( \(.*\))?|-", str(value).strip()))


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console as RichConsole
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for i, c in enumerate(columns):
        numeric = all(_numeric(r[i]) for r in rows if i < len(r))
        table.add_column(c, justify="right" if i and numeric else "left", overflow="fold")
    for r in rows:
        table.add_row(*[str(v) for v in r])
    import sys

    # a terminal's own width; piped to a file, wide enough that no cell wraps ("onnxruntime-cp
    # / u" across two lines), since a file has no width to fit
    width = None if sys.stdout.isatty() else max(120, _natural_width(table))
    RichConsole(width=width).print(table)


def _natural_width(table: Any) -> int:
    """The characters ``table`` needs on one line per row."""
    from rich.console import Console as RichConsole

    probe = RichConsole(width=10_000)
    return int(probe.measure(table).maximum) + 1


@dataclasses.dataclass(frozen=True)
class SelectionArgs:
    """Which channels go: one of ``ratio``, ``target_macs``, ``threshold``,
    ``target_latency`` or ``target_speedup`` (or none: the method's default), and the
    limits every plan keeps (PruneConfig's other fields)."""

    ratio: float | None
    target_macs: float | None
    threshold: float | None
    relative: bool
    round_to: int
    max_layer_ratio: float
    allocation: str
    target_latency: float | None
    target_speedup: float | None
    latency_size: str | None

    def options(self, device: LatencyDevice | None = None) -> dict[str, Any]:
        """PruneConfig's fields from these options (``device``: where latency is measured)."""
        fields = dataclasses.asdict(self)
        fields["latency_size"] = parse_size(self.latency_size)
        return {**fields, "device": device or LatencyDevice()}

    def config(self, importance: str, device: LatencyDevice | None = None) -> PruneConfig:
        return PruneConfig(importance=importance, **self.options(device))


def device_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Where latency is measured, handed to the command as ``device``: a LatencyDevice."""
    return _device_group("device")(f)


def latency_device_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``device_options`` for a command whose ``device`` is the training device: handed
    to it as ``latency_device``."""
    return _device_group("latency_device")(f)


def _device_group(into: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    from compressor.bench.runner import PROFILES

    return option_group(
        into,
        LatencyDevice,
        [
            click.option(
                "--threads",
                type=int,
                default=LatencyDevice.threads,
                show_default=True,
                help="onnxruntime threads on the device.",
            ),
            click.option(
                "--profile",
                type=click.Choice(sorted(PROFILES)),
                help="Edge preset of the benchmark runner: pinned cores and threads.",
            ),
            click.option(
                "--remote",
                metavar="USER@HOST",
                help="Measure on this host over SSH (it needs python3, numpy and onnxruntime).",
            ),
        ],
    )


def prune_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Handed to the command as ``selection``: a SelectionArgs."""
    return option_group(
        "selection",
        SelectionArgs,
        [
            click.option(
                "--ratio",
                type=float,
                help="Remove this fraction of all prunable channels (global ranking).",
            ),
            click.option(
                "--target-macs",
                type=float,
                help="Remove channels until MACs <= this fraction of the original (e.g. 0.5).",
            ),
            click.option(
                "--threshold", type=float, help="Remove channels whose score is below this value."
            ),
            click.option(
                "--target-latency",
                type=float,
                metavar="MS",
                help="Remove channels until the exported model runs in this many ms on the "
                "device (measured; a per-layer latency table steers the choice).",
            ),
            click.option(
                "--target-speedup",
                type=float,
                metavar="X",
                help="Remove channels until the exported model runs X times faster than now "
                "on the device (measured).",
            ),
            click.option(
                "--latency-size",
                metavar="S|HxW",
                help="Input size for latency targets (default: the model's input size).",
            ),
            click.option(
                "--relative",
                is_flag=True,
                help="With --threshold: compare with each group's largest score.",
            ),
            click.option(
                "--round-to",
                type=int,
                default=PruneConfig.round_to,
                show_default=True,
                help="Keep channel counts at multiples of N (8 measured fastest in onnxruntime on CPU).",
            ),
            click.option(
                "--max-layer-ratio",
                type=float,
                default=PruneConfig.max_layer_ratio,
                show_default=True,
                help="Never remove more than this fraction of a layer's channels.",
            ),
            click.option(
                "--allocation",
                type=click.Choice(["auto", "global", "uniform"]),
                default=PruneConfig.allocation,
                show_default=True,
                help="How many channels each layer loses: ranked across the whole model "
                "(global; under a latency target, by score lost per millisecond saved), or the "
                "same fraction of every layer (uniform). auto: uniform under --target-latency/"
                "--target-speedup (more accurate at equal latency in benchmarks/README.md), "
                "global otherwise.",
            ),
        ],
    )(f)


def int_list(value: str, option: str) -> list[int]:
    try:
        items = [int(v) for v in value.split(",")]
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a comma-separated list of integers", param_hint=option
        ) from None
    if min(items) < 1:
        raise click.BadParameter("values must be at least 1", param_hint=option)
    return items
