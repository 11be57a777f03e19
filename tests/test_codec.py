"""The lockstep loop with a small deterministic prior (fast), plus its invariants."""

from __future__ import annotations

import numpy as np
import pytest

from lmgc.codec import decode_symbols, encode_symbols, split_chunks
from lmgc.errors import SerializationError
from lmgc.serialize import Serialization


class AdaptiveCharPrior:
    """Per-chunk adaptive character counts: a real (if weak) prior with state across steps,
    standing in for a prior stream (``max_symbols`` + ``open``)."""

    def __init__(self, alphabet: frozenset[str], max_symbols: int | None = None) -> None:
        self.chars = sorted(alphabet)
        self.index = {c: i for i, c in enumerate(self.chars)}
        self.alphabet_size = len(self.chars)
        self.max_symbols = max_symbols
        self.sessions: list[list] = []

    def identity(self) -> dict:
        return {"kind": "test"}

    def tokenize(self, text):
        return np.array([self.index[c] for c in text], dtype=np.int64)

    def detokenize(self, symbols):
        return "".join(self.chars[s] for s in symbols)

    def open(self, lengths):  # the fake is its own stream: no state across batches
        batch_size = len(lengths)
        prior = self
        log: list = []
        self.sessions.append(log)

        class Session:
            counts = np.ones((batch_size, prior.alphabet_size))

            def step(self, symbols):
                log.append(None if symbols is None else symbols.copy())
                if symbols is not None:
                    self.counts[np.arange(batch_size), symbols] += 1
                return self.counts / self.counts.sum(1, keepdims=True)

        return Session()


@pytest.mark.parametrize("batch", [1, 3, 16])
def test_round_trip_variable_length_chunks(batch, gradient_bytes):
    ser = Serialization.parse("hex-space-be")
    chunks = split_chunks(gradient_bytes[:2000], 333)  # last chunk shorter
    texts = [ser.to_text(c, 4) for c in chunks]
    prior = AdaptiveCharPrior(ser.alphabet())
    symbols = [prior.tokenize(t) for t in texts]
    sizes = [len(c) for c in chunks]
    encoded = encode_symbols(prior, symbols, sizes, batch)
    decoded = decode_symbols(prior, [e.payload for e in encoded], [e.n_symbols for e in encoded], sizes, batch)
    assert [prior.detokenize(s) for s in decoded] == texts
    for e in encoded:  # coded size within 1% (+ a few bytes) of the ideal code length
        assert len(e.payload) <= e.ideal_bits / 8 * 1.01 + 8


def test_decoder_feeds_exactly_what_the_encoder_fed():
    ser = Serialization.parse("hex-none-le")
    chunks = [b"\x00\x01\x02\x03\x04", b"\xff\xfe", b"\x10"]
    prior = AdaptiveCharPrior(ser.alphabet())
    symbols = [prior.tokenize(ser.to_text(c, 4)) for c in chunks]
    encoded = encode_symbols(prior, symbols, [len(c) for c in chunks], 2)
    decode_symbols(prior, [e.payload for e in encoded], [e.n_symbols for e in encoded], [5, 2, 1], 2)
    enc_log, enc_log2, dec_log, dec_log2 = prior.sessions
    for a, b in [(enc_log, dec_log), (enc_log2, dec_log2)]:
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert (x is None and y is None) or np.array_equal(x, y)
    assert len(enc_log) == 10  # longest chunk of batch 1: 5 bytes -> 10 hex digits


def test_chunk_longer_than_context_is_refused():
    ser = Serialization.parse("hex")
    prior = AdaptiveCharPrior(ser.alphabet(), max_symbols=10)
    with pytest.raises(SerializationError, match="lower --chunk-bytes"):
        encode_symbols(prior, [prior.tokenize("00" * 6)], [6], 1)
