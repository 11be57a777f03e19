"""``lmgc bench``: rates and speeds of codecs on tensor files, so LM-GC is compared on equal terms.

Two protocols, labelled in every table: ``whole`` compresses each file in one call; ``chunked``
(the paper's) compresses every 512-byte chunk alone and counts each chunk's headers. Every
measurement decodes and compares, so a codec that does not round-trip shows as failed (✗).
``sample_bytes`` runs all codecs on the same seeded random windows of each file (for slow codecs
such as an LLM) and reports the mean rate over windows with a 95% confidence interval.
``lossy`` (``--lossy topk:1%+quant:8``, see :mod:`lmgc.lossy`) preprocesses each file once; every
codec then compresses the same payload bytes, and the rate counts the compressed payload plus the
lossy side information against the original file's size. The reconstruction error is reported.

Example (Python API; the CLI is ``lmgc bench FILES... --codecs gzip,lzma``)::

    results = run_bench(["grads.safetensors"], codecs=["gzip", "lzma"], protocols=["whole"])
    print(format_markdown(results))
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from .baselines import CODECS, EXTRA_HINT, Codec, LmgcCodec, get_codec
from .errors import InputError, LmgcError, OutputExistsError, UnsupportedDtypeError
from .lossy import LossyPipeline, error_report, parse_lossy, side_info_bytes
from .tensors import ITEMSIZE, TensorBundle, bundle_objects, raw_bundle, read_tensors

__all__ = [
    "PROTOCOLS",
    "CHUNK_BYTES",
    "FileBytes",
    "BenchResult",
    "load_file_bytes",
    "load_file_bundle",
    "sample_windows",
    "run_bench",
    "format_markdown",
    "plot_rates",
    "write_outputs",
    "register",
    "run_bench_command",
]

PROTOCOLS = ("whole", "chunked")
CHUNK_BYTES = 512  # the paper's chunk size
DEFAULT_WINDOWS = 8
TENSOR_SUFFIXES = (".safetensors", ".npy", ".npz", ".pt", ".pth")
OUTPUT_NAMES = ("bench.md", "bench.csv", "bench.json", "rates.png")

# Element types the codecs see. Types numpy lacks travel as same-size unsigned bits.
_NUMPY_DTYPES = {
    "float64": "<f8", "float32": "<f4", "float16": "<f2", "bfloat16": "<u2",
    "int64": "<i8", "int32": "<i4", "int16": "<i2", "int8": "i1",
    "uint64": "<u8", "uint32": "<u4", "uint16": "<u2", "uint8": "u1", "bool": "u1",
    "float8_e4m3fn": "u1", "float8_e5m2": "u1",
}
# Two-sided 95% Student t quantiles by degrees of freedom (normal beyond 30).
_T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


# --- inputs ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class FileBytes:
    """A file's tensors flattened in stored order into raw little-endian bytes.

    ``bundle`` (the tensors with names and shapes, when known) is what a lossy front-end needs.
    """

    label: str
    data: bytes
    dtype_name: str  # "float32", "bfloat16", or "mixed(float32,int64)"
    bundle: TensorBundle | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def dtype(self) -> np.dtype:
        """Element type handed to codecs; mixed files are plain bytes."""
        return np.dtype(_NUMPY_DTYPES.get(self.dtype_name, "u1"))

    def to_bundle(self) -> TensorBundle:
        """The tensors; bytes of one supported dtype without a bundle become one flat tensor."""
        if self.bundle is not None:
            return self.bundle
        if self.dtype_name not in ITEMSIZE:
            raise InputError(f"{self.label}: a lossy front-end needs the tensors (a tensor file, "
                             f"or raw values of one of {', '.join(ITEMSIZE)}), not "
                             f"{self.dtype_name} bytes")
        return raw_bundle(self.data, self.dtype_name, self.label)


def _dtype_label(names: Iterable[str]) -> str:
    names = list(dict.fromkeys(names))
    return names[0] if len(names) == 1 else f"mixed({','.join(names)})"


def load_file_bundle(path: str | Path) -> TensorBundle:
    """The tensors of a tensor file in stored order (:func:`lmgc.tensors.read_tensors`, plus .npz).

    The one place bench parses tensor files. Non-tensor entries of .pt files (e.g. LM-GC's
    ``batch_step``) stay in the structure and add no bytes.
    """
    path = Path(path)
    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as loaded:
            return bundle_objects({key: loaded[key] for key in loaded.files})
    return read_tensors(path)


def load_file_bytes(path: str | Path, dtype: str | None = None) -> FileBytes:
    """Flatten a tensor file, or read a raw file of the given element ``dtype``, to benchmark it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    bundle = None
    if path.suffix.lower() in TENSOR_SUFFIXES:
        try:
            bundle = load_file_bundle(path)
        except LmgcError:
            raise
        except Exception as exc:  # any parse failure of a foreign file format
            raise InputError(f"cannot read tensors from {path}: {type(exc).__name__}: {exc}"
                             ) from exc
        dtype_name = _dtype_label(t.dtype for t in bundle.tensors)
        data = b"".join(t.data for t in bundle.tensors)
    else:
        if dtype is None:
            raise InputError(f"{path}: raw file needs --dtype (e.g. --dtype float32); tensor "
                             f"files are {', '.join(TENSOR_SUFFIXES)}")
        dtype_name, data = dtype, path.read_bytes()
    if dtype_name not in _NUMPY_DTYPES and not dtype_name.startswith("mixed("):
        raise UnsupportedDtypeError(f"{path}: dtype {dtype_name} is not supported; "
                                    f"known: {', '.join(_NUMPY_DTYPES)}")
    loaded = FileBytes(str(path), data, dtype_name, bundle)
    if not data:
        raise InputError(f"{path} holds no data")
    if len(data) % loaded.dtype.itemsize:
        raise InputError(f"{path}: {len(data)} bytes is not a whole number of {dtype_name} "
                         f"elements ({loaded.dtype.itemsize} bytes each)")
    return loaded


