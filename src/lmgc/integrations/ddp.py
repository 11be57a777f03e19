"""PyTorch DDP: a communication hook that exchanges lmgc-compressed gradient buckets.

Entropy-coded bytes cannot be summed by allreduce, so :func:`lossless_hook` all-gathers them.
Each rank divides its bucket by the world size (before coding, as DDP's own allreduce does: a
power-of-two world size then changes only exponents, and fp16 cannot overflow in the sum),
compresses it, all-gathers the container sizes and then the containers (padded to the largest),
decodes every other rank's bucket and sums the buckets in rank order 0, 1, 2, ... Every rank
adds the same values in the same order, so every rank ends with bit-identical gradients.

Against plain DDP: allreduce sums in the backend's order (gloo's ring, NCCL's trees). With two
ranks that cannot matter, ``a + b == b + a`` exactly, and the hook reproduces plain DDP bit for
bit; with more ranks the two may differ in the last bit (floating-point addition is not
associative), while the hook's result stays identical on every rank.

What it costs: the hook codes, exchanges and decodes before it returns (a completed future), so
communication does not overlap the rest of the backward pass, and the context prior codes about
10 MB/s per core. All-gather moves ``(world - 1) x`` the largest container per rank where ring
allreduce moves ``2 (world - 1) / world x`` the raw bucket: the hook pays off on slow links with
few ranks. :class:`LosslessHookState` counts bytes and seconds so a run can be judged.

>>> import lmgc.integrations.ddp as lossless
>>> state = lossless.LosslessHookState()                      # prior="context" by default
>>> model.register_comm_hook(state, lossless.lossless_hook)   # doctest: +SKIP
>>> print(state.summary())                                    # after some steps  # doctest: +SKIP
"""

import time  # no `from __future__ import annotations`: DDP checks the hook's real annotations
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

import lmgc
from lmgc.errors import CorruptDataError

__all__ = ["LosslessHookState", "lossless_hook"]


@dataclass
class LosslessHookState:
    """What :func:`lossless_hook` needs, and what it measured on this rank.

    Args:
        process_group: the group to exchange buckets in; ``None``: the default (WORLD) group.
        prior: the lmgc prior; ``context`` (default) needs no model and codes megabytes per
            second, the LLM priors code bytes per second.

    Attributes:
        raw_bytes: bucket bytes this rank gave the hook (what allreduce would have summed).
        sent_bytes: bytes of this rank's containers.
        wire_bytes: bytes this rank put into its all-gathers (sizes, and containers padded to
            the largest of the step); each other rank receives them.
        encode_seconds, exchange_seconds, decode_seconds: time spent coding, in the two
            all-gathers, and decoding the other ranks' buckets.
        buckets: buckets handled.
    """

    process_group: dist.ProcessGroup | None = None
    prior: str = "context"
    raw_bytes: int = 0
    sent_bytes: int = 0
    wire_bytes: int = 0
    encode_seconds: float = 0.0
    exchange_seconds: float = 0.0
    decode_seconds: float = 0.0
    buckets: int = 0
    compressor: lmgc.Compressor = field(init=False, repr=False)
    decompressor: lmgc.Decompressor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.compressor = lmgc.Compressor(prior=self.prior)  # an LLM prior loads its model once
        self.decompressor = lmgc.Decompressor()

    @property
    def ratio(self) -> float:
        """Container bytes over raw bytes (0.0 before the first bucket)."""
        return self.sent_bytes / self.raw_bytes if self.raw_bytes else 0.0

    def summary(self) -> str:
        """One line: bytes and seconds so far on this rank."""
        return (
            f"lmgc {self.prior}: {self.buckets} buckets, {self.raw_bytes} raw bytes -> {self.sent_bytes} "
            f"coded ({self.ratio:.2%}), {self.wire_bytes} sent with padding; encode "
            f"{self.encode_seconds:.3f} s, exchange {self.exchange_seconds:.3f} s, decode {self.decode_seconds:.3f} s"
        )


def _exchange(blob: bytes, group, device: torch.device) -> tuple[list[torch.Tensor], list[int]]:
    """Every rank's container (padded) and its true length, by two all-gathers."""
    world = dist.get_world_size(group)
    size = torch.tensor([len(blob)], dtype=torch.int64, device=device)
    sizes = [torch.empty_like(size) for _ in range(world)]
    dist.all_gather(sizes, size, group=group)
    lengths = [int(s.item()) for s in sizes]
    padded = torch.zeros(max(lengths), dtype=torch.uint8)
    padded[: len(blob)] = torch.frombuffer(bytearray(blob), dtype=torch.uint8)
    padded = padded.to(device)
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded, group=group)
    return gathered, lengths


def lossless_hook(state: LosslessHookState, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """DDP communication hook: the mean of the bucket over all ranks, from lmgc-coded bytes.

    Register it with ``ddp_model.register_comm_hook(state, lossless_hook)``. See the module
    docstring for the order of operations and why all ranks end bit-identical.

    Raises:
        LmgcError: another rank's container does not decode (its rank and the bucket are named);
            only this rank raises, so the others will wait at their next collective.
    """
    group = state.process_group if state.process_group is not None else dist.group.WORLD
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    buffer = bucket.buffer()
    local = buffer.detach().div(world).cpu()

    start = time.perf_counter()
    blob = state.compressor.compress(local)
    encoded = time.perf_counter()
    gathered, lengths = _exchange(blob, group, buffer.device)
    exchanged = time.perf_counter()

    total = None
    for other, (data, length) in enumerate(zip(gathered, lengths)):
        part = local if other == rank else _decode(state, data[:length], other, bucket.index(), local)
        total = part.clone() if total is None else total.add_(part)
    done = time.perf_counter()

    state.raw_bytes += local.numel() * local.element_size()
    state.sent_bytes += len(blob)
    state.wire_bytes += 8 + max(lengths)  # the int64 size, then the padded container
    state.encode_seconds += encoded - start
    state.exchange_seconds += exchanged - encoded
    state.decode_seconds += done - exchanged
    state.buckets += 1

    buffer.copy_(total)
    future: torch.futures.Future[torch.Tensor] = torch.futures.Future()
    future.set_result(buffer)
    return future


def _decode(state: LosslessHookState, data: torch.Tensor, rank: int, index: int, like: torch.Tensor) -> torch.Tensor:
    """Rank ``rank``'s bucket ``index``, checked to be a tensor shaped and typed like ours."""
    where = f"bucket {index} from rank {rank}"
    try:
        part = state.decompressor.decompress(data.cpu().numpy().tobytes())
    except lmgc.LmgcError as exc:
        raise type(exc)(f"{where}: {exc}") from exc
    if not isinstance(part, torch.Tensor) or part.dtype != like.dtype or part.shape != like.shape:
        found = f"{part.dtype} {tuple(part.shape)}" if isinstance(part, torch.Tensor) else type(part).__name__
        raise CorruptDataError(f"{where} decodes to {found}, not {like.dtype} {tuple(like.shape)}")
    return part
