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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from . import header as header_schema
from .errors import (
    CorruptDataError,
    LimitExceededError,
    NotAnLmgcFileError,
    UnsupportedVersionError,
)
from .header import DEFAULT_MAX_OUTPUT_BYTES, MAX_HEADER_BYTES, Header
from .wire import Reader, leb128

__all__ = ["MAGIC", "FORMAT_VERSION", "ChunkEntry", "Container", "ContainerWriter", "pack", "unpack"]

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
    payloads: list[bytes]

    def offsets(self) -> list[int]:
        """Byte offset of each payload from the start of the first one."""
        offsets, position = [], 0
        for entry in self.chunks:
            offsets.append(position)
            position += entry.payload_length
        return offsets

    def matches(self, original: bytes) -> bool:
        """Whether decoded original bytes are the ones this file was written from."""
        prefix = self.header_bytes if self.version >= 2 else b""
        return hashlib.sha256(prefix + original).digest() == self.digest


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
    if data[: len(MAGIC)] != MAGIC:
        raise NotAnLmgcFileError("not an lmgc file (magic bytes missing)")
    reader = Reader(data)
    reader.take(len(MAGIC), "magic")
    (version,) = _VERSION.unpack(reader.take(2, "version"))
    if version not in READABLE_VERSIONS:
        raise UnsupportedVersionError(
            f"lmgc format version {version} is not supported by this lmgc (reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}); install the lmgc release that wrote it"
        )
    if version == 1:
        container = _unpack_v1(reader, max_output_bytes)
    else:
        container = _unpack_v2(reader, max_output_bytes)
    if reader.remaining:
        raise CorruptDataError(f"lmgc file has {reader.remaining} unexpected trailing bytes")
    return container


def _header_length(reader: Reader, length: int) -> int:
    if length > MAX_HEADER_BYTES:
        raise LimitExceededError(f"lmgc header claims {length:,} bytes, more than {MAX_HEADER_BYTES:,}")
    if length > reader.remaining:
        raise CorruptDataError("lmgc file is truncated (while reading the header)")
    return length


def _check_frame_count(reader: Reader, header: Header) -> None:
    """Refuse a chunk count the remaining bytes cannot hold, before reading any chunk."""
    if header.n_chunks * _MIN_FRAME + 32 > reader.remaining:
        raise CorruptDataError(f"lmgc file is truncated: {header.n_chunks:,} chunks need at least "
                               f"{header.n_chunks * _MIN_FRAME + 32:,} more bytes, "
                               f"{reader.remaining:,} remain")  # fmt: skip


def _unpack_v2(reader: Reader, max_output_bytes: int | None) -> Container:
    header_bytes = reader.take(_header_length(reader, reader.leb128("header length")), "header")
    header_crc = zlib.crc32(header_bytes)
    if _U32.unpack(reader.take(4, "header checksum"))[0] != header_crc:
        raise CorruptDataError("lmgc header fails its CRC32 check: the file is corrupt")
    header = header_schema.check(header_schema.decode(header_bytes), version=2,
                                 max_output_bytes=max_output_bytes)  # fmt: skip
    _check_frame_count(reader, header)
    chunks, payloads = [], []
    for index in range(header.n_chunks):
        start = reader.pos
        length, count = reader.leb128("chunk frame"), reader.leb128("chunk frame")
        fields = bytes(reader.data[start : reader.pos])
        crc = _U32.unpack(reader.take(4, "chunk frame"))[0]
        payload = reader.take(length, "chunk payloads")
        if _frame_crc(header_crc, index, fields, payload) != crc:
            raise CorruptDataError(f"chunk {index} fails its CRC32 check: the file is corrupt")
        chunks.append(ChunkEntry(length, count, crc))
        payloads.append(payload)
    digest = reader.take(32, "digest")
    return Container(2, header, header_bytes, chunks, digest, payloads)


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
