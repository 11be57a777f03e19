"""The real pipeline on the embedded SmolLM2-135M: exact round trips on real gradient bytes."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lmgc
from lmgc.container import unpack
from lmgc.errors import (
    CorruptDataError,
    EnvironmentMismatchError,
    ModelError,
    ModelMismatchError,
    SerializationError,
    UnsupportedVersionError,
)
from lmgc.testing import forge
from lmgc.wire import leb128

TINY = dict(chunk_bytes=16, batch_size=2)
VARIANTS = [
    ("hex-none-be", None), ("hex-space-be", None), ("hex-comma-be", None),
    ("hex-commaspace-be", None), ("hex-semicolon-be", None), ("hex-newline-be", None),
    ("hex-0x-be", None), ("hex-space-le", None), ("hex-none-le", None),
    ("hex-space-be", 1), ("hex-space-be", 2), ("hex-space-be", 8),
]  # fmt: skip


@pytest.mark.parametrize("spec,group", VARIANTS)
def test_round_trip_every_hex_variant(spec, group, gradient_sample, smollm2):
    data = gradient_sample[:8]
    blob = lmgc.compress(data, serialization=spec, group_bytes=group, **TINY)
    back = lmgc.decompress(blob)
    assert back.dtype == data.dtype and back.tobytes() == data.tobytes()


@pytest.mark.parametrize("spec", ["iso", "iso-space", "iso-commaspace"])
def test_iso_variants_round_trip_or_refuse_clearly(spec, gradient_sample, smollm2):
    """SmolLM2's GGUF vocabulary lacks a few control bytes (0x04, 0x06, 0x13, 0x14, 0x16, 0x1d)."""
    data = gradient_sample[:8]
    representable = np.array([1.5, -2.25, 0.375, 3e-3, 7.0, -1e-4, 2.0, 0.5], dtype=np.float32)
    blob = lmgc.compress(representable, serialization=spec, **TINY)
    assert lmgc.decompress(blob).tobytes() == representable.tobytes()
    unrepresentable = set(data.tobytes()) & {0x04, 0x06, 0x13, 0x14, 0x16, 0x1D}
    if unrepresentable:
        with pytest.raises(SerializationError, match="cannot represent this text exactly"):
            lmgc.compress(data, serialization=spec, **TINY)
    else:
        assert lmgc.decompress(lmgc.compress(data, serialization=spec, **TINY)).tobytes() == data.tobytes()


def test_coded_size_is_within_one_percent_of_ideal(gradient_sample, smollm2):
    compressor = lmgc.Compressor(chunk_bytes=64, batch_size=2)
    blob = compressor.compress(gradient_sample)
    info = lmgc.read_container_info(blob)
    n_chunks = len(info["chunks"])
    ideal_bytes = info["header"]["ideal_bits"] / 8
    assert info["payload_bytes"] <= ideal_bytes * 1.01 + 8 * n_chunks
    assert lmgc.decompress(blob).tobytes() == gradient_sample.tobytes()
    estimate = compressor.estimate(gradient_sample)  # full forward: close to, not equal to, coded
    assert estimate.n_tokens == sum(c["symbols"] for c in info["chunks"])
    assert abs(estimate.ideal_bits - info["header"]["ideal_bits"]) < 0.01 * info["header"]["ideal_bits"]


