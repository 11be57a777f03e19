"""Compact binary encoding of JSON-like values for the version-2 container header.

Why not JSON: the header of a one-tensor file was ~550 bytes of zlib JSON, more than the coded
data of a small federated update. Here one tag byte carries small integers, short lists and dicts,
and any string of a frozen table (field names, dtypes, embedded model names), so a typical header
is under 100 bytes; hex digests are stored as raw bytes.

Decoding is bounded by construction: every read is checked against the bytes that remain, a
count can never exceed the bytes left to hold its items, and nesting is limited, so a hostile
header costs time and memory proportional to its own length, never to a number it claims.

Tag byte::

    0x00-0x7f  string number N of STRINGS       0xc0 None, 0xc1 False, 0xc2 True
    0x80-0x9f  integer 0..31                    0xc3 uint LEB128, 0xc4 -1 - uint LEB128
    0xa0-0xaf  list of 0..15 items              0xc5 float64 little-endian
    0xb0-0xbf  dict of 0..15 (key, value) pairs 0xc6 UTF-8 string, 0xc7 lowercase hex string as
                                                bytes, each after a LEB128 byte length
                                                0xc8 list, 0xc9 dict, after a LEB128 count
"""

from __future__ import annotations

import re
import struct

from .errors import CorruptDataError, LimitExceededError

__all__ = ["STRINGS", "MAX_DEPTH", "encode_value", "decode_value", "leb128", "Reader"]

#: Frozen with container format version 2: append only together with a new format version.
STRINGS = (
    "", "total_bytes", "codec", "serialization", "group_bytes", "chunk_bytes", "batch_size",
    "prior", "kind", "version", "digit_contexts", "model", "weights_sha256", "tokenizer_sha256",
    "dtype", "device", "threads", "llm", "learning_rate", "environment", "torch", "transformers",
    "numpy", "constriction", "cpu_capability", "cuda_device", "manifest", "format", "tree",
    "metadata", "tensors", "name", "shape", "numpy_dtype", "lossy", "spec", "positions",
    "ideal_bits", "__tensor__", "__dict__", "__tuple__",
    "context", "llm-nibble", "hybrid", "smollm2-135m", "gemma3-270m", "cpu", "cuda",
    "float32", "bfloat16", "float16", "float64", "int8", "uint8", "int16", "int32", "int64", "bool",
    "npy", "pt", "safetensors", "raw", "object",
    "hex-comma-be", "hex-comma-le", "hex-none-be", "hex-none-le", "hex-space-be", "hex-space-le",
    "DEFAULT", "AVX2", "AVX512", "z", "zd", "zP", "s1", "s2", "sP2",
    "<f4", ">f4", "<f2", ">f2", "<f8", ">f8", "|i1", "|u1", "<i2", "<i4", "<i8", "|b1",
)  # fmt: skip
_INDEX = {s: i for i, s in enumerate(STRINGS)}
assert len(STRINGS) <= 0x80

MAX_DEPTH = 64  # nested lists/dicts; a tensor tree of nested state dicts needs ~3 per level
_SMALL_INT, _SMALL_LIST, _SMALL_DICT = 0x80, 0xA0, 0xB0
_NONE, _FALSE, _TRUE, _UINT, _NEGINT, _FLOAT, _STR, _HEX, _LIST, _DICT = range(0xC0, 0xCA)
_HEX_STRING = re.compile(r"(?:[0-9a-f]{2}){8,}")  # digests: half the bytes as raw bytes
_FLOAT64 = struct.Struct("<d")
_MAX_UINT = (1 << 64) - 1


