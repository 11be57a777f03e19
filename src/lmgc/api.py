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
import time
from dataclasses import dataclass
from pathlib import Path

from .codec import progress_bar, split_chunks
from .config import DEFAULT_BATCH_SIZE, CodecConfig, model_dtype
from .container import pack
from .decoder import INTEGRITY, Decompressor, read_container_info
from .environment import environment, numerics_environment
from .errors import InputError, LmgcError, VerificationError
from .files import atomic_path, check_output_path
from .header import first_batch, header_fields
from .lossy import LossyPipeline, parse_lossy
from .models import load_model
from .priors import PRIORS as _PRIOR_CLASSES
from .priors import ContextPrior, Prior, prior_class
from .priors.base import SteppedPrior, encode_input, state_bytes
from .priors.context_rows import tensor_rows
from .sources import TensorFile, open_input
from .stream import encode_file, streams
from .tensors import TensorBundle, bundle_objects, raw_bundle, read_tensors

__all__ = [
    "CodecConfig", "Compressor", "Decompressor", "Estimate", "CompressionResult",
    "compress", "decompress", "compress_file", "decompress_file", "read_container_info",
    "environment", "PRIORS", "INTEGRITY", "DEFAULT_BATCH_SIZE",
]  # fmt: skip

DEFAULT_CHUNK_BYTES = SteppedPrior.default_chunk_bytes
CONTEXT_CHUNK_BYTES = ContextPrior.default_chunk_bytes
PRIORS = tuple(_PRIOR_CLASSES)  # the user names, see lmgc.priors
DEFAULT_PRIOR = "llm"


@dataclass(frozen=True)
class Estimate:
    """Ideal code length from one full forward pass per chunk: an estimate, not a coded size."""

    original_bytes: int
    ideal_bits: float
    n_tokens: int

    @property
    def rate(self) -> float:
        return self.ideal_bits / 8 / self.original_bytes if self.original_bytes else 0.0


@dataclass(frozen=True)
class CompressionResult:
    """What :meth:`Compressor.compress_file` did: sizes, coding time, and the lossy front-end's
    input and output when one ran (to measure its error)."""

    original_bytes: int
    compressed_bytes: int
    seconds: float
    verified: bool
    lossy_input: TensorBundle | None = None
    lossy_output: TensorBundle | None = None

    @property
    def rate(self) -> float:
        return self.compressed_bytes / self.original_bytes if self.original_bytes else 0.0


