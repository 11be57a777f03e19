"""Public API: compress tensors to ``.lmgc`` bytes and back, exactly.

Two layers, as in python-zstandard: :class:`Compressor` / :class:`Decompressor` load the model
once and are reused; :func:`compress` / :func:`decompress` are one-shot shortcuts equal to
``Compressor(**kwargs).compress(x)`` and ``Decompressor(**kwargs).decompress(data)``.

>>> import numpy as np, lmgc                                          # doctest: +SKIP
>>> grad = np.random.default_rng(0).standard_normal(256).astype(np.float32)
>>> blob = lmgc.compress(grad, chunk_bytes=256)                         # doctest: +SKIP
>>> np.array_equal(lmgc.decompress(blob), grad)                         # doctest: +SKIP
True
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from .codec import RateMeter, crc32, decode_symbols, encode_symbols, split_chunks
from .container import ChunkEntry, Container, pack, unpack
from .errors import (
    CorruptDataError,
    EnvironmentMismatchError,
    InputError,
    ModelMismatchError,
    OutputExistsError,
    SerializationError,
)
from .lossy import decode as lossy_decode
from .lossy import parse_lossy
from .models import load_model
from .prior import LLMPrior
from .serialize import DEFAULT_SERIALIZATION, Serialization
from .tensors import ITEMSIZE, TensorBundle, atomic_path, bundle_objects, raw_bundle, read_tensors, write_tensors

__all__ = [
    "CodecConfig", "Compressor", "Decompressor", "Estimate",
    "compress", "decompress", "compress_file", "decompress_file", "read_container_info",
    "environment",
]  # fmt: skip

DEFAULT_CHUNK_BYTES = 1024
DEFAULT_BATCH_SIZE = 16


@dataclass(frozen=True)
class CodecConfig:
    """Everything that shapes the coded bits besides the prior; stored in every container."""

    serialization: str = DEFAULT_SERIALIZATION
    group_bytes: int | None = None  # None: the data's element size
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    batch_size: int = DEFAULT_BATCH_SIZE

    def __post_init__(self) -> None:
        Serialization.parse(self.serialization, self.group_bytes)  # validates
        if self.chunk_bytes < 1:
            raise SerializationError(f"chunk size must be positive, not {self.chunk_bytes}")
        if self.batch_size < 1:
            raise SerializationError(f"batch size must be positive, not {self.batch_size}")


@dataclass(frozen=True)
class Estimate:
    """Ideal code length from one full forward pass per chunk: an estimate, not a coded size."""

    original_bytes: int
    ideal_bits: float
    n_tokens: int

    @property
    def rate(self) -> float:
        return self.ideal_bits / 8 / self.original_bytes if self.original_bytes else 0.0


def environment(device: str) -> dict:
    """Library versions and kernels that change floating-point results."""
    import constriction
    import numpy
    import torch
    import transformers

    env = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": numpy.__version__,
        "constriction": getattr(constriction, "__version__", "unknown"),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    if device.startswith("cuda"):
        env["cuda_device"] = torch.cuda.get_device_name(torch.device(device))
    return env


def _default_threads() -> int:
    return min(4, os.cpu_count() or 1)


def _progress_bar(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="tok", unit_scale=True, disable=not enabled,
                file=sys.stderr, dynamic_ncols=True)  # fmt: skip


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
    """Input turned into chunk texts (after the optional lossy front-end)."""

    bundle: TensorBundle
    lossy_info: dict | None
    group: int
    stream: bytes
    chunks: list[bytes]
    texts: list[str]


class Compressor:
    """Compresses tensors with an LLM prior; loads the model once for many calls.

    Args:
        model: model spec (see :mod:`lmgc.models`); default ``$LMGC_MODEL`` or SmolLM2-135M.
        serialization: e.g. ``hex-comma-be`` (default), ``hex-none-le``, ``iso``.
        group_bytes: bytes per group (1, 2, 4, 8); default the element size.
        chunk_bytes: bytes per independently coded chunk (one model context each).
        batch_size: chunks run in lockstep; part of the format (decoding repeats it).
        threads: torch CPU threads; part of the format (results differ between thread counts).
        dtype, device: what the model computes in; recorded and required for decoding.
        progress: show a progress bar on stderr.
        lossy: a lossy front-end (e.g. ``topk:1%+quant:8``, see :mod:`lmgc.lossy`) applied before
            coding; its side information is coded too and decoding returns the dequantized tensors.
    """

    def __init__(
        self, model: str | None = None, *, serialization: str = DEFAULT_SERIALIZATION,
        group_bytes: int | None = None, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        batch_size: int = DEFAULT_BATCH_SIZE, threads: int | None = None, dtype: str = "float32",
        device: str = "cpu", progress: bool = False, lossy: str | None = None,
    ) -> None:  # fmt: skip
        self.config = CodecConfig(serialization, group_bytes, chunk_bytes, batch_size)
        self.lossy = parse_lossy(lossy) if lossy else None
        self.serialization = Serialization.parse(serialization, group_bytes)
        self.lm = load_model(model, dtype=dtype, device=device)
        self.prior = LLMPrior(self.lm, self.serialization.alphabet(), threads or _default_threads())
        self.progress = progress

    def _prepare(self, source, dtype) -> _Prepared:
        bundle, lossy_info = _as_bundle(source, dtype), None
        if self.lossy is not None:
            bundle, lossy_info = self.lossy.encode(bundle)
        group = _group_bytes(bundle, self.config)
        stream = _ordered_stream(bundle, self.serialization)
        chunks = split_chunks(stream, self.config.chunk_bytes)
        texts = [self.serialization.to_text(c, group) for c in chunks]
        return _Prepared(bundle, lossy_info, group, stream, chunks, texts)

    def compress(self, source, dtype: str | None = None) -> bytes:
        """Compress a path, array, tensor, nested dict/list of them, or raw bytes (with dtype)."""
        prepared = self._prepare(source, dtype)
        symbols = [self.prior.tokenize(text) for text in prepared.texts]
        sizes = [len(c) for c in prepared.chunks]
        with _progress_bar(sum(map(len, symbols)), "compress", self.progress) as bar:
            encoded = encode_symbols(self.prior, symbols, sizes, self.config.batch_size, RateMeter(bar))
        header = {
            "n_chunks": len(prepared.chunks),
            "total_bytes": len(prepared.stream),
            "codec": asdict(self.config) | {"group_bytes": prepared.group},
            "prior": self.prior.identity(),
            "environment": environment(self.lm.device),
            "manifest": prepared.bundle.manifest(),
            "ideal_bits": sum(e.ideal_bits for e in encoded),
        }
        if prepared.lossy_info is not None:
            header["lossy"] = prepared.lossy_info
        table = [ChunkEntry(len(e.payload), e.n_symbols, crc32(c)) for e, c in zip(encoded, prepared.chunks)]
        original = b"".join(t.data for t in prepared.bundle.tensors)
        return pack(Container(header, table, hashlib.sha256(original).digest(), [e.payload for e in encoded]))

    def compress_file(self, src, dst, *, dtype: str | None = None, force: bool = False) -> int:
        """Compress ``src`` into ``dst``; returns the compressed size in bytes."""
        dst = Path(dst)
        if dst.exists() and not force:
            raise OutputExistsError(f"{dst} exists; pass --force (force=True) to overwrite it")
        data = self.compress(src, dtype)
        with atomic_path(dst) as tmp:
            tmp.write_bytes(data)
        return len(data)

    def estimate(self, source, dtype: str | None = None) -> Estimate:
        """Ideal code length from a full forward pass per chunk (fast; an estimate only)."""
        import numpy as np

        prepared = self._prepare(source, dtype)
        stream, texts = prepared.stream, prepared.texts
        bits, tokens = 0.0, 0
        with _progress_bar(len(texts), "estimate", self.progress) as bar:
            for text in texts:
                symbols = self.prior.tokenize(text)
                probabilities = self.prior.full_forward_probabilities(symbols)
                bits -= float(np.log2(probabilities[np.arange(len(symbols)), symbols]).sum())
                tokens += len(symbols)
                bar.update(1)
        return Estimate(len(stream), bits, tokens)


class Decompressor:
    """Decodes ``.lmgc`` data, refusing a model or environment that would decode differently.

    Args:
        model: override the model spec stored in the file (e.g. a local copy of the same model);
            its weights and tokenizer must hash to the recorded values.
        allow_environment_mismatch: try anyway when library versions or CPU kernels differ from
            the encoder's (checksums still catch a wrong result).
        progress: show a progress bar on stderr.
    """

    def __init__(self, model: str | None = None, *, allow_environment_mismatch: bool = False,
                 progress: bool = False) -> None:  # fmt: skip
        self.model = model
        self.allow_environment_mismatch = allow_environment_mismatch
        self.progress = progress

    def _prior(self, header: dict, serialization: Serialization) -> LLMPrior:
        recorded = header["prior"]
        if recorded.get("kind") != "llm":
            raise CorruptDataError(f"unknown prior kind {recorded.get('kind')!r} in header")
        env = environment(recorded["device"])
        diffs = {k: (v, env.get(k)) for k, v in header["environment"].items() if env.get(k) != v}
        if diffs and not self.allow_environment_mismatch:
            listing = "; ".join(f"{k}: encoded with {a}, here {b}" for k, (a, b) in diffs.items())
            raise EnvironmentMismatchError(
                f"decoding here may not reproduce the encoder's arithmetic ({listing}); use the "
                "same versions, or pass --allow-env-mismatch to try (checksums verify the result)"
            )
        lm = load_model(self.model or recorded["model"], dtype=recorded["dtype"], device=recorded["device"])
        prior = LLMPrior(lm, serialization.alphabet(), recorded["threads"])
        identity = prior.identity()
        for key in ("weights_sha256", "tokenizer_sha256", "alphabet_sha256", "bos_id"):
            if identity[key] != recorded[key]:
                raise ModelMismatchError(
                    f"model {lm.spec!r} is not the one this file was encoded with "
                    f"({key.replace('_', ' ')} differs); encoded with {recorded['model']!r}"
                )
        return prior

    def decompress_bundle(self, data: bytes) -> TensorBundle:
        container = unpack(bytes(data))
        header = container.header
        try:
            codec = header["codec"]
            serialization = Serialization.parse(codec["serialization"], codec["group_bytes"])
            group, batch = int(codec["group_bytes"]), int(codec["batch_size"])
            chunk_bytes, total = int(codec["chunk_bytes"]), int(header["total_bytes"])
            manifest = header["manifest"]
        except (KeyError, TypeError, ValueError, SerializationError) as exc:
            raise CorruptDataError(f"lmgc header is missing or has bad fields: {exc}") from None
        sizes = [min(chunk_bytes, total - start) for start in range(0, total, chunk_bytes)]
        if len(sizes) != len(container.chunks):
            raise CorruptDataError("chunk table does not match the recorded total size")
        prior = self._prior(header, serialization)
        n_symbols = [c.n_symbols for c in container.chunks]
        with _progress_bar(sum(n_symbols), "decompress", self.progress) as bar:
            symbols = decode_symbols(prior, container.payloads, n_symbols, sizes, batch, RateMeter(bar))
        chunks = []
        for i, (decoded, size, entry) in enumerate(zip(symbols, sizes, container.chunks)):
            try:
                chunk = serialization.from_text(prior.detokenize(decoded), size, group)
            except SerializationError as exc:
                raise CorruptDataError(f"chunk {i} decoded to malformed text ({exc})") from None
            if crc32(chunk) != entry.crc32:
                raise CorruptDataError(f"chunk {i} fails its CRC32 check: the file is corrupt")
            chunks.append(chunk)
        bundle = _bundle_from_stream(b"".join(chunks), manifest, serialization, container.sha256)
        return lossy_decode(bundle, header["lossy"]) if "lossy" in header else bundle

    def decompress(self, data: bytes):
        """The original object: array/tensor or nested container (numpy in, numpy out)."""
        return self.decompress_bundle(data).to_objects()

    def decompress_file(self, src, dst, *, force: bool = False) -> Path:
        """Decode ``src`` and write the tensors in their original file format to ``dst``."""
        dst = Path(dst)
        if dst.exists() and not force:
            raise OutputExistsError(f"{dst} exists; pass --force (force=True) to overwrite it")
        bundle = self.decompress_bundle(_read_input(src))
        return write_tensors(bundle, dst, force=force)


def _bundle_from_stream(stream: bytes, manifest: dict, serialization: Serialization,
                        digest: bytes) -> TensorBundle:  # fmt: skip
    blobs, position = [], 0
    for entry in manifest["tensors"]:
        size = ITEMSIZE[entry["dtype"]]
        n = size
        for dim in entry["shape"]:
            n *= dim
        blobs.append(serialization.order_bytes(stream[position : position + n], size))
        position += n
    if position != len(stream) or hashlib.sha256(b"".join(blobs)).digest() != digest:
        raise CorruptDataError("decoded data fails the SHA-256 check: the file is corrupt")
    return TensorBundle.from_manifest(manifest, blobs)


def _read_input(src) -> bytes:
    path = Path(src)
    if not path.is_file():
        raise InputError(f"input file not found: {path}")
    return path.read_bytes()


def read_container_info(data: bytes) -> dict:
    """Header and chunk statistics of a container, without decoding it."""
    container = unpack(bytes(data))
    header = container.header
    payload = sum(c.payload_length for c in container.chunks)
    return {
        "header": header,
        "file_bytes": len(data),
        "payload_bytes": payload,
        "chunks": [
            {"offset": o, "payload_bytes": c.payload_length, "symbols": c.n_symbols, "crc32": f"{c.crc32:08x}"}
            for o, c in zip(container.offsets(), container.chunks)
        ],
        "sha256": container.sha256.hex(),
    }


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
