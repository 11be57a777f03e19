"""The stages of a lossy pipeline: sparsifiers (TopK, RandK) and quantizers (Quantize, Sign).

A sparsifier picks which positions of a tensor survive; a quantizer turns the surviving values into
packed integer codes plus per-block scales, and back. Codes narrower than a byte are packed with the
first value in the high bits; 16-bit codes are stored as int16 (code - 32768).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Union

import numpy as np

from ..errors import CorruptDataError, InputError

__all__ = ["TopK", "RandK", "Quantize", "Sign", "Stage", "QUANTIZERS", "pack_codes", "unpack_codes"]


def _amount_text(percent: Fraction | None, count: int | None) -> str:
    if count is not None:
        return str(count)
    assert percent is not None
    if percent.denominator == 1:
        return f"{percent.numerator}%"
    return f"{float(percent):g}%" if Fraction(f"{float(percent):g}") == percent else f"{percent}%"


@dataclass(frozen=True)
class _Sparsifier:
    """Keeps ``percent``% (rounded up, at least one) or ``count`` values of each tensor."""

    percent: Fraction | None = None
    count: int | None = None

    def keep(self, n: int) -> int:
        """How many of ``n`` values this stage keeps."""
        if n == 0:
            return 0
        if self.count is not None:
            return min(self.count, n)
        return max(1, min(n, math.ceil(n * self.percent / 100)))


@dataclass(frozen=True)
class TopK(_Sparsifier):
    """Top-k by magnitude; ties go to the lower index (deterministic)."""

    def __str__(self) -> str:
        return f"topk:{_amount_text(self.percent, self.count)}"

    def select(self, magnitude: np.ndarray, k: int, tensor_index: int) -> np.ndarray:
        n = magnitude.size
        if k >= n:
            return np.arange(n, dtype=np.int64)
        threshold = np.partition(magnitude, n - k)[n - k]  # the k-th largest magnitude
        above = np.flatnonzero(magnitude > threshold)
        ties = np.flatnonzero(magnitude == threshold)[: k - above.size]
        return np.sort(np.concatenate([above, ties])).astype(np.int64)


@dataclass(frozen=True)
class RandK(_Sparsifier):
    """k positions drawn uniformly without replacement, seeded by ``seed`` and the tensor index.

    The positions are stored (not re-drawn from the seed when decoding), so decoding does not
    depend on numpy's sampling algorithm. Kept values are not rescaled.
    """

    seed: int = 0

    def __str__(self) -> str:
        return f"randk:{_amount_text(self.percent, self.count)}:seed={self.seed}"

    def select(self, magnitude: np.ndarray, k: int, tensor_index: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, tensor_index])
        return np.sort(rng.choice(magnitude.size, size=k, replace=False)).astype(np.int64)


@dataclass(frozen=True)
class Quantize:
    """Uniform min-max quantization to ``bits`` bits, per tensor or per ``block`` values.

    Per block: ``lo = min``, ``step = float32((max - min) / (2**bits - 1))``, code
    ``q = clip(rint((x - lo) / step))``; the value decoded is ``float32(lo + q * step)``
    (computed in float64, exact up to the final rounding). Side information: (lo, step) as two
    float32 per block.
    """

    bits: int
    block: int | None = None

    def __str__(self) -> str:
        return f"quant:{self.bits}" + (f":block={self.block}" if self.block else "")

    def n_blocks(self, m: int) -> int:
        return 0 if m == 0 else -(-m // (self.block or m))

    def codes_record(self, m: int) -> tuple[str, tuple[int, ...]]:
        if self.bits == 16:
            return "int16", (m,)
        return "uint8", (-(-m * self.bits // 8),)

    def scales_shape(self, m: int) -> tuple[int, ...]:
        return (self.n_blocks(m), 2)

    def encode(self, values: np.ndarray) -> tuple[bytes, bytes]:
        x = values.astype(np.float64)
        m, levels = x.size, (1 << self.bits) - 1
        block = self.block or max(m, 1)
        starts = np.arange(0, m, block)
        lo = np.minimum.reduceat(x, starts).astype(np.float32)
        hi = np.maximum.reduceat(x, starts)
        step = ((hi - lo.astype(np.float64)) / levels).astype(np.float32)
        if not np.isfinite(step).all():
            raise InputError(f"quant:{self.bits}: a block's value range exceeds float32; "
                             "use more bits or smaller blocks")
        which = np.arange(m) // block
        lo64, step64 = lo.astype(np.float64)[which], step.astype(np.float64)[which]
        safe = np.where(step64 > 0, step64, 1.0)
        q = np.where(step64 > 0, np.rint((x - lo64) / safe), 0.0)
        codes = np.clip(q, 0, levels).astype(np.int64)
        scales = np.stack([lo, step], axis=1).astype("<f4")
        return pack_codes(codes, self.bits), scales.tobytes()

    def decode(self, codes: bytes, scales: bytes, m: int) -> np.ndarray:
        q = unpack_codes(codes, self.bits, m).astype(np.float64)
        table = np.frombuffer(scales, "<f4").reshape(-1, 2).astype(np.float64)
        which = np.arange(m) // (self.block or max(m, 1))
        return (table[which, 0] + q * table[which, 1]).astype(np.float32)


@dataclass(frozen=True)
class Sign:
    """1-bit sign quantization: bit 1 for x >= 0; decoded as ±scale, scale = mean(|x|) per block.

    Side information: one float32 scale per block.
    """

    block: int | None = None

    def __str__(self) -> str:
        return "sign" + (f":block={self.block}" if self.block else "")

    def n_blocks(self, m: int) -> int:
        return 0 if m == 0 else -(-m // (self.block or m))

    def codes_record(self, m: int) -> tuple[str, tuple[int, ...]]:
        return "uint8", (-(-m // 8),)

    def scales_shape(self, m: int) -> tuple[int, ...]:
        return (self.n_blocks(m),)

    def encode(self, values: np.ndarray) -> tuple[bytes, bytes]:
        x = values.astype(np.float64)
        block = self.block or max(x.size, 1)
        starts = np.arange(0, x.size, block)
        sizes = np.diff(np.append(starts, x.size))
        scales = (np.add.reduceat(np.abs(x), starts) / sizes).astype("<f4")
        return pack_codes((x >= 0).astype(np.int64), 1), scales.tobytes()

    def decode(self, codes: bytes, scales: bytes, m: int) -> np.ndarray:
        bits = unpack_codes(codes, 1, m)
        scale = np.frombuffer(scales, "<f4")[np.arange(m) // (self.block or max(m, 1))]
        return np.where(bits == 1, scale, -scale).astype(np.float32)


Stage = Union[Quantize, Sign, TopK, RandK]
#: The stage types that must come last in a pipeline.
QUANTIZERS = (Quantize, Sign)


def pack_codes(codes: np.ndarray, bits: int) -> bytes:
    """Codes of ``bits`` bits each as bytes: packed below 8 bits, int16 - 32768 at 16."""
    if bits == 16:
        return (codes - 32768).astype("<i2").tobytes()
    if bits == 8:
        return codes.astype(np.uint8).tobytes()
    per_byte = 8 // bits
    padded = np.zeros(-(-codes.size // per_byte) * per_byte, dtype=np.uint8)
    padded[: codes.size] = codes
    shifts = (8 - bits * (np.arange(per_byte) + 1)).astype(np.uint8)  # first value: high bits
    return np.bitwise_or.reduce(padded.reshape(-1, per_byte) << shifts, axis=1).astype(
        np.uint8).tobytes()


def unpack_codes(data: bytes, bits: int, m: int) -> np.ndarray:
    """The ``m`` codes :func:`pack_codes` wrote.

    Raises:
        CorruptDataError: padding bits after the last code are not zero.
    """
    if bits == 16:
        return np.frombuffer(data, "<i2").astype(np.int64) + 32768
    raw = np.frombuffer(data, np.uint8)
    if bits == 8:
        return raw.astype(np.int64)
    per_byte = 8 // bits
    shifts = (8 - bits * (np.arange(per_byte) + 1)).astype(np.uint8)
    codes = ((raw[:, None] >> shifts) & ((1 << bits) - 1)).reshape(-1)
    if np.any(codes[m:]):
        raise CorruptDataError("lossy payload: nonzero padding bits after the last packed code")
    return codes[:m].astype(np.int64)
