"""The structural context models of a float's hex digits, and the choice among them.

A float's hex digits are not a text: digit 0 holds the sign and the top of the exponent, the next
ones the rest of the exponent and the top of the mantissa, the last ones near-random mantissa
bits. Neighbouring values have similar exponents, and zeros come in runs. So the next digit is
predicted from its structural context (:func:`structured_context`): its position ``p`` inside the
value, the previous digit of the same value, whether all earlier digits of the value were zero,
and the digits at the same position in the two previous values. A context *kind*
(:data:`KINDS`) says which of these a position uses; ``raw`` stores near-random digits as they are.

Counts are integers plus ``ALPHA`` in float32 (exact below 2^24, deterministic beyond), updated
identically by encoder and decoder; no training data is needed. The encoder picks a kind per
digit position from exact adaptive code lengths (:func:`choose_kinds`). The fast codec built on
these models is :mod:`lmgc.priors.context`; the hybrid mixes them with the LLM.
"""

from __future__ import annotations

import numpy as np

from ..schema import corrupt
from ..serialize import hex_digits

__all__ = [
    "ALPHA", "NONE", "N_STRUCTURED", "SEQUENTIAL_KINDS", "PLAIN_KINDS", "RAW", "KINDS", "ZERO_RAW", "value_digits",
    "LazyValueDigits", "structured_context", "kind_context", "check_digit_contexts", "CountTable", "fit_sample",
    "sample_starts", "choose_kinds",
]  # fmt: skip

ALPHA = 0.5  # Krichevsky–Trofimov prior count of every digit
NONE = 16  # stands for "no previous digit / no previous value" in a context
N_STRUCTURED = 17 * 17 * 17 * 2  # contexts per digit position


def value_digits(data: bytes, group: int) -> tuple[np.ndarray, np.ndarray]:
    """A (values, 2 * group) matrix of hex digits (high nibble first) and the digits of a
    trailing partial value."""
    digits = hex_digits(data, np.int32)
    width = 2 * group
    whole = len(digits) // width * width
    return digits[:whole].reshape(-1, width), digits[whole:]


class LazyValueDigits:
    """The :func:`value_digits` matrix of ``n_bytes`` bytes that ``read(start, size)`` returns,
    rows computed when sliced: a sampler (:func:`fit_sample`, the context prior's own) spells
    out only the rows it picks, whether the bytes are in memory or streamed from a file."""

    def __init__(self, read, n_bytes: int, group: int) -> None:
        self.read, self.n_bytes, self.group = read, n_bytes, group

    def __len__(self) -> int:
        return self.n_bytes // self.group

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop = int(rows.start), int(rows.stop)
        return value_digits(self.read(start * self.group, (stop - start) * self.group), self.group)[0]


def structured_context(p: int, d1, prev, prev2, zero) -> np.ndarray:
    """Context index of digit ``p`` (vectorized): previous digit of the value, same digit of the
    two previous values (``NONE`` where absent or unused), and whether the value is zero so far."""
    return p * N_STRUCTURED + ((d1 * 17 + prev) * 17 + prev2) * 2 + zero


#: Which of (previous digit, previous value, value before) each context kind uses. Sequential
#: kinds read earlier values and are coded in lanes; plain kinds only read the value itself.
SEQUENTIAL_KINDS = {"zP": (0, 1, 0), "s1": (1, 1, 0), "s2": (1, 1, 1), "sP2": (0, 1, 1)}
PLAIN_KINDS = {"z": (0, 0, 0), "zd": (1, 0, 0)}
#: Digits stored as they are (4 bits each) beside the range-coded part: the low mantissa digits
#: are random, and an adaptive model pays a learning cost on top of their 4 bits.
RAW = "raw"
KINDS = SEQUENTIAL_KINDS | PLAIN_KINDS | {RAW: (0, 0, 0)}
#: The fast codec's (version 3) kind for a gradient's low mantissa digits: raw, except in values
#: that are zero so far, whose digits are coded with kind ``z``'s counts (nearly all zeros).
ZERO_RAW = "zr"


def kind_context(kind: str, p: int, d1, prev, prev2, zero) -> np.ndarray:
    """:func:`structured_context` with the fields ``kind`` does not use set to ``NONE``."""
    use_d1, use_prev, use_prev2 = KINDS[kind]
    return structured_context(p, d1 if use_d1 else NONE, prev if use_prev else NONE,
                              prev2 if use_prev2 else NONE, zero)  # fmt: skip


