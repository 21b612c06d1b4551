"""Datasets: ImageFolder, CIFAR-10/100, MNIST-format IDX files and the bundled ``mnist15k``.

Three splits. ``train`` trains; ``val`` steers (the strength controller, early prune, any
choice among epochs or runs); ``test`` is scored only at the end. When a source has a test
split (IDX ``t10k-*``, CIFAR ``test_batch``, ImageFolder ``test/``) and no validation split of
its own, ``val`` is held out from the training images (``--val-split``, a fixed draw), so
that nothing that steers ever sees a test image. A source without a test split (an
ImageFolder with only ``train/`` and ``val/``, or class folders alone) has ``test=None``.

Nothing is ever downloaded. Every source yields uint8 images already converted to the
model's channel count and spatial size; normalisation and augmentation happen per batch
(``BatchTransform``) with an explicit random generator, so a run is reproducible from
``(seed, epoch, step)`` alone and can resume at any step with identical results.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import pickle
import struct
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compressor.config import DataConfig, Preprocess
from compressor.errors import CompressorError

if TYPE_CHECKING:
    import torch

BUNDLED = {"mnist15k": Path(__file__).parent / "_bundled" / "mnist"}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Per-dataset statistics of the training sets (the values used across the literature).
_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagefolder": (IMAGENET_MEAN, IMAGENET_STD),
}
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_VAL_DIRS = ("val", "valid", "validation")
_TEST_DIRS = ("test",)
_SPLIT_SEED = 0  # --val-split is fixed across runs so that every run evaluates the same images
FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
# md5 of the uncompressed official Fashion-MNIST training labels (Zalando's published value):
# the IDX files of MNIST and Fashion-MNIST have the same names, so the content tells them apart.
_FASHION_TRAIN_LABELS_MD5 = "9018921c3c673c538a1fc5bad174d6f9"


@dataclass
class DataBundle:
    """Train, validation and (where the source has one) test sets of one source, ready for
    ``make_loader``. ``val_held_out`` says that ``val`` was drawn from the training images."""

    name: str  # what the source is, for reports: "mnist15k", "cifar10 at /path", ...
    kind: str  # key into the statistics table
    train: Any  # TensorImages or ImageFiles
    val: Any
    class_names: list[str]
    preprocess: Preprocess
    flip: bool  # whether horizontal flips are a valid augmentation (not for digits)
    in_memory: bool
    # image files left out because they cannot be decoded: (path, reason)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    test: Any = None  # scored only at the end; None when the source has no test split
    val_held_out: bool = False

    def split(self, name: str) -> Any:
        """The dataset of split ``name`` (``train``, ``val`` or ``test``)."""
        if name not in SPLITS:
            raise CompressorError(f"unknown split {name!r}; choose one of: {', '.join(SPLITS)}")
        if name == "test" and self.test is None:
            raise CompressorError(f"{self.name} has no test split")
        return {"train": self.train, "val": self.val, "test": self.test}[name]

    @property
    def held_out_splits(self) -> tuple[str, ...]:
        """The splits a model is scored on: ``val`` and, where there is one, ``test``."""
        return ("val", "test") if self.test is not None else ("val",)


SPLITS = ("train", "val", "test")


# --------------------------------------------------------------------------- readers


def _read_idx(path: Path) -> Any:
    """Read an IDX file (optionally gzipped) into a numpy array."""
    import numpy as np

    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
        zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
        if zero != 0 or dtype_code != 0x08:
            raise ValueError("not an unsigned-byte IDX file")
        shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
        data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
        return data.reshape(shape)
    except (OSError, ValueError, struct.error, EOFError) as e:
        raise CompressorError(f"{path} is not a valid IDX file: {e}") from e


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches (dicts of lists and numpy arrays) and nothing else.

    CIFAR's python release is a pickle; a plain ``pickle.load`` would run any code a
    tampered file carries. Only numpy's array-reconstruction globals are allowed.
    """

    _ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path, required: str = "data") -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="latin1").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as e:
        raise CompressorError(f"{path} is not a valid CIFAR batch file: {e}") from e
    if not isinstance(obj, dict) or required not in obj:
        raise CompressorError(f"{path} is not a valid CIFAR batch file (no {required!r} entry)")
    return obj


