"""The contexts of :mod:`lmgc.priors.cm_model`'s models, and the per-lane state they are kept in.

Each model's context comes in two parts: a *value-level* one from the lane's earlier values
(:func:`value_contexts`: neighbours, a short and a long stride back, running magnitudes, zero
runs, the place in a 3x3 kernel, the plane and best-row predictions), computed once per value,
and a hash of it with the value's bytes so far at the start of each byte (:func:`byte_contexts`).
The lane's statistics (magnitude averages, zero run, row fits) move on after each whole value
(:func:`end_value`). Integer arithmetic only, as the rest of the model.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .cm import CFG_VERSION
from .cm_arith import head, mix_hash
from .cm_layout import BLOCK_BITS, FULL_BYTES
from .cm_rows import best_row_context, fit_rows

__all__ = ["MODELS", "N_MODELS", "FULL_BYTES", "ORDER0", "LANE_FIELDS", "value_contexts", "byte_contexts",
           "end_value", "of_version", "uses_model", "version_models"]  # fmt: skip

#: The context models, in table order; each context also holds the byte's place in the value
#: and the value's earlier bytes (for ``own`` the first two and whether each later one is zero;
#: the first two for the others).
MODELS = (
    "own",  # nothing else: the value's own prefix
    "neighbours",  # heads of the previous value and of the value a short stride back
    "magnitude",  # running magnitude of the lane's recent values and the last sign
    "row",  # head of the value a long stride (a tensor row or channel) back, or of 3 previous
    "zeros",  # zero run, signs of the 3 previous values, coarse previous head, place in a kernel
    "row-magnitude",  # running magnitude a row back and here
    "plane",  # version 2: magnitude and sign the row, short stride and their corner predict
    "best-row",  # version 3: sign and magnitude of the best-fitting of the last rows
)
N_MODELS = len(MODELS)  # version 3
MODELS_OF_VERSION = (6, 7, 8)  # the first so many models are a version's (1, 2, 3 and later)
N_IN = N_MODELS + 1  # the most mixer inputs: the models plus a constant bias input
#: The models of the later (mantissa) bytes: near-random, they pay for few (more measured no
#: better); there "own" sees whether each earlier byte is zero and "neighbours" is order 0
#: instead (its count limit is higher: stationary).
LATER_MODELS = (1 << 0) | (1 << 1)
ORDER0 = 1
NONE = 4096  # an absent earlier value's 12-bit head
#: Values per 3x3 conv kernel: a conv gradient's border taps differ from its centre in magnitude
#: and in how often they are zero, so the place in a kernel (index mod 9) is a context.
KERNEL = 9
#: Version 4 chooses the weight set per tap in chunks of this many values or more: 36 sets
#: learn more slowly than 4 (measured on ConvNet gradients of 22 K values: 0.1% larger with
#: them; 0.05% smaller on 308 K values, 0.15% on a 3.7 M-value VGG-16 gradient).
TAP_SETS_VALUES = 1 << 18

# Per-lane state columns (int64 matrix ``lane``).
C0, EMA, ZRUN, ROW, MCTX, A1, A2, H1, SLOW, M2, PR, WT, DS, PF, ZV = range(15)  # M2: second
# mixer's weight offset; PR, WT: the mixer's probability and its weight between two APM knots;
# DS, PF: in version 5's trial, the direct way's slot and the full model's final probability;
# ZV: version 6's zero flag of the current value (its coded bytes are all zero, not coded)
FV = 15  # value-level context of each model
BH = FV + N_MODELS  # hash of each model's context at the start of the byte
SLOT = BH + N_MODELS  # table slot each model read for the current bit
XS = SLOT + N_MODELS  # the mixer's inputs (stretched predictions + bias)
LANE_FIELDS = XS + N_IN


@njit(cache=True)
def version_models(cfg):
    """How many of :data:`MODELS` (the first so many) the chunk's model version has."""
    return of_version(MODELS_OF_VERSION, cfg[CFG_VERSION])


@njit(cache=True)
def of_version(rule, version):
    """``rule[version - 1]`` by comparisons: numba's indexing of a tuple by a runtime value
    keeps the loops that use it from being vectorized (measured: half the speed). Versions
    from 3 on read the third (last) entry: a rule that changes again needs a comparison more."""
    return rule[0] if version == 1 else (rule[1] if version == 2 else rule[2])


