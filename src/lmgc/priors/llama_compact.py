"""The CPU's fastest Llama step: a KV cache in the model's dtype, allocated in whole spans.

Why: with ``lmgc-llama-1``'s float32 cache, attention was the other half of a CPU step. Measured
at batch 64 and ~300 positions on this project's 2-core Zen 4 (bfloat16 weights), its two
batched products took ~45 ms of a 127 ms step, as much as the weights' matmuls (48 ms): they
read the whole cache every step, in float32, and torch's products of a prefix of a longer buffer
run slower than of a contiguous one (in bfloat16 the value product even copies the prefix
first). Here the cache holds the model's dtype (half the bytes in bfloat16, and bfloat16
products read them ~2.5x faster), and each layer's keys and values are exactly :data:`SPAN`-
rounded positions long, zero past what was fed and reallocated one span longer when full, so
both products read contiguous blocks: scores past the fed positions are masked out, and their
probabilities (exact zeros) meet zero values.

The scores and the probabilities are rounded to the model's dtype (softmax runs in float32), so
probabilities differ from ``lmgc-llama-1`` beyond rounding noise: the header records this
schedule as its own engine. For a float32 model the arithmetic is float32 throughout.
"""

from __future__ import annotations

import math

from .llama_step import LlamaStepper, _masked

__all__ = ["ENGINE", "SPAN", "CompactLlamaStepper"]

#: The recorded name of this schedule; a change to its arithmetic needs a new name.
ENGINE = "lmgc-llama-2"
#: Cache positions are allocated in whole multiples of this.
SPAN = 64


class CompactLlamaStepper(LlamaStepper):
    """:class:`~.llama_step.LlamaStepper` with the cache described in the module docstring."""

    def _allocate(self, length: int, batch: int) -> None:
        """An empty cache (one key and one value tensor per layer); :meth:`_reserve` grows it as
        positions are fed, so no claimed length is allocated ahead."""
        model = self._model
        empty = self._cache((batch, model.kv_heads, 0, model.head_dim), model.layers[0].o.dtype, batch, 0)
        self._keys, self._values, self._length = [empty] * len(model.layers), [empty] * len(model.layers), 0

    def _reserve(self, end: int, batch: int) -> None:
        """Room for positions ``:end``: every tensor reallocated at whole spans, zeroed (masked
        positions must be finite: 0 x NaN is NaN), holding what was fed so far; one at a time,
        so growing needs one layer's tensor more, not a second cache."""
        if end <= self._length:
            return
        length, filled = -(-end // SPAN) * SPAN, self._filled
        for cache in (self._keys, self._values):
            for index, old in enumerate(cache):
                cache[index] = self._cache((*old.shape[:2], length, old.shape[3]), old.dtype, batch, length, zero=True)
                cache[index][:, :, :filled] = old[:, :, :filled]
        self._length = length

    def _write(self, index, keys, values, start: int) -> int:
        end = start + keys.shape[2]
        self._keys[index][:, :, start:end] = keys
        self._values[index][:, :, start:end] = values
        return end

    def _attend(self, index, grouped, end: int, mask):
        import torch

        scores = torch.matmul(grouped, self._keys[index].transpose(2, 3)).float().mul_(self._model.scale)
        scores[..., end:] = -math.inf
        if mask is not None:
            mask = torch.nn.functional.pad(mask, (0, self._length - end), value=-math.inf)
        probs = torch.softmax(_masked(scores, mask), dim=-1).to(grouped.dtype)
        return torch.matmul(probs, self._values[index])
