"""``--prior context --level max``: a context-mixing codec for float tensors (PAQ/lpaq style).

Each value is coded bit by bit, most significant first, in the serialization's byte order
(sign/exponent byte first by default). The model (:mod:`lmgc.priors.cm_model`) mixes eight
context models per bit of the leading bytes: the value's own earlier bytes; the heads (sign,
exponent, top mantissa bits) of the previous value and of the value a short stride back; fast
and slow running magnitudes; the value one *row* (a long stride) back; zero runs, signs and the
place in a 3x3 kernel; the running magnitude a row back; the magnitude and sign that the row,
the short stride and their corner predict (a gradient is near rank one per tap); the sign and
magnitude of the best-fitting of the last 32 rows (a gradient's rows fall into families). The
later, near-random mantissa bytes are coded with one probability per exponent and bit. All of
it is integer arithmetic compiled with numba, so both sides compute the same probabilities on
any machine; constriction codes the bits. Version 4 codes the rows of weight-shaped tensors as
residuals from an earlier row, as the fast level does (:mod:`lmgc.priors.context_rows`: the
encoder is told the tensors' rows, the payload carries its choice), with version 3's model.
Version 5 counts a conv kernel's taps from its tensor's first value (model version 4). Version 6
codes the second byte's last four bits the cheap way (one probability per exponent and bit)
where a trial at the start of every lane finds it better (model version 5). Version 7 gives
each value a zero flag, coded before its bits, in chunks where zeros are common
(:data:`ZERO_FLAG_SHARE`; recorded in the payload): a zero's bits are not coded (model version
6). Version 1 to 6 files still decode (:class:`ContextMixingPriorV1` ... ``V6``).

The encoder chooses the byte positions stored raw per input (those whose bytes are nearly
uniform: an adaptive model only adds its learning cost there, and each raw byte saves the
decoder eight steps; recorded in the identity) and, per block of 4096 values, a long and a
short stride and a row length (:mod:`lmgc.priors.cm_layout`; stored in the chunk's payload,
three bytes per block). Each chunk is coded in lanes (see :mod:`~lmgc.priors.cm_model`): the
decoder makes one numba call and one constriction call per step, for all lanes at once.

>>> import numpy as np, lmgc
>>> x = (np.random.default_rng(0).standard_normal(4096) * 1e-3).astype(np.float32)
>>> blob = lmgc.compress(x, prior=ContextMixingPrior.create())
>>> bool((lmgc.decompress(blob) == x).all()) and len(blob) < x.nbytes
True
"""

from __future__ import annotations

from importlib.metadata import version as _version

import numpy as np

from ..codec import progress_bar
from ..coder import FAMILY, payload_bytes, range_decoder, range_encoder
from ..errors import CorruptDataError, SerializationError
from ..schema import corrupt, mapping
from .base import Coded
from .cm_layout import BLOCK_BITS, STRIDES, choose_fit_strides, choose_strides, lane_layout, raw_positions
from .context_rows import RowChoice, chunk_spans, code_rows, from_residuals, predict
from .digit_stream import DigitStream, code_adaptive_blocks

__all__ = ["STRIDES", "ContextMixingPrior", "ContextMixingPriorV1", "ContextMixingPriorV2", "ContextMixingPriorV3",
           "ContextMixingPriorV4", "ContextMixingPriorV5", "ContextMixingPriorV6", "choose_strides", "lane_layout",
           "raw_positions"]  # fmt: skip

ENCODE_BLOCK_BITS = 1 << 20  # bits per constriction call when encoding


def _model():
    """The numba kernels, imported on first use: ``import lmgc`` stays free of numba."""
    from . import cm_model

    return cm_model


def table_bits(n_bytes: int, version: int) -> int:
    """log2 of each model's table size: about two slots per coded bit, from 4096 slots to 1 M
    (version 1) or 4 M (version 2: measured 0.2 point smaller on a 15 MB VGG-16 gradient)."""
    return min(20 if version == 1 else 22, max(12, (4 * n_bytes).bit_length()))


