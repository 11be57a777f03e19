"""DDP integration: two gloo processes train with and without ``lossless_hook``.

Equality with plain DDP is exact here because there are two ranks: DDP's allreduce and the
hook both divide each rank's gradient by 2 and add the two halves, and ``a + b == b + a`` in
floating point whatever order gloo sums in. (With three or more ranks gloo's order and the
hook's rank order 0, 1, 2 may round differently; the hook's ranks would still agree.)
"""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from lmgc.errors import CorruptDataError
from lmgc.integrations.ddp import LosslessHookState, _decode, lossless_hook

WORLD = 2
STEPS = 3


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 8, 3)
        self.fc = torch.nn.Linear(8 * 6 * 6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.max_pool2d(F.relu(self.conv(x)), 2).flatten(1))


def _train(rank: int, hook: bool) -> tuple[dict[str, torch.Tensor], LosslessHookState | None]:
    torch.manual_seed(0)  # the same initial model on every rank
    ddp = DistributedDataParallel(_Net())
    state = None
    if hook:
        state = LosslessHookState()
        ddp.register_comm_hook(state, lossless_hook)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
    data = torch.Generator().manual_seed(100 + rank)  # each rank its own batches
    for _ in range(STEPS):
        x = torch.randn(16, 1, 14, 14, generator=data)
        y = torch.randint(0, 10, (16,), generator=data)
        optimizer.zero_grad()
        F.cross_entropy(ddp(x), y).backward()
        optimizer.step()
    return {k: v.detach().clone() for k, v in ddp.module.state_dict().items()}, state


def _worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        plain, _ = _train(rank, hook=False)
        coded, state = _train(rank, hook=True)
        counts = [state.raw_bytes, state.sent_bytes, state.wire_bytes, state.buckets]
        torch.save({"plain": plain, "coded": coded, "counts": counts}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bits(tensor: torch.Tensor) -> bytes:
    return tensor.numpy().tobytes()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{rank}.pt") for rank in range(WORLD)]


def test_hook_gives_every_rank_the_gradients_of_plain_ddp_bit_for_bit(runs):
    initial = {k: v.detach() for k, v in (torch.manual_seed(0), _Net())[1].state_dict().items()}
    for key, value in runs[0]["coded"].items():
        assert _bits(value) != _bits(initial[key]), key  # training moved every parameter
        for run in runs:
            assert _bits(run["coded"][key]) == _bits(value), key  # the ranks agree
            assert _bits(run["plain"][key]) == _bits(value), key  # and equal plain DDP


def test_hook_state_counts_the_bytes_it_coded_and_sent(runs):
    param_bytes = sum(p.numel() * 4 for p in _Net().parameters())
    for run in runs:
        raw, sent, wire, buckets = run["counts"]
        assert raw == STEPS * param_bytes  # every gradient went through the hook, once per step
        assert buckets >= STEPS
        assert sent < raw  # real gradients compress
        assert sent + 8 * buckets <= wire  # an int64 size per bucket, containers padded to the largest
    assert runs[0]["counts"][2] == runs[1]["counts"][2]  # both padded to the same sizes
    print(f"\nraw, coded, sent with padding, buckets per rank: {[run['counts'] for run in runs]}")


def test_a_bucket_that_does_not_decode_raises_lmgc_error_naming_rank_and_bucket():
    state, like = LosslessHookState(), torch.linspace(-1, 1, 1000)
    damaged = bytearray(state.compressor.compress(like))
    damaged[len(damaged) // 2] ^= 0x01
    with pytest.raises(CorruptDataError, match=r"^bucket 3 from rank 1: .*corrupt"):
        _decode(state, torch.frombuffer(damaged, dtype=torch.uint8), 1, 3, like)
    other = bytearray(state.compressor.compress(like[:10]))
    with pytest.raises(CorruptDataError, match=r"^bucket 3 from rank 1 decodes to torch.float32 \(10,\), "
                                               r"not torch.float32 \(1000,\)$"):  # fmt: skip
        _decode(state, torch.frombuffer(other, dtype=torch.uint8), 1, 3, like)
