"""The container header: everything a decoder needs besides the coded chunks, checked field by field.

Both container versions carry the same dict (version 1 as zlib JSON, version 2 in the compact
binary of :mod:`lmgc.wire`). :func:`check` validates every field's type and range and the
consistency of the sizes *before* anything is allocated, a prior is built or a model is loaded,
so a forged header is refused in microseconds with a :class:`~lmgc.errors.FormatError`, and a
claim larger than the caller allows (``max_output_bytes``, as zstd's ``max_output_size``) with a
:class:`~lmgc.errors.LimitExceededError`.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np

from .errors import CorruptDataError, LimitExceededError, SerializationError
from .schema import corrupt, integer, mapping, text
from .serialize import Serialization, check_group_bytes
from .tensors import FORMATS, ITEMSIZE
from .wire import Reader, decode_value, encode_value

__all__ = [
    "Header", "check", "encode", "decode", "decode_v1", "first_batch", "header_fields", "manifest_bytes",
    "tensor_bytes",
    "DEFAULT_MAX_OUTPUT_BYTES", "MAX_HEADER_BYTES", "MAX_CHUNK_BYTES",
]  # fmt: skip

#: Default cap on the decoded size a file may claim (override with ``max_output_bytes``).
DEFAULT_MAX_OUTPUT_BYTES = 4 << 30
#: A header is at most this long (version 1: after inflating), whatever its length field says.
MAX_HEADER_BYTES = 16 << 20
#: Largest chunk a file may declare: decoding holds a few times one chunk in memory.
MAX_CHUNK_BYTES = 64 << 20
MAX_BATCH = 1 << 16
_MAX_TREE_DEPTH = 48
_FORMATS = ("npy", "pt", "safetensors", "raw", "object")


@dataclass(frozen=True)
class Header:
    """A checked header: every field present, typed and within range."""

    total_bytes: int
    codec: dict  # serialization, group_bytes, chunk_bytes, batch_size
    serialization: Serialization  # codec["serialization"] parsed, with its group size
    prior: dict  # the prior's recorded identity, its kind checked
    environment: dict[str, str]
    manifest: dict
    lossy: dict | None
    ideal_bits: float | None
    fields: dict  # the header as stored (for ``lmgc info``)

    @property
    def chunk_bytes(self) -> int:
        return self.codec["chunk_bytes"]

    @property
    def n_chunks(self) -> int:
        return -(-self.total_bytes // self.chunk_bytes)

    @property
    def first_batch(self) -> int:
        return first_batch(self.codec["batch_size"], self.n_chunks)

    def chunk_size(self, index: int) -> int:
        return min(self.chunk_bytes, self.total_bytes - index * self.chunk_bytes)


def first_batch(batch_size: int, n_chunks: int) -> int:
    """Chunks in the first lockstep batch (at least 1): the size the numerics probe runs at."""
    return max(1, min(batch_size, n_chunks))


def header_fields(total_bytes: int, codec: dict, prior: dict, environment: dict, coded: dict,
                  manifest: dict, lossy: dict | None = None) -> dict:  # fmt: skip
    """A header dict with its fields in the stored order (the order is part of the coded bytes);
    ``coded``: what the prior records after coding (e.g. ``ideal_bits``)."""
    fields = {"total_bytes": total_bytes, "codec": codec, "prior": prior, "environment": environment,
              **coded, "manifest": manifest}  # fmt: skip
    if lossy is not None:
        fields["lossy"] = lossy
    return fields


def encode(fields: dict) -> bytes:
    """The version-2 binary form of a header dict."""
    return bytes(encode_value(fields))


def decode(data: bytes) -> dict:
    """A version-2 header dict (structure only; see :func:`check`)."""
    reader = Reader(data, "lmgc file")
    fields = decode_value(reader)
    if reader.remaining:
        raise CorruptDataError("lmgc header is corrupt (bytes after its end)")
    return fields


def decode_v1(compressed: bytes) -> dict:
    """A version-1 header dict: zlib JSON, inflated to at most :data:`MAX_HEADER_BYTES`."""
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(compressed, MAX_HEADER_BYTES)
        if inflater.unconsumed_tail:
            raise LimitExceededError(f"lmgc header inflates to more than {MAX_HEADER_BYTES:,} bytes")
        if not inflater.eof:
            raise CorruptDataError("lmgc header is truncated")
        return json.loads(text)
    except (zlib.error, ValueError, RecursionError) as exc:
        raise CorruptDataError(f"lmgc header is corrupt: {type(exc).__name__}") from None


def check(fields, *, version: int, max_output_bytes: int | None = DEFAULT_MAX_OUTPUT_BYTES) -> Header:
    """Validate a header dict read from a container of ``version``; nothing is allocated first.

    Raises:
        CorruptDataError: a field is missing, unknown, mistyped, out of range or inconsistent.
        LimitExceededError: the file claims more decoded bytes than ``max_output_bytes``.
    """
    top = {"total_bytes", "codec", "prior", "environment", "manifest"}
    optional = {"lossy", "ideal_bits"} | ({"n_chunks"} if version == 1 else set())
    fields = mapping(fields, "header", top | ({"n_chunks"} if version == 1 else set()), optional)
    total = integer(fields["total_bytes"], "total_bytes")
    if max_output_bytes is not None and total > max_output_bytes:
        raise LimitExceededError(
            f"this file decodes to {total:,} bytes, more than the {max_output_bytes:,} allowed; "
            "raise max_output_bytes (--max-output-bytes) if you trust it"
        )
    codec, serialization = _check_codec(fields["codec"])
    header = Header(
        total_bytes=total, codec=codec, serialization=serialization,
        prior=_check_prior(fields["prior"], codec["group_bytes"]),
        environment=_check_environment(fields["environment"]),
        manifest=check_manifest(fields["manifest"], total, "manifest"),
        lossy=_check_lossy(fields.get("lossy"), max_output_bytes),
        ideal_bits=_check_ideal_bits(fields.get("ideal_bits")), fields=fields,
    )  # fmt: skip
    if header.lossy is not None and header.manifest["format"] == "folder":
        raise corrupt("a folder has no lossy section (the lossy front-end codes single files)", "lossy")
    if version == 1 and integer(fields["n_chunks"], "n_chunks") != header.n_chunks:
        raise corrupt("n_chunks does not match total_bytes / chunk_bytes", fields["n_chunks"])
    return header


def _check_codec(codec) -> tuple[dict, Serialization]:
    codec = mapping(codec, "codec", {"serialization", "group_bytes", "chunk_bytes", "batch_size"})
    group = integer(codec["group_bytes"], "group_bytes", 1, 8)
    try:
        check_group_bytes(group)
        serialization = Serialization.parse(text(codec["serialization"], "serialization"))
    except SerializationError as exc:
        raise corrupt(f"serialization: {exc}", codec["serialization"]) from None
    integer(codec["chunk_bytes"], "chunk_bytes", 1, MAX_CHUNK_BYTES)
    integer(codec["batch_size"], "batch_size", 1, MAX_BATCH)
    return codec, serialization


def _check_prior(prior, group: int) -> dict:
    from .priors import recorded_class

    return recorded_class(prior).check_identity(prior, group)


def _check_environment(env) -> dict[str, str]:
    if not isinstance(env, dict) or len(env) > 16:
        raise corrupt("environment must be a small mapping", env)
    for key, value in env.items():
        text(value, f"environment {key}")
    return env


def _check_ideal_bits(value) -> float | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                              or not math.isfinite(value) or value < 0):  # fmt: skip
        raise corrupt("ideal_bits must be a non-negative number", value)
    return value


def _check_lossy(info, max_output_bytes: int | None) -> dict | None:
    """The lossy section's own manifest is what decoding allocates: bound it like total_bytes."""
    from .lossy import INFO_VERSION

    if info is None:
        return None
    info = mapping(info, "lossy section", {"lossy", "spec", "manifest", "positions"})
    if info["lossy"] != INFO_VERSION:
        raise corrupt("unsupported lossy section version", info["lossy"])
    text(info["spec"], "lossy spec")
    text(info["positions"], "lossy position codings")
    check_manifest(info["manifest"], None, "lossy manifest")
    size = manifest_bytes(info["manifest"])
    if max_output_bytes is not None and size > max_output_bytes:
        raise LimitExceededError(f"this file decodes to {size:,} bytes, more than the "
                                 f"{max_output_bytes:,} allowed; raise max_output_bytes if you trust it")  # fmt: skip
    return info