#: Where the kernels' config holds the model version, whether values have zero flags, the coded
#: byte positions.
CFG_VERSION, CFG_ZEROS, CFG_CODED = 6, 7, 8
#: The kernels' rules (:mod:`~lmgc.priors.cm_model`'s version) of each prior version: version 4
#: added row residuals around model 3, version 5 model 4's kernel taps, version 6 model 5's trial
#: of the second byte's low bits, version 7 model 6's zero flags.
MODEL_VERSION = {1: 1, 2: 2, 3: 3, 4: 3, 5: 4, 6: 5, 7: 6}
#: Bits per value a row must save by the row choice's estimate before version 4 predicts it:
#: the model's own row and plane contexts already take much of what a conv filter's rows share
#: (measured: 0.1, fast's margin, left a dense ConvNet gradient 0.4 point larger; 1.0 is even).
ROW_MARGIN = 1.0
#: A predicted value's residual magnitude is moved 2^14 around its cycle, so its head never
#: reads as a small exponent: the model codes the later bytes per exponent, and small residuals
#: would share the contexts of zeros and tiny values (on ResNet-18 that cost 5.6 points).
RESIDUAL_LIFT = 1 << 14
#: Version 7 flags each value whose coded bytes are all zero with one bit before its others,
#: which then are not coded, where at least this share of a chunk's values are zero: each flag
#: costs a step of the whole model, each zero saves the value's 8 to 32 steps. Measured with
#: flags against without: ResNet-18 step 5 (18% zeros) 0.06% smaller and 2-9% faster; VGG-16
#: step 1 (2.6-3.5%) 0.03% smaller at about the same speed; ConvNet-128 step 50 (0.1%) 0.01%
#: larger and 20% slower (its trial then kept the whole model for the second byte's low bits).
ZERO_FLAG_SHARE = 1 / 64


def _config(n_values: int, group: int, coded: list[int], n_bytes: int, version: int,
            zeros: bool = False) -> np.ndarray:  # fmt: skip
    """What the kernels need to know of a chunk: bytes per value, values, values per lane, lanes,
    how many byte positions are coded, log2 of the table size, the model version, whether each
    value has a zero flag, which positions are coded."""
    lanes, lane_len = lane_layout(n_values)
    cfg = np.zeros(CFG_CODED + group, dtype=np.int64)
    model_version = MODEL_VERSION[version]
    cfg[:CFG_CODED] = (group, n_values, lane_len, lanes, len(coded), table_bits(n_bytes, version), model_version,
                       zeros)  # fmt: skip
    cfg[CFG_CODED : CFG_CODED + len(coded)] = coded
    return cfg


def _zero_flags(matrix: np.ndarray, coded: list[int]) -> bool:
    """Whether version 7 gives the chunk's values zero flags: where at least
    :data:`ZERO_FLAG_SHARE` of them have all their coded bytes zero, and the sign/exponent byte
    is coded (the flag is predicted as the value's first bit, by the same models)."""
    if not coded or coded[0] != 0 or not len(matrix):
        return False
    zero = ~matrix[:, coded].any(axis=1)
    return bool(np.count_nonzero(zero) >= ZERO_FLAG_SHARE * len(matrix))


def _steps_per_value(cfg: np.ndarray) -> int:
    """Decoder steps of each value of a chunk: its coded bits and its zero flag, if any."""
    return 8 * int(cfg[4]) + int(cfg[CFG_ZEROS])


def _matrix(data: bytes, group: int) -> tuple[np.ndarray, bytes]:
    whole = len(data) // group * group
    return np.frombuffer(data[:whole], dtype=np.uint8).reshape(-1, group).copy(), data[whole:]


def _code_stride_indices(stream: DigitStream, stride_index: np.ndarray) -> np.ndarray:
    """Version 5 range-codes the blocks' stride indices (each column with its own adaptive
    counts): blocks mostly repeat a few strides (measured on a 15 MB VGG-16 gradient: 0.8 KB
    instead of 2.7 KB raw). Decoding, ``stride_index`` is a zero matrix of the right shape and
    comes back filled."""
    for column in stride_index.T:
        column[:] = code_adaptive_blocks(stream, column.astype(np.int32), len(STRIDES) + 1)
    return stride_index


