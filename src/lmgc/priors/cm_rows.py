"""Version 3's *best-row* model of :mod:`lmgc.priors.cm_model`: a gradient's rows are sums of few
outer products, so a row's signs often repeat those of one earlier row (or their flips) and its
log-magnitudes those plus an offset. Which earlier row varies: in a ViT's attention and MLP
gradients rows fall into a few such families, and the row just above is as often from another
family. The encoder picks the row length per block (:func:`row_fit_scores` scores candidates);
each lane tracks how well each of the last :data:`ROW_CANDIDATES` rows fits
(:func:`fit_rows`); the context is what the best-fitting one predicts
(:func:`best_row_context`). Integer arithmetic only, as the rest of the model."""

from __future__ import annotations

import numpy as np
from numba import njit

from .cm_arith import head

ROW_CANDIDATES = 32  # the rows (of the block's fitted row length) back whose fit a lane tracks
FIT_SHIFT, OFFSET_SHIFT = 5, 2  # averaging rates of the sign agreement and magnitude offset


@njit(cache=True)
def best_row_context(vals, fits, j, r, t, stride, h1):
    """The context of value ``r`` (lane ``j``, ``t`` values into it): the sign and magnitude
    that the best-agreeing of the candidate rows predicts, and how strongly it agrees; without
    candidates, the previous head ``h1``."""
    n = min(ROW_CANDIDATES, t // stride) if stride > 0 else 0
    if n == 0:
        return h1 >> 2
    best, strength = 0, np.int64(-1)
    for k in range(n):
        a = abs(fits[j, k, 0])
        if a > strength:
            best, strength = k, a
    above = head(vals, r - (best + 1) * stride)
    sign = ((above >> 11) & 1) ^ np.int64(fits[j, best, 0] < 0)
    magnitude = min(2047, max(0, (above & 0x7FF) + (fits[j, best, 1] >> 8)))
    return (1 << 30) | (min(7, strength >> 13) << 11) | (sign << 10) | (magnitude >> 1)


@njit(cache=True)
def fit_rows(vals, fits, j, r, t, stride):
    """After value ``r``: each candidate row's sign agreement (in +-2^16) and magnitude offset
    (in 1/256 of a head unit), exponentially averaged along the lane."""
    n = min(ROW_CANDIDATES, t // stride) if stride > 0 else 0
    here = head(vals, r)
    for k in range(n):
        above = head(vals, r - (k + 1) * stride)
        agree = 1 - 2 * (((here ^ above) >> 11) & 1)
        fits[j, k, 0] += ((agree << 16) - fits[j, k, 0]) >> FIT_SHIFT
        fits[j, k, 1] += ((((here & 0x7FF) - (above & 0x7FF)) << 8) - fits[j, k, 1]) >> OFFSET_SHIFT


@njit(cache=True)
def row_fit_scores(signs, lane_len, block_bits, window, sample, strides):
    """The encoder's criterion for the row length: ``scores[b, s]`` sums, over every
    ``sample``-th window of ``window`` values in block ``b``, the largest absolute summed sign
    agreement (``signs``: +1, -1, or 0 for a zero) between the window and the same window
    ``k * strides[s]`` values back, for the candidate rows that the window's lane holds at its
    start (as :func:`best_row_context` counts them)."""
    n = len(signs)
    scores = np.zeros(((n >> block_bits) + 1, len(strides)), dtype=np.int64)
    for start in range(0, n - window + 1, window * sample):
        held = start % lane_len
        for s in range(len(strides)):
            top = 0
            for k in range(1, min(ROW_CANDIDATES, held // strides[s]) + 1):
                back = k * strides[s]
                total = 0
                for i in range(start, start + window):
                    total += signs[i] * signs[i - back]
                top = max(top, abs(total))
            scores[start >> block_bits, s] += top
    return scores
