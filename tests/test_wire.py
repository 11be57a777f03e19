"""The version-2 header encoding: JSON-like values round-trip, and any bytes decode to a value or a
typed error, in time and memory bounded by their own length."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lmgc import wire
from lmgc.errors import CorruptDataError, LimitExceededError


def test_small_values_take_one_byte():
    assert wire.encode_value(None) == b"\xc0" and wire.encode_value(True) == b"\xc2"
    assert wire.encode_value(31) == bytes([0x80 + 31]) and wire.encode_value(32) == b"\xc3\x20"
    assert wire.encode_value(-1) == b"\xc4\x00"
    assert len(wire.encode_value("codec")) == 1  # a string of the frozen table
    assert wire.encode_value({"total_bytes": [1, 2]}) == bytes([0xb1, wire.STRINGS.index("total_bytes"),
                                                                0xa2, 0x81, 0x82])  # fmt: skip


def test_hex_digests_are_stored_as_bytes():
    digest = "ab" * 32
    encoded = wire.encode_value(digest)
    assert encoded[0] == 0xc7 and len(encoded) == 2 + 32
    assert wire.decode_value(wire.Reader(encoded)) == digest


def test_leb128():
    assert wire.leb128(0) == b"\x00" and wire.leb128(127) == b"\x7f" and wire.leb128(300) == b"\xac\x02"
    assert wire.Reader(b"\xac\x02").leb128("length") == 300


@pytest.mark.parametrize("data, message", [
    (b"\xc3\x80", "truncated"),              # an unterminated LEB128
    (b"\xc6\x05ab", "claims 5 items, 2 bytes remain"),  # a string longer than the bytes left
    (b"\xc8\xff\xff\xff\x0f", "claims 33,554,431 items, 0 bytes remain"),  # a list count too
    (bytes([len(wire.STRINGS)]), "string"),  # a string number past the table
])  # fmt: skip
def test_claims_beyond_the_data_are_refused(data, message):
    with pytest.raises(CorruptDataError, match=message):
        wire.decode_value(wire.Reader(data))


def test_nesting_is_limited():
    deep = wire.encode_value([[[[]]]])
    with pytest.raises(LimitExceededError, match="nests deeper"):
        wire.decode_value(wire.Reader(b"\xa1" * (wire.MAX_DEPTH + 1) + b"\xa0"))
    assert wire.decode_value(wire.Reader(deep)) == [[[[]]]]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=20) | st.sampled_from(wire.STRINGS) | st.binary(min_size=8, max_size=40).map(bytes.hex),
    lambda inner: st.lists(inner, max_size=20) | st.dictionaries(st.text(max_size=8), inner, max_size=20),
    max_leaves=40,
)  # fmt: skip


@given(json_values)
def test_wire_round_trips_json_values(value):
    assert wire.decode_value(wire.Reader(wire.encode_value(value))) == value


@given(st.binary(max_size=200))
def test_wire_decoding_any_bytes_is_typed(data):
    try:
        wire.decode_value(wire.Reader(data))
    except (CorruptDataError, LimitExceededError):
        pass
