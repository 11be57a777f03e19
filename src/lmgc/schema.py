"""Field checks for data read from untrusted files: each returns the value or raises
CorruptDataError naming the field (the header's schema in :mod:`lmgc.header`, each prior's
recorded identity in :mod:`lmgc.priors`)."""

from __future__ import annotations

import re
import reprlib

from .errors import CorruptDataError

__all__ = ["corrupt", "integer", "text", "mapping", "SHA256"]

MAX_TEXT = 4096  # characters in a model spec, device or environment value
SHA256 = re.compile(r"[0-9a-f]{64}")


def corrupt(what: str, value) -> CorruptDataError:
    return CorruptDataError(f"lmgc header is corrupt: {what} ({reprlib.repr(value)})")


def integer(value, what: str, low: int = 0, high: int = (1 << 64) - 1) -> int:
    if type(value) is not int or not low <= value <= high:
        raise corrupt(f"{what} must be an integer in [{low}, {high}]", value)
    return value


def text(value, what: str, pattern: re.Pattern | None = None, choices=None) -> str:
    if (not isinstance(value, str) or len(value) > MAX_TEXT
            or (pattern is not None and not pattern.fullmatch(value))
            or (choices is not None and value not in choices)):  # fmt: skip
        raise corrupt(f"bad {what}", value)
    return value


def mapping(value, what: str, required: set[str], optional: set[str] = frozenset()) -> dict:
    if not isinstance(value, dict):
        raise corrupt(f"{what} must be a mapping", value)
    missing, unknown = required - value.keys(), value.keys() - required - optional
    if missing or unknown:
        raise corrupt(f"{what} has missing {sorted(missing)} or unknown {sorted(unknown)} fields", "")
    return value
