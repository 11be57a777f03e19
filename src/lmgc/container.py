"""Stage 4: the self-describing, versioned ``.lmgc`` container.

Version 2 (written; all integers little-endian, LEB128 = unsigned varint)::

    magic        8 bytes  b"\\x89LMGC\\r\\n\\x1a"
    version      u16      2
    header_len   LEB128
    header       compact binary (lmgc.wire): codec config, prior identity, environment,
                 tensor manifest, total original bytes, optional lossy section
    header_crc   u32      CRC32 of the header bytes
    frames, one per chunk (their number follows from total bytes / chunk bytes):
        payload_len  LEB128
        n_symbols    LEB128
        frame_crc    u32   CRC32 of (header_crc, chunk index, the two varints, payload)
        payload
    digest       32 bytes SHA-256 of the header bytes followed by all original tensor bytes

Written front to back with nothing sought back, so a writer streams frames as chunks finish and
a reader decodes chunk by chunk. Every check that needs no decoding runs when the file is read,
before any prior is built or model loaded: the header's CRC and schema (:mod:`lmgc.header`) and
every frame's CRC, which also binds the frame to its position and to this header. The digest
then covers everything the decoded tensors depend on: the header and the original bytes.

Version 1 (read only): zlib JSON header, a chunk table (LEB128 payload length, LEB128 symbol
count, CRC32 of the chunk's *original* bytes), SHA-256 of the original bytes only, payloads. Its
header is not covered by any check: ``lmgc info`` says so.
"""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

from . import header as header_schema
from .errors import (
    CorruptDataError,
    InputError,
    LimitExceededError,
    NotAnLmgcFileError,
    UnsupportedVersionError,
)
from .header import DEFAULT_MAX_OUTPUT_BYTES, MAX_HEADER_BYTES, Header
from .wire import Reader, leb128

__all__ = ["MAGIC", "FORMAT_VERSION", "ChunkEntry", "Container", "ContainerWriter", "pack", "unpack",
           "unpack_file"]

MAGIC = b"\x89LMGC\r\n\x1a"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
_VERSION = struct.Struct("<H")
_U32 = struct.Struct("<I")
_FRAME_KEY = struct.Struct("<IQ")
_MIN_FRAME = 6  # two one-byte varints and a CRC: bounds the frame count a file can hold


def _frame_crc(header_crc: int, index: int, fields: bytes, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(fields, zlib.crc32(_FRAME_KEY.pack(header_crc, index))))


@dataclass(frozen=True)
class ChunkEntry:
    """One chunk: its payload length, symbol count, and CRC32 (version 2: of its frame, checked
    on reading; version 1: of the chunk's original bytes, checked after decoding)."""

    payload_length: int
    n_symbols: int
    crc32: int


@dataclass
class Container:
    version: int
    header: Header
    header_bytes: bytes  # version 2: the exact bytes the digest starts with
    chunks: list[ChunkEntry]
    digest: bytes
    payloads: list[bytes] | None  # None: read from the file, frame by frame (see unpack_file)
    reread: Callable[[], Iterator[bytes]] | None = field(default=None, repr=False)

    def frames(self) -> Iterator[bytes]:
        """Every chunk's payload in order: from memory, or read again from the file with each
        frame's CRC checked again (the file may have changed since it was first read)."""
        return iter(self.payloads) if self.payloads is not None else self.reread()

    def offsets(self) -> list[int]:
        """Byte offset of each payload from the start of the first one."""
        offsets, position = [], 0
        for entry in self.chunks:
            offsets.append(position)
            position += entry.payload_length
        return offsets

    def matches(self, original: bytes) -> bool:
        """Whether decoded original bytes are the ones this file was written from."""
        digest = self.hasher()
        digest.update(original)
        return digest.digest() == self.digest

    def hasher(self):
        """A SHA-256 fed with what precedes the original bytes: feed it those, then compare its
        digest with :attr:`digest`."""
        return hashlib.sha256(self.header_bytes if self.version >= 2 else b"")