def leb128(value: int) -> bytes:
    """Unsigned LEB128: 7 bits per byte, low first, high bit set on all but the last byte."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


class Reader:
    """Bounds-checked cursor over bytes: running off the end is a truncated file, never an
    IndexError; ``what`` names the part being read in the error."""

    def __init__(self, data: bytes | memoryview, what: str = "lmgc file") -> None:
        self.data, self.pos, self.what = memoryview(data), 0, what

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int, part: str) -> bytes:
        if n > self.remaining:
            raise CorruptDataError(f"{self.what} is truncated (while reading the {part})")
        chunk = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return chunk

    def byte(self, part: str) -> int:
        return self.take(1, part)[0]

    def leb128(self, part: str) -> int:
        value = shift = 0
        while True:
            byte = self.byte(part)
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                if value > _MAX_UINT:
                    break
                return value
            shift += 7
            if shift > 63:
                break
        raise CorruptDataError(f"{self.what} is corrupt (an integer in the {part} is too long)")

    def count(self, part: str) -> int:
        """A length or item count: at most the bytes left, since each item takes at least one."""
        n = self.leb128(part)
        if n > self.remaining:
            raise CorruptDataError(f"{self.what} is corrupt ({part} claims {n:,} items, "
                                   f"{self.remaining:,} bytes remain)")  # fmt: skip
        return n


def encode_value(value, out: bytearray | None = None) -> bytearray:
    """Append the encoding of a JSON-like value (None, bool, int, float, str, list, tuple, dict
    with string keys) to ``out``."""
    out = bytearray() if out is None else out
    if value is None or isinstance(value, bool):
        out.append({None: _NONE, False: _FALSE, True: _TRUE}[value])
    elif isinstance(value, int):
        if 0 <= value < 32:
            out.append(_SMALL_INT + value)
        elif -_MAX_UINT - 1 <= value <= _MAX_UINT:
            out.append(_UINT if value >= 0 else _NEGINT)
            out += leb128(value if value >= 0 else -1 - value)
        else:
            raise ValueError(f"integer {value} does not fit 64 bits")
    elif isinstance(value, float):
        out.append(_FLOAT)
        out += _FLOAT64.pack(value)
    elif isinstance(value, str):
        _encode_string(value, out)
    elif isinstance(value, (list, tuple)):
        _encode_count(len(value), _SMALL_LIST, _LIST, out)
        for item in value:
            encode_value(item, out)
    elif isinstance(value, dict):
        _encode_count(len(value), _SMALL_DICT, _DICT, out)
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"dict key {key!r} is not a string")
            _encode_string(key, out)
            encode_value(item, out)
    else:
        raise ValueError(f"cannot encode a {type(value).__name__} in a header")
    return out


def _encode_string(value: str, out: bytearray) -> None:
    if value in _INDEX:
        out.append(_INDEX[value])
    elif _HEX_STRING.fullmatch(value):
        raw = bytes.fromhex(value)
        out += bytes([_HEX]) + leb128(len(raw)) + raw
    else:
        raw = value.encode("utf-8")
        out += bytes([_STR]) + leb128(len(raw)) + raw


def _encode_count(n: int, small: int, large: int, out: bytearray) -> None:
    if n < 16:
        out.append(small + n)
    else:
        out += bytes([large]) + leb128(n)


def decode_value(reader: Reader, depth: int = 0):
    """Read one value written by :func:`encode_value`.

    Raises:
        CorruptDataError: unknown tag, truncation, invalid UTF-8, a non-string dict key.
        LimitExceededError: nesting deeper than :data:`MAX_DEPTH`.
    """
    tag = reader.byte("header")
    if tag < _SMALL_INT:
        if tag >= len(STRINGS):
            raise CorruptDataError(f"{reader.what} header is corrupt (unknown string number {tag})")
        return STRINGS[tag]
    if tag < _SMALL_LIST:
        return tag - _SMALL_INT
    if tag < _NONE:
        if depth >= MAX_DEPTH:
            raise LimitExceededError(f"{reader.what} header nests deeper than {MAX_DEPTH} levels")
        n = tag & 0x0F
        return _decode_list(reader, n, depth) if tag < _SMALL_DICT else _decode_dict(reader, n, depth)
    if tag in (_NONE, _FALSE, _TRUE):
        return (None, False, True)[tag - _NONE]
    if tag == _UINT:
        return reader.leb128("header")
    if tag == _NEGINT:
        return -1 - reader.leb128("header")
    if tag == _FLOAT:
        return _FLOAT64.unpack(reader.take(8, "header"))[0]
    if tag == _STR:
        raw = reader.take(reader.count("header"), "header")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise CorruptDataError(f"{reader.what} header holds invalid UTF-8") from None
    if tag == _HEX:
        return reader.take(reader.count("header"), "header").hex()
    if tag in (_LIST, _DICT):
        if depth >= MAX_DEPTH:
            raise LimitExceededError(f"{reader.what} header nests deeper than {MAX_DEPTH} levels")
        n = reader.count("header")
        return _decode_list(reader, n, depth) if tag == _LIST else _decode_dict(reader, n, depth)
    raise CorruptDataError(f"{reader.what} header is corrupt (unknown tag 0x{tag:02x})")


def _decode_list(reader: Reader, n: int, depth: int) -> list:
    return [decode_value(reader, depth + 1) for _ in range(n)]


def _decode_dict(reader: Reader, n: int, depth: int) -> dict:
    out = {}
    for _ in range(n):
        key = decode_value(reader, depth + 1)
        if not isinstance(key, str) or key in out:
            raise CorruptDataError(f"{reader.what} header is corrupt (bad or repeated key {key!r})")
        out[key] = decode_value(reader, depth + 1)
    return out
