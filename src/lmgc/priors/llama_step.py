"""A one-token-per-step forward for Llama-family models with a preallocated KV cache.

Why not the model's own ``forward``: stepping a batch of chunks one token at a time, transformers'
``DynamicCache`` grows every layer's keys and values by concatenation (the whole cache is copied
every step) and its attention repeats the key/value heads for grouped-query attention. At batch
64 on a 2-core CPU that was 55% (the copies) and 24% (attention) of a step, against 13% in the
matmuls that are the model's real work. Here the cache is allocated once for the longest chunk,
written in place, and attention reads only the filled prefix with the query heads grouped onto
their key/value head (no repeat). The projections are fused (q/k/v in one matmul, gate/up in
one), which halves the number of matmul calls per layer.

Everything else (embedding, RMSNorm, rotary tables, MLP activation) is the model's own modules,
so this is only a different schedule of the same computation: its logits match the model's own
forward to rounding (tested), and, like any schedule, encoder and decoder both run this one —
the header records it as the prior's ``engine``.
"""

from __future__ import annotations

import math

from ..errors import LimitExceededError

__all__ = ["ENGINE", "supports", "kv_bytes_per_position", "FusedLlama", "LlamaStepper", "MAX_PREALLOCATED"]

#: The recorded name of this schedule; a change to its arithmetic needs a new name.
ENGINE = "lmgc-llama-1"
#: The most KV cache a session allocates before any position is fed. The positions it is sized
#: for come from symbol counts a file claims; beyond this the cache grows as positions are
#: actually fed, so a forged count costs memory only as fast as decoding proceeds.
MAX_PREALLOCATED = 4 << 30

_ARCHITECTURES = ("llama",)


def supports(model) -> bool:
    """Whether ``model`` is a plain Llama (no bias, default RoPE, SiLU, no sliding window)."""
    config = model.config
    rope = getattr(config, "rope_parameters", None) or {}
    return (
        getattr(config, "model_type", None) in _ARCHITECTURES
        and rope.get("rope_type", "default") == "default"
        and getattr(config, "hidden_act", None) == "silu"
        and not getattr(config, "attention_bias", False)
        and not getattr(config, "mlp_bias", False)
        and getattr(config, "pretraining_tp", 1) == 1
    )


def _attention_shape(config) -> tuple[int, int, int]:
    """(query heads, key/value heads, head dimension) of a model config."""
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    return heads, kv_heads, getattr(config, "head_dim", None) or config.hidden_size // heads


def kv_bytes_per_position(config) -> int:
    """The float32 keys and values of every layer for one position of one sequence."""
    _, kv_heads, head_dim = _attention_shape(config)
    return 2 * config.num_hidden_layers * kv_heads * head_dim * 4


class _Layer:
    """One decoder block's weights, fused for stepping."""

    def __init__(self, block) -> None:
        import torch

        attn, mlp = block.self_attn, block.mlp
        self.input_norm = block.input_layernorm
        self.post_norm = block.post_attention_layernorm
        self.qkv = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]).detach()
        self.o = attn.o_proj.weight.detach()
        self.gate_up = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).detach()
        self.down = mlp.down_proj.weight.detach()
        self.act = mlp.act_fn


class FusedLlama:
    """A model's weights laid out for stepping (fused once per model, shared by its sessions)."""

    def __init__(self, model) -> None:
        import torch

        config = model.config
        self.body = model.base_model
        with torch.inference_mode():
            self.layers = [_Layer(block) for block in self.body.layers]
        self.heads, self.kv_heads, self.head_dim = _attention_shape(config)
        self.per_position = kv_bytes_per_position(config)
        self.split = (self.heads * self.head_dim, self.kv_heads * self.head_dim, self.kv_heads * self.head_dim)
        self.scale = 1.0 / math.sqrt(self.head_dim)


