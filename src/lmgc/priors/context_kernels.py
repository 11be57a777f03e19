"""The numba kernels of the fast context codec (:mod:`lmgc.priors.context_coding`) and of row
prediction (:mod:`lmgc.priors.context_rows`): the per-value loops between range-coder calls,
which in numpy took as long as the range coder itself. Imported on first use, so ``import lmgc``
stays free of numba; integer arithmetic and float32 integer counts, so both sides compute the
same numbers on any machine.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .context_models import N_STRUCTURED, NONE
from .context_rows import CYCLE, MAG, SIGN

PLAIN_CONTEXTS = ((16 * 17 + NONE) * 17 + NONE) * 4 + 4  # previous digit, zero so far, flag


@njit(cache=True)
def lane_contexts(grid, p, t, active, uses, flags, counts, contexts, rows, digits):
    """Step ``t`` of position ``p``: each active lane's context, its count row, and (encoding)
    its digit. ``grid[p, t, j]`` is digit ``p`` of lane ``j``'s ``t``-th value; ``uses``:
    (previous digit, previous value, value before) as the kind reads them; ``flags`` is empty or
    1 per row-predicted value, laid out as the grid (its counts are kept apart)."""
    for j in range(active):
        d1 = grid[p - 1, t, j] if uses[0] and p > 0 else NONE
        prev = grid[p, t - 1, j] if uses[1] and t >= 1 else NONE
        prev2 = grid[p, t - 2, j] if uses[2] and t >= 2 else NONE
        zero = 1
        for q in range(p):
            if grid[q, t, j] != 0:
                zero = 0
        context = p * N_STRUCTURED + ((d1 * 17 + prev) * 17 + prev2) * 2 + zero
        if len(flags):
            context = context * 2 + flags[t, j]
        contexts[j] = context
        for d in range(16):
            rows[j, d] = counts[context, d]
        digits[j] = grid[p, t, j]


@njit(cache=True)
def lane_update(grid, p, t, active, counts, contexts, digits):
    """After step ``t``: count the coded digits and (decoding) put them in place."""
    for j in range(active):
        counts[contexts[j], digits[j]] += np.float32(1.0)
        grid[p, t, j] = digits[j]


@njit(cache=True)
def active_lanes(n_values, lanes, length, t):
    """Lanes that have a value at step ``t`` (a prefix: only the last lanes run short)."""
    return min(lanes, (n_values - t + length - 1) // length)


@njit(cache=True)
def lane_rows(grid, first, stop, n_values, uses, flags, counts, contexts, rows, digits):
    """The encoder's steps ``first ... stop - 1`` of every sequential position at once: the
    count rows and digits, in coding order, that the decoder meets step by step (it knows the
    digits only as it decodes them; the encoder can run ahead and code them in one call).
    Returns how many."""
    length, lanes = grid.shape[1], grid.shape[2]
    n = 0
    for t in range(first, stop):
        active = active_lanes(n_values, lanes, length, t)
        for p in range(grid.shape[0]):
            lane_contexts(grid, p, t, active, uses[p], flags, counts, contexts, rows[n : n + active],
                          digits[n : n + active])  # fmt: skip
            lane_update(grid, p, t, active, counts, contexts, digits[n : n + active])
            n += active
    return n


@njit(cache=True)
def plain_contexts(planes, p, use_d1, flags, zero):
    """Each value's context at plain position ``p`` (previous digit if the kind reads it, zero
    so far, flag), and how many values each context has."""
    n = planes.shape[1]
    contexts = np.empty(n, dtype=np.int32)
    for i in range(n):
        d1 = np.int32(planes[p - 1, i]) if use_d1 and p > 0 else np.int32(NONE)
        context = ((d1 * 17 + NONE) * 17 + NONE) * 2 + zero[i]
        contexts[i] = context * 2 + flags[i] if len(flags) else context
    sizes = np.zeros(PLAIN_CONTEXTS, dtype=np.int64)
    for i in range(n):
        sizes[contexts[i]] += 1
    return contexts, sizes


@njit(cache=True)
def group_starts(sizes):
    starts = np.zeros(len(sizes), dtype=np.int64)
    starts[1:] = np.cumsum(sizes)[:-1]
    return starts


@njit(cache=True)
def grouped(plane, contexts, sizes):
    """The digits of ``plane`` grouped by context: ascending context, value order within one."""
    starts = group_starts(sizes)
    digits = np.empty(len(contexts), dtype=np.int32)
    for i in range(len(contexts)):
        context = contexts[i]
        digits[starts[context]] = plane[i]
        starts[context] += 1
    return digits


@njit(cache=True)
def ungroup(plane, contexts, sizes, digits):
    """Inverse of :func:`grouped`: each value's digit into ``plane``."""
    starts = group_starts(sizes)
    for i in range(len(contexts)):
        context = contexts[i]
        plane[i] = digits[starts[context]]
        starts[context] += 1


