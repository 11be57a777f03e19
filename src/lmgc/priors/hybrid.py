"""The hybrid prior (``--prior hybrid``): the LLM in nibble mode mixed with structural context
models, per digit.

The LLM knows text and numbers; it does not know that digit 0 of a float holds the sign, that
neighbouring values share exponents, or that the low digits are noise. The context models of
:mod:`lmgc.priors.context_models` know exactly that. Each step, the LLM's distribution of the next
hex digit and the context models' are mixed by :class:`~lmgc.priors.mixer.GeometricMixer`, with
weights learned online per digit position (and "value zero so far"). Counts and weights live in
the stream, so they keep learning across all batches of one input, in the order both encoder and
decoder visit them.

Version 4 (this one) makes the hybrid at least as good as the context models alone, which version
3 was not on dense gradients (``--prior context`` was 0.1-0.7% smaller on 4 KB windows): there the
LLM adds nothing the counts do not know, and mixing it costs learning.

- Like ``--prior context``, the encoder chooses a context kind per digit position from the whole
  input (:func:`~lmgc.priors.context_models.choose_kinds`) and records it. A position it stores
  raw is coded uniformly; the chosen kind joins the mixed experts elsewhere.
- Three predictions of each digit are averaged, Bayes-style, per mixing context: uniform, the
  context models mixed without the LLM, and with it. Each weighs 2^-(its code length there so
  far), so the average costs at most log2(3) bits per mixing context more than the best of the
  three would have (it replaces version 3's guard, which switched between the first and last).
- Counts start at 1/8 per digit instead of 1/2: sparse contexts (``s2`` has 9826 per position)
  then learn from their first digits (measured 0.05 point smaller on ConvNet windows).

Measured on 12 windows of 4 KB from six gradient and weight files (``benchmarks/results/hybrid.md``):
smaller than every codec without an LLM on each window, 0.950x the best of them on ResNet-18 and
0.989-0.999x on the dense files; version 3 was 0.1-0.7% larger than ``--prior context`` there.

Version 3 (the guard: a position is coded uniformly while the mixture has cost it more than 4 bits
a digit) and version 1 (no guard) stay so that their files decode (:class:`HybridPriorV3`,
:class:`HybridPriorV1`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import SerializationError
from ..schema import corrupt, mapping
from ..serialize import Serialization
from .base import Coded, MixedLLMPrior, ModelLoader, SteppedPrior
from .context_models import (
    ALPHA, N_STRUCTURED, NONE, RAW, CountTable, check_digit_contexts, choose_kinds, kind_context, value_digits,
)  # fmt: skip
from .llm import NibblePrior
from .mixer import GeometricMixer

__all__ = ["HybridPrior", "HybridPriorV3", "HybridPriorV1", "LEARNING_RATE"]

LEARNING_RATE = 0.005


class HybridPrior(MixedLLMPrior):
    """LLM (nibble mode) + structural context models, mixed online. Alphabet: 16 hex digits.

    Args:
        llm: the nibble-mode LLM prior.
        learning_rate: the mixers' step.
        kinds: a context kind per digit of a value; ``None`` lets the encoder choose them from
            the input (and record them), as ``--prior context`` does.
    """

    name = kind = "hybrid"
    version = 4
    alphabet_size = 16
    #: context kinds always mixed with the LLM (see :data:`~lmgc.priors.context_models.KINDS`)
    experts: tuple[str, ...] = ("s2", "zP", "zd", "z")
    alpha = 0.125  # the count every digit starts with
    averaged = True  # version 4's chosen kinds and averaging (see the module docstring)
    guarded = False  # version 3's guard

    def __init__(self, llm: NibblePrior, learning_rate: float = LEARNING_RATE,
                 kinds: Sequence[str] | None = None) -> None:  # fmt: skip
        self.llm = llm
        self.learning_rate = learning_rate
        self.kinds = None if kinds is None else list(kinds)

    @classmethod
    def create(cls, serialization: Serialization, threads: int, load) -> HybridPrior:
        return cls(NibblePrior.create(serialization, threads, load))

    @classmethod
    def from_identity(cls, recorded: dict, serialization: Serialization, load: ModelLoader) -> HybridPrior:
        llm = NibblePrior.from_identity(recorded["llm"], serialization, load)
        return cls(llm, recorded["learning_rate"], recorded.get("digit_contexts"))

    @classmethod
    def check_identity(cls, recorded, group: int) -> dict:
        """The recorded identity's schema (:func:`lmgc.priors.recorded_class` has picked this class by
        its version; early version-1 files also stored the experts and the count prior, which
        belong to the version and must be this lmgc's)."""
        legacy = {"experts": list(cls.experts), "alpha": cls.alpha}
        fields = {"kind", "version", "llm", "learning_rate"} | ({"digit_contexts"} if cls.averaged else set())
        mapping(recorded, "hybrid prior", fields, set(legacy) if cls.version == 1 else set())
        if any(recorded.get(key, value) != value for key, value in legacy.items()):
            raise corrupt("hybrid prior experts are not this lmgc's", recorded)
        rate = recorded["learning_rate"]
        if not isinstance(rate, float) or not 0 < rate < 1:
            raise corrupt("hybrid learning_rate must be a float in (0, 1)", rate)
        NibblePrior.check_identity(recorded["llm"], group)
        if cls.averaged:
            check_digit_contexts(recorded["digit_contexts"], group)
        return {key: recorded[key] for key in fields}

    @classmethod
    def environment(cls, identity: dict) -> dict:
        return NibblePrior.environment(identity["llm"])

    @classmethod
    def describe(cls, identity: dict) -> list[tuple[str, str]]:
        (label, llm), *rest = NibblePrior.describe(identity["llm"])
        chosen = f", digit contexts {' '.join(identity['digit_contexts'])}" if cls.averaged else ""
        guard = ", random digit positions coded uniformly" if cls.guarded else ""
        return [(label, f"hybrid v{cls.version}: {llm}, mixed with context models "
                        f"{', '.join(cls.experts)}{chosen}{guard}"), *rest]  # fmt: skip

    def identity(self) -> dict:
        """The experts, count prior and averaging belong to ``version``: changing them needs a new one."""
        identity = {"kind": self.kind, "version": self.version, "llm": self.llm.identity(),
                    "learning_rate": self.learning_rate}  # fmt: skip
        return identity | ({"digit_contexts": self.kinds} if self.averaged else {})

    def encode(self, stream: bytes, chunks: Sequence[bytes], group: int, batch: int, progress: bool) -> Coded:
        """Chooses the context kinds for this input unless fixed (the choice is recorded), so one
        prior object serves many inputs."""
        prior = self
        if self.averaged and self.kinds is None:
            prior = type(self)(self.llm, self.learning_rate, choose_kinds(value_digits(stream, group)[0]))
        return SteppedPrior.encode(prior, stream, chunks, group, batch, progress)

    def stream(self, group: int) -> _HybridStream:
        if self.averaged and (self.kinds is None or len(self.kinds) != 2 * group):
            raise SerializationError(f"the hybrid needs a context kind for each of the {2 * group} digits of a value")
        return _HybridStream(self, group)


