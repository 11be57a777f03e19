"""Stage 2: the prior protocol. Every way lmgc predicts data is a :class:`Prior`.

A prior codes the chunks of one input into payloads and decodes them back, records an identity
that must match on both sides, says which numerical environment its bits depend on, and is
rebuilt from a recorded identity with a model the *caller* supplies (a file never chooses one).
:mod:`lmgc.api` and :mod:`lmgc.decoder` know nothing else about priors; the registry in
:mod:`lmgc.priors` maps user names and recorded kinds to the classes.

Most priors are *stepped*: they turn bytes into symbols and give a distribution for each next
symbol, driven in lockstep by :mod:`lmgc.codec` (``stream = prior.stream(group)`` once per input,
``session = stream.open(lengths)`` per batch, ``session.step(previous symbols)``). Encoder and
decoder call exactly the same sequence of steps with the same inputs, which is what makes an
LLM's floating-point output reproducible on both sides. :class:`SteppedPrior` turns any such
model into a :class:`Prior`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Protocol

import numpy as np

from ..codec import RateMeter, decode_symbols, encode_symbols, progress_bar
from ..errors import CorruptDataError

if TYPE_CHECKING:
    from ..models import LanguageModel
    from ..serialize import Serialization

__all__ = ["Prior", "Coded", "ModelLoader", "encode_input", "SteppedPrior", "MixedLLMPrior", "PriorStream", "PriorSession",
           "check_two_symbols_per_byte", "state_bytes"]  # fmt: skip

#: Given the recorded LLM identity, the model the caller allows for it (or an error).
ModelLoader = Callable[[dict], "LanguageModel"]


@dataclass(frozen=True)
class Coded:
    """One input's coded chunks and what the header records about how they were coded."""

    payloads: list[bytes]
    n_symbols: list[int]
    identity: dict
    header_fields: dict = field(default_factory=dict)  # e.g. the ideal code length


class Prior(Protocol):
    """What the container needs from a prior (see the module docstring)."""

    name: ClassVar[str]  # the user's name for it: --prior NAME
    kind: ClassVar[str]  # what the header records
    default_chunk_bytes: ClassVar[int]

    @classmethod
    def create(cls, serialization: Serialization, threads: int, load: Callable[[], LanguageModel]) -> Prior:
        """A prior for encoding; ``load()`` gives the model, called only by priors that need one."""
        ...

    @classmethod
    def from_identity(cls, recorded: dict, serialization: Serialization, load: ModelLoader) -> Prior:
        """The prior a header records (already schema-checked); ModelMismatchError or
        CorruptDataError where this lmgc or the supplied model would decode differently."""
        ...

    @classmethod
    def check_identity(cls, recorded, group: int) -> dict:
        """The schema of a recorded identity read from an untrusted header (CorruptDataError),
        before anything is built or loaded; returns it in this version's form."""
        ...

    @classmethod
    def environment(cls, identity: dict) -> dict:
        """Library versions and kernels that decide this prior's bits."""
        ...

    @classmethod
    def describe(cls, identity: dict) -> list[tuple[str, str]]:
        """``(label, text)`` lines ``lmgc info`` prints about a (checked) recorded identity."""
        ...

    @classmethod
    def check_symbol_counts(cls, n_symbols: Sequence[int], sizes: Sequence[int],
                            serialization: Serialization, group: int) -> None:  # fmt: skip
        """CorruptDataError for symbol counts no chunk of these sizes can have (before any model
        loads)."""
        ...

    def state_bytes(self, chunk_bytes: int, group: int) -> int:
        """Memory the prior holds per chunk of a batch while coding (an LLM's KV cache; 0 for
        none): what the ``auto`` batch size is budgeted by. Optional: a prior without it counts
        as holding none."""
        ...

    def numerics_probe(self, batch: int) -> str:
        """The digest of the probabilities a fixed probe gets at this batch size, for a prior
        whose float kernels may round differently on another machine: recorded as the
        environment's ``numerics`` and checked before decoding (:mod:`lmgc.environment`).
        Optional: a prior without it (integer arithmetic) records none."""
        ...

    def encode(self, stream: bytes, chunks: Sequence[bytes], group: int, batch: int,
               progress: bool) -> Coded:  # fmt: skip
        """Code the chunks of one input (``stream`` is all of it, for priors that fit to it)."""
        ...

    def decode(self, payloads: Sequence[bytes], n_symbols: Sequence[int], sizes: Sequence[int],
               group: int, batch: int, progress: bool) -> list[bytes]:  # fmt: skip
        """The chunks' bytes; SerializationError or any other failure on corrupt payloads."""
        ...


def encode_input(prior: Prior, stream: bytes, chunks: Sequence[bytes], group: int, batch: int, progress: bool,
                 rows: Sequence[tuple[int, int]]) -> Coded:  # fmt: skip
    """``prior.encode``, given the tensors' rows (:func:`~lmgc.priors.context_rows.tensor_rows`)
    where the prior codes with them (``takes_rows``): a hint for the encoder only, decoding
    never needs it, and a prior without the attribute is called as the protocol says."""
    if getattr(prior, "takes_rows", False):
        return prior.encode(stream, chunks, group, batch, progress, rows=rows)
    return prior.encode(stream, chunks, group, batch, progress)


