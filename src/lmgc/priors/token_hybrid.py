"""Hybrid v2 (``--prior token-hybrid``): the token-mode LLM mixed with structural context models,
one LLM token per step.

Version 1 (:mod:`lmgc.priors.hybrid`, ``--prior hybrid``) mixes the LLM in nibble mode, which is
weak alone (~118%: spelling ``ab`` as ``a``, ``b`` is not how the model saw hex text). Here the
coded symbols are the token-mode LLM's own (the canonical tokenization of
:class:`~lmgc.priors.llm.LLMPrior`, ~90% alone), so the decoder never has to guess where tokens
end. Measured on the same 4 KB windows of six files, the nibble hybrid is nevertheless smaller
(version 3 by 0.3-2.0 points, ``benchmarks/results/hybrid.md``): mixed, the nibble LLM's
digit-by-digit view of the sign and exponent digits (2.3-3.0 bits per value) beats the token
LLM's (2.8-3.7), whose tokens split values irregularly. So ``hybrid`` is the nibble hybrid and
this one is offered for comparison.

The tokens' prefixes form a trie (:mod:`lmgc.priors.token_layout`); a token is a walk from the
root, one character per node, ending at its own node. At every node the LLM's token distribution
gives the probability of each next character and of ending there (the masses of the tokens below
each child, and of the node's own token); each context kind gives the same outcomes from its digit
distribution at the place in the value the character would take: a character, or "end", which is
"the next character extends no token from here". :class:`~lmgc.priors.mixer.GeometricMixer` mixes
these per node, with weights per digit position and "value zero so far" (and per separator
character), and a token's probability is the product along its walk: a proper distribution over
the alphabet, whatever the weights. Mixing whole-token scores instead (each token scored by the
product of its digits' probabilities) was measured worse (87.9 vs 85.8% on a ConvNet window):
where a token ends is information about the next characters that the context models then never
saw. After each token the counts learn each of its digits in its context, and the mixer each
outcome on the walk. Counts and weights live in the stream, so they keep learning across all
batches of one input, in the order both encoder and decoder visit them (the ranks of a
distributed job cannot split the batches).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import SerializationError
from ..schema import corrupt, mapping
from ..serialize import Serialization
from .base import MixedLLMPrior, ModelLoader
from .context_models import N_STRUCTURED, PLAIN_KINDS, SEQUENTIAL_KINDS, CountTable
from .llm import LLMPrior
from .mixer import GeometricMixer
from .token_layout import TokenSpelling

__all__ = ["TokenHybridPrior", "EXPERTS", "LEARNING_RATE"]

#: Context kinds mixed with the LLM (see :data:`lmgc.priors.context_models.KINDS`) and the mixer's
#: step: chosen on cached LLM steps of 4 KB windows (ConvNet-32, ConvNet-128, ResNet-18): these
#: four at 0.01 beat v1's three at 0.005 by 0.1-0.3 point; one or two kinds, or 0.05, lose.
EXPERTS = ("s2", "zP", "zd", "z")
LEARNING_RATE = 0.01
_TINY = 1e-300  # an LLM mass that underflowed: its tokens keep no probability, nothing divides by 0


class TokenHybridPrior(MixedLLMPrior):
    """Token-mode LLM + structural context models, mixed online over the LLM's token alphabet."""

    name = "token-hybrid"
    kind = "hybrid"
    version = 2

    def __init__(self, llm: LLMPrior, learning_rate: float = LEARNING_RATE,
                 experts: Sequence[str] = EXPERTS) -> None:  # fmt: skip
        self.llm = llm
        self.learning_rate = learning_rate
        self.experts = tuple(experts)
        self.alphabet_size = llm.alphabet_size
        self.texts = [llm.detokenize(np.array([symbol])) for symbol in range(llm.alphabet_size)]
        if llm.serialization.encoding != "hex":
            raise SerializationError(f"the hybrid prior needs a hex serialization, not {llm.serialization.spec!r}")

    @classmethod
    def create(cls, serialization: Serialization, threads: int, load) -> TokenHybridPrior:
        return cls(LLMPrior.create(serialization, threads, load))

    @classmethod
    def from_identity(cls, recorded: dict, serialization: Serialization, load: ModelLoader) -> TokenHybridPrior:
        llm = LLMPrior.from_identity(recorded["llm"], serialization, load)
        return cls(llm, recorded["learning_rate"], recorded["experts"])

    @classmethod
    def check_identity(cls, recorded, group: int) -> dict:
        """The recorded identity's schema: the token-mode LLM's, a learning rate in (0, 1) and
        distinct context kinds (the mixing contexts and the count prior belong to the version)."""
        mapping(recorded, "hybrid prior", {"kind", "version", "llm", "learning_rate", "experts"})
        rate = recorded["learning_rate"]
        if not isinstance(rate, float) or not 0 < rate < 1:
            raise corrupt("hybrid learning_rate must be a float in (0, 1)", rate)
        experts = recorded["experts"]
        kinds = SEQUENTIAL_KINDS | PLAIN_KINDS
        if (not isinstance(experts, list) or not 0 < len(experts) <= len(kinds)
                or any(not isinstance(e, str) or e not in kinds for e in experts)
                or len(set(experts)) != len(experts)):  # fmt: skip
            raise corrupt(f"hybrid experts must be distinct context kinds of {sorted(kinds)}", experts)
        LLMPrior.check_identity(recorded["llm"], group)
        return recorded

    @classmethod
    def environment(cls, identity: dict) -> dict:
        return LLMPrior.environment(identity["llm"])

    @classmethod
    def describe(cls, identity: dict) -> list[tuple[str, str]]:
        (label, llm), *rest = LLMPrior.describe(identity["llm"])
        return [(label, f"hybrid v2: {llm}, mixed per token with context models "
                        f"{', '.join(identity['experts'])}"), *rest]  # fmt: skip

    @classmethod
    def check_symbol_counts(cls, n_symbols, sizes, serialization: Serialization, group: int) -> None:
        LLMPrior.check_symbol_counts(n_symbols, sizes, serialization, group)

    def identity(self) -> dict:
        return {"kind": self.kind, "version": self.version, "llm": self.llm.identity(),
                "learning_rate": self.learning_rate, "experts": list(self.experts)}  # fmt: skip

    def stream(self, group: int) -> _TokenHybridStream:
        return _TokenHybridStream(self, group)