def _check_md5s(folder: Path) -> None:
    from compressor.utils import md5sum

    sums = folder / "MD5SUMS"
    for line in sums.read_text().splitlines():
        digest, name = line.split()
        if md5sum(folder / name) != digest:
            raise CompressorError(f"bundled file {folder / name} is corrupt (md5 mismatch)")


# --------------------------------------------------------------------------- sources


@dataclass
class _Raw:
    """Images of one source before conversion: uint8 arrays (N, C, H, W) or file lists."""

    kind: str
    name: str
    class_names: list[str]
    flip: bool
    train_x: Any = None
    train_y: Any = None
    val_x: Any = None
    val_y: Any = None
    train_files: list[tuple[str, int]] | None = None
    val_files: list[tuple[str, int]] | None = None
    test_x: Any = None
    test_y: Any = None
    test_files: list[tuple[str, int]] | None = None
    val_held_out: bool = False
    # symbolic links not followed: a loop, or a second path to a folder or file already read
    skipped_links: list[str] = field(default_factory=list)

    @property
    def has_val(self) -> bool:
        return self.val_x is not None or self.val_files is not None

    @property
    def has_test(self) -> bool:
        return self.test_x is not None or self.test_files is not None

    def hold_out_val(self, fraction: float) -> None:
        """Draw ``val`` from the training images (a fixed draw of ``fraction`` of them)."""
        import torch

        n = len(self.train_y) if self.train_x is not None else len(self.train_files or [])
        n_val = max(1, round(n * fraction))
        if n - n_val < 1:
            raise CompressorError(f"{self.name}: too few training images to hold out a val split")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(_SPLIT_SEED))
        val_idx, train_idx = order[:n_val].sort().values, order[n_val:].sort().values
        if self.train_x is not None:
            vi, ti = val_idx.numpy(), train_idx.numpy()
            self.val_x, self.val_y = self.train_x[vi], self.train_y[vi]
            self.train_x, self.train_y = self.train_x[ti], self.train_y[ti]
        else:
            files = self.train_files or []
            self.val_files = [files[i] for i in val_idx.tolist()]
            self.train_files = [files[i] for i in train_idx.tolist()]
        self.val_held_out = True

    @property
    def channels(self) -> int:
        return 3 if self.train_x is None else int(self.train_x.shape[1])

    @property
    def native_size(self) -> int | None:
        return None if self.train_x is None else int(self.train_x.shape[-1])


def load_mnist15k() -> _Raw:
    import numpy as np

    folder = BUNDLED["mnist15k"]
    _check_md5s(folder)
    with gzip.open(folder / "mnist-train-5k.csv.gz", "rt") as f:
        rows = np.loadtxt(f, delimiter=",", dtype=np.uint8)
    test_x = _read_idx(folder / "t10k-images-idx3-ubyte.gz")
    test_y = _read_idx(folder / "t10k-labels-idx1-ubyte.gz")
    train_x = np.concatenate([rows[:, :784].reshape(-1, 28, 28), test_x[:8000]])
    train_y = np.concatenate([rows[:, 784], test_y[:8000]])
    return _Raw(
        kind="mnist",
        name="mnist15k",
        class_names=[str(i) for i in range(10)],
        flip=False,
        train_x=train_x[:, None],
        train_y=train_y,
        test_x=test_x[8000:, None],
        test_y=test_y[8000:],
    )


def _find_idx(root: Path, stem: str) -> Path | None:
    for folder in (root, root / "raw", root / "MNIST" / "raw", root / "FashionMNIST" / "raw"):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def _mnist_dir(root: Path) -> _Raw | None:
    files = {
        s: _find_idx(root, s)
        for s in (
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
        )
    }
    if not any(files.values()):
        return None
    missing = [s for s, p in files.items() if p is None]
    if missing:
        raise CompressorError(f"{root} looks like an MNIST root but lacks {', '.join(missing)}")
    x = {s: _read_idx(p) for s, p in files.items() if p is not None}
    fashion = _is_fashion(root, files["train-images-idx3-ubyte"], x["train-labels-idx1-ubyte"])
    if len(x["train-images-idx3-ubyte"]) != len(x["train-labels-idx1-ubyte"]) or len(
        x["t10k-images-idx3-ubyte"]
    ) != len(x["t10k-labels-idx1-ubyte"]):
        raise CompressorError(f"{root}: image and label files have different lengths")
    return _Raw(
        kind="fashion-mnist" if fashion else "mnist",
        name=f"{'fashion-mnist' if fashion else 'mnist'} at {root}",
        class_names=list(FASHION_CLASSES) if fashion else [str(i) for i in range(10)],
        flip=fashion,
        train_x=x["train-images-idx3-ubyte"][:, None],
        train_y=x["train-labels-idx1-ubyte"],
        test_x=x["t10k-images-idx3-ubyte"][:, None],
        test_y=x["t10k-labels-idx1-ubyte"],
    )


