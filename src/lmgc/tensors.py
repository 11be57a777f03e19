"""Stage 0: tensors in and out.

Inputs (``.npy``, ``.pt``/``.pth``, ``.safetensors``, raw bytes with a dtype, or in-memory numpy
arrays / torch tensors, possibly nested in dicts, lists and tuples) become a :class:`TensorBundle`:
the tensors' little-endian bytes plus a JSON manifest (structure, names, dtypes, shapes) from
which the same kind of object or file is rebuilt bit for bit.
"""

from __future__ import annotations

import os
import pickle
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import (
    CorruptDataError,
    InputError,
    OutputError,
    UnsafePickleError,
    UnsupportedDtypeError,
)
from .files import atomic_path, check_output_path

__all__ = [
    "TensorRecord", "TensorBundle", "read_tensors", "bundle_objects", "raw_bundle", "write_tensors",
    "FORMATS", "ITEMSIZE", "NUMPY_DTYPE", "check_output_format", "check_raw_size", "describe_tensors",
    "folder_files",
]  # fmt: skip

#: Supported element types -> the little-endian numpy dtype their bytes are read as; bfloat16,
#: which numpy lacks, as its uint16 bit pattern, and bool as its bytes.
NUMPY_DTYPE = {
    "float16": "<f2", "bfloat16": "<u2", "float32": "<f4", "float64": "<f8",
    "int8": "i1", "uint8": "u1", "int16": "<i2", "int32": "<i4", "int64": "<i8", "bool": "u1",
}  # fmt: skip
#: Supported element types -> bytes per element.
ITEMSIZE = {name: np.dtype(dtype).itemsize for name, dtype in NUMPY_DTYPE.items()}
FORMATS = {".npy": "npy", ".pt": "pt", ".pth": "pt", ".safetensors": "safetensors"}
#: Stored format -> (what it is, where it may be written): a suffix must not misname the content.
_WRITTEN_AS = {
    "npy": ("a .npy array", "a .npy path"),
    "pt": ("a PyTorch checkpoint", "a .pt or .pth path"),
    "safetensors": ("a safetensors file", "a .safetensors path"),
    "raw": ("raw bytes, not a tensor file", "a path not ending in .npy, .pt, .pth or .safetensors"),
}
#: torch.load(weights_only=True) wordings (2.0 to 2.6+) for a pickle that uses a global outside its
#: allowlist; any other unpickling failure ("Unsupported operand", which also names weights_only)
#: is a damaged file.
_REFUSED_GLOBAL = re.compile(
    r"Unsupported (?:global|class)|GLOBAL|allowlist|not (?:an )?allowed|unrecognized function"
)
_GLOBAL_NAME = re.compile(r"(?:GLOBAL|Unsupported class) ([\w.]+)")


