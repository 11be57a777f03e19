from __future__ import annotations

import numpy as np
import pytest

from lmgc.coder import ChunkDecoder, ChunkEncoder
from lmgc.errors import CorruptDataError


def test_round_trip_and_near_ideal_length():
    rng = np.random.default_rng(0)
    n, alphabet = 5000, 300
    logits = rng.standard_normal((n, alphabet)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    symbols = np.array([rng.choice(alphabet, p=p) for p in probs])
    enc = ChunkEncoder()
    for s, p in zip(symbols, probs):
        enc.encode(int(s), p)
    payload = enc.finish()
    dec = ChunkDecoder(payload)
    assert [dec.decode(p) for p in probs] == symbols.tolist()
    assert len(payload) * 8 <= enc.ideal_bits * 1.01 + 64


def test_tiny_probabilities_still_code():
    probs = np.zeros(50)
    probs[0] = 1.0  # symbol 7 has probability 0 but must stay codable
    enc = ChunkEncoder()
    enc.encode(7, probs + 1e-300)
    assert ChunkDecoder(enc.finish()).decode(probs + 1e-300) == 7


def test_payload_must_be_whole_words():
    with pytest.raises(CorruptDataError, match="32-bit words"):
        ChunkDecoder(b"abc")