def test_decode_in_another_process(tmp_path, gradient_bundle, smollm2):
    """Bit-identical probabilities across processes: encode here, decode in a fresh interpreter."""
    from safetensors.numpy import save_file

    names = [t.name for t in gradient_bundle.tensors][:2]
    tensors = {n: gradient_bundle.to_objects()[n][..., :3].numpy().copy() for n in names}
    save_file(tensors, tmp_path / "g.safetensors")
    lmgc.compress_file(tmp_path / "g.safetensors", tmp_path / "g.lmgc", chunk_bytes=48, batch_size=4)
    env = {k: v for k, v in os.environ.items() if k != "LMGC_MODEL"}
    result = subprocess.run(
        [sys.executable, "-m", "lmgc.cli", "decompress", "-q", str(tmp_path / "g.lmgc"),
         "-o", str(tmp_path / "back.safetensors")],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    from safetensors.numpy import load_file

    back = load_file(tmp_path / "back.safetensors")
    assert list(back) == list(tensors) or set(back) == set(tensors)
    assert all(back[k].tobytes() == v.tobytes() and back[k].shape == v.shape for k, v in tensors.items())


def _edit_header(blob: bytes, edit) -> bytes:
    fields = copy.deepcopy(unpack(blob).header.fields)
    edit(fields)
    return forge(blob, fields)


@pytest.fixture(scope="module")
def small_blob(gradient_sample, smollm2):
    return lmgc.compress(gradient_sample[:8], **TINY)


def test_model_mismatch_is_refused(small_blob):
    forged = _edit_header(small_blob, lambda h: h["prior"].update(weights_sha256="0" * 64))
    with pytest.raises(ModelMismatchError, match="not the one this file was encoded with"):
        lmgc.decompress(forged)


def test_environment_mismatch_is_refused_unless_allowed(small_blob, gradient_sample, monkeypatch):
    here = lmgc.api.environment("cpu") | {"torch": "1.0.0"}
    monkeypatch.setattr(lmgc.priors.llm, "environment", lambda device: here)
    with pytest.raises(EnvironmentMismatchError, match="torch: encoded with 2.*, here 1.0.0"):
        lmgc.decompress(small_blob)
    back = lmgc.decompress(small_blob, allow_environment_mismatch=True)
    assert back.tobytes() == gradient_sample[:8].tobytes()


def test_a_gpu_coded_file_is_refused_clearly_on_a_machine_without_a_gpu(small_blob):
    """As a file from an H200 reads here (the GPU's entries as that machine recorded them)."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    gpu = {"cuda_device": "NVIDIA H200", "cuda_driver": "580.159.04", "cuda_runtime": "13.0",
           "cublas_workspace": ":4096:8", "tf32": "off"}  # fmt: skip

    def on_gpu(header):
        header["prior"]["device"] = "cuda"
        header["environment"].update(gpu)

    forged = _edit_header(small_blob, on_gpu)
    with pytest.raises(EnvironmentMismatchError, match="cuda_device: encoded with NVIDIA H200, here none"):
        lmgc.decompress(forged)
    with pytest.raises(ModelError, match="model device 'cuda' is not available here: torch has no usable CUDA"):
        lmgc.decompress(forged, allow_environment_mismatch=True)


def test_corrupt_payload_is_detected(small_blob):
    data = bytearray(small_blob)
    data[-3] ^= 0x40  # inside the last chunk's payload
    with pytest.raises(CorruptDataError):
        lmgc.decompress(bytes(data))


def test_corrupt_digest_is_detected(small_blob):
    with pytest.raises(CorruptDataError, match="SHA-256"):
        lmgc.decompress(forge(small_blob, digest=bytes(32)))


def test_torch_state_dict_round_trip(tmp_path, smollm2):
    import torch

    state = {"w": torch.tensor([1e-3, -2e-4, 0.0, -0.0]), "b": torch.tensor([3.0], dtype=torch.bfloat16),
             "step": 3}  # fmt: skip
    torch.save(state, tmp_path / "s.pt")
    lmgc.compress_file(tmp_path / "s.pt", tmp_path / "s.lmgc", **TINY)
    lmgc.decompress_file(tmp_path / "s.lmgc", tmp_path / "back.pt")
    back = torch.load(tmp_path / "back.pt", weights_only=True)
    assert back["step"] == 3
    assert back["w"].view(torch.int32).equal(state["w"].view(torch.int32))
    assert back["b"].dtype == torch.bfloat16 and back["b"].view(torch.int16).equal(state["b"].view(torch.int16))


def test_empty_input_round_trips(smollm2):
    empty = np.zeros((0, 4), dtype=np.float32)
    back = lmgc.decompress(lmgc.compress(empty, **TINY))
    assert back.shape == (0, 4) and back.dtype == np.float32


@pytest.mark.slow
def test_full_fixture_round_trip(gradient_bundle, smollm2):
    blob = lmgc.compress(gradient_bundle, chunk_bytes=1024, batch_size=16)
    back = lmgc.Decompressor().decompress_bundle(blob)
    assert [t.data for t in back.tensors] == [t.data for t in gradient_bundle.tensors]


def test_default_model_location_is_the_embedded_package():
    from lmgc.models import _embedded_gguf

    assert _embedded_gguf("smollm2-135m").suffix == ".gguf"
    assert Path(_embedded_gguf("smollm2-135m")).stat().st_size > 50_000_000


def test_lossy_front_end_round_trip(gradient_sample, smollm2):
    """Lossy stages in front of the LLM: decoding returns exactly the dequantized tensor."""
    from lmgc.lossy import parse_lossy
    from lmgc.tensors import bundle_objects

    data = gradient_sample[:32]
    blob = lmgc.compress(data, lossy="topk:25%+quant:8", **TINY)
    back = lmgc.decompress(blob)
    pipeline = parse_lossy("topk:25%+quant:8")
    expected = pipeline.decode(*pipeline.encode(bundle_objects(data))).to_objects()
    assert back.shape == data.shape and back.tobytes() == expected.tobytes()
    assert "lossy" in lmgc.read_container_info(blob)["header"]


def test_llm_codec_in_the_benchmark(tmp_path, gradient_sample, smollm2):
    """``lmgc bench --lmgc MODE``: the LLM codec is measured like any baseline, verified."""
    from lmgc.eval.bench import run_bench
    from lmgc.eval.bench_report import format_markdown
    from lmgc.eval.lmgc_codec import LmgcCodec

    raw = tmp_path / "g.bin"
    raw.write_bytes(gradient_sample[:16].tobytes())
    codec = LmgcCodec("hex-space-be", chunk_bytes=16, batch_size=2)
    results = run_bench([raw], [codec, "gzip"], ["whole", "chunked"], dtype="float32")
    by_key = {(r.codec, r.protocol): r for r in results}
    llm = by_key[("lmgc:hex-space-be", "whole")]
    assert llm.status == "ok" and llm.verified
    same = lmgc.compress(raw.read_bytes(), dtype="float32", serialization="hex-space-be",
                         chunk_bytes=16, batch_size=2)
    assert llm.compressed_bytes == len(same)  # the whole container is counted
    assert by_key[("lmgc:hex-space-be", "chunked")].status == "n/a"
    assert "lmgc:hex-space-be" in format_markdown(results)


@pytest.mark.parametrize("prior", ["nibble", "hybrid"])
@pytest.mark.parametrize("spec", ["hex-comma-be", "hex-none-le", "hex-commaspace-be"])
def test_digit_priors_round_trip(prior, spec, gradient_sample, smollm2):
    """Several chunks and batches: the hybrid's context state carries across batches."""
    data = gradient_sample[:12]
    blob = lmgc.compress(data, prior=prior, serialization=spec, chunk_bytes=16, batch_size=2)
    info = lmgc.read_container_info(blob)
    assert info["header"]["prior"]["kind"] == {"nibble": "llm-nibble", "hybrid": "hybrid"}[prior]
    assert info["n_chunks"] == 3
    assert lmgc.decompress(blob).tobytes() == data.tobytes()


def test_nibble_mode_feeds_separators_for_free(gradient_sample, smollm2):
    """One symbol per hex digit whatever the separator; the estimate matches the coded size."""
    data = gradient_sample[:16]
    compressor = lmgc.Compressor(prior="nibble", serialization="hex-commaspace-be", chunk_bytes=64)
    blob = compressor.compress(data)
    info = lmgc.read_container_info(blob)
    assert [c["symbols"] for c in info["chunks"]] == [128]
    estimate = compressor.estimate(data)
    assert abs(estimate.ideal_bits - info["header"]["ideal_bits"]) < 0.01 * info["header"]["ideal_bits"]
    assert info["payload_bytes"] <= info["header"]["ideal_bits"] / 8 * 1.01 + 8


def test_hybrid_refuses_a_different_model(gradient_sample, smollm2):
    blob = lmgc.compress(gradient_sample[:4], prior="hybrid", **TINY)
    forged = _edit_header(blob, lambda h: h["prior"]["llm"].update(tokenizer_sha256="0" * 64))
    with pytest.raises(ModelMismatchError, match="tokenizer sha256 differs"):
        lmgc.decompress(forged)
    newer = _edit_header(blob, lambda h: h["prior"].update(version=5))
    with pytest.raises(UnsupportedVersionError, match="hybrid prior version 5 is not one this lmgc decodes"):
        lmgc.decompress(newer)


def test_nibble_mode_needs_hex(smollm2):
    with pytest.raises(SerializationError, match="nibble mode needs a hex serialization"):
        lmgc.Compressor(prior="nibble", serialization="iso")


@pytest.mark.parametrize(("prior", "bound"), [("llm", 272), ("hybrid", 304), ("token-hybrid", 304)])
def test_llm_file_fixed_overhead_is_bounded(prior, bound, gradient_sample, smollm2):
    """Everything but the per-chunk frames: header (model hashes, engine, environment with the probe
    digest, manifest), its CRC and the digest; the hybrid also records its mixer's rate and
    context kinds."""
    blob = lmgc.compress(gradient_sample[:8], prior=prior, chunk_bytes=16, batch_size=2)
    chunks = lmgc.read_container_info(blob)["chunks"]
    frames = sum(c["payload_bytes"] + len(leb128(c["payload_bytes"])) + len(leb128(c["symbols"])) + 4
                 for c in chunks)  # fmt: skip
    assert len(blob) - frames <= bound
