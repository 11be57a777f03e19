"""Forging containers, for testing decoders the way a hostile or careless sender would.

A byte flip is caught by a CRC long before decoding; :func:`forge` builds the harder cases: a
container whose header or frames were edited *and* whose lengths and CRCs were recomputed, so
only the schema checks, the symbol-count checks and the final digest stand between the edit and
a wrong result.
"""

from __future__ import annotations

import zlib

from . import header as header_schema
from .container import _U32, _VERSION, FORMAT_VERSION, MAGIC, _frame_crc, unpack
from .wire import leb128

__all__ = ["forge", "field_paths"]


def forge(data: bytes, fields=None, payloads=None, n_symbols=None, digest: bytes | None = None) -> bytes:
    """A version-2 container like ``data`` with any of its header fields (any JSON-like value,
    even an invalid one), payloads, symbol counts or digest replaced; every length and CRC is
    recomputed to match, while the digest is kept unless given."""
    container = unpack(data, max_output_bytes=None)
    fields = container.header.fields if fields is None else fields
    payloads = container.payloads if payloads is None else payloads
    counts = [c.n_symbols for c in container.chunks] if n_symbols is None else n_symbols
    head = header_schema.encode(fields)
    head_crc = zlib.crc32(head)
    out = bytearray(MAGIC + _VERSION.pack(FORMAT_VERSION) + leb128(len(head)) + head + _U32.pack(head_crc))
    for index, (payload, count) in enumerate(zip(payloads, counts)):
        frame = leb128(len(payload)) + leb128(count)
        out += frame + _U32.pack(_frame_crc(head_crc, index, frame, payload)) + payload
    return bytes(out + (container.digest if digest is None else digest))


def field_paths(value, prefix: tuple = ()):
    """Every path of keys and indices into a JSON-like value (the value itself first), to pick
    a header field to edit."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from field_paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from field_paths(item, (*prefix, index))
