"""Benchmark of the core LLM codec on the repository's real-gradient fixture.

Measures, and saves as markdown under benchmarks/results/:
  1. rate per serialization variant: coded size (encoded, decoded, compared) and ideal
     cross-entropy of the same tokens, plus a full-forward ESTIMATE on more data;
  2. throughput (tokens/s, bytes/s, encode and decode) for batch sizes 1/16/64 on CPU.

Run:  .venv/bin/python benchmarks/codec_benchmark.py [--sections rate,speed] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

import lmgc
from lmgc.tensors import read_tensors

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = {
    "convnet-mnist step 50 (dense)": ROOT / "tests/data/gradients/convnet_w32_mnist/grad_step000050.safetensors",
    "resnet18-mnist step 5 (2.8% zeros)": ROOT / "tests/data/gradients/resnet18_mnist_slice/grad_step000005.safetensors",
}
VARIANTS = [
    ("hex-space-be", "float32"), ("hex-space-le", "float32"), ("hex-none-be", "float32"),
    ("hex-none-le", "float32"), ("hex-comma-be", "float32"), ("hex-commaspace-be", "float32"),
    ("hex-space-be", "bfloat16"),
]  # fmt: skip
#: The byte-order question on a second, sparser file (CPU time is the limit here).
SECOND_FILE_VARIANTS = VARIANTS[:2]


def gradient_values(path: Path) -> np.ndarray:
    bundle = read_tensors(path)
    return np.frombuffer(b"".join(t.data for t in bundle.tensors), dtype="<f4")


def window(values: np.ndarray, n_bytes: int, seed: int) -> np.ndarray:
    """A seeded window of whole float32 values from inside the file."""
    n = n_bytes // 4
    start = np.random.default_rng(seed).integers(0, len(values) - n)
    return values[start : start + n].copy()


def coded_run(sample: np.ndarray, *, serialization: str, model_dtype: str, chunk_bytes: int,
              batch: int) -> dict:  # fmt: skip
    """Encode, decode, compare; return sizes and timings."""
    compressor = lmgc.Compressor(serialization=serialization, dtype=model_dtype,
                                 chunk_bytes=chunk_bytes, batch_size=batch)  # fmt: skip
    start = time.perf_counter()
    blob = compressor.compress(sample)
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    back = lmgc.Decompressor().decompress(blob)
    decode_s = time.perf_counter() - start
    if back.tobytes() != sample.tobytes():
        raise SystemExit(f"round trip FAILED for {serialization} / {model_dtype}")
    info = lmgc.read_container_info(blob)
    tokens = sum(c["symbols"] for c in info["chunks"])
    return {
        "bytes": sample.nbytes, "file": len(blob), "payload": info["payload_bytes"],
        "ideal": info["header"]["ideal_bits"] / 8, "tokens": tokens,
        "encode_s": encode_s, "decode_s": decode_s, "compressor": compressor,
    }  # fmt: skip


def rate_section(coded_bytes: int, estimate_bytes: int, lines: list[str],
                 only: list[tuple[str, str]] | None = None) -> None:
    lines += [
        "## Rate by serialization (SmolLM2-135M)",
        "",
        f"Coded: {coded_bytes} B windows (seeded) per file, chunk 256 B, batch 4; encoded, decoded and "
        "compared. *payload* = sum of chunk payloads / original; *file* adds the container header "
        "and chunk table (large relative to these small windows). *ideal* = cross-entropy of the "
        "coded tokens. *estimate* = full-forward cross-entropy on "
        f"{estimate_bytes} B windows, chunk 1024 B (an ESTIMATE, not a coded size).",
        "",
        "| file | serialization | model dtype | tokens/byte | payload % | ideal % | file % | estimate % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for index, (label, path) in enumerate(FIXTURES.items()):
        values = gradient_values(path)
        coded_sample = window(values, coded_bytes, seed=0)
        est_sample = window(values, estimate_bytes, seed=1)
        for spec, dtype in only or (VARIANTS if index == 0 else SECOND_FILE_VARIANTS):
            r = coded_run(coded_sample, serialization=spec, model_dtype=dtype, chunk_bytes=256, batch=4)
            est = r["compressor"].estimate(est_sample)
            n = r["bytes"]
            lines.append(
                f"| {label} | {spec} | {dtype} | {r['tokens'] / n:.2f} | {100 * r['payload'] / n:.2f} | "
                f"{100 * r['ideal'] / n:.2f} | {100 * r['file'] / n:.2f} | {100 * est.rate:.2f} |"
            )
            print(lines[-1], flush=True)
    lines.append("")


def speed_section(lines: list[str]) -> None:
    lines += [
        "## Throughput by batch size (SmolLM2-135M, float32, hex-space-be, CPU)",
        "",
        "Each run codes `batch` chunks of 256 B in lockstep (one batch), then decodes and compares.",
        "",
        "| batch | bytes | tokens | encode tok/s | encode B/s | decode tok/s | decode B/s | payload % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    values = gradient_values(next(iter(FIXTURES.values())))
    for batch in (1, 16, 64):
        sample = window(values, 256 * batch, seed=2)
        r = coded_run(sample, serialization="hex-space-be", model_dtype="float32", chunk_bytes=256, batch=batch)
        lines.append(
            f"| {batch} | {r['bytes']} | {r['tokens']} | {r['tokens'] / r['encode_s']:.0f} | "
            f"{r['bytes'] / r['encode_s']:.0f} | {r['tokens'] / r['decode_s']:.0f} | "
            f"{r['bytes'] / r['decode_s']:.0f} | {100 * r['payload'] / r['bytes']:.2f} |"
        )
        print(lines[-1], flush=True)
    lines.append("")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default="rate,speed")
    parser.add_argument("--coded-bytes", type=int, default=1024)
    parser.add_argument("--estimate-bytes", type=int, default=8192)
    parser.add_argument("--variants", help="only these SERIALIZATION:DTYPE pairs, comma-separated, "
                        "on every file (default: the full list on the first file, 2 on the second)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/codec.md"))
    args = parser.parse_args()
    import torch

    lines = [
        "# lmgc core codec benchmark",
        "",
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
        f"- machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.backends.cpu.get_cpu_capability()}), lmgc {lmgc.__version__}, threads "
        f"{min(4, os.cpu_count() or 1)}",
        "",
    ]
    sections = args.sections.split(",")
    if "rate" in sections:
        only = [tuple(v.split(":")) for v in args.variants.split(",")] if args.variants else None
        rate_section(args.coded_bytes, args.estimate_bytes, lines, only)
    if "speed" in sections:
        speed_section(lines)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