def _code_zero_flags(stream: DigitStream, zeros: bool) -> bool:
    """Version 7's bit of whether the chunk's values have zero flags (:func:`_zero_flags`),
    coded as one of two equally likely digits; decoding, ``zeros`` is ignored and the bit read
    comes back."""
    return bool(stream.code_fixed(np.array([zeros], dtype=np.int32), np.ones(2))[0])


def _block_columns(stride_index: np.ndarray, spans) -> np.ndarray:
    """Per block of values, the strides its indices name and where a conv kernel's taps are
    counted from: the first value of the last row span (a tensor's rows) that reaches into the
    block (read by model version 4; 0 where no span does)."""
    columns = np.zeros((len(stride_index), 4), dtype=np.int64)
    columns[:, : stride_index.shape[1]] = np.array((0, *STRIDES))[stride_index]
    for span in spans:
        first, last = span.start >> BLOCK_BITS, (span.start + span.length * span.count - 1) >> BLOCK_BITS
        columns[first : last + 1, 3] = span.start
    return columns


def _heads(matrix: np.ndarray) -> np.ndarray:
    """The top 16 bits of each value (its first two bytes), as the row prediction reads them."""
    return (matrix[:, 0].astype(np.int32) << 8) | matrix[:, 1]


def _set_heads(matrix: np.ndarray, heads: np.ndarray) -> None:
    matrix[:, 0], matrix[:, 1] = heads >> 8, heads & 0xFF


