"""Hybrid v2 (--prior hybrid): the token-mode LLM mixed with context models per token; version-1
hybrid files still decode."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import lmgc
from lmgc.codec import decode_symbols, encode_symbols, split_chunks
from lmgc.container import unpack
from lmgc.errors import CorruptDataError, SerializationError, UnsupportedVersionError
from lmgc.priors import HybridPrior, TokenHybridPrior, prior_class, recorded_class
from lmgc.priors.context_models import NONE, kind_context
from lmgc.priors.token_layout import TokenSpelling
from lmgc.serialize import Serialization
from lmgc.testing import forge

HEX = "0123456789abcdef"


def _be(data: bytes) -> bytes:
    return np.frombuffer(data, "<f4").astype(">f4").tobytes()


class UniformTokens:
    """Stands in for the token-mode LLM: every token of its alphabet equally likely, text split
    greedily (longest token first), as a real tokenizer's canonical split would be fixed."""

    kind = "llm"
    threads = 1
    lm = None

    def __init__(self, spec: str, texts: list[str]) -> None:
        self.serialization = Serialization.parse(spec)
        self.texts = texts
        self.alphabet_size = len(texts)

    def identity(self) -> dict:
        return {"kind": self.kind, "model": "uniform"}

    def detokenize(self, symbols) -> str:
        return "".join(self.texts[s] for s in symbols)

    def symbols(self, chunk: bytes, group: int) -> np.ndarray:
        text, out, i = self.serialization.to_text(chunk, group), [], 0
        while i < len(text):
            fits = [s for s, t in enumerate(self.texts) if text.startswith(t, i)]
            out.append(max(fits, key=lambda s: len(self.texts[s])))
            i += len(self.texts[out[-1]])
        return np.array(out, dtype=np.int64)

    def restore(self, symbols, n_bytes: int, group: int) -> bytes:
        return self.serialization.from_text(self.detokenize(symbols), n_bytes, group)

    def stream(self, group: int):
        size = self.alphabet_size

        class Session:
            def __init__(self, lengths):
                self.batch = len(lengths)

            def step(self, symbols):
                return np.full((self.batch, size), 1 / size)

        class Stream:
            max_symbols = None

            def open(self, lengths):
                return Session(lengths)

        return Stream()


TOKENS = [*HEX, ",", "ab", "ff", "00", "3b", ",3", "ace", ",,", "0,3", "c,3b"]


def _code(prior, chunks, batch):
    symbols = [prior.symbols(c, 4) for c in chunks]
    sizes = [len(c) for c in chunks]
    encoded = encode_symbols(prior.stream(4), symbols, sizes, batch_size=batch)
    decoded = decode_symbols(prior.stream(4), [e.payload for e in encoded],
                             [e.n_symbols for e in encoded], sizes, batch_size=batch)  # fmt: skip
    assert [prior.restore(s, n, 4) for s, n in zip(decoded, sizes)] == chunks
    return sum(len(e.payload) for e in encoded)


@pytest.mark.parametrize("spec", ["hex-comma-be", "hex-none-be", "hex-0x-be"])
def test_round_trip_with_a_stand_in_llm_keeps_learning_across_batches(spec, gradient_bytes):
    data = _be(gradient_bytes[:6144])
    chunks = split_chunks(data, 512)
    prior = TokenHybridPrior(UniformTokens(spec, [*TOKENS, "0x", "x"]))
    shared = _code(prior, chunks, batch=4)
    assert shared < len(data)  # the stand-in LLM alone: > 100% (4.6 bits a token)
    fresh = sum(_code(prior, chunks[start : start + 4], batch=4) for start in range(0, len(chunks), 4))
    assert shared < fresh  # later batches profit from what the earlier ones taught


