"""Compressing a tensor file piece by piece: memory bounded by a few chunks, not by the file.

The container is exactly the one the in-memory path writes (:meth:`lmgc.api.Compressor.compress`):
the same ordered stream (each element's bytes in the serialization's byte order, tensor after
tensor), cut into the same chunks, the same context kinds chosen from the same sample of values,
the same header; the frames go out as chunks finish and the SHA-256 is fed as bytes are read.

Only the context prior streams: it codes every chunk on its own, and what its header records (the
kinds) is known before coding, from a sample. The LLM priors code chunks in lockstep batches and
record ``ideal_bits``, known only after coding, in the header that comes first; the API keeps the
in-memory path for them (their speed, bytes per second, keeps their inputs small anyway).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO

import numpy as np

from .codec import progress_bar
from .config import CodecConfig
from .container import ContainerWriter
from .header import header_fields
from .priors import ContextPrior
from .priors.base import state_bytes
from .priors.context_models import LazyValueDigits
from .priors.context_rows import tensor_rows
from .serialize import Serialization
from .sources import LazyTensor, TensorFile

__all__ = ["READ_BYTES", "OrderedStream", "cut_chunks", "streams", "encode_file"]

#: Bytes read from the input at a time (rounded down to whole elements).
READ_BYTES = 4 << 20


def streams(prior) -> bool:
    """Whether :func:`encode_file` can code for ``prior`` (see the module docstring)."""
    return isinstance(prior, ContextPrior)


class OrderedStream:
    """The bytes a prior codes, read on demand: every tensor's elements with their bytes in the
    serialization's order (:meth:`~lmgc.serialize.Serialization.order_bytes`), one tensor after
    another. Reads are widened to whole elements, since the order is per element."""

    def __init__(self, tensors: list[LazyTensor], serialization: Serialization) -> None:
        self.tensors, self.serialization = tensors, serialization
        self.starts = np.cumsum([0] + [t.nbytes for t in tensors]).tolist()
        self.total = self.starts[-1]

    def pieces(self, size: int = READ_BYTES) -> Iterator[tuple[bytes, bytes]]:
        """``(original, ordered)`` pieces of whole elements, in order, about ``size`` bytes each."""
        for t in self.tensors:
            step = max(t.itemsize, size // t.itemsize * t.itemsize)
            for start in range(0, t.nbytes, step):
                original = t.read(start, min(step, t.nbytes - start))
                yield original, self.serialization.order_bytes(original, t.itemsize)

    def read(self, start: int, size: int) -> bytes:
        """Ordered bytes ``start .. start + size``."""
        out = bytearray()
        for t, first in zip(self.tensors, self.starts):
            low, high = max(start, first) - first, min(start + size, first + t.nbytes) - first
            if low >= high:
                continue
            begin, end = low // t.itemsize * t.itemsize, -(-high // t.itemsize) * t.itemsize
            ordered = self.serialization.order_bytes(t.read(begin, end - begin), t.itemsize)
            out += ordered[low - begin : high - begin]
        return bytes(out)


def cut_chunks(pieces: Iterable[tuple[bytes, bytes]], chunk_bytes: int,
               originals: Callable[[bytes], None]) -> Iterator[bytes]:  # fmt: skip
    """The ordered bytes of ``pieces`` in chunks of ``chunk_bytes`` (the last one shorter), as
    :func:`~lmgc.codec.split_chunks` cuts the whole stream; each original piece goes to
    ``originals`` (the digest) before the chunks it completes."""
    buffer = bytearray()
    for original, ordered in pieces:
        originals(original)
        buffer += ordered
        position = 0
        while len(buffer) - position >= chunk_bytes:
            yield bytes(buffer[position : position + chunk_bytes])
            position += chunk_bytes
        del buffer[:position]
    if buffer:
        yield bytes(buffer)


def encode_file(prior: ContextPrior, config: CodecConfig, source: TensorFile, out: BinaryIO,
                progress: bool = False) -> int:  # fmt: skip
    """Write the container for ``source`` to ``out`` front to back; returns its size in bytes.

    ``config`` is complete (:meth:`~lmgc.config.CodecConfig.for_prior`); a ``prior`` with fixed
    kinds keeps them, otherwise they are chosen for this input, as its ``encode`` does.
    """
    ordered = OrderedStream(source.tensors, config.serialization)
    group = config.group_for((t.itemsize, t.nbytes) for t in source.tensors)
    rows = tensor_rows(source.tensors, group, config.serialization.byte_order)
    coder = ContextPrior(prior.kinds, prior.version)
    if coder.kinds is None:
        coder.kinds = coder.choose_kinds(LazyValueDigits(ordered.read, ordered.total, group), group, rows)
    coder.fit(b"", group)  # the kinds are set: this only checks that they fit the group
    identity = coder.identity()
    batch = config.batch_for(-(-ordered.total // config.chunk_bytes), state_bytes(coder, config.chunk_bytes, group))
    writer = ContainerWriter(out, header_fields(ordered.total, config.header_codec(group, batch), identity,
                                                prior.environment(identity), {}, source.manifest()))  # fmt: skip
    with progress_bar(ordered.total, "compress", progress, unit="B") as bar:
        start = 0
        for chunk in cut_chunks(ordered.pieces(), config.chunk_bytes, writer.add_original):
            writer.add_chunk(*coder.encode_chunk(chunk, group, coder.spans(rows, start, len(chunk), group)))
            start += len(chunk)
            bar.update(len(chunk))
    return writer.finish()
