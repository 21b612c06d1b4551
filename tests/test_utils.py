"""Shared helpers: progress output in logs."""

from __future__ import annotations

import time

import pytest

from compressor.utils import progress_bar


def test_progress_in_a_log_is_plain_lines_every_few_seconds(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a terminal (CI, a log file): a line per interval, no carriage returns."""
    monkeypatch.setenv("COMPRESSOR_PROGRESS_SECONDS", "0.05")
    for _ in progress_bar(range(6), enabled=True, desc="epoch 1/1", leave=False):
        time.sleep(0.03)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert "\r" not in err and len(lines) >= 3
    assert all(line.startswith("epoch 1/1: ") for line in lines)
    assert lines[-1].startswith("epoch 1/1: 6/6 (100%)")
    for _ in progress_bar(range(3), enabled=False, desc="quiet"):
        pass
    assert capsys.readouterr().err == ""