def tensor_bytes(tensor: dict) -> int:
    """Bytes one checked manifest entry holds."""
    return ITEMSIZE[tensor["dtype"]] * math.prod(tensor["shape"])


def manifest_bytes(manifest: dict) -> int:
    """Bytes the tensors of a checked manifest hold."""
    return sum(map(tensor_bytes, manifest["tensors"]))


def check_manifest(manifest, total: int | None, what: str) -> dict:
    """Check a tensor manifest (and, given ``total``, that its tensors hold exactly that many bytes)."""
    manifest = mapping(manifest, what, {"format", "tree", "metadata", "tensors"}, {"files"})
    fmt = text(manifest["format"], f"{what} format", choices=(*_FORMATS, "folder"))
    if fmt == "folder" or "files" in manifest:
        return _check_folder(manifest, total, what)
    metadata = manifest["metadata"]
    if metadata is not None and (not isinstance(metadata, dict) or not all(
            isinstance(v, str) for v in metadata.values())):  # fmt: skip
        raise corrupt(f"{what} metadata must map strings to strings", metadata)
    tensors = manifest["tensors"]
    if not isinstance(tensors, list):
        raise corrupt(f"{what} tensors must be a list", tensors)
    size = 0
    for t in tensors:
        _check_tensor(t, what)
        size += tensor_bytes(t)
        if total is not None and size > total:
            break
    if total is not None and size != total:
        raise corrupt(f"{what} tensors do not add up to total_bytes = {total}", size)
    seen: list[int] = []
    _check_tree(manifest["tree"], len(tensors), seen, 0, what)
    if sorted(seen) != list(range(len(tensors))):
        raise corrupt(f"{what} tree must place every tensor exactly once", manifest["tree"])
    if fmt in ("npy", "raw") and (len(tensors) != 1 or manifest["tree"] != {"__tensor__": 0}):
        raise corrupt(f"a {fmt} manifest holds exactly one tensor", len(tensors))
    return manifest