def check_digit_contexts(contexts, group: int, kinds=KINDS) -> list[str]:
    """A recorded (untrusted) choice of a context kind (one of ``kinds``) per digit of a value."""
    if not isinstance(contexts, list) or len(contexts) != 2 * group or any(
            not isinstance(k, str) or k not in kinds for k in contexts):  # fmt: skip
        raise corrupt(f"digit_contexts must be {2 * group} context kinds", contexts)
    return contexts


_ONE = np.float32(1.0)


class CountTable:
    """Adaptive digit counts per context. float32 integers + ``alpha``: exact up to 2^24 per
    entry and deterministic beyond (IEEE rounding), half the memory traffic of float64."""

    def __init__(self, n_contexts: int, alpha: float = ALPHA) -> None:
        self.counts = np.full((n_contexts, 16), alpha, dtype=np.float32)
        self._flat = self.counts.reshape(-1)

    def rows(self, contexts: np.ndarray) -> np.ndarray:
        """Unnormalized probabilities (constriction rescales each row exactly)."""
        return self.counts[contexts]

    def update(self, contexts: np.ndarray, digits: np.ndarray) -> None:
        np.add.at(self._flat, contexts * 16 + digits, _ONE)  # a typed scalar: numpy's fast path


def _log2_rising(n_max: int, alpha: float) -> np.ndarray:
    """``out[n] = log2(alpha (alpha+1) ... (alpha+n-1))``: adaptive code lengths in closed form.
    A cumulative sum is sequential, so a longer table starts with exactly the shorter one."""
    return np.concatenate([[0.0], np.cumsum(np.log2(np.arange(n_max) + alpha))])


class _AdaptiveCost:
    """Exact code length of adaptive KT counts per context (independent of the coding order) of
    every context kind at one digit position.

    Large inputs are read once per position into a joint histogram over all structured contexts,
    each kind's counts being a marginal of it; small ones (where the histogram's 157k bins cost
    more than the data) are counted per kind. Both lay a kind's count rows out as its context
    indices order them, from the lowest context seen to the highest, so the floating-point sums
    are the same whichever route an input takes.
    """

    _SHAPE = (17, 17, 17, 2, 16)  # previous digit, previous value, value before, zero, digit
    DIRECT_MAX = 1 << 14  # values up to which counting per kind is cheaper

    def __init__(self, n_max: int) -> None:
        self.totals_table = _log2_rising(n_max, 16 * ALPHA)
        self.counts_table = _log2_rising(n_max, ALPHA)

    def costs(self, d1, prev, prev2, zero, digits) -> dict[str, float]:
        kinds = SEQUENTIAL_KINDS | PLAIN_KINDS
        if len(digits) <= self.DIRECT_MAX:
            return {kind: self._bits(self._kind_rows(kind, d1, prev, prev2, zero, digits)) for kind in kinds}
        index = structured_context(0, d1, prev, prev2, zero) * 16 + digits
        joint = np.bincount(index, minlength=int(np.prod(self._SHAPE))).reshape(self._SHAPE)
        return {kind: self._bits(self._marginal_rows(joint, kind)) for kind in kinds}

    def zero_bits(self, zero, digits) -> float:
        """Code length of the digits of the values that are zero so far (``zero`` 1) under one
        adaptive count row, as kind ``z`` codes them."""
        return self._bits(np.bincount(digits[zero == 1], minlength=16)[None, :])

    @staticmethod
    def _kind_rows(kind: str, d1, prev, prev2, zero, digits) -> np.ndarray:
        """Rows from the lowest context seen on (the ones before it are empty)."""
        contexts = kind_context(kind, 0, d1, prev, prev2, zero)
        contexts -= contexts.min()
        return np.bincount(contexts * 16 + digits, minlength=(int(contexts.max()) + 1) * 16).reshape(-1, 16)

    def _marginal_rows(self, joint: np.ndarray, kind: str) -> np.ndarray:
        used = KINDS[kind]
        marginal = joint.sum(axis=tuple(axis for axis, use in enumerate(used) if not use))
        rows = np.zeros(self._SHAPE, dtype=joint.dtype)
        rows[tuple(slice(None) if use else NONE for use in used)] = marginal
        return rows.reshape(-1, 16)

    def _bits(self, rows: np.ndarray) -> float:
        totals = rows.sum(axis=1)
        present = np.flatnonzero(totals)
        if not len(present):
            return 0.0
        counts, totals = rows[present[0] : present[-1] + 1], totals[present[0] : present[-1] + 1]
        return float(self.totals_table[totals].sum() - self.counts_table[counts].sum())


