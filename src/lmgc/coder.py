"""Stage 3: the entropy coder, constriction's range coder with categorical models.

Float probabilities are quantized to fixed-point frequencies inside constriction, by the same
model family on both sides (``Categorical(perfect=False)`` with a one-row probability table), so
the encoder and decoder agree exactly whenever they are handed the same float64 arrays.

>>> import numpy as np
>>> probs = np.array([[0.7, 0.2, 0.1]])
>>> enc = ChunkEncoder()
>>> for s in (0, 2, 1):
...     enc.encode(s, probs[0])
>>> dec = ChunkDecoder(enc.finish())
>>> [dec.decode(probs[0]) for _ in range(3)]
[0, 2, 1]
"""

from __future__ import annotations

import math

import constriction
import numpy as np

from .errors import CorruptDataError

__all__ = ["FAMILY", "ChunkEncoder", "ChunkDecoder", "range_encoder", "range_decoder", "payload_bytes"]

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


class ChunkEncoder:
    """Range-encodes one chunk's symbols, one call per step, and tracks the ideal code length."""

    def __init__(self) -> None:
        self._encoder = range_encoder()
        self.ideal_bits = 0.0
        self.n_symbols = 0

    def encode(self, symbol: int, probabilities: np.ndarray) -> None:
        self._encoder.encode(np.array([symbol], dtype=np.int32), FAMILY, probabilities[None, :])
        self.ideal_bits -= math.log2(probabilities[symbol])
        self.n_symbols += 1

    def finish(self) -> bytes:
        return payload_bytes(self._encoder)


class ChunkDecoder:
    """Decodes symbols from one chunk's payload with the same probabilities the encoder saw."""

    def __init__(self, payload: bytes) -> None:
        self._decoder = range_decoder(payload)

    def decode(self, probabilities: np.ndarray) -> int:
        return int(self._decoder.decode(FAMILY, probabilities[None, :])[0])
