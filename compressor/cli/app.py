"""The click group, the entry point and how errors reach the user: a ``CompressorError`` is one
line on stderr and exit status 1, an interrupt exits with 130, anything else is an internal
error with its traceback in a file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

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
            where = f": {e.filename}" if e.filename else " (the file system refused a write)"
            click.echo(
                f"Error: {e.strerror or e}{where}; free space or fix the cause and rerun", err=True
            )
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