def state_bytes(prior, chunk_bytes: int, group: int) -> int:
    """What ``prior`` holds per chunk of a batch (:meth:`Prior.state_bytes`); 0 for a prior
    without the method (the context models: one model per input; a user's own prior)."""
    method = getattr(prior, "state_bytes", None)
    return method(chunk_bytes, group) if method is not None else 0


def check_two_symbols_per_byte(n_symbols: Sequence[int], sizes: Sequence[int]) -> None:
    """The symbol counts of priors that code one symbol per hex digit."""
    for i, (count, size) in enumerate(zip(n_symbols, sizes)):
        if count != 2 * size:
            raise CorruptDataError(f"chunk {i} claims {count} symbols for {size} bytes")


class PriorSession(Protocol):
    """One lockstep pass over a batch of chunks."""

    def step(self, symbols: np.ndarray | None) -> np.ndarray:
        """Feed the previous symbol of each chunk (``None`` at the start); return (batch, alphabet)
        float64 probabilities of each chunk's next symbol."""
        ...


class PriorStream(Protocol):
    """The prior bound to one input's layout; may carry state from batch to batch."""

    max_symbols: int | None  # longest symbol sequence one chunk may have, None if unbounded
    #: True where a batch's probabilities depend on nothing but its own chunks (no state carried
    #: from batch to batch), so the ranks of a distributed job may split the batches
    #: (:mod:`lmgc.distributed`); absent means False.
    independent_batches: bool

    def open(self, lengths: Sequence[int]) -> PriorSession:
        """A session over a batch of chunks with these symbol counts."""
        ...


class SteppedPrior:
    """:class:`Prior` coding for a symbol model: subclasses give ``symbols``, ``restore``,
    ``stream`` and ``identity``; symbols per chunk are one per hex digit unless overridden."""

    default_chunk_bytes: ClassVar[int] = 1024  # one model context each

    def symbols(self, chunk: bytes, group: int) -> np.ndarray:
        raise NotImplementedError

    def restore(self, symbols: np.ndarray, n_bytes: int, group: int) -> bytes:
        raise NotImplementedError

    def stream(self, group: int) -> PriorStream:
        raise NotImplementedError

    def identity(self) -> dict:
        raise NotImplementedError

    @classmethod
    def check_symbol_counts(cls, n_symbols: Sequence[int], sizes: Sequence[int],
                            serialization: Serialization, group: int) -> None:  # fmt: skip
        check_two_symbols_per_byte(n_symbols, sizes)

    def encode(self, stream: bytes, chunks: Sequence[bytes], group: int, batch: int,
               progress: bool) -> Coded:  # fmt: skip
        symbols = [self.symbols(chunk, group) for chunk in chunks]
        sizes = [len(chunk) for chunk in chunks]
        with progress_bar(sum(map(len, symbols)), "compress", progress) as bar:
            encoded = encode_symbols(self.stream(group), symbols, sizes, batch, RateMeter(bar))
        return Coded([e.payload for e in encoded], [e.n_symbols for e in encoded], self.identity(),
                     {"ideal_bits": sum(e.ideal_bits for e in encoded)})  # fmt: skip

    def decode(self, payloads: Sequence[bytes], n_symbols: Sequence[int], sizes: Sequence[int],
               group: int, batch: int, progress: bool) -> list[bytes]:  # fmt: skip
        stream = self.stream(group)
        if stream.max_symbols is not None and max(n_symbols, default=0) > stream.max_symbols:
            raise CorruptDataError(f"a chunk claims more symbols than the model's context ({stream.max_symbols})")
        with progress_bar(sum(n_symbols), "decompress", progress) as bar:
            symbols = decode_symbols(stream, payloads, n_symbols, sizes, batch, RateMeter(bar))
        return [self.restore(decoded, size, group) for decoded, size in zip(symbols, sizes)]


class MixedLLMPrior(SteppedPrior):
    """A stepped prior that codes the symbols of the LLM prior it holds as ``self.llm`` (mixing
    other models into its probabilities): symbols, threads, model and per-chunk state are that
    LLM's."""

    llm: SteppedPrior

    @property
    def threads(self) -> int:
        return self.llm.threads

    @property
    def lm(self) -> LanguageModel:
        return self.llm.lm

    def numerics_probe(self, batch: int) -> str:
        """The LLM's arithmetic decides the mixture's: its probe is the prior's."""
        return self.llm.numerics_probe(batch)

    def state_bytes(self, chunk_bytes: int, group: int) -> int:
        """The LLM's per-chunk state (its KV cache) sizes the batches; what is mixed in is shared."""
        return self.llm.state_bytes(chunk_bytes, group)

    def symbols(self, chunk: bytes, group: int) -> np.ndarray:
        return self.llm.symbols(chunk, group)

    def restore(self, symbols: np.ndarray, n_bytes: int, group: int) -> bytes:
        return self.llm.restore(symbols, n_bytes, group)