def test_forged_payloads_fail_only_in_the_coder_or_the_text_check(gradient_bytes):
    """Random payloads (as if their CRCs had passed) decode tokens that cannot stand where they
    land (the coder gives every token some probability). What fails is the range coder (data no
    encoder wrote; the decoder turns it into CorruptDataError) or the text check
    (SerializationError), never the mixer or the token layout."""
    data = _be(gradient_bytes[:2048])
    chunks = split_chunks(data, 256)
    prior = TokenHybridPrior(UniformTokens("hex-comma-be", TOKENS))
    counts = [len(prior.symbols(c, 4)) for c in chunks]
    rng = np.random.default_rng(3)
    outcomes = set()
    for _ in range(30):
        payloads = [rng.bytes(4 * int(rng.integers(1, 16))) for _ in chunks]
        try:
            decoded = decode_symbols(prior.stream(4), payloads, counts, [256] * len(chunks), 4)
        except AssertionError as exc:
            assert "invalid for the employed entropy model" in str(exc)
            outcomes.add("coder")
            continue
        for tokens in decoded:
            try:
                assert len(prior.restore(tokens, 256, 4)) == 256
                outcomes.add("bytes")
            except SerializationError:
                outcomes.add("text")
    assert "text" in outcomes or "bytes" in outcomes  # the mixer ran on forged tokens


def _brute_contexts(text: str, kind: str, width: int, period: int) -> list[int | None]:
    """Context of each character of ``text`` from its own spelling (None on the separator)."""
    out = []
    for t in range(len(text)):
        p = t % period
        if p >= width:
            out.append(None)
            continue

        def digit(u):
            return HEX.index(text[u]) if u >= 0 else NONE

        value = [HEX.index(c) for c in text[t - p : t]]
        out.append(int(kind_context(kind, p, digit(t - 1) if p else NONE, digit(t - period),
                                    digit(t - 2 * period), int(all(d == 0 for d in value)))))  # fmt: skip
    return out


@pytest.mark.parametrize("kind", ["s2", "zP", "zd", "sP2"])
def test_token_contexts_are_the_digit_contexts_of_the_spelled_text(kind):
    """Every character of every fitting token gets the context the digit models would give it in
    the text written out: previous digit, the two previous values, zero so far, across values."""
    spelling = TokenSpelling(TOKENS, Serialization.parse("hex-comma-be"), 2)  # period 5: short values
    text = "003b,0c3b,0003,00ab,3bff,0000,c3b0,0300,ace0,"
    starts = np.arange(len(text) - 4)
    history = spelling.start(len(starts))
    for row, start in enumerate(starts):  # the coded text before each start, as the session keeps it
        for c in text[max(0, start - spelling.history) : start]:
            history[row] = np.roll(history[row], -1)
            history[row, -1] = HEX.index(c) if c in HEX else NONE
    zero = np.array([all(c == "0" for c in text[s - s % 5 : s]) for s in starts])
    (contexts,), predicted, _ = spelling.digit_contexts(history, starts % 5, zero, [kind])
    for row, start in enumerate(starts):
        for a, token in enumerate(TOKENS):
            if not spelling.fits[start % 5, a]:
                continue
            expected = _brute_contexts(text[:start] + token, kind, 4, 5)[start:]
            got = [int(contexts[row, a, i]) if predicted[row, a, i] else None for i in range(len(token))]
            assert got == expected, (start, token)


def test_a_token_alphabet_that_misses_part_of_the_layout_is_refused():
    with pytest.raises(SerializationError, match="no token for some place"):
        TokenSpelling([*HEX, ","], Serialization.parse("hex-semicolon-be"), 4)


# --- the real model ---------------------------------------------------------------------------


def test_real_model_round_trip_records_version_2(gradient_sample, smollm2):
    data = gradient_sample[:12]
    blob = lmgc.compress(data, prior="token-hybrid", chunk_bytes=16, batch_size=2)
    info = lmgc.read_container_info(blob)
    prior = info["header"]["prior"]
    assert (prior["version"], prior["llm"]["kind"], prior["experts"]) == (2, "llm", ["s2", "zP", "zd", "z"])
    assert info["n_chunks"] == 3
    assert lmgc.decompress(blob).tobytes() == data.tobytes()


def test_the_default_hybrid_is_the_nibble_hybrid(gradient_sample, smollm2):
    """``--prior hybrid`` is the nibble-mode hybrid (measured smaller), version 4: it records the
    context kinds it chose."""
    assert prior_class("hybrid") is HybridPrior and prior_class("token-hybrid") is TokenHybridPrior
    data = gradient_sample[:8]
    blob = lmgc.compress(data, prior="hybrid", chunk_bytes=16, batch_size=2)
    prior = lmgc.read_container_info(blob)["header"]["prior"]
    assert (prior["version"], prior["llm"]["kind"]) == (4, "llm-nibble")
    assert len(prior["digit_contexts"]) == 8
    assert lmgc.decompress(blob).tobytes() == data.tobytes()


