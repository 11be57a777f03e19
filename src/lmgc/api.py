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

import contextlib
import os
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from .codec import RateMeter, crc32, decode_symbols, encode_symbols, split_chunks
from .container import Container, pack, unpack
from .context import ContextPrior
from .errors import (
    CorruptDataError,
    EnvironmentMismatchError,
    InputError,
    LimitExceededError,
    LmgcError,
    ModelMismatchError,
    SerializationError,
    UntrustedModelError,
)
from .header import DEFAULT_MAX_OUTPUT_BYTES, MAX_BATCH, MAX_CHUNK_BYTES, Header
from .hybrid import HybridPrior
from .lossy import decode as lossy_decode
from .lossy import parse_lossy
from .models import EMBEDDED_MODELS, default_model_spec, load_model
from .prior import LLMPrior, NibblePrior
from .serialize import DEFAULT_SERIALIZATION, Serialization
from .tensors import (
    ITEMSIZE, TensorBundle, atomic_path, bundle_objects, check_output_format, check_output_path,
    raw_bundle, read_input_bytes, read_tensors, write_tensors,
)  # fmt: skip

__all__ = [
    "CodecConfig", "Compressor", "Decompressor", "Estimate",
    "compress", "decompress", "compress_file", "decompress_file", "read_container_info",
    "environment", "PRIORS",
]  # fmt: skip

DEFAULT_CHUNK_BYTES = 1024
CONTEXT_CHUNK_BYTES = 8 << 20  # the context prior needs no model context: big chunks learn more
DEFAULT_BATCH_SIZE = 16
#: ``llm``: the paper's token mode; ``nibble``: one hex digit per LLM step; ``hybrid``: nibble
#: mode mixed with structural context models; ``context``: the context models alone (fast, no LLM).
PRIORS = ("llm", "nibble", "hybrid", "context")
DEFAULT_PRIOR = "llm"
_LLM_KINDS = {"llm": LLMPrior, "llm-nibble": NibblePrior}


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


def _constriction_version() -> str:
    from importlib.metadata import version

    return version("constriction")  # the module itself has no __version__


