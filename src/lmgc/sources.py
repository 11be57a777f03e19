"""Stage 0 for files of any size: a tensor file opened by its header, its bytes read on demand.

:func:`open_tensors` runs every check :func:`~lmgc.tensors.read_tensors` runs on a file (missing,
empty, unknown suffix, unsafe or damaged content, unsupported dtype) but reads only the file's
header: a ``.npy`` array header, a ``.safetensors`` JSON header (validated by safetensors itself),
a raw file's size. The tensors' bytes are then read piece by piece (:meth:`LazyTensor.read`), so
compressing a file of any size holds a few chunks in memory, not the file. What cannot be read in
pieces (a ``.pt`` pickle, a Fortran-ordered ``.npy``, anything unusual) is read whole by the
in-memory readers, which also give the same errors as before.

>>> import numpy as np, tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "g.npy"
>>> np.save(path, np.arange(4, dtype=">f4"))
>>> open_tensors(path).tensors[0].read(4, 4) == np.float32(1).tobytes()   # little-endian, as coded
True
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .files import check_input_file
from .tensors import (
    FORMATS,
    ITEMSIZE,
    TensorBundle,
    TensorRecord,
    _load_npy,
    _load_torch,
    _read_safetensors,
    bundle_objects,
    check_raw_size,
    describe_tensors,
)

__all__ = ["LazyTensor", "TensorFile", "open_input", "open_tensors", "open_folder"]

#: safetensors' dtype codes -> lmgc's names (the torch names the in-memory reader records).
_SAFETENSORS_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
    "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
}  # fmt: skip


@dataclass
class LazyTensor:
    """One tensor of a :class:`TensorFile`: what a :class:`~lmgc.tensors.TensorRecord` says about
    it, and where its bytes are (``data`` in memory, or ``nbytes`` at ``offset`` in ``path``; the
    file is opened for each read, so a folder of any number of files holds no descriptors)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    kind: str
    numpy_dtype: str | None
    nbytes: int
    data: bytes | None = None
    path: Path | None = None
    offset: int = 0
    stored: np.dtype | None = None  # the file's big-endian dtype, swapped on reading

    @property
    def itemsize(self) -> int:
        return ITEMSIZE[self.dtype]

    def read(self, start: int, size: int) -> bytes:
        """``size`` bytes from ``start``, little-endian (element-aligned where the file is not)."""
        if self.data is not None:
            return self.data[start : start + size]
        try:
            with open(self.path, "rb") as file:
                file.seek(self.offset + start)
                data = file.read(size)
        except OSError as exc:
            raise InputError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        if len(data) != size:
            raise InputError(f"{self.path} changed while it was read (it is shorter now)")
        if self.stored is not None:
            data = np.frombuffer(data, self.stored).astype(self.stored.newbyteorder("<")).tobytes()
        return data


@dataclass
class TensorFile:
    """A tensor input read on demand: the manifest of a :class:`~lmgc.tensors.TensorBundle`, and
    :class:`LazyTensor` s instead of bytes (it holds no open file)."""

    format: str
    tree: Any
    tensors: list[LazyTensor]
    metadata: dict | None = None
    path: Path | None = None  # the file or folder it reads, if any (an output must not replace it)
    bundle: TensorBundle | None = field(default=None, repr=False)  # when already in memory
    files: list[dict] | None = None  # a folder's files (see lmgc.tensors.folder_files)
    inputs: list[Path] = field(default_factory=list)  # every file read, none of which an output may be

    @classmethod
    def from_bundle(cls, bundle: TensorBundle, path: Path | None = None) -> TensorFile:
        tensors = [LazyTensor(t.name, t.dtype, t.shape, t.kind, t.numpy_dtype, len(t.data), t.data)
                   for t in bundle.tensors]  # fmt: skip
        return cls(bundle.format, bundle.tree, tensors, bundle.metadata, path, bundle, bundle.files,
                   [path] if path else [])  # fmt: skip

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    def manifest(self) -> dict:
        return describe_tensors(self.format, self.tree, self.metadata, self.tensors, self.files)

    def load(self) -> TensorBundle:
        """All of it in memory (for what cannot be coded piece by piece)."""
        if self.bundle is None:
            records = [TensorRecord(t.name, t.dtype, t.shape, t.read(0, t.nbytes), t.kind, t.numpy_dtype)
                       for t in self.tensors]  # fmt: skip
            self.bundle = TensorBundle(self.format, self.tree, records, self.metadata, self.files)
        return self.bundle


