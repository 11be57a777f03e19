"""Scale-out on torch.distributed: ranks split the lockstep batches, the container is the same.

The torchrun test runs the real CLI in two gloo processes on the embedded model with tiny
chunks; the others check the sharding rules with fakes (no model).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

import lmgc
from lmgc import codec, distributed
from lmgc.errors import CorruptDataError

TORCHRUN = Path(sys.executable).with_name("torchrun")
LMGC = Path(sys.executable).with_name("lmgc")
TINY = dict(chunk_bytes=16, batch_size=1)  # 2 chunks: one batch per rank


@pytest.mark.skipif(not TORCHRUN.exists() or not LMGC.exists(), reason="needs the torchrun and lmgc scripts")
def test_torchrun_writes_the_single_process_container(tmp_path):
    x = np.random.default_rng(0).standard_normal(8).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    single = lmgc.compress(tmp_path / "x.npy", **TINY, threads=1)  # one process, same settings
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    common = [str(TORCHRUN), "--standalone", "--nproc-per-node", "2", str(LMGC)]
    run = subprocess.run([*common, "compress", str(tmp_path / "x.npy"), "-o", str(tmp_path / "x.lmgc"),
                          "--chunk-bytes", "16", "--batch", "1", "--threads", "1", "-q"],
                         capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "x.lmgc").read_bytes() == single
    assert run.stdout.count("x.npy ->") == 1  # only rank 0 reports
    run = subprocess.run([*common, "decompress", str(tmp_path / "x.lmgc"), "-o", str(tmp_path / "back.npy"), "-q"],
                         capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert np.load(tmp_path / "back.npy").tobytes() == x.tobytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.npy", "x.lmgc", "x.npy"]


class _Stream:
    """Probabilities depend only on the step: any split of the batches codes the same bits."""

    max_symbols = None
    independent_batches = True

    def __init__(self) -> None:
        self.batches = []

    def open(self, lengths):
        self.batches.append(len(lengths))

        class Session:
            def step(self, symbols):
                return np.full((len(lengths), 4), 0.25)

        return Session()


def test_ranks_code_their_batches_and_a_stateful_stream_is_not_split(monkeypatch):
    symbols = [np.arange(4) % 4, np.arange(3) % 4, np.arange(5) % 4]
    gathered = []

    def fake_gather(self, local, error=None):
        gathered.append(sorted(local))
        return {i: local.get(i) or reference[i] for i in range(3)}

    reference = codec.encode_symbols(_Stream(), symbols, [2, 2, 3], batch_size=1)
    monkeypatch.setattr(distributed.Shard, "gather", fake_gather)
    stream = _Stream()
    with distributed.sharding(distributed.Shard(rank=1, world=2)):
        assert codec.encode_symbols(stream, symbols, [2, 2, 3], batch_size=1) == reference
    assert gathered == [[1]] and stream.batches == [1]  # rank 1 of 2 codes batch 1 only
    stateful = _Stream()
    stateful.independent_batches = False
    with distributed.sharding(distributed.Shard(rank=1, world=2)):
        codec.encode_symbols(stateful, symbols, [2, 2, 3], batch_size=1)
    assert stateful.batches == [1, 1, 1] and gathered == [[1]]  # every batch here, no exchange


def _failing_rank(rank: int, port: int, queue) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        shard = distributed.Shard.of_process_group()
        error = CorruptDataError("chunk 3 is corrupt") if rank == 1 else None
        try:
            shard.gather({rank: rank}, error)
            queue.put((rank, "returned"))
        except CorruptDataError as exc:
            queue.put((rank, str(exc)))
    finally:
        dist.destroy_process_group()


def test_a_failure_on_one_rank_raises_on_every_rank():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.start_processes(_failing_rank, args=(port, queue), nprocs=2, start_method="spawn")
    results = dict(queue.get() for _ in range(2))
    assert results == {0: "chunk 3 is corrupt", 1: "chunk 3 is corrupt"}


def test_a_single_process_is_not_sharded(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.from_launcher() is None and distributed.active() is None
    with distributed.sharding(distributed.Shard(0, 1)) as shard:
        assert shard is None  # one rank: nothing to split
