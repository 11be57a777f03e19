"""The bench's outputs: a markdown table (stdout and bench.md), bench.csv, bench.json, rates.png.

The markdown has one row per file, codec and protocol, then the mean ± std over files per codec
(best in bold), the lossy front-end's sizes and errors when one ran, and notes on codecs that
failed or were skipped.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import OutputExistsError
from .baselines import versions
from .bench import CHUNK_BYTES, PROTOCOLS, BenchResult
from .markdown import rate_text, short_label, table
from .plots import plot_rates

__all__ = ["OUTPUT_NAMES", "format_markdown", "check_outputs_free", "write_outputs"]

OUTPUT_NAMES = ("bench.md", "bench.csv", "bench.json", "rates.png")


def _mark(verified: bool | None) -> str:
    return {True: "✓", False: "✗", None: "—"}[verified]


def _summary_rows(measured: list[BenchResult], with_lossy: bool = False) -> list[list[str]]:
    groups: dict[tuple[str | None, str, str], list[BenchResult]] = {}
    for r in measured:
        groups.setdefault((r.lossy, r.protocol, r.codec), []).append(r)
    best = {}
    for (lossy, protocol, _), rows in groups.items():
        good = [r.rate_pct for r in rows if r.verified]
        if good and len(good) == len(rows):
            best[lossy, protocol] = min(best.get((lossy, protocol), math.inf),
                                        statistics.fmean(good))
    lines = []
    for (lossy, protocol, codec), rows in groups.items():
        good = [r for r in rows if r.verified]
        rates = [r.rate_pct for r in good]
        mean = statistics.fmean(rates) if rates else None
        spread = statistics.stdev(rates) if len(rates) > 1 else None
        text = rate_text(mean, spread)
        if mean is not None and len(good) == len(rows) and mean == best.get((lossy, protocol)):
            text = f"**{text}**"
        speeds = [[r.compress_mbps for r in good if r.compress_mbps],
                  [r.decompress_mbps for r in good if r.decompress_mbps]]
        ok = f"{len(good)}/{len(rows)}"
        lines.append(([lossy or "none"] if with_lossy else []) + [
            protocol, codec, text,
            *(rate_text(statistics.fmean(s)) if s else "—" for s in speeds),
            ("✓ " if len(good) == len(rows) else "✗ ") + ok])
    return lines


def _error_rows(results: Sequence[BenchResult]) -> list[list[str]]:
    seen = dict.fromkeys((r.file, r.lossy) for r in results if r.lossy is not None)
    first = {key: next(r for r in results if (r.file, r.lossy) == key) for key in seen}
    return [[short_label(r.file), f"`{r.lossy}`", f"{r.original_bytes:,}", f"{r.payload_bytes:,}",
             f"{r.side_info_bytes:,}",
             f"{100 * (r.payload_bytes + r.side_info_bytes) / r.original_bytes:.2f}",
             f"{r.max_abs_error:.3g}", f"{r.rel_l2_error:.4f}"] for r in first.values()]


def format_markdown(results: Sequence[BenchResult], chunk_bytes: int = CHUNK_BYTES) -> str:
    """Per-file table, mean ± std over files per codec and protocol, notes on skipped codecs."""
    measured = [r for r in results if r.status in ("ok", "failed") and r.rate_pct is not None]
    sampled = any(r.windows is not None for r in results)
    with_lossy = any(r.lossy is not None for r in results)
    lines = ["## Compression rate (compressed / original × 100, lower is better)", "",
             f"Protocols: **whole** = each file compressed in one call; **chunked** = each "
             f"{chunk_bytes}-byte chunk compressed alone, every chunk's headers counted "
             "(chunk lengths not counted, as in the paper). MB/s = 10^6 input bytes per second.",
             ""]
    if with_lossy:
        specs = ", ".join(f"`{s}`" for s in dict.fromkeys(r.lossy or "none" for r in results))
        lines += [f"Lossy front-end (column *lossy*: {specs}): each file was preprocessed once "
                  "and every codec compressed the same payload (codes, kept values, positions, "
                  "scales); rate = (compressed payload + side info) / original file bytes × 100, "
                  "where side info is the JSON the decoder needs beyond the tensor manifest. "
                  "*dtype* is the payload's; MB/s count payload bytes; ✓ = payload round trip.",
                  ""]
    if sampled:
        lines += ["Sampled: every codec ran on the same seeded random windows of each file "
                  "(column *sampled*: k windows of N bytes); rate = mean over windows ± 95% "
                  "confidence interval.", ""]
        if with_lossy:
            lines += ["Sampled lossy rates are extrapolated: rate over the windows × payload "
                      "bytes / original bytes, plus the side info.", ""]
    lossy_column = (lambda r: [f"`{r.lossy or 'none'}`"]) if with_lossy else (lambda r: [])
    header = ["file", *(["lossy"] if with_lossy else []), "dtype", "protocol", "codec", "rate %",
              "compress MB/s", "decompress MB/s", "verified"] + (["sampled"] if sampled else [])
    order = {p: i for i, p in enumerate(PROTOCOLS)}
    lossy_order = {spec: i for i, spec in enumerate(dict.fromkeys(r.lossy for r in results))}
    measured.sort(key=lambda r: (lossy_order[r.lossy], order[r.protocol]))
    rows = [[short_label(r.file), *lossy_column(r), r.dtype, r.protocol, r.codec,
             rate_text(r.rate_pct, r.rate_ci95), rate_text(r.compress_mbps),
             rate_text(r.decompress_mbps), _mark(r.verified)]
            + ([f"{r.windows} × {r.window_bytes} B"] if sampled else [])
            for r in measured]
    lines += table(header, rows)
    if measured:
        lines += ["", "### Mean ± std over files (verified runs only; best in bold)", ""]
        lines += table([*(["lossy"] if with_lossy else []), "protocol", "codec", "rate %",
                         "compress MB/s", "decompress MB/s", "verified"],
                        _summary_rows(measured, with_lossy))
    if with_lossy:
        lines += ["", "### Lossy front-end: sizes before lossless coding and reconstruction error",
                  "", "Error of the decoded tensors against the original ones, over all tensors "
                  "(rel L2 = ‖decoded − original‖ / ‖original‖).", ""]
        lines += table(["file", "lossy", "original B", "payload B", "side info B",
                         "uncoded rate %", "max abs error", "rel L2 error"], _error_rows(results))
    notes = sorted({f"- {r.status} **{r.codec}**: {r.message}"
                    + ("" if r.status == "skipped" else
                       f" ({short_label(r.file)}, {r.protocol}"
                       + (f", {r.lossy})" if r.lossy else ")"))
                    for r in results if r.status != "ok"})
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines) + "\n"


def check_outputs_free(out_dir: Path, force: bool) -> None:
    """Refuse, before a long run rather than after it, to overwrite outputs without ``force``.

    Raises:
        OutputExistsError: one of :data:`OUTPUT_NAMES` exists in ``out_dir``.
    """
    existing = [str(out_dir / name) for name in OUTPUT_NAMES if (out_dir / name).exists()]
    if existing and not force:
        raise OutputExistsError(f"{', '.join(existing)} already exist; pass --force to overwrite "
                                "or choose another --out")


def write_outputs(results: Sequence[BenchResult], out_dir: str | Path, settings: dict[str, Any],
                  force: bool = False) -> dict[str, Path]:
    """Save the markdown table, CSV, JSON (with settings and library versions) and bar chart."""
    out_dir = Path(out_dir)
    check_outputs_free(out_dir, force)
    paths = {name.split(".")[-1]: out_dir / name for name in OUTPUT_NAMES}
    out_dir.mkdir(parents=True, exist_ok=True)
    paths["md"].write_text(format_markdown(results, settings.get("chunk_bytes", CHUNK_BYTES)),
                           encoding="utf-8")
    fields = [f.name for f in dataclasses.fields(BenchResult)]
    with paths["csv"].open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(dataclasses.asdict(r) for r in results)
    meta = {**settings, "rate": "compressed bytes / original bytes * 100 (with a lossy "
            "front-end: (compressed payload + side_info_bytes) / original_bytes * 100)",
            "MB": "10^6 bytes",
            "versions": versions()}
    paths["json"].write_text(json.dumps({"meta": meta, "results": [dataclasses.asdict(r)
                                                                   for r in results]}, indent=1),
                             encoding="utf-8")
    if not plot_rates(results, paths["png"]):
        del paths["png"]
    return paths