class _HybridStream:
    """Context counts, mixer weights and averaging weights for one input, shared by its batches
    in order."""

    def __init__(self, prior: HybridPrior, group: int) -> None:
        self.llm = prior.llm.stream(group)
        self.max_symbols = self.llm.max_symbols
        self.width = 2 * group
        self.experts = list(prior.experts)
        self.chosen = prior.kinds if prior.averaged else [None] * self.width
        kinds = dict.fromkeys([*self.experts, *(k for k in self.chosen if k not in (None, RAW))])
        self.tables = {kind: CountTable(self.width * N_STRUCTURED, prior.alpha) for kind in kinds}
        n_mixed = len(self.experts) + prior.averaged  # version 4 mixes the chosen kind too
        contexts = 2 * self.width
        self.mixer = GeometricMixer(1 + n_mixed, contexts, prior.learning_rate)
        self.counts_mixer = GeometricMixer(n_mixed, contexts, prior.learning_rate) if prior.averaged else None
        #: version 4, per mixing context: log2 of each prediction's probability of the digits so far
        self.log_weights = np.zeros((contexts, 3)) if prior.averaged else None
        #: version 3, per digit position: the mixture's code length there so far minus 4 bits a digit
        self.excess = np.zeros(self.width) if prior.guarded else None

    def open(self, lengths: Sequence[int]) -> _HybridSession:
        return _HybridSession(self, lengths)