@njit(cache=True)
def still_zero(zero, plane):
    for i in range(len(zero)):
        if plane[i] != 0:
            zero[i] = 0


@njit(cache=True)
def residual_heads(own, reference, flip, offset, lift):
    """Heads of rows (``own``, rows x values) as residuals from their reference rows': sign xor
    the reference's xor the row's ``flip``, and the magnitude's difference from the
    reference's plus the row's ``offset``, wrapped and zigzagged (0, -1, 1, -2, ... -> 1, 2, 3,
    4, ...), then moved ``lift`` further around the cycle. Magnitude 0 (a zero) is kept as it
    is, sign included, so zeros stay all-zero digits (the context models' cheapest case); the
    other magnitudes, 1 ... 2^15 - 1, are a cycle of ``CYCLE`` values."""
    out = np.empty(own.shape, dtype=np.int32)
    for r in range(own.shape[0]):
        sign = flip[r] << 15
        for c in range(own.shape[1]):
            value, above = own[r, c], reference[r, c]
            mag = value & MAG
            if mag == 0:
                out[r, c] = value
                continue
            difference = (mag - 1 - ((above & MAG) - 1 + offset[r])) % CYCLE
            if difference > CYCLE // 2:
                difference -= CYCLE
            zigzag = 2 * difference if difference >= 0 else -2 * difference - 1
            out[r, c] = ((value ^ above ^ sign) & SIGN) | ((zigzag + lift) % CYCLE + 1)
    return out


@njit(cache=True)
def digit_histograms(heads):
    """Per row of a span's heads, how often each value of each of its four top digits occurs:
    (rows, 4 * 16)."""
    out = np.zeros((heads.shape[0], 64))
    for r in range(heads.shape[0]):
        for c in range(heads.shape[1]):
            value = heads[r, c]
            for p in range(4):
                out[r, 16 * p + ((value >> (12 - 4 * p)) & 15)] += 1.0
    return out


@njit(cache=True)
def restore_rows(heads, layout, back, flip, offset, lift):
    """Inverse of :func:`residual_heads` over every predicted row of the spans ``layout``
    (start, length, count), in order, given each row's reference heads."""
    row = 0
    for s in range(len(layout)):
        start, length, count = layout[s, 0], layout[s, 1], layout[s, 2]
        for r in range(count):
            steps = back[row + r]
            if steps == 0:
                continue
            own, above = start + r * length, start + (r - steps) * length
            for c in range(length):
                residual, reference = heads[own + c], heads[above + c]
                if residual & MAG:
                    zigzag = ((residual & MAG) - 1 - lift) % CYCLE
                    difference = (zigzag >> 1) ^ -(zigzag & 1)
                    mag = ((reference & MAG) - 1 + offset[row + r] + difference) % CYCLE + 1
                    heads[own + c] = ((residual ^ reference ^ (flip[row + r] << 15)) & SIGN) | mag
        row += count