def _is_fashion(root: Path, images: Path | None, labels: Any) -> bool:
    """Fashion-MNIST or MNIST: the official training labels' md5, else a folder name that
    says so (``FashionMNIST/raw`` as torchvision lays it out, ``fashion-mnist``, ...)."""
    import hashlib

    header = b"\x00\x00\x08\x01" + struct.pack(">I", len(labels))
    if hashlib.md5(header + labels.tobytes()).hexdigest() == _FASHION_TRAIN_LABELS_MD5:
        return True
    names = [p.lower().replace("_", "").replace("-", "") for p in (*root.parts, str(images))]
    return any("fashion" in n for n in names)


def _cifar_dir(root: Path) -> _Raw | None:
    import numpy as np

    for sub, kind in (("cifar-10-batches-py", "cifar10"), ("cifar-100-python", "cifar100")):
        folder = root / sub if (root / sub).is_dir() else root if root.name == sub else None
        if folder is None:
            continue
        if kind == "cifar10":
            train_names = [f"data_batch_{i}" for i in range(1, 6)]
            test_names, meta_name, label_key, names_key = (
                ["test_batch"],
                "batches.meta",
                "labels",
                "label_names",
            )
        else:
            train_names, test_names, meta_name, label_key, names_key = (
                ["train"],
                ["test"],
                "meta",
                "fine_labels",
                "fine_label_names",
            )
        missing = [n for n in [*train_names, *test_names, meta_name] if not (folder / n).is_file()]
        if missing:
            raise CompressorError(f"{folder} is missing CIFAR files: {', '.join(missing)}")

        def load(names: list[str], folder: Path = folder, label_key: str = label_key) -> tuple:
            batches = [_read_cifar_batch(folder / n) for n in names]
            x = np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in batches])
            y = np.concatenate([np.asarray(b[label_key], dtype=np.int64) for b in batches])
            return x.reshape(-1, 3, 32, 32), y

        train_x, train_y = load(train_names)
        test_x, test_y = load(test_names)
        class_names = [str(n) for n in _read_cifar_batch(folder / meta_name, names_key)[names_key]]
        return _Raw(
            kind,
            f"{kind} at {root}",
            class_names,
            True,
            train_x,
            train_y,
            test_x=test_x,
            test_y=test_y,
        )
    return None


def _list_images(
    folder: Path, skipped: list[str] | None = None
) -> tuple[list[str], list[tuple[str, int]]]:
    """(class names, (file, class index) pairs) under ``folder``'s class sub-folders.
    Symbolic links are followed, but every real folder is read once and every real file
    counted once, whichever class reaches it first: a link loop (``c0/self -> .``) or a file
    linked into two places cannot multiply the data or copy training images into the
    held-out split."""
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    samples: list[tuple[str, int]] = []
    seen_dirs: set[str] = set()
    seen_files: set[str] = set()
    for idx, cls in enumerate(classes):
        walked = []
        for dirpath, dirnames, filenames in os.walk(folder / cls, followlinks=True):
            real = os.path.realpath(dirpath)
            if real in seen_dirs:
                dirnames[:] = []  # a loop, or a folder another link already read
                if skipped is not None:
                    skipped.append(dirpath)
                continue
            seen_dirs.add(real)
            walked.append((dirpath, filenames))
        for dirpath, filenames in sorted(walked):  # the order files were always read in
            for fn in sorted(filenames):
                if not fn.lower().endswith(IMG_EXTENSIONS):
                    continue
                path = os.path.join(dirpath, fn)
                target = os.path.realpath(path)
                if target not in seen_files:
                    seen_files.add(target)
                    samples.append((path, idx))
                elif skipped is not None:
                    skipped.append(path)
    return classes, samples