class _HybridSession:
    """One batch: per chunk, the digits of the current and the two previous values."""

    def __init__(self, stream: _HybridStream, lengths: Sequence[int]) -> None:
        self._stream = stream
        self._llm = stream.llm.open(lengths)
        self._lengths = np.asarray(lengths)
        batch, width = len(lengths), stream.width
        self._value = np.zeros((batch, width), dtype=np.int64)
        self._previous = np.full((batch, width), NONE, dtype=np.int64)
        self._previous2 = self._previous.copy()
        self._contexts: dict[str, np.ndarray] = {}  # empty at a digit position stored raw
        self._mixing_contexts = np.zeros(batch, dtype=np.int64)
        self._predictions = np.empty((batch, 1, 16))
        self._t = 0

    def _learn(self, symbols: np.ndarray) -> None:
        """Update counts, mixers, averaging or guard and value state with the last step's digits."""
        stream, t = self._stream, self._t - 1
        rows = np.flatnonzero(t < self._lengths)
        p = t % stream.width
        if self._contexts:
            for kind, contexts in self._contexts.items():
                stream.tables[kind].update(contexts[rows], symbols[rows])
            stream.mixer.update(symbols, rows)
            coded = np.maximum(self._predictions[rows, :, symbols[rows]], 1e-300)  # a 0 would make the sum infinite
            if stream.log_weights is not None:
                stream.counts_mixer.update(symbols, rows)
                np.add.at(stream.log_weights, self._mixing_contexts[rows], np.log2(coded))
                stream.log_weights -= stream.log_weights.max(axis=1, keepdims=True)
            if stream.excess is not None:
                stream.excess[p] -= np.log2(coded[:, -1]).sum() + 4.0 * len(rows)
        self._value[:, p] = symbols
        if p == stream.width - 1:
            self._previous2, self._previous = self._previous, self._value.copy()

    def step(self, symbols: np.ndarray | None) -> np.ndarray:
        stream = self._stream
        if symbols is not None:
            self._learn(symbols)
        llm = self._llm.step(symbols)
        p = self._t % stream.width
        self._t += 1
        batch = len(self._lengths)
        uniform = np.full((batch, 16), 1.0 / 16)
        chosen = stream.chosen[p]
        if chosen == RAW:
            self._contexts = {}
            return uniform
        d1 = self._value[:, p - 1] if p else np.full(batch, NONE)
        zero = (self._value[:, :p] == 0).all(axis=1).astype(np.int64)
        kinds = stream.experts + ([] if chosen is None else [chosen])  # a kind may be both
        self._contexts = {kind: kind_context(kind, p, d1, self._previous[:, p], self._previous2[:, p], zero)
                          for kind in kinds}  # fmt: skip
        models = []
        for kind in kinds:
            rows = stream.tables[kind].rows(self._contexts[kind]).astype(np.float64)
            models.append(rows / rows.sum(axis=1, keepdims=True))
        self._mixing_contexts = 2 * p + zero
        mixed = stream.mixer.mix(np.stack([llm, *models], axis=1), self._mixing_contexts)
        if stream.log_weights is None:
            self._predictions = mixed[:, None, :]
            return uniform if stream.excess is not None and stream.excess[p] > 0 else mixed
        counts = stream.counts_mixer.mix(np.stack(models, axis=1), self._mixing_contexts)
        self._predictions = np.stack([uniform, counts, mixed], axis=1)
        weights = np.exp2(stream.log_weights[self._mixing_contexts])
        weights /= weights.sum(axis=1, keepdims=True)
        return (weights[:, :, None] * self._predictions).sum(axis=1)


class HybridPriorV3(HybridPrior):
    """Version 3: the LLM and three context models mixed, and the guard. Its files decode
    (:data:`lmgc.priors.DECODE_ONLY`); it encodes only when built directly."""

    version = 3
    experts = ("s2", "zP", "zd")
    alpha = ALPHA
    averaged = False
    guarded = True


class HybridPriorV1(HybridPriorV3):
    """Version 1: version 3 without the guard."""

    version = 1
    guarded = False
