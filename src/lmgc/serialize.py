"""Stage 1: bytes <-> text an LLM can read.

LM-GC writes every byte as two hex digits (or as one ISO-8859-1 character), groups the bytes of
one value together and joins the groups with a separator. Groups have a fixed width, so parsing
never depends on the separator being unique (the paper's ``0x`` variant works the same way).

>>> s = Serialization.parse("hex-space")
>>> s.to_text(bytes([0x3c, 0xa1, 0x00, 0xff, 0x12]), group_bytes=2)
'3ca1 00ff 12'
>>> s.from_text('3ca1 00ff 12', n_bytes=5, group_bytes=2)
b'<\\xa1\\x00\\xff\\x12'
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import SerializationError

__all__ = ["Serialization", "SEPARATORS", "DEFAULT_SERIALIZATION", "GROUP_SIZES", "check_group_bytes",
           "hex_digits", "pack_hex_digits"]  # fmt: skip

#: Separator names usable in a serialization spec, as in ``hex-commaspace``.
SEPARATORS: dict[str, str] = {
    "none": "",
    "space": " ",
    "comma": ",",
    "commaspace": ", ",
    "semicolon": ";",
    "newline": "\n",
    "0x": "0x",
}
_ENCODINGS = ("hex", "iso")
_BYTE_ORDERS = {"le": "little", "be": "big"}
#: Measured best on real gradients with SmolLM2-135M (benchmarks/results/codec_rate*.md).
DEFAULT_SERIALIZATION = "hex-comma-be"


@dataclass(frozen=True)
class Serialization:
    """How bytes become text.

    Attributes:
        encoding: ``"hex"`` (two lowercase digits per byte) or ``"iso"`` (one Latin-1 char per byte).
        separator: the string written between groups.
        byte_order: ``"big"`` puts the sign/exponent byte of each value first (measured to help the
            LLM); ``"little"`` keeps the native layout the paper used. Applied per tensor element
            before chunking, see :meth:`order_bytes`.

    Bytes per group are not part of it: they follow from the data (or
    :class:`~lmgc.config.CodecConfig`) and are passed to each call.
    """

    encoding: str = "hex"
    separator: str = " "
    byte_order: str = "big"

    def __post_init__(self) -> None:
        if self.encoding not in _ENCODINGS:
            raise SerializationError(f"unknown encoding {self.encoding!r}; use one of {_ENCODINGS}")
        if self.byte_order not in _BYTE_ORDERS.values():
            raise SerializationError(f"byte order must be 'little' or 'big', not {self.byte_order!r}")
        if self.separator not in SEPARATORS.values():
            raise SerializationError(f"separator {self.separator!r} is not one of {sorted(SEPARATORS)}")

    @classmethod
    def parse(cls, spec: str) -> Serialization:
        """Build from a spec like ``hex``, ``hex-space``, ``hex-commaspace-le`` or ``iso-space``."""
        parts = spec.lower().split("-")
        encoding, rest = parts[0], parts[1:]
        if encoding not in _ENCODINGS:
            raise SerializationError(f"bad serialization {spec!r}: encoding must be one of {_ENCODINGS}")
        byte_order = "big"
        if rest and rest[-1] in _BYTE_ORDERS:
            byte_order = _BYTE_ORDERS[rest.pop()]
        if len(rest) > 1 or (rest and rest[0] not in SEPARATORS):
            raise SerializationError(
                f"bad serialization {spec!r}: expected ENCODING[-SEPARATOR][-le|-be] with encoding in "
                f"{_ENCODINGS} and separator in {sorted(SEPARATORS)}"
            )
        separator = SEPARATORS[rest[0]] if rest else ""
        return cls(encoding, separator, byte_order)

    @property
    def spec(self) -> str:
        """The canonical spec string (inverse of :meth:`parse`, without the group size)."""
        sep_name = next(k for k, v in SEPARATORS.items() if v == self.separator)
        order = "be" if self.byte_order == "big" else "le"
        return f"{self.encoding}-{sep_name}-{order}"

    def alphabet(self) -> frozenset[str]:
        """Every character this serialization can write (the LLM prior is restricted to them)."""
        if self.encoding == "hex":
            chars = set("0123456789abcdef")
        else:
            chars = {chr(b) for b in range(256)}
        return frozenset(chars | set(self.separator))

    def order_bytes(self, raw: bytes, itemsize: int) -> bytes:
        """Put each element's bytes in this serialization's order (an involution: also undoes it)."""
        if self.byte_order == "little" or itemsize == 1 or not raw:
            return raw
        return np.frombuffer(raw, dtype=np.uint8).reshape(-1, itemsize)[:, ::-1].tobytes()

    def _group_chars(self) -> int:
        return 2 if self.encoding == "hex" else 1

    def to_text(self, data: bytes, group_bytes: int) -> str:
        """Serialize ``data`` with groups of ``group_bytes`` bytes (the last group may be shorter)."""
        body = data.hex() if self.encoding == "hex" else data.decode("latin-1")
        width = group_bytes * self._group_chars()
        return self.separator.join(body[i : i + width] for i in range(0, len(body), width))

    def from_text(self, text: str, n_bytes: int, group_bytes: int) -> bytes:
        """Parse text written by :meth:`to_text` for ``n_bytes`` bytes; reject anything else."""
        expected = self.to_text_length(n_bytes, group_bytes)
        if len(text) != expected:
            raise SerializationError(f"decoded text has {len(text)} characters, expected {expected}")
        width = group_bytes * self._group_chars()
        stride = width + len(self.separator)
        groups = [text[i : i + width] for i in range(0, len(text), stride)]
        seps = {text[i + width : i + stride] for i in range(0, len(text) - width, stride)}
        if seps - {self.separator}:
            raise SerializationError("decoded text has separators in the wrong places")
        body = "".join(groups)
        try:
            if self.encoding == "hex":
                if body != body.lower():
                    raise ValueError("uppercase digits")
                return bytes.fromhex(body)
            return body.encode("latin-1")
        except ValueError as exc:
            raise SerializationError(f"decoded text is not valid {self.encoding}: {exc}") from None

    def to_text_length(self, n_bytes: int, group_bytes: int) -> int:
        """Length in characters of the text for ``n_bytes`` bytes."""
        if n_bytes == 0:
            return 0
        n_groups = -(-n_bytes // group_bytes)
        return n_bytes * self._group_chars() + (n_groups - 1) * len(self.separator)


#: Bytes per group the serializations support (the element sizes of the float and int dtypes).
GROUP_SIZES = (1, 2, 4, 8)


def check_group_bytes(group_bytes: int) -> int:
    """``group_bytes`` if it is one of :data:`GROUP_SIZES`; SerializationError otherwise."""
    if group_bytes not in GROUP_SIZES or isinstance(group_bytes, bool):
        raise SerializationError(f"bytes per group must be 1, 2, 4 or 8, not {group_bytes!r}")
    return group_bytes


def hex_digits(data: bytes, dtype=np.int64) -> np.ndarray:
    """The hex digits ``data.hex()`` spells, as integers 0..15 (high nibble first)."""
    raw = np.frombuffer(data, dtype=np.uint8)
    digits = np.empty(2 * len(raw), dtype=dtype)
    digits[0::2], digits[1::2] = raw >> 4, raw & 15
    return digits


def pack_hex_digits(digits: np.ndarray) -> bytes:
    """Inverse of :func:`hex_digits`; an odd count is completed with a zero digit."""
    digits = np.asarray(digits, dtype=np.uint8)
    if len(digits) % 2:
        digits = np.append(digits, np.uint8(0))
    return ((digits[0::2] << 4) | digits[1::2]).tobytes()
