"""Public API: compress tensors to ``.lmgc`` bytes and back, exactly.

Two layers, as in python-zstandard: :class:`Compressor` / :class:`Decompressor` load the model
once and are reused; :func:`compress` / :func:`decompress` are one-shot shortcuts equal to
``Compressor(**kwargs).compress(x)`` and ``Decompressor(**kwargs).decompress(data)``.

>>> import numpy as np, lmgc
>>> grad = np.random.default_rng(0).standard_normal(256).astype(np.float32)
>>> blob = lmgc.compress(grad, prior="context")           # no model: the context prior
>>> np.array_equal(lmgc.decompress(blob), grad)
True
>>> blob = lmgc.compress(grad, chunk_bytes=256)  # the paper's LLM prior  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from .codec import RateMeter, encode_symbols, progress_bar, split_chunks
from .container import pack
from .context import ContextPrior
from .decoder import INTEGRITY, Decompressor, read_container_info
from .environment import context_environment, environment
from .errors import InputError, SerializationError
from .files import atomic_path, check_output_path
from .header import MAX_BATCH, MAX_CHUNK_BYTES
from .hybrid import HybridPrior
from .lossy import parse_lossy
from .models import load_model
from .prior import LLMPrior, NibblePrior
from .serialize import DEFAULT_SERIALIZATION, Serialization
from .tensors import TensorBundle, bundle_objects, raw_bundle, read_tensors

__all__ = [
    "CodecConfig", "Compressor", "Decompressor", "Estimate",
    "compress", "decompress", "compress_file", "decompress_file", "read_container_info",
    "environment", "PRIORS", "INTEGRITY",
]  # fmt: skip

DEFAULT_CHUNK_BYTES = 1024
CONTEXT_CHUNK_BYTES = 8 << 20  # the context prior needs no model context: big chunks learn more
DEFAULT_BATCH_SIZE = 16
#: ``llm``: the paper's token mode; ``nibble``: one hex digit per LLM step; ``hybrid``: nibble
#: mode mixed with structural context models; ``context``: the context models alone (fast, no LLM).
PRIORS = ("llm", "nibble", "hybrid", "context")
DEFAULT_PRIOR = "llm"


@dataclass(frozen=True)
class CodecConfig:
    """Everything that shapes the coded bits besides the prior; stored in every container."""

    serialization: str = DEFAULT_SERIALIZATION
    group_bytes: int | None = None  # None: the data's element size
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    batch_size: int = DEFAULT_BATCH_SIZE

    def __post_init__(self) -> None:
        Serialization.parse(self.serialization, self.group_bytes)  # validates
        if not 1 <= self.chunk_bytes <= MAX_CHUNK_BYTES:
            raise SerializationError(f"chunk size must be in [1, {MAX_CHUNK_BYTES}], not {self.chunk_bytes}")
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise SerializationError(f"batch size must be in [1, {MAX_BATCH}], not {self.batch_size}")


@dataclass(frozen=True)
class Estimate:
    """Ideal code length from one full forward pass per chunk: an estimate, not a coded size."""

    original_bytes: int
    ideal_bits: float
    n_tokens: int

    @property
    def rate(self) -> float:
        return self.ideal_bits / 8 / self.original_bytes if self.original_bytes else 0.0


def _default_threads() -> int:
    return min(4, os.cpu_count() or 1)


def _group_bytes(bundle: TensorBundle, config: CodecConfig) -> int:
    if config.group_bytes:
        return config.group_bytes
    by_size = Counter()
    for t in bundle.tensors:
        by_size[t.itemsize] += len(t.data)
    return by_size.most_common(1)[0][0] if by_size else 4


def _ordered_stream(bundle: TensorBundle, serialization: Serialization) -> bytes:
    return b"".join(serialization.order_bytes(t.data, t.itemsize) for t in bundle.tensors)


def _as_bundle(source, dtype: str | None) -> TensorBundle:
    if isinstance(source, TensorBundle):
        return source
    if isinstance(source, (str, os.PathLike)):
        return read_tensors(source, dtype)
    if isinstance(source, (bytes, bytearray, memoryview)):
        if dtype is None:
            raise InputError("raw bytes need a dtype (e.g. dtype='float32')")
        return raw_bundle(bytes(source), dtype, "raw bytes")
    return bundle_objects(source)


@dataclass(frozen=True)
class _Prepared:
    """Input turned into ordered chunks (after the optional lossy front-end)."""

    bundle: TensorBundle
    lossy_info: dict | None
    group: int
    stream: bytes
    chunks: list[bytes]


def _build_llm_prior(prior: str, lm, serialization: Serialization, threads: int):
    if prior == "llm":
        return LLMPrior(lm, serialization, threads)
    nibble = NibblePrior(lm, serialization, threads)
    return nibble if prior == "nibble" else HybridPrior(nibble)


class Compressor:
    """Compresses tensors with an LLM or context-model prior; loads the model once for many calls.

    Args:
        model: model spec (see :mod:`lmgc.models`); default ``$LMGC_MODEL`` or SmolLM2-135M.
        prior: ``llm`` (token mode, the paper's), ``nibble`` (one hex digit per LLM step),
            ``hybrid`` (nibble LLM mixed with structural context models) or ``context`` (the
            context models alone: no LLM, megabytes per second).
        serialization: e.g. ``hex-comma-be`` (default), ``hex-none-le``, ``iso``.
        group_bytes: bytes per group (1, 2, 4, 8); default the element size.
        chunk_bytes: bytes per independently coded chunk (one model context each); default
            1024, or 8 MiB for the context prior.
        batch_size: chunks run in lockstep; part of the format (decoding repeats it).
        threads: torch CPU threads; part of the format (results differ between thread counts).
        dtype, device: what the model computes in; recorded and required for decoding.
        progress: show a progress bar on stderr.
        lossy: a lossy front-end (e.g. ``topk:1%+quant:8``, see :mod:`lmgc.lossy`) applied before
            coding; its side information is coded too and decoding returns the dequantized tensors.
    """

    def __init__(
        self, model: str | None = None, *, prior: str = DEFAULT_PRIOR,
        serialization: str = DEFAULT_SERIALIZATION, group_bytes: int | None = None,
        chunk_bytes: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
        threads: int | None = None, dtype: str = "float32", device: str = "cpu",
        progress: bool = False, lossy: str | None = None,
    ) -> None:  # fmt: skip
        if prior not in PRIORS:
            raise InputError(f"unknown prior {prior!r}; valid: {', '.join(PRIORS)}")
        if chunk_bytes is None:
            chunk_bytes = CONTEXT_CHUNK_BYTES if prior == "context" else DEFAULT_CHUNK_BYTES
        self.config = CodecConfig(serialization, group_bytes, chunk_bytes, batch_size)
        self.lossy = parse_lossy(lossy) if lossy else None
        self.serialization = Serialization.parse(serialization, group_bytes)
        self.prior_name = prior
        if prior == "context":  # a fresh ContextPrior fits each input (see _encode_context)
            self.lm = self.prior = None
        else:
            self.lm = load_model(model, dtype=dtype, device=device, announce=progress)
            self.prior = _build_llm_prior(prior, self.lm, self.serialization, threads or _default_threads())
        self.progress = progress

    def _prepare(self, source, dtype) -> _Prepared:
        bundle, lossy_info = _as_bundle(source, dtype), None
        if self.lossy is not None:
            bundle, lossy_info = self.lossy.encode(bundle)
        group = _group_bytes(bundle, self.config)
        stream = _ordered_stream(bundle, self.serialization)
        return _Prepared(bundle, lossy_info, group, stream, split_chunks(stream, self.config.chunk_bytes))

    def _encode_context(self, prepared: _Prepared) -> tuple[list[bytes], list[int], dict]:
        prior = ContextPrior()  # chooses its contexts for this input
        prior.fit(prepared.stream, prepared.group)
        payloads, counts = [], []
        with progress_bar(len(prepared.stream), "compress", self.progress, unit="B") as bar:
            for chunk in prepared.chunks:
                payload, n_symbols = prior.encode_chunk(chunk, prepared.group)
                payloads.append(payload)
                counts.append(n_symbols)
                bar.update(len(chunk))
        return payloads, counts, {"prior": prior.identity(), "environment": context_environment()}

    def _encode_stepped(self, prepared: _Prepared) -> tuple[list[bytes], list[int], dict]:
        symbols = [self.prior.symbols(chunk, prepared.group) for chunk in prepared.chunks]
        sizes = [len(c) for c in prepared.chunks]
        with progress_bar(sum(map(len, symbols)), "compress", self.progress) as bar:
            encoded = encode_symbols(self.prior.stream(prepared.group), symbols, sizes,
                                     self.config.batch_size, RateMeter(bar))  # fmt: skip
        fields = {"prior": self.prior.identity(), "environment": environment(self.lm.device),
                  "ideal_bits": sum(e.ideal_bits for e in encoded)}  # fmt: skip
        return [e.payload for e in encoded], [e.n_symbols for e in encoded], fields

    def compress(self, source, dtype: str | None = None) -> bytes:
        """Compress a path, array, tensor, nested dict/list of them, or raw bytes (with dtype)."""
        prepared = self._prepare(source, dtype)
        encode = self._encode_context if self.prior_name == "context" else self._encode_stepped
        payloads, counts, fields = encode(prepared)
        header = {
            "total_bytes": len(prepared.stream),
            "codec": asdict(self.config) | {"group_bytes": prepared.group},
            **fields,
            "manifest": prepared.bundle.manifest(),
        }
        if prepared.lossy_info is not None:
            header["lossy"] = prepared.lossy_info
        return pack(header, payloads, counts, (t.data for t in prepared.bundle.tensors))

    def compress_file(self, src, dst, *, dtype: str | None = None, force: bool = False) -> int:
        """Compress ``src`` into ``dst``; returns the compressed size in bytes."""
        dst = Path(dst)
        check_output_path(dst, force=force, inputs=[src] if isinstance(src, (str, os.PathLike)) else ())
        data = self.compress(src, dtype)
        with atomic_path(dst) as tmp:
            tmp.write_bytes(data)
        return len(data)

    def estimate(self, source, dtype: str | None = None) -> Estimate:
        """Ideal code length from a full forward pass per chunk (fast; an estimate only).

        Only the pure LLM priors (``llm``, ``nibble``) have one; the context prior is fast enough
        to compress for real, and the hybrid's mixing needs the step-by-step loop.
        """
        import numpy as np

        if self.prior_name not in ("llm", "nibble"):
            raise InputError(f"estimate works with the llm and nibble priors, not {self.prior_name!r}; "
                             "compress instead (the context prior runs at megabytes per second)")  # fmt: skip
        prepared = self._prepare(source, dtype)
        bits, tokens = 0.0, 0
        with progress_bar(len(prepared.chunks), "estimate", self.progress) as bar:
            for chunk in prepared.chunks:
                symbols = self.prior.symbols(chunk, prepared.group)
                probabilities = self.prior.full_forward_probabilities(symbols, prepared.group)
                bits -= float(np.log2(probabilities[np.arange(len(symbols)), symbols]).sum())
                tokens += len(symbols)
                bar.update(1)
        return Estimate(len(prepared.stream), bits, tokens)


def compress(source, *, dtype: str | None = None, **kwargs) -> bytes:
    """One-shot: equals ``Compressor(**kwargs).compress(source, dtype)``."""
    return Compressor(**kwargs).compress(source, dtype)


def decompress(data: bytes, **kwargs):
    """One-shot: equals ``Decompressor(**kwargs).decompress(data)``."""
    return Decompressor(**kwargs).decompress(data)


def compress_file(src, dst, *, dtype: str | None = None, force: bool = False, **kwargs) -> int:
    return Compressor(**kwargs).compress_file(src, dst, dtype=dtype, force=force)


def decompress_file(src, dst, *, force: bool = False, **kwargs) -> Path:
    return Decompressor(**kwargs).decompress_file(src, dst, force=force)
