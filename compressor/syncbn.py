"""``--sync-bn``: BatchNorm statistics over the global batch under torchrun, on any device.

Without it, each rank normalises its shard with the shard's own mean and variance (what
``DistributedDataParallel`` does with plain BatchNorm), so N processes do not take the
steps of one process with the same global batch. PyTorch's ``nn.SyncBatchNorm`` computes
the global statistics but runs on GPUs only, and the gloo runs that CI can afford are
CPU processes. So the normalisation layers are synchronised here, the same way on every
device: per channel, one all-reduce gives the global sum and count (the mean), a second
the global sum of squared deviations (the variance, two-pass for precision), and the
backward all-reduces the gradients of those sums, so that each rank's input receives
the gradient every rank's loss sends through the shared statistics. With the loop's
averaging of parameter gradients, a step equals one process's step on the whole batch
(``tests/test_distributed.py`` checks the weights).

The layers are synchronised only while the training loop runs (``synced``): their class
is swapped for a subclass that keeps every parameter, buffer and ``isinstance`` check,
and swapped back afterwards, so pruning, saving and export see plain BatchNorm layers.
In eval mode, and outside a process group of two or more, they are plain BatchNorm.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import nn


class _SumOverRanks(torch.autograd.Function):
    """All-reduce (sum) whose gradient is the all-reduced (summed) gradient."""

    @staticmethod
    def forward(ctx: object, t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        dist.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def _sum_over_ranks(t: torch.Tensor) -> torch.Tensor:
    out = _SumOverRanks.apply(t)
    assert isinstance(out, torch.Tensor)
    return out


class _Synced:
    """Mixin placed before a ``_BatchNorm`` subclass: training-mode forward over ranks."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn: nn.modules.batchnorm._BatchNorm = self  # type: ignore[assignment]
        if not (bn.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)  # type: ignore[misc]
        bn._check_input_dim(x)
        dims = [d for d in range(x.dim()) if d != 1]
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.float()
        count = torch.tensor([x.numel() // x.shape[1]], dtype=xf.dtype, device=x.device)
        total = _sum_over_ranks(torch.cat([xf.sum(dims), count]))
        n = total[-1]
        mean = total[:-1] / n
        centered = xf - mean.view(shape)
        var = _sum_over_ranks(centered.pow(2).sum(dims)) / n  # biased, as BatchNorm uses
        out = centered * torch.rsqrt(var + bn.eps).view(shape)
        if bn.affine:
            out = out * bn.weight.float().view(shape) + bn.bias.float().view(shape)
        if bn.track_running_stats and bn.running_mean is not None:
            with torch.no_grad():
                assert bn.num_batches_tracked is not None and bn.running_var is not None
                bn.num_batches_tracked.add_(1)
                m = bn.momentum
                factor = 1.0 / float(bn.num_batches_tracked) if m is None else m
                unbiased = var * (n / (n - 1).clamp(min=1))
                bn.running_mean.mul_(1 - factor).add_(mean.to(bn.running_mean.dtype), alpha=factor)
                bn.running_var.mul_(1 - factor).add_(
                    unbiased.to(bn.running_var.dtype), alpha=factor
                )
        return out.to(x.dtype)


class SyncedBatchNorm1d(_Synced, nn.BatchNorm1d):
    pass


class SyncedBatchNorm2d(_Synced, nn.BatchNorm2d):
    pass


class SyncedBatchNorm3d(_Synced, nn.BatchNorm3d):
    pass


_SYNCED: dict[type, type] = {
    nn.BatchNorm1d: SyncedBatchNorm1d,
    nn.BatchNorm2d: SyncedBatchNorm2d,
    nn.BatchNorm3d: SyncedBatchNorm3d,
}


@contextmanager
def synced(model: nn.Module) -> Iterator[int]:
    """Synchronise ``model``'s BatchNorm layers while inside; yields how many there are.
    Subclasses of BatchNorm other than the three plain ones are left as they are."""
    swapped = [m for m in model.modules() if type(m) in _SYNCED]
    for m in swapped:
        m.__class__ = _SYNCED[type(m)]
    try:
        yield len(swapped)
    finally:
        back = {v: k for k, v in _SYNCED.items()}
        for m in swapped:
            m.__class__ = back[type(m)]
