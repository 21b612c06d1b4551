"""`compressor check-data`."""

from __future__ import annotations

import click

from compressor.cli.app import cli
from compressor.cli.options import Console, output_options, with_console
from compressor.config import DataConfig


@cli.command("check-data")
@click.argument("data", metavar="DIR")
@click.option("--val-split", type=float, default=DataConfig.val_split, show_default=True)
@click.option(
    "--workers", type=int, default=None, help="Threads decoding files [default: up to 8]."
)
@output_options
@with_console
def check_data(data: str, *, val_split: float, workers: int | None, console: Console) -> None:
    """Decode every image file of DIR (an ImageFolder) and list those that cannot be read.

    `train`, `eval` and `compress` run the same check when they open an ImageFolder and skip
    what it finds (or stop, with --strict-data). Exits with status 1 if any file is bad.
    """
    import time

    from compressor.data import find_unreadable, image_files_and_links
    from compressor.schema import stamp

    t0 = time.perf_counter()
    files, links = image_files_and_links(data, val_split)
    bad = find_unreadable(files, workers)
    seconds = time.perf_counter() - t0
    payload = stamp(
        "check-data",
        {
            "data": data,
            "files": len(files),
            "unreadable": [{"path": p, "reason": why} for p, why in bad],
            # a loop, or a second path to a folder or file already read: each is read once
            "skipped_links": links,
            "seconds": seconds,
        },
    )

    def render() -> None:
        for p, why in bad:
            click.echo(f"{p}: {why}")
        if links:
            click.echo(
                f"{len(links)} symbolic links not followed (a loop, or a second path to a "
                f"folder or file already read; each is read once): {', '.join(links[:5])}"
                + (" ..." if len(links) > 5 else "")
            )
        click.echo(
            f"{len(files)} image files checked in {seconds:.1f}s "
            f"({len(files) / max(seconds, 1e-9):.0f}/s): "
            + (f"{len(bad)} cannot be read" if bad else "all readable"),
            err=bool(bad),
        )

    console.result(payload, render)
    if bad:
        raise click.exceptions.Exit(1)
