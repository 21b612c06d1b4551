"""One writer per output: an exclusive lock beside the file or folder a command writes.

Two runs into the same ``-o`` would otherwise corrupt each other silently: the second
deletes the first's ``OUT.partial``, and each skips the stages whose marker files the other
wrote. The lock is an OS file lock (``flock`` on POSIX, ``msvcrt.locking`` on Windows) on
``OUT.lock``, so the kernel releases it when its process dies, ``kill -9`` included: a lock
file left behind by a dead run is simply taken over. The file records the holder's pid and
start time for the message a second run gets, and is removed on release.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from compressor.errors import CompressorError
from compressor.utils import remove_dead_scratch, remove_temporaries


def lock_path(output: Path) -> Path:
    """The lock file of ``output`` (a file or a folder): ``OUTPUT.lock`` beside it."""
    return output.with_name(output.name + ".lock")


def _try_lock(f: IO[str]) -> bool:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        import msvcrt

        try:
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
        except OSError:
            return False
        return True
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["started"]))
        return f"pid {info['pid']}, started {started}"
    except (OSError, ValueError, KeyError, TypeError):
        return "pid unknown"


@contextlib.contextmanager
def exclusive(output: Path) -> Iterator[None]:
    """Hold the lock of ``output`` for the block; raise ``CompressorError`` at once when
    another live process holds it."""
    path = lock_path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _attempt in range(3):
        f = path.open("a+")
        if not _try_lock(f):
            f.close()
            raise CompressorError(
                f"another compressor run ({_holder(path)}) is writing {output}; wait for it "
                "to finish, or write elsewhere with -o"
            )
        try:
            same = os.fstat(f.fileno()).st_ino == os.stat(path).st_ino
        except FileNotFoundError:  # released and removed between open and lock
            same = False
        if same:
            break
        f.close()  # another run removed this file while we opened it: lock the new one
    else:  # pragma: no cover - three races in a row
        raise CompressorError(f"could not lock {path}; rerun")
    try:
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "started": time.time()}))
        f.flush()
        # what a killed writer of this output left: its temporaries, and its scratch
        # folders in the system temp folder
        remove_temporaries(output.parent, output.name)
        remove_dead_scratch()
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        f.close()
