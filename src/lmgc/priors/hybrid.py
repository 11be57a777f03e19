"""The hybrid prior (``--prior hybrid``): the LLM in nibble mode mixed with structural context
models, per digit.

Version 2 (:mod:`lmgc.priors.token_hybrid`, ``--prior token-hybrid``) mixes the token-mode LLM,
much stronger alone, but measured larger mixed (see its module); this one is the default hybrid.
Version 3 adds a guard per digit position: the low mantissa digits are near-random, and there the
mixture of an LLM and counts still learning costs more than the 4 bits a digit holds (measured
8.01-8.05 bits per byte on dense 4 KB windows). So while the mixture's code length at a position,
summed over the digits coded there so far, exceeds 4 bits a digit, that position is coded
uniformly; the mixture keeps learning and scoring there, and takes over again when it wins.
Version 1 (no guard) stays so that its files decode (:class:`HybridPriorV1`).

The LLM knows text and numbers; it does not know that digit 0 of a float holds the sign, that
neighbouring values share exponents, or that the low digits are noise. The context models of
:mod:`lmgc.context` know exactly that. Each step, the LLM's distribution of the next hex digit and
the context models' distributions are mixed by :class:`~lmgc.mixer.GeometricMixer`, with weights
learned online per digit position (and "value zero so far"). Context counts and mixer weights live
in the stream, so they keep learning across all batches of one input, in the order both encoder
and decoder visit them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..schema import corrupt, mapping
from ..serialize import Serialization
from .base import MixedLLMPrior, ModelLoader
from .context_models import ALPHA, N_STRUCTURED, NONE, CountTable, kind_context
from .llm import NibblePrior
from .mixer import GeometricMixer

__all__ = ["HybridPrior", "HybridPriorV1", "CONTEXT_EXPERTS", "LEARNING_RATE"]

#: Context kinds mixed with the LLM (see :data:`lmgc.context.KINDS`).
CONTEXT_EXPERTS = ("s2", "zP", "zd")
LEARNING_RATE = 0.005


class HybridPrior(MixedLLMPrior):
    """LLM (nibble mode) + structural context models, mixed online. Alphabet: 16 hex digits."""

    name = kind = "hybrid"
    version = 3
    alphabet_size = 16
    guarded = True  # the per-position guard (see the module docstring)

    def __init__(self, llm: NibblePrior, learning_rate: float = LEARNING_RATE) -> None:
        self.llm = llm
        self.learning_rate = learning_rate

    @classmethod
    def create(cls, serialization: Serialization, threads: int, load) -> HybridPrior:
        return cls(NibblePrior.create(serialization, threads, load))

    @classmethod
    def from_identity(cls, recorded: dict, serialization: Serialization, load: ModelLoader) -> HybridPrior:
        return cls(NibblePrior.from_identity(recorded["llm"], serialization, load), recorded["learning_rate"])

    @classmethod
    def check_identity(cls, recorded, group: int) -> dict:
        """The recorded identity's schema (:func:`lmgc.priors.recorded_class` has picked this class by
        its version; early version-1 files also stored the experts and the count prior, which
        belong to the version and must be this lmgc's)."""
        legacy = {"experts": list(CONTEXT_EXPERTS), "alpha": ALPHA}
        mapping(recorded, "hybrid prior", {"kind", "version", "llm", "learning_rate"},
                set(legacy) if cls.version == 1 else set())  # fmt: skip
        if any(recorded.get(key, value) != value for key, value in legacy.items()):
            raise corrupt("hybrid prior experts are not this lmgc's", recorded)
        rate = recorded["learning_rate"]
        if not isinstance(rate, float) or not 0 < rate < 1:
            raise corrupt("hybrid learning_rate must be a float in (0, 1)", rate)
        NibblePrior.check_identity(recorded["llm"], group)
        return {key: recorded[key] for key in ("kind", "version", "llm", "learning_rate")}

    @classmethod
    def environment(cls, identity: dict) -> dict:
        return NibblePrior.environment(identity["llm"])

    @classmethod
    def describe(cls, identity: dict) -> list[tuple[str, str]]:
        (label, llm), *rest = NibblePrior.describe(identity["llm"])
        guard = ", random digit positions coded uniformly" if cls.guarded else ""
        return [(label, f"hybrid v{cls.version}: {llm}, mixed with context models "
                        f"{', '.join(CONTEXT_EXPERTS)}{guard}"), *rest]  # fmt: skip

    def identity(self) -> dict:
        """The experts and the count prior belong to ``version``: changing them needs a new one."""
        return {"kind": self.kind, "version": self.version, "llm": self.llm.identity(),
                "learning_rate": self.learning_rate}  # fmt: skip

    def stream(self, group: int) -> _HybridStream:
        return _HybridStream(self, group)


class _HybridStream:
    """Context counts and mixer weights for one input, shared by its batches in order."""

    def __init__(self, prior: HybridPrior, group: int) -> None:
        self.llm = prior.llm.stream(group)
        self.max_symbols = self.llm.max_symbols
        self.width = 2 * group
        self.tables = [CountTable(self.width * N_STRUCTURED) for _ in CONTEXT_EXPERTS]
        self.mixer = GeometricMixer(1 + len(CONTEXT_EXPERTS), 2 * self.width, prior.learning_rate)
        #: per digit position: the mixture's code length there so far minus 4 bits a digit
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
        self._contexts: list[np.ndarray] = []
        self._mixed = np.empty((batch, 16))
        self._t = 0

    def _learn(self, symbols: np.ndarray) -> None:
        """Update counts, mixer, the guard and value state with the digits coded at the last step."""
        stream, t = self._stream, self._t - 1
        rows = np.flatnonzero(t < self._lengths)
        for table, contexts in zip(stream.tables, self._contexts):
            table.update(contexts[rows], symbols[rows])
        stream.mixer.update(symbols, rows)
        p = t % stream.width
        if stream.excess is not None:
            coded = np.maximum(self._mixed[rows, symbols[rows]], 1e-300)  # a 0 would make the sum infinite
            stream.excess[p] -= np.log2(coded).sum() + 4.0 * len(rows)
        self._value[:, p] = symbols
        if p == stream.width - 1:
            self._previous2, self._previous = self._previous, self._value.copy()

    def step(self, symbols: np.ndarray | None) -> np.ndarray:
        stream = self._stream
        if symbols is not None:
            self._learn(symbols)
        llm = self._llm.step(symbols)
        p = self._t % stream.width
        batch = len(self._lengths)
        d1 = self._value[:, p - 1] if p else np.full(batch, NONE)
        zero = (self._value[:, :p] == 0).all(axis=1).astype(np.int64)
        self._contexts = [kind_context(kind, p, d1, self._previous[:, p], self._previous2[:, p], zero)
                          for kind in CONTEXT_EXPERTS]  # fmt: skip
        experts = [llm]
        for table, contexts in zip(stream.tables, self._contexts):
            rows = table.rows(contexts).astype(np.float64)
            experts.append(rows / rows.sum(axis=1, keepdims=True))
        self._t += 1
        self._mixed = stream.mixer.mix(np.stack(experts, axis=1), 2 * p + zero)
        if stream.excess is not None and stream.excess[p] > 0:
            return np.full_like(self._mixed, 1.0 / 16)
        return self._mixed


class HybridPriorV1(HybridPrior):
    """Version 1: no guard. Its files decode (:data:`lmgc.priors.DECODE_ONLY`); it encodes only
    when built directly."""

    version = 1
    guarded = False
