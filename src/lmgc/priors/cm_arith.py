"""Integer arithmetic of the context-mixing model (lpaq's): squash and stretch between 12-bit
probabilities and the logistic domain, adaptive counters, APM training, a hash, and a value's
head. Integers only, so every machine computes the same bits."""

from __future__ import annotations

import numpy as np
from numba import njit

APM_RATE = 7

#: lpaq's squash knots: 4096 / (1 + e^-x) at x = -8 ... 8 in steps of 1/2 (interpolated).
SQUASH_KNOTS = np.array([1, 2, 3, 6, 10, 16, 27, 45, 73, 120, 194, 310, 488, 747, 1101, 1546, 2047,
                         2549, 2994, 3348, 3607, 3785, 3901, 3975, 4022, 4050, 4068, 4079, 4085,
                         4089, 4092, 4093, 4094], dtype=np.int64)  # fmt: skip


@njit(cache=True)
def squash(d):
    """4096 / (1 + e^(-d/256)) in integers, d clamped to [-2047, 2047]."""
    if d > 2047:
        return 4095
    if d < -2047:
        return 1
    w = d & 127
    i = (d >> 7) + 16
    return (SQUASH_KNOTS[i] * (128 - w) + SQUASH_KNOTS[i + 1] * w + 64) >> 7


def _stretch_table() -> np.ndarray:
    """Inverse of squash: ``STRETCH[p] = ln(p / (1 - p))`` in the same units (lpaq's table)."""
    table = np.empty(4096, dtype=np.int64)
    pi = 0
    for x in range(-2047, 2048):
        v = int(squash(x))
        table[pi : v + 1] = x
        pi = v + 1
    table[pi:] = 2047
    return table


STRETCH = _stretch_table()


def _cost_table() -> np.ndarray:
    """``COST[p] = -log2(p / 4096)`` in 1/4096 bit, rounded: the code length of a bit given a
    12-bit probability ``p`` of it. Encoder and decoder compare sums of these to choose, so
    every machine must build the same integers: float64 log2 is off by far less than 1e-9 on
    any libm, and no entry lies within 1e-6 of a rounding boundary (checked here)."""
    exact = np.log2(4096.0 / np.arange(1, 4097)) * 4096
    assert (np.abs(exact - np.floor(exact) - 0.5) > 1e-6).all()
    return np.concatenate([[0], np.rint(exact)]).astype(np.int64)


COST = _cost_table()

#: Counter step sizes: 1/(n + 1.5) in 2^15 units (lpaq's StateMap).
DT = np.array([16384 // (n + n + 3) for n in range(1024)], dtype=np.int64)

_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xD6E8FEB86659FD93)
_S32 = np.uint64(32)
_MASK32 = np.uint64(0xFFFFFFFF)


@njit(cache=True)
def mix_hash(a, b):
    """A 32-bit hash of two non-negative integers (uint64 arithmetic wraps the same everywhere)."""
    x = np.uint64(a) * _M1 + np.uint64(b)
    x ^= x >> _S32
    x *= _M2
    x ^= x >> _S32
    return np.int64(x & _MASK32)


@njit(cache=True)
def train_apm(apm, i, y):
    g = (y << 16) + (y << APM_RATE) - y - y
    apm[i] += (g - apm[i]) >> APM_RATE


@njit(cache=True)
def train_counter(tables, slot, y, limit):
    v = np.int64(tables[slot])
    n = v & 1023
    p = v >> 10
    v = v + 1 if n < limit else (v & ~np.int64(1023)) | limit
    v += ((((y << 22) - p) >> 3) * DT[n]) & ~np.int64(1023)
    tables[slot] = v


def aligned(n: int, fill: int, dtype) -> np.ndarray:
    """``np.full(n, fill, dtype)`` starting on a 64-byte cache line (numpy aligns to 16): a
    table's 16-slot block, and a version 2 mixer's 8 weights, are then one line, not two."""
    itemsize = np.dtype(dtype).itemsize
    buffer = np.empty(n + 64 // itemsize, dtype=dtype)
    start = (-buffer.ctypes.data % 64) // itemsize
    array = buffer[start : start + n]
    array[:] = fill
    return array


@njit(cache=True)
def head(vals, r):
    """The top 12 bits of value ``r``: sign, exponent and top mantissa bits of a float."""
    if vals.shape[1] == 1:
        return np.int64(vals[r, 0])
    return (np.int64(vals[r, 0]) << 4) | (np.int64(vals[r, 1]) >> 4)
