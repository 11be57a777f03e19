"""The structural context model, its fast codec (--prior context), the mixer and the hybrid prior
(with a stand-in LLM, so these tests stay fast; the real LLM is in test_llm.py)."""

from __future__ import annotations

import copy
import lzma

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmgc.api import Compressor, Decompressor, read_container_info
from lmgc.codec import decode_symbols, encode_symbols, split_chunks
from lmgc.container import unpack
from lmgc.errors import (
    CorruptDataError,
    EnvironmentMismatchError,
    InputError,
    SerializationError,
)
from lmgc.priors.context import ContextPrior
from lmgc.priors.context_models import KINDS, ZERO_RAW, choose_kinds, value_digits
from lmgc.priors.hybrid import HybridPrior, HybridPriorV1, HybridPriorV3
from lmgc.priors.llm import nibbles, pack_nibbles
from lmgc.priors.mixer import GeometricMixer
from lmgc.testing import forge
from lmgc.wire import leb128


def _be(data: bytes, itemsize: int = 4) -> bytes:
    return np.frombuffer(data, np.uint8).reshape(-1, itemsize)[:, ::-1].tobytes()


def _round_trip(data: bytes, group: int, kinds=None) -> bytes:
    prior = ContextPrior(kinds)
    prior.fit(data, group)
    payload, n_symbols = prior.encode_chunk(data, group)
    assert n_symbols == 2 * len(data)
    decoder = ContextPrior.from_identity(prior.identity())
    assert decoder.decode_chunk(payload, len(data), group) == data
    return payload


def test_real_gradients_round_trip_below_lzma(gradient_bytes):
    data = _be(gradient_bytes)
    payload = _round_trip(data, 4)
    assert len(payload) < 0.9 * len(lzma.compress(data))


@pytest.mark.parametrize("group", [1, 2, 4, 8])
def test_every_group_size_and_a_partial_last_value(group, gradient_bytes):
    _round_trip(gradient_bytes[: 1000 * group + group - 1], group)


@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 300])
def test_tiny_inputs(n):
    _round_trip(bytes(range(256))[:n] * 1, 4)


def test_sparse_values_cost_little():
    values = np.zeros(20_000, dtype=">f4")
    values[::50] = np.linspace(-1, 1, 400)
    payload = _round_trip(values.tobytes(), 4)
    assert len(payload) < 0.05 * values.nbytes


def test_random_digits_are_stored_raw():
    data = np.random.default_rng(0).integers(0, 256, 40_000, dtype=np.uint8).tobytes()
    matrix, _ = value_digits(data, 4)
    assert choose_kinds(matrix) == ["raw"] * 8
    assert len(_round_trip(data, 4)) <= len(data) + 8


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=3000), st.sampled_from([1, 2, 4, 8]),
       st.lists(st.sampled_from(sorted([*KINDS, ZERO_RAW])), min_size=16, max_size=16))  # fmt: skip
def test_any_bytes_any_valid_kinds_round_trip(data, group, kinds):
    kinds = kinds[: 2 * group]
    sequential = [k for k in kinds if k in ("zP", "s1", "s2", "sP2")]
    kinds = sequential + [k for k in kinds if k not in sequential]  # sequential kinds first
    _round_trip(data, group, kinds)


def test_invalid_kinds_are_refused():
    with pytest.raises(SerializationError, match="unknown digit context kinds"):
        ContextPrior(["s2", "bogus"])
    with pytest.raises(SerializationError, match="must come before plain"):
        ContextPrior(["z", "s2"])
    with pytest.raises(SerializationError, match="2 digit contexts given for values of 8 digits"):
        ContextPrior(["s2", "z"]).fit(b"\0" * 8, 4)


def test_api_round_trip_records_the_choice(gradient_bundle):
    blob = Compressor(prior="context").compress(gradient_bundle)
    info = read_container_info(blob)
    assert info["header"]["prior"]["kind"] == "context"
    assert set(info["header"]["environment"]) == {"constriction"}
    decoded = Decompressor().decompress_bundle(blob)
    assert [t.data for t in decoded.tensors] == [t.data for t in gradient_bundle.tensors]


