"""The context-mixing model of :mod:`lmgc.priors.cm`: integer kernels compiled with numba.

Every coded bit of a value's leading bytes (sign, exponent, top mantissa bits) is predicted by
several context models (:data:`MODELS`; their contexts: :mod:`~lmgc.priors.cm_contexts`), each
an adaptive probability (lpaq's StateMap: 22-bit probability, 10-bit count, rate 1/(n + 1.5)
down to 1/(limit + 1.5)) in a hashed table, in blocks of 16 slots per nibble so that a model
costs one cache line per nibble. Logistic mixers (stretch domain, 16.16 integer weights) combine
them, and APM/SSE stages refine the result. All arithmetic is integer (12-bit probabilities,
lpaq's stretch/squash tables, fixed shifts), so the probabilities are the same bits on every
machine and thread setting.

The model's *version* (``cfg[VERSION]``, the prior's recorded version) selects its rules, so
that files of every version decode:

- version 1: six models, one mixer (a weight set per bit of the value and zero run, or
  zero-ness of the values a row and a short stride back), counts limited to 255; the later
  (mantissa) bytes mixed from two models.
- version 2: a seventh model, the *plane* (see :mod:`~lmgc.priors.cm_contexts`); a second mixer
  whose weight set is chosen by the lane's running magnitude, averaged with the first; counts
  limited to 1023 and a larger second APM (both for large inputs). The later bytes are
  near-random but not quite: exact zeros, and values whose exponent leaves their low mantissa
  bits zero (an initialisation drawn from 24 random bits) make them depend on the exponent.
  There each bit is coded straight from one adaptive probability per (byte, exponent, bit): no
  mixer or APM, whose own learning noise costs more than the bytes hold (measured: 8.01 bits per
  byte with them, 7.985 without, on initial weights).
- version 3: an eighth model, the *best row* (:mod:`lmgc.priors.cm_rows`): the sign and
  magnitude predicted by whichever of the last 32 rows (of a row length the encoder chooses per
  block) has lately agreed best in sign, flips included. A ViT's gradient rows fall into a few
  families that the row just above often does not share (measured on a Fashion-MNIST ViT
  gradient: 2.47 -> 1.37 bits per value at the sign/exponent byte, 7.81 -> 7.36 at the next).
- version 4: the place in a 3x3 kernel (the *tap*) counted from the first value of the value's
  tensor rather than of the chunk (each block of values counts from the start of its row span,
  which the decoder reads before the model starts), and in chunks of :data:`TAP_SETS_VALUES`
  values or more the first mixer's weight set chosen per tap where there is no zero run. A conv
  gradient's taps differ in magnitude and in how the neighbours predict them; counted from
  the chunk's start, a tensor's taps were misplaced after any tensor whose size is not a
  multiple of 9. Measured on a 15 MB VGG-16 gradient (MNIST, step 0): 26.666 -> 26.630 bits
  per value (aligned taps alone: 26.649).
- version 5: the second byte's last four bits (mantissa bits 4-7 of a float32) are coded either
  by the whole model or, as the later bytes, straight from one adaptive probability per
  (exponent, bit), whichever did better (the direct way by 0.1%) over a *trial*, the first
  1/:data:`~lmgc.priors.cm_direct.TRIAL_SHARE` of every lane, where both run
  (:func:`~lmgc.priors.cm_direct.low_bits_mode`). Both sides score the trial alike, so no
  choice is stored. On dense conv gradients those bits are near-random
  and the mixers' and APMs' learning noise costs more than they hold (coded the direct way
  throughout, every dense ConvNet and VGG-16 gradient measured was 0.0002-0.0075 bit per value
  smaller, and it skips the model); on a ViT's gradient the full model is up to 0.11 bit per
  value smaller (rows and their families carry those bits), on a sparse ResNet-18 gradient 0.008.
- version 6: in chunks the encoder marks (``cfg[CFG_ZEROS]``: where zeros are common), each value
  starts with a *zero flag*, predicted by the whole model as a bit before the value's first (in
  slot 0 of that bit's block, which no bit uses; with its own mixer weight sets and APM
  contexts); a flagged value's coded bytes are zero and none of its bits is coded, so its lane
  sits the value's steps out (each step codes the lanes that have a bit, in lane order). A zero
  costs one step instead of 8 to 32, and the model no longer spreads the zero-or-not decision
  over the sign and exponent bits (measured on a ResNet-18 gradient with 18% zeros: 0.06%
  smaller, 2-9% faster).

Values are coded in *lanes* (contiguous runs of values advancing in lockstep, one bit of every
lane per step): :func:`predict` gives the probabilities of one step's bits from the state as it
was before the step, :func:`update` then trains on the bits lane after lane. The tables are
shared by all lanes; only the history (earlier values of the lane, the partial byte) is a
lane's own, read from the value matrix ``vals`` itself (rows of earlier steps are complete in
the decoder too). The encoder runs the same two functions in the same order
(:func:`encode_steps`), so both sides compute identical probabilities.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .cm import CFG_CODED, CFG_VERSION, CFG_ZEROS
from .cm_arith import STRETCH, aligned, mix_hash, squash, train_apm, train_counter
from .cm_contexts import (
    A1, A2, BH, C0, DS, FULL_BYTES, H1, M2, MCTX, MODELS, N_MODELS, ORDER0, PF, PR, ROW, SLOT, WT, XS, ZV, LANE_FIELDS,
    byte_contexts, end_value, of_version, uses_model, value_contexts, version_models,
)  # fmt: skip
from .cm_direct import (
    LOW_DIRECT, LOW_FULL, LOW_TRIAL, ORDER0_LIMIT, direct_slot, low_bits_context, low_bits_mode, score_trial,
)  # fmt: skip
from .cm_rows import ROW_CANDIDATES

__all__ = ["MODELS", "N_MODELS", "advance", "encode_steps", "new_state", "predict", "update"]

MAX_BITS = 64  # bits of a value (group of up to 8 bytes)
FLAG_BIT = MAX_BITS  # the mixers' weight sets of version 6's zero flag follow the value's bits'
MIXER_SETS = 48  # weight sets per bit: 8 zero-run buckets, or whether the row and short-stride
# values are zero (or absent); from version 4 the latter per tap of a 3x3 kernel (4 x 9 sets)
MAGNITUDE_SETS = 256  # version 2's second mixer: a weight set per bit and running exponent
APM2_BITS = (10, 14, 14)  # log2 of the second APM's contexts, by version (1, 2, 3 and later)
LIMIT = (255, 1023, 1023)  # count limits of the models by version
MIXER_SHIFT = 13  # learning rate of the mixer: delta w = x * err >> MIXER_SHIFT (from version 4
# one less after the first byte: measured 0.003 bit per value less on a VGG-16 gradient)


def new_state(cfg: np.ndarray, strides: np.ndarray) -> tuple[np.ndarray, ...]:
    """Fresh state for one chunk whose blocks of ``2**BLOCK_BITS`` values have these strides
    (long, short, from version 3 the best-row model's row length, from version 4 the value a
    3x3 kernel's taps are counted from): (tables, weights, apm1, apm2, lane, magnitude average
    after each value, each lane's fit of each candidate row (:func:`lmgc.priors.cm_rows.fit_rows`),
    the strides, version 5's trial). The second mixer's weights follow the first's."""
    version, n_in = int(cfg[CFG_VERSION]), int(version_models(cfg)) + 1
    tables = aligned(int(version_models(cfg)) << int(cfg[5]), 1 << 31, np.uint32)
    sets = MIXER_SETS + (MAGNITUDE_SETS if version >= 2 else 0)
    weights = aligned((MAX_BITS + 1) * sets * n_in, (1 << 16) // 7, np.int64)
    knots = np.array([squash((j - 16) * 128) * 16 for j in range(33)], dtype=np.int32)
    apm1 = np.tile(knots, MAX_BITS * 256)
    apm2 = np.tile(knots, 1 << APM2_BITS[min(version, len(APM2_BITS)) - 1])
    lane = np.zeros((max(1, int(cfg[3])), LANE_FIELDS), dtype=np.int64)
    lane[:, C0] = 1
    emas = np.zeros(max(1, int(cfg[1])), dtype=np.int32)
    fits = np.zeros((lane.shape[0], ROW_CANDIDATES, 2), dtype=np.int64)
    trial = np.zeros(3, dtype=np.int64)  # LOW_TRIAL, no cost yet (:mod:`~lmgc.priors.cm_direct`)
    return tables, weights, apm1, apm2, lane, emas, fits, strides, trial


@njit(cache=True)
def _active(cfg, t):
    """Lanes that still have a value ``t`` (a prefix of the lanes: only the last ones are short)."""
    lane_len = cfg[2]
    return min(cfg[3], (cfg[1] - t + lane_len - 1) // lane_len)


@njit(cache=True)
def _mixer_offsets(cfg, lane, j, k):
    """Where the weights of lane ``j``'s mixers for bit ``k`` of the value (-1: the zero flag)
    start."""
    n_in = version_models(cfg) + 1
    bit = FLAG_BIT if k < 0 else k
    first = (bit * MIXER_SETS + lane[j, MCTX]) * n_in
    second = ((MAX_BITS + 1) * MIXER_SETS + bit * MAGNITUDE_SETS + lane[j, M2]) * n_in
    return first, second


@njit(cache=True)
def _place(cfg, step):
    """(value ``t`` of the lanes, bit ``k`` of its coded bits) that ``step`` codes; ``k`` = -1
    is version 6's zero flag, which comes first in a chunk that has them."""
    flags = cfg[CFG_ZEROS]
    t, k = divmod(step, 8 * cfg[4] + flags)
    return t, k - flags


@njit(cache=True)
def _coded_zero(cfg, vals, r):
    """Whether value ``r``'s coded bytes are all zero (what its zero flag says)."""
    for c in range(cfg[4]):
        if vals[r, cfg[CFG_CODED + c]] != 0:
            return 0
    return 1


@njit(cache=True)
def _dot(lane, j, weights, w0, n_in):
    """Inputs times weights. Unsigned indices are not wrapped (numba counts a negative one from
    the end, element by element), so this loop and :func:`_train_mixer`'s vectorize alike and
    the training's stores forward to the next lane's loads."""
    dot = np.int64(0)
    for i in range(n_in):
        dot += lane[j, np.uint64(XS + i)] * weights[np.uint64(w0 + i)]
    return dot


@njit(cache=True)
def predict(step, cfg, tables, weights, apm1, apm2, lane, emas, fits, strides, trial, vals, probs):
    """Probabilities of bit ``step`` of every lane that codes it (the active lanes but those
    whose value's zero flag is set) into the first rows of ``probs`` (rows [p0, p1]), lane
    after lane; returns how many."""
    t, k = _place(cfg, step)
    # Whether values have zero flags, tested before each lane's flag: the loops then run as
    # they had before flags where there are none (measured: testing the flag alone, 3-6% slower).
    flags = cfg[CFG_ZEROS] != 0
    flag = k < 0  # the zero flag: predicted as a bit before the value's first, slot 0 of its block
    cb, bit = divmod(max(k, 0), 8)
    bpos = cfg[CFG_CODED + cb]
    table_bits = cfg[5]
    mask = (np.int64(1) << table_bits) - 16
    lane_len = cfg[2]
    active = _active(cfg, t)
    version, n_models = cfg[CFG_VERSION], version_models(cfg)
    low = LOW_FULL if flag else low_bits_mode(cfg, trial, t, bpos, bit)
    direct = not flag and ((bpos >= FULL_BYTES and version >= 2) or low == LOW_DIRECT)
    used = 0  # the models of this byte position, a bit each
    for m in range(n_models):
        used |= np.int64(uses_model(cfg, m, bpos)) << m
    # First the slots, then the table reads alone in a tight loop: the cache misses of many
    # lanes are then in flight at once.
    for j in range(active):
        if flag:
            lane[j, ZV] = 0
        elif flags and lane[j, ZV]:
            continue
        c0 = 0 if flag else lane[j, C0]
        if bit == 0 and (flag or cb > 0 or not flags):
            if cb == 0:
                value_contexts(cfg, vals, lane, emas, fits, strides, j, j * lane_len + t, t)
            byte_contexts(cfg, vals, lane, j, bpos)
        if low != LOW_FULL:
            slot = direct_slot(low_bits_context(vals, lane, j, c0, bit), bit, table_bits, mask)
            lane[j, SLOT + ORDER0 if direct else DS] = slot
            if direct:
                continue
        elif direct:  # one probability per (byte, exponent, bit)
            lane[j, SLOT + ORDER0] = direct_slot(lane[j, BH + ORDER0], bit, table_bits, mask)
            continue
        nibble = c0 if bit < 4 else (c0 & ((1 << (bit - 4)) - 1)) | (1 << (bit - 4))
        for m in range(n_models):
            if (used >> m) & 1:
                if bit == 0 or bit == 4:
                    base = mix_hash(lane[j, BH + m], c0 if bit == 4 else 0) & mask
                    lane[j, SLOT + m] = (np.int64(m) << table_bits) + base + nibble
                else:
                    lane[j, SLOT + m] = (lane[j, SLOT + m] & ~np.int64(15)) + nibble
    for j in range(0 if direct else active):
        if flags and lane[j, ZV]:
            continue
        for m in range(n_models):
            lane[j, XS + m] = STRETCH[tables[lane[j, SLOT + m]] >> 20] if (used >> m) & 1 else 0
    apm2_mask = (np.int64(1) << of_version(APM2_BITS, version)) - 1
    apm_bit = max(k, 0)  # the flag's APM contexts are its partial byte's: 0, unused by the bits
    for j in range(0 if direct else active):  # the mixers, then (below) the APMs' reads alone
        if flags and lane[j, ZV]:
            continue
        c0 = 0 if flag else lane[j, C0]
        lane[j, XS + n_models] = 256
        first, second = _mixer_offsets(cfg, lane, j, k)
        dot = _dot(lane, j, weights, first, n_models + 1)
        if version >= 2:
            dot = (dot + _dot(lane, j, weights, second, n_models + 1)) >> 1
        pr = squash(dot >> 16)
        s = STRETCH[pr] + 2048
        lane[j, PR], lane[j, WT] = pr, s & 127
        lane[j, A1] = (apm_bit * 256 + c0) * 33 + (s >> 7)
        if bpos < FULL_BYTES:
            lane[j, A2] = (mix_hash(lane[j, H1], apm_bit * 256 + c0) & apm2_mask) * 33 + (s >> 7)
    n = 0
    for j in range(active):
        if flags and lane[j, ZV]:
            continue
        if direct:
            p = min(4095, max(1, np.int64(tables[lane[j, SLOT + ORDER0]] >> 20)))
        else:
            pr, wt, base1 = lane[j, PR], lane[j, WT], lane[j, A1]
            p1 = (apm1[base1] * (128 - wt) + apm1[base1 + 1] * wt) >> 11
            lane[j, A1] = base1 + (wt >> 6)
            if bpos < FULL_BYTES:
                base2 = lane[j, A2]
                p2 = (apm2[base2] * (128 - wt) + apm2[base2 + 1] * wt) >> 11
                lane[j, A2] = base2 + (wt >> 6)
                # from version 4 the mixer weighs more: measured 0.003 bit per value less on VGG-16
                p = (2 * pr + p1 + p2 + 2) >> 2 if version >= 4 else (pr + p1 + 2 * p2 + 2) >> 2
            else:
                p = (pr + 3 * p1 + 2) >> 2
            p = min(4095, max(1, p))
            lane[j, PF] = p
        probs[n, 1] = p / 4096.0
        probs[n, 0] = (4096 - p) / 4096.0
        n += 1
    return n


@njit(cache=True)
def _train_mixer(lane, j, weights, w0, n_in, y, shift):
    """The mixer learns from its prediction with the weights as they are now (earlier lanes of
    this step have moved them): sequential SGD, not one step summed over all lanes."""
    err = (y << 12) - squash(_dot(lane, j, weights, w0, n_in) >> 16)
    for i in range(n_in):
        weights[np.uint64(w0 + i)] += (lane[j, np.uint64(XS + i)] * err) >> shift


@njit(cache=True)
def update(step, cfg, tables, weights, apm1, apm2, lane, emas, fits, strides, trial, vals, bits):
    """Train on bit ``step`` of every lane that coded it (``bits``, in :func:`predict`'s order),
    lane after lane; completes bytes in ``vals``. Returns how many bits it read."""
    n_coded = cfg[4]
    t, k = _place(cfg, step)
    flags = cfg[CFG_ZEROS] != 0
    flag = k < 0
    cb, bit = divmod(max(k, 0), 8)
    bpos = cfg[CFG_CODED + cb]
    version, n_models = cfg[CFG_VERSION], version_models(cfg)
    low = LOW_FULL if flag else low_bits_mode(cfg, trial, t, bpos, bit)
    direct = not flag and ((bpos >= FULL_BYTES and version >= 2) or low == LOW_DIRECT)
    shift = MIXER_SHIFT - 1 if version >= 4 and bpos >= 1 else MIXER_SHIFT
    last = bit == 7 and cb == n_coded - 1
    n = 0
    for j in range(_active(cfg, t)):
        if flags and lane[j, ZV]:  # a zero value: its bytes are zero already; its lane moves on
            if last:
                end_value(cfg, vals, lane, emas, fits, strides, j, lane[j, ROW])
            continue
        y = np.int64(bits[n])
        n += 1
        if direct:
            train_counter(tables, lane[j, SLOT + ORDER0], y, ORDER0_LIMIT)
        else:
            for m in range(n_models):
                if uses_model(cfg, m, bpos):
                    later_order0 = m == ORDER0 and bpos >= FULL_BYTES
                    limit = ORDER0_LIMIT if later_order0 else of_version(LIMIT, version)
                    train_counter(tables, lane[j, SLOT + m], y, limit)
            first, second = _mixer_offsets(cfg, lane, j, k)
            _train_mixer(lane, j, weights, first, n_models + 1, y, shift)
            if version >= 2:
                _train_mixer(lane, j, weights, second, n_models + 1, y, shift)
            train_apm(apm1, lane[j, A1], y)
            if bpos < FULL_BYTES:
                train_apm(apm2, lane[j, A2], y)
            if low == LOW_TRIAL:
                score_trial(tables, lane, j, trial, y)
        if flag:
            lane[j, ZV] = y
            continue
        c0 = (lane[j, C0] << 1) | y
        if bit == 7:
            r = lane[j, ROW]
            vals[r, bpos] = c0 & 255
            c0 = 1
            if cb == n_coded - 1:
                end_value(cfg, vals, lane, emas, fits, strides, j, r)
        lane[j, C0] = c0
    return n


@njit(cache=True)
def _step_bits(step, cfg, vals, lane, bits):
    """The true bits of ``step`` (encoder only: it knows every value), in :func:`predict`'s
    order; returns how many."""
    t, k = _place(cfg, step)
    flags = cfg[CFG_ZEROS] != 0
    cb, bit = divmod(max(k, 0), 8)
    bpos = cfg[CFG_CODED + cb]
    n = 0
    for j in range(_active(cfg, t)):
        r = j * cfg[2] + t
        if k < 0:
            bits[n] = _coded_zero(cfg, vals, r)
        elif flags and lane[j, ZV]:
            continue
        else:
            bits[n] = (vals[r, bpos] >> (7 - bit)) & 1
        n += 1
    return n


@njit(cache=True)
def advance(step, cfg, tables, weights, apm1, apm2, lane, emas, fits, strides, trial, vals, bits, probs):
    """One decoder step: train on the bits of ``step - 1`` (if any), predict ``step``; returns
    how many bits ``step`` codes (the first rows of ``probs``)."""
    if step > 0:
        update(step - 1, cfg, tables, weights, apm1, apm2, lane, emas, fits, strides, trial, vals, bits)
    return predict(step, cfg, tables, weights, apm1, apm2, lane, emas, fits, strides, trial, vals, probs)


@njit(cache=True)
def encode_steps(first, stop, cfg, tables, weights, apm1, apm2, lane, emas, fits, strides, trial, vals, probs,
                 out_probs, out_bits, out_counts):  # fmt: skip
    """Steps ``first ... stop - 1`` as the decoder runs them; writes each coded bit's
    probabilities (the rows of ``probs`` the decoder hands the coder) and the bit, in coding
    order, and each step's number of bits. Returns how many bits in all."""
    n = 0
    bits = np.empty(lane.shape[0], dtype=np.int32)
    for step in range(first, stop):
        live = predict(step, cfg, tables, weights, apm1, apm2, lane, emas, fits, strides, trial, vals, probs)
        _step_bits(step, cfg, vals, lane, bits)
        out_probs[n : n + live] = probs[:live]
        out_bits[n : n + live] = bits[:live]
        out_counts[step - first] = live
        n += live
        update(step, cfg, tables, weights, apm1, apm2, lane, emas, fits, strides, trial, vals, bits)
    return n
