"""The ``compressor`` command line. Thin: parse options, build a config, call the library, print.

Only click and the standard library are imported at module level, so ``compressor --help``
answers without loading torch. User errors (``CompressorError``) become one line on stderr
and exit status 1; an interrupt exits with 130.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from compressor.bench.compare import BenchmarkConfig
from compressor.config import FINETUNE_EPOCHS, IMPORTANCES, REGULARIZE_EPOCHS
from compressor.errors import CompressorError
from compressor.version import __version__

EXIT_INTERRUPTED = 130
# Packages of the `full` extra; the base install (the benchmark runner's needs) lacks them.
_FULL_MODULES = {
    "torch",
    "torchvision",
    "onnx",
    "onnxscript",
    "torch_pruning",
    "fvcore",
    "PIL",
    "tqdm",
    "matplotlib",
}


def _one_line(message: str) -> str:
    """The user-facing part of an error message.

    An error raised in a DataLoader worker comes back with the worker's traceback folded
    into its message; the last line is the original message.
    """
    if "Original Traceback" in message:
        message = message.strip().splitlines()[-1]
        _, _, message = message.partition("CompressorError: ")
    return " ".join(message.split())


class _Command(click.Command):
    """Reports every missing required option and argument in one message (click stops at
    the first), naming --arch too when the model file is a bare state_dict."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if any(a in ("-h", "--help") for a in args):
            return super().parse_args(ctx, args)
        required = [p for p in self.params if p.required]
        for p in required:
            p.required = False
        try:
            rest = super().parse_args(ctx, args)
        finally:
            for p in required:
                p.required = True
        missing = [
            p.human_readable_name if isinstance(p, click.Argument) else "/".join(p.opts)
            for p in required
            if ctx.params.get(p.name or "") in (None, ())
        ]
        if missing:
            model = ctx.params.get("model") or ctx.params.get("arch_or_model")
            if "arch" in ctx.params and ctx.params["arch"] is None and model:
                from compressor.checkpoint import needs_arch

                if needs_arch(Path(model)):
                    missing.append(f"--arch ({model} holds a bare state_dict)")
            options_only = all(m.startswith("-") for m in missing)
            kind = (" option" if len(missing) == 1 else " options") if options_only else ""
            raise click.UsageError(f"Missing{kind}: {', '.join(missing)}", ctx)
        return rest


