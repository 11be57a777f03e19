"""What shapes the coded bits besides the prior: one frozen :class:`CodecConfig`.

The header records it — the coding layout under ``codec`` (serialization, group, chunk and batch
sizes), how the model computes (threads, dtype, device) in the prior's identity — and the decoder
replays it exactly. Everything is validated and the serialization parsed here, once, before any
input is read or model loaded.

>>> CodecConfig(serialization="hex-space-le", chunk_bytes=512).serialization.spec
'hex-space-le'
>>> CodecConfig(batch_size=0)
Traceback (most recent call last):
lmgc.errors.SerializationError: batch size must be in [1, 65536], not 0
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, replace

from .errors import SerializationError
from .header import MAX_BATCH, MAX_CHUNK_BYTES
from .serialize import DEFAULT_SERIALIZATION, Serialization, check_group_bytes

__all__ = ["CodecConfig", "DEFAULT_BATCH_SIZE", "AUTO_BATCH", "MODEL_DTYPES", "AUTO_DTYPE", "default_threads",
           "model_dtype", "auto_batch"]  # fmt: skip

DEFAULT_BATCH_SIZE = 16  # what ``auto`` gives priors that hold no per-chunk state (batching is free there)
AUTO_BATCH = "auto"  # as many chunks in lockstep as the device profits from and the memory budget allows
#: Chunks in lockstep beyond which a device gains little: on a CPU the matmuls are near their
#: best by 64 while attention grows with the batch (benchmarks/results/llm_speed.md); a GPU
#: wants thousands of sequences in flight.
BATCH_CAP = {"cpu": 64, "cuda": 4096}
#: Memory for the per-chunk model state of one batch (an LLM's KV cache). Fixed, not read from the
#: machine, so the same input and settings always give the same file.
STATE_BUDGET = {"cpu": 2 << 30, "cuda": 32 << 30}
MODEL_DTYPES = ("float32", "bfloat16", "float16")
AUTO_DTYPE = "auto"  # bfloat16 where the hardware computes it natively, else float32


def _cpu_has_native_bf16() -> bool:
    """avx512_bf16 or amx_bf16 among the CPU's flags (Linux; elsewhere assume not)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return bool({"avx512_bf16", "amx_bf16"} & set(line.split()))
    except OSError:
        pass
    return False


def model_dtype(dtype: str, device: str) -> str:
    """The dtype an LLM runs in: ``dtype``, or for ``auto`` bfloat16 on a GPU or a CPU with native
    bfloat16 arithmetic (twice float32's speed there, measured: benchmarks/results/llm_speed.md;
    the same size within 0.1 point) and float32 elsewhere, where bfloat16 is emulated. The
    resolved dtype is what the header records and the decoder uses."""
    if dtype != AUTO_DTYPE:
        return dtype
    if device.startswith("cuda") or _cpu_has_native_bf16():
        return "bfloat16"
    return "float32"


