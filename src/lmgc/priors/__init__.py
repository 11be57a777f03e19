"""The priors and their registry: a user's name (``--prior``) or a recorded kind -> the class.

Adding a prior is one module implementing :class:`~lmgc.priors.base.Prior` plus one line in
:data:`PRIORS` (or in :data:`LEVELS`, for another speed/ratio level of a name that exists).
"""

from __future__ import annotations

from ..errors import CorruptDataError, InputError
from .base import Coded, ModelLoader, Prior
from .cm import ContextMixingPrior
from .context import ContextPrior
from .hybrid import HybridPrior
from .llm import LLMPrior, NibblePrior

__all__ = ["PRIORS", "LEVELS", "Prior", "Coded", "ModelLoader", "prior_class", "recorded_class",
           "LLMPrior", "NibblePrior", "HybridPrior", "ContextPrior"]  # fmt: skip

#: ``llm``: the paper's token mode; ``nibble``: one hex digit per LLM step; ``hybrid``: nibble
#: mode mixed with structural context models; ``context``: the context models alone (no LLM).
PRIORS: dict[str, type[Prior]] = {cls.name: cls for cls in (LLMPrior, NibblePrior, HybridPrior, ContextPrior)}

#: ``(name, level) -> class`` for names offered at several levels (``--level``), like zstd's;
#: ``PRIORS[name]`` is the default level. Each level records its own kind in the header.
LEVELS: dict[tuple[str, str], type[Prior]] = {("context", "fast"): ContextPrior, ("context", "max"): ContextMixingPrior}


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


def recorded_class(kind: str) -> type[Prior]:
    """The prior a header records; CorruptDataError for a kind this lmgc does not know."""
    for cls in (*PRIORS.values(), *LEVELS.values()):
        if cls.kind == kind:
            return cls
    raise CorruptDataError(f"lmgc header is corrupt: unknown prior kind {kind!r}")
