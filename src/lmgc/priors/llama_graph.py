"""Stepping a Llama-family model with fixed shapes, replayed as a CUDA graph on a GPU.

Why: on a GPU the ``lmgc-llama-1`` step is bound by the host, not the device. Measured on an H200
(``benchmarks/results/llm_profile_gpu.md``): ~1,350 kernel launches per step, 5.7 ms of device
work in a 45 ms forward, and the same time at batch 1 as at batch 1,294. A CUDA graph launches a
whole step at once, but it replays fixed shapes and fixed addresses, and in ``lmgc-llama-1`` the
attention reads a prefix that grows by one position per step.

So here attention reads the cache in spans of :data:`SPAN` positions, the positions past the
current one masked out, and the position, the cache writes (``index_copy_``) and the mask come
from a device tensor: within a span every step has the same shapes, one graph serves it, and a
chunk of ~580 positions needs ten graphs. Masking changes the softmax's sums (over padded
rows), so this schedule's probabilities are its own: the header records it as its own engine,
and it runs the same arithmetic eagerly on a CPU (slower there than ``lmgc-llama-1``; a CPU
decodes such a file only where its arithmetic matches, as the numerics probe checks).

The encoder and the decoder capture and replay the same graphs at the same steps; a step's
outputs always come from a replay, never from the eager warm-up that precedes a capture.
"""

from __future__ import annotations

import math

from ..errors import ModelError
from .llama_step import LlamaStepper

__all__ = ["ENGINE", "SPAN", "GraphLlamaStepper"]

#: The recorded name of this schedule; a change to its arithmetic needs a new name.
ENGINE = "lmgc-llama-graph-1"
#: Cache positions attention reads per graph (the span grows in these steps).
SPAN = 64


def _spans(positions: int) -> int:
    return -(-positions // SPAN) * SPAN


class GraphLlamaStepper(LlamaStepper):
    """:class:`~.llama_step.LlamaStepper`'s interface with fixed-shape steps (see the module
    docstring); single-token steps on a GPU replay a CUDA graph per span."""

    def _allocate(self, length: int, batch: int) -> None:
        """Whole spans, zero past what was fed: masked positions must be finite (0 x NaN is NaN)."""
        filled = self._filled
        super()._allocate(_spans(length), batch)
        self._keys[..., filled:].zero_()
        self._values[:, :, :, filled:].zero_()
        self._graph = None  # a graph holds the old cache's addresses

    def _forward(self, input_ids):
        import torch

        batch, q = input_ids.shape
        start = self._filled
        self._reserve(start + q, batch)
        span = min(self._length, _spans(start + q))
        if q == 1 and input_ids.device.type == "cuda":
            out = self._replay(input_ids, start, span)
        else:
            out = self._compute(input_ids, torch.tensor(start, device=input_ids.device), span)
        self._filled = start + q
        return out

    def _replay(self, input_ids, start: int, span: int):
        import torch

        if not hasattr(self, "_ids"):  # the graphs' static inputs
            self._ids = torch.zeros_like(input_ids)
            self._position = torch.zeros((), dtype=torch.int64, device=input_ids.device)
        self._ids.copy_(input_ids)
        self._position.fill_(start)
        if self._graph is None or self._graph[0] != span:
            self._graph = None  # free the last span's graph before capturing the next
            self._graph = (span, *self._capture(span))
        self._graph[1].replay()
        return self._graph[2]

    def _capture(self, span: int):
        """A graph of one step at this span; its warm-up (torch's rule before a capture) writes
        this step's cache slot eagerly, which the replay then overwrites before reading it."""
        import torch

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self._compute(self._ids, self._position, span)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                out = self._compute(self._ids, self._position, span)
        except RuntimeError as exc:
            raise ModelError(f"this GPU and torch could not capture the {ENGINE} engine's step as a CUDA "
                             f"graph ({exc}); code with LMGC_ENGINE=lmgc-llama-1 instead (a file records "
                             "its engine, so decoders follow)") from None  # fmt: skip
        return graph, out

    def _compute(self, input_ids, start, span: int):
        """The step for tokens at positions ``start`` (a device scalar) onwards, attention over
        the first ``span`` cache positions with those past each token masked."""
        import torch

        model = self._model
        device = input_ids.device
        positions = start + torch.arange(input_ids.shape[1], device=device)
        x = model.body.embed_tokens(input_ids)
        cos, sin = model.body.rotary_emb(x, positions[None])
        mask = torch.zeros(len(positions), span, dtype=torch.float32, device=device)
        mask.masked_fill_(torch.arange(span, device=device)[None, :] > positions[:, None], -math.inf)
        for index, layer in enumerate(model.layers):
            x = self._block(index, layer, x, cos, sin, (positions, span), mask)
        return model.body.norm(x)

    def _write(self, index, keys, values, where) -> int:
        """At the device positions of ``where`` = (positions, span); attention reads the span."""
        positions, span = where
        self._keys[index].index_copy_(3, positions, keys.transpose(2, 3).float())
        self._values[index].index_copy_(2, positions, values.float())
        return span
