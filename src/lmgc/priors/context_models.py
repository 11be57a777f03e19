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

import functools

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


@functools.lru_cache(maxsize=4)
def _log2_rising(n_max: int, alpha: float) -> np.ndarray:
    """``out[n] = log2(alpha (alpha+1) ... (alpha+n-1))``: adaptive code lengths in closed form.
    A cumulative sum is sequential, so a longer table starts with exactly the shorter one."""
    table = np.concatenate([[0.0], np.cumsum(np.log2(np.arange(n_max) + alpha))])
    table.flags.writeable = False  # shared between calls
    return table


def coarsening_plan(uses: np.ndarray) -> np.ndarray:
    """The order in which :func:`~lmgc.priors.context_kernels.kind_costs` sums the kinds' counts:
    rows of (kind, the finer kind it sums, -1 for the joint counts, -2 if it reads every field
    and so is the joint counts). Finer kinds come first; each kind sums the coarsest earlier
    kind that reads every field it reads (the fewest rows)."""
    fields = uses.sum(axis=1)
    plan, done = [], []
    for k in sorted(range(len(uses)), key=lambda k: -fields[k]):
        finer = [q for q in done if (uses[q] >= uses[k]).all()]
        source = -2 if fields[k] == uses.shape[1] else min(finer, key=lambda q: fields[q], default=-1)
        plan.append((k, source))
        done.append(k)
    return np.array(plan, dtype=np.int64).reshape(-1, 2)


class _AdaptiveCost:
    """Exact code length of adaptive KT counts per context (independent of the coding order) of
    every context kind at one digit position, counted in one compiled pass over the digits."""

    _KINDS = SEQUENTIAL_KINDS | PLAIN_KINDS
    _USES = np.array(list(_KINDS.values()), dtype=np.int64)
    _PLAN = coarsening_plan(_USES)

    def __init__(self, n_max: int) -> None:
        self.totals_table = _log2_rising(n_max, 16 * ALPHA)
        self.counts_table = _log2_rising(n_max, ALPHA)
        # No count exceeds n_max: 16-bit counts where they fit halve the memory the counting
        # sweeps (measured: the kind choice ~18% faster on an 87 KB gradient, same numbers;
        # summing kinds from finer ones, not all from the joint counts, ~8% more).
        dtype = np.uint16 if n_max <= np.iinfo(np.uint16).max else np.int32
        self._scratch = np.zeros((len(self._KINDS) + 1, 2 * N_STRUCTURED, 16), dtype=dtype)

    def costs(self, planes: np.ndarray, p: int, zero: np.ndarray, parts: np.ndarray) -> tuple[dict[str, float], float]:
        """Bits of digit ``p`` under each kind, each part's counts apart; and the bits kind ``z``
        gives the values zero so far."""
        from .context_rows import compiled

        bits, zero_bits = compiled().kind_costs(planes, p, zero, parts, self._USES, self._PLAN, self._scratch,
                                                self.totals_table, self.counts_table)  # fmt: skip
        return dict(zip(self._KINDS, bits.tolist())), zero_bits


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
    parts = np.zeros(n, dtype=np.int32) if flags is None else np.asarray(flags, dtype=np.int32)
    zero = np.ones(n, dtype=np.int32)  # all earlier digits of the value are zero
    cost = _AdaptiveCost(n)
    sequential, plain = [], []
    for p, digits in enumerate(planes):
        bits, zero_bits = cost.costs(planes, p, zero, parts)
        bits[RAW], credit = 4.0 * n, {RAW: raw_margin * n}
        if zero_raw:
            n_raw = n - int(zero.sum())
            bits[ZERO_RAW], credit[ZERO_RAW] = 4.0 * n_raw + zero_bits, raw_margin * n_raw
        zero &= digits == 0
        sequential.append(_cheapest(SEQUENTIAL_KINDS, bits))
        plain.append(_cheapest([*PLAIN_KINDS, RAW, *([ZERO_RAW] if zero_raw else [])],
                               {kind: bits[kind] - credit.get(kind, 0.0) for kind in bits}))  # fmt: skip
        bits_saved = bits[plain[-1]] - bits[sequential[-1]]
        plain[-1], sequential[-1] = (plain[-1], 0.0), (sequential[-1], bits_saved)
    saved = np.concatenate([[0.0], np.cumsum([bits_saved for _, bits_saved in sequential])])
    prefix = int(np.argmax(saved))
    return [kind for kind, _ in sequential[:prefix] + plain[prefix:]]
