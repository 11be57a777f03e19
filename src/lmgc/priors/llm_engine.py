"""Running the model: the restricted output head and the KV-cached step loop both sides replay.

The probabilities an LLM prior codes with come from here, so everything that decides their bits
(the cache, the shapes fed per step, the threads, the float64 softmax) is in one place.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ModelError, ModelMismatchError
from . import llama_compact, llama_graph, llama_lean, llama_step

if TYPE_CHECKING:
    from .llm import _LLMBase

__all__ = ["softmax", "RestrictedHead", "LLMSession", "TRANSFORMERS", "ENGINES", "STEPPERS", "default_engine",
           "check_engine", "probe_digest"]  # fmt: skip

#: The model's own forward with transformers' KV cache: what files without a recorded engine used,
#: and what models :mod:`.llama_step` does not cover use.
TRANSFORMERS = "transformers"
#: The stepper class of each lmgc engine (the others are :data:`TRANSFORMERS`).
STEPPERS = {llama_step.ENGINE: llama_step.LlamaStepper,
            llama_compact.ENGINE: llama_compact.CompactLlamaStepper,
            llama_lean.ENGINE: llama_lean.LeanLlamaStepper,
            llama_graph.ENGINE: llama_graph.GraphLlamaStepper}  # fmt: skip
ENGINES = (TRANSFORMERS, *STEPPERS)


def default_engine(model, device: str) -> str:
    """``$LMGC_ENGINE`` if set (a way around an engine that fails on some machine), else the
    fastest schedule that covers ``model`` on ``device``: CUDA graphs on a GPU, where a step is
    bound by kernel launches; elsewhere the lean step (a cache in the model's dtype, a batch that
    sheds finished chunks).

    Raises:
        ModelError: ``$LMGC_ENGINE`` names no engine, or one that cannot run ``model``.
    """
    chosen = os.environ.get("LMGC_ENGINE")
    if chosen:
        if chosen not in ENGINES:
            raise ModelError(f"LMGC_ENGINE={chosen!r} is not an LLM engine; one of {', '.join(ENGINES)}")
        check_engine(chosen, model, getattr(model.config, "model_type", "this model"))
        return chosen
    if not llama_step.supports(model):
        return TRANSFORMERS
    return llama_graph.ENGINE if device.startswith("cuda") else llama_lean.ENGINE


def check_engine(engine: str, model, spec: str) -> None:
    """ModelMismatchError where a recorded engine cannot run this model."""
    if engine in STEPPERS and not llama_step.supports(model):
        raise ModelMismatchError(f"this file was coded with the {engine} engine, which needs a plain "
                                 f"Llama-architecture model; {spec!r} is not one")  # fmt: skip


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (deterministic numpy code shared by encoder and decoder)."""
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z


class RestrictedHead:
    """The LM with its output layer cut down to the alphabet's rows.

    The output layer reads a vocabulary-sized matrix every step (a fifth of SmolLM2's weights);
    only the alphabet's logits are needed, so only their rows are multiplied. Softcapping (Gemma)
    is applied as the model itself does.
    """

    def __init__(self, model, token_ids) -> None:
        head = model.get_output_embeddings()
        self.body = model.base_model
        self.weight = head.weight[token_ids].detach().clone()
        self.bias = None if head.bias is None else head.bias[token_ids].detach().clone()
        self.softcap = getattr(model.config, "final_logit_softcapping", None)
        params = inspect.signature(type(self.body).forward).parameters
        # transformers 5 renamed ``past_key_values`` to ``cache``; the cache is updated in place.
        self.cache_arg = "cache" if "cache" in params else "past_key_values"

    def logits(self, input_ids, cache) -> np.ndarray:
        """(batch, positions, alphabet) float32 logits of the model's own forward, as numpy."""
        import torch

        kwargs = {self.cache_arg: cache, "use_cache": cache is not None}
        with torch.inference_mode():
            return self.project(self.body(input_ids=input_ids, **kwargs).last_hidden_state)

    def project(self, hidden) -> np.ndarray:
        """Final hidden states -> float32 logits of the alphabet, as numpy."""
        import torch

        with torch.inference_mode():
            logits = torch.nn.functional.linear(hidden, self.weight, self.bias)
            if self.softcap:
                logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits.float().cpu().numpy()


