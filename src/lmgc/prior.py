"""Stage 2: the prior, which turns text into symbols and gives a distribution for each next symbol.

Every prior sits behind :class:`Prior`. The coder drives it in lockstep over a batch of chunks:
``session = prior.open(batch)``, then ``session.step(None)`` gives the distribution of each
chunk's first symbol and ``session.step(symbols)`` the distribution after feeding ``symbols``.
Encoder and decoder call exactly the same sequence of steps with exactly the same inputs, which
is what makes an LLM's floating-point output reproducible on both sides.

:class:`LLMPrior` restricts a causal LM's next-token distribution to the tokens made only of
characters the serialization can write, and renormalizes (in float64).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
from typing import Protocol

import numpy as np

from .errors import SerializationError
from .models import LanguageModel

__all__ = ["Prior", "PriorSession", "LLMPrior", "softmax"]


class PriorSession(Protocol):
    """One lockstep pass over a batch of chunks."""

    def step(self, symbols: np.ndarray | None) -> np.ndarray:
        """Feed the previous symbol of each chunk (``None`` at the start); return (batch, alphabet)
        float64 probabilities of each chunk's next symbol."""
        ...


class Prior(Protocol):
    """A model of serialized text: a symbol alphabet plus next-symbol distributions."""

    alphabet_size: int
    max_symbols: int | None  # longest symbol sequence one chunk may have, None if unbounded

    def identity(self) -> dict:
        """Everything that must be equal on both sides for bit-identical probabilities."""
        ...

    def tokenize(self, text: str) -> np.ndarray:
        """Text -> symbols (int64 indices into the alphabet)."""
        ...

    def detokenize(self, symbols: np.ndarray) -> str:
        """Symbols -> text; the exact inverse of :meth:`tokenize` on its outputs."""
        ...

    def open(self, batch_size: int) -> PriorSession: ...


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (deterministic numpy code shared by encoder and decoder)."""
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z


def _byte_level_decoder() -> dict[str, int]:
    """GPT-2's map from the printable stand-in characters of byte-level BPE back to bytes."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, codes)}


_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def token_bytes(tokenizer) -> list[bytes | None]:
    """The bytes each token id stands for (``None`` for special tokens).

    Handles byte-level BPE (GPT-2, Llama-3, SmolLM2) and SentencePiece-style vocabularies
    (``▁`` for space, ``<0xNN>`` byte fallback: Llama-2, Gemma).
    """
    vocab = tokenizer.get_vocab()
    size = max(vocab.values()) + 1
    pieces: list[str | None] = [None] * size
    for piece, idx in vocab.items():
        pieces[idx] = piece
    special = set(tokenizer.all_special_ids)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    byte_level = backend is not None and '"ByteLevel"' in json.dumps(
        json.loads(backend.to_str()).get("decoder")
    )
    byte_map = _byte_level_decoder() if byte_level else None
    result: list[bytes | None] = []
    for idx, piece in enumerate(pieces):
        if piece is None or idx in special:
            result.append(None)
        elif byte_map is not None:
            try:
                result.append(bytes(byte_map[c] for c in piece))
            except KeyError:
                result.append(piece.encode("utf-8"))
        elif match := _BYTE_PIECE.match(piece):
            result.append(bytes([int(match.group(1), 16)]))
        else:
            result.append(piece.replace("\u2581", " ").encode("utf-8"))
    return result


