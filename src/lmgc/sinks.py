"""Decoded chunks into a tensor file as they arrive: memory for a chunk, not for the file.

:class:`TensorWriter` takes the decoded stream (every element's bytes in the serialization's
order, tensor after tensor, cut into chunks anywhere) and writes each tensor's bytes where the
file holds them, feeding the SHA-256 the original bytes on the way. The files are byte for byte
the ones :func:`~lmgc.tensors.write_tensors` writes from the whole bundle: a ``.npy`` header as
``np.save`` writes it; a ``.safetensors`` header laid out by safetensors itself (its tensor order
comes from serializing empty stand-ins), with the metadata in the order it was read (safetensors
writes it in a random order: here the file comes back as it was); raw bytes as they are. Other
outputs (a ``.pt`` pickle, in-memory objects, a lossy section to undo) are not written by this
module, except as files of a folder (:class:`FolderWriter`): collected, then written whole.
"""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .errors import CorruptDataError
from .header import manifest_bytes, tensor_bytes
from .serialize import Serialization
from .tensors import ITEMSIZE, TensorBundle, folder_files, write_tensors

__all__ = ["writes", "TensorWriter", "FolderWriter"]

_SHA_MISMATCH = "decoded data fails the SHA-256 check: the file is corrupt"


def _flat_names(manifest: dict) -> list[str] | None:
    """The names of a safetensors manifest whose tree is a flat dict of its tensors in order."""
    items = manifest["tree"].get("__dict__") if isinstance(manifest["tree"], dict) else None
    if items is None or len(items) != len(manifest["tensors"]):
        return None
    names = [key for key, _ in items]
    if (any(value != {"__tensor__": i} for i, (_, value) in enumerate(items))
            or not all(isinstance(name, str) for name in names) or len(set(names)) != len(names)):  # fmt: skip
        return None
    return names


def writes(manifest: dict, fmt: str) -> bool:
    """Whether :class:`TensorWriter` writes this checked manifest as ``fmt`` (the format the
    output path takes): the formats lmgc reads piece by piece, as they come from files."""
    kinds = {t["kind"] for t in manifest["tensors"]}
    if manifest["format"] != fmt:
        return False
    if fmt == "npy":
        return kinds == {"numpy"}
    if fmt == "safetensors":
        return kinds <= {"torch"} and _flat_names(manifest) is not None
    return fmt == "raw"


