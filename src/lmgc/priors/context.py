"""Stage 2 without an LLM: the fast codec of the structural context models (``--prior context``).

The models and the encoder's choice of a context kind per digit position live in
:mod:`lmgc.priors.context_models`; the choice is recorded in the header. Per chunk, the leading
positions with *sequential* kinds (those that read earlier values: the sign/exponent digits,
where context pays) are coded in *lanes*: the chunk's values are cut into up to ``MAX_LANES``
contiguous runs that advance in lockstep, one digit of every lane per numpy step, so a step costs
a few vectorized calls however many lanes there are. The other positions are coded one after
another, grouped by their context, with adaptive counts refreshed between geometrically growing
blocks (a few constriction calls per position); raw digits are packed in front of the range-coded
part.
"""

from __future__ import annotations

from dataclasses import dataclass

import constriction
import numpy as np

from ..codec import progress_bar
from ..coder import FAMILY, payload_bytes, range_decoder, range_encoder
from ..environment import context_environment
from ..errors import CorruptDataError, SerializationError
from ..schema import corrupt, integer, mapping
from ..serialize import hex_digits, pack_hex_digits
from .base import Coded, check_two_symbols_per_byte
from .context_models import (
    ALPHA, KINDS, N_STRUCTURED, NONE, PLAIN_KINDS, RAW, SEQUENTIAL_KINDS, CountTable, check_digit_contexts, choose_kinds,
    digits_to_bytes, kind_context, value_digits,
)  # fmt: skip

__all__ = ["MAX_LANES", "LANE_VALUES", "FIRST_BLOCK", "MAX_BLOCK", "ContextPrior"]

MAX_LANES = 4096
LANE_VALUES = 256  # fewest values per lane: short lanes lose the previous-value context too often
FIRST_BLOCK = 16  # plain digits: counts are refreshed after 16, 32, 64, ... symbols
MAX_BLOCK = 1 << 16


