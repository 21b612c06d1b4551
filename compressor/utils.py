"""Small helpers shared by the pipeline steps: atomic files, devices, seeds, hashing."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from compressor.errors import CompressorError, WriteError

if TYPE_CHECKING:
    import torch


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds.

    Readers therefore see either the old file or the complete new one, never a partial
    write, and an error or interrupt leaves nothing behind.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise CompressorError(f"output directory {str(parent)!r} does not exist or is not a folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    except OSError as e:
        raise CompressorError(f"cannot write in {str(parent)!r}: {e.strerror}") from e
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; outputs get normal permissions
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as e:
        raise write_failure(path, e) from e
    except RuntimeError as e:  # torch.save reports a failed write as its own RuntimeError
        if "PytorchStreamWriter" not in str(e) and "inline_container" not in str(e):
            raise
        raise write_failure(path, e) from e
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_failure(path: Path, error: BaseException) -> WriteError:
    """One line for a write of ``path`` that the file system refused: where, the OS's
    reason (torch's own write error read as one), and the free space when it is low."""
    reason = getattr(error, "strerror", None) or "the file write failed"
    parent = Path(path).parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    try:
        free = shutil.disk_usage(parent).free
    except OSError:
        free = None
    low = f" ({free / 1e6:.1f} MB free on that disk)" if free is not None and free < 2**26 else ""
    return WriteError(f"cannot write {path}: {reason}{low}; free space and rerun")


def scratch_dir(path: Path) -> tempfile.TemporaryDirectory[str]:
    """A temporary folder beside ``path`` (``.NAME.<random>.tmp``), for the intermediate
    files of writing it: in the run's own folder, never the system temp folder, and named
    so that ``remove_temporaries`` clears what a killed run left."""
    path = Path(path)
    return tempfile.TemporaryDirectory(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)


def remove_temporaries(folder: Path, name: str = "*") -> list[Path]:
    """Delete the temporary files and folders that ``atomic_path`` and ``scratch_dir``
    make in ``folder`` for outputs called ``name`` (a killed run leaves them); only call
    it while holding the output's lock. Returns what went."""
    gone = []
    for tmp in Path(folder).glob(f".{name}.*.tmp"):
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        gone.append(tmp)
    return gone


SCRATCH_PREFIX = "compressor-"


def system_scratch() -> tempfile.TemporaryDirectory[str]:
    """A temporary folder in the system temp folder, named ``compressor-<pid>-<random>``
    so that ``remove_dead_scratch`` can clear it after this process is killed."""
    return tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-")


def remove_dead_scratch() -> list[Path]:
    """Delete the ``system_scratch`` folders whose process is gone (a ``kill -9`` leaves
    them); a live process's folders, and anything else in the temp folder, stay."""
    gone = []
    for tmp in Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*-*"):
        pid_text = tmp.name[len(SCRATCH_PREFIX) :].split("-", 1)[0]
        if not tmp.is_dir() or tmp.is_symlink() or not pid_text.isdigit():
            continue
        if _alive(int(pid_text)):
            continue
        shutil.rmtree(tmp, ignore_errors=True)
        gone.append(tmp)
    return gone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process, or a platform without signal 0
        return True
    return True


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_with(path: Path, writer: Callable[[IO[bytes]], None]) -> None:
    """Call ``writer`` on a binary file object; the result replaces ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        writer(f)
        f.flush()
        os.fsync(f.fileno())


def md5sum(path: Path) -> str:
    """The hex md5 digest of a file."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; an unavailable CUDA is an error."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CompressorError(f"--device {name} requested but CUDA is not available here")
    return torch.device(name)


def mix_seed(*parts: int) -> int:
    """A 63-bit seed derived deterministically from integers (seed, epoch, step, ...)."""
    h = hashlib.blake2b(digest_size=8)
    for p in parts:
        h.update(int(p).to_bytes(8, "little", signed=True))
    return int.from_bytes(h.digest(), "little") & ((1 << 63) - 1)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch.

    CPU kernels are deterministic for a fixed thread count, so nothing else is needed there
    (``torch.use_deterministic_algorithms`` would cost ~2 s of imports for no gain). CUDA
    runs are reproducible only up to cuDNN's algorithm choice.
    """
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


class _LineWriter:
    """A file for tqdm in a log (not a terminal): each refresh becomes one plain line."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, s: str) -> None:
        text = s.replace("\r", "").rstrip()
        if text:
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(iterable: Any = None, *, enabled: bool, **kwargs: Any) -> Any:
    """A tqdm bar on a terminal; in a log or CI, one line every
    ``$COMPRESSOR_PROGRESS_SECONDS`` (10) seconds instead of silence."""
    import sys

    from tqdm.auto import tqdm

    if not enabled:
        return tqdm(iterable, disable=True, **kwargs)
    if sys.stderr.isatty():
        return tqdm(iterable, **kwargs)
    seconds = float(os.environ.get("COMPRESSOR_PROGRESS_SECONDS", "10"))
    return tqdm(
        iterable,
        file=_LineWriter(sys.stderr),
        mininterval=seconds,
        maxinterval=seconds,
        delay=seconds,  # a step shorter than that prints nothing
        miniters=1,
        bar_format="{desc}: {n_fmt}/{total_fmt} ({percentage:.0f}%) [{elapsed}<{remaining}, {rate_fmt}]",
        **kwargs,
    )


def epochs_text(n: int, word: str = "") -> str:
    """``1 epoch``, ``2 epochs``; with ``word``: ``other epoch``, ``other 2 epochs``."""
    if word:
        return f"{word} epoch" if n == 1 else f"{word} {n} epochs"
    return f"{n} epoch" if n == 1 else f"{n} epochs"
