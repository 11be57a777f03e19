"""Row prediction for the context codecs (fast from version 2, max from version 4): a row of a
weight-shaped tensor predicted from one of the rows before it.

A linear or conv layer's gradient is a sum of a few outer products, so its rows are nearly
scaled copies of one another: a value's sign is that of an earlier row at the same column, the
whole row maybe flipped, and its magnitude's top bits (exponent and top mantissa bits, a log
scale) are that row's plus an offset for the row. The encoder picks for each row the reference
row (up to :data:`MAX_BACK` rows back, or none), the flip and the offset, using the tensors'
shapes from the manifest (:func:`tensor_rows`); the chunk's payload carries the choice, so the
decoder needs no shapes. The top 16 bits of a predicted value are replaced by its residual: the
sign xor its prediction, then the zigzagged difference of the 15-bit magnitude from its
prediction, which the context models code like any other digits (small residuals: leading
zero digits); zeros stay zeros.

Measured on a ViT gradient (17 MB, Fashion-MNIST step 10): fast 83.75% -> 73.45%, below level
max version 3 (76.93%) and byte planes + xz (79.77%); on ResNet-18 fast 69.41% -> 65.75%.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import CorruptDataError
from .digit_stream import DigitStream, code_adaptive_blocks

__all__ = ["MAX_BACK", "RowSpan", "RowChoice", "tensor_rows", "chunk_spans", "predict", "to_residuals",
           "from_residuals", "check_choice", "code_rows", "MIN_ROW", "row_flags"]  # fmt: skip

MAX_BACK = 32  # reference rows up to this many rows back
MIN_ROW = 4  # fewest values in a predicted row: shorter ones save less than their side bits
SIDE_BITS = 20  # about what a predicted row's choice costs in the payload
MARGIN = 0.1  # bits per value a predicted row must save (by the estimate)
MAG = 0x7FFF
SIGN = 0x8000
CYCLE = 0x7FFF  # nonzero 15-bit magnitudes
FLOATS = {"float16", "bfloat16", "float32", "float64"}  # sign, exponent, mantissa from the top bit down


@dataclass(frozen=True)
class RowSpan:
    """``count`` rows of ``length`` values from value ``start`` of a chunk (one tensor's rows)."""

    start: int
    length: int
    count: int


@dataclass
class RowChoice:
    """Per row of every span, in order: rows back to the reference (0: not predicted), whether
    the sign flips, and the magnitude offset (added mod 2^15 - 1)."""

    back: np.ndarray
    flip: np.ndarray
    offset: np.ndarray

    @classmethod
    def none(cls) -> RowChoice:
        """The choice of a chunk without rows."""
        return cls(*(np.zeros(0, dtype=np.int64) for _ in range(3)))


def tensor_rows(tensors: Iterable, group: int, byte_order: str) -> list[tuple[int, int]]:
    """``(bytes, row bytes)`` per tensor of the stream, in order, from records with ``shape``,
    ``dtype``, ``itemsize`` and ``nbytes``: a row is everything after the first axis (a linear
    layer's input, a conv filter); 0 where a tensor has no rows of floats of ``group`` bytes.
    None at all unless the serialization puts the sign/exponent byte first (``"big"``)."""
    if byte_order != "big" or group < 2:
        return []
    rows = []
    for t in tensors:
        shape = t.shape
        row = int(np.prod(shape[1:], dtype=np.int64)) * t.itemsize if len(shape) >= 2 and shape[0] >= 2 else 0
        rows.append((t.nbytes, row if t.dtype in FLOATS and t.itemsize == group else 0))
    return rows


def chunk_spans(rows: Sequence[tuple[int, int]], chunk_start: int, n_values: int, group: int) -> list[RowSpan]:
    """The whole rows (two or more per tensor) inside the chunk of ``n_values`` values at byte
    ``chunk_start`` of the stream."""
    spans, tensor_start, chunk_stop = [], 0, chunk_start + n_values * group
    for nbytes, row in rows:
        tensor_stop = tensor_start + nbytes
        if row >= MIN_ROW * group and (tensor_start - chunk_start) % group == 0:
            first = max(0, -(-(chunk_start - tensor_start) // row))
            stop = (min(tensor_stop, chunk_stop) - tensor_start) // row
            if stop - first >= 2:
                spans.append(RowSpan((tensor_start + first * row - chunk_start) // group, row // group, stop - first))
        tensor_start = tensor_stop
    return spans


def compiled():
    """The numba kernels (:mod:`lmgc.priors.context_kernels`), imported on first use: ``import
    lmgc`` stays free of numba."""
    from . import context_kernels

    return context_kernels


def _span_matrix(heads: np.ndarray, span: RowSpan) -> np.ndarray:
    return heads[span.start : span.start + span.length * span.count].reshape(span.count, span.length)


def _digit_costs(histograms: np.ndarray, fit: np.ndarray) -> np.ndarray:
    """Per row, the bits of its four top digits under order-0 counts of each digit position over
    the rows ``fit`` says (plus one of every digit)."""
    counts = histograms[fit].sum(0).reshape(4, 16) + 1.0
    return histograms @ -np.log2(counts / counts.sum(1, keepdims=True)).ravel()


def _median_offset(mag: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per row, the (lower) median of ``mag - reference`` over the columns where both are
    nonzero (zeros have no magnitude to compare); 0 where there are none."""
    valid = (mag > 0) & (reference > 0)
    ordered = np.sort(np.where(valid, mag - reference, 1 << 20), axis=1)
    middle = np.maximum(valid.sum(1) - 1, 0) // 2
    return np.where(valid.any(1), ordered[np.arange(len(mag)), middle], 0)


def predict(heads: np.ndarray, spans: Sequence[RowSpan], margin: float = MARGIN,
            lift: int = 0) -> tuple[RowChoice, np.ndarray]:  # fmt: skip
    """The encoder's choice per row and the heads with the chosen rows as residuals (as
    :func:`to_residuals` makes them). Per row: the reference whose signs agree (or disagree)
    best, the median magnitude offset over the columns where both values are nonzero, and
    prediction where the row's top digits cost less as residuals than as they are, each under
    order-0 counts of the span's rows coded that way (first all rows, then refined twice), by
    ``margin`` bits per value plus the side bits. The fast level keeps the two sets' counts
    apart, so a wrong guess costs it little (measured: 0.1, its margin, beat 0, 0.25 and 0.5
    on a dense ConvNet and two VGG-16 gradients)."""
    parts, out, kernels = [], heads.copy(), compiled()
    for span in spans:
        matrix = _span_matrix(heads, span).astype(np.int32)
        mag = matrix & MAG
        back, agree = kernels.best_back(matrix, MAX_BACK)
        reference = matrix[np.arange(span.count) - back]
        offset = np.where(back > 0, _median_offset(mag, reference & MAG), 0).astype(np.int32)
        flip = (agree < 0).astype(np.int32)
        residual = kernels.residual_heads(matrix, reference, flip, offset, 0)
        as_is, as_residual = np.ones(span.count, dtype=bool), back > 0  # the rows each count fits
        own, predicted = kernels.digit_histograms(matrix), kernels.digit_histograms(residual)
        for _ in range(3):
            gain = _digit_costs(own, as_is) - _digit_costs(predicted, as_residual) - SIDE_BITS
            as_residual = (back > 0) & (gain > margin * span.length)
            as_is = ~as_residual
        use = as_residual
        if lift and use.any():
            residual[use] = kernels.residual_heads(matrix[use], reference[use], flip[use], offset[use], lift)
        _span_matrix(out, span)[use] = residual[use]
        parts.append((np.where(use, back, 0), np.where(use, flip, 0), np.where(use, offset, 0)))
    if not parts:
        return RowChoice.none(), out
    return RowChoice(*(np.concatenate([part[j] for part in parts]).astype(np.int32) for j in range(3))), out


def _rows_of(spans: Sequence[RowSpan]):
    """Each span with the slice of its rows in a :class:`RowChoice`'s arrays."""
    first = 0
    for span in spans:
        yield span, slice(first, first + span.count)
        first += span.count


def _predicted(spans: Sequence[RowSpan], choice: RowChoice):
    """Each span with predicted rows: the span, those rows' indices, and its rows' choices."""
    for span, rows in _rows_of(spans):
        back = choice.back[rows]
        predicted = np.flatnonzero(back)
        if len(predicted):
            yield span, predicted, back, choice.flip[rows], choice.offset[rows]


def row_flags(n_values: int, spans: Sequence[RowSpan], choice: RowChoice) -> np.ndarray:
    """1 for each value of a predicted row, 0 elsewhere (int32, ``n_values`` long)."""
    flags = np.zeros(n_values, dtype=np.int32)
    for span, predicted, *_ in _predicted(spans, choice):
        _span_matrix(flags, span)[predicted] = 1
    return flags


def to_residuals(heads: np.ndarray, spans: Sequence[RowSpan], choice: RowChoice, lift: int = 0) -> np.ndarray:
    """The heads (top 16 bits of each value, int32) with predicted rows replaced by residuals
    (moved ``lift`` around the cycle of nonzero magnitudes: see
    :func:`~lmgc.priors.context_kernels.residual_heads`)."""
    out, kernels = heads.copy(), compiled()
    for span, predicted, back, flip, offset in _predicted(spans, choice):
        matrix = _span_matrix(heads, span)
        reference = matrix[predicted - back[predicted]]
        _span_matrix(out, span)[predicted] = kernels.residual_heads(matrix[predicted], reference, flip[predicted],
                                                            offset[predicted], lift)  # fmt: skip
    return out


def from_residuals(heads: np.ndarray, spans: Sequence[RowSpan], choice: RowChoice, lift: int = 0) -> None:
    """Undo :func:`to_residuals` in place, row after row (a reference is restored first): one
    compiled pass, so its time is linear in the chunk whatever rows a (forged) choice names."""
    if not spans:
        return
    layout = np.array([(span.start, span.length, span.count) for span in spans], dtype=np.int64)
    compiled().restore_rows(heads, layout, *(np.asarray(field, dtype=np.int64) for field in
                                   (choice.back, choice.flip, choice.offset)), lift)  # fmt: skip


def check_choice(spans: Sequence[RowSpan], choice: RowChoice) -> None:
    """A decoded (untrusted) choice: references within their span and at most MAX_BACK back."""
    for span, rows in _rows_of(spans):
        back = choice.back[rows]
        if np.any(back > np.minimum(np.arange(span.count), MAX_BACK)) or np.any(choice.flip[rows] > 1):
            raise CorruptDataError(f"chunk payload: row prediction refers to a row outside its tensor "
                                   f"({int(back.max())} rows back)")  # fmt: skip


def _code_number(stream: DigitStream, value: int) -> int:
    """A number below 2^60 as its count of hex digits, then the digits, all uniform (the side
    information's few sizes: a chunk without rows costs one digit)."""
    n_digits = stream.code_fixed(np.array([(value.bit_length() + 3) // 4], dtype=np.int32), np.ones(16))[0]
    digits = np.array([(value >> (4 * (n_digits - 1 - i))) & 15 for i in range(n_digits)], dtype=np.int32)
    digits = stream.code_fixed(digits, np.ones(16)) if n_digits else digits
    return int(sum(int(d) << (4 * (n_digits - 1 - i)) for i, d in enumerate(digits)))


def _code_digit_planes(stream: DigitStream, values: np.ndarray, n_digits: int) -> np.ndarray:
    """Small non-negative numbers as ``n_digits`` hex digits each, every digit position with its
    own adaptive counts."""
    planes = np.stack([(values >> (4 * (n_digits - 1 - i))) & 15 for i in range(n_digits)]).astype(np.int32)
    for plane in planes:
        code_adaptive_blocks(stream, plane)
    return sum(plane.astype(np.int64) << (4 * (n_digits - 1 - i)) for i, plane in enumerate(planes))


def code_rows(stream: DigitStream, n_values: int, spans=None, choice: RowChoice | None = None):
    """Code (or, decoding, read and check) a chunk's row prediction: its spans, then per row the
    rows back and flip, then the offsets of the predicted rows."""
    n_spans = _code_number(stream, len(spans) if stream.encoding else 0)
    if not stream.encoding and n_spans > n_values // (2 * MIN_ROW):  # a span holds two rows or more
        raise CorruptDataError(f"chunk claims {n_spans} row spans in {n_values} values")
    if not stream.encoding:
        spans, stop = [], 0
        for _ in range(n_spans):
            span = RowSpan(*(_code_number(stream, 0) for _ in range(3)))
            if (span.start < stop or span.length < MIN_ROW or span.count < 2
                    or span.start + span.length * span.count > n_values):  # fmt: skip
                raise CorruptDataError(f"row span {span} is not inside the chunk's {n_values} values after {stop}")
            spans.append(span)
            stop = span.start + span.length * span.count
    else:
        for span in spans:
            for value in (span.start, span.length, span.count):
                _code_number(stream, value)
    n_rows = sum(span.count for span in spans)
    packed = _code_digit_planes(stream, choice.back | choice.flip << 6 if stream.encoding else
                                np.zeros(n_rows, dtype=np.int64), 2)  # fmt: skip
    back, flip = packed & 63, packed >> 6
    if np.any(flip > 1):
        raise CorruptDataError("row prediction flags out of range")
    predicted = np.flatnonzero(back)
    zigzag = (choice.offset[predicted] << 1) ^ (choice.offset[predicted] >> 31) if stream.encoding else \
        np.zeros(len(predicted), dtype=np.int64)  # fmt: skip
    zigzag = _code_digit_planes(stream, zigzag & 0xFFFF, 4)  # offsets are 15-bit differences
    offset = np.zeros(n_rows, dtype=np.int64)
    offset[predicted] = (zigzag >> 1) ^ -(zigzag & 1)
    decoded = RowChoice(back, flip, offset)
    if not stream.encoding:
        check_choice(spans, decoded)
    return spans, decoded