def _imagefolder_dir(root: Path, val_split: float) -> _Raw | None:
    subdirs = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
    if not subdirs:
        return None
    train_dir = root / "train"
    val_dir = next((root / v for v in _VAL_DIRS if (root / v).is_dir()), None)
    test_dir = next((root / v for v in _TEST_DIRS if (root / v).is_dir()), None)
    val: list[tuple[str, int]] | None = None
    test: list[tuple[str, int]] | None = None
    links: list[str] = []
    if train_dir.is_dir() and (val_dir is not None or test_dir is not None):
        classes, train = _list_images(train_dir, links)
        for other in (val_dir, test_dir):
            if other is None:
                continue
            other_classes, samples = _list_images(other, links)
            if other_classes != classes:
                only_train = sorted(set(classes) - set(other_classes))
                only_other = sorted(set(other_classes) - set(classes))
                raise CompressorError(
                    f"{train_dir} and {other} have different class folders: only in "
                    f"{train_dir.name}/: {', '.join(only_train) or 'none'}; only in "
                    f"{other.name}/: {', '.join(only_other) or 'none'}"
                )
            if other is val_dir:
                val = samples
            else:
                test = samples
    else:
        if train_dir.is_dir() and [d.name for d in subdirs] == ["train"]:
            raise CompressorError(
                f"{root} holds only a train/ folder, which would be read as one class: give "
                f"--data {train_dir} (its class folders; the validation split is held out)"
            )
        classes, train = _list_images(root, links)
    if not train:
        where = train_dir if train_dir.is_dir() else root
        raise CompressorError(
            f"no images found in {where} (expected class folders holding {', '.join(IMG_EXTENSIONS)} files)"
        )
    if test is not None and not test:
        raise CompressorError(f"no test images found in {test_dir}")
    raw = _Raw("imagefolder", f"imagefolder at {root}", classes, True, train_files=train)
    raw.test_files, raw.skipped_links = test, links
    if val is not None:
        raw.val_files = val
    elif len(train) >= 2:
        raw.hold_out_val(val_split)
    if not raw.val_files:
        raise CompressorError(f"no validation images found under {root}")
    return raw


def _with_val(raw: _Raw, val_split: float) -> _Raw:
    """A source with a test split and no validation split gets ``val`` from its training
    images, so that what steers never sees the test images."""
    if raw.has_test and not raw.has_val:
        raw.hold_out_val(val_split)
    return raw


def _read_raw(spec: str, val_split: float) -> _Raw:
    if spec in BUNDLED:
        return _with_val(load_mnist15k(), val_split)
    root = Path(spec).expanduser()
    if not root.exists():
        raise CompressorError(
            f"data {spec!r} not found: give a dataset directory or one of: {', '.join(BUNDLED)}"
        )
    if not root.is_dir():
        raise CompressorError(f"data {spec!r} is a file; give a dataset directory")
    for reader in (_mnist_dir, _cifar_dir):
        raw = reader(root)
        if raw is not None:
            return _with_val(raw, val_split)
    raw = _imagefolder_dir(root, val_split)
    if raw is None:
        raise CompressorError(
            f"{root} holds no dataset: expected an ImageFolder (class sub-folders, optionally "
            "under train/ and val/), a CIFAR-10/100 python root or MNIST IDX files"
        )
    return raw


# --------------------------------------------------------------------------- conversion


def _convert_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 (N, C, H, W) -> (N, channels, H, W): grey is repeated, RGB becomes luma."""
    import torch

    if x.shape[1] == channels:
        return x
    if channels == 3:
        return x.expand(-1, 3, -1, -1).contiguous()
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (x.float() * weights).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)


def _resize(
    x: torch.Tensor, size: tuple[int, int], mode: str = "bilinear", chunk: int = 4096
) -> torch.Tensor:
    """Resize uint8 (N, C, H, W) images (antialiased but for ``nearest``), in chunks to
    bound memory."""
    import torch
    import torch.nn.functional as F

    if tuple(x.shape[-2:]) == size:
        return x
    out = []
    for part in x.split(chunk):
        y = (
            F.interpolate(part.float(), size=size, mode="nearest-exact")
            if mode == "nearest"
            else F.interpolate(
                part.float(), size=size, mode=mode, antialias=True, align_corners=False
            )
        )
        out.append(y.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


class TensorImages:
    """An in-memory dataset of uint8 images (N, C, H, W) and int64 labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.labels[i]

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        import torch

        idx = torch.as_tensor(indices)
        return list(zip(self.images[idx], self.labels[idx], strict=True))


