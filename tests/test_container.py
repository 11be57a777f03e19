"""The .lmgc layout (version 2 written, 1 and 2 read), its header encoding and its schema checks."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import zlib

import pytest

from lmgc import wire
from lmgc.container import FORMAT_VERSION, MAGIC, ContainerWriter, pack, unpack
from lmgc.errors import (
    CorruptDataError,
    LimitExceededError,
    NotAnLmgcFileError,
    UnsupportedVersionError,
)
from lmgc.header import check
from lmgc.testing import forge

FIELDS = {
    "total_bytes": 10,
    "codec": {"serialization": "hex-comma-be", "group_bytes": 1, "chunk_bytes": 4, "batch_size": 2},
    "prior": {"kind": "context", "version": 1, "digit_contexts": ["z", "zd"]},
    "environment": {"constriction": "0.5.0"},
    "manifest": {"format": "raw", "tree": {"__tensor__": 0}, "metadata": None,
                 "tensors": [{"name": "", "dtype": "uint8", "shape": [10], "kind": "numpy",
                              "numpy_dtype": None}]},
}  # fmt: skip
ORIGINAL = bytes(range(10))
PAYLOADS = [b"abcd", b"efghijkl", b""]


def _sample() -> bytes:
    return pack(FIELDS, PAYLOADS, [8, 300, 4], [ORIGINAL[:3], ORIGINAL[3:]])


def test_round_trip_and_digest():
    container = unpack(_sample())
    assert container.version == FORMAT_VERSION == 2
    assert container.header.fields == FIELDS and container.header.n_chunks == 3
    assert container.payloads == PAYLOADS and [c.n_symbols for c in container.chunks] == [8, 300, 4]
    assert container.offsets() == [0, 4, 12]
    assert container.matches(ORIGINAL) and not container.matches(ORIGINAL[::-1])


def test_golden_bytes_pin_the_layout():
    data = _sample()
    header = wire.encode_value(FIELDS)
    assert data[:8] == MAGIC == b"\x89LMGC\r\n\x1a" and data[8:10] == b"\x02\x00"
    assert data[10] == len(header) and data[11 : 11 + len(header)] == header
    rest = data[11 + len(header) :]
    assert int.from_bytes(rest[:4], "little") == zlib.crc32(header)
    # frame: LEB128(4), LEB128(8), CRC32, payload; LEB128(300) = ac 02
    assert rest[4:6] == bytes([4, 8]) and rest[10:14] == b"abcd"
    assert rest[14:16] == bytes([8, 0xAC]) and rest[17:21] != b"" and rest[21:29] == b"efghijkl"
    assert rest[-32:] == hashlib.sha256(header + ORIGINAL).digest()


def test_writer_streams_to_a_file_object():
    out = io.BytesIO()
    writer = ContainerWriter(out, FIELDS)
    for payload, count in zip(PAYLOADS, [8, 300, 4]):
        writer.add_chunk(payload, count)
    writer.add_original(ORIGINAL)
    assert writer.finish() == len(out.getvalue()) and out.getvalue() == _sample()


def test_small_header():
    """A one-tensor context file's fixed overhead (everything but its one frame) is <= 128 B."""
    data = _sample()
    frames = sum(len(p) + 6 for p in PAYLOADS) + 1  # 300 takes two LEB128 bytes
    assert len(data) - frames <= 128


def test_not_an_lmgc_file_and_unknown_version():
    with pytest.raises(NotAnLmgcFileError, match="not an lmgc file"):
        unpack(b"PK\x03\x04 this is a zip")
    with pytest.raises(NotAnLmgcFileError):
        unpack(b"")
    data = bytearray(_sample())
    data[8:10] = (FORMAT_VERSION + 1).to_bytes(2, "little")
    with pytest.raises(UnsupportedVersionError, match=f"version {FORMAT_VERSION + 1} is not supported"):
        unpack(bytes(data))


def test_every_truncation_and_every_byte_flip_is_refused_before_decoding():
    data = _sample()
    for cut in range(len(MAGIC), len(data)):
        with pytest.raises(CorruptDataError):
            unpack(data[:cut])
    with pytest.raises(CorruptDataError, match="trailing"):
        unpack(data + b"\x00")
    for position in range(10, len(data) - 32):  # the digest is checked after decoding
        flipped = bytearray(data)
        flipped[position] ^= 0x01
        with pytest.raises((CorruptDataError, LimitExceededError)):
            unpack(bytes(flipped))


