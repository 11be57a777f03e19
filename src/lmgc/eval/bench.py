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
    print(format_markdown(results))  # lmgc.eval.bench_report
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..lossy import LossyPipeline, parse_lossy
from .baselines import CODECS, EXTRA_HINT, Codec, get_codec
from .inputs import (
    FileBytes,
    LossyPayload,
    apply_lossy,
    load_file_bytes,
    sample_windows,
)

__all__ = ["PROTOCOLS", "CHUNK_BYTES", "DEFAULT_WINDOWS", "BenchResult", "run_bench"]

PROTOCOLS = ("whole", "chunked")
CHUNK_BYTES = 512  # the paper's chunk size
DEFAULT_WINDOWS = 8
# Two-sided 95% Student t quantiles by degrees of freedom (normal beyond 30).
_T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


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
class _Measurement:
    compressed_bytes: int
    compress_s: float
    decompress_s: float
    verified: bool


def _measure(codec: Codec, data: bytes, dtype: np.dtype, protocol: str,
             chunk_bytes: int, shapes: list | None = None) -> _Measurement:
    """``shapes``: the tensors' shapes when ``data`` is a whole file, for codecs that take them
    (``takes_shapes``: lmgc's context priors predict rows from them)."""
    pieces = [data] if protocol == "whole" else [data[i:i + chunk_bytes]
                                                  for i in range(0, len(data), chunk_bytes)]
    extra = {"shapes": shapes} if shapes and getattr(codec, "takes_shapes", False) else {}
    start = time.perf_counter()
    blobs = [codec.compress(piece, dtype, **extra) for piece in pieces]
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
               sampled: bool, chunk_bytes: int, lossy: LossyPayload | None = None) -> BenchResult:
    base = dict(file=source.label, dtype=source.dtype_name, codec=codec.name, protocol=protocol,
                measured_bytes=sum(end - start for start, end in spans),
                windows=len(spans) if sampled else None,
                window_bytes=spans[0][1] - spans[0][0] if sampled else None,
                **(lossy.fields() if lossy else {}))
    if not codec.available():
        missing = getattr(codec, "missing_packages", lambda: [])()
        hint = getattr(codec, "install_hint", lambda: EXTRA_HINT)()
        need = f"needs {', '.join(missing)} ({hint})" if missing else "not available"
        return BenchResult(status="skipped", message=need, **base)
    if not codec.supports(source.dtype):
        return BenchResult(status="n/a", message=f"does not take {source.dtype_name} elements",
                           **base)
    if protocol != "whole" and getattr(codec, "whole_only", False):
        return BenchResult(status="n/a", message="chunks internally; whole protocol only", **base)
    try:
        whole_file = protocol == "whole" and not sampled and lossy is None and source.bundle is not None
        shapes = [t.shape for t in source.bundle.tensors] if whole_file else None
        runs = [_measure(codec, source.data[start:end], source.dtype, protocol, chunk_bytes, shapes)
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
                applied = None if pipeline is None else apply_lossy(original, pipeline)
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
