"""Time and peak memory of ``lmgc compress`` / ``lmgc decompress`` on large files (issue 15 part 3).

For each size, a float32 .npy of gradient-like values (normal x 1e-3, 30% zeros, seeded; written
in blocks, so this process stays small) goes through the CLI with the context prior; the decoded
file is compared byte for byte with the input. Each command runs in its own process, whose peak
resident memory comes from ``os.wait4`` (the kernel's ru_maxrss of that process alone, started
from a small helper process: see ``MEASURE``). For the
sizes in ``--in-memory-sizes`` the same container is also made and decoded the way lmgc did before
streaming (the whole bundle read, coded with ``Compressor.compress``, decoded with
``decompress_bundle`` and written with ``write_tensors``): the reference for throughput and
memory. The load average is recorded beside every run: others share the CPUs.

Run:  .venv/bin/python benchmarks/streaming_benchmark.py [--sizes-mb 100 1024]
          [--in-memory-sizes-mb 100] [--workdir /tmp/lmgc-streaming]   (about 10 min on 2 cores)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BLOCK = 1 << 24  # values generated and written at a time

IN_MEMORY_COMPRESS = """
import sys
from pathlib import Path
from lmgc import Compressor
from lmgc.tensors import read_tensors
Path(sys.argv[2]).write_bytes(Compressor(prior="context").compress(read_tensors(sys.argv[1])))
"""
IN_MEMORY_DECOMPRESS = """
import sys
from pathlib import Path
from lmgc import Decompressor
from lmgc.tensors import write_tensors
write_tensors(Decompressor().decompress_bundle(Path(sys.argv[1]).read_bytes()), sys.argv[2], force=True)
"""


def make_gradient(path: Path, n_bytes: int, seed: int = 0) -> None:
    """``n_bytes`` of float32 gradient-like values, generated block by block into a memory map."""
    n = n_bytes // 4
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n,))
    rng = np.random.default_rng(seed)
    for start in range(0, n, BLOCK):
        stop = min(n, start + BLOCK)
        block = (rng.standard_normal(stop - start, dtype=np.float32) * np.float32(1e-3))
        block[rng.random(stop - start) < 0.3] = 0
        out[start:stop] = block
    out.flush()
    del out


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()


#: Runs a command and prints its wall time and peak RSS. It is started fresh (small) so that the
#: command, forked from it, does not count this process's memory: ru_maxrss includes what a child
#: holds between fork and exec, and here that would be the pages of the 1 GB file just written.
MEASURE = """
import json, os, subprocess, sys, time
start = time.perf_counter()
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
_, status, usage = os.wait4(child.pid, 0)
seconds = time.perf_counter() - start
if os.waitstatus_to_exitcode(status):
    sys.exit(child.stderr.read().decode())
print(json.dumps({"seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 1024}))
"""


def measure(command: list[str]) -> dict:
    """Wall time and peak RSS of one command in its own process (see :data:`MEASURE`)."""
    load = os.getloadavg()[0]
    done = subprocess.run([sys.executable, "-c", MEASURE, *command], capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    return {**json.loads(done.stdout), "load_avg_1min": load}


def run_size(size_mb: int, workdir: Path, in_memory: bool) -> list[dict]:
    source = workdir / f"grad_{size_mb}mb.npy"
    if not source.exists():
        make_gradient(source, size_mb << 20)
    original, n_bytes = sha256(source), source.stat().st_size
    packed, back = workdir / f"grad_{size_mb}mb.lmgc", workdir / f"grad_{size_mb}mb_back.npy"
    lmgc = [sys.executable, "-m", "lmgc.cli"]
    paths = {
        "streaming (CLI)": (
            [*lmgc, "compress", str(source), "-o", str(packed), "--prior", "context", "-q", "--force"],
            [*lmgc, "decompress", str(packed), "-o", str(back), "-q", "--force"],
        ),
        "in memory (before)": (
            [sys.executable, "-c", IN_MEMORY_COMPRESS, str(source), str(packed)],
            [sys.executable, "-c", IN_MEMORY_DECOMPRESS, str(packed), str(back)],
        ),
    }
    rows, containers = [], {}
    for path, (compress, decompress) in paths.items():
        if path.startswith("in memory") and not in_memory:
            continue
        for step, command in (("compress", compress), ("decompress", decompress)):
            result = measure(command)
            if step == "compress":
                containers[path] = sha256(packed)
                rate = packed.stat().st_size / n_bytes
            identical = step == "compress" or sha256(back) == original
            if not identical:
                raise SystemExit(f"{path}: the decoded file differs from {source}")
            rows.append({"size_mb": size_mb, "path": path, "step": step, "bytes": n_bytes,
                         "mb_per_s": n_bytes / 2**20 / result["seconds"], "rate": rate,
                         "identical": identical, **result})  # fmt: skip
            print(f"{size_mb:>5} MB  {path:<20} {step:<10} {result['seconds']:7.1f} s "
                  f"{rows[-1]['mb_per_s']:6.2f} MB/s  peak {result['peak_rss_mb']:7.0f} MB  "
                  f"load {result['load_avg_1min']:.2f}", flush=True)  # fmt: skip
        back.unlink()
    if len(set(containers.values())) > 1:
        raise SystemExit(f"{size_mb} MB: the streamed container differs from the in-memory one")
    for path in (source, packed):
        path.unlink()
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| file | path | step | time (s) | MB/s | peak RSS (MB) | peak / file | rate | decoded = input | load avg |",
        "|---|---|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size_mb']} MB float32 .npy | {r['path']} | {r['step']} | {r['seconds']:.1f} | "
            f"{r['mb_per_s']:.2f} | {r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] / (r['bytes'] / 2**20):.2f} | "
            f"{100 * r['rate']:.2f}% | {'yes' if r['identical'] else 'NO'} | {r['load_avg_1min']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes-mb", type=int, nargs="+", default=[100, 1024])
    parser.add_argument("--in-memory-sizes-mb", type=int, nargs="*", default=[100])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lmgc-streaming"))
    parser.add_argument("--out", type=Path, default=RESULTS / "streaming")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.sizes_mb:
        rows += run_size(size, args.workdir, size in args.in_memory_sizes_mb)
    meta = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "data": "float32 normal x 1e-3 with 30% zeros (seed 0), .npy",
        "prior": "context (8 MiB chunks, hex-comma-be)",
    }
    markdown = (
        "# Streaming compress / decompress: time and peak memory\n\n"
        f"`benchmarks/streaming_benchmark.py`, {meta['date']}, {meta['machine']}; data: {meta['data']}; "
        f"prior: {meta['prior']}. Each step is its own process; peak RSS is that process's ru_maxrss "
        "(os.wait4, from a small helper process). Every decoded file was compared byte for byte "
        "with the input, and where both paths ran, the streamed container with the in-memory one. "
        "`in memory (before)` is how "
        "lmgc coded files before streaming (whole bundle read, `Compressor.compress`, "
        "`decompress_bundle` + `write_tensors`). The load average (1 min) is the machine's, shared "
        "with other work, when the step started.\n\n" + table(rows) + "\n"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(markdown)
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print("\n" + markdown)


if __name__ == "__main__":
    main()
