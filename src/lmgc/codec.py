"""The lockstep loop that joins a stepped prior and the coder, shared verbatim by encoder and decoder.

Chunks are processed in batches of ``batch_size`` consecutive chunks. Within a batch, step ``t``
feeds every chunk's symbol ``t - 1`` (BOS at ``t = 0``) and codes symbol ``t`` of each chunk that
still has one; a chunk that has ended is fed symbol 0 until the longest chunk of its batch ends.
The decoder knows every chunk's symbol count from the chunk table, so it feeds exactly the same
tensors in exactly the same order, and the prior's floating-point output is identical on both
sides. (The last batch may hold fewer chunks: both sides see the same shape, so no dummy chunks
are needed.)
"""

from __future__ import annotations

import sys
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from . import distributed
from .coder import BatchDecoder, BatchEncoder
from .errors import SerializationError

if TYPE_CHECKING:
    from .priors.base import PriorStream

__all__ = [
    "EncodedChunk", "split_chunks", "encode_symbols", "decode_symbols", "crc32", "RateMeter", "progress_bar",
]  # fmt: skip

_FILL_SYMBOL = 0


@dataclass(frozen=True)
class EncodedChunk:
    payload: bytes
    n_symbols: int
    ideal_bits: float


def crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def split_chunks(stream: bytes, chunk_bytes: int) -> list[bytes]:
    return [stream[i : i + chunk_bytes] for i in range(0, len(stream), chunk_bytes)]


def _batches(n: int, batch_size: int):
    for start in range(0, n, batch_size):
        yield range(start, min(n, start + batch_size))


Progress = Callable[[int, int], None]  # (symbols done in this call, original bytes finished)


def encode_symbols(
    stream: PriorStream, symbols: Sequence[np.ndarray], sizes: Sequence[int], batch_size: int,
    progress: Progress | None = None,
) -> list[EncodedChunk]:  # fmt: skip
    """Encode each chunk's symbols (from ``sizes[i]`` original bytes) into its own payload."""
    limit = stream.max_symbols
    for i, s in enumerate(symbols):
        if limit is not None and len(s) > limit:
            raise SerializationError(
                f"chunk {i} is {len(s)} symbols, more than the model's context allows ({limit}); "
                "lower --chunk-bytes"
            )

    def code(batch: range) -> dict[int, EncodedChunk]:
        lengths = np.array([len(symbols[i]) for i in batch], dtype=np.int64)
        steps = np.full((lengths.max(initial=0), len(batch)), _FILL_SYMBOL, dtype=np.int32)  # step x chunk
        for j, i in enumerate(batch):
            steps[: lengths[j], j] = symbols[i]
        chunk_sizes = np.array([sizes[i] for i in batch], dtype=np.int64)
        encoder = BatchEncoder(len(batch))
        session = stream.open(lengths.tolist())
        inputs = None
        for t, step in enumerate(steps):
            probabilities = session.step(inputs)
            lanes = np.flatnonzero(lengths > t)
            encoder.encode(lanes, step, probabilities)
            if progress:
                progress(len(lanes), int(chunk_sizes[lengths == t + 1].sum()))
            inputs = step.astype(np.int64)  # the fill symbol where a chunk has ended
        payloads = encoder.finish()
        return {i: EncodedChunk(payloads[j], int(encoder.n_symbols[j]), float(encoder.ideal_bits[j]))
                for j, i in enumerate(batch)}  # fmt: skip

    out = _each_batch(stream, len(symbols), batch_size, code)
    return [out[i] for i in range(len(symbols))]


def decode_symbols(
    stream: PriorStream, payloads: Sequence[bytes], n_symbols: Sequence[int], sizes: Sequence[int],
    batch_size: int, progress: Progress | None = None,
) -> list[np.ndarray]:  # fmt: skip
    """Inverse of :func:`encode_symbols` given the same prior, symbol counts and batch size."""

    def code(batch: range) -> dict[int, np.ndarray]:
        decoder = BatchDecoder([payloads[i] for i in batch])
        counts = np.array([n_symbols[i] for i in batch], dtype=np.int64)
        chunk_sizes = np.array([sizes[i] for i in batch], dtype=np.int64)
        ends = np.cumsum(counts)
        starts = ends - counts
        decoded = np.empty(int(ends[-1]), dtype=np.int64)  # every chunk's, end to end (batches are never empty)
        step = np.zeros(len(batch), dtype=np.int64)
        session = stream.open(counts.tolist())
        inputs = None
        for t in range(counts.max(initial=0)):
            probabilities = session.step(inputs)
            lanes = np.flatnonzero(counts > t)
            decoder.decode(lanes, probabilities, step)
            decoded[starts[lanes] + t] = step[lanes]
            if progress:
                progress(len(lanes), int(chunk_sizes[counts == t + 1].sum()))
            inputs = np.where(counts > t, step, _FILL_SYMBOL)
        return dict(zip(batch, np.split(decoded, ends[:-1])))

    out = _each_batch(stream, len(payloads), batch_size, code)
    return [out[i] for i in range(len(payloads))]


def _each_batch(stream: PriorStream, n_chunks: int, batch_size: int, code: Callable[[range], dict]) -> dict:
    """``code`` every batch, or, inside :func:`lmgc.distributed.sharding`, this rank's share of
    the batches with every rank's results gathered (a failure on any rank raises on all of them,
    so none waits forever for the others)."""
    shard = distributed.active() if distributed.shareable(stream) else None
    if shard is None:
        out: dict = {}
        for batch in _batches(n_chunks, batch_size):
            out.update(code(batch))
        return out
    local, error = {}, None
    try:
        for b, batch in enumerate(_batches(n_chunks, batch_size)):
            if shard.owns(b):
                local.update(code(batch))
    except Exception as exc:  # re-raised below, on every rank
        error = exc
    return shard.gather(local, error)


class _NoBar:
    """What a disabled bar does: nothing (without importing tqdm, a twentieth of a second)."""

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        pass

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, desc: str, enabled: bool, unit: str = "sym"):
    """A tqdm bar on stderr (results go to stdout); disabled, it costs nothing."""
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True,
                file=sys.stderr, dynamic_ncols=True)  # fmt: skip


class RateMeter:
    """Feeds a tqdm bar with tokens and shows bytes/s beside it."""

    def __init__(self, bar) -> None:
        self.bar, self.bytes_done, self.start = bar, 0, time.perf_counter()

    def __call__(self, symbols: int, finished_bytes: int) -> None:
        self.bar.update(symbols)
        if finished_bytes:
            self.bytes_done += finished_bytes
            elapsed = max(time.perf_counter() - self.start, 1e-9)
            self.bar.set_postfix_str(f"{self.bytes_done / elapsed:,.0f} B/s", refresh=False)