class ContainerWriter:
    """Writes a version-2 container front to back: the header, then each chunk's frame as soon as
    it is coded, then the digest. Nothing is sought back, so ``out`` may be a pipe.

    >>> buffer = io.BytesIO()
    >>> writer = ContainerWriter(buffer, {"any": "header"})
    >>> writer.add_chunk(b"coded", n_symbols=8)
    >>> writer.add_original(b"data")
    >>> writer.finish() == len(buffer.getvalue())
    True
    """

    def __init__(self, out: BinaryIO, fields: dict) -> None:
        self._out, self._index, self._written = out, 0, 0
        header = header_schema.encode(fields)
        if len(header) > MAX_HEADER_BYTES:  # no reader would accept it: refuse before any coding
            raise InputError(f"the header of this input (tensor names, shapes, files) takes {len(header):,} "
                             f"bytes, more than the {MAX_HEADER_BYTES:,} lmgc reads; compress it in parts")  # fmt: skip
        self._header_crc = zlib.crc32(header)
        self._digest = hashlib.sha256(header)
        self._write(MAGIC + _VERSION.pack(FORMAT_VERSION) + leb128(len(header)) + header
                    + _U32.pack(self._header_crc))  # fmt: skip

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self._written += len(data)

    def add_chunk(self, payload: bytes, n_symbols: int) -> None:
        fields = leb128(len(payload)) + leb128(n_symbols)
        crc = _frame_crc(self._header_crc, self._index, fields, payload)
        self._write(fields + _U32.pack(crc) + payload)
        self._index += 1

    def add_original(self, data: bytes) -> None:
        """Feed the original tensor bytes, in order, in pieces of any size."""
        self._digest.update(data)

    def finish(self) -> int:
        """Write the digest; returns the container's total size in bytes."""
        self._write(self._digest.digest())
        return self._written


def pack(fields: dict, payloads: Sequence[bytes], n_symbols: Sequence[int],
         originals: Iterable[bytes]) -> bytes:  # fmt: skip
    """A whole version-2 container in memory (see :class:`ContainerWriter`)."""
    buffer = io.BytesIO()
    writer = ContainerWriter(buffer, fields)
    for payload, count in zip(payloads, n_symbols, strict=True):
        writer.add_chunk(payload, count)
    for data in originals:
        writer.add_original(data)
    writer.finish()
    return buffer.getvalue()


def unpack(data: bytes, *, max_output_bytes: int | None = DEFAULT_MAX_OUTPUT_BYTES) -> Container:
    """Parse a container and run every check that needs no decoding.

    Version 2: header CRC, header schema, frame CRCs. Version 1: header schema only (its
    checksums cover decoded bytes). Work and memory are bounded by ``len(data)``.

    Raises:
        NotAnLmgcFileError, UnsupportedVersionError, CorruptDataError, LimitExceededError.
    """
    return _unpack(_FileReader(io.BytesIO(data), len(data)), max_output_bytes, keep_payloads=True)


def unpack_file(file: BinaryIO, *, max_output_bytes: int | None = DEFAULT_MAX_OUTPUT_BYTES) -> Container:
    """:func:`unpack` for a container in a seekable file, reading one frame at a time: every check
    runs as in :func:`unpack` (all frame CRCs before this returns), but the payloads are read again
    when :meth:`Container.frames` is iterated, so memory stays at one frame. Version-1 files are
    read whole (their payloads follow a table, and they are small)."""
    size = file.seek(0, io.SEEK_END)
    file.seek(0)
    return _unpack(_FileReader(file, size), max_output_bytes, keep_payloads=False)


def _unpack(reader: _FileReader, max_output_bytes: int | None, keep_payloads: bool) -> Container:
    if reader.take(min(len(MAGIC), reader.remaining), "magic") != MAGIC:
        raise NotAnLmgcFileError("not an lmgc file (magic bytes missing)")
    (version,) = _VERSION.unpack(reader.take(2, "version"))
    if version not in READABLE_VERSIONS:
        raise UnsupportedVersionError(
            f"lmgc format version {version} is not supported by this lmgc (reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}); install the lmgc release that wrote it"
        )
    if version == 1:
        rest = Reader(reader.take(reader.remaining, "header"))
        container = _unpack_v1(rest, max_output_bytes)
        if rest.remaining:
            raise CorruptDataError(f"lmgc file has {rest.remaining} unexpected trailing bytes")
        return container
    container = _unpack_v2(reader, max_output_bytes, keep_payloads)
    if reader.remaining:
        raise CorruptDataError(f"lmgc file has {reader.remaining} unexpected trailing bytes")
    return container


