"""Data-parallel training under ``torchrun`` (one process per device, gloo or NCCL).

``torchrun --nproc-per-node N -m compressor train ...`` starts N copies of the command.
Each copy finds its rank in the environment torchrun sets (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) and joins one process group: NCCL when
the run uses CUDA, gloo on the CPU. Then every global batch of ``--batch-size`` images is
split into N equal shards, one per rank, and after each backward the gradients are
averaged over the ranks, so that a step sees the whole global batch, as in one process.

What DistributedDataParallel does, done by the loop itself: a method's penalty has
parameter terms (the same on every rank: averaging leaves them as they are) and feature
terms (computed on the local shard: averaging gives the global batch's), the focused
penalty needs the loss's gradient apart from the penalty's, and some methods add
gradients by hand after the backward; ``DistributedDataParallel`` reduces inside one
backward per forward and would reduce the hand-added gradients twice or not at all. So
the loop averages the finished gradients (one flat all-reduce per step), then averages
the normalisation layers' running statistics (which each rank updates from its own
shard), so that every rank holds the same weights and buffers after every step: the
evaluations, the ``--lambda auto`` decisions, l0sgl's auxiliary variables and HGS's
scores come out the same on every rank without further messages. BatchNorm normalises
each shard with the shard's statistics, or with the global batch's under ``--sync-bn``
(``compressor.syncbn``, which works on CPUs too, unlike PyTorch's ``SyncBatchNorm``).

Only rank 0 prints and writes files; the others wait for it where they read what it wrote.
A user error (``CompressorError``) is printed by rank 0 only: the ranks run the same
checks on the same inputs (``-v`` prints every rank's).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from compressor.errors import CompressorError

if TYPE_CHECKING:
    import torch
    from torch import nn


def requested() -> bool:
    """Whether this process was started by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    """Whether a process group is up. Never without torch loaded: nothing could have started
    one, and `compressor benchmark` runs where torch is not installed."""
    if "torch" not in sys.modules:
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def world() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if active() else 1


def rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if active() else 0


def is_main() -> bool:
    """True in a single process and on rank 0."""
    return int(os.environ.get("RANK", "0")) == 0 if not active() else rank() == 0


def setup(device: str, batch_size: int | None = None) -> str:
    """Join the process group torchrun describes; returns the device this rank uses
    (``cuda:LOCAL_RANK`` under CUDA). A no-op outside torchrun.

    What every rank would refuse alike is checked before joining (and before any data is
    read), so that each rank fails at once with the same message, which only rank 0
    prints (``cli``): ``batch_size``, the global batch, must split into equal shards."""
    if not requested() or active():
        return device
    import torch
    import torch.distributed as dist

    n = int(os.environ["WORLD_SIZE"])
    if batch_size is not None and batch_size % n:
        raise CompressorError(
            f"--batch-size {batch_size} does not split into {n} processes; use a multiple of {n}"
        )
    if not dist.is_available():
        raise CompressorError("this PyTorch build has no torch.distributed")
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", str(local + 1)))
        if per_node > torch.cuda.device_count():  # the same verdict on every rank
            raise CompressorError(
                f"{per_node} processes on this machine but {torch.cuda.device_count()} "
                "GPUs visible; lower --nproc-per-node"
            )
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    import datetime

    # the other ranks wait while rank 0 alone scores and prunes (compress): minutes on
    # large models, more than the default 10 minutes of NCCL on very large ones
    dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(hours=2))
    return device


def teardown() -> None:
    """Leave the process group, if this process joined one."""
    import sys

    dist = sys.modules.get("torch.distributed")  # never import torch just to check
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    import torch.distributed as dist

    if active():
        dist.barrier()


def shard(batches: list[list[int]], global_batch: int) -> list[list[int]]:
    """This rank's part of every global batch (ranks take interleaved positions)."""
    n = world()
    if n == 1:
        return batches
    if global_batch % n:
        raise CompressorError(
            f"--batch-size {global_batch} does not split into {n} processes; use a multiple of {n}"
        )
    r = rank()
    return [b[r::n] for b in batches]


def _average(tensors: Iterable[torch.Tensor]) -> None:
    import torch
    import torch.distributed as dist

    items = [t for t in tensors if t is not None]
    if not items or world() == 1:
        return
    # one flat message per dtype and device
    buckets: dict[tuple[Any, Any], list[torch.Tensor]] = {}
    for t in items:
        buckets.setdefault((t.dtype, t.device), []).append(t)
    for group in buckets.values():
        flat = torch.cat([t.reshape(-1) for t in group])
        dist.all_reduce(flat)
        flat /= world()
        offset = 0
        for t in group:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()


def average_gradients(model: nn.Module, extra: Iterable[torch.Tensor | None] = ()) -> None:
    """Average every parameter's gradient (and the ``extra`` tensors) over the ranks."""
    import torch

    with torch.no_grad():
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        _average([*grads, *(t for t in extra if t is not None)])


def broadcast_model(model: nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank."""
    import torch
    import torch.distributed as dist

    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            dist.broadcast(t.data, src=0)


def average_buffers(model: nn.Module) -> None:
    """Average the floating-point buffers (normalisation running statistics)."""
    import torch

    with torch.no_grad():
        _average([b for b in model.buffers() if b.is_floating_point()])


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` is true on any rank."""
    import torch
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0], device=_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def sum_over_ranks(values: list[float]) -> list[float]:
    """Every rank's ``values`` added up, element by element."""
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=_device())
    dist.all_reduce(t)
    return [float(v) for v in t.tolist()]


def _device() -> torch.device:
    """Where this backend's messages live: the rank's GPU for NCCL, else the CPU."""
    import torch
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_equal(value: float) -> bool:
    """Whether ``value`` is the same on every rank (a check, for tests and asserts)."""
    import torch
    import torch.distributed as dist

    if world() == 1:
        return True
    t = torch.tensor([value, -value], dtype=torch.float64, device=_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t[0]) == value and float(-t[1]) == value