class ImageFiles:
    """Images decoded from files: shorter side resized to size / ``crop_pct`` (with
    ``interpolation``), then center-cropped."""

    def __init__(
        self,
        samples: list[tuple[str, int]],
        size: tuple[int, int, int],
        interpolation: str = "bilinear",
        crop_pct: float = 0.875,
    ) -> None:
        self.samples = samples
        self.size = size
        self.interpolation = interpolation
        self.crop_pct = crop_pct

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        import torch
        from PIL import Image, UnidentifiedImageError
        from torchvision.transforms.v2 import functional as TF

        path, label = self.samples[i]
        c, h, w = self.size
        try:
            with Image.open(path) as img:
                t = TF.pil_to_tensor(img.convert("RGB" if c == 3 else "L"))
        except (OSError, UnidentifiedImageError) as e:
            raise CompressorError(f"cannot read image {path}: {e}") from e
        mode = TF.InterpolationMode(
            "nearest-exact" if self.interpolation == "nearest" else self.interpolation
        )
        t = TF.resize(t, [round(min(h, w) / self.crop_pct)], interpolation=mode, antialias=True)
        t = TF.center_crop(t, [h, w])
        return t.to(torch.uint8), label


def complete_size(size: tuple[int, ...], channels: int) -> tuple[int, int, int]:
    """``(S,)``, ``(H, W)`` or ``(C, H, W)`` -> ``(C, H, W)`` with the model's channel count."""
    if len(size) == 1:
        return (channels, size[0], size[0])
    if len(size) == 2:
        return (channels, size[0], size[1])
    return (size[0], size[1], size[2])


def default_preprocess(kind: str, channels: int, size: int) -> Preprocess:
    """The dataset's mean/std, adapted to the model's channel count."""
    mean, std = _STATS[kind]
    if channels != len(mean):
        if channels == 3:  # grey data into an RGB model: same statistics per channel
            mean, std = mean * 3, std * 3
        else:  # RGB data into a grey model: luma-weighted statistics
            w = (0.299, 0.587, 0.114)
            mean = (sum(a * b for a, b in zip(w, mean, strict=True)),)
            std = (sum(a * b for a, b in zip(w, std, strict=True)),)
    return Preprocess(input_size=(channels, size, size), mean=tuple(mean), std=tuple(std))


def load_data(
    config: DataConfig,
    *,
    channels: int | None = None,
    recorded: Preprocess | None = None,
    default_size: int = 224,
    min_size: int = 1,
) -> DataBundle:
    """Open ``config.data`` and convert it to the model's input.

    ``channels`` is the model's input channel count (``None``: the data's own). The
    preprocessing is, in order of precedence: the options in ``config``, the values
    ``recorded`` with the model, the dataset's own statistics at its native size (raised to
    ``min_size``), or ``default_size`` for file-based data. Raises ``CompressorError`` for a
    missing, empty or malformed dataset.
    """
    import torch

    raw = _read_raw(config.data, config.val_split)
    pre = _preprocess_for(raw, config, channels, recorded, default_size, min_size)
    if raw.train_x is not None:
        c, h, w = pre.input_size

        def convert(x: Any, y: Any) -> TensorImages:
            t = _convert_channels(torch.from_numpy(x.copy()), c)
            resized = _resize(t, (h, w), pre.interpolation)
            return TensorImages(resized, torch.tensor(y, dtype=torch.int64))

        train: Any = convert(raw.train_x, raw.train_y)
        val: Any = convert(raw.val_x, raw.val_y)
        test: Any = convert(raw.test_x, raw.test_y) if raw.test_x is not None else None
        in_memory, skipped = True, list[Any]()
    else:
        train, val, test, skipped = _image_files(raw, pre, config.strict)
        in_memory = False
    n_classes = len(raw.class_names)
    if n_classes < 2:
        raise CompressorError(f"{raw.name} has {n_classes} class; at least 2 are needed")
    _check_split_sizes(raw.name, n_classes, {"training": train, "validation": val, "test": test})
    return DataBundle(
        raw.name,
        raw.kind,
        train,
        val,
        raw.class_names,
        pre,
        raw.flip,
        in_memory,
        skipped,
        test=test,
        val_held_out=raw.val_held_out,
    )


