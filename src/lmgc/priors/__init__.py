"""The priors and their registry: a user's name (``--prior``) or a recorded kind -> the class.

Adding a prior is one module implementing :class:`~lmgc.priors.base.Prior` plus one line in
:data:`PRIORS`.
"""

from __future__ import annotations

from ..errors import CorruptDataError, InputError
from .base import Coded, ModelLoader, Prior
from .context import ContextPrior
from .hybrid import HybridPrior
from .llm import LLMPrior, NibblePrior

__all__ = ["PRIORS", "Prior", "Coded", "ModelLoader", "prior_class", "recorded_class",
           "LLMPrior", "NibblePrior", "HybridPrior", "ContextPrior"]  # fmt: skip

#: ``llm``: the paper's token mode; ``nibble``: one hex digit per LLM step; ``hybrid``: nibble
#: mode mixed with structural context models; ``context``: the context models alone (no LLM).
PRIORS: dict[str, type[Prior]] = {cls.name: cls for cls in (LLMPrior, NibblePrior, HybridPrior, ContextPrior)}


def prior_class(name: str) -> type[Prior]:
    """The prior a user names; InputError naming the valid ones otherwise."""
    try:
        return PRIORS[name]
    except (KeyError, TypeError):
        raise InputError(f"unknown prior {name!r}; valid: {', '.join(PRIORS)}") from None


def recorded_class(kind: str) -> type[Prior]:
    """The prior a header records; CorruptDataError for a kind this lmgc does not know."""
    for cls in PRIORS.values():
        if cls.kind == kind:
            return cls
    raise CorruptDataError(f"lmgc header is corrupt: unknown prior kind {kind!r}")
