"""The LLM engines: the Llama steps (``lmgc-llama-1``, the compact ``lmgc-llama-2``, the lean
``lmgc-llama-3`` and the fixed-span ``lmgc-llama-graph-1``) against the model's own forward,
files of the ``transformers`` engine (and of lmgc versions that recorded no engine), and the
``auto`` batch size."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import lmgc
from lmgc.config import BATCH_CAP, DEFAULT_BATCH_SIZE, STATE_BUDGET, CodecConfig, auto_batch
from lmgc.container import unpack
from lmgc.errors import (
    CorruptDataError, EnvironmentMismatchError, LimitExceededError, ModelError, ModelMismatchError, SerializationError,
)
from lmgc.priors.llama_compact import ENGINE as COMPACT
from lmgc.priors.llama_compact import CompactLlamaStepper
from lmgc.priors.llama_lean import ENGINE as LEAN
from lmgc.priors.llama_lean import LeanLlamaStepper
from lmgc.priors.llama_step import ENGINE, FusedLlama, LlamaStepper, supports
from lmgc.priors.llm import LLMPrior
from lmgc.priors.llm_engine import TRANSFORMERS, LLMSession, check_engine, default_engine
from lmgc.serialize import Serialization

GOLDEN = Path(__file__).parent / "data" / "golden"
SETTINGS = dict(chunk_bytes=16, batch_size=2, dtype="float32", threads=2)


def _golden_values() -> np.ndarray:
    return np.load(GOLDEN / "sample.npz")["conv.bias"][:8]


def test_the_llama_step_matches_the_models_own_forward(smollm2):
    """Token by token and three tokens at once, the stepped hidden states are the full forward's
    to float32 rounding (the schedule differs, the computation does not)."""
    import torch

    ids = torch.tensor([[1, 300, 301, 45, 46, 47, 999, 12, 13, 14], [1, 7, 8, 9, 10, 11, 12, 13, 14, 15]])
    with torch.inference_mode():
        full = smollm2.model.base_model(input_ids=ids).last_hidden_state
    stepper = LlamaStepper(FusedLlama(smollm2.model), batch=2, length=4)  # grows on the way
    stepped = [stepper.hidden(ids[:, t : t + 1]) for t in range(7)] + [stepper.hidden(ids[:, 7:10])]
    stepped = torch.cat(stepped, dim=1)
    assert torch.allclose(stepped, full, rtol=1e-4, atol=1e-4)


def test_the_fixed_span_step_matches_the_models_own_forward(smollm2):
    """The graph engine's schedule (masked spans, writes at a device position), run eagerly as on
    a CPU: the full forward's hidden states to float32 rounding, across a span boundary (64) and
    a cache that grows."""
    import torch

    from lmgc.priors.llama_graph import SPAN, GraphLlamaStepper

    ids = torch.randint(3, 2000, (2, SPAN + 6), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        full = smollm2.model.base_model(input_ids=ids).last_hidden_state
    stepper = GraphLlamaStepper(FusedLlama(smollm2.model), batch=2, length=4)  # grows on the way
    assert stepper._length == SPAN  # whole spans
    stepped = [stepper.hidden(ids[:, :3])] + [stepper.hidden(ids[:, t : t + 1]) for t in range(3, SPAN + 6)]
    assert stepper._length == 2 * SPAN
    assert torch.allclose(torch.cat(stepped, dim=1), full, rtol=1e-4, atol=1e-4)


def test_the_compact_step_matches_the_models_own_forward(smollm2):
    """The CPU's default schedule (a cache in the model's dtype, allocated and read in whole
    spans): the full forward's hidden states to float32 rounding for a float32 model, across a
    span boundary (64), the cache growing a span at a time as positions are fed."""
    import torch

    from lmgc.priors.llama_compact import SPAN

    ids = torch.randint(3, 2000, (2, SPAN + 6), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        full = smollm2.model.base_model(input_ids=ids).last_hidden_state
    stepper = CompactLlamaStepper(FusedLlama(smollm2.model), batch=2, length=1 << 40)  # a forged claim
    assert stepper._length == 0  # nothing allocated ahead of what is fed
    stepped = [stepper.hidden(ids[:, :3])] + [stepper.hidden(ids[:, t : t + 1]) for t in range(3, SPAN)]
    assert stepper._length == SPAN and stepper._keys[0].shape == (2, 3, SPAN, 64)
    stepped += [stepper.hidden(ids[:, t : t + 1]) for t in range(SPAN, SPAN + 6)]
    assert stepper._length == 2 * SPAN and stepper._values[-1].dtype == torch.float32
    assert torch.allclose(torch.cat(stepped, dim=1), full, rtol=1e-4, atol=1e-4)


def test_the_compact_cache_holds_the_models_dtype():
    """A bfloat16 model's cache is bfloat16 (half lmgc-llama-1's float32 bytes), its steps close to
    the model's own bfloat16 forward (a small random Llama stands in for the real one)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)  # fmt: skip
    model = LlamaForCausalLM(config).to(torch.bfloat16).eval()
    ids = torch.randint(0, 64, (2, 5))
    with torch.inference_mode():
        full = model.base_model(input_ids=ids).last_hidden_state
    stepper = CompactLlamaStepper(FusedLlama(model), batch=2, length=5)
    stepped = torch.cat([stepper.hidden(ids[:, :2])] + [stepper.hidden(ids[:, t : t + 1]) for t in range(2, 5)], dim=1)
    assert stepper._keys[0].dtype == stepper._values[1].dtype == torch.bfloat16
    assert torch.allclose(stepped.float(), full.float(), rtol=0.05, atol=0.05)


