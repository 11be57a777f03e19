"""Stage 2 without an LLM: the fast codec of the structural context models (``--prior context``).

The models and the encoder's choice of a context kind per digit position live in
:mod:`lmgc.priors.context_models`; the choice is recorded in the header. How a chunk's digits
are walked (the sign/exponent positions in lockstep lanes, the others grouped by context, raw
digits packed in front of the range-coded part) is :mod:`lmgc.priors.context_coding`.

Version 2 first predicts the rows of weight-shaped tensors from earlier rows where the encoder
is told the tensors' shapes (:mod:`lmgc.priors.context_rows`): the chunk's range-coded part
starts with that choice, predicted values carry residuals in their top four digits, and their
counts are kept apart from the other values' (a flag doubles every context). Version 3 trades
a little size for decoding speed: the encoder stores a digit position raw unless coding it saves
:data:`RAW_MARGIN` bits per digit, and may choose kind ``zr`` (raw digits except in values
zero so far: a sparse gradient's low mantissa digits), whose raw digits follow the packed raw
positions, after their count. Version 1 and 2 files decode.
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
from .context_coding import LANE_VALUES, MAX_LANES, code_planes, digit_planes, planes_to_bytes
from .context_models import (
    KINDS, PLAIN_KINDS, RAW, SEQUENTIAL_KINDS, ZERO_RAW, LazyValueDigits, check_digit_contexts, choose_kinds,
    fit_sample, sample_starts,
)  # fmt: skip
from .context_rows import RowChoice, RowSpan, chunk_spans, code_rows, from_residuals, predict, row_flags
from .digit_stream import FIRST_BLOCK, MAX_BLOCK, DigitStream

__all__ = ["MAX_LANES", "LANE_VALUES", "FIRST_BLOCK", "MAX_BLOCK", "ContextPrior", "predict_rows"]

VERSIONS = (1, 2, 3)  # 2: rows predicted (context_rows), their counts apart; 3: kind zr, raw margin
#: Bits per digit that coding a digit (in a position, or in a ``zr`` group) must save over
#: storing it raw (version 3's encoder): constriction decodes a coded digit in ~30-70 ns, a raw
#: one costs next to nothing. Measured on the 15 benchmark gradient files, version 3 against 2:
#: sizes within 0.03 point either way, files over 10 MB coded about twice as fast.
RAW_MARGIN = 0.01
_COUNT = 4  # bytes of the raw-digit count of a version-3 chunk


def _plane_heads(planes: np.ndarray) -> np.ndarray:
    """The top 16 bits of each value (int32) from its first four digit planes."""
    heads = planes[0].astype(np.int32) << 12
    for p in (1, 2, 3):
        heads |= planes[p].astype(np.int32) << (12 - 4 * p)
    return heads


def _set_plane_heads(planes: np.ndarray, heads: np.ndarray) -> None:
    for p in range(4):
        planes[p] = (heads >> (12 - 4 * p)) & 15


def predict_rows(planes: np.ndarray, spans) -> tuple[RowChoice, np.ndarray]:
    """Choose the row prediction of a chunk's digit planes (digits x values; the transposed view
    of a digit matrix will do) and apply it in place; the choice and the per-value flags."""
    choice = RowChoice.none()
    if spans:
        choice, residuals = predict(_plane_heads(planes), spans)
        _set_plane_heads(planes, residuals)
    return choice, row_flags(planes.shape[1], spans, choice)


class ContextPrior:
    """The structural context model alone, as a fast vectorized codec (no LLM).

    Args:
        kinds: a context kind per digit of a value (see :data:`KINDS`); ``None`` lets the
            encoder choose from the data (:func:`choose_kinds`) and record the choice.
        version: 3 (the default) and 2 predict rows of weight-shaped tensors from earlier rows
            (:mod:`lmgc.priors.context_rows`) where the encoder is told the tensors' rows;
            3 also stores near-random digits raw (see the module's docstring); version 1 files
            decode.
    """

    name = kind = "context"
    version = 3
    takes_rows = True  # see lmgc.priors.base.encode_input
    default_chunk_bytes = 8 << 20  # no model context to fit: big chunks learn more
    SAMPLE = (16, 16384)  # version 2 chooses kinds from 16 blocks of 16,384 values: whole rows
    #: Inputs of at most this many values are their own kind sample (up to twice the sampled
    #: values: sampling most of an input costs about as much as taking all of it). A one-chunk
    #: input then has its rows predicted once, for the choice and the coding alike.
    WHOLE_SAMPLE = 2 * SAMPLE[0] * SAMPLE[1]

    def __init__(self, kinds: list[str] | None = None, version: int = 3) -> None:
        if kinds is not None:
            _check_kinds(kinds)
            if ZERO_RAW in kinds and version < 3:
                raise SerializationError(f"digit context kind {ZERO_RAW!r} needs context prior version 3")
        self.kinds, self.version = kinds, version
        self._whole: _Predicted | None = None  # see choose_kinds

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
        contexts = check_digit_contexts(recorded["digit_contexts"], group, KINDS | {ZERO_RAW: None})
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
        except (KeyError, TypeError, SerializationError) as exc:
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
            digits = LazyValueDigits(lambda start, size: stream[start : start + size], len(stream), group)
            self.kinds = self.choose_kinds(digits, group, rows)
        elif len(self.kinds) != 2 * group:
            raise SerializationError(f"{len(self.kinds)} digit contexts given for values of "
                                     f"{2 * group} digits")  # fmt: skip

    def choose_kinds(self, matrix, group: int, rows=None) -> list[str]:
        """Kinds for a (possibly lazy) digit matrix of the whole stream, from a sample of blocks
        coded as the chunks will be (rows predicted within each block)."""
        if self.version < 2:
            sample = fit_sample(matrix)
            return choose_kinds(np.asarray(sample[0 : len(sample)]))  # a small lazy input: all of it
        speed = {"raw_margin": RAW_MARGIN, "zero_raw": True} if self.version >= 3 else {}
        if len(matrix) <= self.WHOLE_SAMPLE and isinstance(matrix, LazyValueDigits):
            data = matrix.read(0, matrix.n_bytes)
            whole = _Predicted(data, group, self.spans(rows, 0, len(data), group))
            self._whole = whole  # encode_chunk of these same bytes and rows codes it as it is
            return choose_kinds(whole.planes.T, whole.flags, **speed)
        starts = sample_starts(len(matrix), *self.SAMPLE)
        blocks, block_values = ([0], len(matrix)) if starts is None else (starts, self.SAMPLE[1])
        samples, flags = [], []
        for start in blocks:
            block = np.array(matrix[int(start) : int(start) + block_values], dtype=np.int32)
            spans = self.spans(rows, int(start) * group, len(block) * group, group)
            flags.append(predict_rows(block.T, spans)[1])
            samples.append(block)
        return choose_kinds(np.concatenate(samples), np.concatenate(flags), **speed)

    def encode_chunk(self, data: bytes, group: int, spans=()) -> tuple[bytes, int]:
        """(payload, digits coded) for one chunk; ``spans`` (:meth:`spans`) are its rows."""
        if self.kinds is None:
            raise SerializationError("call fit() before encoding: no context kinds chosen")
        whole, self._whole = self._whole, None
        if whole is None or not whole.same_chunk(data, spans):
            whole = _Predicted(data, group, spans if self.version >= 2 else None)
        planes, tail = whole.planes, whole.tail
        stream = DigitStream(range_encoder(), encoding=True)
        if self.version >= 2:
            code_rows(stream, planes.shape[1], list(spans), whole.choice)
        code_planes(stream, planes, tail, self.kinds, whole.flags)
        raw = pack_hex_digits(planes[self._raw_positions()].ravel())
        if self.version >= 3:
            side = np.concatenate([np.zeros(0, dtype=np.uint8), *stream.raw])
            raw += len(side).to_bytes(_COUNT, "little") + pack_hex_digits(side)
        return raw + payload_bytes(stream.coder), planes.size + len(tail)

    def decode_chunk(self, payload: bytes, n_bytes: int, group: int) -> bytes:
        if self.kinds is None or len(self.kinds) != 2 * group:
            raise SerializationError("context kinds do not match the recorded group size")
        n_values = n_bytes // group
        planes = np.zeros((2 * group, n_values), dtype=np.uint8)
        tail = np.zeros(2 * (n_bytes - n_values * group), dtype=np.int32)
        raw_positions = self._raw_positions()
        raw_bytes = (len(raw_positions) * n_values + 1) // 2
        if len(payload) < raw_bytes:
            raise CorruptDataError("chunk payload is shorter than its stored digits")
        raw = hex_digits(payload[:raw_bytes], np.uint8)[: len(raw_positions) * n_values]
        planes[raw_positions] = raw.reshape(len(raw_positions), n_values)
        side, raw_bytes = self._side_digits(payload, raw_bytes, n_values)
        stream = DigitStream(range_decoder(payload[raw_bytes:]), encoding=False, raw=side)
        spans, flags = [], None
        if self.version >= 2:
            spans, choice = code_rows(stream, n_values)
            if spans and group < 2:
                raise CorruptDataError("row prediction in values of one byte")
            flags = row_flags(n_values, spans, choice)
        code_planes(stream, planes, tail, self.kinds, flags)
        if stream.raw_left():
            raise CorruptDataError(f"chunk payload stores {stream.raw_left()} raw digits more than its values have")
        if spans:
            heads = _plane_heads(planes)
            from_residuals(heads, spans, choice)
            _set_plane_heads(planes, heads)
        return planes_to_bytes(planes, tail)

    def _raw_positions(self) -> list[int]:
        return [p for p, kind in enumerate(self.kinds) if kind == RAW]

    def _side_digits(self, payload: bytes, start: int, n_values: int) -> tuple[np.ndarray, int]:
        """A version-3 chunk's raw digits of kind ``zr`` (after their count, at ``start``) and
        where the range-coded part begins."""
        if self.version < 3:
            return np.zeros(0, dtype=np.int32), start
        count = int.from_bytes(payload[start : start + _COUNT], "little")
        stop = start + _COUNT + (count + 1) // 2
        if count > n_values * self.kinds.count(ZERO_RAW) or len(payload) < stop:
            raise CorruptDataError(f"chunk payload claims {count} raw digits for {n_values} values")
        return hex_digits(payload[start + _COUNT : stop], np.int32)[:count], stop


class _Predicted:
    """A chunk's digit planes, with its rows predicted (``spans`` not ``None``: version 2 on)."""

    def __init__(self, data: bytes, group: int, spans) -> None:
        self.data, self.spans = data, None if spans is None else list(spans)
        self.planes, self.tail = digit_planes(data, group)
        self.choice, self.flags = (None, None) if spans is None else predict_rows(self.planes, self.spans)

    def same_chunk(self, data: bytes, spans) -> bool:
        return self.spans == list(spans) and self.data == data


def _check_kinds(kinds: list[str]) -> None:
    valid = {*KINDS, ZERO_RAW}
    unknown = sorted(set(kinds) - valid)
    if unknown:
        raise SerializationError(f"unknown digit context kinds {unknown}; valid: {sorted(valid)}")
    first_plain = next((i for i, kind in enumerate(kinds) if kind in {*PLAIN_KINDS, ZERO_RAW}), len(kinds))
    if any(kind in SEQUENTIAL_KINDS for kind in kinds[first_plain:]):
        raise SerializationError("sequential digit contexts must come before plain ones")
