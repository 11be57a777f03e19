"""Stage 4: the self-describing, versioned ``.lmgc`` container.

Layout (all integers little-endian)::

    magic      8 bytes   b"\\x89LMGC\\r\\n\\x1a"
    version    u16       FORMAT_VERSION
    header_len u32
    header     zlib-compressed UTF-8 JSON: codec config, prior identity, environment,
               tensor manifest, chunk count, total original bytes
    chunk table, one row per chunk:
               LEB128 payload length, LEB128 symbol count, u32 CRC32 of the chunk's bytes
    sha256     32 bytes  over all original bytes
    payloads   concatenated in chunk order (each chunk's offset is the sum of earlier lengths)

Everything :func:`lmgc.decompress` needs is inside; truncation and corruption are detected.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass

from .errors import CorruptDataError, NotAnLmgcFileError, UnsupportedVersionError

__all__ = ["MAGIC", "FORMAT_VERSION", "ChunkEntry", "Container", "pack", "unpack"]

MAGIC = b"\x89LMGC\r\n\x1a"
FORMAT_VERSION = 1
_PREAMBLE = struct.Struct("<8sHI")


@dataclass(frozen=True)
class ChunkEntry:
    """One row of the chunk table."""

    payload_length: int
    n_symbols: int
    crc32: int


@dataclass
class Container:
    header: dict
    chunks: list[ChunkEntry]
    sha256: bytes
    payloads: list[bytes]

    def offsets(self) -> list[int]:
        """Byte offset of each payload from the start of the payload section."""
        offsets, position = [], 0
        for entry in self.chunks:
            offsets.append(position)
            position += entry.payload_length
        return offsets


def _leb128(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


class _Reader:
    """Bounds-checked cursor: running off the end is a truncated file, never an IndexError."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise CorruptDataError(f"lmgc file is truncated (while reading the {what})")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def leb128(self, what: str) -> int:
        value = shift = 0
        while True:
            byte = self.take(1, what)[0]
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value
            if shift > 63:
                raise CorruptDataError(f"lmgc file is corrupt (bad integer in the {what})")


def pack(container: Container) -> bytes:
    header = zlib.compress(json.dumps(container.header, separators=(",", ":")).encode(), 9)
    parts = [_PREAMBLE.pack(MAGIC, FORMAT_VERSION, len(header)), header]
    for entry in container.chunks:
        parts += [_leb128(entry.payload_length), _leb128(entry.n_symbols), struct.pack("<I", entry.crc32)]
    parts.append(container.sha256)
    parts.extend(container.payloads)
    return b"".join(parts)


def unpack(data: bytes) -> Container:
    """Parse a container, checking magic, version and lengths (not the checksums: see codec).

    Raises:
        NotAnLmgcFileError, UnsupportedVersionError, CorruptDataError.
    """
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise NotAnLmgcFileError("not an lmgc file (magic bytes missing)")
    reader = _Reader(data)
    _, version, header_length = _PREAMBLE.unpack(reader.take(_PREAMBLE.size, "preamble"))
    if version != FORMAT_VERSION:
        raise UnsupportedVersionError(
            f"lmgc format version {version} is not supported by this lmgc (reads version "
            f"{FORMAT_VERSION}); install the lmgc release that wrote it"
        )
    try:
        header = json.loads(zlib.decompress(reader.take(header_length, "header")))
        n_chunks = int(header["n_chunks"])
    except (zlib.error, ValueError, KeyError, TypeError) as exc:
        raise CorruptDataError(f"lmgc header is corrupt: {exc}") from None
    chunks = [
        ChunkEntry(reader.leb128("chunk table"), reader.leb128("chunk table"),
                   struct.unpack("<I", reader.take(4, "chunk table"))[0])
        for _ in range(n_chunks)
    ]  # fmt: skip
    digest = reader.take(32, "digest")
    payloads = [reader.take(entry.payload_length, "chunk payloads") for entry in chunks]
    if reader.pos != len(data):
        raise CorruptDataError(f"lmgc file has {len(data) - reader.pos} unexpected trailing bytes")
    return Container(header, chunks, digest, payloads)
