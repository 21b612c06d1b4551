"""The README and the CLI stay in step: every option that a `compressor COMMAND ...` line of
README.md or docs/*.md names is an option of that command."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from compressor.cli import cli

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# `compressor COMMAND ...` in a code span or a code block, up to the span's or line's end
LINE = re.compile(r"compressor ([a-z][a-z-]*)(.*)")


def _options(command: click.Command) -> set[str]:
    names = {"--help", "-h"}
    for p in command.params:
        names.update(p.opts)
        names.update(p.secondary_opts)
    return names


def _code(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of every inline code span and every line of a fenced block."""
    out, fenced = [], False
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        if text.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            out.append((number, text))
        else:
            out += [(number, span) for span in re.findall(r"`([^`]+)`", text)]
    return out


def _uses() -> list[tuple[str, int, str, str]]:
    """(file, line number, command, option) for every option a doc line gives a command."""
    found = []
    for path in DOCS:
        for number, text in _code(path):
            for match in LINE.finditer(text):
                name, rest = match.group(1), match.group(2)
                if name not in cli.commands:
                    continue
                rest = rest.split("&&")[0]
                for option in re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", rest):
                    found.append((path.name, number, name, option))
    return found


USES = _uses()


def test_the_docs_give_commands_options() -> None:
    assert len(USES) > 50  # the walk finds the command lines of README.md and docs/


@pytest.mark.parametrize(
    ("where", "command", "option"),
    sorted({(f"{f}:{n}", c, o) for f, n, c, o in USES}),
)
def test_every_documented_option_exists(where: str, command: str, option: str) -> None:
    assert option in _options(cli.commands[command]), f"{where}: {command} has no {option}"