def _check_tensor(t, what: str) -> None:
    mapping(t, f"{what} tensor", {"name", "dtype", "shape", "kind", "numpy_dtype"})
    text(t["name"], f"{what} tensor name")
    dtype = text(t["dtype"], f"{what} dtype", choices=ITEMSIZE)
    shape = t["shape"]
    if not isinstance(shape, list) or len(shape) > 64:
        raise corrupt(f"{what} shape must be a list of at most 64 sizes", shape)
    for dim in shape:
        integer(dim, f"{what} shape entry", 0, 1 << 48)
    kind = text(t["kind"], f"{what} tensor kind", choices=("numpy", "torch"))
    numpy_dtype = t["numpy_dtype"]
    if kind == "torch" and numpy_dtype is not None:
        raise corrupt(f"{what}: a torch tensor has no numpy dtype", numpy_dtype)
    if kind == "numpy":
        if dtype == "bfloat16":
            raise corrupt(f"{what}: numpy has no bfloat16", dtype)
        base = np.dtype(dtype)
        allowed = [None, base.newbyteorder("<").str, base.newbyteorder(">").str]
        if numpy_dtype not in allowed:  # a list: the value may be any (unhashable) JSON
            raise corrupt(f"{what}: numpy dtype must be one of {allowed}", numpy_dtype)


