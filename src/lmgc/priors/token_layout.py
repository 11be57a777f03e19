"""The digit context models' view of LLM tokens: every candidate token spelled out on the text layout.

Hybrid v2 (:mod:`lmgc.priors.token_hybrid`) codes the token-mode LLM's symbols, while the
structural context models (:mod:`lmgc.priors.context_models`) predict hex digits at known places
in a value. A serialized chunk is periodic: ``2·group`` digits then the separator, period ``L``.
So a token starting at text position ``t`` puts its ``i``-th character at digit position
``(t + i) mod L`` (or on the separator), and whether the token fits there at all (digits where
digits go, the separator's characters where it goes) depends only on the start phase ``t mod L``.
:class:`TokenSpelling` works all of that out once per stream; :meth:`TokenSpelling.digit_contexts`
then gives, for a batch of start positions, the structural context of every character of every
token at once, numpy over (batch, alphabet, characters): the previous digit comes from the
token's own previous character or the coded text, the same digit of the two previous values from
``L`` and ``2L`` characters back (coded text or the token itself), and "value zero so far" from
both. Encoder and decoder compute it from the same coded history, so both see the same numbers.

The tokens' prefixes also form a trie over characters (:meth:`TokenSpelling._trie`): the hybrid
walks it to turn per-character predictions into token probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import SerializationError
from ..serialize import Serialization
from .context_models import NONE, kind_context

__all__ = ["TokenSpelling"]

_HEX = {c: i for i, c in enumerate("0123456789abcdef")}


class TokenSpelling:
    """The alphabet's tokens on the layout of ``serialization`` with ``group`` bytes per value.

    Attributes:
        chars: (alphabet, K + 1) digit codes of each token's characters (``NONE`` for separator
            characters and past the token's end); ``K`` is the longest token that fits anywhere
            (longer tokens, e.g. runs of commas, never fit and are cut: they get no mass anyway).
        lengths: (alphabet,) characters per token (cut at ``K``).
        fits: (L, alphabet) whether a token may start at each phase of the layout.
        positions: (L, K + 1) digit position of character ``i`` of a token starting at each
            phase, ``-1`` on the separator; slot ``K`` serves "just after the token".
        history: characters of coded text a context reaches back (``2L``: two values).
    """

    def __init__(self, texts: Sequence[str], serialization: Serialization, group: int) -> None:
        if serialization.encoding != "hex":
            raise SerializationError(f"the hybrid prior needs a hex serialization, not {serialization.spec!r}")
        self.width = 2 * group
        separator = serialization.separator
        self.period = period = self.width + len(separator)
        layout = [None] * self.width + list(separator)  # None: a digit goes here
        fits = np.array([[all((layout[(phase + i) % period] is None and c in _HEX)
                              or c == layout[(phase + i) % period] for i, c in enumerate(text))
                          for text in texts] for phase in range(period)])  # fmt: skip
        if not fits.any(axis=1).all():
            raise SerializationError(f"the LLM has no token for some place of the {serialization.spec!r} layout")
        usable = fits.any(axis=0)
        self.k = k = max(len(text) for text, ok in zip(texts, usable) if ok)
        self.fits = fits
        self.lengths = np.array([min(len(text), k) for text in texts], dtype=np.int64)
        self.chars = np.full((len(texts), k + 1), NONE, dtype=np.int64)
        for a, text in enumerate(texts):
            for i, c in enumerate(text[:k]):
                self.chars[a, i] = _HEX.get(c, NONE)
        slots = (np.arange(period)[:, None] + np.arange(k + 1)) % period
        self.positions = np.where(slots < self.width, slots, -1)
        #: nonzero[a, j]: characters among the first ``j`` of token ``a`` that are not the digit 0
        self._nonzero = np.concatenate([np.zeros((len(texts), 1), np.int64),
                                        np.cumsum(self.chars != 0, axis=1)], axis=1)  # fmt: skip
        self.history = 2 * period
        self._trie(texts, separator, usable)

    def _trie(self, texts: Sequence[str], separator: str, usable: np.ndarray) -> None:
        """The prefixes of the tokens that fit somewhere, as nodes of a trie over characters.

        Characters are symbols: the 16 hex digits, then the separator's other characters. On the
        layout's separator the one character it holds is expected (``expected``: its symbol at
        each phase and depth, ``-1`` on a digit).
        """
        chars = {c: i for i, c in enumerate(_HEX)} | {
            c: 16 + j for j, c in enumerate(dict.fromkeys(c for c in separator if c not in _HEX))}  # fmt: skip
        self.n_chars = len(chars)
        prefixes = dict.fromkeys(text[:i] for text, ok in zip(texts, usable) if ok for i in range(len(text) + 1))
        node = {prefix: i for i, prefix in enumerate(prefixes)}
        n = len(node)
        self.depth = np.array([len(prefix) for prefix in node], dtype=np.int64)
        #: member[a, u]: token ``a`` starts with prefix ``u`` (its LLM mass counts for ``u``)
        self.member = np.zeros((len(texts), n))
        self.token_node = np.full(len(texts), -1, dtype=np.int64)  # the node a token ends at
        self.node_token = np.full(n, -1, dtype=np.int64)
        self.representative = np.zeros(n, dtype=np.int64)  # a token through each node
        self.child = np.full((n, self.n_chars), n, dtype=np.int64)  # n: no such child
        self.path_nodes = np.zeros((len(texts), self.k), dtype=np.int64)
        self.path_chars = np.zeros((len(texts), self.k), dtype=np.int64)
        for a, text in enumerate(texts):
            if not usable[a]:
                continue
            for i in range(len(text) + 1):
                self.member[a, node[text[:i]]] = 1.0
                self.representative[node[text[:i]]] = a
            for i, c in enumerate(text):
                self.child[node[text[:i]], chars[c]] = node[text[: i + 1]]
                self.path_nodes[a, i], self.path_chars[a, i] = node[text[:i]], chars[c]
            self.token_node[a], self.node_token[node[text]] = node[text], a
        self.path = np.arange(self.k) < np.where(usable, self.lengths, 0)[:, None]
        layout = list(separator)
        slots = (np.arange(self.period)[:, None] + np.arange(self.k + 1)) % self.period
        self.expected = np.where(slots < self.width, -1, [[chars[layout[s - self.width]] if s >= self.width else -1
                                                           for s in row] for row in slots])  # fmt: skip

    def node_shape(self) -> tuple[int, np.ndarray, np.ndarray]:
        """Trie nodes, each node's depth, and a token through each (whose contexts it shares)."""
        return len(self.depth), self.depth, self.representative

    def start(self, batch: int) -> np.ndarray:
        """The coded history of a chunk's start: nothing (``NONE``) to look back at."""
        return np.full((batch, self.history), NONE, dtype=np.int64)

    def digit_contexts(self, history: np.ndarray, phase: np.ndarray, zero: np.ndarray,
                       kinds: Sequence[str]) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:  # fmt: skip
        """Contexts of every token's characters for a batch of chunks.

        Args:
            history: (batch, history) the last coded characters (``NONE`` for separators).
            phase: (batch,) the next character's place in the layout.
            zero: (batch,) whether the current value's coded digits are all 0.
            kinds: context kinds (:data:`~lmgc.priors.context_models.KINDS`).

        Returns:
            a (batch, alphabet, K + 1) context index per kind; a (batch, alphabet, K + 1) mask of
            the characters a digit model predicts (digits inside the token on digit positions);
            (batch, alphabet, K + 1) "value zero so far" at each slot (slot ``length``: after
            the token, the next step's ``zero``).
        """
        batch, h, k, period = len(phase), self.history, self.k, self.period
        alphabet = len(self.chars)
        text = np.concatenate([np.broadcast_to(history[:, None, :], (batch, alphabet, h)),
                               np.broadcast_to(self.chars, (batch, alphabet, k + 1))], axis=2)  # fmt: skip
        p = self.positions[phase][:, None, :]  # (batch, 1, K + 1)
        d1 = np.where(p > 0, text[:, :, h - 1 : h + k], NONE)
        prev = text[:, :, h - period : h - period + k + 1]
        prev2 = text[:, :, h - 2 * period : h - 2 * period + k + 1]
        slot = np.arange(k + 1)
        begins = slot - self.positions[phase]  # slot where the current value began (< 0: before)
        low = np.clip(begins, 0, k + 1)
        clean = self._nonzero[:, slot][None] == self._nonzero[:, low].transpose(1, 0, 2)
        value_zero = clean & ((begins >= 0) | zero[:, None].astype(bool))[:, None, :]
        value_zero |= p < 0  # on the separator the next value starts: nothing to be zero
        place = np.maximum(p, 0)
        contexts = [kind_context(kind, place, d1, prev, prev2, value_zero.astype(np.int64)) for kind in kinds]
        predicted = (p >= 0) & (slot < self.lengths[:, None]) & (self.chars < NONE)
        return contexts, predicted, value_zero

    def advance(self, history: np.ndarray, symbols: np.ndarray) -> np.ndarray:
        """The history after each chunk's token in ``symbols``."""
        text = np.concatenate([history, self.chars[symbols]], axis=1)
        cut = self.lengths[symbols][:, None] + np.arange(self.history)
        return np.take_along_axis(text, cut, axis=1)
