"""The host's share of an LLM codec step: the lockstep loop and the per-chunk range coding.

On a GPU the model's step is a CUDA graph of a few milliseconds, so what the host does per step
around it (``lmgc.codec``: a constriction call per chunk, the ideal code length, the next
inputs, the decoded symbols) is a quarter of the step (``benchmarks/results/llm_profile_gpu_graph.md``).
This times that loop alone: a stand-in stream hands out fixed float64 probability rows (softmax of
random logits over the token alphabet's 112 symbols), so nothing but the loop and the coder runs.
Every payload is decoded and compared.

Run:  .venv/bin/python benchmarks/codec_loop.py [--batches 64,1294] [--steps 120]
          [--out benchmarks/results/codec_loop.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from lmgc.codec import decode_symbols, encode_symbols
from lmgc.priors.llm_engine import softmax

ROOT = Path(__file__).resolve().parent.parent
ALPHABET = 112  # the token alphabet of hex-comma-be with SmolLM2


class _Stream:
    """A prior stream whose step ``t`` returns the ``t``-th row block of a fixed table."""

    max_symbols = None
    independent_batches = True

    def __init__(self, table: np.ndarray) -> None:
        self.table = table

    def open(self, lengths):
        steps = iter(self.table)
        return type("Session", (), {"step": staticmethod(lambda inputs: next(steps))})()


def measure(batch: int, steps: int, repeats: int = 3) -> dict:
    """Best-of-``repeats`` milliseconds per step of encoding and decoding one batch."""
    rng = np.random.default_rng(batch)
    table = softmax(rng.standard_normal((steps + 1, batch, ALPHABET)).astype(np.float32) * 3)
    lengths = rng.integers(steps - steps // 6, steps + 1, batch)
    symbols = [np.array([rng.choice(ALPHABET, p=table[t, j]) for t in range(n)], dtype=np.int64)
               for j, n in enumerate(lengths)]  # fmt: skip
    sizes = [256] * batch
    encode_s = decode_s = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        encoded = encode_symbols(_Stream(table), symbols, sizes, batch)
        encode_s = min(encode_s, time.perf_counter() - start)
        payloads, counts = [e.payload for e in encoded], [e.n_symbols for e in encoded]
        start = time.perf_counter()
        decoded = decode_symbols(_Stream(table), payloads, counts, sizes, batch)
        decode_s = min(decode_s, time.perf_counter() - start)
    if not all(np.array_equal(a, b) for a, b in zip(decoded, symbols)):
        raise SystemExit("decoded symbols differ")
    n_steps = int(lengths.max())
    return {"batch": batch, "steps": n_steps, "encode_ms": 1000 * encode_s / n_steps,
            "decode_ms": 1000 * decode_s / n_steps, "symbols": int(lengths.sum())}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="64,1294", help="comma-separated batch sizes")
    parser.add_argument("--steps", type=int, default=120, help="steps per chunk at most (default 120)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/codec_loop.md")
    args = parser.parse_args()
    rows = [measure(int(b), args.steps) for b in args.batches.split(",")]
    lines = [
        "# The host's share of an LLM codec step (loop and range coding)",
        "",
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}, {platform.machine()}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f}. A stand-in stream of fixed probability rows over "
        f"{ALPHABET} symbols; best of 3; every payload decoded and compared.",
        "",
        "| batch | steps | symbols | encode ms / step | decode ms / step | encode µs / symbol | decode µs / symbol |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        per = r["steps"] * 1000 / r["symbols"]
        lines.append(f"| {r['batch']:,} | {r['steps']} | {r['symbols']:,} | {r['encode_ms']:.2f} | "
                     f"{r['decode_ms']:.2f} | {r['encode_ms'] * per:.2f} | {r['decode_ms'] * per:.2f} |")  # fmt: skip
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
