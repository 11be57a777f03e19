"""Two LLM engines' encode speed, alternated in fresh processes: a comparison this shared VM's drift
cannot fake.

The VM's speed drifts by 10-30% over minutes, more than some engine changes gain, so one run of
each engine after the other can rank them either way. Here each round encodes the same 64 chunks
of 256 B (the packaged gradient, bfloat16, batch 64, as ``llm_speed.py``) once per engine, each in
its own process, the engines alternating; the table gives every round and the median.

Run:  .venv/bin/python benchmarks/llm_engine_ab.py [--engines lmgc-llama-3,lmgc-llama-2] [--rounds 3]
          [--out benchmarks/results/llm_engine_ab.md]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def encode_once(engine: str, threads: int) -> None:
    """(In the child process.) Encode the sample with ``engine``; print tokens/s as JSON."""
    import lmgc
    from lmgc.models import load_model
    from lmgc.priors import LLMPrior
    from lmgc.serialize import Serialization

    from llm_speed import CHUNK_BYTES, sample

    values = sample(64)
    prior = LLMPrior(load_model(None, dtype="bfloat16", device="cpu"), Serialization.parse("hex-comma-be"),
                     threads, engine)  # fmt: skip
    compressor = lmgc.Compressor(prior=prior, chunk_bytes=CHUNK_BYTES, batch_size=64)
    start = time.perf_counter()
    blob = compressor.compress(values)
    seconds = time.perf_counter() - start
    tokens = sum(chunk["symbols"] for chunk in lmgc.read_container_info(blob)["chunks"])
    print(json.dumps({"engine": prior.engine, "tok_s": tokens / seconds, "size": len(blob)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="lmgc-llama-3,lmgc-llama-2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/llm_engine_ab.md")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return encode_once(args.one, args.threads)
    engines = args.engines.split(",")
    began = f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}, load average {os.getloadavg()[0]:.1f}"
    speeds: dict[str, list[float]] = {engine: [] for engine in engines}
    for round_ in range(args.rounds):
        for engine in engines:
            child = subprocess.run([sys.executable, __file__, "--one", engine, "--threads", str(args.threads)],
                                   capture_output=True, text=True, check=True)  # fmt: skip
            result = json.loads(child.stdout.strip().splitlines()[-1])
            speeds[engine].append(result["tok_s"])
            print(f"round {round_ + 1}: {engine} {result['tok_s']:,.0f} tok/s", flush=True)
    lines = ["# LLM engines' encode speed, alternated", "",
             f"{began} at the start; {args.threads} torch threads, bfloat16, 64 chunks of 256 B at batch 64, "
             "each encode in its own process, the engines alternating (`benchmarks/llm_engine_ab.py`).", "",
             "| engine | " + " | ".join(f"round {i + 1} tok/s" for i in range(args.rounds)) + " | median tok/s |",
             "|---|" + "---:|" * (args.rounds + 1)]  # fmt: skip
    for engine, values in speeds.items():
        lines.append(f"| {engine} | " + " | ".join(f"{v:,.0f}" for v in values)
                     + f" | {statistics.median(values):,.0f} |")  # fmt: skip
    text = "\n".join(lines) + "\n"
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
