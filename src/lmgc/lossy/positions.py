"""Kept positions of a sparsification stage: a bitmap or delta-coded LEB128 varints.

Each stream takes whichever of the two is smaller (ties go to the bitmap); the choice travels as one
character, ``b`` or ``d``, in the pipeline's ``info``.
"""

from __future__ import annotations

import numpy as np

from ..errors import CorruptDataError

__all__ = ["encode_positions", "decode_positions"]


def _varints(values: np.ndarray) -> bytes:
    """Unsigned LEB128 of every value, concatenated."""
    values = values.astype(np.uint64)
    if values.size == 0:
        return b""
    lengths = np.ones(values.size, dtype=np.int64)
    rest = values >> np.uint64(7)
    while rest.any():
        lengths += rest > 0
        rest >>= np.uint64(7)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    out = np.zeros(int(lengths.sum()), dtype=np.uint8)
    for j in range(int(lengths.max())):
        sel = lengths > j
        low = (values[sel] >> np.uint64(7 * j)) & np.uint64(0x7F)
        more = np.where(lengths[sel] > j + 1, 0x80, 0).astype(np.uint64)
        out[offsets[sel] + j] = (low | more).astype(np.uint8)
    return out.tobytes()


def _unvarints(data: bytes, count: int) -> np.ndarray:
    raw = np.frombuffer(data, np.uint8)
    last = (raw & 0x80) == 0
    ends = np.flatnonzero(last)
    if ends.size != count or (raw.size and not last[-1]):
        raise CorruptDataError(f"lossy payload: expected {count} delta-coded positions")
    starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
    lengths = ends - starts + 1
    if count and lengths.max() > 9:
        raise CorruptDataError("lossy payload: position varint too long")
    values = np.zeros(count, dtype=np.uint64)
    for j in range(int(lengths.max()) if count else 0):
        sel = lengths > j
        values[sel] |= (raw[starts[sel] + j] & 0x7F).astype(np.uint64) << np.uint64(7 * j)
    return values.astype(np.int64)


def encode_positions(positions: np.ndarray, m: int) -> tuple[str, bytes]:
    """The cheaper of a bitmap (ceil(m/8) bytes) and delta-coded varints; ties go to the bitmap."""
    gaps = np.diff(positions, prepend=-1) - 1
    deltas = _varints(gaps)
    if len(deltas) < -(-m // 8):
        return "d", deltas
    mask = np.zeros(m, dtype=bool)
    mask[positions] = True
    return "b", np.packbits(mask).tobytes()


def decode_positions(kind: str, data: bytes, m: int, k: int) -> np.ndarray:
    """The ``k`` sorted positions among ``m`` values that :func:`encode_positions` wrote.

    Raises:
        CorruptDataError: the stream does not hold exactly ``k`` positions below ``m``.
    """
    if kind == "b":
        bits = np.unpackbits(np.frombuffer(data, np.uint8))
        if np.any(bits[m:]) or int(bits[:m].sum()) != k:
            raise CorruptDataError(f"lossy payload: position bitmap does not mark {k} of {m}")
        return np.flatnonzero(bits[:m]).astype(np.int64)
    positions = np.cumsum(_unvarints(data, k) + 1) - 1
    if k and positions[-1] >= m:
        raise CorruptDataError(f"lossy payload: position {positions[-1]} beyond {m} values")
    return positions
