"""The two evaluation loops: a PyTorch model, and an onnxruntime session, on one split.

Both preprocess with the data's ``BatchTransform`` (no flips) and count with
``outputs.Tally``, so a model and its exported file are scored by the same rule.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from compressor.errors import CompressorError
from compressor.outputs import Tally, split_outputs

if TYPE_CHECKING:
    import torch
    from torch import nn

    from compressor.config import Preprocess
    from compressor.data import DataBundle


def evaluate(
    model: nn.Module,
    dataset: Any,
    preprocess: Preprocess,
    *,
    device: torch.device,
    batch_size: int = 256,
    workers: int = 0,
    progress: bool = False,
    desc: str = "eval",
) -> dict[str, Any]:
    """Top-1 (and top-5 above 5 classes) accuracy in percent and mean loss on ``dataset``."""
    import torch

    from compressor.data import BatchTransform, make_loader
    from compressor.utils import progress_bar

    n = len(dataset)
    if n == 0:
        raise CompressorError("the evaluation split is empty")
    batches = [range(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    loader = make_loader(dataset, batches, workers=workers, pin_memory=device.type == "cuda")
    transform = BatchTransform(preprocess, flip=False, device=device)
    was_training = model.training
    model.eval()
    tally = Tally()
    try:
        with torch.inference_mode():
            for x, y in progress_bar(
                loader, desc=desc, enabled=progress, leave=False, unit="batch"
            ):
                logits, _ = split_outputs(model(transform(x)))
                tally.add(logits.float(), y.to(device))
    finally:
        model.train(was_training)
    return tally.result()


def evaluate_onnx(
    session: Any,
    bundle: DataBundle,
    split: str,
    *,
    batch_size: int = 256,
    source: str = "the ONNX model",
    progress: bool = False,
) -> dict[str, Any]:
    """Top-1/top-5/loss of an onnxruntime session on one split of ``bundle``. A file with a
    fixed batch size leaves the last partial batch out (``left_out``)."""
    import numpy as np
    import torch

    from compressor.data import BatchTransform
    from compressor.utils import progress_bar

    dataset = bundle.split(split)
    shape = session.get_inputs()[0].shape
    fixed = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
    batch = fixed or batch_size
    n = len(dataset)
    if n == 0 or (fixed and n % fixed):
        usable = n - n % fixed if fixed else 0
        if not usable:
            raise CompressorError(f"the {split} split is empty")
        n = usable
    transform = BatchTransform(bundle.preprocess, flip=False, device=torch.device("cpu"))
    input_name = session.get_inputs()[0].name
    tally = Tally()
    for i in progress_bar(
        range(0, n, batch), desc=f"eval {split} (onnxruntime)", enabled=progress, leave=False
    ):
        xs, ys = zip(*(dataset[j] for j in range(i, min(i + batch, n))), strict=True)
        x = transform(torch.stack([torch.as_tensor(v) for v in xs])).numpy().astype(np.float32)
        logits = torch.from_numpy(np.asarray(session.run(None, {input_name: x})[0])).float()
        if logits.ndim != 2 or logits.shape[1] != len(bundle.class_names):
            raise CompressorError(
                f"{source} gives {tuple(logits.shape)} outputs but {bundle.name} has "
                f"{len(bundle.class_names)} classes"
            )
        tally.add(logits, torch.as_tensor(ys, dtype=torch.int64))
    return {**tally.result(), "left_out": len(dataset) - n}
