from __future__ import annotations

import pytest

from lmgc.container import FORMAT_VERSION, MAGIC, ChunkEntry, Container, pack, unpack
from lmgc.errors import CorruptDataError, NotAnLmgcFileError, UnsupportedVersionError


def _sample() -> Container:
    header = {"n_chunks": 2, "total_bytes": 10, "note": "x"}
    chunks = [ChunkEntry(4, 300, 0xDEADBEEF), ChunkEntry(8, 2, 1)]
    return Container(header, chunks, bytes(range(32)), [b"abcd", b"efghijkl"])


def test_round_trip():
    c = _sample()
    back = unpack(pack(c))
    assert back.header == c.header and back.chunks == c.chunks
    assert back.sha256 == c.sha256 and back.payloads == c.payloads
    assert back.offsets() == [0, 4]


def test_golden_bytes_pin_the_layout():
    data = pack(_sample())
    assert data[:8] == MAGIC == b"\x89LMGC\r\n\x1a"
    assert data[8:10] == FORMAT_VERSION.to_bytes(2, "little")
    header_len = int.from_bytes(data[10:14], "little")
    table = data[14 + header_len :]
    # LEB128(4), LEB128(300) = ac 02, CRC32 little-endian; then row 2; then digest; then payloads
    assert table[:7] == bytes([4, 0xAC, 0x02, 0xEF, 0xBE, 0xAD, 0xDE])
    assert table[7:13] == bytes([8, 2, 1, 0, 0, 0])
    assert table[13:45] == bytes(range(32))
    assert table[45:] == b"abcdefghijkl"


def test_not_an_lmgc_file():
    with pytest.raises(NotAnLmgcFileError, match="not an lmgc file"):
        unpack(b"PK\x03\x04 this is a zip")
    with pytest.raises(NotAnLmgcFileError):
        unpack(b"")


def test_unsupported_version():
    data = bytearray(pack(_sample()))
    data[8:10] = (FORMAT_VERSION + 1).to_bytes(2, "little")
    with pytest.raises(UnsupportedVersionError, match=f"version {FORMAT_VERSION + 1} is not supported"):
        unpack(bytes(data))


def test_every_truncation_is_detected():
    data = pack(_sample())
    for cut in range(len(MAGIC), len(data)):
        with pytest.raises(CorruptDataError):
            unpack(data[:cut])


def test_trailing_garbage_and_bad_header():
    data = pack(_sample())
    with pytest.raises(CorruptDataError, match="trailing"):
        unpack(data + b"\x00")
    bad = bytearray(data)
    bad[16] ^= 0xFF  # inside the zlib header
    with pytest.raises(CorruptDataError, match="header"):
        unpack(bytes(bad))
