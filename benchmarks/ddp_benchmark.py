"""Benchmark of ``lmgc.integrations.ddp.lossless_hook``: bytes on the wire and time per step.

Two gloo processes on this machine train the same small CNN (two conv layers, two linear
layers, ~110k parameters: one DDP bucket) for a few SGD steps on synthetic 28x28 images
(class-dependent blobs plus noise, a different stream per rank), once with plain DDP and once
with the hook (context prior), from the same initial model. It checks that both runs end with
bit-identical parameters on both ranks and writes benchmarks/results/ddp.md.

Bytes on the wire per rank and step: plain DDP's ring allreduce sends ``2 (W - 1) / W`` times the
gradient bytes, which for W = 2 is the gradient bytes once; the hook sends an int64 size and its
container padded to the largest of the step to the other rank (``LosslessHookState.wire_bytes``).
Time per step is the mean over the steps after the first (which builds DDP's buckets), on rank 0.

Run:  .venv/bin/python benchmarks/ddp_benchmark.py [--steps 10] [--batch 32]   (about 30 s)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import socket
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from lmgc.integrations.ddp import LosslessHookState, lossless_hook

ROOT = Path(__file__).resolve().parent.parent
WORLD = 2


class SmallCNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 16, 3)
        self.conv2 = torch.nn.Conv2d(16, 32, 3)
        self.fc1 = torch.nn.Linear(32 * 5 * 5, 128)
        self.fc2 = torch.nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def batches(rank: int, steps: int, batch: int):
    """Synthetic digits: a bright 7x7 blob at a class-dependent place, plus noise."""
    gen = torch.Generator().manual_seed(1000 + rank)
    for _ in range(steps):
        y = torch.randint(0, 10, (batch,), generator=gen)
        x = torch.randn(batch, 1, 28, 28, generator=gen) * 0.3
        for i, label in enumerate(y.tolist()):
            row, col = 3 + 7 * (label // 4), 3 + 7 * (label % 4)
            x[i, 0, row : row + 7, col : col + 7] += 1.0
        yield x, y


def train(rank: int, steps: int, batch: int, hook: bool) -> dict:
    torch.manual_seed(0)
    ddp = DistributedDataParallel(SmallCNN())
    state = LosslessHookState() if hook else None
    if state is not None:
        ddp.register_comm_hook(state, lossless_hook)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9)
    times = []
    for x, y in batches(rank, steps, batch):
        start = time.perf_counter()
        optimizer.zero_grad()
        F.cross_entropy(ddp(x), y).backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    gradient_bytes = sum(p.numel() * p.element_size() for p in ddp.parameters())
    result = {
        "step_seconds": sum(times[1:]) / max(1, len(times) - 1),
        "wire_bytes_per_step": gradient_bytes * 2 * (WORLD - 1) // WORLD,
        "gradient_bytes_per_step": gradient_bytes,
        "parameters_sha256": hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in ddp.parameters())).hexdigest(),
    }
    if state is not None:
        result |= {
            "wire_bytes_per_step": state.wire_bytes / steps,
            "coded_bytes_per_step": state.sent_bytes / steps,
            "encode_seconds_per_step": state.encode_seconds / steps,
            "exchange_seconds_per_step": state.exchange_seconds / steps,
            "decode_seconds_per_step": state.decode_seconds / steps,
            "buckets_per_step": state.buckets / steps,
        }
    return result


def worker(rank: int, port: int, steps: int, batch: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        runs = {"plain": train(rank, steps, batch, hook=False), "lossless_hook": train(rank, steps, batch, hook=True)}
    finally:
        dist.destroy_process_group()
    Path(out, f"rank{rank}.json").write_text(json.dumps(runs))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def report(ranks: list[dict], steps: int, batch: int) -> str:
    params = {run["parameters_sha256"] for rank in ranks for run in rank.values()}
    if len(params) != 1:
        raise SystemExit("the hook's parameters differ from plain DDP's or between ranks: a bug")
    plain, coded = ranks[0]["plain"], ranks[0]["lossless_hook"]
    ms = 1000
    setup = (
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()}, torch {torch.__version__}, "
        f"gloo, {WORLD} processes on one machine ({os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f} when written), 1 torch thread each. Small CNN "
        f"({plain['gradient_bytes_per_step'] // 4} parameters, float32), batch {batch} per rank, {steps} steps, "
        "synthetic 28x28 images. Per rank and step; time on rank 0, mean of steps 2 to "
        f"{steps}. Final parameters: bit-identical on both ranks and between the two runs (checked)."
    )
    plain_row = (
        f"| plain DDP (ring allreduce) | {plain['gradient_bytes_per_step']:,} | {plain['wire_bytes_per_step']:,.0f} "
        f"| 100.0% | {plain['step_seconds'] * ms:.1f} ms | | | |"
    )
    coded_row = (
        f"| `lossless_hook` (context prior) | {coded['gradient_bytes_per_step']:,} | "
        f"{coded['wire_bytes_per_step']:,.0f} | {coded['wire_bytes_per_step'] / plain['wire_bytes_per_step']:.1%} | "
        f"{coded['step_seconds'] * ms:.1f} ms | {coded['encode_seconds_per_step'] * ms:.1f} ms | "
        f"{coded['exchange_seconds_per_step'] * ms:.1f} ms | {coded['decode_seconds_per_step'] * ms:.1f} ms |"
    )
    notes = (
        f"Coded container bytes per step (before padding): {coded['coded_bytes_per_step']:,.0f} "
        f"({coded['coded_bytes_per_step'] / coded['gradient_bytes_per_step']:.1%} of the gradient); "
        f"{coded['buckets_per_step']:.0f} bucket(s) per step. Plain bytes on the wire are the ring "
        "allreduce's 2(W-1)/W x gradient bytes; the hook's are its measured all-gather input (an int64 "
        "size plus the container padded to the largest of the step), each sent to the other rank."
    )
    lines = [
        "# DDP: lmgc lossless_hook vs plain allreduce",
        "",
        setup,
        "",
        "| run | gradient bytes | bytes on the wire | vs plain | time/step | encode | exchange | decode |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        plain_row,
        coded_row,
        "",
        notes,
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/ddp.md"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(worker, args=(free_port(), args.steps, args.batch, tmp), nprocs=WORLD, join=True)
        ranks = [json.loads(Path(tmp, f"rank{rank}.json").read_text()) for rank in range(WORLD)]
    text = report(ranks, args.steps, args.batch)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