def test_the_lean_step_matches_the_models_own_forward_as_its_batch_sheds_sequences(smollm2):
    """The lean schedule (scale in the queries, softmax in the model's dtype, one rotary call):
    the full forward's hidden states to float32 rounding; after :meth:`keep` drops the second
    sequence, the first goes on as it would have."""
    import torch

    ids = torch.randint(3, 2000, (2, 12), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        full = smollm2.model.base_model(input_ids=ids).last_hidden_state
    stepper = LeanLlamaStepper(FusedLlama(smollm2.model), batch=2, length=12)
    stepped = [stepper.hidden(ids[:, :3])] + [stepper.hidden(ids[:, t : t + 1]) for t in range(3, 8)]
    assert torch.allclose(torch.cat(stepped, dim=1), full[:, :8], rtol=1e-4, atol=1e-4)
    stepper.keep(1)
    assert stepper._keys[0].shape[0] == stepper._values[-1].shape[0] == 1
    alone = torch.cat([stepper.hidden(ids[:1, t : t + 1]) for t in range(8, 12)], dim=1)
    assert torch.allclose(alone, full[:1, 8:], rtol=1e-4, atol=1e-4)


def test_a_lean_session_steps_only_the_chunks_still_running(smollm2):
    """Chunks are stepped longest first and leave the batch once their last symbol is predicted:
    the running chunks' probabilities are those of a batch that never shrinks (to float32
    rounding), the finished ones' rows uniform, and the batch the stepper holds shrinks."""
    serialization = Serialization.parse("hex-comma-be")
    lengths = [3, 6, 4, 6]
    symbols = np.random.default_rng(0).integers(0, 10, (6, 4))
    lean = LLMSession(LLMPrior(smollm2, serialization, threads=2, engine=LEAN), lengths, lambda t: (), 7)
    whole = LLMSession(LLMPrior(smollm2, serialization, threads=2, engine=COMPACT), lengths, lambda t: (), 7)
    inputs, held = None, []
    for t in range(6):
        shed, kept = lean.step(inputs), whole.step(inputs)
        running = np.array(lengths) > t
        held.append(lean._stepper._keys[0].shape[0])
        np.testing.assert_allclose(shed[running], kept[running], rtol=1e-3, atol=1e-6)
        assert np.all(shed[~running] == 1 / shed.shape[1])
        inputs = symbols[t]
    assert held == [4, 4, 4, 3, 2, 2]


def test_compact_engine_files_round_trip_and_lmgc_llama_1_files_still_decode(smollm2):
    """Their probabilities are their own, so files record the engine; decoders follow the record.
    Chunks of different lengths in one batch, so the lean engine's batch sheds some."""
    values = _golden_values()
    blobs = {}
    for engine in (LEAN, COMPACT, ENGINE):
        prior = LLMPrior(smollm2, Serialization.parse("hex-comma-be"), threads=2, engine=engine)
        lengths = {len(prior.symbols(values[i : i + 2].tobytes(), 4)) for i in range(0, 8, 2)}
        assert len(lengths) > 1
        blobs[engine] = lmgc.Compressor(prior=prior, chunk_bytes=8, batch_size=4).compress(values)
        assert lmgc.read_container_info(blobs[engine])["header"]["prior"]["engine"] == engine
        assert lmgc.decompress(blobs[engine]).tobytes() == values.tobytes()


def test_a_cache_no_machine_can_hold_is_a_typed_error(smollm2, monkeypatch):
    """Claimed symbol counts size the cache only up to MAX_PREALLOCATED; past it, and for what
    cannot be allocated at all, the error says what was asked."""
    from lmgc.priors import llama_step

    monkeypatch.setattr(llama_step, "MAX_PREALLOCATED", 1 << 20)
    stepper = LlamaStepper(FusedLlama(smollm2.model), batch=2, length=1 << 40)
    assert stepper._length < 1 << 20  # not what was claimed
    with pytest.raises(LimitExceededError, match=r"KV cache for 2 chunks in lockstep at 1099511627776 "
                                                 r"positions needs \d+\.\d GiB, more than this machine"):  # fmt: skip
        stepper._allocate(1 << 40, 2)


def test_new_files_record_the_llama_engine_and_round_trip(smollm2):
    values = _golden_values()
    blob = lmgc.compress(values, prior="llm", **SETTINGS)
    assert lmgc.read_container_info(blob)["header"]["prior"]["engine"] == LEAN
    assert lmgc.decompress(blob).tobytes() == values.tobytes()


#: Golden LLM files of three formats, each made on two machines by the lmgc version that wrote the
#: format (3cbb21f: token mode and the nibble hybrid v1, no engine recorded; 8484fe9: hybrid
#: version 3), with the digest of their maker's numerics probe for the file's settings (None: made
#: before probes existed, on a machine no longer at hand; the others carry it in their names). An
#: LLM file decodes exactly only where the arithmetic is its maker's: machines with the same
#: library versions and CPU capability have differed.
LLM_GOLDEN = {
    "sample-v2-llm": {"sample-v2-llm.lmgc": None,
                      "sample-v2-llm.0a690734.lmgc": "0a6907349eb67f86"},
    "sample-v2-hybrid1": {"sample-v2-hybrid1.lmgc": None,
                          "sample-v2-hybrid1.a5db4464.lmgc": "a5db4464d9822992"},
    "sample-v2-hybrid3": {"sample-v2-hybrid3.lmgc": None,
                          "sample-v2-hybrid3.a13c03f8.lmgc": "a13c03f860763fa4"},
}  # fmt: skip


def _probe_here(blob: bytes) -> str:
    """The digest this machine computes for the file's probe (what its encoder would record)."""
    container = unpack(blob)
    prior = lmgc.Decompressor()._prior(container)
    return prior.numerics_probe(container.header.first_batch)


@pytest.mark.parametrize("name", [name for files in LLM_GOLDEN.values() for name in files])
def test_golden_llm_files_decode_exactly_or_fail_their_checksum(name, smollm2):
    """Never wrong data: exact where this machine's probe is the maker's; elsewhere exact or a
    CorruptDataError from the checksums (these files record no probe digest to refuse up front)."""
    blob = (GOLDEN / name).read_bytes()
    maker = next(files[name] for files in LLM_GOLDEN.values() if name in files)
    try:
        decoded = lmgc.decompress(blob)
    except CorruptDataError:
        assert maker != _probe_here(blob), "the maker's arithmetic, yet the decode failed"
        return
    assert decoded.tobytes() == _golden_values().tobytes()


@pytest.mark.parametrize("family", LLM_GOLDEN)
def test_each_golden_llm_format_decodes_where_its_makers_arithmetic_runs(family, smollm2):
    """Files without an engine decode with transformers' cache; hybrid version 3 has the guard and
    no chosen kinds. At least one file of each format was made with this machine's arithmetic."""
    blobs = {name: (GOLDEN / name).read_bytes() for name in LLM_GOLDEN[family]}
    for blob in blobs.values():
        prior = lmgc.read_container_info(blob)["header"]["prior"]
        if family == "sample-v2-hybrid3":
            assert (prior["version"], "digit_contexts" in prior) == (3, False)
        else:
            assert "engine" not in prior and "engine" not in prior.get("llm", {})
    here = {name: _probe_here(blob) for name, blob in blobs.items()}
    ours = [name for name, maker in LLM_GOLDEN[family].items() if maker == here[name]]
    if not ours:
        pytest.skip(f"no {family} file was made with this machine's arithmetic (probe {here}): "
                    "make one with the lmgc version named above and add it to LLM_GOLDEN")
    for name in ours:
        assert lmgc.decompress(blobs[name]).tobytes() == _golden_values().tobytes()


def test_new_llm_files_record_their_probe_and_a_machine_computing_another_is_refused(smollm2, monkeypatch):
    """The refusal comes before decoding; allowed anyway, the decode is checked by the checksums."""
    values = _golden_values()
    blob = lmgc.Compressor(prior="llm", chunk_bytes=16, batch_size=2, threads=2, dtype="float32").compress(values)
    recorded = lmgc.read_container_info(blob)["header"]["environment"]["numerics"]
    assert recorded == _probe_here(blob) and len(recorded) == 16
    monkeypatch.setattr(LLMPrior, "numerics_probe", lambda self, batch: "0" * 16)
    monkeypatch.setattr(LLMPrior, "decode", lambda *a: pytest.fail("decoded before the probe was checked"))
    with pytest.raises(EnvironmentMismatchError, match=rf"encoded {recorded[:12]}…, here 000000000000…"):
        lmgc.decompress(blob)
    monkeypatch.undo()
    assert lmgc.decompress(blob, allow_environment_mismatch=True).tobytes() == values.tobytes()


def test_the_probe_sees_the_engines_rounding(smollm2):
    """Two schedules of one model agree to float32 rounding, not bit for bit: the digest tells."""
    serialization = Serialization.parse("hex-comma-be")
    llama = LLMPrior(smollm2, serialization, threads=2, engine=ENGINE)
    assert llama.numerics_probe(2) == llama.numerics_probe(2)
    assert llama.numerics_probe(2) != LLMPrior(smollm2, serialization, threads=2, engine=TRANSFORMERS).numerics_probe(2)


def test_the_graph_engine_codes_and_decodes_on_a_cpu_too(smollm2):
    """The GPU's default engine runs its arithmetic eagerly elsewhere: files round-trip, and the
    engine is recorded, so a decoder steps the same schedule."""
    from lmgc.priors.llama_graph import ENGINE as GRAPH

    values = _golden_values()[:4]
    prior = LLMPrior(smollm2, Serialization.parse("hex-comma-be"), threads=2, engine=GRAPH)
    blob = lmgc.Compressor(prior=prior, chunk_bytes=16, batch_size=2).compress(values)
    assert lmgc.read_container_info(blob)["header"]["prior"]["engine"] == GRAPH
    assert lmgc.decompress(blob).tobytes() == values.tobytes()
    assert default_engine(smollm2.model, "cuda:0") == GRAPH and default_engine(smollm2.model, "cpu") == LEAN


def test_lmgc_engine_chooses_the_engine_new_files_use(smollm2, monkeypatch):
    """A way around an engine that fails on some machine; files record it, decoders follow it."""
    monkeypatch.setenv("LMGC_ENGINE", TRANSFORMERS)
    assert default_engine(smollm2.model, "cuda:0") == TRANSFORMERS
    monkeypatch.setenv("LMGC_ENGINE", "fast-and-wrong")
    with pytest.raises(ModelError, match="LMGC_ENGINE='fast-and-wrong' is not an LLM engine; one of transformers"):
        default_engine(smollm2.model, "cpu")
    other = SimpleNamespace(config=SimpleNamespace(model_type="gemma3_text", rope_parameters={},
                                                   hidden_act="gelu_pytorch_tanh"))  # fmt: skip
    monkeypatch.setenv("LMGC_ENGINE", ENGINE)
    with pytest.raises(ModelMismatchError, match="needs a plain Llama-architecture model; 'gemma3_text' is not one"):
        default_engine(other, "cpu")


def test_the_transformers_engine_still_codes_new_files(smollm2):
    values = _golden_values()[:4]
    prior = LLMPrior(smollm2, Serialization.parse("hex-comma-be"), threads=2, engine=TRANSFORMERS)
    blob = lmgc.Compressor(prior=prior, chunk_bytes=16, batch_size=2).compress(values)
    assert lmgc.read_container_info(blob)["header"]["prior"]["engine"] == TRANSFORMERS
    assert lmgc.decompress(blob).tobytes() == values.tobytes()


def test_an_unknown_engine_is_refused_before_any_model_loads():
    recorded = lmgc.read_container_info((GOLDEN / "sample-v2-llm.lmgc").read_bytes())["header"]["prior"]
    assert LLMPrior.check_identity(dict(recorded, engine=ENGINE), 4)["engine"] == ENGINE
    with pytest.raises(CorruptDataError, match="LLM engine"):
        LLMPrior.check_identity(dict(recorded, engine="fast-and-wrong"), 4)


def test_a_llama_engine_file_needs_a_llama_model():
    other = SimpleNamespace(config=SimpleNamespace(model_type="gemma3_text", rope_parameters={},
                                                   hidden_act="gelu_pytorch_tanh"))  # fmt: skip
    assert not supports(other)
    check_engine(TRANSFORMERS, other, "gemma")
    with pytest.raises(ModelMismatchError, match="coded with the lmgc-llama-1 engine, which needs a plain "
                                                 "Llama-architecture model; 'gemma' is not one"):  # fmt: skip
        check_engine(ENGINE, other, "gemma")


# --- the auto batch size ------------------------------------------------------------------------


def test_auto_batch_follows_chunks_device_and_memory():
    assert auto_batch(5, 1 << 20, "cpu") == 5  # fewer chunks than the cap
    assert auto_batch(10_000, 1 << 20, "cpu") == BATCH_CAP["cpu"]
    assert auto_batch(10_000, 1 << 20, "cuda:0") == BATCH_CAP["cuda"]
    assert auto_batch(10_000, STATE_BUDGET["cpu"] // 3, "cpu") == 3  # the memory budget binds
    assert auto_batch(10_000, STATE_BUDGET["cpu"] * 2, "cpu") == 1
    assert auto_batch(10_000, 0, "cpu") == DEFAULT_BATCH_SIZE  # no per-chunk state


def test_batch_size_is_auto_or_a_bounded_integer():
    assert CodecConfig().batch_size == "auto"
    assert CodecConfig(batch_size=7).batch_for(1000, 1 << 20) == 7
    with pytest.raises(SerializationError, match="batch size must be in"):
        CodecConfig(batch_size="many")


def test_the_header_records_the_resolved_batch(smollm2):
    values = _golden_values()
    blob = lmgc.compress(values, prior="llm", chunk_bytes=4, dtype="float32", threads=2)
    chunks = values.nbytes // 4
    assert chunks > 2 and lmgc.read_container_info(blob)["header"]["codec"]["batch_size"] == chunks
    assert lmgc.decompress(blob).tobytes() == values.tobytes()


def test_a_recorded_batch_of_auto_is_corrupt():
    from lmgc.header import _check_codec

    with pytest.raises(CorruptDataError, match="batch_size"):
        _check_codec({"serialization": "hex-comma-be", "group_bytes": 4, "chunk_bytes": 16, "batch_size": "auto"})
