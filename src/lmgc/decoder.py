"""Decoding ``.lmgc`` files, which may come from anyone: the exact bytes or an LmgcError.

:class:`Decompressor` runs every check that needs no decoding first (the container's CRCs and
header schema, symbol counts, the caller's size limit, which model may load), then the prior and
the coder, then the SHA-256 over header and tensors. Whatever fails inside a prior or the range
coder on corrupt data surfaces as :class:`~lmgc.errors.CorruptDataError`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from .codec import crc32
from .container import Container, unpack
from .environment import check_environment
from .errors import (
    CorruptDataError,
    LimitExceededError,
    LmgcError,
    SerializationError,
    UntrustedModelError,
)
from .files import check_output_path, read_input_bytes
from .header import DEFAULT_MAX_OUTPUT_BYTES, tensor_bytes
from .lossy import decode as lossy_decode
from .models import EMBEDDED_MODELS, default_model_spec, load_model
from .priors import recorded_class
from .serialize import Serialization
from .tensors import ITEMSIZE, TensorBundle, check_output_format, write_tensors

__all__ = ["Decompressor", "read_container_info", "INTEGRITY"]

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

    def _load(self, recorded: dict):
        """The model for a recorded LLM identity: only one the caller allows (see ``model``)."""
        spec = self.model
        if not spec:
            if recorded["model"] not in EMBEDDED_MODELS and recorded["model"] != default_model_spec():
                raise UntrustedModelError(
                    f"this file was encoded with model {recorded['model']!r}, which is not an embedded "
                    f"model; lmgc loads no model a file names: pass --model {recorded['model']!r} "
                    "(model=...) to trust it"
                )
            spec = recorded["model"]
        return load_model(spec, dtype=recorded["dtype"], device=recorded["device"], announce=self.progress)

    def _decode(self, container: Container) -> TensorBundle:
        header = container.header
        codec = header.codec
        serialization = header.serialization
        group, sizes = codec["group_bytes"], [header.chunk_size(i) for i in range(header.n_chunks)]
        n_symbols = [entry.n_symbols for entry in container.chunks]
        prior_cls = recorded_class(header.prior["kind"])
        prior_cls.check_symbol_counts(n_symbols, sizes, serialization, group)
        check_environment(header.environment, prior_cls.environment(header.prior), self.allow_environment_mismatch)
        try:
            prior = prior_cls.from_identity(header.prior, serialization, self._load)
            chunks = prior.decode(container.payloads, n_symbols, sizes, group, codec["batch_size"], self.progress)
        except SerializationError as exc:
            raise CorruptDataError(f"the file decodes to malformed data ({exc}): it is corrupt") from None
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
        bundle = self.decompress_bundle(data)
        with _typed_errors():  # a version-1 header is unchecked: rebuilding may still fail
            return bundle.to_objects()

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


def _bundle_from_stream(stream: bytes, container: Container, serialization: Serialization) -> TensorBundle:
    manifest = container.header.manifest
    blobs, position = [], 0
    for entry in manifest["tensors"]:
        n = tensor_bytes(entry)
        blobs.append(serialization.order_bytes(stream[position : position + n], ITEMSIZE[entry["dtype"]]))
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