@njit(cache=True)
def best_back(matrix, max_back):
    """Per row of ``matrix`` (a span's heads, rows x columns), the earlier row (rows back, up to
    ``max_back``) whose signs agree or disagree most, and that sum of +1 per agreeing and -1 per
    disagreeing column; the nearest row wins a tie."""
    count, length = matrix.shape
    back, agree = np.zeros(count, dtype=np.int64), np.zeros(count, dtype=np.float32)
    for m in range(1, min(max_back, count - 1) + 1):
        for i in range(m, count):
            score = 0
            for c in range(length):
                score += 1 - (((matrix[i, c] ^ matrix[i - m, c]) & SIGN) >> 14)
            if abs(score) > abs(agree[i]):
                back[i], agree[i] = m, score
    return back, agree


@njit(cache=True)
def kind_costs(planes, p, zero, parts, uses, plan, counts, totals_table, counts_table):
    """Per context kind (``uses``: a row of (previous digit, previous value, value before) per
    kind), the exact code length of digit ``p`` of the values (``planes``: digits x values)
    under adaptive counts per its contexts, each of the ``parts`` (0/1 per value) counted apart;
    and the code length that kind ``z`` gives the values zero so far (``zero`` 1).
    ``totals_table[n]`` and ``counts_table[n]`` are the log2 rising factorials of a row's total
    and of a digit's count. The digits are counted once per full context (the joint counts);
    each kind's counts are sums of a finer kind's, in the order of ``plan`` (rows of (kind, the
    finer kind it sums, -1 for the joint counts, -2 if it reads every field and so is the joint
    counts)): most kinds then sum a few hundred rows, not one per context seen. ``counts`` is an
    all-zero (kinds + 1, 17 * 17 * 17 * 2 * 2, 16) integer scratch table (of a type that holds
    the number of values), left all-zero."""
    n_kinds, n_contexts, n = uses.shape[0], counts.shape[1], planes.shape[1]
    joint = n_kinds  # the scratch table's last slab
    seen = np.zeros((n_kinds + 1, n_contexts), dtype=np.bool_)
    for i in range(n):
        d1 = planes[p - 1, i] if p > 0 else NONE
        prev = planes[p, i - 1] if i >= 1 else NONE
        prev2 = planes[p, i - 2] if i >= 2 else NONE
        context = ((((d1 * 17 + prev) * 17 + prev2) * 2 + zero[i]) << 1) | parts[i]
        counts[joint, context, planes[p, i]] += 1
        seen[joint, context] = True
    slab = np.full(n_kinds, joint, dtype=np.int64)  # where each kind's counts are
    for step in range(len(plan)):
        k, finer = plan[step, 0], plan[step, 1]
        if finer == -2:
            continue
        slab[k] = k
        source = joint if finer == -1 else slab[finer]
        for context in np.flatnonzero(seen[source]):
            fields = ((context >> 2) // 289, (context >> 2) // 17 % 17, (context >> 2) % 17)
            a = fields[0] if uses[k, 0] else NONE
            b = fields[1] if uses[k, 1] else NONE
            c = fields[2] if uses[k, 2] else NONE
            target = (((a * 17 + b) * 17 + c) << 2) | (context & 3)
            seen[k, target] = True
            for digit in range(16):
                counts[k, target, digit] += counts[source, context, digit]
    bits, zero_bits = np.zeros(n_kinds), 0.0
    for k in range(n_kinds):
        for context in np.flatnonzero(seen[slab[k]]):  # ascending: a fixed summation order
            total = 0
            for digit in range(16):
                total += counts[slab[k], context, digit]
            row_bits = totals_table[total]
            for digit in range(16):
                row_bits -= counts_table[counts[slab[k], context, digit]]
            bits[k] += row_bits
            if uses[k, 0] + uses[k, 1] + uses[k, 2] == 0 and context & 2:
                zero_bits += row_bits
    for s in range(n_kinds + 1):
        for context in np.flatnonzero(seen[s]):
            counts[s, context] = 0
    return bits, zero_bits
