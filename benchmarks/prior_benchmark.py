"""Benchmark of lmgc's priors against the best classical codec, per gradient file (issue: hybrid).

For each file of the gradient set it measures, every size coded, decoded and compared:
  1. whole file: the context prior (``--prior context``) and the classical codecs, with speeds;
  2. seeded windows: LLM token mode (the paper's), LLM nibble mode, the hybrid (nibble LLM mixed
     with the context models), the context prior and the classical codecs on the same bytes.
The LLM runs only on windows because it codes ~100 bytes/s on this CPU.

Gradients: the repository fixture (ConvNet on MNIST) plus runs of ``lmgc collect`` made on first
use into benchmarks/data/ (ignored by git): ConvNet width 32 on Fashion-MNIST, the paper's
ConvNet (width 128) on MNIST as the dense CNN, and the full ResNet-18 on MNIST.

Run:  .venv/bin/python benchmarks/prior_benchmark.py [--window-bytes 4096] [--windows 1]
          [--chunk-bytes 512] [--batch 8]   (about 35 min on 2 CPU cores)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "benchmarks" / "data"
#: label -> (path, collect arguments that produce it, or None for a committed fixture)
FILES = {
    "ConvNet-32 MNIST step 50": (ROOT / "tests/data/gradients/convnet_w32_mnist/grad_step000050.safetensors", None),
    "ConvNet-32 Fashion-MNIST step 50": (
        DATA / "convnet_w32_fmnist/grad_step000050.safetensors",
        ["--arch", "convnet", "--width", "32", "--dataset", "fashion-mnist", "--steps", "51", "--every", "50"],
    ),
    "ConvNet-128 MNIST step 50 (dense CNN)": (
        DATA / "convnet_w128_mnist/grad_step000050.safetensors",
        ["--arch", "convnet", "--dataset", "mnist", "--steps", "51", "--every", "50"],
    ),
    "ResNet-18 MNIST step 5": (
        DATA / "resnet18_mnist/grad_step000005.safetensors",
        ["--arch", "resnet18", "--dataset", "mnist", "--steps", "6", "--every", "5"],
    ),
}  # fmt: skip
CLASSICAL = ["gzip", "lzma", "bz2", "zstd-19", "fpzip", "pcodec", "blosc2", "planes-zstd", "planes-lzma"]
LLM_PRIORS = ["llm", "nibble", "hybrid"]
SERIALIZATION = "hex-comma-be"


def ensure_files() -> None:
    from lmgc.cli import main

    for path, args in FILES.values():
        if not path.exists():
            if args is None:
                raise SystemExit(f"missing fixture {path}")
            for dataset in ("mnist", "fashion-mnist"):
                if dataset in args:
                    main(["data", "fetch", dataset])
            main(["collect", *args, "--out", str(path.parent), "--no-progress"])


def run(window_bytes: int, windows: int, seed: int, chunk_bytes: int, batch: int) -> dict:
    from lmgc.eval.bench import run_bench
    from lmgc.eval.lmgc_codec import ContainerProbe, LmgcCodec

    context = ContainerProbe(LmgcCodec(SERIALIZATION, prior="context"))  # payloads without the header
    report = {"files": {}}
    for label, (path, _) in FILES.items():
        print(f"== {label}", file=sys.stderr)
        whole = run_bench([path], [*CLASSICAL, context], ["whole"])
        llm = [ContainerProbe(LmgcCodec(SERIALIZATION, prior=p, chunk_bytes=chunk_bytes, batch_size=batch))
               for p in LLM_PRIORS]
        context.containers.clear()
        windowed = run_bench([path], [*CLASSICAL, context, *llm], ["whole"], sample_bytes=window_bytes,
                             windows=windows, seed=seed, progress=True)  # fmt: skip
        window_rows = [dict(r.__dict__) for r in windowed]
        for row in window_rows:  # each lmgc codec's last `windows` containers are these windows
            codec = next((c for c in [context, *llm] if c.name == row["codec"]), None)
            if codec is not None and row["status"] == "ok":
                payloads = [info["payload_bytes"] for info in codec.containers[-windows:]]
                row["payload_pct"] = 100 * sum(payloads) / row["measured_bytes"]
        report["files"][label] = {
            "path": str(path.relative_to(ROOT)),
            "bytes": whole[0].measured_bytes,
            "whole": [r.__dict__ for r in whole],
            "windows": window_rows,
        }
    return report


def _by_codec(rows: list[dict]) -> dict[str, dict]:
    return {r["codec"]: r for r in rows}


def _best_classical(rows: dict[str, dict]) -> str:
    ok = [rows[c] for c in CLASSICAL if c in rows and rows[c]["status"] == "ok"]
    top = min(ok, key=lambda r: r["rate_pct"])
    return f"{top['rate_pct']:.2f} ({top['codec']})"


def _rate(row: dict | None) -> str:
    if row is None or row["status"] != "ok" or not row["verified"]:
        return "✗" if row else "–"
    spread = f" ± {row['rate_ci95']:.2f}" if row.get("rate_ci95") else ""
    return f"{row['rate_pct']:.2f}{spread}"


def markdown(report: dict, window_bytes: int, windows: int, chunk_bytes: int, batch: int) -> str:
    names = {p: f"lmgc-{p}:{SERIALIZATION}" for p in ("nibble", "hybrid", "context")}
    names["llm"] = f"lmgc:{SERIALIZATION}"
    lines = [
        "# lmgc priors vs the best classical codec",
        "",
        f"Generated {report['date']} on {report['machine']}; SmolLM2-135M (float32, "
        f"{report['threads']} torch threads), serialization `{SERIALIZATION}`. Every size is coded: "
        "encoded, decoded and compared byte for byte. Rates are compressed / original × 100 (lower "
        "is better); lmgc rates count the whole container (header included).",
        "",
        f"## Same windows for everyone ({windows} seeded window(s) of {window_bytes} B per file)",
        "",
        f"LLM codecs: {chunk_bytes} B chunks (one model context each), {batch} chunks in lockstep; "
        "the hybrid's context models learn across the chunks of the window. *best classical* "
        f"is the best of {', '.join(CLASSICAL)} on the same window bytes.",
        "",
        "lmgc cells: payload % (the coded chunks) / container % (plus the fixed header of "
        "~0.3–0.7 KB, which is large on a window and negligible on a real file).",
        "",
        "| file | LLM only (token mode) | LLM nibble mode | context only | hybrid | best classical |",
        "|---|---|---|---|---|---|",
    ]
    for label, entry in report["files"].items():
        rows = _by_codec(entry["windows"])
        cells = []
        for prior in ("llm", "nibble", "context", "hybrid"):
            row = rows.get(names[prior])
            payload = row.get("payload_pct") if row else None
            cells.append(f"{payload:.2f} / {_rate(row)}" if payload is not None else _rate(row))
        lines.append(f"| {label} | {' | '.join(cells)} | {_best_classical(rows)} |")
    lines += [
        "",
        "## Whole files: the context prior (no LLM) vs every classical codec",
        "",
        "Speeds in MB/s (10^6 bytes) on one CPU core (numpy single-threaded), container included.",
        "",
        "| file | size | context rate | context MB/s enc / dec | pcodec | best classical |",
        "|---|---|---|---|---|---|",
    ]
    for label, entry in report["files"].items():
        rows = _by_codec(entry["whole"])
        ctx = rows[names["context"]]
        lines.append(
            f"| {label} | {entry['bytes']:,} B | {_rate(ctx)} | {ctx['compress_mbps']:.1f} / "
            f"{ctx['decompress_mbps']:.1f} | {_rate(rows.get('pcodec'))} | "
            f"{_best_classical(rows)} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--window-bytes", type=int, default=4096)
    parser.add_argument("--windows", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk-bytes", type=int, default=512, help="LLM chunk size (default 512)")
    parser.add_argument("--batch", type=int, default=8, help="LLM chunks in lockstep (default 8)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/priors.md")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # numpy/BLAS single-threaded: one-core speeds
    ensure_files()
    from lmgc.config import default_threads

    start = time.perf_counter()
    report = run(args.window_bytes, args.windows, args.seed, args.chunk_bytes, args.batch)
    report |= {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
               "threads": default_threads(), "seconds": time.perf_counter() - start}  # fmt: skip
    text = markdown(report, args.window_bytes, args.windows, args.chunk_bytes, args.batch)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1, default=str))
    print(text)


if __name__ == "__main__":
    main()