def test_swapped_frames_are_refused():
    container = unpack(_sample())
    swapped = forge(_sample(), payloads=PAYLOADS[:2][::-1] + PAYLOADS[2:])
    assert unpack(swapped).payloads[0] == b"efghijkl"  # forged: CRCs recomputed for the new order
    plain = _sample()
    first, second = (plain.index(p) for p in PAYLOADS[:2])
    frame_a = plain[first - 6 : first + 4]
    frame_b = plain[second - 7 : second + 8]
    moved = plain.replace(frame_a + frame_b, frame_b + frame_a)
    assert moved != plain and container.chunks[0].crc32 != container.chunks[1].crc32
    with pytest.raises(CorruptDataError, match="chunk 0 fails its CRC32"):
        unpack(moved)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda h: h.update(total_bytes=2**64 - 1), "more than the"),
        (lambda h: h.update(total_bytes=1e300), "total_bytes"),
        (lambda h: h.update(total_bytes=-1), "total_bytes"),
        (lambda h: h["codec"].update(chunk_bytes=0), "chunk_bytes"),
        (lambda h: h["codec"].update(group_bytes=3), "serialization"),
        (lambda h: h["codec"].update(batch_size=True), "batch_size"),
        (lambda h: h.pop("prior"), "missing"),
        (lambda h: h.update(extra=1), "unknown"),
        (lambda h: h.update(prior={"kind": "llm", "model": "evil/model"}), "LLM prior"),
        (lambda h: h["prior"].update(digit_contexts=["z", "nope"]), "digit_contexts"),
        (lambda h: h.update(environment=[1]), "environment"),
        (lambda h: h["manifest"]["tensors"][0].update(dtype="object"), "dtype"),
        (lambda h: h["manifest"]["tensors"][0].update(shape=[2, 4]), "add up"),
        (lambda h: h["manifest"]["tensors"][0].update(kind="torch", numpy_dtype="|u1"), "numpy dtype"),
        (lambda h: h["manifest"]["tensors"][0].update(numpy_dtype="O"), "numpy dtype"),
        (lambda h: h["manifest"]["tensors"][0].update(numpy_dtype={"unhashable": []}), "numpy dtype"),
        (lambda h: h["manifest"].update(tree=5), "exactly once"),
        (lambda h: h["manifest"].update(tree={"__tensor__": 3}), "tensor index"),
        (lambda h: h["manifest"].update(format="exe"), "format"),
        (lambda h: h.update(lossy={"lossy": 1, "spec": "quant:8", "positions": "",
                                   "manifest": {**h["manifest"], "tensors": [
                                       {**h["manifest"]["tensors"][0], "shape": [1 << 40]}]}}),
         "more than"),
    ],
)
def test_schema_refuses_forged_fields(edit, message):
    fields = copy.deepcopy(FIELDS)
    edit(fields)
    with pytest.raises((CorruptDataError, LimitExceededError), match=message):
        unpack(forge(_sample(), fields))


def test_size_limits_are_checked_before_allocation():
    big = copy.deepcopy(FIELDS) | {"total_bytes": 10**10}
    big["manifest"]["tensors"][0]["shape"] = [10**10]
    with pytest.raises(LimitExceededError, match="more than the"):
        check(big, version=2)
    with pytest.raises(CorruptDataError, match="truncated: 2,500,000,000 chunks"):
        unpack(forge(_sample(), big), max_output_bytes=None)


def test_version1_header_inflation_is_capped():
    bomb = zlib.compress(b" " * (17 << 20), 9)
    data = MAGIC + b"\x01\x00" + len(bomb).to_bytes(4, "little") + bomb
    with pytest.raises(LimitExceededError, match="inflates to more than"):
        unpack(data)


def _version1(fields: dict, rows: bytes = b"") -> bytes:
    header = zlib.compress(json.dumps(fields).encode())
    return MAGIC + b"\x01\x00" + len(header).to_bytes(4, "little") + header + rows + bytes(32)


@pytest.mark.parametrize("total, message", [(10**400, "total_bytes"), ("1e400", "total_bytes"),
                                            (10, "n_chunks")])  # fmt: skip
def test_version1_headers_are_checked_too(total, message):
    fields = copy.deepcopy(FIELDS) | {"n_chunks": 2, "total_bytes": total}
    with pytest.raises(CorruptDataError, match=message):
        unpack(_version1(fields))
    not_zlib = b"{not zlib"
    with pytest.raises(CorruptDataError, match="header is corrupt"):
        unpack(MAGIC + b"\x01\x00" + len(not_zlib).to_bytes(4, "little") + not_zlib)