class _Group(click.Group):
    """Turns library errors into one clear line instead of a traceback."""

    command_class = _Command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CompressorError as e:
            from compressor.distributed import is_main
            from compressor.training import TrainingInterrupted

            if is_main() or _verbose(ctx):  # under torchrun every rank fails alike
                click.echo(f"Error: {_one_line(str(e))}", err=True)
            ctx.exit(EXIT_INTERRUPTED if isinstance(e, TrainingInterrupted) else 1)
        except KeyboardInterrupt:
            click.echo("Error: interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except ModuleNotFoundError as e:
            if e.name and e.name.split(".")[0] in _FULL_MODULES:
                click.echo(
                    f"Error: this command needs {e.name.split('.')[0]}, which is in the full install: "
                    "pip install 'compressor[full]'",
                    err=True,
                )
                ctx.exit(1)
            _internal_error(ctx, e)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except OSError as e:  # the file system said no: disk full, permissions, ...
            if _verbose(ctx):
                raise
            where = f" {e.filename}" if e.filename else ""
            click.echo(f"Error: {e.strerror or e}:{where}", err=True)
            ctx.exit(1)
        except Exception as e:
            _internal_error(ctx, e)


def _verbose(ctx: click.Context) -> bool:
    import sys

    args = [*sys.argv[1:], *ctx.args, *getattr(ctx, "_protected_args", [])]
    return "-v" in args or "--verbose" in args or bool(os.environ.get("COMPRESSOR_TRACEBACK"))


def _internal_error(ctx: click.Context, e: BaseException) -> None:
    """An error no input explains: one line, and the traceback saved to a file (printed
    with -v)."""
    import tempfile
    import time
    import traceback

    if _verbose(ctx):
        raise e
    path = Path(tempfile.gettempdir()) / f"compressor-error-{time.strftime('%Y%m%d-%H%M%S')}.txt"
    try:
        path.write_text("".join(traceback.format_exception(e)))
        where = f"the full traceback is in {path}"
    except OSError:
        where = "rerun with -v for the full traceback"
    click.echo(
        f"Error: internal error ({type(e).__name__}: {_one_line(str(e))[:200]}); this is a bug "
        f"in compressor, please report it: {where}",
        err=True,
    )
    ctx.exit(1)


@click.group(
    cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.version_option(__version__, "--version", prog_name="compressor")
def cli() -> None:
    """Compress trained CNN classifiers: structured-sparsity training, physical channel
    pruning, verified ONNX export and side-by-side latency measurement.

    Models: a torchvision state_dict (with --arch), a checkpoint dict, or a file written by
    compressor. Data: an ImageFolder, CIFAR-10/100 or MNIST directory, or the bundled
    example `mnist15k`. Nothing is downloaded.
    """


def main() -> None:
    from compressor.distributed import teardown

    try:
        cli(prog_name="compressor")
    finally:
        teardown()


# --------------------------------------------------------------------------- shared options


def _parse_size(value: str | None) -> tuple[int, ...] | None:
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


def _parse_floats(value: str | None) -> tuple[float, ...] | None:
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


def data_options(required: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def wrap(f: Callable[..., Any]) -> Callable[..., Any]:
        options = [
            click.option(
                "--data",
                required=required,
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
                default=0.1,
                show_default=True,
                help="Held-out fraction for a single-folder ImageFolder.",
            ),
            click.option("--batch-size", type=int, default=128, show_default=True),
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
        ]
        for opt in reversed(options):
            f = opt(f)
        return f

    return wrap


def runtime_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option(
        "--seed",
        type=int,
        default=0,
        show_default=True,
        help="Random seed (runs are deterministic on CPU).",
    )(f)
    f = click.option(
        "--device",
        default="auto",
        show_default=True,
        help="auto, cpu, cuda or cuda:N.",
    )(f)
    return f


def method_options(required: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def wrap(f: Callable[..., Any]) -> Callable[..., Any]:
        options = [
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
        ]
        for opt in reversed(options):
            f = opt(f)
        return f

    return wrap


def _method_options(kw: dict[str, Any]) -> dict[str, Any]:
    """Options from --method-config, then --set, then --lambda (later ones win)."""
    options: dict[str, Any] = {}
    path = kw.get("method_config")
    if path is not None:
        from compressor.config import read_options_file

        options.update(read_options_file(path))
    for item in kw.get("method_set") or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--set")
        options[key.strip()] = value.strip()
    lam = kw.get("lam")
    if lam is not None and str(lam).lower() != "auto":
        try:
            options["lam"] = float(lam)
        except ValueError:
            raise click.BadParameter(
                f"{lam!r} is neither `auto` nor a number", param_hint="--lambda"
            ) from None
    return options


def _auto_strength(kw: dict[str, Any], options: dict[str, Any]) -> bool:
    """Whether the strength is automatic: unless a number was given (``--lambda X``, or
    ``lam`` through --set or --method-config)."""
    return "lam" not in options and "lambda" not in options


sync_bn_option = click.option(
    "--sync-bn",
    is_flag=True,
    help="Under torchrun: BatchNorm statistics over the global batch, not each "
    "process's shard (any device; no effect in one process).",
)


def onnx_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """ONNX export settings shared by `export` and `compress`."""
    options = [
        click.option("--opset", type=int, default=17, show_default=True),
        click.option(
            "--simplify/--no-simplify",
            default=True,
            show_default=True,
            help="Simplify the graph with onnxslim when it removes nodes (not for weights over 1.9 GB).",
        ),
        click.option(
            "--tolerance",
            type=float,
            default=1e-4,
            show_default=True,
            help="ONNX parity tolerance: max abs difference relative to the output scale.",
        ),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


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

    def result(self, payload: dict[str, Any], render: Callable[[], None]) -> None:
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
            if category.__name__ == "UnreadableImages":  # ours: one line, not a source line
                click.echo(f"Warning: {message}", err=True)
            else:
                shown(message, category, *rest, **kw)

        with warnings.catch_warnings():
            warnings.showwarning = show
            from compressor.distributed import is_main

            console = Console(quiet=quiet, verbose=verbose, as_json=as_json, main=is_main())
            return f(*args, console=console, **kwargs)

    return wrapper


def _data_config(kw: dict[str, Any], *, augment: bool | None = None) -> Any:
    from compressor.config import DataConfig

    return DataConfig(
        data=kw["data"],
        input_size=_parse_size(kw["input_size"]),
        mean=_parse_floats(kw["mean"]),
        std=_parse_floats(kw["std"]),
        val_split=kw["val_split"],
        batch_size=kw["batch_size"],
        workers=kw["workers"],
        augment=augment,
        strict=kw["strict_data"],
    )


def _check_output(path: Path, force: bool) -> None:
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
def _output_dir(path: Path) -> Iterator[None]:
    """Create ``path``'s missing parent folders; remove them again if the command fails."""
    created = []
    parent = path.parent
    while not parent.exists():
        created.append(parent)
        parent = parent.parent
    for d in reversed(created):
        d.mkdir(exist_ok=True)  # under torchrun every rank gets here
    try:
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


def _print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console as RichConsole
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for i, c in enumerate(columns):
        numeric = all(_numeric(r[i]) for r in rows if i < len(r))
        table.add_column(c, justify="right" if i and numeric else "left", overflow="fold")
    for r in rows:
        table.add_row(*[str(v) for v in r])
    RichConsole(width=120).print(table)


# --------------------------------------------------------------------------- check-data


@cli.command("check-data")
@click.argument("data", metavar="DIR")
@click.option("--val-split", type=float, default=0.1, show_default=True)
@click.option(
    "--workers", type=int, default=None, help="Threads decoding files [default: up to 8]."
)
@output_options
@with_console
def check_data(data: str, console: Console, **kw: Any) -> None:
    """Decode every image file of DIR (an ImageFolder) and list those that cannot be read.

    `train`, `eval` and `compress` run the same check when they open an ImageFolder and skip
    what it finds (or stop, with --strict-data). Exits with status 1 if any file is bad.
    """
    import time

    from compressor.data import find_unreadable, list_image_files

    t0 = time.perf_counter()
    files = list_image_files(data, kw["val_split"])
    bad = find_unreadable(files, kw["workers"])
    seconds = time.perf_counter() - t0
    payload = {
        "data": data,
        "files": len(files),
        "unreadable": [{"path": p, "reason": why} for p, why in bad],
        "seconds": seconds,
    }

    def render() -> None:
        for p, why in bad:
            click.echo(f"{p}: {why}")
        click.echo(
            f"{len(files)} image files checked in {seconds:.1f}s "
            f"({len(files) / max(seconds, 1e-9):.0f}/s): "
            + (f"{len(bad)} cannot be read" if bad else "all readable"),
            err=bool(bad),
        )

    console.result(payload, render)
    if bad:
        raise click.exceptions.Exit(1)


# --------------------------------------------------------------------------- train


@cli.command()
@click.argument("arch_or_model")
@model_options
@data_options(required=True)
@click.option("--epochs", type=int, default=10, show_default=True)
@click.option("--optimizer", type=click.Choice(["sgd", "adamw"]), default="sgd", show_default=True)
@click.option(
    "--lr",
    type=float,
    default=None,
    help="Peak learning rate [default: 0.05 for sgd, 1e-3 for adamw].",
)
@click.option("--momentum", type=float, default=0.9, show_default=True)
@click.option("--weight-decay", type=float, default=5e-4, show_default=True)
@click.option(
    "--schedule",
    type=click.Choice(["cosine", "step", "constant"]),
    default="cosine",
    show_default=True,
)
@click.option(
    "--step-epochs",
    type=int,
    default=30,
    show_default=True,
    help="Step schedule: epochs between decays.",
)
@click.option("--warmup-epochs", type=float, default=0.0, show_default=True)
@click.option("--label-smoothing", type=float, default=0.0, show_default=True)
@click.option(
    "--augment/--no-augment",
    default=None,
    help="Random shifts (and flips where valid) [default: on from 10 epochs; over fewer "
    "they cost accuracy: 98.95% vs 99.30% for resnet18 on mnist15k in 5 epochs].",
)
@click.option("--amp/--no-amp", default=True, show_default=True, help="Mixed precision on CUDA.")
@sync_bn_option
@click.option(
    "--channels-last/--no-channels-last",
    default=True,
    show_default=True,
    help="NHWC memory format on CUDA.",
)
@method_options(required=False)
@runtime_options
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), required=True, help="Trained model file."
)
@click.option(
    "--weights",
    metavar="NAME|FILE",
    help="Start ARCH from pretrained weights: DEFAULT or a torchvision weights name "
    "(IMAGENET1K_V1, ...) read from the local torch hub cache (nothing is downloaded), or a "
    "state_dict file. The classifier head is replaced when the data has other classes.",
)
@click.option("--resume", is_flag=True, help="Continue an interrupted run of this same command.")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@output_options
@with_console
def train(arch_or_model: str, console: Console, **kw: Any) -> None:
    """Train ARCH_OR_MODEL (an architecture name, or a model file to fine-tune) on --data.

    Writes OUTPUT (a compressor model file with its preprocessing and class names) and
    OUTPUT's stem + .train.json (settings and per-epoch history). A resumable state
    (OUTPUT + .resume) is kept after every epoch and on Ctrl-C until training finishes.
    """
    from compressor import distributed
    from compressor.config import TrainConfig
    from compressor.operations import train_model

    output: Path = kw["output"]
    if not kw["resume"]:
        _check_output(output, kw["force"])
    # under torchrun: join the process group; each rank trains on its own device
    kw["device"] = distributed.setup(kw["device"], kw["batch_size"])
    config = TrainConfig.create(
        epochs=kw["epochs"],
        optimizer=kw["optimizer"],
        lr=kw["lr"],
        momentum=kw["momentum"],
        weight_decay=kw["weight_decay"],
        schedule=kw["schedule"],
        step_epochs=kw["step_epochs"],
        warmup_epochs=kw["warmup_epochs"],
        label_smoothing=kw["label_smoothing"],
        seed=kw["seed"],
        device=kw["device"],
        amp=kw["amp"],
        channels_last=kw["channels_last"],
        sync_bn=kw["sync_bn"],
    )
    method = None
    options = _method_options(kw)
    if str(kw.get("lam")).lower() == "auto":
        raise CompressorError(
            "--lambda auto holds a trained model's accuracy and runs in `compress`; "
            "`train` takes a number (default: the method's own)"
        )
    if kw["method"] is not None:
        from compressor.methods import get_method

        method = get_method(kw["method"], options)
    elif options:
        raise CompressorError("--lambda, --set and --method-config need --method")
    with _output_dir(output):
        result = train_model(
            arch_or_model,
            method=method,
            data=_data_config(kw, augment=kw["augment"]).for_epochs(kw["epochs"]),
            train=config,
            output=output,
            arch=kw["arch"],
            trust_pickle=kw["trust_pickle"],
            resume=kw["resume"],
            progress=console.progress,
            log=console.info,
            debug=console.debug,
            weights=kw["weights"],
        )
    hist = result["history"]
    last = hist[-1] if hist else None

    def render() -> None:
        if last is not None:
            top5 = f", top-5 {last['val_top5']:.2f}%" if last["val_top5"] is not None else ""
            test = result.get("test")
            test_text = f"; test top-1 {test['top1']:.2f}%" if test else ""
            click.echo(
                f"val top-1 {last['val_top1']:.2f}%{top5}{test_text} after {last['epoch']} epochs"
            )
        click.echo(f"wrote {output}")

    console.result(result, render)


# --------------------------------------------------------------------------- eval


@cli.command("eval")
@click.argument("model", type=click.Path(path_type=Path))
@model_options
@data_options(required=True)
@click.option(
    "--split",
    type=click.Choice(["val", "test", "train"]),
    default=None,
    help="One split [default: val and, where the data has one, test].",
)
@runtime_options
@output_options
@with_console
def eval_(model: Path, console: Console, **kw: Any) -> None:
    """Accuracy of MODEL on --data (top-1, and top-5 above 5 classes), on the validation
    split and the test split, each named.

    Where the data has a test split (IDX t10k-*, CIFAR test_batch, an ImageFolder test/),
    the validation split is held out from the training images (--val-split).

    MODEL may be an exported .onnx file: it then runs in onnxruntime (CPU) with the
    preprocessing its metadata records, so the figure is that of the file you ship."""
    from compressor.operations import evaluate_model, evaluate_onnx_file

    if model.suffix.lower() == ".onnx":
        result = evaluate_onnx_file(
            model,
            data=_data_config(kw, augment=False),
            split=kw["split"],
            progress=console.progress,
        )
    else:
        result = evaluate_model(
            model,
            data=_data_config(kw, augment=False),
            device=kw["device"],
            split=kw["split"],
            arch=kw["arch"],
            trust_pickle=kw["trust_pickle"],
            progress=console.progress,
        )

    def render() -> None:
        for name in result["splits"]:
            m = result[name]
            top5 = f"  top-5 {m['top5']:.2f}%" if m["top5"] is not None else ""
            held = (
                " held out from train"
                if name == "val" and result["val_held_out_from_train"]
                else ""
            )
            click.echo(
                f"{name}: top-1 {m['top1']:.2f}%{top5}  loss {m['loss']:.4f}  "
                f"({m['images']} images{held}, {result['input_size']})"
            )

    console.result(result, render)


# --------------------------------------------------------------------------- inspect


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@model_options
@click.option(
    "--input-size",
    metavar="S|HxW|CxHxW",
    help="Input size for MACs (default: recorded, else the architecture's).",
)
@output_options
@with_console
def inspect(model: Path, console: Console, **kw: Any) -> None:
    """Parameters, MACs (fvcore) and per-layer channels of MODEL.

    For a pruned model, each layer's channel count before pruning is shown too.
    """
    from compressor.analysis import human
    from compressor.operations import inspect_model

    result = inspect_model(
        model,
        input_size=_parse_size(kw["input_size"]),
        arch=kw["arch"],
        trust_pickle=kw["trust_pickle"],
    )

    def render() -> None:
        click.echo(
            f"{result['arch']} ({result['source_format']}): {human(result['params'])} parameters, "
            f"{human(result['macs'])} MACs at {'x'.join(map(str, result['input_size']))}, "
            f"{result['num_classes']} classes"
        )
        pruned = result["pruned"]
        columns = ["layer", "type", "in", "out", *(["out before"] if pruned else [])]
        columns += ["groups", "kernel", "params", "MACs"]
        rows = []
        for r in result["layers"]:
            before = [r.get("original_out_channels")] if pruned else []
            kernel = "x".join(map(str, r["kernel"])) or "-"
            rows.append(
                [
                    r["name"],
                    r["type"],
                    r["in_channels"],
                    r["out_channels"],
                    *before,
                    r["groups"],
                    kernel,
                    human(r["params"]),
                    human(r["macs"]),
                ]
            )
        _print_table("layers", columns, rows)

    console.result(result, render)


# --------------------------------------------------------------------------- methods


@cli.command()
@output_options
@with_console
def methods(console: Console) -> None:
    """The structured-sparsity methods, their papers and default hyperparameters."""
    from compressor.methods import describe_methods

    result = {"methods": describe_methods()}

    def render() -> None:
        rows = [
            [
                m["name"],
                ", ".join(f"{k}={v}" for k, v in m["defaults"].items()) or "-",
                ", ".join(f"{k}={v}" for k, v in m["selection"].items()),
                m["paper"],
            ]
            for m in result["methods"]
        ]
        _print_table("methods", ["name", "defaults", "selection", "paper"], rows)

    console.result(result, render)


# --------------------------------------------------------------------------- prune


def prune_options(f: Callable[..., Any]) -> Callable[..., Any]:
    options = [
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
            "--relative",
            is_flag=True,
            help="With --threshold: compare with each group's largest score.",
        ),
        click.option(
            "--round-to",
            type=int,
            default=8,
            show_default=True,
            help="Keep channel counts at multiples of N (8 measured fastest in onnxruntime on CPU).",
        ),
        click.option(
            "--max-layer-ratio",
            type=float,
            default=0.9,
            show_default=True,
            help="Never remove more than this fraction of a layer's channels.",
        ),
        click.option(
            "--allocation",
            type=click.Choice(["global", "uniform"]),
            default="global",
            show_default=True,
            help="How many channels each layer loses with --ratio/--target-macs: ranked "
            "across the whole model (global), or the same fraction of every layer (uniform).",
        ),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


def _prune_config(kw: dict[str, Any], importance: str = "l2") -> Any:
    from compressor.config import PruneConfig

    return PruneConfig(
        ratio=kw["ratio"],
        target_macs=kw["target_macs"],
        threshold=kw["threshold"],
        relative=kw["relative"],
        importance=importance,
        round_to=kw["round_to"],
        max_layer_ratio=kw["max_layer_ratio"],
        allocation=kw["allocation"],
    )


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@model_options
@click.option(
    "--input-size",
    metavar="S|HxW|CxHxW",
    help="Input size to trace at (default: recorded, else the architecture's).",
)
@prune_options
@click.option(
    "--importance",
    type=click.Choice(list(IMPORTANCES)),
    default="l2",
    show_default=True,
    help="Channel score: group L2 norm, group L1 norm, BatchNorm |gamma|, or group L2 norm "
    "with every BatchNorm folded into the layer before it.",
)
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), required=True, help="Pruned model file."
)
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@output_options
@with_console
def prune(model: Path, console: Console, **kw: Any) -> None:
    """Remove the lowest-magnitude channels of MODEL (no training) and save the smaller model.

    Channels are removed in coupled groups (residual additions, concatenations, depthwise
    convolutions stay consistent) and ranked globally. The output is a compressor model
    file that every command reads without flags.
    """
    from compressor.analysis import human
    from compressor.operations import prune_model_file

    output: Path = kw["output"]
    _check_output(output, kw["force"])
    config = _prune_config(kw, kw["importance"])
    with _output_dir(output):
        result = prune_model_file(
            model,
            config,
            output=output,
            input_size=_parse_size(kw["input_size"]),
            arch=kw["arch"],
            trust_pickle=kw["trust_pickle"],
        )

    def render() -> None:
        rows = [
            [r["name"], r["type"], r["before"], r["after"]]
            for r in result["layers"]
            if r["before"] != r["after"]
        ]
        if rows:
            _print_table("channels changed", ["layer", "type", "before", "after"], rows)
        click.echo(
            f"removed {result['removed_channels']} of {result['prunable_channels']} prunable channels "
            f"in {result['groups']} groups: params {human(result['params_before'])} -> {human(result['params_after'])}, "
            f"MACs {human(result['macs_before'])} -> {human(result['macs_after'])} "
            f"({result['macs_before'] / max(result['macs_after'], 1):.2f}x fewer) in {result['seconds']:.1f}s"
        )
        click.echo(f"wrote {output}")

    console.result(result, render)


# --------------------------------------------------------------------------- compress


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@model_options
@data_options(required=True)
@method_options(required=True)
@click.option(
    "--reg-epochs",
    type=int,
    default=REGULARIZE_EPOCHS,
    show_default=True,
    help="Epochs of training with the regularizer.",
)
@click.option(
    "--ft-epochs",
    type=int,
    default=FINETUNE_EPOCHS,
    show_default=True,
    help="Epochs of fine-tuning after pruning.",
)
@prune_options
@click.option("--optimizer", type=click.Choice(["sgd", "adamw"]), default="sgd", show_default=True)
@click.option(
    "--lr",
    type=float,
    default=None,
    help="Peak learning rate of the regularize stage [default: 0.01 for sgd, 1e-4 for adamw].",
)
@click.option(
    "--ft-lr",
    type=float,
    default=None,
    help="Peak learning rate of fine-tuning: a heavily pruned model is retrained "
    "[default: `train`'s, 0.05 for sgd, 1e-3 for adamw].",
)
@click.option("--momentum", type=float, default=0.9, show_default=True)
@click.option("--weight-decay", type=float, default=5e-4, show_default=True)
@click.option(
    "--augment/--no-augment",
    default=None,
    help="Random shifts (and flips where valid) [default: on when a stage has 10 epochs or more].",
)
@sync_bn_option
@click.option(
    "--distill",
    type=float,
    default=0.0,
    show_default=True,
    help="Fine-tuning learns from the original model's outputs too: the weight of that "
    "term in [0, 1] (knowledge distillation, temperature 4); 0: labels only.",
)
@click.option(
    "--max-drop",
    type=float,
    default=1.0,
    show_default=True,
    help="--lambda auto: the validation top-1 points the regularize stage may lose.",
)
@click.option(
    "--focus/--no-focus",
    default=True,
    show_default=True,
    help="--lambda auto with a ratio or MAC target: the penalty acts only on the channels "
    "the target would remove now (re-planned 8 times an epoch); --no-focus: everywhere.",
)
@click.option(
    "--early-prune/--no-early-prune",
    default=True,
    show_default=True,
    help="--lambda auto with a ratio or MAC target: end the regularize stage at an epoch's "
    "end when, at its rate, the target's channels would not be emptied by its last epoch; "
    "its remaining epochs go to fine-tuning.",
)
@onnx_options
@click.option(
    "--threads",
    type=int,
    default=1,
    show_default=True,
    help="onnxruntime threads for the latency comparison.",
)
@runtime_options
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), required=True, help="Output folder."
)
@click.option(
    "--force",
    is_flag=True,
    help="Replace an existing output folder (only once the new run completes).",
)
@click.option(
    "--resume", is_flag=True, help="Continue an interrupted run into the same output folder."
)
@output_options
@with_console
def compress(model: Path, console: Console, **kw: Any) -> None:
    """Train MODEL with a sparsity method, remove the channels it emptied, fine-tune,
    export a verified ONNX file and compare latency.

    Writes into OUTPUT: model.onnx, model.pt (compressor format), baseline.onnx (the
    latency reference), report.json, report.md, channels.png, training.png and
    config.json. The folder appears only when the run is complete (work happens in
    OUTPUT.partial/); after an interrupt, rerun with --resume. Selection: --ratio,
    --target-macs or --threshold, else the method's default (see `compressor methods`).
    """
    from compressor.config import TrainConfig
    from compressor.onnx_export import ExportConfig
    from compressor.pipeline import CompressConfig
    from compressor.pipeline import compress as run_compress
    from compressor.selection import method_prune_config

    if kw["threads"] < 1:
        raise click.BadParameter("must be at least 1", param_hint="--threads")
    from compressor import distributed

    output: Path = kw["output"]
    if output.exists() and not output.is_dir():
        raise CompressorError(f"{output} is a file; give a folder")
    prune = method_prune_config(
        kw["method"],
        ratio=kw["ratio"],
        target_macs=kw["target_macs"],
        threshold=kw["threshold"],
        relative=kw["relative"],
        round_to=kw["round_to"],
        max_layer_ratio=kw["max_layer_ratio"],
        allocation=kw["allocation"],
    )
    # under torchrun: join the process group; both training stages run data-parallel
    kw["device"] = distributed.setup(kw["device"], kw["batch_size"])

    def train_config(epochs: int, lr: float | None, stage: str, distill: float = 0.0) -> Any:
        return TrainConfig.create(
            stage=stage,
            epochs=epochs,
            distill=distill,
            optimizer=kw["optimizer"],
            lr=lr,
            momentum=kw["momentum"],
            weight_decay=kw["weight_decay"],
            seed=kw["seed"],
            device=kw["device"],
            sync_bn=kw["sync_bn"],
        )

    from compressor.strength import StrengthConfig

    options = _method_options(kw)
    auto = _auto_strength(kw, options)
    config = CompressConfig(
        method=kw["method"],
        method_options=options,
        strength=StrengthConfig(
            max_drop=kw["max_drop"], focus=kw["focus"], early_prune=kw["early_prune"]
        )
        if auto
        else None,
        data=_data_config(kw, augment=kw["augment"]).for_epochs(
            max(kw["reg_epochs"], kw["ft_epochs"])
        ),
        regularize=train_config(kw["reg_epochs"], kw["lr"], "regularize"),
        finetune=train_config(kw["ft_epochs"], kw["ft_lr"], "train", kw["distill"]),
        prune=prune,
        export=ExportConfig(opset=kw["opset"], simplify=kw["simplify"], tolerance=kw["tolerance"]),
        latency_threads=kw["threads"],
    )
    report = run_compress(
        model,
        output,
        config,
        arch=kw["arch"],
        trust_pickle=kw["trust_pickle"],
        resume=kw["resume"],
        force=kw["force"],
        progress=console.progress,
        log=console.info,
    )

    def render() -> None:
        from compressor.analysis import human

        b, c, lat = report["baseline"], report["compressed"], report["latency"]
        acc = "; ".join(
            f"{split} top-1 {b[f'{split}_top1']:.2f}% -> {c[f'{split}_top1']:.2f}%"
            for split in ("test", "val")
            if b.get(f"{split}_top1") is not None
        )
        click.echo(
            f"{acc}; params {human(b['params'])} -> "
            f"{human(c['params'])}, MACs {human(b['macs'])} -> {human(c['macs'])} "
            f"({b['macs'] / max(c['macs'], 1):.2f}x fewer), latency {lat['baseline_ms']:.3f} -> {lat['compressed_ms']:.3f} ms "
            f"({lat['speedup']:.2f}x, batch 1, {lat['threads']} thread)"
            + (
                ", peak memory {:.1f} -> {:.1f} MB".format(*lat["memory_mb"])
                if lat.get("memory_mb")
                else ""
            )
        )
        click.echo(f"wrote {output}/ (report.md, report.json, model.onnx, model.pt)")

    console.result(report, render)


