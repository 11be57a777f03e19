"""The *direct way* of :mod:`lmgc.priors.cm_model`: a bit coded straight from one adaptive
probability per context (an exponent) and bit, without mixers or APMs, kept in the order-0
model's table. The later, near-random mantissa bytes are always coded so (from model version 2);
from model version 5 the second byte's last four bits are, where a *trial* finds it cheaper than
the whole model (:func:`low_bits_mode`). Integer arithmetic only, as the rest of the model.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .cm import CFG_VERSION
from .cm_arith import COST, mix_hash, train_counter
from .cm_contexts import DS, ORDER0, PF, ROW

ORDER0_LIMIT = 1023  # count limit of the direct way's probabilities (and the order-0 model's)
#: Version 5's trial (see :mod:`~lmgc.priors.cm_model`) is the first ``1/TRIAL_SHARE`` of each
#: lane's values (the lanes' first eighths are spread over the whole chunk); the direct way must be
#: ``2**-TRIAL_MARGIN`` (0.1%) cheaper there to be chosen, as the full model goes on learning
#: longer: on initial weights the trial favoured the direct way by 0.02% and the whole file the
#: full model by 0.03%. Measured on 17 gradient files: the direct way on the six dense
#: ConvNet-128 and VGG-16 ones (trial 0.11-0.31% cheaper; whole files 0.004-0.006 bit per
#: value smaller than version 4's), the full model on the ViT and ResNet-18 ones (the direct
#: way up to 0.27% dearer) and on the 87 KB ConvNet-32 ones, where it saw too little to learn.
TRIAL_SHARE, TRIAL_MARGIN = 8, 10
LOW_TRIAL, LOW_FULL, LOW_DIRECT = 0, 1, 2  # how a step's bits are coded (``trial[CHOICE]``)
FULL_COST, DIRECT_COST, CHOICE = 0, 1, 2  # the trial's state: each way's code length, the choice


@njit(cache=True)
def low_bits_mode(cfg, trial, t, bpos, bit):
    """How bit ``bit`` of byte ``bpos`` of the lanes' value ``t`` is coded: LOW_FULL (every bit
    but version 5's second-byte low bits), or for those LOW_TRIAL (the full model codes, the
    direct way is scored beside it) until ``t`` leaves the trial, then the way it chose."""
    if cfg[CFG_VERSION] < 5 or bpos != 1 or bit < 4:
        return LOW_FULL
    if trial[CHOICE] == LOW_TRIAL and t >= cfg[2] // TRIAL_SHARE:
        cheaper = trial[DIRECT_COST] + (trial[FULL_COST] >> TRIAL_MARGIN) < trial[FULL_COST]
        trial[CHOICE] = LOW_DIRECT if cheaper else LOW_FULL
    return trial[CHOICE]


@njit(cache=True)
def direct_slot(context, bit, table_bits, mask):
    """The slot of a bit coded the direct way (one adaptive probability per ``context`` and
    bit, the partial byte no context), in the order-0 model's table."""
    base = mix_hash(context, 4096 + (bit >> 2)) & mask
    return (np.int64(ORDER0) << table_bits) + base + (bit & 3)


@njit(cache=True)
def low_bits_context(vals, lane, j, c0, bit):
    """The direct way's context of a second-byte low bit: the exponent (whose last bit is the
    byte's first), apart from the later bytes' contexts."""
    exponent = ((np.int64(vals[lane[j, ROW], 0]) & 0x7F) << 1) | ((c0 >> (bit - 1)) & 1)
    return mix_hash(256 + exponent, ORDER0)


@njit(cache=True)
def score_trial(tables, lane, j, trial, y):
    """Add each way's code length of lane ``j``'s bit ``y`` to the trial; train the direct way."""
    full, direct = lane[j, PF], min(4095, max(1, np.int64(tables[lane[j, DS]] >> 20)))
    trial[FULL_COST] += COST[full if y else 4096 - full]
    trial[DIRECT_COST] += COST[direct if y else 4096 - direct]
    train_counter(tables, lane[j, DS], y, ORDER0_LIMIT)