# --- forged headers: typed errors before any model loads ---------------------------------------


@pytest.fixture(scope="module")
def context_blob(gradient_sample) -> bytes:
    return lmgc.compress(gradient_sample[:16], prior="context", chunk_bytes=32)


LLM = {"kind": "llm", "model": "smollm2-135m", "weights_sha256": "ab" * 32, "tokenizer_sha256": "cd" * 32,
       "dtype": "float32", "device": "cpu", "threads": 1}  # fmt: skip
V2 = {"kind": "hybrid", "version": 2, "llm": LLM, "learning_rate": 0.005, "experts": ["s2", "zP", "zd"]}


def _forged(blob: bytes, edit) -> bytes:
    fields = copy.deepcopy(unpack(blob).header.fields)
    fields["prior"] = copy.deepcopy(V2)
    edit(fields["prior"])
    return forge(blob, fields)


def test_a_valid_v2_identity_passes_the_schema(context_blob):
    assert recorded_class(unpack(_forged(context_blob, lambda p: None)).header.prior) is TokenHybridPrior


@pytest.mark.parametrize("edit,error,message", [
    (lambda p: p.update(version=5), UnsupportedVersionError,
     r"hybrid prior version 5 is not one this lmgc decodes \(1, 2, 3, 4\)"),
    (lambda p: p.update(version="2"), UnsupportedVersionError, "hybrid prior version '2'"),
    (lambda p: p.pop("version"), UnsupportedVersionError, "hybrid prior version None"),
    (lambda p: p.pop("experts"), CorruptDataError, r"hybrid prior has missing \['experts'\]"),
    (lambda p: p.update(extra=1), CorruptDataError, r"unknown \['extra'\]"),
    (lambda p: p.update(experts=["s2", "s2"]), CorruptDataError, "hybrid experts must be distinct"),
    (lambda p: p.update(experts=["raw"]), CorruptDataError, "hybrid experts must be distinct"),
    (lambda p: p.update(experts=[]), CorruptDataError, "hybrid experts must be distinct"),
    (lambda p: p.update(learning_rate=1.5), CorruptDataError, "learning_rate must be a float"),
    (lambda p: p["llm"].update(kind="llm-nibble"), CorruptDataError, "bad LLM prior kind"),
    (lambda p: p.update(version=1), CorruptDataError, "bad LLM prior kind"),  # v1's schema: nibble LLM
])  # fmt: skip
def test_forged_hybrid_headers_are_refused_with_typed_errors(context_blob, edit, error, message):
    with pytest.raises(error, match=message):
        lmgc.decompress(_forged(context_blob, edit))


V4 = {"kind": "hybrid", "version": 4, "llm": LLM | {"kind": "llm-nibble"}, "learning_rate": 0.005,
      "digit_contexts": ["zP", "z", "zd", "raw", "raw", "raw", "raw", "z"]}  # fmt: skip


def test_a_valid_v4_identity_passes_the_schema(context_blob):
    forged = _forged(context_blob, lambda p: (p.clear(), p.update(copy.deepcopy(V4))))
    assert recorded_class(unpack(forged).header.prior) is HybridPrior


@pytest.mark.parametrize("edit,message", [
    (lambda p: p.pop("digit_contexts"), r"hybrid prior has missing \['digit_contexts'\]"),
    (lambda p: p.update(digit_contexts=["z"] * 4), "digit_contexts must be 8 context kinds"),
    (lambda p: p.update(digit_contexts=["z"] * 7 + ["zz"]), "digit_contexts must be 8 context kinds"),
    (lambda p: p.update(digit_contexts="z" * 8), "digit_contexts must be 8 context kinds"),
    (lambda p: p.update(version=3), r"unknown \['digit_contexts'\]"),
    (lambda p: p.update(experts=["s2"]), r"unknown \['experts'\]"),
])  # fmt: skip
def test_forged_v4_hybrid_headers_are_refused_with_typed_errors(context_blob, edit, message):
    def forge_v4(p):
        p.clear()
        p.update(copy.deepcopy(V4))
        edit(p)

    with pytest.raises(CorruptDataError, match=message):
        lmgc.decompress(_forged(context_blob, forge_v4))