@dataclass
class _Stream:
    """One chunk's range coder; ``encoding`` picks the direction, so one loop serves both."""

    coder: object
    encoding: bool

    def code_rows(self, digits: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Code one digit per row of unnormalized probabilities; returns the digits."""
        if not self.encoding:
            return self.coder.decode(FAMILY, rows)
        self.coder.encode(digits, FAMILY, rows)
        return digits

    def code_fixed(self, digits: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Code ``len(digits)`` digits with one distribution (unnormalized ``weights``)."""
        model = constriction.stream.model.Categorical(weights, perfect=False)
        if not self.encoding:
            return self.coder.decode(model, len(digits))
        self.coder.encode(digits, model)
        return digits


def _lane_layout(n_values: int) -> tuple[int, int]:
    lanes = max(1, min(MAX_LANES, n_values // LANE_VALUES))
    return lanes, -(-n_values // lanes) if n_values else 0


def _code_sequential(stream: _Stream, planes: np.ndarray, kinds: list[str]) -> None:
    """The leading positions with sequential kinds, all lanes in lockstep (fills ``planes``
    when decoding). Lane ``j`` holds values ``j * length ... (j + 1) * length - 1``."""
    k, n_values = len(kinds), planes.shape[1]
    if k == 0 or n_values == 0:
        return
    lanes, length = _lane_layout(n_values)
    grid = np.zeros((k, lanes * length), dtype=np.int32)
    grid[:, :n_values] = planes[:k]
    grid = np.ascontiguousarray(grid.reshape(k, lanes, length).transpose(0, 2, 1))  # (k, t, lane)
    table = CountTable(k * N_STRUCTURED)
    previous = np.full((k, lanes), NONE, dtype=np.int32)
    previous2 = previous.copy()
    for t in range(length):
        active = min(lanes, (n_values - t + length - 1) // length)
        d1 = np.full(active, NONE, dtype=np.int32)
        zero = np.ones(active, dtype=np.int32)
        for p, kind in enumerate(kinds):
            contexts = kind_context(kind, p, d1, previous[p, :active], previous2[p, :active], zero)
            digits = stream.code_rows(grid[p, t, :active], table.rows(contexts))
            grid[p, t, :active] = digits
            table.update(contexts, digits)
            d1, zero = digits, zero & (digits == 0)
        previous2[:, :active] = previous[:, :active]
        previous[:, :active] = grid[:, t, :active]
    planes[:k] = grid.transpose(0, 2, 1).reshape(k, -1)[:, :n_values]


def _code_adaptive_blocks(stream: _Stream, digits: np.ndarray) -> np.ndarray:
    """Digits sharing one context, with counts refreshed after blocks of 16, 32, 64, ..."""
    counts = np.full(16, ALPHA)
    start, size = 0, FIRST_BLOCK
    while start < len(digits):
        stop = min(len(digits), start + size)
        digits[start:stop] = stream.code_fixed(digits[start:stop], counts)
        counts = counts + np.bincount(digits[start:stop], minlength=16)
        start, size = stop, min(2 * size, MAX_BLOCK)
    return digits


def _code_chunk(stream: _Stream, planes: np.ndarray, tail: np.ndarray, kinds: list[str]) -> None:
    """Code (or, decoding, fill) one chunk's digits: sequential prefix, then plain positions."""
    sequential = [kind for kind in kinds if kind in SEQUENTIAL_KINDS]
    _code_sequential(stream, planes, sequential)
    zero = np.ones(planes.shape[1], dtype=np.int32)
    for p in range(len(planes)):
        if p >= len(sequential) and kinds[p] != RAW:
            contexts = kind_context(kinds[p], 0, planes[p - 1] if p else NONE, NONE, NONE, zero)
            order = np.argsort(contexts.astype(np.int16), kind="stable")  # a radix sort
            sizes = np.bincount(contexts)
            for rows in np.split(order, np.cumsum(sizes[sizes > 0])[:-1]):
                planes[p, rows] = _code_adaptive_blocks(stream, planes[p, rows])
        zero &= planes[p] == 0
    if len(tail):
        tail[:] = stream.code_fixed(tail, np.ones(16))


class ContextPrior:
    """The structural context model alone, as a fast vectorized codec (no LLM).

    Args:
        kinds: a context kind per digit of a value (see :data:`KINDS`); ``None`` lets the
            encoder choose from the data (:func:`choose_kinds`) and record the choice.
    """

    name = kind = "context"
    version = 1
    default_chunk_bytes = 8 << 20  # no model context to fit: big chunks learn more

    def __init__(self, kinds: list[str] | None = None) -> None:
        if kinds is not None:
            _check_kinds(kinds)
        self.kinds = kinds

    @classmethod
    def create(cls, serialization=None, threads: int = 1, load=None) -> ContextPrior:
        """No model: ``load`` is never called."""
        return cls()

    @classmethod
    def check_identity(cls, recorded, group: int) -> dict:
        """The recorded identity's schema (version-1 files also stored the lane and block
        constants, which must be this lmgc's)."""
        legacy = {"lanes": [MAX_LANES, LANE_VALUES], "blocks": [FIRST_BLOCK, MAX_BLOCK]}
        mapping(recorded, "context prior", {"kind", "version", "digit_contexts"}, set(legacy))
        if any(recorded.get(key, value) != value for key, value in legacy.items()):
            raise corrupt("context prior lane/block settings are not this lmgc's", recorded)
        integer(recorded["version"], "context prior version")
        contexts = check_digit_contexts(recorded["digit_contexts"], group)
        return {"kind": cls.kind, "version": recorded["version"], "digit_contexts": contexts}

    @classmethod
    def environment(cls, identity: dict) -> dict:
        return context_environment()

    @classmethod
    def describe(cls, identity: dict) -> list[tuple[str, str]]:
        return [("prior", f"context models (level fast), digit contexts {' '.join(identity['digit_contexts'])}")]

    @classmethod
    def check_symbol_counts(cls, n_symbols, sizes, serialization, group: int) -> None:
        check_two_symbols_per_byte(n_symbols, sizes)

    def encode(self, stream: bytes, chunks, group: int, batch: int, progress: bool) -> Coded:
        """Chooses the contexts for this input unless fixed (the choice is recorded), so one
        prior object serves many inputs."""
        coder = ContextPrior(self.kinds)
        coder.fit(stream, group)
        payloads, counts = [], []
        with progress_bar(len(stream), "compress", progress, unit="B") as bar:
            for chunk in chunks:
                payload, n_symbols = coder.encode_chunk(chunk, group)
                payloads.append(payload)
                counts.append(n_symbols)
                bar.update(len(chunk))
        return Coded(payloads, counts, coder.identity())

    def decode(self, payloads, n_symbols, sizes, group: int, batch: int, progress: bool) -> list[bytes]:
        chunks = []
        with progress_bar(sum(sizes), "decompress", progress, unit="B") as bar:
            for payload, size in zip(payloads, sizes):
                chunks.append(self.decode_chunk(payload, size, group))
                bar.update(size)
        return chunks

    def identity(self) -> dict:
        """The lane and block constants belong to ``version``: changing them needs a new one."""
        return {"kind": self.kind, "version": self.version, "digit_contexts": self.kinds}

    @classmethod
    def from_identity(cls, recorded: dict, serialization=None, load=None) -> ContextPrior:
        try:
            prior = cls(recorded["digit_contexts"])
        except (KeyError, TypeError) as exc:
            raise CorruptDataError(f"bad context-model settings {recorded}: {exc}") from None
        if prior.identity() != recorded:
            raise CorruptDataError(f"unsupported context-model settings {recorded}")
        return prior

    def fit(self, stream: bytes, group: int) -> None:
        """Choose the context kinds for this data (encoder only; the choice is recorded)."""
        if self.kinds is None:
            self.kinds = choose_kinds(value_digits(stream, group)[0])
        elif len(self.kinds) != 2 * group:
            raise SerializationError(f"{len(self.kinds)} digit contexts given for values of "
                                     f"{2 * group} digits")  # fmt: skip

    def encode_chunk(self, data: bytes, group: int) -> tuple[bytes, int]:
        """(payload, digits coded) for one chunk."""
        if self.kinds is None:
            raise SerializationError("call fit() before encoding: no context kinds chosen")
        matrix, tail = value_digits(data, group)
        planes = np.ascontiguousarray(matrix.T)
        stream = _Stream(range_encoder(), encoding=True)
        _code_chunk(stream, planes, tail, self.kinds)
        raw = pack_hex_digits(planes[self._raw_positions()].ravel())
        return raw + payload_bytes(stream.coder), matrix.size + len(tail)

    def decode_chunk(self, payload: bytes, n_bytes: int, group: int) -> bytes:
        if self.kinds is None or len(self.kinds) != 2 * group:
            raise SerializationError("context kinds do not match the recorded group size")
        n_values = n_bytes // group
        planes = np.zeros((2 * group, n_values), dtype=np.int32)
        tail = np.zeros(2 * (n_bytes - n_values * group), dtype=np.int32)
        raw_positions = self._raw_positions()
        raw_bytes = (len(raw_positions) * n_values + 1) // 2
        if len(payload) < raw_bytes:
            raise CorruptDataError("chunk payload is shorter than its stored digits")
        raw = hex_digits(payload[:raw_bytes], np.int32)[: len(raw_positions) * n_values]
        planes[raw_positions] = raw.reshape(len(raw_positions), n_values)
        _code_chunk(_Stream(range_decoder(payload[raw_bytes:]), encoding=False), planes, tail, self.kinds)
        return digits_to_bytes(planes, tail)

    def _raw_positions(self) -> list[int]:
        return [p for p, kind in enumerate(self.kinds) if kind == RAW]


def _check_kinds(kinds: list[str]) -> None:
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise SerializationError(f"unknown digit context kinds {unknown}; valid: {sorted(KINDS)}")
    first_plain = next((i for i, kind in enumerate(kinds) if kind in PLAIN_KINDS), len(kinds))
    if any(kind in SEQUENTIAL_KINDS for kind in kinds[first_plain:]):
        raise SerializationError("sequential digit contexts must come before plain ones")
