"""The priors and their registry: a user's name (``--prior``) or a recorded kind -> the class.

Adding a prior is one module implementing :class:`~lmgc.priors.base.Prior` plus one line in
:data:`PRIORS` (or in :data:`LEVELS`, for another speed/ratio level of a name that exists). A new
version of a prior takes the name; the old class moves to :data:`DECODE_ONLY`, so its files still
decode (:func:`recorded_class` picks the class by the recorded kind and version).
"""

from __future__ import annotations

from ..errors import CorruptDataError, InputError, UnsupportedVersionError
from .base import Coded, ModelLoader, Prior
from .cm import (
    ContextMixingPrior, ContextMixingPriorV1, ContextMixingPriorV2, ContextMixingPriorV3, ContextMixingPriorV4,
    ContextMixingPriorV5, ContextMixingPriorV6,
)  # fmt: skip
from .context import ContextPrior
from .hybrid import HybridPrior, HybridPriorV1, HybridPriorV3
from .llm import LLMPrior, NibblePrior
from .token_hybrid import TokenHybridPrior

__all__ = ["PRIORS", "LEVELS", "DECODE_ONLY", "Prior", "Coded", "ModelLoader", "prior_class",
           "recorded_class", "LLMPrior", "NibblePrior", "TokenHybridPrior", "HybridPrior", "ContextPrior"]  # fmt: skip

#: ``llm``: the paper's token mode; ``nibble``: one hex digit per LLM step; ``hybrid``: nibble
#: mode mixed with structural context models per digit (version 4); ``token-hybrid``: token mode
#: mixed with them per token (version 2 of the same kind; measured larger, see its module);
#: ``context``: the context models alone (no LLM).
PRIORS: dict[str, type[Prior]] = {
    cls.name: cls for cls in (LLMPrior, NibblePrior, HybridPrior, TokenHybridPrior, ContextPrior)}

#: ``(name, level) -> class`` for names offered at several levels (``--level``), like zstd's;
#: ``PRIORS[name]`` is the default level. Each level records its own kind in the header.
LEVELS: dict[tuple[str, str], type[Prior]] = {("context", "fast"): ContextPrior, ("context", "max"): ContextMixingPrior}

#: Earlier versions of a prior: new files no longer use them, files that recorded them decode.
#: (``hybrid`` versions 1 and 3: without the encoder's chosen kinds and the averaging, version 1
#: also without the guard on random digit positions; ``context-cm`` version 1:
#: the context-mixing model before the plane model, the second mixer and the later bytes' model.)
DECODE_ONLY: tuple[type[Prior], ...] = (HybridPriorV3, HybridPriorV1, ContextMixingPriorV6, ContextMixingPriorV5,
                                         ContextMixingPriorV4, ContextMixingPriorV3, ContextMixingPriorV2,
                                         ContextMixingPriorV1)  # fmt: skip


def prior_class(name: str, level: str | None = None) -> type[Prior]:
    """The prior a user names (at ``level``, default the name's default); InputError naming the
    valid ones otherwise."""
    try:
        cls = PRIORS[name]
    except (KeyError, TypeError):
        raise InputError(f"unknown prior {name!r}; valid: {', '.join(PRIORS)}") from None
    if level is None:
        return cls
    levels = {lvl: c for (n, lvl), c in LEVELS.items() if n == name}
    if level not in levels:
        valid = ", ".join(levels) or "none (it has one level)"
        raise InputError(f"prior {name!r} has no level {level!r}; valid: {valid}")
    return levels[level]


def recorded_class(recorded) -> type[Prior]:
    """The prior class of a recorded (untrusted, not yet checked) prior identity: by its kind and,
    for a kind with several versions, its version. CorruptDataError for a kind this lmgc does not
    know, UnsupportedVersionError for a version it does not."""
    kind = recorded.get("kind") if isinstance(recorded, dict) else None
    versions = [cls for cls in dict.fromkeys((*PRIORS.values(), *LEVELS.values(), *DECODE_ONLY)) if cls.kind == kind]
    if not versions:
        raise CorruptDataError(f"lmgc header is corrupt: unknown prior kind {kind!r}")
    if len(versions) == 1:
        return versions[0]
    version = recorded.get("version")
    for cls in versions:
        if type(version) is int and version == cls.version:
            return cls
    known = ", ".join(str(v) for v in sorted(cls.version for cls in versions))
    raise UnsupportedVersionError(f"{kind} prior version {version!r} is not one this lmgc decodes ({known}): "
                                  "the file comes from a newer lmgc, or its header is corrupt")


def compile_kernels() -> None:
    """Compile (or load from numba's cache) every kernel the context codecs use, by coding a
    small gradient-like tensor with both levels and with every fast kind: otherwise the first
    file a process codes pays it (measured: 7 s for ``fast``, 16 s for ``max`` with an empty
    cache). The set-up script runs it once; benchmarks run it before timing."""
    import numpy as np

    from ..api import compress, decompress

    rng = np.random.default_rng(0)  # rows nearly scaled copies, and zeros: rows, zr and lanes
    sample = (np.outer(rng.normal(size=64), rng.normal(size=64)) * (rng.random((64, 64)) < 0.7)).astype(np.float32)
    every_kind = ContextPrior(["zP", "s2", "zd", "z", "zr", "raw", "zr", "zr"])
    for prior in (every_kind, ContextPrior.create(), ContextMixingPrior.create()):
        decompress(compress([sample], prior=prior))
    # the kind choice counts in 16 bits up to 65,535 values, in 32 above: compile both
    compress(rng.normal(size=70_000).astype(np.float32), prior=ContextPrior.create())