class TensorWriter:
    """Writes the decoded stream of one checked manifest into ``out``: the file, for a manifest
    :func:`writes` takes, otherwise the original bytes one tensor after another (to be collected);
    ``out=None`` only checks it against the digest (``digest``: the container's hasher)."""

    def __init__(self, manifest: dict, serialization: Serialization, digest, out: BinaryIO | None = None) -> None:
        self.entries, self.serialization, self.digest, self.out = manifest["tensors"], serialization, digest, out
        self.sizes = [tensor_bytes(t) for t in self.entries]
        self.index = self.done = 0  # the tensor being written, and its bytes written so far
        self.pending = bytearray()
        self.stored = [None] * len(self.entries)  # npy: a big-endian dtype to swap back to
        self.at = None  # safetensors: each tensor's position in the file
        if out is None or not writes(manifest, manifest["format"]):
            return
        if manifest["format"] == "npy":
            self.stored[0] = self._npy_header(self.entries[0])
        elif manifest["format"] == "safetensors":
            self.at = self._safetensors_header(manifest)

    def _npy_header(self, entry: dict) -> np.dtype | None:
        """The header ``np.save`` writes (version 1.0 unless it does not fit)."""
        dtype = np.dtype(entry["numpy_dtype"] or entry["dtype"])
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                  "shape": tuple(entry["shape"])}  # fmt: skip
        try:
            np.lib.format.write_array_header_1_0(self.out, header)
        except ValueError:
            np.lib.format.write_array_header_2_0(self.out, header)
        return dtype if dtype.byteorder == ">" else None

    def _safetensors_header(self, manifest: dict) -> list[int]:
        """Write the header safetensors writes for these tensors; each tensor's file position."""
        names = _flat_names(manifest)
        blob = _stand_in_file(dict(zip(names, (t["dtype"] for t in self.entries))))
        layout = json.loads(blob[8 : 8 + struct.unpack("<Q", blob[:8])[0]])
        sizes, offset, offsets = dict(zip(names, self.sizes)), 0, {}
        for name, entry in layout.items():
            entry["shape"] = manifest["tensors"][names.index(name)]["shape"]
            entry["data_offsets"] = [offset, offset + sizes[name]]
            offsets[name], offset = offset, offset + sizes[name]
        if manifest["metadata"] is not None:  # first, in the order read (safetensors' is random)
            layout = {"__metadata__": manifest["metadata"], **layout}
        header = json.dumps(layout, separators=(",", ":"), ensure_ascii=False).encode()
        header += b" " * (-len(header) % 8)
        self.out.write(struct.pack("<Q", len(header)) + header)
        return [8 + len(header) + offsets[name] for name in names]

    def write(self, chunk: bytes) -> None:
        """The next decoded bytes: whole elements are written, a split one waits for the rest."""
        self.pending += chunk
        position = 0
        while self.index < len(self.entries):
            itemsize = ITEMSIZE[self.entries[self.index]["dtype"]]
            left = self.sizes[self.index] - self.done
            take = min(left, (len(self.pending) - position) // itemsize * itemsize)
            if left and not take:
                break
            self._emit(self.serialization.order_bytes(bytes(self.pending[position : position + take]), itemsize))
            position += take
            self.done += take
            if self.done == self.sizes[self.index]:
                self.index, self.done = self.index + 1, 0
        del self.pending[:position]
        if self.pending and self.index == len(self.entries):
            raise CorruptDataError(_SHA_MISMATCH)

    def _emit(self, original: bytes) -> None:
        self.digest.update(original)
        if self.out is None or not original:
            return
        stored = self.stored[self.index]
        if stored is not None:
            original = np.frombuffer(original, stored.newbyteorder("<")).astype(stored).tobytes()
        if self.at is not None:
            self.out.seek(self.at[self.index] + self.done)
        self.out.write(original)

    def finish(self, expected: bytes | None) -> None:
        """CorruptDataError unless every tensor was written and the digest is ``expected`` (not
        compared if ``None``: a folder's file, whose folder compares it once at the end)."""
        self.write(b"")  # tensors of no bytes after the last data
        if self.index != len(self.entries) or self.pending:
            raise CorruptDataError(_SHA_MISMATCH)
        if expected is not None and self.digest.digest() != expected:
            raise CorruptDataError(_SHA_MISMATCH)


class FolderWriter:
    """Writes a folder's decoded stream into ``root``, one file open at a time, each through its
    own :class:`TensorWriter`; what that does not write (a .pt file) is collected and written by
    :func:`~lmgc.tensors.write_tensors` once the digest matched, as a single file's would be.
    Paths are checked by the header schema (relative, inside the folder)."""

    def __init__(self, manifest: dict, serialization: Serialization, digest, root: Path) -> None:
        self.files, self.serialization, self.digest, self.root = folder_files(manifest), serialization, digest, root
        self.next, self.left, self.writer, self.collected = 0, 0, None, []
        self._advance()

    def _advance(self) -> None:
        """Close the current file; open the next ones, completing those that hold no bytes."""
        while self.left == 0:
            if self.writer is not None:
                self._close()
            if self.next == len(self.files):
                return
            path, own, _ = self.files[self.next]
            self.next += 1
            target = self.root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            self.whole = not writes(own, own["format"])
            self.out = io.BytesIO() if self.whole else open(target, "wb")
            self.writer = TensorWriter(own, self.serialization, self.digest, self.out)
            self.target, self.own, self.left = target, own, manifest_bytes(own)

    def _close(self) -> None:
        self.writer.finish(None)
        self.writer = None
        if not self.whole:
            self.out.close()
            return
        data, blobs, start = self.out.getvalue(), [], 0
        for entry in self.own["tensors"]:
            blobs.append(data[start : start + tensor_bytes(entry)])
            start += tensor_bytes(entry)
        self.collected.append((TensorBundle.from_manifest(self.own, blobs), self.target))

    def write(self, chunk: bytes) -> None:
        position = 0
        while position < len(chunk):
            if self.writer is None:
                raise CorruptDataError(_SHA_MISMATCH)
            take = min(self.left, len(chunk) - position)
            self.writer.write(chunk[position : position + take])
            position += take
            self.left -= take
            self._advance()

    def finish(self, expected: bytes) -> None:
        if self.writer is not None or self.digest.digest() != expected:
            raise CorruptDataError(_SHA_MISMATCH)
        for bundle, target in self.collected:
            write_tensors(bundle, target)


def _stand_in_file(dtypes: dict[str, str]) -> bytes:
    """The safetensors file of empty tensors of these dtypes, written by safetensors itself (its
    header's layout is what a file of these tensors has): from numpy where numpy has every
    dtype, as importing torch takes ~1 s, longer than decoding a small file; else from torch
    (bfloat16)."""
    try:
        stand_ins = {name: np.empty(0, dtype=np.dtype(dtype)) for name, dtype in dtypes.items()}
    except TypeError:
        import torch
        from safetensors.torch import save

        return save({name: torch.empty(0, dtype=getattr(torch, dtype)) for name, dtype in dtypes.items()})
    from safetensors.numpy import save

    return save(stand_ins)