@njit(cache=True)
def value_contexts(cfg, vals, lane, emas, fits, strides, j, r, t):
    """The value-level context of each model from earlier values of lane ``j`` (row ``r``)."""
    h1 = head(vals, r - 1) if t >= 1 else NONE
    h2 = head(vals, r - 2) if t >= 2 else NONE
    h3 = head(vals, r - 3) if t >= 3 else NONE
    stride, short = strides[r >> BLOCK_BITS, 0], strides[r >> BLOCK_BITS, 1]
    hs = head(vals, r - short) if short <= t else NONE
    row = head(vals, r - stride) if 0 < stride <= t else NONE
    row_ema = emas[r - stride + 1] >> 5 if 1 < stride <= t else 0xFFFF
    ema = lane[j, EMA] if t >= 1 else 0xFFFF
    zb = lane[j, ZRUN]
    zbucket = zb if zb < 3 else (3 if zb < 5 else (4 if zb < 9 else (5 if zb < 17 else 6)))
    if t == 0:
        zbucket = 7
    signs = ((h1 >> 11) & 1) | (((h2 >> 11) & 1) << 1) | (((h3 >> 11) & 1) << 2)
    lane[j, FV + 0] = 0
    tap = (r - strides[r >> BLOCK_BITS, 3]) % KERNEL if cfg[CFG_VERSION] >= 4 else r % KERNEL
    lane[j, FV + 1] = ((h1 >> 2) << 13) | (hs >> 2)
    slow = lane[j, SLOW] if t >= 1 else 0xFFFF
    lane[j, FV + 2] = (((ema >> 4) << 13) | ((slow >> 5) << 1)) | ((h1 >> 11) & 1)
    if row != NONE:
        lane[j, FV + 3] = (row << 13) | (h1 >> 3)
    else:
        lane[j, FV + 3] = (1 << 40) | ((h1 >> 3) << 26) | ((h2 >> 3) << 13) | (h3 >> 3)
    lane[j, FV + 4] = ((tap << 20) | (zbucket << 16) | (signs << 12)) | (h1 >> 4)
    lane[j, FV + 5] = (row_ema << 16) | ((ema >> 5) << 1) | ((row >> 11) & 1)
    if cfg[CFG_VERSION] >= 2:
        lane[j, FV + 6] = _plane_context(vals, r, t, stride, short, row, hs, h1)
        lane[j, M2] = ((ema >> 7) & 255) if t >= 1 else 255
    if cfg[CFG_VERSION] >= 3:
        lane[j, FV + 7] = best_row_context(vals, fits, j, r, t, strides[r >> BLOCK_BITS, 2], h1)
    lane[j, ROW] = r
    lane[j, H1] = h1
    first = 2 * (row & 0x7FF == 0) + (hs & 0x7FF == 0)
    per_tap = cfg[CFG_VERSION] >= 4 and cfg[1] >= TAP_SETS_VALUES
    lane[j, MCTX] = 4 + zbucket if zbucket else (12 + 4 * tap + first if per_tap else first)


@njit(cache=True)
def _plane_context(vals, r, t, stride, short, row, hs, h1):
    """A gradient's weight tensor is near rank one per tap (the sum over the batch of an output
    error times an input), so log-magnitudes add: the value a row back, plus the one a short
    stride back, minus their common corner predict this one's magnitude (11 bits of head, a
    piecewise-linear log2), and the product of their signs predicts its sign. Without that
    history, the previous head."""
    if row == NONE or hs == NONE or stride + short > t:
        return h1 >> 2
    corner = head(vals, r - stride - short)
    predicted = min(2047, max(0, (row & 0x7FF) + (hs & 0x7FF) - (corner & 0x7FF)))
    sign = ((row ^ hs ^ corner) >> 11) & 1
    return (1 << 30) | ((predicted >> 3) << 2) | (sign << 1) | ((h1 >> 11) & 1)


@njit(cache=True)
def _exponent(vals, r):
    """The top 8 bits after the sign (a float32's exponent)."""
    return ((np.int64(vals[r, 0]) & 0x7F) << 1) | (np.int64(vals[r, 1]) >> 7)


@njit(cache=True)
def byte_contexts(cfg, vals, lane, j, bpos):
    """Each model's context hash for byte ``bpos`` of the lane's current value."""
    r = lane[j, ROW]
    if bpos >= FULL_BYTES and cfg[CFG_VERSION] >= 2:  # the later bytes' one model
        lane[j, BH + ORDER0] = mix_hash(bpos * 256 + _exponent(vals, r), ORDER0)
        return
    full = np.int64(bpos + 1)
    for b in range(bpos):  # beyond the first two bytes, only whether each is zero
        full = (full << 8) | vals[r, b] if b < 2 else (full << 1) | (vals[r, b] == 0)
    coarse = np.int64(bpos + 1)
    for b in range(min(bpos, 2)):
        coarse = (coarse << 8) | vals[r, b]
    lane[j, BH + 0] = mix_hash(full, 0)
    for m in range(1, version_models(cfg)):
        lane[j, BH + m] = mix_hash(mix_hash(lane[j, FV + m], coarse), m)
    if bpos >= FULL_BYTES:
        lane[j, BH + ORDER0] = mix_hash(bpos, ORDER0)


@njit(cache=True)
def uses_model(cfg, m, bpos):
    """Whether model ``m`` predicts the bits of byte ``bpos``."""
    if bpos < FULL_BYTES:
        return m < version_models(cfg)
    return m == ORDER0 if cfg[CFG_VERSION] >= 2 else (LATER_MODELS >> m) & 1


@njit(cache=True)
def end_value(cfg, vals, lane, emas, fits, strides, j, r):
    """Lane statistics after a whole value: magnitude average and zero run."""
    zero = True
    for b in range(cfg[0]):
        if vals[r, b] != 0:
            zero = False
    lane[j, ZRUN] = min(lane[j, ZRUN] + 1, 1 << 20) if zero else 0
    mag = (head(vals, r) & 0x7FF) << 4
    first = r % cfg[2] == 0
    lane[j, EMA] = mag if first else lane[j, EMA] + ((mag - lane[j, EMA]) >> 2)
    lane[j, SLOW] = mag if first else lane[j, SLOW] + ((mag - lane[j, SLOW]) >> 4)
    emas[r] = lane[j, EMA]
    if cfg[CFG_VERSION] >= 3:
        fit_rows(vals, fits, j, r, r % cfg[2], strides[r >> BLOCK_BITS, 2])