class LlamaStepper:
    """The model body for a batch of ``batch`` sequences, with a cache for ``length`` positions
    (grown by reallocation if more are fed).

    ``hidden(input_ids)`` feeds the next ``q`` tokens of every sequence (all sequences are at the
    same position: the codec's batches are lockstep) and returns the final-normed hidden states.
    """

    def __init__(self, model: FusedLlama, batch: int, length: int) -> None:
        import torch

        self._model = model
        self._filled = 0
        with torch.inference_mode():
            self._allocate(min(length, max(16, MAX_PREALLOCATED // (batch * model.per_position))), batch)

    def _allocate(self, length: int, batch: int) -> None:
        """A cache for ``length`` positions, holding what was fed so far; float32 whatever the
        model's dtype (CPU batched matmuls of these small shapes run ~2x faster in float32 than
        in bfloat16 when they read a prefix of a longer cache), keys stored transposed so that
        both attention products read the filled prefix in place, without a contiguous copy."""
        import torch

        model, filled = self._model, self._filled
        shape = (len(model.layers), batch, model.kv_heads)
        keys = self._cache((*shape, model.head_dim, length), torch.float32, batch, length)
        values = self._cache((*shape, length, model.head_dim), torch.float32, batch, length)
        if filled:
            keys[..., :filled] = self._keys[..., :filled]
            values[:, :, :, :filled] = self._values[:, :, :, :filled]
        self._keys, self._values, self._length = keys, values, length

    def _cache(self, shape: tuple, dtype, batch: int, length: int, zero: bool = False):
        """An uninitialised (or zeroed) cache tensor on the model's device; LimitExceededError,
        naming the whole cache's size in ``dtype`` at ``length`` positions, where it cannot be
        allocated."""
        import torch

        model = self._model
        try:
            make = torch.zeros if zero else torch.empty
            return make(shape, dtype=dtype, device=model.layers[0].o.device)
        except RuntimeError:  # torch's out-of-memory errors (CPU and CUDA) are RuntimeErrors
            need = model.per_position // 4 * dtype.itemsize * batch * length
            raise LimitExceededError(
                f"the model's KV cache for {batch} chunks in lockstep at {length} positions needs "
                f"{need / 2**30:.1f} GiB, more than this machine can allocate (a smaller batch or "
                "chunk size needs less)"
            ) from None

    def _reserve(self, end: int, batch: int) -> None:
        """Room in the cache for positions ``:end`` (it grows by doubling)."""
        if end > self._length:
            self._allocate(max(end, 2 * self._length), batch)

    def hidden(self, input_ids):
        """(batch, q) token ids -> (batch, q, hidden) final-normed hidden states."""
        import torch

        with torch.inference_mode():
            return self._forward(input_ids)

    def _forward(self, input_ids):
        import torch

        batch, q = input_ids.shape
        start = self._filled
        self._reserve(start + q, batch)
        model = self._model
        x = model.body.embed_tokens(input_ids)
        positions = torch.arange(start, start + q, device=input_ids.device)[None]
        cos, sin = model.body.rotary_emb(x, positions)
        mask = None
        if q > 1:  # query i sees the cache and the new tokens up to itself
            keys = torch.arange(start + q, device=x.device)
            mask = torch.zeros(q, start + q, dtype=torch.float32, device=x.device)
            mask.masked_fill_(keys[None, :] > (start + torch.arange(q, device=x.device))[:, None], -math.inf)
        for index, layer in enumerate(model.layers):
            x = self._block(index, layer, x, cos, sin, start, mask)
        self._filled = start + q
        return model.body.norm(x)

    def _block(self, index, layer, x, cos, sin, where, mask):
        """Decoder block ``index``: attention (cache written at ``where``), then the MLP."""
        import torch

        x = x + self._attention(index, layer, layer.input_norm(x), cos, sin, where, mask)
        gate, up = torch.nn.functional.linear(layer.post_norm(x), layer.gate_up).chunk(2, dim=-1)
        return x + torch.nn.functional.linear(layer.act(gate) * up, layer.down)

    def _attention(self, index, layer, h, cos, sin, where, mask):
        """Grouped-query attention of layer ``index`` with the new keys and values written to the
        cache at ``where`` first (:meth:`_write`) and ``mask`` added to the scores if given."""
        import torch

        model = self._model
        batch, q, _ = h.shape
        heads, kv_heads, dim = model.heads, model.kv_heads, model.head_dim
        group = heads // kv_heads
        query, key, value = self._project(layer, h, cos, sin)
        values = value.view(batch, q, kv_heads, dim).transpose(1, 2)
        end = self._write(index, key.transpose(1, 2), values, where)
        # (batch, kv_heads, group * q, dim): the query heads that share a key/value head, together
        grouped = query.view(batch, q, kv_heads, group, dim).permute(0, 2, 3, 1, 4)
        context = self._attend(index, grouped.reshape(batch, kv_heads, group * q, dim), end, mask)
        context = context.view(batch, kv_heads, group, q, dim).permute(0, 3, 1, 2, 4)
        return torch.nn.functional.linear(context.reshape(batch, q, heads * dim).to(h.dtype), layer.o)

    def _project(self, layer, h, cos, sin):
        """The rotated (batch, q, heads, dim) queries and (batch, q, kv_heads, dim) keys of ``h``,
        and its values as they leave the fused projection."""
        import torch

        model = self._model
        batch, q, _ = h.shape
        query, key, value = torch.nn.functional.linear(h, layer.qkv).split(model.split, dim=-1)
        query = _rotate(query.view(batch, q, model.heads, model.head_dim), cos, sin)
        key = _rotate(key.view(batch, q, model.kv_heads, model.head_dim), cos, sin)
        return query, key, value

    def _attend(self, index, grouped, end: int, mask):
        """Layer ``index``'s attention of the grouped queries over cache positions ``:end``."""
        import torch

        scores = torch.matmul(grouped.float(), self._keys[index, :, :, :, :end]) * self._model.scale
        return torch.matmul(torch.softmax(_masked(scores, mask), dim=-1), self._values[index, :, :, :end])

    def _write(self, index, keys, values, start: int) -> int:
        """Store layer ``index``'s new (batch, kv_heads, q, dim) keys and values at positions
        ``start`` onwards; the cache positions attention then reads."""
        end = start + keys.shape[2]
        self._keys[index][..., start:end] = keys.transpose(2, 3)
        self._values[index][:, :, start:end] = values
        return end


def _masked(scores, mask):
    """(batch, kv_heads, group * q, end) scores with the (q, end) ``mask`` added to each group."""
    if mask is None:
        return scores
    batch, kv_heads, rows, end = scores.shape
    q = mask.shape[0]
    return (scores.view(batch, kv_heads, rows // q, q, end) + mask).view(batch, kv_heads, rows, end)


def _rotate(x, cos, sin):
    """Rotary position embedding of (batch, q, heads, dim) by (1, q, dim) tables."""
    import torch

    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos[:, :, None] + rotated * sin[:, :, None]