def test_one_tensor_file_fixed_overhead_is_at_most_128_bytes(gradient_bytes):
    x = np.frombuffer(gradient_bytes[:2048], "<f4")
    blob = Compressor(prior="context").compress(x)
    (chunk,) = read_container_info(blob)["chunks"]
    frame = chunk["payload_bytes"] + len(leb128(chunk["payload_bytes"])) + len(leb128(chunk["symbols"])) + 4
    assert len(blob) - frame <= 128


def test_api_many_chunks(gradient_bytes):
    x = np.frombuffer(gradient_bytes[:40_000], "<f4")
    blob = Compressor(prior="context", chunk_bytes=4096).compress(x)
    assert read_container_info(blob)["n_chunks"] == 10
    assert np.array_equal(Decompressor().decompress(blob), x)


def _edit(blob: bytes, edit) -> bytes:
    fields = copy.deepcopy(unpack(blob).header.fields)
    edit(fields)
    return forge(blob, fields)


def test_corrupt_or_foreign_context_files_are_refused(gradient_bytes):
    x = np.frombuffer(gradient_bytes[:8000], "<f4")
    blob = Compressor(prior="context").compress(x)
    bad = _edit(blob, lambda h: h["prior"].update(digit_contexts=["s2"] * 3))
    with pytest.raises(CorruptDataError, match="context"):
        Decompressor().decompress(bad)
    newer = _edit(blob, lambda h: h["prior"].update(version=4))
    with pytest.raises(CorruptDataError, match="unsupported context-model settings"):
        Decompressor().decompress(newer)
    other = _edit(blob, lambda h: h["environment"].update(constriction="0.0.1"))
    with pytest.raises(EnvironmentMismatchError, match="constriction: encoded with 0.0.1"):
        Decompressor().decompress(other)
    flipped = bytearray(unpack(blob).payloads[0])
    flipped[len(flipped) // 2] ^= 0x55
    with pytest.raises(CorruptDataError, match="chunk 0 fails its CRC32"):
        Decompressor().decompress(blob.replace(unpack(blob).payloads[0], bytes(flipped)))
    with pytest.raises(CorruptDataError):  # CRC recomputed: the decoder itself must notice
        Decompressor().decompress(forge(blob, payloads=[bytes(flipped)]))


def test_estimate_refuses_the_context_prior():
    with pytest.raises(InputError, match="compress instead"):
        Compressor(prior="context").estimate(np.zeros(4, np.float32))


def test_unknown_prior_is_refused():
    with pytest.raises(InputError, match="unknown prior 'ngram'"):
        Compressor(prior="ngram")


# --- mixer ------------------------------------------------------------------------------------


def test_mixer_learns_to_trust_the_better_expert():
    rng = np.random.default_rng(0)
    mixer = GeometricMixer(2, 1, learning_rate=0.05)
    truth = np.array([0.7, 0.1, 0.1, 0.1])
    for _ in range(500):
        experts = np.stack([truth, np.full(4, 0.25)])[None]
        mixer.mix(experts, np.zeros(1, dtype=np.int64))
        mixer.update(rng.choice(4, size=1, p=truth), np.arange(1))
    good, useless = mixer.weights[0]
    assert good > 0.8 and abs(useless) < good / 2


def test_mixer_output_is_a_distribution_and_skips_inactive_rows():
    mixer = GeometricMixer(3, 2, learning_rate=0.1)
    experts = np.random.default_rng(1).dirichlet(np.ones(16), size=(4, 3))
    mixed = mixer.mix(experts, np.array([0, 1, 0, 1]))
    assert np.allclose(mixed.sum(axis=1), 1) and (mixed > 0).all()
    before = mixer.weights.copy()
    mixer.update(np.array([1, 2, 3, 4]), np.array([], dtype=np.int64))
    assert np.array_equal(before, mixer.weights)


# --- hybrid with a stand-in LLM ------------------------------------------------------------------


class UniformNibbles:
    """Stands in for the nibble LLM: every digit equally likely."""

    kind = "llm-nibble"
    threads = 1
    lm = None

    def identity(self) -> dict:
        return {"kind": self.kind, "model": "uniform"}

    def symbols(self, chunk: bytes, group: int) -> np.ndarray:
        return nibbles(chunk)

    def restore(self, symbols, n_bytes: int, group: int) -> bytes:
        return pack_nibbles(symbols, n_bytes)

    def probabilities(self, batch: int, t: int) -> np.ndarray:
        return np.full((batch, 16), 1 / 16)

    def stream(self, group: int):
        model = self

        class Session:
            def __init__(self, lengths):
                self.batch, self.t = len(lengths), 0

            def step(self, symbols):
                self.t += 1
                return model.probabilities(self.batch, self.t)

        class Stream:
            max_symbols = None

            def open(self, lengths):
                return Session(lengths)

        return Stream()


class ConfidentNibbles(UniformNibbles):
    """A stand-in LLM that bets 0.9 on a digit that changes every step: wrong on random data."""

    def probabilities(self, batch: int, t: int) -> np.ndarray:
        p = np.full((batch, 16), 0.1 / 15)
        p[np.arange(batch), (7 * t + 3 * np.arange(batch)) % 16] = 0.9
        return p


def _hybrid_round_trip(prior, data: bytes) -> tuple[list, list, list]:
    """(encoded chunks, their symbols, their sizes) of ``data`` in 512-B chunks, batches of 4,
    after checking that they decode to ``data``."""
    chunks = split_chunks(data, 512)
    symbols = [prior.symbols(c, 4) for c in chunks]
    sizes = [len(c) for c in chunks]
    encoded = encode_symbols(prior.stream(4), symbols, sizes, batch_size=4)
    decoded = decode_symbols(prior.stream(4), [e.payload for e in encoded],
                             [e.n_symbols for e in encoded], sizes, batch_size=4)  # fmt: skip
    assert [prior.restore(s, n, 4) for s, n in zip(decoded, sizes)] == chunks
    return encoded, symbols, sizes


def _hybrid_payload(prior, data: bytes) -> int:
    return sum(len(e.payload) for e in _hybrid_round_trip(prior, data)[0])


def _fitted(llm, data: bytes) -> HybridPrior:
    """Version 4 with the context kinds its encoder would choose for ``data``."""
    return HybridPrior(llm, kinds=choose_kinds(value_digits(data, 4)[0]))


def test_hybrid_round_trip_keeps_learning_across_batches(gradient_bytes):
    data = _be(gradient_bytes[:6144])
    prior = _fitted(UniformNibbles(), data)
    encoded, symbols, sizes = _hybrid_round_trip(prior, data)
    chunks = split_chunks(data, 512)
    shared = sum(len(e.payload) for e in encoded)
    assert shared < 0.9 * len(data)  # the stand-in LLM alone: 100%
    fresh = sum(len(e.payload) for start in range(0, len(chunks), 4)  # a new stream per batch
                for e in encode_symbols(prior.stream(4), symbols[start : start + 4],
                                        sizes[start : start + 4], batch_size=4))  # fmt: skip
    assert shared < fresh  # later batches profit from what the earlier ones taught


def test_hybrid_guard_codes_random_digits_at_their_4_bits(gradient_bytes):
    """Version 3 codes a digit position uniformly while the mixture has cost more than 4 bits a
    digit there: random bytes stay within the coder's few bytes per chunk of their size, smaller
    than version 1's, and a gradient's structured digits are still modelled."""
    noise = np.random.default_rng(0).integers(0, 256, 8192, dtype=np.uint8).tobytes()
    guarded, unguarded = (_hybrid_payload(cls(ConfidentNibbles()), noise) for cls in (HybridPriorV3, HybridPriorV1))
    assert guarded <= len(noise) + 4 * 16 and guarded < unguarded
    data = _be(gradient_bytes[:8192])
    guarded, unguarded = (_hybrid_payload(cls(ConfidentNibbles()), data) for cls in (HybridPriorV3, HybridPriorV1))
    assert guarded <= unguarded < 0.9 * len(data)


def test_hybrid_is_never_far_behind_its_context_models_or_the_raw_bytes(gradient_bytes):
    """Version 4 averages uniform, the context models mixed and the LLM with them. A uniform
    stand-in LLM changes no geometric mixture, so with it the hybrid is the context models mixed;
    a wrong LLM may cost log2(3) bits per mixing context more (16: 4 bytes), plus a byte of coder
    rounding per chunk. Random bytes stay within the coder's bytes per chunk of their size, and
    on a gradient it is smaller than ``--prior context`` (the same chosen kinds, plus the other
    context models)."""
    noise = np.random.default_rng(0).integers(0, 256, 8192, dtype=np.uint8).tobytes()
    assert _fitted(ConfidentNibbles(), noise).kinds == ["raw"] * 8
    assert _hybrid_payload(_fitted(ConfidentNibbles(), noise), noise) <= len(noise) + 4 * 16
    data = _be(gradient_bytes[:8192])
    wrong, uniform = (_hybrid_payload(_fitted(llm(), data), data) for llm in (ConfidentNibbles, UniformNibbles))
    assert wrong <= uniform + 4 + len(data) // 512
    blob = Compressor(prior="context", chunk_bytes=len(data)).compress(np.frombuffer(data, ">f4").astype("<f4"))
    assert uniform < read_container_info(blob)["payload_bytes"]


def test_hybrid_needs_a_context_kind_per_digit():
    with pytest.raises(SerializationError, match="a context kind for each of the 8 digits"):
        HybridPrior(UniformNibbles()).stream(4)
    with pytest.raises(SerializationError, match="a context kind for each of the 8 digits"):
        HybridPrior(UniformNibbles(), kinds=["z"] * 4).stream(4)


def test_ties_between_kinds_go_to_the_simplest():
    """Periodic data gives several context kinds identical counts in a different layout; their
    code lengths then differ only by summation order, and the choice must not depend on it."""
    matrix = value_digits(np.zeros(1000, np.float32).tobytes(), 4)[0]
    assert choose_kinds(matrix) == ["z"] * 8  # every kind costs the same: the simplest plain one
    periodic = np.tile(np.array([0.1, 0.2, 0.3], np.float32), 3000).byteswap().tobytes()
    kinds = choose_kinds(value_digits(periodic, 4)[0])
    assert kinds == ["zP", "s2", "zP", "zd", "zd", "zd", "zd", "zd"]  # pinned: the same on every run


@pytest.mark.parametrize("n", [3000, 70_000])  # 16-bit counts up to 65,535 values, 32-bit above
def test_kind_costs_are_the_adaptive_code_lengths_of_each_kind(n: int) -> None:
    """The compiled counting (joint counts, each kind summed from a finer one) gives each kind's
    exact adaptive (KT) code length, here recomputed from lgamma over the kind's own contexts."""
    import math

    from lmgc.priors.context_models import ALPHA, NONE, _AdaptiveCost

    rng = np.random.default_rng(5)
    planes = rng.integers(0, 16, (2, n)).astype(np.int32)
    planes[1, ::2] = planes[0, ::2]  # digit 1 repeats digit 0 on every other value
    planes[:, rng.random(n) < 0.3] = 0
    zero = (planes[0] == 0).astype(np.int32)
    parts = (rng.random(n) < 0.1).astype(np.int32)
    bits, zero_bits = _AdaptiveCost(n).costs(planes, 1, zero, parts)

    def log2_rising(alpha: float, count: np.ndarray) -> np.ndarray:
        return np.array([math.lgamma(alpha + c) - math.lgamma(alpha) for c in count]) / math.log(2)

    fields = (planes[0], np.r_[NONE, planes[1, :-1]], np.r_[NONE, NONE, planes[1, :-2]])
    for kind, uses in _AdaptiveCost._KINDS.items():
        context = np.zeros(n, dtype=np.int64)
        for used, field in zip(uses, fields):
            context = context * 17 + (field if used else NONE)
        context = (context * 2 + zero) * 2 + parts
        rows, counts = np.unique(context * 16 + planes[1], return_counts=True)
        totals = np.bincount(rows // 16, weights=counts).astype(np.int64)
        expected = log2_rising(16 * ALPHA, totals[totals > 0]).sum() - log2_rising(ALPHA, counts).sum()
        assert bits[kind] == pytest.approx(expected, rel=1e-9), kind
        if kind == "z":
            in_zero = (rows // 16) & 2 > 0
            zero_totals = np.bincount(rows[in_zero] // 16, weights=counts[in_zero]).astype(np.int64)
            zero_expected = log2_rising(16 * ALPHA, zero_totals[zero_totals > 0]).sum()
            assert zero_bits == pytest.approx(zero_expected - log2_rising(ALPHA, counts[in_zero]).sum(), rel=1e-9)