def _check_tree(node, n_tensors: int, seen: list[int], depth: int, what: str) -> None:
    if depth > _MAX_TREE_DEPTH:
        raise LimitExceededError(f"{what} tree nests deeper than {_MAX_TREE_DEPTH} levels")
    if node is None or isinstance(node, (bool, int, float, str)):
        return
    if isinstance(node, list):
        for item in node:
            _check_tree(item, n_tensors, seen, depth + 1, what)
        return
    if isinstance(node, dict) and len(node) == 1:
        (key, value), = node.items()
        if key == "__tensor__":
            seen.append(integer(value, f"{what} tensor index", 0, n_tensors - 1))
            return
        if key == "__tuple__" and isinstance(value, list):
            return _check_tree(value, n_tensors, seen, depth + 1, what)
        if key == "__dict__" and isinstance(value, list):
            for pair in value:
                if (not isinstance(pair, list) or len(pair) != 2
                        or type(pair[0]) not in (str, int)):  # fmt: skip
                    raise corrupt(f"{what} tree dict entries are [key, value]", pair)
                _check_tree(pair[1], n_tensors, seen, depth + 1, what)
            return
    raise corrupt(f"{what} tree node is not a tensor, dict, tuple, list or scalar", node)


#: Most files a folder may list (each costs a few header bytes; a forged count costs nothing).
MAX_FOLDER_FILES = 1 << 20
_FILE_FORMATS = ("npy", "pt", "safetensors", "raw")


def _check_folder(manifest: dict, total: int | None, what: str) -> dict:
    """A folder manifest (see :func:`~lmgc.tensors.folder_files`): every file a manifest of its
    own, the counts adding up, and every path one that stays inside the folder it is written to."""
    if manifest["format"] != "folder" or "files" not in manifest:
        raise corrupt(f"{what}: a folder has format 'folder' and a list of files", manifest["format"])
    if manifest["tree"] is not None or manifest["metadata"] is not None:
        raise corrupt(f"{what}: a folder's tree and metadata are its files'", manifest["tree"])
    files = manifest["files"]
    if not isinstance(files, list) or not 0 < len(files) <= MAX_FOLDER_FILES:
        raise corrupt(f"{what} files must be a list of 1 to {MAX_FOLDER_FILES:,} files", type(files).__name__)
    tensors, start, paths = manifest["tensors"], 0, set()
    if not isinstance(tensors, list):
        raise corrupt(f"{what} tensors must be a list", tensors)
    for i, entry in enumerate(files):
        entry = mapping(entry, f"{what} file {i}", {"path", "format", "tree", "metadata", "tensors"})
        path = _check_relative_path(entry["path"], f"{what} file {i} path")
        text(entry["format"], f"{what} file {i} format", choices=_FILE_FORMATS)
        if (FORMATS.get(PurePosixPath(path).suffix.lower()) or "raw") != entry["format"]:
            raise corrupt(f"{what} file {i}: the suffix of {path!r} names another format", entry["format"])
        count = integer(entry["tensors"], f"{what} file {i} tensor count", 0, len(tensors) - start)
        check_manifest({key: entry[key] for key in ("format", "tree", "metadata")}
                       | {"tensors": tensors[start : start + count]}, None, f"{what} file {i}")  # fmt: skip
        start += count
        paths.add(path)
    if start != len(tensors):
        raise corrupt(f"{what}: the files hold {start} of {len(tensors)} tensors", start)
    if len(paths) != len(files) or any(parent in paths for path in paths for parent in _parents(path)):
        raise corrupt(f"{what}: a path is listed twice, or as a file and a folder", sorted(paths)[:3])
    size = manifest_bytes(manifest)
    if total is not None and size != total:
        raise corrupt(f"{what} tensors do not add up to total_bytes = {total}", size)
    return manifest


def _check_relative_path(path, what: str) -> str:
    """A relative POSIX path that names a file inside the folder: no absolute path, no ``..``
    or ``.`` part, no empty part, no backslash or NUL (whatever the system), at most 4096 bytes."""
    path = text(path, what)
    parts = path.split("/")
    if (not path or len(path.encode("utf-8", "surrogatepass")) > 4096 or "\\" in path or "\0" in path
            or any(part in ("", ".", "..") for part in parts) or parts[0].endswith(":")):  # fmt: skip
        raise corrupt(f"{what} must be a relative path inside the folder", path)
    return path


def _parents(path: str):
    parts = path.split("/")
    return ("/".join(parts[:i]) for i in range(1, len(parts)))