def _check_split_sizes(name: str, classes: int, splits: dict[str, Any]) -> None:
    """An empty split is an error; one with fewer images than classes is a warning with the
    figures (its top-1 moves by a large step per image)."""
    for split, dataset in splits.items():
        if dataset is None:
            continue
        n = len(dataset)
        if n == 0:
            raise CompressorError(
                f"{name}: the {split} split is empty (every image of it was skipped or none "
                "was found)"
            )
        if n < classes:
            warnings.warn(
                f"{name}: the {split} split holds {n} images for {classes} classes, fewer "
                f"than one per class: one image moves its top-1 by {100 / n:.1f} points",
                SmallSplit,
                stacklevel=2,
            )


def _preprocess_for(
    raw: _Raw,
    config: DataConfig,
    channels: int | None,
    recorded: Preprocess | None,
    default_size: int,
    min_size: int,
) -> Preprocess:
    """The options in ``config``, else what the model recorded, else the data's own
    statistics at its native size (or ``default_size`` for files)."""
    if channels is None:
        channels = (
            config.input_size[0]
            if config.input_size and len(config.input_size) == 3
            else raw.channels
        )
    if recorded is not None:
        base = recorded
    else:
        side = max(raw.native_size or default_size, min_size)
        base = default_preprocess(raw.kind, channels, side)
    if config.input_size is not None:
        size = complete_size(config.input_size, base.input_size[0])
        if size[0] != base.input_size[0]:
            raise CompressorError(
                f"--input-size has {size[0]} channels but the model takes {base.input_size[0]}"
            )
        base = dataclasses.replace(base, input_size=size)
    if (config.mean is None) != (config.std is None):
        raise CompressorError("give --mean and --std together")
    if config.mean is not None and config.std is not None:
        base = dataclasses.replace(base, mean=config.mean, std=config.std)
    return base


def _image_files(raw: _Raw, pre: Preprocess, strict: bool) -> tuple[Any, Any, Any, list[Any]]:
    """(train, val, test or None, unreadable files skipped) of a folder of image files."""
    assert raw.train_files is not None and raw.val_files is not None
    bad = find_unreadable([p for p, _ in _all_files(raw)])
    if bad and strict:
        raise CompressorError(_unreadable_message(bad) + " (--strict-data)")
    if bad:
        warnings.warn(
            _unreadable_message(bad) + "; they are skipped (--strict-data makes this an error)",
            UnreadableImages,
            stacklevel=3,
        )
    gone = {p for p, _ in bad}
    geometry = (pre.input_size, pre.interpolation, pre.crop_pct)
    train = ImageFiles([s for s in raw.train_files if s[0] not in gone], *geometry)
    val = ImageFiles([s for s in raw.val_files if s[0] not in gone], *geometry)
    test = (
        ImageFiles([s for s in raw.test_files if s[0] not in gone], *geometry)
        if raw.test_files is not None
        else None
    )
    for split, images in (("training", train), ("validation", val), ("test", test)):
        if images is not None and not len(images):
            raise CompressorError(f"{raw.name}: no readable {split} images")
    return train, val, test, bad


def _all_files(raw: _Raw) -> list[tuple[str, int]]:
    return [*(raw.train_files or []), *(raw.val_files or []), *(raw.test_files or [])]


def list_image_files(spec: str, val_split: float = 0.1) -> list[str]:
    """Every image file of an ImageFolder dataset (every split)."""
    return image_files_and_links(spec, val_split)[0]


def image_files_and_links(spec: str, val_split: float = 0.1) -> tuple[list[str], list[str]]:
    """(every image file of an ImageFolder dataset, the symbolic links not followed)."""
    raw = _read_raw(spec, val_split)
    if raw.train_files is None or raw.val_files is None:
        raise CompressorError(f"{raw.name} is not a folder of image files; nothing to check")
    return [p for p, _ in _all_files(raw)], list(raw.skipped_links)


class UnreadableImages(UserWarning):
    """Some image files of a dataset cannot be decoded; they are left out."""


class SmallSplit(UserWarning):
    """A split with fewer images than classes: shown as one ``Warning:`` line."""


