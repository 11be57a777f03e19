"""What the evaluation measures: tensor files as flat bytes, seeded windows, lossy payloads.

Every codec sees the same bytes: a file's tensors flattened in stored order (:class:`FileBytes`),
optionally the same seeded windows of them (:func:`sample_windows`), or the payload a lossy
front-end made of them once (:func:`apply_lossy`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, LmgcError, UnsupportedDtypeError
from ..lossy import LossyPipeline, error_report, side_info_bytes
from ..tensors import (
    NUMPY_DTYPE,
    TensorBundle,
    bundle_objects,
    raw_bundle,
    read_tensors,
)

__all__ = [
    "TENSOR_SUFFIXES",
    "FileBytes",
    "LossyPayload",
    "load_file_bundle",
    "load_file_bytes",
    "sample_windows",
    "apply_lossy",
]

TENSOR_SUFFIXES = (".safetensors", ".npy", ".npz", ".pt", ".pth")


@dataclass(frozen=True)
class FileBytes:
    """A file's tensors flattened in stored order into raw little-endian bytes.

    ``bundle`` (the tensors with names and shapes, when known) is what a lossy front-end needs.
    """

    label: str
    data: bytes
    dtype_name: str  # "float32", "bfloat16", or "mixed(float32,int64)"
    bundle: TensorBundle | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def dtype(self) -> np.dtype:
        """Element type handed to codecs; mixed files are plain bytes."""
        return np.dtype(NUMPY_DTYPE.get(self.dtype_name, "u1"))

    def to_bundle(self) -> TensorBundle:
        """The tensors; bytes of one supported dtype without a bundle become one flat tensor."""
        if self.bundle is not None:
            return self.bundle
        if self.dtype_name not in NUMPY_DTYPE:
            raise InputError(f"{self.label}: a lossy front-end needs the tensors (a tensor file, "
                             f"or raw values of one of {', '.join(NUMPY_DTYPE)}), not "
                             f"{self.dtype_name} bytes")
        return raw_bundle(self.data, self.dtype_name, self.label)


def _dtype_label(names: Iterable[str]) -> str:
    names = list(dict.fromkeys(names))
    return names[0] if len(names) == 1 else f"mixed({','.join(names)})"


def load_file_bundle(path: str | Path) -> TensorBundle:
    """The tensors of a tensor file in stored order (:func:`lmgc.tensors.read_tensors`, plus .npz).

    The one place the evaluation parses tensor files. Non-tensor entries of .pt files (e.g.
    LM-GC's ``batch_step``) stay in the structure and add no bytes.
    """
    path = Path(path)
    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as loaded:
            return bundle_objects({key: loaded[key] for key in loaded.files})
    return read_tensors(path)


def load_file_bytes(path: str | Path, dtype: str | None = None) -> FileBytes:
    """Flatten a tensor file, or read a raw file of the given element ``dtype``, to benchmark it.

    Raises:
        InputError: a missing, empty or unreadable file, a raw file without ``dtype``, or bytes
            that are not a whole number of elements (:class:`~lmgc.errors.UnsupportedDtypeError`
            for a dtype lmgc does not know).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    bundle = None
    if path.suffix.lower() in TENSOR_SUFFIXES:
        try:
            bundle = load_file_bundle(path)
        except LmgcError:
            raise
        except Exception as exc:  # any parse failure of a foreign file format
            raise InputError(f"cannot read tensors from {path}: {type(exc).__name__}: {exc}"
                             ) from exc
        dtype_name = _dtype_label(t.dtype for t in bundle.tensors)
        data = b"".join(t.data for t in bundle.tensors)
    else:
        if dtype is None:
            raise InputError(f"{path}: raw file needs --dtype (e.g. --dtype float32); tensor "
                             f"files are {', '.join(TENSOR_SUFFIXES)}")
        dtype_name, data = dtype, path.read_bytes()
    if dtype_name not in NUMPY_DTYPE and not dtype_name.startswith("mixed("):
        raise UnsupportedDtypeError(f"{path}: dtype {dtype_name} is not supported; "
                                    f"known: {', '.join(NUMPY_DTYPE)}")
    loaded = FileBytes(str(path), data, dtype_name, bundle)
    if not data:
        raise InputError(f"{path} holds no data")
    if len(data) % loaded.dtype.itemsize:
        raise InputError(f"{path}: {len(data)} bytes is not a whole number of {dtype_name} "
                         f"elements ({loaded.dtype.itemsize} bytes each)")
    return loaded


def sample_windows(n_bytes: int, itemsize: int, window_bytes: int, windows: int,
                   seed: int) -> list[tuple[int, int]]:
    """Disjoint seeded random windows ``(start, end)``, element-aligned, the same for every codec.

    A file no longer than one window gives one window: the whole file.
    """
    size = window_bytes - window_bytes % itemsize
    if size <= 0 or windows <= 0:
        raise InputError(f"--sample-bytes must be at least one element ({itemsize} bytes) and "
                         f"--windows at least 1, got {window_bytes} and {windows}")
    if n_bytes <= size:
        return [(0, n_bytes)]
    slots = n_bytes // size
    rng = np.random.default_rng(seed)
    offset = int(rng.integers(0, (n_bytes - slots * size) // itemsize + 1)) * itemsize
    chosen = sorted(int(i) for i in rng.choice(slots, size=min(windows, slots), replace=False))
    return [(offset + i * size, offset + (i + 1) * size) for i in chosen]


@dataclass(frozen=True)
class LossyPayload:
    """A file after one lossy front-end: what the codecs compress, and what it cost."""

    spec: str
    payload: FileBytes
    original_bytes: int
    side_info_bytes: int
    max_abs_error: float
    rel_l2_error: float

    def fields(self) -> dict[str, Any]:
        """The lossy columns of a :class:`~lmgc.eval.bench.BenchResult`."""
        return dict(lossy=self.spec, original_bytes=self.original_bytes,
                    payload_bytes=len(self.payload.data), side_info_bytes=self.side_info_bytes,
                    max_abs_error=self.max_abs_error, rel_l2_error=self.rel_l2_error)

    def rate(self, payload_rate_pct: float) -> float:
        """Rate against the original bytes, side info included, from a rate against the payload."""
        return (payload_rate_pct * len(self.payload.data) + 100 * self.side_info_bytes) / \
            self.original_bytes


def apply_lossy(source: FileBytes, pipeline: LossyPipeline) -> LossyPayload:
    """Run the front-end once; the payload tensors' bytes, in payload order, go to every codec.

    Raises:
        InputError: the file's tensors are unknown (mixed raw bytes) or the payload is empty.
    """
    bundle = source.to_bundle()
    payload, info = pipeline.encode(bundle)
    report = error_report(bundle, pipeline.decode(payload, info))
    data = b"".join(t.data for t in payload.tensors)
    if not data:
        raise InputError(f"{source.label}: the lossy front-end {pipeline} left no bytes")
    flat = FileBytes(source.label, data, _dtype_label(t.dtype for t in payload.tensors), payload)
    return LossyPayload(pipeline.spec, flat, bundle.nbytes, side_info_bytes(info),
                        report["max_abs"], report["rel_l2"])
