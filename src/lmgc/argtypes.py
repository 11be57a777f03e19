"""argparse ``type`` functions shared by every ``lmgc`` subcommand.

A size or count of 0 would silently mean a default (``chunk_bytes or default``) or fail deep inside
the codec, so argparse rejects it up front, with a message that says what was wrong:

>>> positive_int("3")
3
>>> positive_int("0")
Traceback (most recent call last):
argparse.ArgumentTypeError: must be at least 1, not 0
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["int_at_least", "positive_int", "batch_size"]


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type`` accepting integers of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value

    return parse


positive_int = int_at_least(1)


def batch_size(text: str) -> int | str:
    """``auto`` or a positive integer (``--batch``)."""
    return text if text == "auto" else positive_int(text)