def fit_sample(matrix: np.ndarray, blocks: int = 64, block_values: int = 4096) -> np.ndarray:
    """Evenly spread contiguous blocks of a large matrix: enough to choose contexts, fast. Only
    these rows are read (a lazy matrix streamed from a file computes no others)."""
    starts = sample_starts(len(matrix), blocks, block_values)
    return matrix if starts is None else np.concatenate([matrix[s : s + block_values] for s in starts])


def sample_starts(n_values: int, blocks: int, block_values: int) -> np.ndarray | None:
    """Where :func:`fit_sample`'s blocks start (``None``: the input is small, take all of it)."""
    if n_values <= blocks * block_values:
        return None
    return np.linspace(0, n_values - block_values, blocks).astype(np.int64)


#: Code lengths closer than this are ties (they differ only by floating-point summation order).
TIE_BITS = 1e-6


def _cheapest(kinds, bits: dict[str, float]) -> str:
    """The first of ``kinds`` (simplest first) within :data:`TIE_BITS` of the cheapest: periodic
    data gives several kinds the same counts, and the choice must not hang on rounding."""
    best = min(bits[kind] for kind in kinds)
    return next(kind for kind in kinds if bits[kind] <= best + TIE_BITS)


def choose_kinds(matrix: np.ndarray, flags: np.ndarray | None = None, raw_margin: float = 0.0,
                 zero_raw: bool = False) -> list[str]:  # fmt: skip
    """A context kind per digit position: the sequential prefix and kinds that minimize the exact
    adaptive code length of (a sample of) the data. With ``flags`` (0/1 per value, given with a
    sample) the two sets of values have counts apart, as the codec keeps them. ``zero_raw``
    offers :data:`ZERO_RAW`; a digit is stored raw unless coding it saves ``raw_margin`` bits
    (coding a digit costs the decoder far more time than copying it)."""
    width = matrix.shape[1]
    if not len(matrix):
        return ["z"] * width
    if flags is None:
        matrix = fit_sample(matrix)
    planes = np.ascontiguousarray(matrix.T, dtype=np.int32)  # contexts < 2^18
    n = planes.shape[1]
    parts = [slice(None)] if flags is None else [part for f in (0, 1) if len(part := np.flatnonzero(flags == f))]
    none = np.full(n, NONE, dtype=np.int32)
    zero = np.ones(n, dtype=np.int32)  # all earlier digits of the value are zero
    cost = _AdaptiveCost(n)
    sequential, plain = [], []
    for p, digits in enumerate(planes):
        previous = np.concatenate([none[:1], digits[:-1]])  # the same digit of the value before
        previous2 = np.concatenate([none[:2], digits[:-2]])[:n]
        d1 = planes[p - 1] if p else none
        bits = dict.fromkeys(KINDS, 0.0)
        for part in parts:
            for kind, kind_bits in cost.costs(d1[part], previous[part], previous2[part], zero[part],
                                              digits[part]).items():  # fmt: skip
                bits[kind] += kind_bits
        bits[RAW], credit = 4.0 * n, {RAW: raw_margin * n}
        if zero_raw:
            n_raw = n - int(zero.sum())
            bits[ZERO_RAW] = 4.0 * n_raw + sum(cost.zero_bits(zero[part], digits[part]) for part in parts)
            credit[ZERO_RAW] = raw_margin * n_raw
        zero &= digits == 0
        sequential.append(_cheapest(SEQUENTIAL_KINDS, bits))
        plain.append(_cheapest([*PLAIN_KINDS, RAW, *([ZERO_RAW] if zero_raw else [])],
                               {kind: bits[kind] - credit.get(kind, 0.0) for kind in bits}))  # fmt: skip
        bits_saved = bits[plain[-1]] - bits[sequential[-1]]
        plain[-1], sequential[-1] = (plain[-1], 0.0), (sequential[-1], bits_saved)
    saved = np.concatenate([[0.0], np.cumsum([bits_saved for _, bits_saved in sequential])])
    prefix = int(np.argmax(saved))
    return [kind for kind, _ in sequential[:prefix] + plain[prefix:]]