# --------------------------------------------------------------------------- export


@cli.command("export")
@click.argument("model", type=click.Path(path_type=Path))
@model_options
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), required=True, help="ONNX file to write."
)
@click.option(
    "--input-size",
    metavar="S|HxW|CxHxW",
    help="Input size (default: recorded, else the architecture's).",
)
@onnx_options
@click.option(
    "--data",
    metavar="DIR|mnist15k",
    help="Real images for the parity check (validation split); also records their preprocessing.",
)
@click.option(
    "--verify/--no-verify",
    default=True,
    show_default=True,
    help="Fail when onnxruntime differs from PyTorch beyond --tolerance.",
)
@click.option(
    "--int8",
    is_flag=True,
    help="Also write a static INT8 model (QDQ, per-channel weights): OUTPUT stem + .int8.onnx.",
)
@click.option(
    "--calib-data",
    metavar="DIR|mnist15k",
    help="Data whose training split calibrates --int8 and whose validation split measures its accuracy.",
)
@click.option("--calib-samples", type=int, default=256, show_default=True)
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
@output_options
@with_console
def export_(model: Path, console: Console, **kw: Any) -> None:
    """Export MODEL to ONNX (dynamic batch, input `input`, output `logits`) and verify it.

    The file's metadata records input_shape, mean, std, class_names and the architecture
    (plus compression figures for models from `compress`). onnx.checker must pass, and
    onnxruntime's outputs are compared with PyTorch's on random (and, with --data, real)
    inputs. If the TorchScript exporter rejects an operator, the dynamo exporter is used.
    """
    from compressor.config import DataConfig
    from compressor.onnx_export import ExportConfig
    from compressor.operations import export_model_file

    output: Path = kw["output"]
    _check_output(output, kw["force"])
    if kw["int8"]:
        _check_output(output.with_name(output.stem + ".int8.onnx"), kw["force"])
    if kw["int8"] and not kw["calib_data"]:
        raise click.UsageError("--int8 needs --calib-data")
    if kw["calib_samples"] < 1:
        raise click.BadParameter("must be at least 1", param_hint="--calib-samples")
    config = ExportConfig(
        opset=kw["opset"], simplify=kw["simplify"], verify=kw["verify"], tolerance=kw["tolerance"]
    )
    with _output_dir(output):
        result = export_model_file(
            model,
            output=output,
            config=config,
            data=DataConfig(kw["data"]) if kw["data"] else None,
            int8=kw["int8"],
            calib_data=DataConfig(kw["calib_data"]) if kw["calib_data"] else None,
            calib_samples=kw["calib_samples"],
            input_size=_parse_size(kw["input_size"]),
            arch=kw["arch"],
            trust_pickle=kw["trust_pickle"],
            log=console.info,
        )

    def render() -> None:
        click.echo(
            f"wrote {output} ({result['size_bytes'] / 1e6:.2f} MB, opset {result['opset']}, "
            f"{result['exporter']} exporter, {result['nodes']} nodes)"
        )
        for note in result["notes"]:
            click.echo(f"  {note}")
        for p in result["parity"]:
            click.echo(
                f"  parity on {p['samples']} {p['inputs']} inputs: max abs diff {p['max_abs_diff']:.2e} "
                f"({p['rel_diff']:.2e} of the output scale), top-1 agreement {p['top1_agreement']:.1f}%"
            )
        q = result.get("int8")
        if q:
            click.echo(
                f"wrote {q['path']} ({q['size_bytes'] / 1e6:.2f} MB vs {q['fp32_size_bytes'] / 1e6:.2f} MB): "
                f"top-1 {q['accuracy_fp32']:.2f}% -> {q['accuracy_int8']:.2f}% on {q['eval_images']} {q['eval_split']} images, "
                f"latency {q['latency_fp32_ms']:.2f} -> {q['latency_int8_ms']:.2f} ms "
                f"({q['speedup']:.2f}x, batch 1, 1 thread)"
            )

    console.result(result, render)