class _TokenHybridStream:
    """Context counts and mixer weights for one input, shared by its batches in order."""

    independent_batches = False

    def __init__(self, prior: TokenHybridPrior, group: int) -> None:
        self.llm = prior.llm.stream(group)
        self.max_symbols = self.llm.max_symbols
        self.spelling = TokenSpelling(prior.texts, prior.llm.serialization, group)
        self.experts = prior.experts
        self.tables = [CountTable(self.spelling.width * N_STRUCTURED) for _ in self.experts]
        self.mixer = GeometricMixer(1 + len(self.experts), self.spelling.width + self.spelling.period,
                                    prior.learning_rate)  # fmt: skip

    def open(self, lengths: Sequence[int]) -> _TokenHybridSession:
        return _TokenHybridSession(self, lengths)


class _TokenHybridSession:
    """One batch: each chunk's text position, its last coded characters and its zero flag."""

    def __init__(self, stream: _TokenHybridStream, lengths: Sequence[int]) -> None:
        self._stream = stream
        self._llm = stream.llm.open(lengths)
        self._lengths = np.asarray(lengths)
        spelling = stream.spelling
        self._history = spelling.start(len(lengths))
        self._position = np.zeros(len(lengths), dtype=np.int64)
        self._zero = np.ones(len(lengths), dtype=bool)
        self._last: tuple[list[np.ndarray], np.ndarray, np.ndarray] | None = None
        self._t = 0

    def _learn(self, symbols: np.ndarray) -> None:
        """Count each digit of the coded tokens in its context, teach the mixer, move on."""
        stream, spelling = self._stream, self._stream.spelling
        contexts, predicted, value_zero = self._last
        rows = np.flatnonzero(self._t - 1 < self._lengths)
        coded = symbols[rows]
        mask = predicted[rows, coded]
        digits = spelling.chars[coded][mask]
        for table, context in zip(stream.tables, contexts):
            table.update(context[rows, coded][mask], digits)
        nodes = len(spelling.depth)  # each node on the token's path saw a character, its own an end
        path = spelling.path[coded]
        flat = (rows[:, None] * nodes + spelling.path_nodes[coded])[path]
        outcome = np.zeros(len(self._lengths) * nodes, dtype=np.int64)
        outcome[flat] = spelling.path_chars[coded][path]
        ends = rows * nodes + spelling.token_node[coded]
        outcome[ends] = spelling.n_chars
        stream.mixer.update(outcome, np.concatenate([flat, ends]))
        self._zero[rows] = value_zero[rows, coded, spelling.lengths[coded]]
        self._history[rows] = spelling.advance(self._history[rows], coded)
        self._position[rows] += spelling.lengths[coded]

    def step(self, symbols: np.ndarray | None) -> np.ndarray:
        stream, spelling = self._stream, self._stream.spelling
        if symbols is not None:
            self._learn(symbols)
        llm = self._llm.step(symbols)
        phase = self._position % spelling.period
        self._last = contexts, _, value_zero = spelling.digit_contexts(self._history, phase, self._zero, stream.experts)
        batch, (nodes, depth, through) = len(phase), spelling.node_shape()
        mass = np.maximum(llm @ spelling.member, _TINY)  # (batch, nodes): LLM mass through each node
        children = np.concatenate([mass, np.zeros((batch, 1))], axis=1)[:, spelling.child]
        ends = np.where(spelling.node_token >= 0, llm[:, spelling.node_token], 0.0)
        experts = [np.concatenate([children, ends[..., None]], axis=2) / mass[..., None]]
        place, expected = spelling.positions[phase][:, depth], spelling.expected[phase][:, depth]
        on_separator, extends = expected >= 0, spelling.child < nodes
        for table, context in zip(stream.tables, contexts):
            rows = table.counts[context[:, through, depth]]
            chars = np.zeros((batch, nodes, spelling.n_chars))
            chars[..., :16] = rows / rows.sum(axis=2, keepdims=True)
            chars[on_separator] = np.eye(spelling.n_chars)[expected[on_separator]]
            experts.append(np.concatenate([chars * extends, (chars * ~extends).sum(axis=2, keepdims=True)], axis=2))
        zero = value_zero[:, through, depth]
        slot = (phase[:, None] + depth) % spelling.period
        mixing = np.where(place >= 0, 2 * place + zero, spelling.width + slot)
        mixed = stream.mixer.mix(np.stack(experts, axis=2).reshape(batch * nodes, len(experts), -1),
                                 mixing.reshape(-1)).reshape(batch, nodes, -1)  # fmt: skip
        self._t += 1
        return _token_probabilities(spelling, phase, mixed)


def _token_probabilities(spelling: TokenSpelling, phase: np.ndarray, mixed: np.ndarray) -> np.ndarray:
    """(batch, alphabet): each token's path through the trie, the probability of its next
    character at every node on the way times that of ending at its own node; tokens that do not
    fit get 0."""
    with np.errstate(divide="ignore"):
        log_mixed = np.log(mixed)
    steps = log_mixed[:, spelling.path_nodes, spelling.path_chars]
    log_p = np.where(spelling.path, steps, 0.0).sum(axis=2) + log_mixed[:, spelling.token_node, -1]
    log_p = np.where(spelling.fits[phase], log_p, -np.inf)
    p = np.exp(log_p - log_p.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)
