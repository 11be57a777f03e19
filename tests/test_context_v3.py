"""Version 3 of the fast context codec: kind ``zr`` (raw digits except in values zero so far) and
the raw margin, their payload section read back from untrusted bytes, and a golden file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import lmgc
from lmgc.container import unpack
from lmgc.errors import CorruptDataError, SerializationError
from lmgc.priors.context import RAW_MARGIN, ContextPrior
from lmgc.priors.context_models import ZERO_RAW, choose_kinds, value_digits

GOLDEN = Path(__file__).parent / "data" / "golden" / "sparse-context3.lmgc"


def _sparse_low_rank(rows: int = 64, columns: int = 96, seed: int = 5) -> np.ndarray:
    """A gradient with dead input and output channels (zero columns and rows)."""
    rng = np.random.default_rng(seed)
    x = np.outer(rng.normal(size=rows), rng.normal(size=columns)) * 1e-3
    x *= 1 + 1e-3 * rng.normal(size=x.shape)
    x[:, rng.random(columns) < 0.3] = 0
    x[rng.random(rows) < 0.2] = 0
    return x.astype(np.float32)


def _sparse_bytes(n: int = 30_000, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    values = (rng.standard_normal(n) * 1e-3).astype(">f4")
    values[rng.random(n) < 0.4] = 0
    return values.tobytes()


def _chunk(data: bytes, kinds=None) -> tuple[ContextPrior, bytes]:
    prior = ContextPrior(kinds)
    prior.fit(data, 4)
    return prior, prior.encode_chunk(data, 4)[0]


def test_golden_file_decodes_and_the_encoder_still_makes_it():
    x = _sparse_low_rank()
    blob = GOLDEN.read_bytes()
    assert unpack(blob).header.prior["version"] == 3 and ZERO_RAW in unpack(blob).header.prior["digit_contexts"]
    assert lmgc.decompress(blob)["w"].tobytes() == x.tobytes()
    assert lmgc.compress({"w": x}, prior="context") == blob


def test_sparse_values_store_their_low_digits_raw_and_round_trip():
    data = _sparse_bytes()
    prior, payload = _chunk(data)
    assert prior.kinds[-1] == ZERO_RAW
    assert ContextPrior.from_identity(prior.identity()).decode_chunk(payload, len(data), 4) == data
    x = np.frombuffer(data, ">f4").astype(np.float32)
    blob = lmgc.compress(x, prior="context", chunk_bytes=16_384)  # 8 chunks, each with its raw digits
    assert np.array_equal(lmgc.decompress(blob), x)
    v2 = lmgc.compress(x, prior=ContextPrior(version=2), chunk_bytes=16_384)
    assert len(blob) <= 1.002 * len(v2)


def test_digits_saving_less_than_the_margin_are_stored_raw():
    rng = np.random.default_rng(1)
    digits = np.zeros((40_000, 8), dtype=np.int64)
    digits[:, 0] = rng.choice(16, size=len(digits), p=np.r_[0.5, np.full(15, 0.5 / 15)])
    digits[:, 1:] = rng.choice(16, size=(len(digits), 7), p=np.r_[0.085, np.full(15, 0.915 / 15)])  # ~0.004 bit
    assert choose_kinds(digits, raw_margin=0.0)[1:] == ["z"] * 7
    assert choose_kinds(digits, raw_margin=RAW_MARGIN)[1:] == ["raw"] * 7


def _edit_count(payload: bytes, raw_bytes: int, change: int, side_bytes: int) -> bytes:
    """The payload with its raw-digit count changed by ``change`` and ``side_bytes`` bytes of
    raw digits removed (negative) or added after the count."""
    count = int.from_bytes(payload[raw_bytes : raw_bytes + 4], "little")
    head = payload[:raw_bytes] + (count + change).to_bytes(4, "little")
    side_start = raw_bytes + 4
    if side_bytes < 0:
        return head + payload[side_start - side_bytes :]
    return head + b"\0" * side_bytes + payload[side_start:]


def test_forged_raw_digit_counts_are_refused():
    data = _sparse_bytes(8000)
    prior, payload = _chunk(data)
    n_values = len(data) // 4
    raw_bytes = (prior.kinds.count("raw") * n_values + 1) // 2
    decoder = ContextPrior.from_identity(prior.identity())
    huge = payload[:raw_bytes] + (2**32 - 1).to_bytes(4, "little") + payload[raw_bytes + 4 :]
    with pytest.raises(CorruptDataError, match="claims 4294967295 raw digits"):
        decoder.decode_chunk(huge, len(data), 4)
    with pytest.raises(CorruptDataError, match="decoding needs more"):
        decoder.decode_chunk(_edit_count(payload, raw_bytes, -2, -1), len(data), 4)
    with pytest.raises(CorruptDataError, match="2 raw digits more than its values have"):
        decoder.decode_chunk(_edit_count(payload, raw_bytes, 2, 1), len(data), 4)
    with pytest.raises(CorruptDataError, match="claims"):
        decoder.decode_chunk(payload[: raw_bytes + 2], len(data), 4)


def test_zero_raw_needs_version_3():
    kinds = ["zP", "z", "zd", "z", "zr", "zr", "zr", "zr"]
    with pytest.raises(SerializationError, match="needs context prior version 3"):
        ContextPrior(kinds, version=2)
    with pytest.raises(CorruptDataError, match="bad context-model settings"):
        ContextPrior.from_identity({"kind": "context", "version": 2, "digit_contexts": kinds})
    matrix, _ = value_digits(_sparse_bytes(2000), 4)
    assert ZERO_RAW not in choose_kinds(matrix)  # the hybrid's choice never offers it


def test_a_one_chunk_input_codes_the_rows_predicted_for_its_kind_choice_as_a_fresh_chunk():
    """Kinds chosen from a whole small input keep its predicted rows for its one chunk; the
    chunk must code as a prior given those kinds codes it, and another chunk is predicted anew."""
    matrix = _sparse_low_rank(rows=96, columns=288)
    data = matrix.astype(">f4").tobytes()
    rows = [(len(data), 4 * matrix.shape[1])]
    chosen = ContextPrior()
    chosen.fit(data, 4, rows)
    spans = chosen.spans(rows, 0, len(data), 4)
    assert spans, "the test needs predicted rows"
    assert chosen.encode_chunk(data, 4, spans) == ContextPrior(chosen.kinds).encode_chunk(data, 4, spans)
    other = _sparse_low_rank(rows=96, columns=288, seed=9).astype(">f4").tobytes()
    again = ContextPrior()
    again.fit(data, 4, rows)
    assert again.encode_chunk(other, 4, spans) == ContextPrior(again.kinds).encode_chunk(other, 4, spans)
