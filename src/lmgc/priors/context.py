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

Version 2 first predicts the rows of weight-shaped tensors from earlier rows where the encoder
is told the tensors' shapes (:mod:`lmgc.priors.context_rows`): the chunk's range-coded part
starts with that choice, predicted values carry residuals in their top four digits, and their
counts are kept apart from the other values' (a flag doubles every context). Version 1 files
decode.
"""

from __future__ import annotations

import numpy as np

from ..codec import progress_bar
from ..coder import payload_bytes, range_decoder, range_encoder
from ..environment import context_environment
from ..errors import CorruptDataError, SerializationError
from ..schema import corrupt, integer, mapping
from ..serialize import hex_digits, pack_hex_digits
from .base import Coded, check_two_symbols_per_byte
from .context_models import (
    KINDS, N_STRUCTURED, NONE, PLAIN_KINDS, RAW, SEQUENTIAL_KINDS, CountTable, check_digit_contexts, choose_kinds,
    digits_to_bytes, fit_sample, kind_context, sample_starts, value_digits,
)  # fmt: skip
from .context_rows import RowChoice, RowSpan, chunk_spans, code_rows, from_residuals, predict, row_flags
from .digit_stream import FIRST_BLOCK, MAX_BLOCK, DigitStream, code_adaptive_blocks

__all__ = ["MAX_LANES", "LANE_VALUES", "FIRST_BLOCK", "MAX_BLOCK", "ContextPrior", "predict_rows"]

MAX_LANES = 4096
LANE_VALUES = 256  # fewest values per lane: short lanes lose the previous-value context too often
VERSIONS = (1, 2)  # 2: rows predicted (context_rows) and their counts kept apart


def _lane_layout(n_values: int) -> tuple[int, int]:
    lanes = max(1, min(MAX_LANES, n_values // LANE_VALUES))
    return lanes, -(-n_values // lanes) if n_values else 0


def _flagged(contexts: np.ndarray, flags: np.ndarray | None) -> np.ndarray:
    """Version 2 keeps the counts of row-predicted values (flag 1) apart from the others."""
    return contexts if flags is None else contexts * 2 + flags


def _code_sequential(stream: DigitStream, planes: np.ndarray, kinds: list[str], flags: np.ndarray | None) -> None:
    """The leading positions with sequential kinds, all lanes in lockstep (fills ``planes``
    when decoding). Lane ``j`` holds values ``j * length ... (j + 1) * length - 1``."""
    k, n_values = len(kinds), planes.shape[1]
    if k == 0 or n_values == 0:
        return
    lanes, length = _lane_layout(n_values)
    grid = np.zeros((k, lanes * length), dtype=np.int32)
    grid[:, :n_values] = planes[:k]
    grid = np.ascontiguousarray(grid.reshape(k, lanes, length).transpose(0, 2, 1))  # (k, t, lane)
    if flags is not None:
        flag_grid = np.zeros(lanes * length, dtype=np.int32)
        flag_grid[:n_values] = flags
        flag_grid = np.ascontiguousarray(flag_grid.reshape(lanes, length).T)
    table = CountTable(k * N_STRUCTURED * (1 if flags is None else 2))
    previous = np.full((k, lanes), NONE, dtype=np.int32)
    previous2 = previous.copy()
    for t in range(length):
        active = min(lanes, (n_values - t + length - 1) // length)
        d1 = np.full(active, NONE, dtype=np.int32)
        zero = np.ones(active, dtype=np.int32)
        for p, kind in enumerate(kinds):
            contexts = kind_context(kind, p, d1, previous[p, :active], previous2[p, :active], zero)
            contexts = _flagged(contexts, None if flags is None else flag_grid[t, :active])
            digits = stream.code_rows(grid[p, t, :active], table.rows(contexts))
            grid[p, t, :active] = digits
            table.update(contexts, digits)
            d1, zero = digits, zero & (digits == 0)
        previous2[:, :active] = previous[:, :active]
        previous[:, :active] = grid[:, t, :active]
    planes[:k] = grid.transpose(0, 2, 1).reshape(k, -1)[:, :n_values]


def _code_chunk(stream: DigitStream, planes: np.ndarray, tail: np.ndarray, kinds: list[str],
                flags: np.ndarray | None = None) -> None:  # fmt: skip
    """Code (or, decoding, fill) one chunk's digits: sequential prefix, then plain positions."""
    sequential = [kind for kind in kinds if kind in SEQUENTIAL_KINDS]
    _code_sequential(stream, planes, sequential, flags)
    zero = np.ones(planes.shape[1], dtype=np.int32)
    for p in range(len(planes)):
        if p >= len(sequential) and kinds[p] != RAW:
            contexts = _flagged(kind_context(kinds[p], 0, planes[p - 1] if p else NONE, NONE, NONE, zero), flags)
            order = np.argsort(contexts.astype(np.int16), kind="stable")  # a radix sort
            sizes = np.bincount(contexts)
            for rows in np.split(order, np.cumsum(sizes[sizes > 0])[:-1]):
                planes[p, rows] = code_adaptive_blocks(stream, planes[p, rows])
        zero &= planes[p] == 0
    if len(tail):
        tail[:] = stream.code_fixed(tail, np.ones(16))


def _heads(matrix: np.ndarray) -> np.ndarray:
    return (matrix[:, 0] << 12) | (matrix[:, 1] << 8) | (matrix[:, 2] << 4) | matrix[:, 3]


def _set_heads(matrix: np.ndarray, heads: np.ndarray) -> None:
    for i in range(4):
        matrix[:, i] = (heads >> (12 - 4 * i)) & 15


