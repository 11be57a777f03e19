"""How ``--level max`` lays out a chunk for its kernels (:mod:`lmgc.priors.cm_model`): lanes of
values coded in lockstep, per block of 4096 values the strides its models look back by, and the
byte positions stored raw, which the encoder chooses and records.

A lane starts without history, so lanes are long where the input allows; a decoder step costs
two calls whatever the number of lanes, so there are enough of them. The strides are a tensor's
rows, conv kernels and channels, found from the values alone: the encoder knows nothing of
the tensors' shapes, and the decoder reads the recorded choice (two or three bytes a block)."""

from __future__ import annotations

import numpy as np

__all__ = ["BLOCK_BITS", "FULL_BYTES", "STRIDES", "choose_fit_strides", "choose_strides", "lane_layout",
           "raw_positions"]

MAX_LANES = 512  # a decoder step's two calls cost ~4 us: 512 lanes' bits amortize them
LANE_VALUES = 128  # fewest values per lane: each lane starts without history
MIN_LANES = 128  # a step with fewer lanes spends more on calls than on the model
LONG_LANE = 1024  # values per lane where there are enough: long rows (strides) fit in a lane
#: Row strides the encoder tries: powers of two, conv kernel sizes (3x3 -> 9) and kernel sizes
#: times channel counts (a conv weight gradient's in-channel repeats every 9 * in_channels).
STRIDES = (2, 3, 4, 5, 7, 8, 9, 16, 25, 27, 32, 49, 64, 75, 96, 128, 144, 192, 256, 288, 384,
           512, 576, 768, 784, 1024, 1152, 2048, 2304, 4096, 4608, 8192, 9216)  # fmt: skip
SHORT = 64  # strides below this are "short" (within a kernel or a few channels)
BLOCK_BITS = 12  # values per block of one row stride: 4096 (the kernels read it from here)
FULL_BYTES = 2  # leading bytes of a value seen by every model and both APMs (sign, exponent)


