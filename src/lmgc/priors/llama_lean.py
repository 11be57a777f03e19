"""The CPU's fastest Llama step: ``lmgc-llama-2``'s cache, a batch that sheds finished chunks, and
fewer passes over each layer's attention scores.

Why, measured at batch 64 on this project's 2-core Zen 4 (bfloat16, 256-B chunks):
  - The chunks of a lockstep batch differ in length (a 256-B chunk of hex text is ~480 to ~545
    tokens) and the batch ran as long as its longest: ~6% of the rows each step computed were
    chunks already coded, at the longest (dearest) contexts. The session orders a batch by
    decreasing length (:meth:`~.llm_engine.LLMSession`), so the chunks still running are always
    its first rows, and :meth:`LeanLlamaStepper.keep` cuts the batch to them: every layer's
    cache tensor becomes a prefix view of itself, with no copy.
  - ``lmgc-llama-2`` copied each layer's scores to float32, scaled them and copied the
    probabilities back to the model's dtype: three extra passes over the scores per layer (about
    a tenth of attention's time at 300 positions). Here the queries carry the scale and softmax
    reads the scores and writes the probabilities in the model's dtype itself (it accumulates in
    float32 inside).
  - The rotary embedding turns the queries and keys in one call, not two.
Rows of a matrix product may round differently in a batch of another size, so the shrinking
batch gives this schedule probabilities of its own: files record it as its own engine.
"""

from __future__ import annotations

import math

from .llama_compact import CompactLlamaStepper
from .llama_step import _masked, _rotate

__all__ = ["ENGINE", "LeanLlamaStepper"]

#: The recorded name of this schedule; a change to its arithmetic needs a new name.
ENGINE = "lmgc-llama-3"


class LeanLlamaStepper(CompactLlamaStepper):
    """:class:`~.llama_compact.CompactLlamaStepper` with the changes of the module docstring."""

    #: The session may drop finished sequences from the end of the batch (:meth:`keep`).
    sheds_finished = True

    def keep(self, sequences: int) -> None:
        """Go on with the first ``sequences`` sequences only (the others have ended)."""
        self._keys = [cache[:sequences] for cache in self._keys]
        self._values = [cache[:sequences] for cache in self._values]

    def _project(self, layer, h, cos, sin):
        """As the base class's, the queries scaled and one rotary call for queries and keys."""
        import torch

        model = self._model
        batch, q, _ = h.shape
        heads, dim = model.heads, model.head_dim
        turned, value = torch.nn.functional.linear(h, layer.qkv).split(
            (model.split[0] + model.split[1], model.split[2]), dim=-1)  # fmt: skip
        turned = _rotate(turned.view(batch, q, heads + model.kv_heads, dim), cos, sin)
        return turned[:, :, :heads] * model.scale, turned[:, :, heads:], value

    def _attend(self, index, grouped, end: int, mask):
        import torch

        scores = torch.matmul(grouped, self._keys[index].transpose(2, 3))
        scores[..., end:] = -math.inf
        if mask is not None:
            mask = torch.nn.functional.pad(mask, (0, self._length - end), value=-math.inf).to(scores.dtype)
        return torch.matmul(torch.softmax(_masked(scores, mask), dim=-1), self._values[index])