def predict_rows(matrix: np.ndarray, spans) -> tuple[RowChoice, np.ndarray]:
    """Choose the row prediction of a chunk's digit matrix and apply it in place; the choice and
    the per-value flags."""
    if not spans:
        return RowChoice.none(), np.zeros(len(matrix), dtype=np.int32)
    choice, residuals = predict(_heads(matrix), spans)
    _set_heads(matrix, residuals)
    return choice, row_flags(len(matrix), spans, choice)


class ContextPrior:
    """The structural context model alone, as a fast vectorized codec (no LLM).

    Args:
        kinds: a context kind per digit of a value (see :data:`KINDS`); ``None`` lets the
            encoder choose from the data (:func:`choose_kinds`) and record the choice.
        version: 2 (the default) predicts rows of weight-shaped tensors from earlier rows
            (:mod:`lmgc.priors.context_rows`) where the encoder is told the tensors' rows;
            version 1 files decode.
    """

    name = kind = "context"
    version = 2
    takes_rows = True  # see lmgc.priors.base.encode_input
    default_chunk_bytes = 8 << 20  # no model context to fit: big chunks learn more
    SAMPLE = (16, 16384)  # version 2 chooses kinds from 16 blocks of 16,384 values: whole rows

    def __init__(self, kinds: list[str] | None = None, version: int = 2) -> None:
        if kinds is not None:
            _check_kinds(kinds)
        self.kinds, self.version = kinds, version

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
        rows = ", rows predicted from earlier rows" if identity["version"] >= 2 else ""
        return [("prior", f"context models (level fast{rows}), digit contexts {' '.join(identity['digit_contexts'])}")]

    @classmethod
    def check_symbol_counts(cls, n_symbols, sizes, serialization, group: int) -> None:
        check_two_symbols_per_byte(n_symbols, sizes)

    def encode(self, stream: bytes, chunks, group: int, batch: int, progress: bool, rows=None) -> Coded:
        """Chooses the contexts for this input unless fixed (the choice is recorded), so one
        prior object serves many inputs. ``rows`` (:func:`tensor_rows`) lets version 2 predict
        the tensors' rows."""
        coder = ContextPrior(self.kinds, self.version)
        coder.fit(stream, group, rows)
        payloads, counts, start = [], [], 0
        with progress_bar(len(stream), "compress", progress, unit="B") as bar:
            for chunk in chunks:
                payload, n_symbols = coder.encode_chunk(chunk, group, coder.spans(rows, start, len(chunk), group))
                payloads.append(payload)
                counts.append(n_symbols)
                start += len(chunk)
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
            prior = cls(recorded["digit_contexts"], recorded["version"])
        except (KeyError, TypeError) as exc:
            raise CorruptDataError(f"bad context-model settings {recorded}: {exc}") from None
        if prior.identity() != recorded or prior.version not in VERSIONS:
            raise CorruptDataError(f"unsupported context-model settings {recorded}")
        return prior

    def spans(self, rows, chunk_start: int, chunk_bytes: int, group: int) -> list[RowSpan]:
        """The rows this prior predicts in the chunk at byte ``chunk_start`` of the stream."""
        if self.version < 2 or not rows:
            return []
        return chunk_spans(rows, chunk_start, chunk_bytes // group, group)

    def fit(self, stream: bytes, group: int, rows=None) -> None:
        """Choose the context kinds for this data (encoder only; the choice is recorded)."""
        if self.kinds is None:
            self.kinds = self.choose_kinds(value_digits(stream, group)[0], group, rows)
        elif len(self.kinds) != 2 * group:
            raise SerializationError(f"{len(self.kinds)} digit contexts given for values of "
                                     f"{2 * group} digits")  # fmt: skip

    def choose_kinds(self, matrix, group: int, rows=None) -> list[str]:
        """Kinds for a (possibly lazy) digit matrix of the whole stream, from a sample of blocks
        coded as the chunks will be (rows predicted within each block)."""
        if self.version < 2:
            sample = fit_sample(matrix)
            return choose_kinds(np.asarray(sample[0 : len(sample)]))  # a small lazy input: all of it
        starts = sample_starts(len(matrix), *self.SAMPLE)
        blocks, block_values = ([0], len(matrix)) if starts is None else (starts, self.SAMPLE[1])
        samples, flags = [], []
        for start in blocks:
            block = np.array(matrix[int(start) : int(start) + block_values], dtype=np.int32)
            spans = self.spans(rows, int(start) * group, len(block) * group, group)
            flags.append(predict_rows(block, spans)[1])
            samples.append(block)
        return choose_kinds(np.concatenate(samples), np.concatenate(flags))

    def encode_chunk(self, data: bytes, group: int, spans=()) -> tuple[bytes, int]:
        """(payload, digits coded) for one chunk; ``spans`` (:meth:`spans`) are its rows."""
        if self.kinds is None:
            raise SerializationError("call fit() before encoding: no context kinds chosen")
        matrix, tail = value_digits(data, group)
        stream = DigitStream(range_encoder(), encoding=True)
        flags = None
        if self.version >= 2:
            choice, flags = predict_rows(matrix, spans)
            code_rows(stream, len(matrix), list(spans), choice)
        planes = np.ascontiguousarray(matrix.T)
        _code_chunk(stream, planes, tail, self.kinds, flags)
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
        stream = DigitStream(range_decoder(payload[raw_bytes:]), encoding=False)
        spans, flags = [], None
        if self.version >= 2:
            spans, choice = code_rows(stream, n_values)
            if spans and group < 2:
                raise CorruptDataError("row prediction in values of one byte")
            flags = row_flags(n_values, spans, choice)
        _code_chunk(stream, planes, tail, self.kinds, flags)
        if spans:
            matrix = np.ascontiguousarray(planes[:4].T)
            heads = _heads(matrix)
            from_residuals(heads, spans, choice)
            _set_heads(matrix, heads)
            planes[:4] = matrix.T
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