def auto_batch(n_chunks: int, state_bytes: int, device: str) -> int:
    """The ``auto`` batch size for ``n_chunks`` chunks whose model state takes ``state_bytes``
    each (0: a prior without per-chunk state). Independent of the number of processes, so a
    torchrun job writes the same file as one process."""
    if state_bytes <= 0:
        return DEFAULT_BATCH_SIZE
    kind = "cuda" if device.startswith("cuda") else "cpu"
    return max(1, min(n_chunks, BATCH_CAP[kind], STATE_BUDGET[kind] // state_bytes))


def default_threads() -> int:
    """Torch CPU threads when none are given: results differ between thread counts, so the count
    is recorded; more than 4 rarely pays for a 135M model."""
    return min(4, os.cpu_count() or 1)


def _bounded(value, name: str, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise SerializationError(f"{name} must be in [1, {high}], not {value!r}")


@dataclass(frozen=True)
class CodecConfig:
    """Settings that decide the coded bits (see the module docstring).

    Attributes:
        serialization: a spec like ``hex-comma-be`` or a :class:`~lmgc.serialize.Serialization`;
            stored parsed.
        group_bytes: bytes per group (1, 2, 4, 8); ``None``: the data's most common element size.
        chunk_bytes: bytes per independently coded chunk; ``None``: the prior's default
            (:meth:`for_prior`).
        batch_size: chunks run in lockstep (decoding repeats it); ``auto``: :func:`auto_batch`.
        threads: torch CPU threads; ``None``: :func:`default_threads`.
        dtype, device: what an LLM computes in (``auto``: see :func:`model_dtype`).
    """

    serialization: Serialization | str = DEFAULT_SERIALIZATION
    group_bytes: int | None = None
    chunk_bytes: int | None = None
    batch_size: int | str = AUTO_BATCH
    threads: int | None = None
    dtype: str = AUTO_DTYPE
    device: str = "cpu"

    def __post_init__(self) -> None:
        if isinstance(self.serialization, str):
            object.__setattr__(self, "serialization", Serialization.parse(self.serialization))
        elif not isinstance(self.serialization, Serialization):
            raise SerializationError(f"serialization must be a spec string, not {self.serialization!r}")
        if self.group_bytes is not None:
            check_group_bytes(self.group_bytes)
        if self.chunk_bytes is not None:
            _bounded(self.chunk_bytes, "chunk size", MAX_CHUNK_BYTES)
        if self.batch_size != AUTO_BATCH:
            _bounded(self.batch_size, "batch size", MAX_BATCH)
        if self.threads is not None:
            _bounded(self.threads, "threads", 4096)
        if self.dtype not in (AUTO_DTYPE, *MODEL_DTYPES):
            raise SerializationError(f"model dtype must be {AUTO_DTYPE} or one of {MODEL_DTYPES}, not {self.dtype!r}")

    @classmethod
    def from_settings(cls, base: CodecConfig | None, settings: dict) -> CodecConfig:
        """``base`` (or the defaults) with ``settings`` (keyword arguments named like the fields)
        replacing its fields; TypeError for a name that is not a field, as Python does."""
        unknown = sorted(set(settings) - set(cls.__dataclass_fields__))
        if unknown:
            raise TypeError(f"unexpected codec setting(s) {', '.join(unknown)}; "
                            f"valid: {', '.join(cls.__dataclass_fields__)}")  # fmt: skip
        return replace(base or cls(), **settings)

    def for_prior(self, default_chunk_bytes: int) -> CodecConfig:
        """This config with the defaults that depend on the prior and the machine filled in."""
        return replace(self, chunk_bytes=self.chunk_bytes or default_chunk_bytes,
                       threads=self.threads or default_threads())  # fmt: skip

    def group_for(self, element_sizes: Iterable[tuple[int, int]]) -> int:
        """Bytes per group for data of ``(itemsize, nbytes)`` pieces: the configured size, else the
        element size holding the most bytes (4 for no data)."""
        if self.group_bytes:
            return self.group_bytes
        totals: dict[int, int] = {}
        for itemsize, nbytes in element_sizes:
            totals[itemsize] = totals.get(itemsize, 0) + nbytes
        return max(totals, key=totals.__getitem__, default=4)  # ties: the first seen

    def batch_for(self, n_chunks: int, state_bytes: int) -> int:
        """The batch size to code ``n_chunks`` chunks with (``auto`` resolved: :func:`auto_batch`)."""
        if self.batch_size == AUTO_BATCH:
            return auto_batch(n_chunks, state_bytes, self.device)
        return self.batch_size

    def header_codec(self, group: int, batch_size: int) -> dict:
        """The header's ``codec`` field (key order is part of the coded bytes)."""
        return {"serialization": self.serialization.spec, "group_bytes": group,
                "chunk_bytes": self.chunk_bytes, "batch_size": batch_size}  # fmt: skip