def environment(device: str) -> dict:
    """Library versions and kernels that change floating-point results."""
    import numpy
    import torch
    import transformers

    env = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": numpy.__version__,
        "constriction": _constriction_version(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    if device.startswith("cuda"):
        env["cuda_device"] = torch.cuda.get_device_name(torch.device(device))
    return env


def _default_threads() -> int:
    return min(4, os.cpu_count() or 1)


def _progress_bar(total: int, desc: str, enabled: bool, unit: str = "sym"):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, disable=not enabled,
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
    """Input turned into ordered chunks (after the optional lossy front-end)."""

    bundle: TensorBundle
    lossy_info: dict | None
    group: int
    stream: bytes
    chunks: list[bytes]


def _context_environment() -> dict:
    """The context prior's arithmetic is numpy integers plus constriction's quantization."""
    return {"constriction": _constriction_version()}


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
            self.lm = load_model(model, dtype=dtype, device=device)
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
        with _progress_bar(len(prepared.stream), "compress", self.progress, unit="B") as bar:
            for chunk in prepared.chunks:
                payload, n_symbols = prior.encode_chunk(chunk, prepared.group)
                payloads.append(payload)
                counts.append(n_symbols)
                bar.update(len(chunk))
        return payloads, counts, {"prior": prior.identity(), "environment": _context_environment()}

    def _encode_stepped(self, prepared: _Prepared) -> tuple[list[bytes], list[int], dict]:
        symbols = [self.prior.symbols(chunk, prepared.group) for chunk in prepared.chunks]
        sizes = [len(c) for c in prepared.chunks]
        with _progress_bar(sum(map(len, symbols)), "compress", self.progress) as bar:
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
        with _progress_bar(len(prepared.chunks), "estimate", self.progress) as bar:
            for chunk in prepared.chunks:
                symbols = self.prior.symbols(chunk, prepared.group)
                probabilities = self.prior.full_forward_probabilities(symbols, prepared.group)
                bits -= float(np.log2(probabilities[np.arange(len(symbols)), symbols]).sum())
                tokens += len(symbols)
                bar.update(1)
        return Estimate(len(prepared.stream), bits, tokens)


class Decompressor:
    """Decodes ``.lmgc`` data: the exact original bytes, or a :class:`~lmgc.errors.LmgcError`.

    Files may come from anyone. Every check that needs no decoding (header CRC and schema, frame
    CRCs, sizes against ``max_output_bytes``) runs before a prior is built or a model loaded, and
    the file never chooses what is loaded: see ``model``.

    Args:
        model: the model to decode LLM/hybrid files with (a spec as in :mod:`lmgc.models`).
            Default: the model the file names, if it is an embedded one or ``$LMGC_MODEL``;
            another hub id or path written in a file is only reported, never loaded. Its weights
            and tokenizer must hash to the recorded values.
        allow_environment_mismatch: try anyway when library versions or CPU kernels differ from
            the encoder's (checksums still catch a wrong result).
        progress: show a progress bar on stderr.
        max_output_bytes: refuse files that claim to decode to more bytes than this (``None``:
            no limit), as zstd's ``max_output_size``.
    """

    def __init__(self, model: str | None = None, *, allow_environment_mismatch: bool = False,
                 progress: bool = False,
                 max_output_bytes: int | None = DEFAULT_MAX_OUTPUT_BYTES) -> None:  # fmt: skip
        self.model = model
        self.allow_environment_mismatch = allow_environment_mismatch
        self.progress = progress
        self.max_output_bytes = max_output_bytes

    def _check_environment(self, recorded: dict, here: dict) -> None:
        # "unknown": a version-1 writer could not read constriction's version
        diffs = {k: (v, here.get(k)) for k, v in recorded.items() if v != "unknown" and here.get(k) != v}
        if diffs and not self.allow_environment_mismatch:
            listing = "; ".join(f"{k}: encoded with {a}, here {b}" for k, (a, b) in diffs.items())
            raise EnvironmentMismatchError(
                f"decoding here may not reproduce the encoder's arithmetic ({listing}); use the "
                "same versions, or pass --allow-env-mismatch to try (checksums verify the result)"
            )

    def _model_spec(self, recorded: str) -> str:
        """The caller's model, else the recorded one only if it is one lmgc trusts by itself."""
        if self.model:
            return self.model
        if recorded in EMBEDDED_MODELS or recorded == default_model_spec():
            return recorded
        raise UntrustedModelError(
            f"this file was encoded with model {recorded!r}, which is not an embedded model; "
            f"lmgc loads no model a file names: pass --model {recorded!r} (model=...) to trust it"
        )

    def _prior(self, header: Header, serialization: Serialization):
        recorded = header.prior
        if recorded["kind"] == "context":
            self._check_environment(header.environment, _context_environment())
            try:
                return ContextPrior.from_identity(recorded)
            except SerializationError as exc:
                raise CorruptDataError(str(exc)) from None
        llm = recorded["llm"] if recorded["kind"] == HybridPrior.kind else recorded
        spec = self._model_spec(llm["model"])
        self._check_environment(header.environment, environment(llm["device"]))
        lm = load_model(spec, dtype=llm["dtype"], device=llm["device"])
        base = _LLM_KINDS[llm["kind"]](lm, serialization, llm["threads"])
        identity = base.identity() | base.derived_identity()
        for key in ("weights_sha256", "tokenizer_sha256", *base.derived_identity()):
            if key in llm and identity[key] != llm[key]:
                raise ModelMismatchError(
                    f"model {lm.spec!r} is not the one this file was encoded with "
                    f"({key.replace('_', ' ')} differs); encoded with {llm['model']!r}"
                )
        if recorded["kind"] != HybridPrior.kind:
            return base
        prior = HybridPrior(base, recorded["learning_rate"])
        if prior.identity()["version"] != recorded["version"]:
            raise CorruptDataError("this hybrid prior's settings are not supported by this lmgc version")
        return prior

    def _decode_chunks(self, prior, container: Container, sizes: list[int], group: int,
                       batch: int) -> list[bytes]:  # fmt: skip
        if isinstance(prior, ContextPrior):
            chunks = []
            with _progress_bar(sum(sizes), "decompress", self.progress, unit="B") as bar:
                for payload, size in zip(container.payloads, sizes):
                    chunks.append(prior.decode_chunk(payload, size, group))
                    bar.update(size)
            return chunks
        n_symbols = [c.n_symbols for c in container.chunks]
        limit = prior.stream(group).max_symbols
        if limit is not None and max(n_symbols, default=0) > limit:
            raise CorruptDataError(f"a chunk claims more symbols than the model's context ({limit})")
        with _progress_bar(sum(n_symbols), "decompress", self.progress) as bar:
            symbols = decode_symbols(prior.stream(group), container.payloads, n_symbols, sizes, batch,
                                     RateMeter(bar))  # fmt: skip
        return [prior.restore(decoded, size, group) for decoded, size in zip(symbols, sizes)]

    def _decode(self, container: Container) -> TensorBundle:
        header = container.header
        codec = header.codec
        serialization = Serialization.parse(codec["serialization"], codec["group_bytes"])
        sizes = [header.chunk_size(i) for i in range(header.n_chunks)]
        _check_symbol_counts(header, container, sizes, serialization)
        prior = self._prior(header, serialization)
        try:
            chunks = self._decode_chunks(prior, container, sizes, codec["group_bytes"], codec["batch_size"])
        except SerializationError as exc:
            raise CorruptDataError(f"a chunk decodes to malformed data ({exc}): the file is corrupt") from None
        if container.version == 1:
            for i, (chunk, entry) in enumerate(zip(chunks, container.chunks)):
                if crc32(chunk) != entry.crc32:
                    raise CorruptDataError(f"chunk {i} fails its CRC32 check: the file is corrupt")
        bundle = _bundle_from_stream(b"".join(chunks), container, serialization)
        return lossy_decode(bundle, header.lossy) if header.lossy is not None else bundle

    def decompress_bundle(self, data: bytes) -> TensorBundle:
        """Decode to a :class:`~lmgc.tensors.TensorBundle` (bytes plus manifest).

        Raises:
            LmgcError: and only that, whatever ``data`` holds: :class:`~lmgc.errors.FormatError`
                for anything wrong with the file, :class:`~lmgc.errors.ModelError` /
                :class:`~lmgc.errors.EnvironmentMismatchError` for what decoding here needs.
        """
        with _typed_errors():
            return self._decode(unpack(bytes(data), max_output_bytes=self.max_output_bytes))

    def decompress(self, data: bytes):
        """The original object: array/tensor or nested container (numpy in, numpy out)."""
        return self.decompress_bundle(data).to_objects()

    def decompress_file(self, src, dst, *, force: bool = False) -> Path:
        """Decode ``src`` and write the tensors in their original file format to ``dst``.

        ``dst`` is checked before decoding: writable, not ``src``, not existing unless ``force``,
        and with the suffix of the stored format (a .npy array is never written to a .pt path).
        """
        dst = Path(dst)
        check_output_path(dst, force=force, inputs=[src])
        with _typed_errors():
            container = unpack(read_input_bytes(src), max_output_bytes=self.max_output_bytes)
            check_output_format(container.header.manifest["format"], dst)
            bundle = self._decode(container)
        return write_tensors(bundle, dst, force=force)


@contextlib.contextmanager
def _typed_errors():
    """Decoding untrusted bytes raises LmgcError only: a corrupt payload can fail anywhere in a
    prior or in the range coder (constriction asserts), and that is the file's fault."""
    try:
        yield
    except LmgcError:
        raise
    except MemoryError:
        raise LimitExceededError("not enough memory to decode this file") from None
    except Exception as exc:
        raise CorruptDataError(f"the file cannot be decoded: {type(exc).__name__}: {exc}") from exc


def _check_symbol_counts(header: Header, container: Container, sizes: list[int],
                         serialization: Serialization) -> None:  # fmt: skip
    """Refuse impossible symbol counts before any model loads: one symbol per hex digit (nibble,
    hybrid, context), or in token mode between one and one per UTF-8 byte of the chunk's text
    (byte-level tokens; a Latin-1 character takes at most two bytes)."""
    group = header.codec["group_bytes"]
    token_mode = header.prior["kind"] == "llm"
    utf8_bytes_per_char = 1 if serialization.encoding == "hex" else 2
    for i, (entry, size) in enumerate(zip(container.chunks, sizes)):
        if token_mode:
            ok = 1 <= entry.n_symbols <= serialization.to_text_length(size, group) * utf8_bytes_per_char
        else:
            ok = entry.n_symbols == 2 * size
        if not ok:
            raise CorruptDataError(f"chunk {i} claims {entry.n_symbols} symbols for {size} bytes")


def _bundle_from_stream(stream: bytes, container: Container, serialization: Serialization) -> TensorBundle:
    manifest = container.header.manifest
    blobs, position = [], 0
    for entry in manifest["tensors"]:
        size = ITEMSIZE[entry["dtype"]]
        n = size
        for dim in entry["shape"]:
            n *= dim
        blobs.append(serialization.order_bytes(stream[position : position + n], size))
        position += n
    if position != len(stream) or not container.matches(b"".join(blobs)):
        raise CorruptDataError("decoded data fails the SHA-256 check: the file is corrupt")
    return TensorBundle.from_manifest(manifest, blobs)


def read_container_info(data: bytes) -> dict:
    """Header, integrity and chunk statistics of a container, without decoding it (no size limit:
    nothing is allocated in proportion to what the file claims)."""
    with _typed_errors():
        container = unpack(bytes(data), max_output_bytes=None)
    payload = sum(c.payload_length for c in container.chunks)
    return {
        "format_version": container.version,
        "integrity": INTEGRITY[container.version],
        "header": container.header.fields,
        "n_chunks": container.header.n_chunks,
        "file_bytes": len(data),
        "payload_bytes": payload,
        "chunks": [
            {"offset": o, "payload_bytes": c.payload_length, "symbols": c.n_symbols, "crc32": f"{c.crc32:08x}"}
            for o, c in zip(container.offsets(), container.chunks)
        ],
        "sha256": container.digest.hex(),
    }


#: What each container version's checksums cover (``lmgc info`` prints it).
INTEGRITY = {
    1: "version 1: CRC32 per decoded chunk and SHA-256 of the tensor bytes; the header (manifest, "
       "codec, prior) is NOT covered, so an edited header can decode to wrong tensors",
    2: "version 2: CRC32 of the header and of every coded chunk (checked before decoding), "
       "SHA-256 of the header and the tensor bytes",
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