def sample_windows(n_bytes: int, itemsize: int, window_bytes: int, windows: int,
                   seed: int) -> list[tuple[int, int]]:
    """Disjoint seeded random windows ``(start, end)``, element-aligned, the same for every codec.

    A file no longer than one window gives one window: the whole file.
    """
    size = window_bytes - window_bytes % itemsize
    if size <= 0 or windows <= 0:
        raise InputError(f"--sample-bytes must be at least one element ({itemsize} bytes) and "
                         f"--windows at least 1, got {window_bytes} and {windows}")
    if n_bytes <= size:
        return [(0, n_bytes)]
    slots = n_bytes // size
    rng = np.random.default_rng(seed)
    offset = int(rng.integers(0, (n_bytes - slots * size) // itemsize + 1)) * itemsize
    chosen = sorted(int(i) for i in rng.choice(slots, size=min(windows, slots), replace=False))
    return [(offset + i * size, offset + (i + 1) * size) for i in chosen]


# --- measuring ------------------------------------------------------------------------------

@dataclass(frozen=True)
class BenchResult:
    """One codec on one file under one protocol. ``rate_pct`` = compressed / original × 100.

    With a lossy front-end (``lossy`` set), the codec compressed the payload (``measured_bytes``
    of it), ``compressed_bytes`` is the codec's output and ``rate_pct`` = (compressed payload +
    ``side_info_bytes``) / ``original_bytes`` × 100, extrapolated from the windows when sampled.
    """

    file: str
    dtype: str
    codec: str
    protocol: str
    status: str  # "ok", "failed" (error or no round trip), "skipped" (missing package), "n/a"
    measured_bytes: int  # bytes compressed (the sum over windows when sampled)
    compressed_bytes: int | None = None
    rate_pct: float | None = None
    rate_ci95: float | None = None  # half-width of the 95% CI over windows, when sampled
    compress_mbps: float | None = None  # MB = 10^6 bytes
    decompress_mbps: float | None = None
    verified: bool | None = None
    windows: int | None = None  # set when sampled
    window_bytes: int | None = None
    message: str = ""
    lossy: str | None = None  # the canonical lossy spec, when one was applied
    original_bytes: int | None = None  # the file's bytes before the lossy front-end
    payload_bytes: int | None = None  # the bytes the lossy front-end handed to the codecs
    side_info_bytes: int | None = None  # lossy side information outside the payload (JSON)
    max_abs_error: float | None = None  # reconstruction error of the lossy front-end
    rel_l2_error: float | None = None


@dataclass(frozen=True)
class _Lossy:
    """A file after one lossy front-end: what the codecs compress, and what it cost."""

    spec: str
    payload: FileBytes
    original_bytes: int
    side_info_bytes: int
    max_abs_error: float
    rel_l2_error: float

    def fields(self) -> dict[str, Any]:
        return dict(lossy=self.spec, original_bytes=self.original_bytes,
                    payload_bytes=len(self.payload.data), side_info_bytes=self.side_info_bytes,
                    max_abs_error=self.max_abs_error, rel_l2_error=self.rel_l2_error)

    def rate(self, payload_rate_pct: float) -> float:
        """Rate against the original bytes, side info included, from a rate against the payload."""
        return (payload_rate_pct * len(self.payload.data) + 100 * self.side_info_bytes) / \
            self.original_bytes


def _apply_lossy(source: FileBytes, pipeline: LossyPipeline) -> _Lossy:
    """Run the front-end once; the payload tensors' bytes, in payload order, go to every codec."""
    bundle = source.to_bundle()
    payload, info = pipeline.encode(bundle)
    report = error_report(bundle, pipeline.decode(payload, info))
    data = b"".join(t.data for t in payload.tensors)
    if not data:
        raise InputError(f"{source.label}: the lossy front-end {pipeline} left no bytes")
    flat = FileBytes(source.label, data, _dtype_label(t.dtype for t in payload.tensors), payload)
    return _Lossy(pipeline.spec, flat, bundle.nbytes, side_info_bytes(info),
                  report["max_abs"], report["rel_l2"])


@dataclass(frozen=True)
class _Measurement:
    compressed_bytes: int
    compress_s: float
    decompress_s: float
    verified: bool


def _measure(codec: Codec, data: bytes, dtype: np.dtype, protocol: str,
             chunk_bytes: int) -> _Measurement:
    pieces = [data] if protocol == "whole" else [data[i:i + chunk_bytes]
                                                  for i in range(0, len(data), chunk_bytes)]
    start = time.perf_counter()
    blobs = [codec.compress(piece, dtype) for piece in pieces]
    middle = time.perf_counter()
    restored = [codec.decompress(blob, dtype, len(piece)) for blob, piece in zip(blobs, pieces)]
    end = time.perf_counter()
    return _Measurement(sum(len(b) for b in blobs), middle - start, end - middle,
                        restored == pieces)


def _ci95(values: Sequence[float]) -> float | None:
    if len(values) < 2:
        return None
    t = _T95[len(values) - 2] if len(values) - 1 <= len(_T95) else 1.96
    return t * statistics.stdev(values) / math.sqrt(len(values))


def _mbps(n_bytes: int, seconds: float) -> float | None:
    return n_bytes / 1e6 / seconds if seconds > 0 else None


def _bench_one(source: FileBytes, codec: Codec, protocol: str, spans: list[tuple[int, int]],
               sampled: bool, chunk_bytes: int, lossy: _Lossy | None = None) -> BenchResult:
    base = dict(file=source.label, dtype=source.dtype_name, codec=codec.name, protocol=protocol,
                measured_bytes=sum(end - start for start, end in spans),
                windows=len(spans) if sampled else None,
                window_bytes=spans[0][1] - spans[0][0] if sampled else None,
                **(lossy.fields() if lossy else {}))
    if not codec.available():
        missing = getattr(codec, "missing_packages", lambda: [])()
        need = f"needs {', '.join(missing)} ({EXTRA_HINT})" if missing else "not available"
        return BenchResult(status="skipped", message=need, **base)
    if not codec.supports(source.dtype):
        return BenchResult(status="n/a", message=f"does not take {source.dtype_name} elements",
                           **base)
    if protocol != "whole" and getattr(codec, "whole_only", False):
        return BenchResult(status="n/a", message="chunks internally; whole protocol only", **base)
    try:
        runs = [_measure(codec, source.data[start:end], source.dtype, protocol, chunk_bytes)
                for start, end in spans]
    except Exception as exc:  # a codec crashing is a result to report, not a reason to stop
        return BenchResult(status="failed", message=f"{type(exc).__name__}: {exc}", **base)
    rates = [100 * run.compressed_bytes / (end - start) for run, (start, end) in zip(runs, spans)]
    if lossy is not None:
        rates = [lossy.rate(rate) for rate in rates]
    verified = all(run.verified for run in runs)
    return BenchResult(
        status="ok" if verified else "failed",
        compressed_bytes=sum(run.compressed_bytes for run in runs),
        rate_pct=statistics.fmean(rates),
        rate_ci95=_ci95(rates) if sampled else None,
        compress_mbps=_mbps(base["measured_bytes"], sum(run.compress_s for run in runs)),
        decompress_mbps=_mbps(base["measured_bytes"], sum(run.decompress_s for run in runs)),
        verified=verified,
        message="" if verified else "decoded bytes differ from the input",
        **base,
    )


def _resolve_codecs(codecs: Iterable[str | Codec] | None) -> list[Codec]:
    if codecs is None:
        return list(CODECS.values())
    resolved = [get_codec(c) if isinstance(c, str) else c for c in codecs]
    if not resolved:
        raise InputError("no codecs selected")
    return resolved


def _resolve_lossy(lossy: str | LossyPipeline | Iterable[str | LossyPipeline] | None
                   ) -> list[LossyPipeline | None]:
    if lossy is None:
        return [None]
    specs = [lossy] if isinstance(lossy, (str, LossyPipeline)) else list(lossy)
    if not specs:
        return [None]
    pipelines = [parse_lossy(s) if isinstance(s, str) else s for s in specs]
    return list(dict.fromkeys(p if p.stages else None for p in pipelines))  # "none": lossless


def run_bench(files: Iterable[str | Path | FileBytes], codecs: Iterable[str | Codec] | None = None,
              protocols: Iterable[str] = PROTOCOLS, sample_bytes: int | None = None, seed: int = 0,
              *, windows: int = DEFAULT_WINDOWS, dtype: str | None = None,
              chunk_bytes: int = CHUNK_BYTES, progress: bool = False,
              lossy: str | LossyPipeline | Iterable[str | LossyPipeline] | None = None,
              ) -> list[BenchResult]:
    """Measure every codec on every file under every protocol; one record each, in that order.

    Args:
        files: tensor files, raw files (with ``dtype``), or already loaded ``FileBytes``.
        codecs: names in ``CODECS`` or codec objects (e.g. an LLM codec); default all.
        protocols: "whole" and/or "chunked" (``chunk_bytes`` per chunk, each compressed alone).
        sample_bytes: when set, measure every codec on the same ``windows`` seeded random
            windows of this many bytes per file instead of the whole file.
        progress: show a tqdm bar on stderr.
        lossy: one lossy spec (e.g. ``"topk:1%+quant:8"``, see :mod:`lmgc.lossy`) or several
            (each gives its own rows; ``"none"`` gives the lossless rows). Each file is
            preprocessed once per spec and every codec compresses the same payload; the rate
            counts payload and side information against the original bytes.

    Raises:
        InputError: unknown codec or protocol, invalid lossy spec, unreadable file, bad sizes.
    """
    files = list(files)
    selected = _resolve_codecs(codecs)
    pipelines = _resolve_lossy(lossy)
    protocols = list(protocols)
    for protocol in protocols:
        if protocol not in PROTOCOLS:
            raise InputError(f"unknown protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
    if not files or not protocols:
        raise InputError("nothing to measure: give at least one file and one protocol")
    if chunk_bytes <= 0:
        raise InputError(f"chunk size must be positive, got {chunk_bytes}")
    missing = [str(f) for f in files if not isinstance(f, FileBytes) and not Path(f).is_file()]
    if missing:  # before any codec runs, not after the first files took minutes
        raise InputError(f"no such file: {', '.join(missing)}")
    from tqdm import tqdm

    results = []
    with tqdm(total=len(files) * len(pipelines) * len(selected) * len(protocols), desc="bench",
              unit="run", file=sys.stderr, disable=not progress) as bar:
        for item in files:
            original = item if isinstance(item, FileBytes) else load_file_bytes(item, dtype)
            for pipeline in pipelines:
                applied = None if pipeline is None else _apply_lossy(original, pipeline)
                source = original if applied is None else applied.payload
                itemsize = source.dtype.itemsize
                if "chunked" in protocols and chunk_bytes % itemsize:
                    raise InputError(f"chunk size {chunk_bytes} is not a multiple of the "
                                     f"{source.dtype_name} element size {itemsize}")
                spans = ([(0, len(source.data))] if sample_bytes is None else
                         sample_windows(len(source.data), itemsize, sample_bytes, windows, seed))
                for codec in selected:
                    for protocol in protocols:
                        bar.set_postfix_str(f"{Path(source.label).name} {codec.name} {protocol}")
                        results.append(_bench_one(source, codec, protocol, spans,
                                                  sample_bytes is not None, chunk_bytes, applied))
                        bar.update()
    return results


# --- reporting ------------------------------------------------------------------------------

def _short_label(path: str) -> str:
    """``folder/file`` (checkpoints of different runs often share file names)."""
    p = Path(path)
    return f"{p.parent.name}/{p.name}" if p.parent.name else p.name


def _rate_text(rate: float | None, spread: float | None) -> str:
    if rate is None:
        return "—"
    return f"{rate:.2f}" if spread is None else f"{rate:.2f} ± {spread:.2f}"


def _speed_text(speed: float | None) -> str:
    return "—" if speed is None else f"{speed:.2f}"


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
        text = _rate_text(mean, spread)
        if mean is not None and len(good) == len(rows) and mean == best.get((lossy, protocol)):
            text = f"**{text}**"
        speeds = [[r.compress_mbps for r in good if r.compress_mbps],
                  [r.decompress_mbps for r in good if r.decompress_mbps]]
        ok = f"{len(good)}/{len(rows)}"
        lines.append(([lossy or "none"] if with_lossy else []) + [
            protocol, codec, text,
            *(_speed_text(statistics.fmean(s)) if s else "—" for s in speeds),
            ("✓ " if len(good) == len(rows) else "✗ ") + ok])
    return lines


def _error_rows(results: Sequence[BenchResult]) -> list[list[str]]:
    seen = dict.fromkeys((r.file, r.lossy) for r in results if r.lossy is not None)
    first = {key: next(r for r in results if (r.file, r.lossy) == key) for key in seen}
    return [[_short_label(r.file), f"`{r.lossy}`", f"{r.original_bytes:,}", f"{r.payload_bytes:,}",
             f"{r.side_info_bytes:,}",
             f"{100 * (r.payload_bytes + r.side_info_bytes) / r.original_bytes:.2f}",
             f"{r.max_abs_error:.3g}", f"{r.rel_l2_error:.4f}"] for r in first.values()]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(row) + " |" for row in rows)]


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
    rows = [[_short_label(r.file), *lossy_column(r), r.dtype, r.protocol, r.codec,
             _rate_text(r.rate_pct, r.rate_ci95), _speed_text(r.compress_mbps),
             _speed_text(r.decompress_mbps), _mark(r.verified)]
            + ([f"{r.windows} × {r.window_bytes} B"] if sampled else [])
            for r in measured]
    lines += _table(header, rows)
    if measured:
        lines += ["", "### Mean ± std over files (verified runs only; best in bold)", ""]
        lines += _table([*(["lossy"] if with_lossy else []), "protocol", "codec", "rate %",
                         "compress MB/s", "decompress MB/s", "verified"],
                        _summary_rows(measured, with_lossy))
    if with_lossy:
        lines += ["", "### Lossy front-end: sizes before lossless coding and reconstruction error",
                  "", "Error of the decoded tensors against the original ones, over all tensors "
                  "(rel L2 = ‖decoded − original‖ / ‖original‖).", ""]
        lines += _table(["file", "lossy", "original B", "payload B", "side info B",
                         "uncoded rate %", "max abs error", "rel L2 error"], _error_rows(results))
    notes = sorted({f"- {r.status} **{r.codec}**: {r.message}"
                    + ("" if r.status == "skipped" else
                       f" ({_short_label(r.file)}, {r.protocol}"
                       + (f", {r.lossy})" if r.lossy else ")"))
                    for r in results if r.status != "ok"})
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines) + "\n"


