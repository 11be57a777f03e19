"""Decoding never lies: every hostile or corrupted file gives the exact bytes or an LmgcError, fast.

The fuzz tests run a few hundred cases by default; ``LMGC_FUZZ_EXAMPLES=5000`` runs more
(``benchmarks/fuzz_campaign.py`` runs ten thousand in worker processes with resource limits).
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lmgc
from lmgc import api, decoder
from lmgc.container import unpack
from lmgc.errors import (
    CorruptDataError,
    LimitExceededError,
    LmgcError,
    ModelError,
    UntrustedModelError,
)
from lmgc.testing import field_paths, forge

GOLDEN = Path(__file__).parent / "data" / "golden"
FUZZ = settings(max_examples=int(os.environ.get("LMGC_FUZZ_EXAMPLES", "150")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip


@pytest.fixture(scope="module")
def sample() -> dict:
    with np.load(GOLDEN / "sample.npz") as data:
        return {name: data[name] for name in ("conv.weight", "conv.bias")}


@pytest.fixture(scope="module")
def blob(sample) -> bytes:
    return lmgc.compress(sample, prior="context", chunk_bytes=512)


def _same(decoded: dict, sample: dict) -> bool:
    return list(decoded) == list(sample) and all(
        decoded[k].dtype == sample[k].dtype and decoded[k].shape == sample[k].shape
        and decoded[k].tobytes() == sample[k].tobytes() for k in sample)  # fmt: skip


# --- golden files -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sample-v1-context.lmgc", "sample-v2-context.lmgc"])
def test_golden_files_decode_to_known_bytes(name, sample):
    assert _same(lmgc.decompress((GOLDEN / name).read_bytes()), sample)


def test_info_states_each_version_guarantee():
    v1 = lmgc.read_container_info((GOLDEN / "sample-v1-context.lmgc").read_bytes())
    v2 = lmgc.read_container_info((GOLDEN / "sample-v2-context.lmgc").read_bytes())
    assert v1["format_version"] == 1 and "header" in v1["integrity"] and "NOT covered" in v1["integrity"]
    assert v2["format_version"] == 2 and "CRC32 of the header" in v2["integrity"]


# --- the four classes of the issue ------------------------------------------------------------


@pytest.mark.parametrize(
    "edit",
    [
        lambda h: h["manifest"]["tensors"][0].update(dtype="int32", numpy_dtype="<i4"),
        lambda h: h["manifest"]["tensors"][0].update(shape=[48, 8]),
        lambda h: h["manifest"]["tensors"][0].update(kind="torch", numpy_dtype=None),
        lambda h: h["manifest"]["tensors"][0].update(name="other"),
        lambda h: h["manifest"].update(format="pt"),
        lambda h: h["manifest"]["tree"]["__dict__"][0].__setitem__(0, "renamed"),
        lambda h: h["codec"].update(serialization="hex-comma-le"),
    ],
)
def test_manifest_and_codec_edits_never_decode_silently(blob, edit):
    fields = copy.deepcopy(unpack(blob).header.fields)
    edit(fields)
    with pytest.raises(CorruptDataError, match="SHA-256"):
        lmgc.decompress(forge(blob, fields))


def test_lossy_section_edit_is_refused(sample):
    blob = lmgc.compress(sample, prior="context", lossy="quant:8")
    fields = copy.deepcopy(unpack(blob).header.fields)
    fields["lossy"]["spec"] = "quant:4"
    with pytest.raises(LmgcError):
        lmgc.decompress(forge(blob, fields))
    assert lmgc.decompress(blob)["conv.weight"].shape == (8, 48)


def test_payload_that_breaks_the_range_decoder_is_a_corrupt_data_error(gradient_bytes):
    """constriction asserts on some invalid payloads: with CRCs recomputed, that must surface
    as CorruptDataError, never AssertionError."""
    x = np.frombuffer(gradient_bytes[:32768], "<f4")
    blob = lmgc.compress(x, prior="context")
    (payload,) = unpack(blob).payloads
    seen = set()
    rng = np.random.default_rng(0)
    for _ in range(60):
        broken = bytearray(payload)
        broken[int(rng.integers(len(broken)))] ^= 1 << int(rng.integers(8))
        try:  # a flip in the coder's padding bits decodes to the same bytes
            assert lmgc.decompress(forge(blob, payloads=[bytes(broken)])).tobytes() == x.tobytes()
        except CorruptDataError as exc:
            seen.add("assertion" if "cannot be decoded: AssertionError" in str(exc) else "digest")
    assert seen == {"assertion", "digest"}  # both the coder's assertion and the digest exercised


@pytest.mark.parametrize("total", [10**10, 2**63, 2**64 - 1])
def test_forged_total_bytes_is_refused_fast(blob, total):
    fields = copy.deepcopy(unpack(blob).header.fields) | {"total_bytes": total}
    start = time.perf_counter()
    with pytest.raises(LimitExceededError, match="more than the"):
        lmgc.decompress(forge(blob, fields))
    with pytest.raises(CorruptDataError, match="add up"):  # no limit: the manifest disagrees
        api.Decompressor(max_output_bytes=None).decompress(forge(blob, fields))
    assert time.perf_counter() - start < 1.0


def test_max_output_bytes_is_the_callers(blob):
    with pytest.raises(LimitExceededError, match="more than the 1,000 allowed"):
        api.Decompressor(max_output_bytes=1000).decompress(blob)
    assert api.Decompressor(max_output_bytes=1792).decompress(blob)["conv.bias"].dtype == np.float16


# --- the file never chooses the model ---------------------------------------------------------


@pytest.fixture
def loads(monkeypatch) -> list:
    """A stand-in for load_model that records each call and stops there."""
    calls = []

    def load_model(spec, dtype="float32", device="cpu", announce=False):
        calls.append(spec)
        raise ModelError(f"stand-in loader: {spec}")

    monkeypatch.setattr(decoder, "load_model", load_model)
    return calls


def _llm_file(blob: bytes, model: str, prior: str = "llm") -> bytes:
    """The context blob relabelled as an LLM file: valid up to the point a model would load."""
    header = unpack(blob).header
    fields = copy.deepcopy(header.fields)
    llm = {"kind": "llm-nibble" if prior == "hybrid" else "llm", "model": model,
           "weights_sha256": "ab" * 32, "tokenizer_sha256": "cd" * 32, "dtype": "float32",
           "device": "cpu", "threads": 2}  # fmt: skip
    fields["prior"] = ({"kind": "hybrid", "version": 1, "llm": llm, "learning_rate": 0.005}
                       if prior == "hybrid" else llm)  # fmt: skip
    fields["environment"] = api.environment("cpu")
    counts = [2 * header.chunk_size(i) for i in range(header.n_chunks)]  # nibble: 2 per byte
    return forge(blob, fields, n_symbols=counts)


@pytest.mark.parametrize("prior", ["llm", "hybrid"])
@pytest.mark.parametrize("model", ["some-org/some-model", "/tmp/evil-model-dir", "x.gguf"])
def test_a_model_named_by_the_file_is_never_loaded(blob, loads, model, prior):
    with pytest.raises(UntrustedModelError, match=f"pass --model '{model}'"):
        lmgc.decompress(_llm_file(blob, model, prior))
    assert loads == []


def test_embedded_or_callers_model_is_loaded(blob, loads):
    with pytest.raises(ModelError, match="stand-in loader: smollm2-135m"):
        lmgc.decompress(_llm_file(blob, "smollm2-135m"))
    with pytest.raises(ModelError, match="stand-in loader: my/model"):
        lmgc.decompress(_llm_file(blob, "some-org/some-model"), model="my/model")
    assert loads == ["smollm2-135m", "my/model"]


def test_corrupted_llm_file_is_refused_before_any_model_loads(blob, loads):
    data = bytearray(_llm_file(blob, "smollm2-135m"))
    data[-40] ^= 0x10  # inside the last payload
    start = time.perf_counter()
    with pytest.raises(CorruptDataError, match="chunk 3 fails its CRC32"):
        lmgc.decompress(bytes(data))
    forged = forge(_llm_file(blob, "smollm2-135m"), n_symbols=[10**6, 1024, 1024, 512])
    with pytest.raises(CorruptDataError, match="claims 1000000 symbols"):
        lmgc.decompress(forged)
    assert loads == [] and time.perf_counter() - start < 1.0


# --- fuzzing ----------------------------------------------------------------------------------


def _decodes_or_refuses(data: bytes, reference: dict) -> None:
    try:
        decoded = api.Decompressor(max_output_bytes=1 << 24).decompress(data)
    except LmgcError:
        return
    assert _same(decoded, reference), "decoded without error to different tensors"


mutations = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(0, 7)),
    st.tuples(st.just("overwrite"), st.integers(0, 10**6), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6), st.just(b"")),
    st.tuples(st.just("append"), st.just(0), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.binary(min_size=1, max_size=8)),
)


@FUZZ
@given(st.lists(mutations, min_size=1, max_size=3))
def test_fuzz_container_bytes(blob, sample, edits):
    data = bytearray(blob)
    for kind, position, extra in edits:
        position %= max(len(data), 1)
        if kind in ("flip", "overwrite") and not data:
            continue
        if kind == "flip":
            data[position] ^= 1 << extra
        elif kind == "overwrite":
            data[position : position + len(extra)] = extra
        elif kind == "truncate":
            del data[position:]
        elif kind == "append":
            data += extra
        else:
            data[position:position] = extra
    _decodes_or_refuses(bytes(data), sample)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.sampled_from(["", "z", "raw", "float32", "npy", "context", "hex-comma-be", "<f4", "|u1"])
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=8,
)  # fmt: skip


@FUZZ
@given(st.data())
def test_fuzz_header_fields_repacked_with_valid_crcs(blob, sample, data):
    fields = copy.deepcopy(unpack(blob).header.fields)
    paths = [p for p in field_paths(fields) if p]
    path = data.draw(st.sampled_from(paths))
    parent = fields
    for key in path[:-1]:
        parent = parent[key]
    if data.draw(st.booleans()) and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(json_values)
    _decodes_or_refuses(forge(blob, fields), sample)
