"""Scale-out on torch.distributed: the ranks of a job share the lockstep batches of one input.

A stepped prior codes chunks in batches (:mod:`lmgc.codec`), and each batch is independent of the
others for the LLM priors: its probabilities depend only on its own chunks, the batch shape, the
threads and the dtype. So batch ``b`` is coded by rank ``b % world_size``, every rank gathers the
others' results, and the container is **byte-identical** to a single-process run with the same
settings, whatever the number of ranks. A prior whose stream carries state from batch to batch
(the hybrid's online mixer) cannot be split like that: its batches run on every rank (correct,
not faster), and :func:`shareable` says so.

Sharding is opt-in and scoped, so a library call inside someone else's distributed job (a DDP
hook compressing each rank's own bucket) never joins a collective by accident::

    with sharding(Shard.of_process_group()):
        blob = compressor.compress(x)          # every rank returns the same bytes

The CLI turns it on when started by ``torchrun`` (:func:`from_launcher`):
``torchrun --standalone --nproc-per-node 2 $(command -v lmgc) compress IN -o OUT``; rank 0 writes
the output. Across machines, use torchrun's rendezvous (``--nnodes``, ``--rdzv-endpoint``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["Shard", "sharding", "active", "shareable", "from_launcher"]

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """This process's place in the job: batch ``b`` is coded by rank ``b % world``."""

    rank: int
    world: int

    @classmethod
    def of_process_group(cls) -> Shard:
        """The default process group's rank and size (it must be initialized)."""
        import torch.distributed as dist

        return cls(dist.get_rank(), dist.get_world_size())

    def owns(self, batch: int) -> bool:
        return batch % self.world == self.rank

    @property
    def writes(self) -> bool:
        """Rank 0 writes the job's output files."""
        return self.rank == 0

    def gather(self, local: dict[int, T], error: BaseException | None = None) -> dict[int, T]:
        """Every rank's ``{chunk index: result}`` merged, on every rank; if any rank failed, the
        lowest failing rank's error is raised on all of them."""
        import torch.distributed as dist

        parts: list[tuple[dict[int, T], BaseException | None] | None] = [None] * self.world
        dist.all_gather_object(parts, (local, error))
        merged: dict[int, T] = {}
        for part, part_error in parts:
            if part_error is not None:
                raise part_error
            merged.update(part)
        return merged


_ACTIVE: ContextVar[Shard | None] = ContextVar("lmgc_shard", default=None)


@contextlib.contextmanager
def sharding(shard: Shard | None) -> Iterator[Shard | None]:
    """Code the batches of stepped priors across ranks inside this block (``None``: not at all)."""
    token = _ACTIVE.set(shard if shard is not None and shard.world > 1 else None)
    try:
        yield _ACTIVE.get()
    finally:
        _ACTIVE.reset(token)


def active() -> Shard | None:
    """The shard in effect, or ``None`` for a single-process run."""
    return _ACTIVE.get()


def shareable(stream) -> bool:
    """Whether a prior stream's batches are independent (``independent_batches``), so ranks may
    split them."""
    return bool(getattr(stream, "independent_batches", False))


def from_launcher() -> Shard | None:
    """The shard of a process started by torchrun (``WORLD_SIZE`` > 1 in its environment), with
    the default process group initialized; ``None`` otherwise.

    The group is gloo whatever device the model runs on: the ranks exchange only finished
    payloads and decoded symbols (small pickled objects), never tensors of the model, which is
    what gloo's object collectives are for; NCCL would add nothing but a CUDA requirement.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return Shard.of_process_group()