def _as_bundle(source, dtype: str | None) -> TensorBundle:
    if isinstance(source, TensorBundle):
        return source
    if isinstance(source, TensorFile):
        return source.load()
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
        prior: a name — ``llm`` (token mode, the paper's), ``nibble`` (one hex digit per LLM
            step), ``hybrid`` (the nibble LLM mixed with structural context models per digit),
            ``token-hybrid`` (the token LLM mixed with them per token), ``context`` (the
            context models alone: no LLM, megabytes per second) — or a
            :class:`~lmgc.priors.base.Prior` object.
        level: for priors offered at several levels (``context``: ``fast``), which one.
        config: a :class:`~lmgc.config.CodecConfig` (serialization, group, chunk and batch sizes,
            threads, dtype, device); every one of its fields may also be given as a keyword
            (``chunk_bytes=512``), replacing the config's.
        progress: show a progress bar on stderr.
        lossy: a lossy front-end (e.g. ``topk:1%+quant:8``, see :mod:`lmgc.lossy`) applied before
            coding; its side information is coded too and decoding returns the dequantized tensors.
    """

    def __init__(
        self, model: str | None = None, *, prior: str | Prior = DEFAULT_PRIOR, level: str | None = None,
        config: CodecConfig | None = None, progress: bool = False,
        lossy: str | LossyPipeline | None = None, **settings,
    ) -> None:  # fmt: skip
        if isinstance(prior, str):
            prior_cls = prior_class(prior, level)
        elif level is not None:
            raise InputError("give level= with a prior name, not with a prior object")
        else:
            prior_cls = type(prior)
        self.config = CodecConfig.from_settings(config, settings).for_prior(prior_cls.default_chunk_bytes)
        self.lossy = parse_lossy(lossy) if isinstance(lossy, str) else lossy
        if isinstance(prior, str):  # the model loads only for priors that use one
            config = self.config
            prior = prior_cls.create(config.serialization, config.threads, lambda: load_model(
                model, dtype=model_dtype(config.dtype, config.device), device=config.device,
                announce=progress))  # fmt: skip
        self.prior = prior
        self.progress = progress

    def _prepare(self, source, dtype) -> _Prepared:
        bundle, lossy_info = _as_bundle(source, dtype), None
        if self.lossy is not None and bundle.format == "folder":
            raise InputError("the lossy front-end codes one tensor file at a time, not a folder")
        if self.lossy is not None:
            bundle, lossy_info = self.lossy.encode(bundle)
        group = self.config.group_for((t.itemsize, len(t.data)) for t in bundle.tensors)
        serialization = self.config.serialization
        stream = b"".join(serialization.order_bytes(t.data, t.itemsize) for t in bundle.tensors)
        return _Prepared(bundle, lossy_info, group, stream, split_chunks(stream, self.config.chunk_bytes))

    def compress(self, source, dtype: str | None = None) -> bytes:
        """Compress a path, array, tensor, nested dict/list of them, or raw bytes (with dtype)."""
        prepared = self._prepare(source, dtype)
        state = state_bytes(self.prior, self.config.chunk_bytes, prepared.group)
        batch = self.config.batch_for(len(prepared.chunks), state)
        rows = tensor_rows(prepared.bundle.tensors, prepared.group, self.config.serialization.byte_order)
        coded = encode_input(self.prior, prepared.stream, prepared.chunks, prepared.group, batch, self.progress, rows)
        environment = self.prior.environment(coded.identity) | numerics_environment(
            self.prior, first_batch(batch, len(prepared.chunks)))
        header = header_fields(len(prepared.stream), self.config.header_codec(prepared.group, batch), coded.identity,
                               environment, coded.header_fields,
                               prepared.bundle.manifest(), prepared.lossy_info)  # fmt: skip
        return pack(header, coded.payloads, coded.n_symbols, (t.data for t in prepared.bundle.tensors))

    def compress_file(self, src, dst, *, dtype: str | None = None, force: bool = False,
                      verify: bool = False) -> CompressionResult:  # fmt: skip
        """Compress ``src`` (a path, a folder's path: all its files, an opened
        :class:`~lmgc.sources.TensorFile`, or anything :meth:`compress` takes) into the file ``dst``.

        ``dst`` is checked before and again after coding (which can take hours) and written
        atomically; it is never the input file. With the context prior and no lossy front-end a
        file is coded piece by piece (:mod:`lmgc.stream`: memory for a few chunks, whatever the
        file's size); other priors read it whole. ``verify`` decodes the result and compares it
        with what should come back (the lossy front-end's output when one is set) before writing;
        VerificationError if it differs.
        """
        dst = Path(dst)
        path = src.path if isinstance(src, TensorFile) else src if isinstance(src, (str, os.PathLike)) else None
        check_output_path(dst, force=force, inputs=[path] if path is not None else [])
        what = path if path is not None else "the input"
        if isinstance(src, (str, os.PathLike)):
            src = open_input(src, dtype)
        inputs = src.inputs if isinstance(src, TensorFile) else []
        check_output_path(dst, force=force, inputs=inputs)  # none of a folder's files either
        if isinstance(src, TensorFile) and streams(self.prior) and self.lossy is None:
            return self._compress_streaming(src, dst, force, verify, inputs, what)
        bundle = _as_bundle(src, dtype)
        start = time.perf_counter()
        data = self.compress(bundle)
        seconds = time.perf_counter() - start
        expected = self.lossy.decode(*self.lossy.encode(bundle)) if self.lossy else bundle
        if verify:
            try:
                decoded = Decompressor(progress=self.progress).decompress_bundle(data)
            except LmgcError as exc:
                raise VerificationError(f"verification failed: the result does not decode to {what}: {exc}") from None
            if [t.data for t in decoded.tensors] != [t.data for t in expected.tensors]:
                raise VerificationError(f"verification failed: the result does not decode to {what}")
        check_output_path(dst, force=force, inputs=inputs)
        with atomic_path(dst) as tmp:
            tmp.write_bytes(data)
        return CompressionResult(bundle.nbytes, len(data), seconds, verify,
                                 *((bundle, expected) if self.lossy else ()))  # fmt: skip

    def _compress_streaming(self, source: TensorFile, dst: Path, force: bool, verify: bool, inputs: list,
                            what) -> CompressionResult:  # fmt: skip
        """Code ``source`` into the temporary file of ``dst`` as it is read; ``verify`` decodes
        that file: the digest it must match was computed over the input as it was read, so
        decoding to it is decoding to the input."""
        with atomic_path(dst) as tmp:
            start = time.perf_counter()
            with open(tmp, "wb") as out:
                size = encode_file(self.prior, self.config, source, out, self.progress)
            seconds = time.perf_counter() - start
            if verify:
                try:
                    Decompressor(progress=self.progress, max_output_bytes=None).check_file(tmp)
                except LmgcError as exc:
                    raise VerificationError(f"verification failed: the result does not decode to {what}: {exc}") from None
            check_output_path(dst, force=force, inputs=inputs)
        return CompressionResult(source.nbytes, size, seconds, verify)

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


def compress_file(src, dst, *, dtype: str | None = None, force: bool = False, verify: bool = False,
                  **kwargs) -> CompressionResult:  # fmt: skip
    """One-shot: equals ``Compressor(**kwargs).compress_file(src, dst, ...)``."""
    return Compressor(**kwargs).compress_file(src, dst, dtype=dtype, force=force, verify=verify)


def decompress_file(src, dst, *, force: bool = False, **kwargs) -> Path:
    """One-shot: equals ``Decompressor(**kwargs).decompress_file(src, dst, force=force)``."""
    return Decompressor(**kwargs).decompress_file(src, dst, force=force)