class _FileReader:
    """:class:`~lmgc.wire.Reader` 's bounds checks and errors over a file object of known size:
    nothing is read that the file cannot hold, so a claimed length never allocates more."""

    def __init__(self, file: BinaryIO, size: int, pos: int = 0) -> None:
        self.file, self.size, self.pos = file, size, pos

    @property
    def remaining(self) -> int:
        return self.size - self.pos

    def take(self, n: int, part: str) -> bytes:
        data = self.file.read(n) if n <= self.remaining else b""
        if len(data) != n:  # too long, or the file shrank since its size was read
            raise CorruptDataError(f"lmgc file is truncated (while reading the {part})")
        self.pos += n
        return data

    def integers(self, count: int, part: str) -> tuple[list[int], bytes]:
        """``count`` LEB128 integers and their bytes as stored (at most 10 bytes each)."""
        reader = Reader(self.file.read(min(10 * count, self.remaining)))
        values = [reader.leb128(part) for _ in range(count)]
        self.pos += reader.pos
        self.file.seek(self.pos)
        return values, bytes(reader.data[: reader.pos])


def _header_length(reader: Reader | _FileReader, length: int) -> int:
    if length > MAX_HEADER_BYTES:
        raise LimitExceededError(f"lmgc header claims {length:,} bytes, more than {MAX_HEADER_BYTES:,}")
    if length > reader.remaining:
        raise CorruptDataError("lmgc file is truncated (while reading the header)")
    return length


def _check_frame_count(reader: Reader | _FileReader, header: Header) -> None:
    """Refuse a chunk count the remaining bytes cannot hold, before reading any chunk."""
    if header.n_chunks * _MIN_FRAME + 32 > reader.remaining:
        raise CorruptDataError(f"lmgc file is truncated: {header.n_chunks:,} chunks need at least "
                               f"{header.n_chunks * _MIN_FRAME + 32:,} more bytes, "
                               f"{reader.remaining:,} remain")  # fmt: skip


def _unpack_v2(reader: _FileReader, max_output_bytes: int | None, keep_payloads: bool) -> Container:
    (length,), _ = reader.integers(1, "header length")
    header_bytes = reader.take(_header_length(reader, length), "header")
    header_crc = zlib.crc32(header_bytes)
    if _U32.unpack(reader.take(4, "header checksum"))[0] != header_crc:
        raise CorruptDataError("lmgc header fails its CRC32 check: the file is corrupt")
    header = header_schema.check(header_schema.decode(header_bytes), version=2,
                                 max_output_bytes=max_output_bytes)  # fmt: skip
    _check_frame_count(reader, header)
    frames_at, chunks, payloads = reader.pos, [], []
    for entry, payload in _frames(reader, header_crc, header.n_chunks):
        chunks.append(entry)
        if keep_payloads:
            payloads.append(payload)
    digest = reader.take(32, "digest")

    def reread() -> Iterator[bytes]:
        reader.file.seek(frames_at)
        again = _FileReader(reader.file, reader.size, frames_at)
        for (entry, payload), first in zip(_frames(again, header_crc, len(chunks)), chunks):
            if entry != first:
                raise CorruptDataError("the lmgc file changed while it was read")
            yield payload

    return Container(2, header, header_bytes, chunks, digest, *((payloads, None) if keep_payloads else (None, reread)))


def _frames(reader: _FileReader, header_crc: int, n_chunks: int) -> Iterator[tuple[ChunkEntry, bytes]]:
    """Each frame with its CRC checked (which binds it to its position and to this header)."""
    for index in range(n_chunks):
        (length, count), fields = reader.integers(2, "chunk frame")
        crc = _U32.unpack(reader.take(4, "chunk frame"))[0]
        payload = reader.take(length, "chunk payloads")
        if _frame_crc(header_crc, index, fields, payload) != crc:
            raise CorruptDataError(f"chunk {index} fails its CRC32 check: the file is corrupt")
        yield ChunkEntry(length, count, crc), payload


def _unpack_v1(reader: Reader, max_output_bytes: int | None) -> Container:
    length = _header_length(reader, _U32.unpack(reader.take(4, "header length"))[0])
    fields = header_schema.decode_v1(reader.take(length, "header"))
    header = header_schema.check(fields, version=1, max_output_bytes=max_output_bytes)
    _check_frame_count(reader, header)
    chunks = [
        ChunkEntry(reader.leb128("chunk table"), reader.leb128("chunk table"),
                   _U32.unpack(reader.take(4, "chunk table"))[0])
        for _ in range(header.n_chunks)
    ]  # fmt: skip
    digest = reader.take(32, "digest")
    payloads = [reader.take(entry.payload_length, "chunk payloads") for entry in chunks]
    return Container(1, header, b"", chunks, digest, payloads)