def plot_rates(results: Sequence[BenchResult], path: str | Path) -> bool:
    """Bar chart of rates per codec (x) and file (bars), one panel per protocol.

    Returns False, drawing nothing, when matplotlib is not installed.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return False
    measured = [r for r in results if r.verified]
    protocols = [p for p in PROTOCOLS if any(r.protocol == p for r in measured)] or ["whole"]
    files = list(dict.fromkeys((r.file, r.lossy) for r in measured))
    codecs = list(dict.fromkeys(r.codec for r in measured))
    fig = Figure(figsize=(max(6.0, 0.6 * len(codecs) * max(1, len(files)) ** 0.5 + 2),
                          3.2 * len(protocols)), layout="constrained")
    axes = fig.subplots(len(protocols), 1, squeeze=False)[:, 0]
    width = 0.8 / max(1, len(files))
    for ax, protocol in zip(axes, protocols):
        for j, file in enumerate(files):
            by_codec = {r.codec: r for r in measured
                        if r.protocol == protocol and (r.file, r.lossy) == file}
            xs = [i + j * width for i, c in enumerate(codecs) if c in by_codec]
            ax.bar(xs, [by_codec[c].rate_pct for c in codecs if c in by_codec], width,
                   yerr=[by_codec[c].rate_ci95 or 0 for c in codecs if c in by_codec],
                   label=_short_label(file[0]) + (f" [{file[1]}]" if file[1] else ""))
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(codecs))], codecs,
                      rotation=45, ha="right")
        ax.set_ylabel("rate % (lower is better)")
        ax.set_title(f"protocol: {protocol}")
        ax.axhline(100, color="grey", linewidth=0.5)
    if len(files) > 1:
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside upper center",
                   ncols=min(4, len(files)), fontsize="small")
    fig.savefig(path, dpi=120)
    return True


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("numpy", "zstandard", "brotli", "pillow", "soundfile", "fpzip", "pcodec",
                    "blosc2"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return found


def _check_outputs_free(out_dir: Path, force: bool) -> None:
    existing = [str(out_dir / name) for name in OUTPUT_NAMES if (out_dir / name).exists()]
    if existing and not force:
        raise OutputExistsError(f"{', '.join(existing)} already exist; pass --force to overwrite "
                                "or choose another --out")


def write_outputs(results: Sequence[BenchResult], out_dir: str | Path, settings: dict[str, Any],
                  force: bool = False) -> dict[str, Path]:
    """Save the markdown table, CSV, JSON (with settings and library versions) and bar chart."""
    out_dir = Path(out_dir)
    _check_outputs_free(out_dir, force)
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
            "versions": _versions()}
    paths["json"].write_text(json.dumps({"meta": meta, "results": [dataclasses.asdict(r)
                                                                   for r in results]}, indent=1),
                             encoding="utf-8")
    if not plot_rates(results, paths["png"]):
        del paths["png"]
    return paths


# --- CLI ------------------------------------------------------------------------------------

def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bench`` subcommand to the main CLI."""
    parser = subparsers.add_parser(
        "bench", help="compare codecs' compression rates on tensor files",
        description="Compress tensor files with classical codecs (and any registered LLM codec), "
                    "check every round trip, and report rates and speeds as markdown (stdout), "
                    "CSV, JSON and a bar chart.")
    parser.add_argument("files", nargs="*", metavar="FILE",
                        help=f"tensor files ({', '.join(TENSOR_SUFFIXES)}) or raw files with "
                             "--dtype")
    parser.add_argument("--codecs", type=_names, default=None,
                        help="comma-separated codec names (default: all; see --list-codecs)")
    parser.add_argument("--protocol", type=_names, default=list(PROTOCOLS),
                        help="comma-separated: whole, chunked (default: both)")
    parser.add_argument("--chunk-bytes", type=_positive_int, default=CHUNK_BYTES,
                        help=f"chunk size of the chunked protocol (default {CHUNK_BYTES})")
    parser.add_argument("--sample-bytes", type=_positive_int, metavar="N",
                        help="measure on seeded random windows of N bytes instead of whole files")
    parser.add_argument("--windows", type=_positive_int, default=DEFAULT_WINDOWS, metavar="K",
                        help=f"windows per file with --sample-bytes (default {DEFAULT_WINDOWS})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the windows (default 0)")
    parser.add_argument("--lossy", action="append", metavar="SPEC",
                        help="lossy front-end applied once per file before every codec, e.g. "
                             "topk:1%%+quant:8, quant:4:block=256, sign, randk:10%%:seed=0 "
                             "(repeat for several; 'none' adds the lossless rows); the rate "
                             "counts payload + side info against the original bytes")
    parser.add_argument("--lmgc", action="append", metavar="MODE", default=[],
                        help="add the LLM codec in this mode, [MODEL:]SERIALIZATION, e.g. "
                             "hex-space-be or gemma3-270m:hex-none-le (repeatable; slow on CPU: "
                             "combine with --sample-bytes)")
    parser.add_argument("--lmgc-prior", type=_names, default=["llm"], metavar="PRIORS",
                        help="comma-separated priors for each --lmgc mode: llm (default), nibble, "
                             "hybrid, context (e.g. --lmgc hex-comma-be --lmgc-prior llm,hybrid)")
    parser.add_argument("--lmgc-chunk-bytes", type=_positive_int, metavar="N",
                        help="chunk size of the lmgc codec (default: the prior's, 1024 for LLM "
                             "priors)")
    parser.add_argument("--lmgc-batch", type=_positive_int, default=16, metavar="B",
                        help="chunks coded in lockstep by the LLM codec (default 16)")
    parser.add_argument("--dtype", choices=sorted(_NUMPY_DTYPES),
                        help="element dtype of raw (non-tensor) files")
    parser.add_argument("--out", metavar="DIR",
                        help="output folder (default runs/bench-YYYYmmdd-HHMMSS)")
    parser.add_argument("--force", action="store_true", help="overwrite outputs in --out")
    parser.add_argument("--list-codecs", action="store_true",
                        help="list codecs and whether they are installed, then exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_bench_command)


def _list_codecs() -> str:
    lines = []
    for codec in CODECS.values():
        state = "ok" if codec.available() else f"missing ({EXTRA_HINT})"
        lines.append(f"{codec.name:12} {state:10} {getattr(codec, 'description', '')}")
    return "\n".join(lines)


def _with_llm_codecs(names: list[str] | None, modes: list[str], priors: list[str],
                     chunk_bytes: int | None, batch_size: int) -> list[str | Codec] | None:
    """The classical codecs named (all when none are) plus one lmgc codec per ``--lmgc`` mode
    and ``--lmgc-prior``."""
    if not modes:
        return names
    llm = [LmgcCodec(mode, prior=prior, chunk_bytes=chunk_bytes, batch_size=batch_size)
           for mode in modes for prior in priors]
    return [*(names if names is not None else CODECS), *llm]


def run_bench_command(args: argparse.Namespace) -> int:
    """Run ``lmgc bench`` from parsed arguments; library errors become one line and exit code 1."""
    if args.list_codecs:
        print(_list_codecs())
        return 0
    try:
        if not args.files:
            raise InputError("give at least one FILE (or --list-codecs)")
        out_dir = Path(args.out or f"runs/bench-{time.strftime('%Y%m%d-%H%M%S')}")
        _check_outputs_free(out_dir, args.force)  # before a long run, not after it
        codecs = _with_llm_codecs(args.codecs, args.lmgc, args.lmgc_prior, args.lmgc_chunk_bytes,
                                  args.lmgc_batch)
        results = run_bench(args.files, codecs, args.protocol, args.sample_bytes, args.seed,
                            windows=args.windows, dtype=args.dtype, chunk_bytes=args.chunk_bytes,
                            progress=not args.no_progress, lossy=args.lossy)
        settings = {"files": args.files, "codecs": list(dict.fromkeys(r.codec for r in results)),
                    "protocols": args.protocol, "chunk_bytes": args.chunk_bytes,
                    "sample_bytes": args.sample_bytes, "windows": args.windows, "seed": args.seed}
        if args.lossy:
            settings["lossy"] = list(dict.fromkeys(r.lossy or "none" for r in results))
        paths = write_outputs(results, out_dir, settings, force=args.force)
    except LmgcError as exc:
        print(f"lmgc bench: error: {exc}", file=sys.stderr)
        return 1
    print(format_markdown(results, args.chunk_bytes), end="")
    for codec, message in dict.fromkeys((r.codec, r.message) for r in results
                                        if r.status == "skipped"):
        print(f"lmgc bench: skipped {codec}: {message}", file=sys.stderr)
    print(f"lmgc bench: wrote {', '.join(str(p) for p in paths.values())}", file=sys.stderr)
    return 0
