"""How the fast context codec (:mod:`lmgc.priors.context`) walks one chunk's digit planes.

A chunk is held as *planes*: a ``(digits per value, values)`` uint8 array, digit ``p`` of every
value in row ``p``. The leading positions with *sequential* kinds (those that read earlier
values: the sign/exponent digits, where context pays) are coded in *lanes*: the chunk's values
are cut into up to ``MAX_LANES`` contiguous runs that advance in lockstep, one digit of every
lane per range-coder call, so a step costs one constriction call however many lanes there are.
The other positions are coded one after another, grouped by their context, with adaptive counts
refreshed between geometrically growing blocks (a few constriction calls per group).

The per-value work between those calls (contexts, count rows, count updates, grouping) is
compiled with numba (:mod:`lmgc.priors.context_kernels`): in numpy it took as long as the range
coder itself. Counts are float32 integers plus ``ALPHA`` updated in value order, exactly as
:class:`~.context_models.CountTable` does, so the coded bytes do not depend on this being
compiled.
"""

from __future__ import annotations

import numpy as np

from ..serialize import hex_digits, pack_hex_digits
from .context_models import ALPHA, KINDS, N_STRUCTURED, RAW, SEQUENTIAL_KINDS, ZERO_RAW
from .context_rows import compiled
from .digit_stream import DigitStream, code_adaptive_blocks

__all__ = ["MAX_LANES", "LANE_VALUES", "lane_layout", "code_planes", "digit_planes", "planes_to_bytes"]

MAX_LANES = 4096
LANE_VALUES = 256  # fewest values per lane: short lanes lose the previous-value context too often


def lane_layout(n_values: int) -> tuple[int, int]:
    """(lanes, values per lane) of a chunk of ``n_values`` values."""
    lanes = max(1, min(MAX_LANES, n_values // LANE_VALUES))
    return lanes, -(-n_values // lanes) if n_values else 0


def digit_planes(data: bytes, group: int) -> tuple[np.ndarray, np.ndarray]:
    """The (2 * group, values) uint8 planes of hex digits (high nibble first) of ``data``'s whole
    values, and the digits of a trailing partial value (int32)."""
    raw = np.frombuffer(data, dtype=np.uint8)
    n_values = len(raw) // group
    values = raw[: n_values * group].reshape(n_values, group).T
    planes = np.empty((2 * group, n_values), dtype=np.uint8)
    np.right_shift(values, 4, out=planes[0::2])
    np.bitwise_and(values, 15, out=planes[1::2])
    return planes, hex_digits(data[n_values * group :], np.int32)


def planes_to_bytes(planes: np.ndarray, tail: np.ndarray) -> bytes:
    """Inverse of :func:`digit_planes`."""
    values = np.empty((planes.shape[1], planes.shape[0] // 2), dtype=np.uint8)
    values.T[:] = (planes[0::2] << 4) | planes[1::2]
    return values.tobytes() + pack_hex_digits(tail)


#: Sequential digits the encoder codes per range-coder call (1 MiB of count rows).
ENCODE_BLOCK = 1 << 14


def _lane_major(rows: np.ndarray, lanes: int, length: int) -> np.ndarray:
    """``rows[..., value]`` as ``[..., t, lane]`` (value ``lane * length + t``), zero-padded: a
    step's digits side by side in memory."""
    padded = np.zeros((*rows.shape[:-1], lanes * length), dtype=rows.dtype)
    padded[..., : rows.shape[-1]] = rows
    return np.ascontiguousarray(padded.reshape(*rows.shape[:-1], lanes, length).swapaxes(-1, -2))


def _code_lanes(stream: DigitStream, planes: np.ndarray, kinds: list[str], flags: np.ndarray) -> None:
    """The leading positions with sequential kinds, all lanes in lockstep (fills ``planes``
    when decoding). Lane ``j`` holds values ``j * length ... (j + 1) * length - 1``."""
    k, n_values = len(kinds), planes.shape[1]
    if k == 0 or n_values == 0:
        return
    lanes, length = lane_layout(n_values)
    kernels = compiled()
    grid = _lane_major(planes[:k], lanes, length)
    flag_grid = _lane_major(flags, lanes, length) if len(flags) else np.zeros((0, 0), dtype=np.uint8)
    counts = np.full((k * N_STRUCTURED * (2 if len(flags) else 1), 16), ALPHA, dtype=np.float32)
    contexts = np.empty(lanes, dtype=np.int64)
    uses = np.array([KINDS[kind] for kind in kinds], dtype=np.int64)
    if stream.encoding:  # rows of many steps per range-coder call
        steps = max(1, ENCODE_BLOCK // (k * lanes))
        rows = np.empty((steps * k * lanes, 16), dtype=np.float32)
        digits = np.empty(len(rows), dtype=np.int32)
        for first in range(0, length, steps):
            n = kernels.lane_rows(grid, first, min(length, first + steps), n_values, uses, flag_grid, counts,
                                  contexts, rows, digits)  # fmt: skip
            stream.code_rows(digits[:n], rows[:n])
        return
    rows = np.empty((lanes, 16), dtype=np.float32)
    digits = np.empty(lanes, dtype=np.int32)
    for t in range(length):
        active = kernels.active_lanes(n_values, lanes, length, t)
        for p in range(k):
            kernels.lane_contexts(grid, p, t, active, uses[p], flag_grid, counts, contexts, rows, digits)
            coded = stream.code_rows(digits[:active], rows[:active])
            kernels.lane_update(grid, p, t, active, counts, contexts, coded)
    planes[:k] = grid.swapaxes(1, 2).reshape(k, -1)[:, :n_values]


def code_planes(stream: DigitStream, planes: np.ndarray, tail: np.ndarray, kinds: list[str],
                flags: np.ndarray | None = None) -> None:  # fmt: skip
    """Code (or, decoding, fill) one chunk's digits: sequential prefix, then plain positions, then
    the digits of a trailing partial value. Raw positions are not touched (they travel packed
    beside the range-coded part); kind ``zr`` (version 3) stores the digits of values not zero
    so far raw through ``stream``. ``flags``: 1 per row-predicted value (version 2)."""
    flags = np.zeros(0, dtype=np.uint8) if flags is None else flags.astype(np.uint8)
    sequential = [kind for kind in kinds if kind in SEQUENTIAL_KINDS]
    kernels = compiled()
    _code_lanes(stream, planes, sequential, flags)
    zero = np.ones(planes.shape[1], dtype=np.uint8)  # all earlier digits of the value are zero
    for p, plane in enumerate(planes):
        if p >= len(sequential) and kinds[p] != RAW:
            use_d1 = 0 if kinds[p] == ZERO_RAW else KINDS[kinds[p]][0]
            contexts, sizes = kernels.plain_contexts(planes, p, use_d1, flags, zero)
            digits = kernels.grouped(plane, contexts, sizes) if stream.encoding else np.zeros(len(plane), np.int32)
            start = 0
            for context in np.flatnonzero(sizes):
                group = digits[start : start + sizes[context]]
                zero_so_far = (context >> 1 if len(flags) else context) & 1
                if kinds[p] == ZERO_RAW and not zero_so_far:
                    stream.code_raw(group)  # a nonzero value's low digits: random
                else:
                    code_adaptive_blocks(stream, group)
                start += len(group)
            if not stream.encoding:
                kernels.ungroup(plane, contexts, sizes, digits)
        kernels.still_zero(zero, plane)
    if len(tail):
        tail[:] = stream.code_fixed(tail, np.ones(16))
