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

from .codec import progress_bar, split_chunks
from .container import pack
from .decoder import INTEGRITY, Decompressor, read_container_info
from .environment import environment
from .errors import InputError, SerializationError
from .files import atomic_path, check_output_path
from .header import MAX_BATCH, MAX_CHUNK_BYTES
from .lossy import parse_lossy
from .models import load_model
from .priors import PRIORS as _PRIOR_CLASSES
from .priors import ContextPrior, Prior, prior_class
from .priors.base import SteppedPrior
from .serialize import DEFAULT_SERIALIZATION, Serialization
from .tensors import TensorBundle, bundle_objects, raw_bundle, read_tensors

__all__ = [
    "CodecConfig", "Compressor", "Decompressor", "Estimate",
    "compress", "decompress", "compress_file", "decompress_file", "read_container_info",
    "environment", "PRIORS", "INTEGRITY",
]  # fmt: skip

DEFAULT_CHUNK_BYTES = SteppedPrior.default_chunk_bytes
CONTEXT_CHUNK_BYTES = ContextPrior.default_chunk_bytes
DEFAULT_BATCH_SIZE = 16
PRIORS = tuple(_PRIOR_CLASSES)  # the user names, see lmgc.priors
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
        self, model: str | None = None, *, prior: str | Prior = DEFAULT_PRIOR,
        serialization: str = DEFAULT_SERIALIZATION, group_bytes: int | None = None,
        chunk_bytes: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
        threads: int | None = None, dtype: str = "float32", device: str = "cpu",
        progress: bool = False, lossy: str | None = None,
    ) -> None:  # fmt: skip
        prior_cls = prior_class(prior) if isinstance(prior, str) else type(prior)
        if chunk_bytes is None:
            chunk_bytes = prior_cls.default_chunk_bytes
        self.config = CodecConfig(serialization, group_bytes, chunk_bytes, batch_size)
        self.lossy = parse_lossy(lossy) if lossy else None
        self.serialization = Serialization.parse(serialization, group_bytes)
        if isinstance(prior, str):  # the model loads only for priors that use one
            prior = prior_cls.create(self.serialization, threads or _default_threads(),
                                     lambda: load_model(model, dtype=dtype, device=device, announce=progress))  # fmt: skip
        self.prior = prior
        self.progress = progress

    def _prepare(self, source, dtype) -> _Prepared:
        bundle, lossy_info = _as_bundle(source, dtype), None
        if self.lossy is not None:
            bundle, lossy_info = self.lossy.encode(bundle)
        group = _group_bytes(bundle, self.config)
        stream = _ordered_stream(bundle, self.serialization)
        return _Prepared(bundle, lossy_info, group, stream, split_chunks(stream, self.config.chunk_bytes))

    def compress(self, source, dtype: str | None = None) -> bytes:
        """Compress a path, array, tensor, nested dict/list of them, or raw bytes (with dtype)."""
        prepared = self._prepare(source, dtype)
        coded = self.prior.encode(prepared.stream, prepared.chunks, prepared.group,
                                  self.config.batch_size, self.progress)  # fmt: skip
        header = {
            "total_bytes": len(prepared.stream),
            "codec": asdict(self.config) | {"group_bytes": prepared.group},
            "prior": coded.identity,
            "environment": self.prior.environment(coded.identity),
            **coded.header_fields,
            "manifest": prepared.bundle.manifest(),
        }
        if prepared.lossy_info is not None:
            header["lossy"] = prepared.lossy_info
        return pack(header, coded.payloads, coded.n_symbols, (t.data for t in prepared.bundle.tensors))

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

        if not hasattr(self.prior, "full_forward_probabilities"):
            raise InputError(f"estimate works with the llm and nibble priors, not {self.prior.name!r}; "
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
