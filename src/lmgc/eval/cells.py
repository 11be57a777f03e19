"""The figures of ``lmgc experiments``: one :class:`Cell` per codec, run and setting, and lookups.

The run (:mod:`lmgc.eval.experiments`) makes the cells, ``results.json`` stores them, and the report
and the plots read them back through :class:`Cells`.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .markdown import rate_text

__all__ = ["Cell", "Cells", "cell_text", "column_name"]


@dataclass
class Cell:
    """One figure: a codec's rate % per checkpoint on one run, and how it was measured.

    ``kind``: ``classical`` (round trip checked), ``coded`` (LLM; encoded, decoded, compared;
    rate = coded chunk payloads) or ``estimate`` (LLM; ideal code length, nothing coded).
    ``protocol``: ``whole`` / ``chunked`` files, or ``windows`` (the LLM sample, chunked).
    """

    section: str
    run: str
    setting: str  # what the section varies: serialization, group size, lossy spec, ...
    codec: str
    kind: str
    protocol: str
    data: str  # the bytes measured, in words
    steps: list[int] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)
    status: str = "ok"  # ok, failed, skipped, n/a
    message: str = ""
    container_pct: float | None = None  # coded: the whole .lmgc over the sampled bytes
    symbols_per_chunk: float | None = None  # tokens for the paper's token mode
    seconds: float | None = None

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.rates) if self.rates and self.status == "ok" else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.rates) if len(self.rates) > 1 else None


def cell_text(cell: Cell | None) -> str:
    """``mean ± std`` of a measured cell, else what happened to it (``✗ failed``, ``—``, ...)."""
    if cell is None:
        return "—"
    if cell.status != "ok":
        return {"failed": "✗ failed", "skipped": "skipped", "n/a": "n/a"}.get(cell.status, "—")
    return rate_text(cell.mean, cell.std)


def column_name(cell: Cell) -> str:
    """``codec (protocol)`` for a classical codec, ``LLM (kind)`` for the LLM."""
    if cell.kind == "classical":
        return f"{cell.codec} ({cell.protocol})"
    return f"LLM ({cell.kind})"


class Cells:
    """Lookups over a report's cells."""

    def __init__(self, cells: Iterable[Cell]) -> None:
        self.cells = list(cells)

    def find(self, section: str, **match: Any) -> list[Cell]:
        return [c for c in self.cells if c.section == section
                and all(getattr(c, k) == v for k, v in match.items())]

    def one(self, section: str, **match: Any) -> Cell | None:
        found = self.find(section, **match)
        return found[0] if found else None

    def best(self, section: str, **match: Any) -> Cell | None:
        measured = [c for c in self.find(section, **match) if c.mean is not None]
        return min(measured, key=lambda c: c.mean) if measured else None

    def llm(self, section: str, **match: Any) -> Cell | None:
        """The first LLM (coded or estimated) cell of a section."""
        return next((c for c in self.find(section, **match) if c.kind != "classical"), None)

    def checkpoint_columns(self) -> list[Cell]:
        """The best classical codec per protocol and the LLM, each with a rate per checkpoint."""
        columns = [self.best("checkpoints", kind="classical", protocol=p)
                   for p in ("whole", "chunked")]
        columns += self.find("checkpoints", protocol="windows")
        return [c for c in columns if c is not None and c.rates]