def open_tensors(path: str | os.PathLike, dtype: str | None = None) -> TensorFile:
    """Open a tensor file (``dtype``: any file as raw little-endian values of that type) and check
    it, reading its header only where the format allows (see the module docstring).

    Raises:
        The errors of :func:`~lmgc.tensors.read_tensors`, for the same files.
    """
    path = Path(path)
    check_input_file(path)
    size = path.stat().st_size
    if dtype is not None:
        check_raw_size(size, dtype, str(path))
        shape = (size // ITEMSIZE[dtype],)
        return _single("raw", [_in_file(path, "", dtype, shape, "numpy", None, 0)], path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(
            f"cannot tell the format of {path.name}: use .npy, .pt/.pth or .safetensors, "
            "or give --dtype to read raw bytes"
        )
    if size == 0:
        raise InputError(f"{path} is empty (0 bytes), not a valid {path.suffix} file")
    if fmt == "npy":
        return _open_npy(path, size) or TensorFile.from_bundle(bundle_objects(_load_npy(path), "npy"), path)
    if fmt == "safetensors":
        return _open_safetensors(path) or TensorFile.from_bundle(_read_safetensors(path), path)
    return TensorFile.from_bundle(bundle_objects(_load_torch(path), "pt"), path)  # a pickle: whole


def open_folder(path: str | os.PathLike, dtype: str | None = None) -> TensorFile:
    """Every file under the folder ``path``, in the order of their relative paths, each opened as
    :func:`open_tensors` opens it; files without a tensor suffix are raw values of ``dtype``
    (default ``uint8``: any file, such as a JSON sidecar, is kept byte for byte). Symbolic links
    are refused (they may lead out of the folder); empty folders are not stored.

    Raises:
        InputError: no folder, a link, a file that is not regular, no files, or what
            :func:`open_tensors` raises for one of the files (its message names it).
    """
    root = Path(path)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder")
    found = []
    for directory, folders, files in os.walk(root, onerror=_raise):
        for name in folders + files:
            if os.path.islink(os.path.join(directory, name)):
                raise InputError(f"{os.path.join(directory, name)} is a symbolic link; lmgc stores the files "
                                 "of a folder, not links (they may lead out of it)")  # fmt: skip
        found += [Path(directory, name) for name in files]
    folder_files, tensors = [], []
    for file in sorted(found, key=lambda f: f.relative_to(root).as_posix()):
        relative = file.relative_to(root).as_posix()
        try:
            relative.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError(f"{file}: the name is not valid UTF-8, which the container stores") from None
        source = open_tensors(file, None if file.suffix.lower() in FORMATS else dtype or "uint8")
        folder_files.append({"path": relative, "format": source.format, "tree": source.tree,
                             "metadata": source.metadata, "tensors": len(source.tensors)})  # fmt: skip
        tensors += source.tensors
    if not folder_files:
        raise InputError(f"{root} holds no files to compress")
    return TensorFile("folder", None, tensors, None, root, None, folder_files, sorted(found))


def _raise(error: OSError) -> None:
    raise InputError(f"cannot read {error.filename}: {error.strerror}")


def _single(fmt: str, tensors: list[LazyTensor], path: Path, metadata: dict | None = None, tree=None) -> TensorFile:
    return TensorFile(fmt, tree or {"__tensor__": 0}, tensors, metadata, path, inputs=[path])


def _in_file(path: Path, name: str, dtype: str, shape: tuple, kind: str, numpy_dtype: str | None,
             offset: int, stored: np.dtype | None = None) -> LazyTensor:  # fmt: skip
    nbytes = ITEMSIZE[dtype] * math.prod(shape)
    return LazyTensor(name, dtype, shape, kind, numpy_dtype, nbytes, None, path, offset, stored)


def _open_npy(path: Path, size: int) -> TensorFile | None:
    """A plain C-ordered array of a supported dtype, by its header; ``None`` for anything else
    (the whole-file reader then reads it, or names what is wrong, exactly as before)."""
    with open(path, "rb") as fh:
        try:
            major, _ = np.lib.format.read_magic(fh)
            header = {1: np.lib.format.read_array_header_1_0, 2: np.lib.format.read_array_header_2_0}[major]
            shape, fortran_order, dtype = header(fh)
        except (ValueError, KeyError, OSError, EOFError):
            return None
        offset = fh.tell()
    if (dtype.name not in ITEMSIZE or dtype.hasobject or (fortran_order and len(shape) > 1)
            or offset + dtype.itemsize * math.prod(shape) > size):  # fmt: skip
        return None
    stored = dtype if dtype.byteorder == ">" else None
    return _single("npy", [_in_file(path, "", dtype.name, tuple(shape), "numpy", dtype.str, offset, stored)], path)


def _open_safetensors(path: Path) -> TensorFile | None:
    """The tensors of a safetensors file by its header, which safetensors validates (offsets in
    bounds and contiguous); ``None`` where the whole-file reader must read or refuse it."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:  # "pt" would import torch (~1 s)
            metadata, names = handle.metadata(), list(handle.keys())
    except (SafetensorError, OSError, ValueError):
        return None
    with open(path, "rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        entries = json.loads(fh.read(length))
    if any(entries[name]["dtype"] not in _SAFETENSORS_DTYPES for name in names):
        return None
    if metadata:  # safetensors returns it in a random order; the file's order is reproducible
        metadata = {key: metadata[key] for key in entries["__metadata__"] if key in metadata} | metadata
    tensors = [_in_file(path, name, _SAFETENSORS_DTYPES[entries[name]["dtype"]], tuple(entries[name]["shape"]),
                        "torch", None, 8 + length + entries[name]["data_offsets"][0])
               for name in names]  # fmt: skip
    tree = {"__dict__": [[name, {"__tensor__": i}] for i, name in enumerate(names)]}
    return _single("safetensors", tensors, path, metadata, tree)


def open_input(path: str | os.PathLike, dtype: str | None = None) -> TensorFile:
    """A folder's path through :func:`open_folder`, anything else through :func:`open_tensors`."""
    return open_folder(path, dtype) if Path(path).is_dir() else open_tensors(path, dtype)