class LLMPrior:
    """A frozen causal LM restricted to the tokens a serialization can emit.

    Args:
        lm: the loaded model.
        alphabet: the characters the serialization writes.
        threads: torch CPU threads; fixed because results differ between thread counts.
    """

    def __init__(self, lm: LanguageModel, alphabet: frozenset[str], threads: int) -> None:
        import torch

        self.lm = lm
        self.threads = threads
        allowed = set()
        for char in alphabet:
            allowed.update(char.encode("utf-8"))
        ids = [
            i
            for i, raw in enumerate(token_bytes(lm.tokenizer))
            if raw and i < lm.model.config.vocab_size and set(raw) <= allowed
        ]
        if not ids:
            raise SerializationError(f"model {lm.spec!r} has no token made of these characters")
        self._token_ids = np.asarray(ids, dtype=np.int64)
        self._head = _RestrictedHead(lm.model, torch.from_numpy(self._token_ids).to(lm.device))
        self._symbol_of = {tok: sym for sym, tok in enumerate(ids)}
        self.alphabet_size = len(ids)
        self.max_symbols = lm.max_positions - 1
        tok = lm.tokenizer
        bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        self.bos_id = int(bos if bos is not None else 0)

    def identity(self) -> dict:
        return {
            "kind": "llm",
            "model": self.lm.spec,
            "weights_sha256": self.lm.weights_sha256(),
            "tokenizer_sha256": self.lm.tokenizer_sha256(),
            "alphabet_sha256": hashlib.sha256(self._token_ids.tobytes()).hexdigest(),
            "bos_id": self.bos_id,
            "dtype": self.lm.dtype,
            "device": self.lm.device,
            "threads": self.threads,
        }

    def tokenize(self, text: str) -> np.ndarray:
        tok = self.lm.tokenizer
        ids = tok(text, add_special_tokens=False)["input_ids"]
        decoded = tok.decode(ids, clean_up_tokenization_spaces=False)
        if decoded != text:
            lost = sorted(set(text) - set(decoded))
            raise SerializationError(
                f"the tokenizer of {self.lm.spec!r} cannot represent this text exactly "
                f"(characters lost: {[hex(ord(c)) for c in lost][:8]}); use a hex serialization"
            )
        try:
            return np.fromiter((self._symbol_of[i] for i in ids), dtype=np.int64, count=len(ids))
        except KeyError as exc:
            raise SerializationError(
                f"the tokenizer of {self.lm.spec!r} emits token {tok.convert_ids_to_tokens(exc.args[0])!r}, "
                "which is outside the serialization's alphabet; choose another serialization"
            ) from None

    def detokenize(self, symbols: np.ndarray) -> str:
        ids = self._token_ids[np.asarray(symbols, dtype=np.int64)].tolist()
        return self.lm.tokenizer.decode(ids, clean_up_tokenization_spaces=False)

    def open(self, batch_size: int) -> _LLMSession:
        return _LLMSession(self, batch_size)

    def full_forward_probabilities(self, symbols: np.ndarray) -> np.ndarray:
        """Probabilities of every position from one full forward pass (fast, for estimates only:
        they differ from the step-by-step values in the last bits, so they cannot drive a coder)."""
        import torch

        torch.set_num_threads(self.threads)
        ids = np.concatenate([[self.bos_id], self._token_ids[symbols[:-1]]]) if len(symbols) else []
        inputs = torch.as_tensor(np.asarray(ids, dtype=np.int64), device=self.lm.device)[None]
        return softmax(self._head.logits(inputs, cache=None)[0])


class _RestrictedHead:
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
        """(batch, positions, alphabet) float32 logits, as numpy."""
        import torch

        kwargs = {self.cache_arg: cache, "use_cache": cache is not None}
        with torch.inference_mode():
            hidden = self.body(input_ids=input_ids, **kwargs).last_hidden_state
            logits = torch.nn.functional.linear(hidden, self.weight, self.bias)
            if self.softcap:
                logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits.float().cpu().numpy()


class _LLMSession:
    """KV-cached, one token per step: the loop the decoder must run, so the encoder runs it too."""

    def __init__(self, prior: LLMPrior, batch_size: int) -> None:
        import torch
        from transformers import DynamicCache

        torch.set_num_threads(prior.threads)
        self._prior = prior
        self._batch = batch_size
        self._cache = DynamicCache()

    def step(self, symbols: np.ndarray | None) -> np.ndarray:
        import torch

        prior = self._prior
        if symbols is None:
            ids = np.full(self._batch, prior.bos_id, dtype=np.int64)
        else:
            ids = prior._token_ids[symbols]
        inputs = torch.from_numpy(ids).to(prior.lm.device)[:, None]
        return softmax(prior._head.logits(inputs, self._cache)[:, -1])