def _unreadable_message(bad: list[tuple[str, str]]) -> str:
    shown = "; ".join(f"{p} ({why})" for p, why in bad[:3])
    more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
    return f"{len(bad)} image file{'s' if len(bad) != 1 else ''} cannot be read: {shown}{more}"


def _check_image(path: str) -> str | None:
    """None if ``path`` decodes, else why not. JPEGs are decoded at a reduced scale
    (``draft``), which still reads every byte of the stream."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            if img.format == "JPEG":
                img.draft("RGB", (64, 64))
            img.load()
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ... on bad files
        return " ".join(str(e).split()) or type(e).__name__
    return None


def find_unreadable(paths: list[str], workers: int | None = None) -> list[tuple[str, str]]:
    """The files of ``paths`` that cannot be decoded, with the reason (in parallel)."""
    from concurrent.futures import ThreadPoolExecutor

    if not paths:
        return []
    workers = workers or min(8, os.cpu_count() or 1)
    chunk = max(1, min(256, len(paths) // (4 * workers)))
    with ThreadPoolExecutor(workers) as pool:  # PIL releases the GIL while decoding
        results = list(pool.map(_check_image, paths, chunksize=chunk))
    return [(p, why) for p, why in zip(paths, results, strict=True) if why is not None]


# --------------------------------------------------------------------------- batching


class BatchTransform:
    """uint8 batch -> normalised float batch, with optional seeded augmentation.

    Augmentation is a random translation (zero padding of 1/8 of the size, then a random
    crop) and, where the data allows it, a horizontal flip. Randomness comes only from the
    generator passed in, never from global state.
    """

    def __init__(self, preprocess: Preprocess, *, flip: bool, device: torch.device) -> None:
        import torch

        self.mean = torch.tensor(preprocess.mean, device=device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(preprocess.std, device=device).view(1, -1, 1, 1) * 255
        self.flip = flip
        self.device = device

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        if generator is not None:
            n, _, h, w = x.shape
            pad = max(1, min(h, w) // 8)
            padded = F.pad(x, (pad, pad, pad, pad))
            dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).tolist()
            dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).tolist()
            x = torch.stack(
                [
                    padded[i, :, y0 : y0 + h, x0 : x0 + w]
                    for i, (y0, x0) in enumerate(zip(dy, dx, strict=True))
                ]
            )
            if self.flip:
                mask = torch.rand(n, generator=generator) < 0.5
                x = torch.where(mask.view(-1, 1, 1, 1), x.flip(-1), x)
        x = x.to(self.device, non_blocking=True).float()
        return (x - self.mean) / self.std


def make_loader(
    dataset: Any,
    batches: Sequence[Sequence[int]],
    *,
    workers: int,
    pin_memory: bool = False,
) -> Any:
    """A DataLoader over explicit index batches (the caller decides order and resumption)."""
    from torch.utils.data import DataLoader

    return DataLoader(
        dataset,
        batch_sampler=[list(b) for b in batches],
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=False,
    )


def default_workers(bundle: DataBundle) -> int:
    """0 for in-memory data (workers only add overhead), else up to 8 decoding processes."""
    if bundle.in_memory:
        return 0
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def describe(bundle: DataBundle) -> dict[str, Any]:
    """A JSON-ready summary of the data for reports and model cards."""
    from compressor.config import to_dict

    return {
        "source": bundle.name,
        "train_images": len(bundle.train),
        "val_images": len(bundle.val),
        "test_images": len(bundle.test) if bundle.test is not None else 0,
        "val_held_out_from_train": bundle.val_held_out,
        "classes": len(bundle.class_names),
        "preprocess": to_dict(bundle.preprocess),
        "skipped_images": len(bundle.skipped),
        "skipped_files": [{"path": p, "reason": why} for p, why in bundle.skipped[:100]],
    }


def sample_batch(bundle: DataBundle, split: str, n: int, seed: int = 0) -> tuple[Any, Any]:
    """``n`` random images of a split (fixed seed), normalised as the model expects."""
    import torch

    dataset = bundle.split(split)
    idx = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    xs, ys = zip(*(dataset[i] for i in idx), strict=True)
    transform = BatchTransform(bundle.preprocess, flip=False, device=torch.device("cpu"))
    return transform(torch.stack(xs)), torch.as_tensor(ys)
