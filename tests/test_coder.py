from __future__ import annotations

import numpy as np
import pytest

from lmgc.coder import BatchDecoder, BatchEncoder
from lmgc.errors import CorruptDataError


def test_round_trip_and_near_ideal_length():
    rng = np.random.default_rng(0)
    n, alphabet = 5000, 300
    logits = rng.standard_normal((n, alphabet)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    symbols = np.array([rng.choice(alphabet, p=p) for p in probs], dtype=np.int32)
    enc, lane = BatchEncoder(1), np.array([0])
    for s, p in zip(symbols, probs):
        enc.encode(lane, np.array([s], dtype=np.int32), p[None])
    (payload,) = enc.finish()
    dec, out = BatchDecoder([payload]), np.zeros(1, dtype=np.int64)
    decoded = []
    for p in probs:
        dec.decode(lane, p[None], out)
        decoded.append(int(out[0]))
    assert decoded == symbols.tolist() and enc.n_symbols[0] == n
    assert len(payload) * 8 <= enc.ideal_bits[0] * 1.01 + 64


def test_a_batch_codes_only_its_active_lanes_each_into_its_own_payload():
    """Lanes left out of a step are untouched: a chunk that has ended gets no more symbols."""
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(16), size=(6, 3))  # steps x lanes x symbols
    symbols = rng.integers(0, 16, (6, 3)).astype(np.int32)
    lengths = np.array([6, 2, 4])
    enc = BatchEncoder(3)
    for t in range(6):
        enc.encode(np.flatnonzero(lengths > t), symbols[t], probs[t])
    assert enc.n_symbols.tolist() == [6, 2, 4]
    payloads = enc.finish()
    for j in range(3):  # each payload decodes alone
        dec, out = BatchDecoder([payloads[j]]), np.zeros(1, dtype=np.int64)
        for t in range(lengths[j]):
            dec.decode(np.array([0]), probs[t, j : j + 1], out)
            assert out[0] == symbols[t, j]


def test_tiny_probabilities_still_code():
    probs = np.zeros((1, 50))
    probs[0, 0] = 1.0  # symbol 7 has probability 0 but must stay codable
    enc, lane, out = BatchEncoder(1), np.array([0]), np.zeros(1, dtype=np.int64)
    enc.encode(lane, np.array([7], dtype=np.int32), probs + 1e-300)
    BatchDecoder(enc.finish()).decode(lane, probs + 1e-300, out)
    assert out[0] == 7


def test_payload_must_be_whole_words():
    with pytest.raises(CorruptDataError, match="32-bit words"):
        BatchDecoder([b"abc"])