# --------------------------------------------------------------------------- benchmark


def _int_list(value: str, option: str) -> list[int]:
    try:
        items = [int(v) for v in value.split(",")]
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a comma-separated list of integers", param_hint=option
        ) from None
    if min(items) < 1:
        raise click.BadParameter("values must be at least 1", param_hint=option)
    return items


@cli.command()
@click.argument("models", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--threads",
    default="1",
    show_default=True,
    help="Comma-separated intra-op thread counts, e.g. 1,2,4.",
)
@click.option("--batch", default="1", show_default=True, help="Comma-separated batch sizes.")
@click.option(
    "--provider",
    default=BenchmarkConfig.provider,
    show_default=True,
    help="onnxruntime providers, comma-separated (cpu, cuda); auto: CPU, plus CUDA when present.",
)
@click.option(
    "--profile",
    type=click.Choice(["edge-1core", "edge-2core", "edge-4core"]),
    help="Pin to N cores, N threads, sequential execution.",
)
@click.option(
    "--min-runs", type=click.IntRange(min=1), default=BenchmarkConfig.min_runs, show_default=True
)
@click.option(
    "--min-seconds",
    type=click.FloatRange(min=0.0),
    default=BenchmarkConfig.min_seconds,
    show_default=True,
    help="Measure at least this long per model and setting.",
)
@click.option(
    "--max-seconds",
    type=click.FloatRange(min=0.0),
    default=BenchmarkConfig.max_seconds,
    show_default=True,
    help="...and past the minimum only until --precision is reached, at most this long.",
)
@click.option(
    "--precision",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    default=BenchmarkConfig.precision,
    show_default=True,
    help="Target relative standard error of each p50 (from per-round medians).",
)
@click.option(
    "--input-shape",
    metavar="C,H,W",
    help="The input's dimensions after the batch, for ONNX files that leave them open.",
)
@click.option(
    "--memory/--no-memory",
    default=BenchmarkConfig.memory,
    show_default=True,
    help="Peak RSS growth of an isolated process per model.",
)
@click.option(
    "--markdown",
    "markdown_path",
    type=click.Path(path_type=Path),
    help="Also write the table as markdown.",
)
@click.option(
    "--chart", "chart_path", type=click.Path(path_type=Path), help="Also write a PNG chart."
)
@click.option(
    "--remote",
    metavar="USER@HOST",
    help="Run on a device over SSH (it needs python3, numpy and onnxruntime).",
)
@click.option("--port", type=int, help="SSH port for --remote.")
@click.option(
    "--emit-runner",
    type=click.Path(path_type=Path),
    metavar="DIR",
    help="Write the standalone runner into DIR and exit.",
)
@output_options
@with_console
def benchmark(
    models: tuple[Path, ...],
    console: Console,
    *,
    threads: str,
    batch: str,
    provider: str,
    profile: str | None,
    min_runs: int,
    min_seconds: float,
    max_seconds: float,
    precision: float,
    input_shape: str | None,
    memory: bool,
    markdown_path: Path | None,
    chart_path: Path | None,
    remote: str | None,
    port: int | None,
    emit_runner: Path | None,
) -> None:
    """Latency (p50/p90/p99/mean), throughput and peak memory of ONNX models, measured
    interleaved so that their ratios hold on a noisy machine; `.pt` models add PyTorch eager
    latency for reference.

    The measuring runner needs only numpy and onnxruntime: --emit-runner DIR writes it as
    one file for a device, and --remote USER@HOST runs it there over SSH.
    """
    from compressor.bench import compare

    if emit_runner is not None:
        target = compare.emit_runner(emit_runner)
        click.echo(
            f"wrote {target} (run: python3 {target.name} MODEL.onnx --json; needs numpy and onnxruntime)"
        )
        return
    if not models:
        raise click.UsageError("give at least one model (.onnx or .pt)")
    config = BenchmarkConfig(
        threads=tuple(_int_list(threads, "--threads")),
        batches=tuple(_int_list(batch, "--batch")),
        provider=provider,
        profile=profile,
        min_runs=min_runs,
        min_seconds=min_seconds,
        max_seconds=max_seconds,
        precision=precision,
        input_shape=tuple(_int_list(input_shape, "--input-shape")) if input_shape else None,
        memory=memory,
        remote=remote,
        port=port,
    )
    result = compare.benchmark(list(models), config, log=console.info)
    for w in result.get("warnings", []):
        click.echo(f"Warning: {w}", err=True)
    if markdown_path:
        from compressor.utils import atomic_write_bytes

        atomic_write_bytes(markdown_path, compare.markdown(result).encode())
    if chart_path:
        compare.chart(result["results"], chart_path, result["models"])

    def render() -> None:
        for title, headers, rows in compare.tables(result):
            _print_table(title, headers, rows)

    console.result(result, render)


if __name__ == "__main__":  # pragma: no cover
    main()