@dataclass
class TensorRecord:
    """One tensor: its name (dotted path), element type, shape, bytes, and library of origin."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    data: bytes
    kind: str  # "numpy" or "torch"
    numpy_dtype: str | None = None  # exact numpy dtype string (keeps a big-endian array big-endian)

    @property
    def itemsize(self) -> int:
        return ITEMSIZE[self.dtype]

    @property
    def nbytes(self) -> int:
        return len(self.data)

    def to_object(self):
        """Rebuild the numpy array or torch tensor."""
        if self.kind == "numpy":
            array = np.frombuffer(self.data, dtype=np.dtype(self.dtype).newbyteorder("<"))
            return array.astype(np.dtype(self.numpy_dtype or self.dtype)).reshape(self.shape)
        import torch

        torch_dtype = getattr(torch, self.dtype)
        if not self.data:
            return torch.empty(self.shape, dtype=torch_dtype)
        return torch.frombuffer(bytearray(self.data), dtype=torch_dtype).reshape(self.shape).clone()


@dataclass
class TensorBundle:
    """Tensors plus the structure and file format they came in."""

    format: str  # "npy", "pt", "safetensors", "raw", "object" (in-memory) or "folder"
    tree: Any  # JSON structure; tensors appear as {"__tensor__": index}
    tensors: list[TensorRecord]
    metadata: dict | None = field(default=None)  # safetensors' string metadata
    files: list[dict] | None = field(default=None)  # a folder's files (see folder_files)

    @property
    def nbytes(self) -> int:
        return sum(len(t.data) for t in self.tensors)

    def manifest(self) -> dict:
        """JSON-able description that, with the bytes, rebuilds the bundle."""
        return describe_tensors(self.format, self.tree, self.metadata, self.tensors, self.files)

    @classmethod
    def from_manifest(cls, manifest: dict, blobs: list[bytes]) -> TensorBundle:
        records = [
            TensorRecord(m["name"], m["dtype"], tuple(m["shape"]), blob, m["kind"], m.get("numpy_dtype"))
            for m, blob in zip(manifest["tensors"], blobs)
        ]
        return cls(manifest["format"], manifest["tree"], records, manifest.get("metadata"), manifest.get("files"))

    def to_objects(self):
        """The original Python object: an array/tensor, or the nested dict/list/tuple of them (a
        folder: its relative paths to each file's object)."""
        if self.format == "folder":
            return {path: TensorBundle.from_manifest(manifest, [t.data for t in self.tensors[part]]).to_objects()
                    for path, manifest, part in folder_files(self.manifest())}  # fmt: skip
        return _unflatten(self.tree, [t.to_object() for t in self.tensors])


def _dtype_name(obj) -> str:
    if isinstance(obj, np.ndarray):
        return obj.dtype.name
    name = str(obj.dtype).removeprefix("torch.")
    return {"float": "float32", "double": "float64", "half": "float16"}.get(name, name)


def _record(name: str, obj) -> TensorRecord:
    dtype = _dtype_name(obj)
    if dtype not in ITEMSIZE:
        raise UnsupportedDtypeError(
            f"tensor {name or '<root>'!r} has dtype {dtype}; supported: {', '.join(ITEMSIZE)}"
        )
    if isinstance(obj, np.ndarray):
        data = np.ascontiguousarray(obj).astype(obj.dtype.newbyteorder("<"), copy=False).tobytes()
        return TensorRecord(name, dtype, tuple(obj.shape), data, "numpy", obj.dtype.str)
    import torch

    if obj.layout != torch.strided or obj.is_quantized:
        raise UnsupportedDtypeError(f"tensor {name!r} is sparse or quantized; store it dense")
    tensor = obj.detach().to("cpu").contiguous()
    data = tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
    return TensorRecord(name, dtype, tuple(tensor.shape), data, "torch")


def _is_tensor(obj) -> bool:
    torch = sys.modules.get("torch")  # a torch tensor implies torch is imported already
    return isinstance(obj, np.ndarray) or (torch is not None and isinstance(obj, torch.Tensor))


def _flatten(obj, path: str, out: list[TensorRecord]):
    if _is_tensor(obj):
        out.append(_record(path, obj))
        return {"__tensor__": len(out) - 1}
    if isinstance(obj, dict):
        items = []
        for key, value in obj.items():
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise InputError(f"dict key {key!r} at {path or '<root>'!r} is not a string or int")
            items.append([key, _flatten(value, f"{path}.{key}" if path else str(key), out)])
        return {"__dict__": items}
    if isinstance(obj, (list, tuple)):
        items = [_flatten(v, f"{path}.{i}" if path else str(i), out) for i, v in enumerate(obj)]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise InputError(f"unsupported object of type {type(obj).__name__} at {path or '<root>'!r}")


def _unflatten(tree, objects: list):
    if isinstance(tree, dict):
        if "__tensor__" in tree:
            return objects[tree["__tensor__"]]
        if "__dict__" in tree:
            return {k: _unflatten(v, objects) for k, v in tree["__dict__"]}
        return tuple(_unflatten(v, objects) for v in tree["__tuple__"])
    if isinstance(tree, list):
        return [_unflatten(v, objects) for v in tree]
    return tree


def bundle_objects(obj, format: str = "object") -> TensorBundle:
    """Bundle an in-memory array/tensor or nested container of them."""
    records: list[TensorRecord] = []
    tree = _flatten(obj, "", records)
    return TensorBundle(format, tree, records)


def read_tensors(path: str | os.PathLike, dtype: str | None = None) -> TensorBundle:
    """Read a tensor file; ``dtype`` makes any other file a raw little-endian array of that type.

    Raises:
        InputError: missing/unreadable file or unknown extension without ``dtype``.
        UnsafePickleError: a .pt file holding objects other than tensors and plain containers.
        UnsupportedDtypeError: a tensor of an unsupported element type.
    """
    from .sources import open_tensors  # it builds on this module; one reader for both

    return open_tensors(path, dtype).load()


def describe_tensors(format: str, tree, metadata: dict | None, tensors, files: list[dict] | None = None) -> dict:
    """The manifest (see :meth:`TensorBundle.manifest`) of tensors given as anything with a
    name, dtype, shape, kind and numpy_dtype: records in memory or tensors of an open file."""
    manifest = {
        "format": format,
        "tree": tree,
        "metadata": metadata,
        "tensors": [
            {"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "kind": t.kind,
             "numpy_dtype": t.numpy_dtype}
            for t in tensors
        ],
    }  # fmt: skip
    if files is not None:
        manifest["files"] = files
    return manifest


def folder_files(manifest: dict) -> list[tuple[str, dict, slice]]:
    """A folder manifest's files: relative path, the file's own manifest, and the slice of the
    folder's tensors it holds.

    A folder (``format`` ``"folder"``, ``tree`` and ``metadata`` ``None``) lists its tensors file
    after file; ``files`` holds, per file in that order, ``{"path": "sub/name.npy", "format":
    ..., "tree": ..., "metadata": ..., "tensors": count}`` with the file's tree numbering its own
    tensors from 0. Every file is a manifest of its own, read and written as a single file is.
    """
    out, start = [], 0
    for entry in manifest["files"]:
        part = slice(start, start + entry["tensors"])
        own = {"format": entry["format"], "tree": entry["tree"], "metadata": entry["metadata"],
               "tensors": manifest["tensors"][part]}  # fmt: skip
        out.append((entry["path"], own, part))
        start = part.stop
    return out


def _load_npy(path: Path) -> np.ndarray:
    """A plain .npy array; not np.load, which would also accept an .npz archive or a pickle."""
    try:
        with open(path, "rb") as fh:
            return np.lib.format.read_array(fh, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise UnsafePickleError(
                f"{path} holds Python objects, not a plain array: refused as unsafe (unpickling can run code)"
            ) from None
        raise InputError(f"cannot read {path} as .npy: {exc}") from None
    except (OSError, MemoryError) as exc:  # MemoryError: a damaged header claims a huge shape
        raise InputError(f"cannot read {path} as .npy: {exc}") from None


def raw_bundle(data: bytes, dtype: str, source: str) -> TensorBundle:
    """Raw little-endian values of one dtype, as one flat tensor."""
    check_raw_size(len(data), dtype, source)
    record = TensorRecord("", dtype, (len(data) // ITEMSIZE[dtype],), data, "numpy", None)
    return TensorBundle("raw", {"__tensor__": 0}, [record])


def check_raw_size(nbytes: int, dtype: str, source: str) -> None:
    """Raw bytes of ``dtype`` must be a supported type and a whole number of its values."""
    if dtype not in ITEMSIZE:
        raise UnsupportedDtypeError(f"unsupported dtype {dtype}; supported: {', '.join(ITEMSIZE)}")
    if nbytes % ITEMSIZE[dtype]:
        raise InputError(f"{source} has {nbytes} bytes, not a whole number of {dtype} values")


def _load_torch(path: Path):
    """Tensors and plain containers only (weights_only): unpickling anything else could run code."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not _REFUSED_GLOBAL.search(str(exc)):
            raise InputError(f"cannot read {path} as a PyTorch file: not a valid checkpoint") from None
        found = _GLOBAL_NAME.search(str(exc))
        raise UnsafePickleError(
            f"{path} holds objects other than tensors and plain containers"
            f"{f' ({found.group(1)})' if found else ''}: refused as unsafe (refusing to unpickle "
            "them, since that can run code)"
        ) from None
    except Exception as exc:  # a damaged file makes torch's parser raise nearly any type
        first_line = str(exc).strip().split("\n")[0] or type(exc).__name__  # torch's run to paragraphs
        raise InputError(f"cannot read {path} as a PyTorch file: {first_line}") from None


def _read_safetensors(path: Path) -> TensorBundle:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata()
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"cannot read {path} as safetensors: {exc}") from None
    bundle = bundle_objects(tensors, "safetensors")
    bundle.metadata = metadata
    return bundle


def write_tensors(bundle: TensorBundle, path: str | os.PathLike, force: bool = False) -> Path:
    """Write the bundle in its original format (atomically: a failure leaves no partial file).

    Raises:
        OutputExistsError: ``path`` exists and ``force`` is false.
        OutputError: ``path`` cannot be written, or its suffix names another format.
    """
    path = check_output_path(path, force=force)
    fmt = check_output_format(bundle.format, path)
    if bundle.format == "object":
        _check_object_fits(bundle, fmt)
    with atomic_path(path) as tmp:
        if fmt == "raw":
            tmp.write_bytes(bundle.tensors[0].data)
        elif fmt == "npy":
            with open(tmp, "wb") as fh:
                np.save(fh, bundle.to_objects(), allow_pickle=False)
        elif fmt == "safetensors":
            from safetensors.torch import save_file

            save_file(bundle.to_objects(), str(tmp), metadata=bundle.metadata)
        else:
            import torch

            torch.save(bundle.to_objects(), tmp)
    return path


def check_output_format(format_name: str, path: str | os.PathLike) -> str:
    """The format ``path`` is written in, refusing a suffix that misnames the stored format.

    Cheap (no decoding): call it before decoding, so a wrong ``-o`` fails in seconds, not hours.
    In-memory objects (format ``object``) take the format their suffix names, .pt by default.

    Raises:
        OutputError: the suffix names another format (e.g. a .npy array written to ``x.pt``).
        CorruptDataError: ``format_name`` is not a format lmgc writes.
    """
    by_suffix = FORMATS.get(Path(path).suffix.lower())
    if format_name == "object":
        return by_suffix or "pt"
    if format_name not in _WRITTEN_AS:
        raise CorruptDataError(f"unknown tensor file format {format_name!r} in the header")
    if (by_suffix or "raw") != format_name:
        what, where = _WRITTEN_AS[format_name]
        raise OutputError(f"cannot write {path}: the compressed data holds {what}; write it to {where}")
    return format_name


def _check_object_fits(bundle: TensorBundle, fmt: str) -> None:
    """An in-memory object fits .npy only as one numpy array, .safetensors only as a flat dict
    of named torch tensors; .pt holds anything."""
    tree, kinds = bundle.tree, {t.kind for t in bundle.tensors}
    items = tree.get("__dict__") if isinstance(tree, dict) else None
    flat_dict = items is not None and all(isinstance(k, str) and isinstance(v, dict) and "__tensor__" in v
                                          for k, v in items)  # fmt: skip
    if fmt == "npy" and not (tree == {"__tensor__": 0} and kinds == {"numpy"}):
        raise OutputError("a .npy file holds one numpy array, and this object is not one; write it to a .pt path")
    if fmt == "safetensors" and not (flat_dict and kinds <= {"torch"}):
        raise OutputError(
            "a .safetensors file holds a flat dict of named torch tensors, and this object is not "
            "one; write it to a .pt path"
        )