def lane_layout(n_values: int) -> tuple[int, int]:
    """(lanes, values per lane) for a chunk of ``n_values`` values (part of the format): lanes
    of :data:`LONG_LANE` values (long rows fit in them), but at least :data:`MIN_LANES` lanes
    of :data:`LANE_VALUES` or more values (a decoder step must have some work) and at most
    :data:`MAX_LANES`."""
    lanes = max(1, min(MAX_LANES, max(n_values // LONG_LANE, min(MIN_LANES, n_values // LANE_VALUES))))
    return lanes, -(-n_values // lanes) if n_values else 0


def _heads(matrix: np.ndarray) -> np.ndarray:
    """Top 12 bits of each value (as :func:`lmgc.priors.cm_arith.head`)."""
    if matrix.shape[1] == 1:
        return matrix[:, 0].astype(np.int64)
    return (matrix[:, 0].astype(np.int64) << 4) | (matrix[:, 1] >> 4)


def _block_distance(mags: np.ndarray, stride: int, starts: np.ndarray) -> np.ndarray:
    distance = np.full(len(mags), 2048, dtype=np.int64)
    distance[stride:] = np.abs(mags[stride:] - mags[:-stride])
    return np.add.reduceat(distance, starts)


def choose_strides(matrix: np.ndarray) -> np.ndarray:
    """Per block of ``2**BLOCK_BITS`` values, two indices into ``(0, *STRIDES)``: the long row
    stride (at least :data:`SHORT` values) and the short one, each the candidate whose value is
    closest in magnitude to the value it predicts (mean absolute difference of the 12-bit heads
    without sign); the long one only where closer than the previous value (else 0: none)."""
    mags = _heads(matrix) & 0x7FF
    n, block = len(mags), 1 << BLOCK_BITS
    n_blocks = -(-n // block)
    _, lane_len = lane_layout(n)
    starts = np.arange(n_blocks) * block
    best = np.zeros((n_blocks, 2), dtype=np.int64)
    best[:, 1] = 1  # stride 2: the value before the previous one
    best_distance = np.full((n_blocks, 2), np.inf)
    for index, stride in enumerate(STRIDES, start=1):
        if stride == SHORT:  # a long stride must beat the previous value, else none is used
            best_distance[:, 0] = _block_distance(mags, 1, starts) * 0.98
        if stride >= min(lane_len, n):
            break
        distance = _block_distance(mags, stride, starts)
        column = int(stride < SHORT)
        better = distance < best_distance[:, column]
        best[better, column], best_distance[better, column] = index, distance[better]
    return best


FIT_WINDOW = 32  # values per window over which the fitted-row criterion sums sign agreement
FIT_SAMPLE = 4  # the criterion looks at every fourth window


def choose_fit_strides(matrix: np.ndarray) -> np.ndarray:
    """Per block of ``2**BLOCK_BITS`` values, an index into ``(0, *STRIDES)``: the row length
    of version 3's best-row model (:mod:`lmgc.priors.cm_rows`), the stride of at least
    :data:`SHORT` under which the best of the candidate rows a lane holds agrees or disagrees
    in sign most consistently (:func:`~lmgc.priors.cm_rows.row_fit_scores` over every
    :data:`FIT_SAMPLE`-th window of :data:`FIT_WINDOW` values); 0 (none) where no candidate
    row agrees at all."""
    from .cm_rows import row_fit_scores  # numba, on first use

    heads = _heads(matrix)
    signs = np.where(heads & 0x7FF == 0, 0, 1 - 2 * (heads >> 11)).astype(np.int64)
    _, lane_len = lane_layout(len(signs))
    long = np.array([s for s in STRIDES if s >= SHORT and s <= lane_len], dtype=np.int64)
    scores = row_fit_scores(signs, lane_len, BLOCK_BITS, FIT_WINDOW, FIT_SAMPLE, long)
    n_blocks = -(-len(signs) // (1 << BLOCK_BITS))
    best = np.zeros(n_blocks, dtype=np.int64)
    if len(long):
        first = STRIDES.index(int(long[0])) + 1
        top = scores[:n_blocks].argmax(axis=1)  # the first (shortest) of equals
        found = scores[:n_blocks].max(axis=1) > 0
        best[found] = first + top[found]
    return best


RAW_ENTROPY = 7.99  # bits per byte from which a byte position is stored raw


def raw_positions(matrix: np.ndarray, version: int = 2) -> list[int]:
    """Byte positions to store raw (never all): where a model would save under 0.01 bit per
    byte (:data:`RAW_ENTROPY`) and the decoder can skip eight steps per value. Version 1 judges
    every position by its order-0 entropy; version 2 judges the later bytes (after
    :data:`FULL_BYTES`) by the adaptive cost of their model, one
    probability per (exponent, bit) (:func:`_exponent_model_bits`)."""
    raw = []
    exponent = None
    for p in range(matrix.shape[1]):
        if len(matrix) < 4096:
            break
        if version >= 2 and p >= FULL_BYTES:
            if exponent is None:  # as the model's ``_exponent``: the top 8 bits after the sign
                exponent = ((matrix[:, 0].astype(np.int64) & 0x7F) << 1) | (matrix[:, 1] >> 7)
            bits = _exponent_model_bits(matrix[:, p], exponent)
        else:
            counts = np.bincount(matrix[:, p], minlength=256)
            freq = counts[counts > 0] / len(matrix)
            bits = float(-(freq * np.log2(freq)).sum())
        if bits >= RAW_ENTROPY:
            raw.append(p)
    return raw if len(raw) < matrix.shape[1] else raw[1:]


def _exponent_model_bits(column: np.ndarray, exponent: np.ndarray) -> float:
    """Estimated bits per byte of a byte position's ``column`` coded bit by bit with an adaptive
    probability per (exponent, bit): each context's empirical entropy plus a learning cost of half
    a log2 of its count and one bit (the Krichevsky-Trofimov bound, near what the model's counters
    pay)."""
    total = 0.0
    for bit in range(8):
        ones = (column >> (7 - bit)) & 1
        counts = np.bincount(exponent * 2 + ones, minlength=512).reshape(256, 2).astype(np.float64)
        n = counts.sum(axis=1)
        seen = n > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            q = counts[seen] / n[seen, None]
            entropy = -np.where(q > 0, q * np.log2(q), 0.0).sum(axis=1)
        total += float((n[seen] * entropy + 0.5 * np.log2(n[seen]) + 1).sum())
    return total / len(column)
