"""Markdown pieces every evaluation report uses: tables, rates, file labels.

>>> table(["codec", "rate %"], [["gzip", rate_text(91.234, 0.5)], ["lzma", rate_text(None)]])
['| codec | rate % |', '|---|---|', '| gzip | 91.23 ± 0.50 |', '| lzma | — |']
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = ["table", "rate_text", "short_label"]


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A markdown table's lines: header, rule, one line per row."""
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(row) + " |" for row in rows)]


def rate_text(value: float | None, spread: float | None = None) -> str:
    """``12.34``, ``12.34 ± 0.56`` with a spread, ``—`` when nothing was measured."""
    if value is None:
        return "—"
    return f"{value:.2f}" if spread is None else f"{value:.2f} ± {spread:.2f}"


def short_label(path: str) -> str:
    """``folder/file`` (checkpoints of different runs often share file names)."""
    p = Path(path)
    return f"{p.parent.name}/{p.name}" if p.parent.name else p.name
