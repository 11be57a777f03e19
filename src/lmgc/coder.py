"""Stage 3: the entropy coder, constriction's range coder with categorical models.

Float probabilities are quantized to fixed-point frequencies inside constriction, by the same
model family on both sides (``Categorical(perfect=False)`` with a one-row probability table), so
the encoder and decoder agree exactly whenever they are handed the same float64 arrays.

>>> import numpy as np
>>> probs = np.array([[0.7, 0.2, 0.1]])
>>> enc, lanes = BatchEncoder(1), np.array([0])
>>> for s in (0, 2, 1):
...     enc.encode(lanes, np.array([s], dtype=np.int32), probs)
>>> dec, out = BatchDecoder(enc.finish()), np.zeros(1, dtype=np.int64)
>>> [dec.decode(lanes, probs, out) or int(out[0]) for _ in range(3)]
[0, 2, 1]
"""

from __future__ import annotations

import constriction
import numpy as np

from .errors import CorruptDataError

__all__ = ["FAMILY", "BatchEncoder", "BatchDecoder", "range_encoder", "range_decoder", "payload_bytes"]

#: Categorical models whose probability rows are given per symbol at coding time.
FAMILY = constriction.stream.model.Categorical(perfect=False)


def range_encoder():
    return constriction.stream.queue.RangeEncoder()


def payload_bytes(encoder) -> bytes:
    """The compressed bytes of a range encoder (little-endian 32-bit words)."""
    return encoder.get_compressed().astype("<u4").tobytes()


def range_decoder(payload: bytes):
    if len(payload) % 4:
        raise CorruptDataError(f"chunk payload of {len(payload)} bytes is not whole 32-bit words")
    return constriction.stream.queue.RangeDecoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))


class BatchEncoder:
    """Range-encodes a lockstep batch of chunks, each into its own payload, one call per step for
    the whole batch, and tracks each chunk's ideal code length. (Per chunk one constriction call
    per symbol: payloads are independent. Everything else is vectorized over the batch, which on
    a GPU's thousands of chunks is most of the host's share of a step.)"""

    def __init__(self, n_chunks: int) -> None:
        self._encoders = [range_encoder() for _ in range(n_chunks)]
        self.ideal_bits = np.zeros(n_chunks)
        self.n_symbols = np.zeros(n_chunks, dtype=np.int64)

    def encode(self, lanes: np.ndarray, symbols: np.ndarray, probabilities: np.ndarray) -> None:
        """Encode ``symbols[j]`` (int32) with ``probabilities[j]`` (float64 rows) for every lane
        ``j`` in ``lanes``."""
        encoders = self._encoders
        for j in lanes.tolist():
            encoders[j].encode(symbols[j : j + 1], FAMILY, probabilities[j : j + 1])
        self.ideal_bits[lanes] -= np.log2(probabilities[lanes, symbols[lanes]])
        self.n_symbols[lanes] += 1

    def finish(self) -> list[bytes]:
        return [payload_bytes(encoder) for encoder in self._encoders]


class BatchDecoder:
    """Decodes a lockstep batch of payloads with the same probabilities the encoder saw."""

    def __init__(self, payloads) -> None:
        self._decoders = [range_decoder(payload) for payload in payloads]

    def decode(self, lanes: np.ndarray, probabilities: np.ndarray, out: np.ndarray) -> None:
        """``out[j]`` = the next symbol of every lane ``j`` in ``lanes``."""
        decoders = self._decoders
        for j in lanes.tolist():
            out[j] = decoders[j].decode(FAMILY, probabilities[j : j + 1])[0]
