"""Decoding ``.lmgc`` files, which may come from anyone: the exact bytes or an LmgcError.

:class:`Decompressor` runs every check that needs no decoding first (the container's CRCs and
header schema, symbol counts, the caller's size limit, which model may load), then the prior and
the coder, then the SHA-256 over header and tensors. Whatever fails inside a prior or the range
coder on corrupt data surfaces as :class:`~lmgc.errors.CorruptDataError`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from .codec import crc32, progress_bar
from .container import Container, unpack, unpack_file
from .environment import check_environment, check_numerics
from .errors import (
    CorruptDataError,
    LimitExceededError,
    LmgcError,
    SerializationError,
    UntrustedModelError,
)
from .files import (
    atomic_folder,
    atomic_path,
    check_output_folder,
    check_output_path,
    open_input,
)
from .header import DEFAULT_MAX_OUTPUT_BYTES, tensor_bytes
from .lossy import decode as lossy_decode
from .models import EMBEDDED_MODELS, default_model_spec, load_model
from .priors import ContextPrior, recorded_class
from .serialize import Serialization
from .sinks import FolderWriter, TensorWriter, writes
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

    def _prior(self, container: Container):
        """The prior that decodes ``container``, after the checks that need no model: symbol
        counts, environment, the recorded identity."""
        header = container.header
        sizes = [header.chunk_size(i) for i in range(header.n_chunks)]
        prior_cls = recorded_class(header.prior)
        prior_cls.check_symbol_counts([entry.n_symbols for entry in container.chunks], sizes,
                                      header.serialization, header.codec["group_bytes"])  # fmt: skip
        check_environment(header.environment, prior_cls.environment(header.prior), self.allow_environment_mismatch)
        try:
            prior = prior_cls.from_identity(header.prior, header.serialization, self._load)
        except SerializationError as exc:
            raise _malformed(exc) from None
        check_numerics(header.environment, prior, header.first_batch, self.allow_environment_mismatch)
        return prior

    def _chunks(self, container: Container, prior) -> Iterator[bytes]:
        """The decoded chunks in order: one at a time for the context prior, which decodes each
        on its own (memory for one chunk); all at once for priors that decode in batches."""
        header = container.header
        group, sizes = header.codec["group_bytes"], [header.chunk_size(i) for i in range(header.n_chunks)]
        try:
            if isinstance(prior, ContextPrior):
                decoded = self._one_by_one(container, prior)
            else:
                decoded = prior.decode(list(container.frames()), [entry.n_symbols for entry in container.chunks],
                                       sizes, group, header.codec["batch_size"], self.progress)  # fmt: skip
            for i, chunk in enumerate(decoded):
                if container.version == 1 and crc32(chunk) != container.chunks[i].crc32:
                    raise CorruptDataError(f"chunk {i} fails its CRC32 check: the file is corrupt")
                yield chunk
        except SerializationError as exc:
            raise _malformed(exc) from None

    def _one_by_one(self, container: Container, prior: ContextPrior) -> Iterator[bytes]:
        header = container.header
        with progress_bar(header.total_bytes, "decompress", self.progress, unit="B") as bar:
            for i, payload in enumerate(container.frames()):
                yield prior.decode_chunk(payload, header.chunk_size(i), header.codec["group_bytes"])
                bar.update(header.chunk_size(i))

    def _decode(self, container: Container) -> TensorBundle:
        header = container.header
        stream = b"".join(self._chunks(container, self._prior(container)))
        bundle = _bundle_from_stream(stream, container, header.serialization)
        return lossy_decode(bundle, header.lossy) if header.lossy is not None else bundle

    def _decode_into(self, container: Container, writer: TensorWriter) -> None:
        """Decode chunk by chunk into ``writer``; CorruptDataError unless the digest matches."""
        with _typed_errors():
            prior = self._prior(container)
        for chunk in _typed(self._chunks(container, prior)):
            writer.write(chunk)
        writer.finish(container.digest)

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
        """Decode ``src`` and write the tensors in their original file format to ``dst`` (a
        compressed folder: its files under the folder ``dst``).

        ``dst`` is checked before decoding: writable, not ``src``, not existing unless ``force``,
        and with the suffix of the stored format (a .npy array is never written to a .pt path).
        Every frame's CRC is checked before decoding starts. A .npy, .safetensors or raw output
        is decoded chunk by chunk into a temporary file (memory for a chunk, whatever the size),
        which replaces ``dst`` only once the SHA-256 matched; .pt files, in-memory objects and
        lossy data are rebuilt whole, as :meth:`decompress_bundle` does. A folder is written into
        a temporary folder the same way, file by file, and moved into place once it matched.
        """
        dst = Path(dst)
        if not dst.is_dir():  # a folder target is checked once the file says it holds a folder
            check_output_path(dst, force=force, inputs=[src])
        with open_input(src) as file:
            with _typed_errors():
                container = unpack_file(file, max_output_bytes=self.max_output_bytes)
            header, manifest = container.header, container.header.manifest
            if manifest["format"] == "folder":
                check_output_folder(dst, force=force, inputs=[src])
                with atomic_folder(dst) as tmp:
                    self._decode_into(container, FolderWriter(manifest, header.serialization, container.hasher(), tmp))
                return dst
            check_output_path(dst, force=force, inputs=[src])
            with _typed_errors():
                fmt = check_output_format(manifest["format"], dst)
                whole = header.lossy is not None or not writes(manifest, fmt)
                bundle = self._decode(container) if whole else None
            if bundle is not None:
                return write_tensors(bundle, dst, force=force)
            with atomic_path(dst) as tmp, open(tmp, "wb") as out:
                self._decode_into(container, TensorWriter(manifest, header.serialization, container.hasher(), out))
                check_output_path(dst, force=force, inputs=[src])
        return dst

    def check_file(self, src) -> None:
        """Decode ``src`` chunk by chunk and check it against its digest, writing nothing."""
        with open_input(src) as file:
            with _typed_errors():
                container = unpack_file(file, max_output_bytes=self.max_output_bytes)
            self._decode_into(container, TensorWriter(container.header.manifest, container.header.serialization,
                                                      container.hasher()))  # fmt: skip


def _malformed(exc: SerializationError) -> CorruptDataError:
    return CorruptDataError(f"the file decodes to malformed data ({exc}): it is corrupt")


def _typed(items: Iterator[bytes]) -> Iterator[bytes]:
    """``items`` with whatever producing one raises turned into an LmgcError (see
    :func:`_typed_errors`), while what the consumer does with them (writing a file: disk full is
    an OSError, not a corrupt input) keeps its own errors."""
    while True:
        with _typed_errors():
            item = next(items, None)
        if item is None:
            return
        yield item


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
