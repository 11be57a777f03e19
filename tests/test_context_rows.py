"""Row prediction in the fast context codec (context prior version 2 and on): the residual transform,
the encoder's choice, the side information read back from untrusted payloads, and round trips
through the API, the streaming path and a golden file."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lmgc
from lmgc.coder import payload_bytes, range_decoder, range_encoder
from lmgc.container import unpack
from lmgc.errors import CorruptDataError
from lmgc.priors.context import ContextPrior
from lmgc.priors.digit_stream import DigitStream
from lmgc.priors.context_rows import (
    MAX_BACK, RowChoice, RowSpan, check_choice, chunk_spans, code_rows, from_residuals, predict, tensor_rows,
    to_residuals,
)  # fmt: skip

GOLDEN = Path(__file__).parent / "data" / "golden" / "rows-context2.lmgc"


def _low_rank(rows: int = 96, columns: int = 128, seed: int = 0) -> np.ndarray:
    """A gradient-like matrix: two outer products (rows nearly scaled copies) plus a little noise."""
    rng = np.random.default_rng(seed)
    x = np.outer(rng.normal(size=rows), rng.normal(size=columns)) * 1e-3
    x += 0.2 * np.outer(rng.normal(size=rows), rng.normal(size=columns)) * 1e-3
    return (x * (1 + 1e-3 * rng.normal(size=x.shape))).astype(np.float32)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 40), st.integers(0, 2**32 - 1), st.sampled_from([0, 1, 1 << 14, 0x7FFE]))
def test_residuals_invert_for_any_choice(count, length, seed, lift):
    rng = np.random.default_rng(seed)
    spans = [RowSpan(3, length, count), RowSpan(3 + length * count + 2, 1, count)]
    heads = rng.integers(0, 1 << 16, size=spans[-1].start + count + 1).astype(np.int32)
    n_rows = 2 * count
    back = np.concatenate([rng.integers(0, np.minimum(np.arange(count), MAX_BACK) + 1)] * 2)
    choice = RowChoice(back, rng.integers(0, 2, n_rows), rng.integers(-(1 << 15), 1 << 15, n_rows))
    check_choice(spans, choice)
    residuals = to_residuals(heads, spans, choice, lift)
    zeros = (heads & 0x7FFF) == 0
    assert np.array_equal(residuals[zeros], heads[zeros]) and not np.any(residuals[~zeros] & 0x7FFF == 0)
    from_residuals(residuals, spans, choice, lift)
    assert np.array_equal(residuals, heads)


def _heads(x: np.ndarray) -> np.ndarray:
    return (x.astype(">f4").view(">u4").astype(np.int64) >> 16).astype(np.int32)


def test_the_choice_finds_scaled_and_flipped_rows():
    x = np.random.default_rng(0).normal(size=(8, 64)).astype(np.float32)
    x[5] = -x[2] * 4  # an exact flipped copy four times larger (two exponent steps: 256)
    choice = predict(_heads(x), [RowSpan(0, 64, 8)])[0]
    assert choice.back[5] == 3 and choice.flip[5] == 1 and choice.offset[5] == 256
    assert np.count_nonzero(choice.back) == 1  # the random rows stay as they are
    low_rank = predict(_heads(_low_rank()), [RowSpan(0, 128, 96)])[0]
    assert (low_rank.back[1:] > 0).mean() > 0.9 and low_rank.back[0] == 0


def test_tensor_rows_only_for_float_rows_with_the_sign_byte_first():
    def t(shape, dtype="float32", itemsize=4):
        return SimpleNamespace(shape=shape, dtype=dtype, itemsize=itemsize, nbytes=int(np.prod(shape)) * itemsize)

    tensors = [t((10,)), t((3, 2, 3)), t((1, 8)), t((4, 4), "int32"), t((2, 2), "float16", 2)]
    assert tensor_rows(tensors, 4, "big") == [(40, 0), (72, 24), (32, 0), (64, 0), (8, 0)]
    assert tensor_rows(tensors, 4, "little") == []
    # a chunk from byte 64 of 60 values: the 3-row tensor (bytes 40..112) has rows at 64 and 88
    assert chunk_spans(tensor_rows(tensors, 4, "big"), 64, 60, 4) == [RowSpan(0, 6, 2)]
    assert chunk_spans([(48, 12)], 0, 12, 4) == []  # rows of 3 values: too short to predict


def test_rows_make_low_rank_gradients_smaller_and_round_trip():
    x = _low_rank()
    v1 = lmgc.compress({"w": x}, prior=ContextPrior(version=1))
    v2 = lmgc.compress({"w": x}, prior=ContextPrior(version=2))
    v3 = lmgc.compress({"w": x}, prior="context")
    assert [unpack(blob).header.prior["version"] for blob in (v2, v3)] == [2, 3]
    assert len(v2) < 0.9 * len(v1) and len(v3) < 0.9 * len(v1)
    for blob in (v1, v2, v3):
        assert lmgc.decompress(blob)["w"].tobytes() == x.tobytes()
    little = lmgc.compress({"w": x}, prior="context", serialization="hex-comma-le")  # no rows: still exact
    assert lmgc.decompress(little)["w"].tobytes() == x.tobytes()


def test_streamed_rows_are_the_in_memory_ones(tmp_path):
    from safetensors.numpy import save_file

    tensors = {"a": _low_rank(40, 300, 1), "b": np.arange(7, dtype=np.float32), "c": _low_rank(70, 64, 2)}
    path = tmp_path / "g.safetensors"
    save_file(tensors, path)
    for chunk_bytes in (None, 20000):
        settings_ = {} if chunk_bytes is None else {"chunk_bytes": chunk_bytes}
        compressor = lmgc.Compressor(prior="context", **settings_)
        compressor.compress_file(path, tmp_path / "s.lmgc", force=True)
        streamed = (tmp_path / "s.lmgc").read_bytes()
        assert streamed == compressor.compress(path)
        back = lmgc.decompress(streamed)
        assert all(back[k].numpy().tobytes() == v.tobytes() for k, v in tensors.items())


def _side_info(spans, choice, n_values):
    stream = DigitStream(range_encoder(), encoding=True)
    code_rows(stream, n_values, spans, choice)
    return payload_bytes(stream.coder)


def test_side_information_outside_the_chunk_is_corrupt():
    spans = [RowSpan(0, 10, 3)]
    choice = RowChoice(np.array([0, 1, 2]), np.array([0, 1, 0]), np.array([0, -5, 7]))
    payload = _side_info(spans, choice, 30)
    read, decoded = code_rows(DigitStream(range_decoder(payload), encoding=False), 30)
    assert read == spans and np.array_equal(decoded.offset, choice.offset) and np.array_equal(decoded.flip, choice.flip)
    with pytest.raises(CorruptDataError, match="not inside the chunk"):
        code_rows(DigitStream(range_decoder(payload), encoding=False), 29)
    none = _side_info([], RowChoice(*[np.zeros(0, np.int64)] * 3), 5)
    assert code_rows(DigitStream(range_decoder(none), encoding=False), 5)[0] == []
    short = _side_info([RowSpan(0, 2, 3)], RowChoice(np.zeros(3, int), np.zeros(3, int), np.zeros(3, int)), 30)
    with pytest.raises(CorruptDataError, match="not inside the chunk"):  # rows of fewer than MIN_ROW values
        code_rows(DigitStream(range_decoder(short), encoding=False), 30)
    many = _side_info([RowSpan(8 * i, 4, 2) for i in range(4)], RowChoice(*[np.zeros(8, int)] * 3), 30)
    with pytest.raises(CorruptDataError, match="claims 4 row spans in 30 values"):  # at most 30 // 8
        code_rows(DigitStream(range_decoder(many), encoding=False), 30)
    too_far = _side_info([RowSpan(0, 10, 3)], RowChoice(np.array([0, 2, 0]), np.zeros(3, int), np.zeros(3, int)), 30)
    with pytest.raises(CorruptDataError, match="outside its tensor"):
        code_rows(DigitStream(range_decoder(too_far), encoding=False), 30)


def test_golden_rows_file_decodes_and_the_encoder_still_makes_it():
    x = _low_rank(48, 96, 3)
    blob = GOLDEN.read_bytes()
    assert lmgc.decompress(blob)["w"].tobytes() == x.tobytes()
    assert lmgc.compress({"w": x}, prior=ContextPrior(version=2)) == blob
