"""The fine-tuning loop and evaluation.

Reproducibility: every random choice of a step (batch order, augmentation, dropout) is
drawn from generators seeded by ``(seed, epoch, step)``, never from leftover global state.
An interrupted run therefore resumes at the exact step where it stopped and ends with the
same weights as an uninterrupted one (CPU, same settings).

Interruption: SIGINT or SIGTERM finishes the current step, writes a resumable state
(atomically) and raises ``TrainingInterrupted``. A resumable state is also written at the
end of every epoch.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compressor.config import DataConfig, TrainConfig, changed_settings, to_dict
from compressor.errors import CompressorError
from compressor.evaluation import evaluate
from compressor.outputs import split_outputs
from compressor.utils import epochs_text, mix_seed

if TYPE_CHECKING:
    import torch
    from torch import nn

    from compressor.data import DataBundle
    from compressor.methods.base import Regularizer
    from compressor.strength import AutoStrength

STATE_FORMAT = "compressor-train-state"
# Settings that must not change between an interrupted run and its resumption.
_RESUME_KEYS = (
    "epochs",
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "schedule",
    "step_epochs",
    "gamma",
    "warmup_epochs",
    "label_smoothing",
    "distill",
    "temperature",
    "seed",
)


class TrainingInterrupted(CompressorError):
    """Raised after a signal stopped training and a resumable state was written."""


@dataclass
class EpochStats:
    epoch: int
    lr: float
    train_loss: float
    train_penalty: float
    train_top1: float
    val_loss: float
    val_top1: float
    val_top5: float | None
    seconds: float
    images_per_s: float
    strength: float | None = None  # the penalty's multiplier at the end of the epoch


@dataclass
class TrainResult:
    history: list[EpochStats] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "history": [asdict(h) for h in self.history]}


def task_loss(
    logits: torch.Tensor,
    aux: list[torch.Tensor],
    y: torch.Tensor,
    config: TrainConfig,
    teacher_logits: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy (auxiliary heads weighted 0.3), blended with distillation from
    ``teacher_logits`` when ``config.distill`` > 0: ``(1 - a) * CE + a * T^2 *
    KL(softmax(t / T) || softmax(s / T))`` (Hinton et al. 2015; T^2 keeps the soft term's
    gradient on the scale of the hard one's)."""
    import torch.nn.functional as F

    loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
    for a in aux:
        loss = loss + 0.3 * F.cross_entropy(a, y, label_smoothing=config.label_smoothing)
    if teacher_logits is None or config.distill <= 0:
        return loss
    t = config.temperature
    soft = F.kl_div(
        F.log_softmax(logits.float() / t, dim=1),
        F.log_softmax(teacher_logits.float() / t, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return (1 - config.distill) * loss + config.distill * t * t * soft


def _lr_factor(config: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    total = max(1, config.epochs * steps_per_epoch)
    warmup = int(config.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if config.schedule == "cosine":
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        if config.schedule == "step":
            return config.gamma ** ((step // steps_per_epoch) // config.step_epochs)
        return 1.0

    return factor


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov off) or AdamW; no weight decay on biases and norm scales."""
    import torch

    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    return torch.optim.AdamW(groups, lr=config.lr)


class _StopFlag:
    """Turns SIGINT/SIGTERM into a flag the loop polls; a second signal aborts at once."""

    def __init__(self) -> None:
        self.signal: int | None = None

    @contextlib.contextmanager
    def installed(self) -> Iterator[_StopFlag]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum: int, frame: Any) -> None:
            if self.signal is not None:  # second signal: stop now
                signal.signal(signum, signal.SIG_DFL)
                raise KeyboardInterrupt
            self.signal = signum

        for s in previous:
            signal.signal(s, handler)
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


def _rng_state() -> dict[str, Any]:
    import random

    import numpy as np
    import torch

    _, keys, pos, *_ = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()[1]),
        "numpy": torch.from_numpy(np.asarray(keys).astype("int64")),
        "numpy_pos": int(pos),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    import random

    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    np.random.set_state(
        ("MT19937", state["numpy"].numpy().astype("uint32"), state["numpy_pos"], 0, 0.0)
    )


def load_train_state(path: Path) -> dict[str, Any]:
    """Read a resumable state written by ``fit`` (weights only, no code)."""
    import torch

    if not path.is_file():
        raise CompressorError(f"no resumable state at {path}; nothing to resume")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CompressorError(f"resumable state {path} is unreadable: {e}") from e
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CompressorError(f"{path} is not a compressor resumable state")
    return state


def _backward_apart(
    scaler: Any, model: nn.Module, loss: torch.Tensor, pen: torch.Tensor, focus: dict
) -> dict[str, torch.Tensor | None]:
    """Backward of the loss, then of the penalty; returns the loss's own gradients of the
    parameters in ``focus`` (still scaled by the AMP scaler)."""
    scaler.scale(loss).backward(retain_graph=pen.requires_grad)
    grads = {
        n: (p.grad.detach().clone() if p.grad is not None else None)
        for n, p in model.named_parameters()
        if n in focus
    }
    if pen.requires_grad:
        scaler.scale(pen).backward()
    return grads


def _keep_focused(
    model: nn.Module, loss_grads: dict[str, torch.Tensor | None], focus: dict, scaler: Any
) -> None:
    """Keep the penalty's gradient (also what ``after_backward`` added) only on the
    entries ``focus`` marks: ``grad = loss_grad + mask * (grad - loss_grad)``."""
    import torch

    inv = 1.0 / scaler.get_scale() if scaler.is_enabled() else 1.0
    with torch.no_grad():
        for n, p in model.named_parameters():
            mask = focus.get(n)
            if mask is None or p.grad is None:
                continue
            base = loss_grads.get(n)
            base = torch.zeros_like(p.grad) if base is None else base * inv
            p.grad.copy_(torch.where(mask.to(p.grad.device), p.grad, base))


def _calibrate(
    strength: AutoStrength,
    model: nn.Module,
    regularizer: Regularizer,
    bundle: DataBundle,
    transform: Any,
    features: dict[str, torch.Tensor],
    config: TrainConfig,
    say: Callable[[str], None],
) -> None:
    """Set the automatic strength's starting point on a few seeded training batches."""
    import torch

    n = len(bundle.train)
    gen = torch.Generator().manual_seed(mix_seed(config.seed, 0, 0, 3))
    order = torch.randperm(n, generator=gen)
    size = min(128, n)
    batches = []
    for b in range(min(strength.config.calibration_batches, max(1, n // size))):
        idx = order[b * size : (b + 1) * size].tolist()
        items = [bundle.train[i] for i in idx]
        x = torch.stack([torch.as_tensor(it[0]) for it in items])
        y = torch.as_tensor([int(it[1]) for it in items], device=transform.device)
        batches.append((transform(x), y))
    s = strength.calibrate(model, regularizer, batches, features)
    if strength.state.active:
        say(
            f"--lambda auto: strength {s:.3g} (penalty gradient {strength.start:g}x the "
            f"loss gradient), baseline val top-1 {strength.state.baseline:.2f}%"
        )
    else:
        say("--lambda auto: the method has no penalty gradient; nothing to adapt")


class _Fit:
    """One call of ``fit``: what every step needs, set up in the order ``fit`` always used
    (the seeded random streams depend on it), and the steps: restore, one step, one epoch,
    end of epoch."""

    def __init__(
        self,
        model: nn.Module,
        bundle: DataBundle,
        config: TrainConfig,
        data_config: DataConfig,
        *,
        regularizer: Regularizer | None,
        strength: AutoStrength | None,
        teacher: nn.Module | None,
        state_path: Path | None,
        extra_state: dict[str, Any] | None,
        progress: bool,
        log: Callable[[str], None] | None,
    ) -> None:
        import torch

        from compressor import distributed
        from compressor.data import BatchTransform, default_workers
        from compressor.utils import resolve_device

        self.model, self.bundle, self.config = model, bundle, config
        self.data_config = data_config.for_epochs(config.epochs)
        self.regularizer, self.strength = regularizer, strength
        self.state_path, self.extra_state = state_path, extra_state
        self.main = distributed.is_main()  # under torchrun, only rank 0 prints and writes
        self.say = (log or (lambda _msg: None)) if self.main else (lambda _msg: None)
        self.progress = progress and self.main
        self.parallel = distributed.world() > 1  # the CLI joined torchrun's process group
        self.device = device = resolve_device(config.device)
        # Sparsity training leaves many weights tiny; subnormal floats are very slow on x86
        # CPUs, so flush them to zero.
        torch.set_flush_denormal(True)
        self.cuda = cuda = device.type == "cuda"
        self.n = n = len(bundle.train)
        self.bs = bs = self.data_config.batch_size
        self.steps_per_epoch = n // bs if n >= bs else math.ceil(n / bs)
        if self.steps_per_epoch == 0:
            raise CompressorError("the training split is empty")
        workers = self.data_config.workers
        self.workers = default_workers(bundle) if workers is None else workers
        model.to(device)
        if cuda and config.channels_last:
            model.to(memory_format=torch.channels_last)
        if self.parallel:  # every rank starts from rank 0's weights
            distributed.broadcast_model(model)
        self.optimizer = make_optimizer(model, config)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _lr_factor(config, self.steps_per_epoch)
        )
        bf16 = cuda and torch.cuda.is_bf16_supported()
        self.amp_dtype = torch.bfloat16 if bf16 else torch.float16
        self.use_amp = cuda and config.amp
        fp16 = self.use_amp and self.amp_dtype == torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=fp16)
        self.transform = BatchTransform(bundle.preprocess, flip=bundle.flip, device=device)
        self.features: dict[str, torch.Tensor] = {}
        self.hooks = self._hook_features() if regularizer is not None else []
        if strength is not None and regularizer is None:
            raise CompressorError("an automatic strength needs a regularizer")
        if config.distill > 0 and teacher is None:
            raise CompressorError("distillation (--distill) needs a teacher model")
        self.teacher = teacher if config.distill > 0 else None
        if self.teacher is not None:
            self.teacher.to(device).eval()
            if cuda and config.channels_last:
                self.teacher.to(memory_format=torch.channels_last)
        self.result = TrainResult()
        self.start_epoch, self.start_step, self.global_step = 0, 0, 0
        self.resumed_running: list[float] | None = None
        self.steps_done = 0

    def _hook_features(self) -> list[Any]:
        """Set the regularizer up and fill ``features`` with what its penalty reads."""
        assert self.regularizer is not None
        example = self.transform(self.bundle.train[0][0].unsqueeze(0))
        self.regularizer.stage_epochs = self.config.epochs
        self.regularizer.steps_per_epoch = self.steps_per_epoch
        self.regularizer.setup(self.model, example_input=example, train_size=self.n)
        hooks = []
        for name, module in self.regularizer.feature_modules(self.model).items():

            def hook(_m: nn.Module, _i: Any, out: Any, name: str = name) -> None:
                self.features[name] = out

            hooks.append(module.register_forward_hook(hook))
        for name, module in self.regularizer.feature_inputs(self.model).items():

            def pre_hook(_m: nn.Module, args: Any, name: str = name) -> None:
                self.features[name] = args[0]

            hooks.append(module.register_forward_pre_hook(pre_hook))
        return hooks

    def restore(self) -> None:
        """Continue from ``state_path``: weights, optimizer, schedule, random streams and
        the interrupted epoch's running figures; refused if a setting changed."""
        if self.state_path is None:
            raise CompressorError("resuming needs the path of the resumable state")
        state = load_train_state(self.state_path)
        _check_resume_settings(state["train_config"], self.config, self.bs)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        reg = self.regularizer
        if reg is not None:
            reg.load_state_dict(state.get("regularizer") or {})
            if self.strength is not None:  # also the plan the penalty is focused on
                self.strength.load_state_dict(state["strength"], reg)
        _set_rng_state(state["rng"])
        self.start_epoch, self.start_step = int(state["epoch"]), int(state["step"])
        self.resumed_running = state.get("running")
        self.global_step = self.start_epoch * self.steps_per_epoch + self.start_step
        self.result.history = [EpochStats(**h) for h in state["history"]]
        self.result.seconds = float(state["seconds"])
        self.say(
            f"resuming at epoch {self.start_epoch + 1}, "
            f"step {self.start_step}/{self.steps_per_epoch}"
        )

    def save_state(self, epoch: int, step: int, running: list[float] | None = None) -> None:
        import torch

        from compressor.utils import atomic_write_with

        if self.state_path is None or not self.main:
            return
        reg, strength = self.regularizer, self.strength
        payload = {
            "format": STATE_FORMAT,
            "epoch": epoch,
            "step": step,
            # an interrupted epoch's running loss, penalty, correct and seen, so that the
            # resumed epoch's figures cover all its steps
            "running": running,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "regularizer": reg.state_dict() if reg is not None else {},
            "strength": strength.state_dict() if strength is not None else None,
            "rng": _rng_state(),
            "train_config": {**to_dict(self.config), "batch_size": self.bs},
            "history": [asdict(h) for h in self.result.history],
            "seconds": self.result.seconds,
            "extra": self.extra_state or {},
        }
        atomic_write_with(self.state_path, lambda f: torch.save(payload, f))

    def step(self, x: Any, y: Any, epoch: int, step: int) -> tuple[Any, Any, Any, Any]:
        """One optimizer step on a batch; returns (loss, scaled penalty or None, logits, y).
        By concern: the batch (seeds, augmentation, device), the losses, the gradients
        (penalty focus, ranks' average, the method's hand-made gradients), the update
        (optimizer, schedule, the method's and the strength controller's step hooks)."""
        inputs, y = self._batch(x, y, epoch, step)
        loss, pen, total, logits = self._losses(inputs, y, epoch, step)
        self._gradients(loss, pen, total)
        self._update(epoch, step)
        return loss, pen, logits, y

    def _batch(self, x: Any, y: Any, epoch: int, step: int) -> tuple[Any, Any]:
        """The step's inputs on the device, augmented with the step's own seed."""
        import torch

        config = self.config
        torch.manual_seed(mix_seed(config.seed, epoch, step, 2))
        aug = (
            torch.Generator().manual_seed(mix_seed(config.seed, epoch, step, 1))
            if self.data_config.augment
            else None
        )
        inputs = self.transform(x, aug)
        if self.cuda and config.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        return inputs, y.to(self.device, non_blocking=True)

    def _losses(self, inputs: Any, y: Any, epoch: int, step: int) -> tuple[Any, Any, Any, Any]:
        """(task loss, scaled penalty or None, their sum, logits) under autocast; a
        non-finite total stops the run in one line."""
        import torch

        config, reg, model = self.config, self.regularizer, self.model
        self.features.clear()
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
            logits, aux = split_outputs(model(inputs))
            taught = None
            if self.teacher is not None:
                with torch.no_grad():
                    taught = split_outputs(self.teacher(inputs))[0]
            loss = task_loss(logits, aux, y, config, taught)
            pen = reg.penalty(model, self.features) if reg is not None else None
            if pen is not None and reg is not None:
                pen = reg.scale * pen
            total = loss if pen is None else loss + pen
        if not torch.isfinite(total):
            raise CompressorError(
                f"loss became {float(total)} at epoch {epoch + 1} step {step}; lower --lr"
            )
        return loss, pen, total, logits

    def _gradients(self, loss: Any, pen: Any, total: Any) -> None:
        """Backward; with a focus plan the penalty's gradient is kept on the plan's entries
        only; under torchrun the global batch's gradient; then the method's own."""
        from compressor import distributed

        reg, model = self.regularizer, self.model
        self.optimizer.zero_grad(set_to_none=True)
        focus = reg.focus_masks(model) if reg is not None else None
        loss_grads = None
        if focus is not None and pen is not None:
            loss_grads = _backward_apart(self.scaler, model, loss, pen, focus)
        else:
            self.scaler.scale(total).backward()
        if self.parallel:  # the global batch's gradient, as one process would have
            distributed.average_gradients(model, loss_grads.values() if loss_grads else ())
        if reg is not None:
            self.scaler.unscale_(self.optimizer)
            reg.after_backward(model)
            if focus is not None and loss_grads is not None:
                _keep_focused(model, loss_grads, focus, self.scaler)

    def _update(self, epoch: int, step: int) -> None:
        """The optimizer and schedule step, then the step hooks."""
        from compressor import distributed

        reg, model = self.regularizer, self.model
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.parallel:  # running statistics came from this rank's shard
            distributed.average_buffers(model)
        if reg is not None:
            reg.after_step(model, epoch=epoch, step=step)
        self.global_step += 1
        self.steps_done += 1
        if self.strength is not None and reg is not None:
            self.strength.after_step(
                model, reg, step=self.global_step, steps_per_epoch=self.steps_per_epoch
            )

    def epoch(self, epoch: int, should_stop: Callable[[], bool]) -> bool:
        """Train one epoch (from the resumed step), then end it; True when the stage ends
        early. An interrupt inside the epoch saves the state and raises."""
        import torch

        from compressor import distributed
        from compressor.data import make_loader
        from compressor.utils import progress_bar

        config, bs, spe = self.config, self.bs, self.steps_per_epoch
        t0 = time.perf_counter()
        order = torch.randperm(
            self.n, generator=torch.Generator().manual_seed(mix_seed(config.seed, epoch))
        )
        batches = [order[i * bs : (i + 1) * bs].tolist() for i in range(spe)]
        batches = distributed.shard(batches, bs)  # this rank's part of each batch
        first = self.start_step if epoch == self.start_epoch else 0
        loader = make_loader(
            self.bundle.train, batches[first:], workers=self.workers, pin_memory=self.cuda
        )
        self.model.train()
        if self.regularizer is not None:
            self.regularizer.start_epoch(self.model, epoch=epoch)
        sums = [0.0, 0.0, 0, 0]  # loss, penalty, correct, seen
        # (under torchrun the saved figures are every rank's: rank 0 carries them)
        resumed = self.resumed_running
        if epoch == self.start_epoch and first > 0 and resumed and self.main:
            sums = [resumed[0], resumed[1], int(resumed[2]), int(resumed[3])]
        bar: Any = progress_bar(
            total=spe,
            initial=first,
            desc=f"epoch {epoch + 1}/{config.epochs}",
            enabled=self.progress,
            leave=False,
            unit="step",
        )
        for step, (x, y) in enumerate(loader, start=first):
            loss, pen, logits, y = self.step(x, y, epoch, step)
            sums[0] += float(loss.detach()) * len(y)
            sums[1] += float(pen.detach()) * len(y) if pen is not None else 0.0
            sums[2] += int((logits.argmax(1) == y).sum())
            sums[3] += len(y)
            bar.update(1)
            if step % config.log_every == 0 or step == spe - 1:
                elapsed = time.perf_counter() - t0
                bar.set_postfix(
                    loss=f"{sums[0] / sums[3]:.4f}",
                    acc=f"{100 * sums[2] / sums[3]:.1f}",
                    img_s=f"{sums[3] / max(elapsed, 1e-9):.0f}",
                )
            if should_stop() and step + 1 < spe:
                bar.close()
                self._interrupt(epoch, step, sums, t0)
        bar.close()
        return self.end_of_epoch(epoch, t0, time.perf_counter() - t0, sums)

    def _interrupt(self, epoch: int, step: int, sums: list[Any], t0: float) -> None:
        from compressor import distributed

        self.result.seconds += time.perf_counter() - t0
        running = distributed.sum_over_ranks(sums) if self.parallel else sums
        self.save_state(epoch, step + 1, running)
        raise TrainingInterrupted(
            f"interrupted at epoch {epoch + 1}, step {step + 1}/{self.steps_per_epoch}; "
            + (
                f"resumable state saved to {self.state_path}"
                if self.state_path
                else "no state saved"
            )
        )

    def end_of_epoch(self, epoch: int, t0: float, train_seconds: float, sums: list[Any]) -> bool:
        """Validation, the epoch's figures, the controller's verdict and the saved state;
        True when the stage ends early (early prune)."""
        from compressor import distributed

        if self.parallel:  # the epoch's figures over every rank's shard
            totals = distributed.sum_over_ranks(sums)
            sums = [totals[0], totals[1], int(totals[2]), int(totals[3])]
        loss_sum, pen_sum, correct, seen = sums
        metrics = evaluate(
            self.model,
            self.bundle.val,
            self.bundle.preprocess,
            device=self.device,
            batch_size=self.data_config.eval_batch_size,
            workers=self.workers,
            progress=self.progress,
        )
        elapsed = time.perf_counter() - t0
        self.result.seconds += elapsed
        reg, config = self.regularizer, self.config
        stats = EpochStats(
            epoch=epoch + 1,
            lr=float(self.optimizer.param_groups[0]["lr"]),
            train_loss=loss_sum / max(seen, 1),
            train_penalty=pen_sum / max(seen, 1),
            train_top1=100.0 * correct / max(seen, 1),
            val_loss=metrics["loss"],
            val_top1=metrics["top1"],
            val_top5=metrics["top5"],
            seconds=elapsed,
            images_per_s=seen / max(train_seconds, 1e-9),
            strength=reg.scale if reg is not None else None,
        )
        self.result.history.append(stats)
        top5 = f" top5 {stats.val_top5:.2f}%" if stats.val_top5 is not None else ""
        pen_text = f" penalty {stats.train_penalty:.4g}" if reg is not None else ""
        self.say(
            f"epoch {epoch + 1}/{config.epochs}: loss {stats.train_loss:.4f}{pen_text} "
            f"train {stats.train_top1:.2f}% val top1 {stats.val_top1:.2f}%{top5} "
            f"({stats.images_per_s:.0f} img/s, {elapsed:.1f}s)"
        )
        strength = self.strength
        ended = strength is not None and strength.end_of_epoch(
            self.model,
            done=epoch + 1,
            total=config.epochs,
            regularizer=self.regularizer,
            val_top1=stats.val_top1,
        )
        self.save_state(epoch + 1, 0)
        if ended:
            assert strength is not None and strength.state.projected is not None
            share = strength.state.epoch_shares[-1] or 0.0
            self.say(
                f"early prune after epoch {epoch + 1}/{config.epochs}: the channels to "
                f"remove hold {100 * share:.1f}% of the mass and would still hold "
                f"{100 * strength.state.projected:.1f}% at the stage's end; its "
                f"{epochs_text(config.epochs - epoch - 1, 'other')} go to fine-tuning"
            )
        return bool(ended)


def _check_resume_settings(saved: dict[str, Any], config: TrainConfig, batch_size: int) -> None:
    diff = changed_settings(
        saved,
        {**to_dict(config), "batch_size": batch_size},
        keys=(*_RESUME_KEYS, "batch_size"),
        defaults=to_dict(TrainConfig()),  # keys a state from an older version lacks
    )
    if diff:
        raise CompressorError(
            "cannot resume with different settings: "
            + ", ".join(f"{k} was {saved.get(k)!r}" for k in diff)
        )


def fit(
    model: nn.Module,
    bundle: DataBundle,
    config: TrainConfig,
    data_config: DataConfig,
    *,
    regularizer: Regularizer | None = None,
    state_path: Path | None = None,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    extra_state: dict[str, Any] | None = None,
    stop_after_steps: int | None = None,
    strength: AutoStrength | None = None,
    teacher: nn.Module | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``bundle.train``, evaluating on ``bundle.val`` each epoch.

    ``state_path`` receives a resumable state after every epoch and on SIGINT/SIGTERM;
    ``resume=True`` continues from it. ``extra_state`` is stored with it (the CLI keeps
    what it needs to rebuild the model there). ``strength`` (with a ``regularizer``)
    calibrates and adapts the penalty's multiplier (``--lambda auto``). ``teacher`` (kept
    in eval mode, never trained) is distilled from when ``config.distill`` > 0.
    ``stop_after_steps`` simulates an interrupt
    after that many optimizer steps (for tests). Returns the per-epoch history.
    Raises ``TrainingInterrupted`` after an interrupt, ``CompressorError`` for bad state.
    """
    from compressor import distributed

    run = _Fit(
        model,
        bundle,
        config,
        data_config,
        regularizer=regularizer,
        strength=strength,
        teacher=teacher,
        state_path=state_path,
        extra_state=extra_state,
        progress=progress,
        log=log,
    )
    if resume:
        run.restore()
    elif strength is not None and regularizer is not None:
        _calibrate(
            strength, model, regularizer, bundle, run.transform, run.features, config, run.say
        )
    stop = _StopFlag()
    saved_note = (
        f"resume with --resume (state in {state_path})"
        if state_path
        else "no resumable state was kept"
    )

    def should_stop() -> bool:
        stopping = stop.signal is not None or (
            stop_after_steps is not None and run.steps_done >= stop_after_steps
        )
        # every rank stops at the same step, or the others would wait for it forever
        return distributed.any_rank(stopping) if run.parallel else stopping

    synced: Any = contextlib.nullcontext(0)
    if config.sync_bn and run.parallel:
        from compressor import syncbn

        synced = syncbn.synced(model)
    try:
        with stop.installed(), synced as n_synced:
            if config.sync_bn and run.parallel:
                run.say(f"BatchNorm over the global batch: {n_synced} layers synchronised")
            for epoch in range(run.start_epoch, config.epochs):
                if strength is not None and strength.state.stopped_after is not None:
                    break  # resumed after the stage ended early (rule 4 of strength)
                if run.epoch(epoch, should_stop):
                    break
                if should_stop() and epoch + 1 < config.epochs:
                    raise TrainingInterrupted(f"interrupted after epoch {epoch + 1}; {saved_note}")
    finally:
        for h in run.hooks:
            h.remove()
    model.eval()
    return run.result