class LLMSession:
    """KV-cached, one symbol per step: the loop the decoder must run, so the encoder runs it too.

    ``lengths`` are the chunks' symbol counts: a chunk is fed until its last symbol has been
    predicted. ``extra_tokens(t)`` gives the token ids fed after the ``t``-th symbol at no cost
    (nibble mode's separators); the same for every chunk of the batch, so the batch stays
    rectangular. ``positions`` is the number of positions the session will feed (sizes the
    preallocated cache of the ``lmgc-llama-1`` engine, which grows if it was too small).

    With an engine whose stepper ``sheds_finished`` (``lmgc-llama-3``), the model steps the chunks
    in order of decreasing length (ties in batch order), and a step runs only the chunks that
    still have a symbol to predict: they are always the first rows. The rows of chunks that have
    ended come back uniform (no caller codes with them).
    """

    def __init__(self, prior: "_LLMBase", lengths: Sequence[int], extra_tokens, positions: int) -> None:
        import torch

        torch.set_num_threads(prior.threads)
        self._prior = prior
        self._batch = batch_size = len(lengths)
        self._stepper = None
        if prior.engine == TRANSFORMERS:
            from transformers import DynamicCache

            cache = DynamicCache()
            self._logits = lambda inputs: prior.head.logits(inputs, cache)
        else:
            stepper = STEPPERS[prior.engine](prior.fused_model(), batch_size, max(positions, 1))
            self._logits = lambda inputs: prior.head.project(stepper.hidden(inputs))
            if getattr(stepper, "sheds_finished", False):
                self._stepper = stepper
        lengths = np.asarray(lengths, dtype=np.int64)
        self._order = np.argsort(-lengths, kind="stable") if self._stepper else np.arange(batch_size)
        self._lengths = lengths[self._order]
        self._running = batch_size
        self._extra_tokens = extra_tokens
        self._fed = 0

    def step(self, symbols: np.ndarray | None) -> np.ndarray:
        import torch

        prior = self._prior
        if symbols is None:
            ids = np.full((self._running, 1), prior.bos_id, dtype=np.int64)
        else:
            self._fed += 1
            if self._stepper is not None:  # those with a symbol left to predict, a prefix in this order
                running = max(int(np.count_nonzero(self._lengths > self._fed)), 1)
                if running < self._running:
                    self._running = running
                    self._stepper.keep(running)
            rows = self._order[: self._running]
            extra = np.asarray(self._extra_tokens(self._fed), dtype=np.int64)
            ids = np.concatenate([prior.token_ids[symbols[rows]][:, None],
                                  np.broadcast_to(extra, (self._running, len(extra)))], axis=1)  # fmt: skip
        inputs = torch.from_numpy(np.ascontiguousarray(ids)).to(prior.lm.device)
        probabilities = softmax(self._logits(inputs)[:, -1])
        if self._stepper is None:
            return probabilities
        out = np.full((self._batch, probabilities.shape[1]), 1.0 / probabilities.shape[1])
        out[self._order[: self._running]] = probabilities
        return out


#: Steps of the numerics probe after BOS: the prompt's shapes and then single-token steps, as
#: every decode starts.
PROBE_STEPS = 4


def probe_digest(prior: "_LLMBase", batch: int) -> str:
    """The SHA-256 (first 8 bytes, hex) of the probabilities of a fixed probe: ``batch`` sequences
    stepped from BOS through fixed symbols with the prior's engine, threads, dtype and device, at
    the size of a file's first batch. A machine whose kernels round differently gives another
    digest (a few steps' cost), where the data's checksum would tell only after the whole decode."""
    session = LLMSession(prior, [1 + PROBE_STEPS] * batch, lambda t: (), 1 + PROBE_STEPS)
    digest, symbols = hashlib.sha256(), None
    for t in range(PROBE_STEPS + 1):
        digest.update(session.step(symbols).tobytes())
        symbols = (np.arange(batch) * 7 + t) % prior.alphabet_size
    return digest.hexdigest()[:16]