class ContextMixingPrior:
    """Context mixing of float values, bit by bit (see the module docstring).

    Args:
        raw: byte positions of each value stored as they are; ``None`` lets the encoder choose
            them per input (:func:`raw_positions`) and record them.
    """

    name = "context"
    kind = "context-cm"
    version = 7
    takes_rows = True  # see lmgc.priors.base.encode_input
    default_chunk_bytes = 64 << 20  # the most a header allows: the model learns across a chunk

    def __init__(self, raw: list[int] | None = None) -> None:
        self.raw = raw

    @classmethod
    def create(cls, serialization=None, threads: int = 1, load=None) -> ContextMixingPrior:
        """No model to load; single-threaded whatever ``threads`` says."""
        return cls()

    @classmethod
    def check_identity(cls, recorded, group: int) -> dict:
        mapping(recorded, "context-mixing prior", {"kind", "version", "raw_positions"})
        if recorded["version"] != cls.version:
            raise corrupt(f"context-mixing prior version must be {cls.version}", recorded["version"])
        raw = recorded["raw_positions"]
        if (not isinstance(raw, list) or len(raw) >= group
                or any(type(p) is not int or not 0 <= p < group for p in raw)
                or raw != sorted(set(raw))):  # fmt: skip
            raise corrupt(f"raw_positions must be sorted distinct byte positions below {group}, "
                          "not all", raw)  # fmt: skip
        return dict(recorded)

    @classmethod
    def environment(cls, identity: dict) -> dict:
        """numba compiles the integer model; constriction quantizes the probabilities."""
        return {name: _version(name) for name in ("constriction", "numba", "numpy")}

    @classmethod
    def describe(cls, identity: dict) -> list[tuple[str, str]]:
        raw = ", ".join(map(str, identity["raw_positions"])) or "none"
        rows = ", rows predicted from earlier rows" if identity["version"] >= 4 else ""
        return [("prior", f"context mixing (level max{rows}), byte positions stored raw: {raw}")]

    @classmethod
    def check_symbol_counts(cls, n_symbols, sizes, serialization, group: int) -> None:
        """One symbol per byte (the bits of raw positions included)."""
        for i, (count, size) in enumerate(zip(n_symbols, sizes)):
            if count != size:
                raise CorruptDataError(f"chunk {i} claims {count} symbols for {size} bytes")

    @classmethod
    def from_identity(cls, recorded: dict, serialization=None, load=None) -> ContextMixingPrior:
        return cls(list(recorded["raw_positions"]))

    def identity(self) -> dict:
        """The lane, table, stride-block and learning-rate rules belong to ``version``."""
        return {"kind": self.kind, "version": self.version, "raw_positions": self.raw}

    def fit(self, stream: bytes, group: int) -> ContextMixingPrior:
        """This prior with the raw positions chosen for ``stream`` unless given."""
        raw = raw_positions(_matrix(stream, group)[0], self.version) if self.raw is None else self.raw
        if len(raw) >= group or any(not 0 <= p < group for p in raw):
            raise SerializationError(f"bad raw byte positions {raw} for values of {group} bytes")
        return type(self)(sorted(set(raw)))

    def encode(self, stream: bytes, chunks, group: int, batch: int, progress: bool, rows=None) -> Coded:
        """``rows`` (:func:`~lmgc.priors.context_rows.tensor_rows`) lets version 4 predict rows."""
        coder = self.fit(stream, group)
        payloads, start = [], 0
        with progress_bar(len(stream), "compress", progress, unit="B") as bar:
            for chunk in chunks:
                spans = chunk_spans(rows or [], start, len(chunk) // group, group) if self.version >= 4 else []
                payloads.append(coder.encode_chunk(chunk, group, spans=spans)[0])
                start += len(chunk)
                bar.update(len(chunk))
        return Coded(payloads, [len(chunk) for chunk in chunks], coder.identity())

    def decode(self, payloads, n_symbols, sizes, group: int, batch: int, progress: bool) -> list[bytes]:
        chunks = []
        with progress_bar(sum(sizes), "decompress", progress, unit="B") as bar:
            for payload, size in zip(payloads, sizes):
                chunks.append(self.decode_chunk(payload, size, group))
                bar.update(size)
        return chunks

    def _coded(self, group: int) -> list[int]:
        return [p for p in range(group) if p not in self.raw]

    def encode_chunk(self, data: bytes, group: int, stats: bool = False,
                     spans=()) -> tuple[bytes, np.ndarray | None]:  # fmt: skip
        """(payload, with ``stats`` the ideal code length in bits of each coded byte position);
        ``spans`` (:func:`~lmgc.priors.context_rows.chunk_spans`) are the chunk's rows.

        Payload: two stride indices per block of values (three from version 3; from version 5
        range-coded, after the row prediction), the raw byte positions of every value, the bytes
        of a trailing partial value, then the range coder's words (from version 4 the row
        prediction first; from version 7 whether the values have zero flags, after the stride
        indices)."""
        model = _model()
        matrix, tail = _matrix(data, group)
        encoder = range_encoder()
        stream = DigitStream(encoder, encoding=True)
        if self.version >= 4:
            choice = RowChoice.none()
            if spans:
                choice, residuals = predict(_heads(matrix), spans, ROW_MARGIN, RESIDUAL_LIFT)
                _set_heads(matrix, residuals)
            code_rows(stream, len(matrix), list(spans), choice)
        coded = self._coded(group)
        zeros = self.version >= 7 and _zero_flags(matrix, coded)
        cfg = _config(len(matrix), group, coded, len(data), self.version, zeros)
        stride_index = choose_strides(matrix)
        if self.version >= 3:
            stride_index = np.c_[stride_index, choose_fit_strides(matrix)]
        if self.version >= 5:
            _code_stride_indices(stream, stride_index)
        if self.version >= 7:
            _code_zero_flags(stream, zeros)
        state = model.new_state(cfg, _block_columns(stride_index, spans))
        lanes = state[4].shape[0]
        per_value = _steps_per_value(cfg)
        steps = int(cfg[2]) * per_value  # the longest lane's
        block = max(1, ENCODE_BLOCK_BITS // lanes)
        out_probs = np.empty((block * lanes, 2), dtype=np.float64)
        out_bits = np.empty(block * lanes, dtype=np.int32)
        out_counts = np.empty(block, dtype=np.int64)
        probs = np.empty((lanes, 2), dtype=np.float64)
        position_bits = np.zeros(len(coded))
        for first in range(0, steps, block):
            stop = min(steps, first + block)
            n = model.encode_steps(first, stop, cfg, *state, matrix, probs, out_probs, out_bits, out_counts)
            encoder.encode(out_bits[:n], FAMILY, out_probs[:n])
            if not stats:
                continue
            cost = -np.log2(out_probs[np.arange(n), out_bits[:n]])
            byte_of_step = np.maximum(np.arange(first, stop) % per_value - zeros, 0) // 8  # the flag: byte 0
            byte_of_bit = np.repeat(byte_of_step, out_counts[: stop - first])
            position_bits += np.bincount(byte_of_bit, cost, minlength=len(coded))
        prefix = b"" if self.version >= 5 else stride_index.astype(np.uint8).tobytes()
        prefix += matrix[:, self.raw].tobytes() + tail
        return prefix + payload_bytes(encoder), position_bits if stats else None

    def decode_chunk(self, payload: bytes, n_bytes: int, group: int) -> bytes:
        model = _model()
        n_values = n_bytes // group
        n_blocks = -(-n_values // (1 << BLOCK_BITS))
        columns = 3 if self.version >= 3 else 2
        in_prefix = 0 if self.version >= 5 else columns * n_blocks  # stride indices stored raw
        raw_end = in_prefix + n_values * len(self.raw)
        prefix_size = raw_end + n_bytes % group
        if len(payload) < prefix_size:
            raise CorruptDataError("chunk payload is shorter than its stride indices and raw bytes")
        matrix = np.zeros((n_values, group), dtype=np.uint8)
        raw = np.frombuffer(payload[in_prefix:raw_end], np.uint8)
        matrix[:, self.raw] = raw.reshape(n_values, len(self.raw))
        decoder = range_decoder(payload[prefix_size:])
        stream = DigitStream(decoder, encoding=False)
        coded = self._coded(group)
        spans = []
        try:
            if self.version >= 4:
                spans, choice = code_rows(stream, n_values)
                if spans and group < 2:
                    raise CorruptDataError("chunk payload predicts rows of one-byte values")
            if self.version >= 5:
                stride_index = _code_stride_indices(stream, np.zeros((n_blocks, columns), dtype=np.int64))
            else:
                stride_index = np.frombuffer(payload, np.uint8, in_prefix).reshape(n_blocks, columns)
            if n_blocks and (int(stride_index.max()) > len(STRIDES) or int(stride_index[:, 1].min()) == 0):
                raise CorruptDataError(f"chunk payload names a stride out of 1...{len(STRIDES)}")
            zeros = self.version >= 7 and _code_zero_flags(stream, False)
            cfg = _config(n_values, group, coded, n_bytes, self.version, zeros)
            steps = int(cfg[2]) * _steps_per_value(cfg)
            state = model.new_state(cfg, _block_columns(stride_index, spans))
            lanes = state[4].shape[0]
            probs = np.empty((lanes, 2), dtype=np.float64)
            bits = np.zeros(lanes, dtype=np.int32)
            for step in range(steps):
                n = model.advance(step, cfg, *state, matrix, bits, probs)
                bits = decoder.decode(FAMILY, probs[:n])
        except AssertionError as exc:  # constriction's answer to data no encoder wrote
            raise CorruptDataError(f"chunk payload is corrupt: {exc}") from None
        if steps:
            model.update(steps - 1, cfg, *state, matrix, bits)
        if spans:
            heads = _heads(matrix)
            from_residuals(heads, spans, choice, RESIDUAL_LIFT)
            _set_heads(matrix, heads)
        return matrix.tobytes() + payload[raw_end:prefix_size]


class ContextMixingPriorV6(ContextMixingPrior):
    """Version 6 (no zero flags): its files decode (:data:`lmgc.priors.DECODE_ONLY`); it encodes
    only when built directly."""

    version = 6


class ContextMixingPriorV5(ContextMixingPrior):
    """Version 5 (the second byte's low bits always through the whole model): its files decode
    (:data:`lmgc.priors.DECODE_ONLY`); it encodes only when built directly."""

    version = 5


class ContextMixingPriorV4(ContextMixingPrior):
    """Version 4 (kernel taps counted from the chunk's start): its files decode
    (:data:`lmgc.priors.DECODE_ONLY`); it encodes only when built directly."""

    version = 4


class ContextMixingPriorV3(ContextMixingPrior):
    """Version 3 (no row residuals): its files decode (:data:`lmgc.priors.DECODE_ONLY`); it
    encodes only when built directly."""

    version = 3
    takes_rows = False


class ContextMixingPriorV2(ContextMixingPriorV3):
    """Version 2 of the model (see :mod:`~lmgc.priors.cm_model`), decode-only like version 3."""

    version = 2


class ContextMixingPriorV1(ContextMixingPriorV3):
    """Version 1 of the model, decode-only like version 2."""

    version = 1
