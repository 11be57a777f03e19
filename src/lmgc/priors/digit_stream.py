"""A range coder that codes hex digits in either direction, and digits with adaptive counts.

The fast context codec (:mod:`lmgc.priors.context`) and the row prediction's side information
(:mod:`lmgc.priors.context_rows`, also read by ``--level max``) code through it: one loop serves
the encoder and the decoder, so the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import constriction
import numpy as np

from ..coder import FAMILY
from ..errors import CorruptDataError
from .context_models import ALPHA

__all__ = ["FIRST_BLOCK", "MAX_BLOCK", "DigitStream", "code_adaptive_blocks"]

FIRST_BLOCK = 16  # adaptive digits: counts are refreshed after 16, 32, 64, ... symbols
MAX_BLOCK = 1 << 16


@dataclass
class DigitStream:
    """One chunk's range coder; ``encoding`` picks the direction, so one loop serves both.

    Digits that no model predicts (:meth:`code_raw`) bypass the coder: the encoder collects them
    in ``raw``, the decoder takes them in order from ``raw`` (given whole, ``int32``)."""

    coder: object
    encoding: bool
    raw: list | np.ndarray = field(default_factory=list)
    _taken: int = field(default=0, init=False)

    def code_rows(self, digits: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Code one digit per row of unnormalized probabilities; returns the digits."""
        if not self.encoding:
            return self.coder.decode(FAMILY, rows)
        self.coder.encode(digits, FAMILY, rows)
        return digits

    def code_fixed(self, digits: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Code ``len(digits)`` digits with one distribution (unnormalized ``weights``)."""
        model = constriction.stream.model.Categorical(weights, perfect=False)
        if not self.encoding:
            return self.coder.decode(model, len(digits))
        self.coder.encode(digits, model)
        return digits

    def code_raw(self, digits: np.ndarray) -> np.ndarray:
        """Store ``len(digits)`` digits as they are (4 bits each, beside the coded part)."""
        if self.encoding:
            self.raw.append(np.array(digits, dtype=np.uint8))
            return digits
        stop = self._taken + len(digits)
        if stop > len(self.raw):
            raise CorruptDataError(f"chunk payload stores {len(self.raw)} raw digits; decoding needs more")
        digits[:] = self.raw[self._taken : stop]
        self._taken = stop
        return digits

    def raw_left(self) -> int:
        """Stored raw digits not taken (decoding): a well-formed chunk leaves none."""
        return len(self.raw) - self._taken


def code_adaptive_blocks(stream: DigitStream, digits: np.ndarray, alphabet: int = 16) -> np.ndarray:
    """Digits (of ``alphabet`` values) sharing one context, with counts refreshed after blocks of
    16, 32, 64, ... (in place when decoding)."""
    counts = np.full(alphabet, ALPHA)
    start, size = 0, FIRST_BLOCK
    while start < len(digits):
        stop = min(len(digits), start + size)
        digits[start:stop] = stream.code_fixed(digits[start:stop], counts)
        counts = counts + np.bincount(digits[start:stop], minlength=alphabet)
        start, size = stop, min(2 * size, MAX_BLOCK)
    return digits
