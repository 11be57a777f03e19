"""The LLM priors: a frozen causal language model gives next-symbol probabilities.

- :class:`LLMPrior` (token mode, the paper's): the serialized text is tokenized as the model
  would, and the next-token distribution is restricted to the tokens made only of characters the
  serialization can write, then renormalized (in float64).
- :class:`NibblePrior` (nibble mode): one hex digit per step, the distribution restricted to the
  16 single-digit tokens; separators are fed to the model as context and cost no bits.

Both are stepped (:class:`~lmgc.priors.base.SteppedPrior`): the encoder runs the decoder's exact
KV-cached loop, so their floating-point output is identical on both sides.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence

import numpy as np

from ..environment import environment
from ..errors import CorruptDataError, ModelMismatchError, SerializationError
from ..models import LanguageModel
from ..schema import SHA256, integer, mapping, text
from ..serialize import Serialization, hex_digits, pack_hex_digits
from .base import ModelLoader, SteppedPrior
from .llama_step import FusedLlama, kv_bytes_per_position
from .llm_engine import (
    ENGINES, TRANSFORMERS, LLMSession, RestrictedHead, check_engine, default_engine, probe_digest, softmax,
)

__all__ = ["LLMPrior", "NibblePrior", "nibbles", "pack_nibbles"]

HEX_DIGITS = "0123456789abcdef"
_DEVICE = re.compile(r"cpu|cuda(:\d{1,3})?|mps")


def nibbles(chunk: bytes) -> np.ndarray:
    """Hex digits of ``chunk``, high nibble first (int64): the digit priors' symbols."""
    return hex_digits(chunk)


def pack_nibbles(digits: np.ndarray, n_bytes: int) -> bytes:
    """Inverse of :func:`nibbles` for a chunk of ``n_bytes`` bytes."""
    if len(digits) != 2 * n_bytes:
        raise SerializationError(f"decoded {len(digits)} digits, expected {2 * n_bytes}")
    return pack_hex_digits(digits)


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


class _LLMBase(SteppedPrior):
    """What both LLM priors share: the model cut down to an alphabet of token ids, the thread
    count, the BOS token, and the identity that pins all of it."""

    name = kind = "llm"

    @classmethod
    def create(cls, serialization: Serialization, threads: int, load) -> _LLMBase:
        return cls(load(), serialization, threads)

    @classmethod
    def from_identity(cls, recorded: dict, serialization: Serialization, load: ModelLoader) -> _LLMBase:
        lm = load(recorded)
        engine = recorded.get("engine", TRANSFORMERS)  # files from before engines were recorded
        check_engine(engine, lm.model, lm.spec)
        prior = cls(lm, serialization, recorded["threads"], engine)
        identity = prior.identity() | prior.derived_identity()
        for key in ("weights_sha256", "tokenizer_sha256", *prior.derived_identity()):
            if key in recorded and identity[key] != recorded[key]:
                raise ModelMismatchError(
                    f"model {lm.spec!r} is not the one this file was encoded with "
                    f"({key.replace('_', ' ')} differs); encoded with {recorded['model']!r}"
                )
        return prior

    @classmethod
    def check_identity(cls, recorded, group: int) -> dict:
        """The recorded identity's schema; version-1 files also stored fields derived from the
        tokenizer (checked against the model when it loads)."""
        mapping(recorded, "LLM prior", {"kind", "model", "weights_sha256", "tokenizer_sha256", "dtype", "device",
                                        "threads"}, {"engine", "alphabet_sha256", "bos_id", "separator_ids"})  # fmt: skip
        text(recorded.get("engine", TRANSFORMERS), "LLM engine", choices=ENGINES)
        text(recorded["kind"], "LLM prior kind", choices=(cls.kind,))
        text(recorded["model"], "model spec")
        text(recorded["weights_sha256"], "weights hash", SHA256)
        text(recorded["tokenizer_sha256"], "tokenizer hash", SHA256)
        text(recorded["dtype"], "model dtype", choices=("float32", "bfloat16", "float16"))
        text(recorded["device"], "device", _DEVICE)
        integer(recorded["threads"], "threads", 1, 1024)
        return recorded

    @classmethod
    def environment(cls, identity: dict) -> dict:
        return environment(identity["device"])

    @classmethod
    def describe(cls, identity: dict) -> list[tuple[str, str]]:
        engine = identity.get("engine", TRANSFORMERS)
        return [("prior", f"{identity['kind']} {identity['model']} ({identity['dtype']} on "
                          f"{identity['device']}, {identity['threads']} threads, {engine} engine)"),
                ("weights", f"sha256 {identity['weights_sha256'][:16]}…, "
                            f"tokenizer {identity['tokenizer_sha256'][:16]}…")]  # fmt: skip

    def __init__(self, lm: LanguageModel, token_ids: Sequence[int], threads: int, engine: str | None) -> None:
        import torch

        self.lm = lm
        self.threads = threads
        self.engine = engine or default_engine(lm.model, lm.device)
        self._fused: FusedLlama | None = None
        self.token_ids = np.asarray(token_ids, dtype=np.int64)
        self.head = RestrictedHead(lm.model, torch.from_numpy(self.token_ids).to(lm.device))
        self.alphabet_size = len(token_ids)
        tok = lm.tokenizer
        bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        self.bos_id = int(bos if bos is not None else 0)

    def state_bytes(self, chunk_bytes: int, group: int) -> int:
        """The KV cache of one chunk: keys and values of every layer at every position (a
        position per text character at most; float32, as ``lmgc-llama-1`` keeps it: the most
        any engine keeps)."""
        positions = 1 + self.serialization.to_text_length(chunk_bytes, group)
        return kv_bytes_per_position(self.lm.model.config) * positions

    def fused_model(self) -> FusedLlama:
        """The ``lmgc-llama`` engines' weight layout, built on first use."""
        if self._fused is None:
            self._fused = FusedLlama(self.lm.model)
        return self._fused

    def identity(self) -> dict:
        """What the container records: the model's exact weights and tokenizer and how it runs.
        The alphabet, BOS and separator tokens follow from the tokenizer and the serialization."""
        return {
            "kind": self.kind,
            "model": self.lm.spec,
            "weights_sha256": self.lm.weights_sha256(),
            "tokenizer_sha256": self.lm.tokenizer_sha256(),
            "dtype": self.lm.dtype,
            "device": self.lm.device,
            "threads": self.threads,
            "engine": self.engine,
        }

    def numerics_probe(self, batch: int) -> str:
        """What the environment records as ``numerics`` (:func:`~.llm_engine.probe_digest`)."""
        return probe_digest(self, batch)

    def derived_identity(self) -> dict:
        """Fields version-1 containers also recorded (derived from the tokenizer; checked there)."""
        return {"alphabet_sha256": hashlib.sha256(self.token_ids.tobytes()).hexdigest(),
                "bos_id": self.bos_id}  # fmt: skip

    def _forward(self, ids: np.ndarray) -> np.ndarray:
        """Softmax over the alphabet at every position of one full forward pass of ``ids``."""
        import torch

        torch.set_num_threads(self.threads)
        inputs = torch.as_tensor(np.asarray(ids, dtype=np.int64), device=self.lm.device)[None]
        return softmax(self.head.logits(inputs, cache=None)[0])


class LLMPrior(_LLMBase):
    """Token mode: a frozen causal LM restricted to the tokens a serialization can emit.

    Args:
        lm: the loaded model.
        serialization: how chunks become text; its characters define the allowed tokens.
        threads: torch CPU threads; fixed because results differ between thread counts.
        engine: how the model is stepped (:data:`~lmgc.priors.llm_engine.ENGINES`); by default
            the fastest that covers the model.
    """

    def __init__(self, lm: LanguageModel, serialization: Serialization, threads: int,
                 engine: str | None = None) -> None:  # fmt: skip
        allowed = set()
        for char in serialization.alphabet():
            allowed.update(char.encode("utf-8"))
        ids = [
            i
            for i, raw in enumerate(token_bytes(lm.tokenizer))
            if raw and i < lm.model.config.vocab_size and set(raw) <= allowed
        ]
        if not ids:
            raise SerializationError(f"model {lm.spec!r} has no token made of these characters")
        super().__init__(lm, ids, threads, engine)
        self.serialization = serialization
        self._symbol_of = {tok: sym for sym, tok in enumerate(ids)}

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
        ids = self.token_ids[np.asarray(symbols, dtype=np.int64)].tolist()
        return self.lm.tokenizer.decode(ids, clean_up_tokenization_spaces=False)

    def symbols(self, chunk: bytes, group: int) -> np.ndarray:
        return self.tokenize(self.serialization.to_text(chunk, group))

    def restore(self, symbols: np.ndarray, n_bytes: int, group: int) -> bytes:
        return self.serialization.from_text(self.detokenize(symbols), n_bytes, group)

    def stream(self, group: int) -> _TokenStream:
        return _TokenStream(self)

    @classmethod
    def check_symbol_counts(cls, n_symbols, sizes, serialization: Serialization, group: int) -> None:
        """Between one and one token per UTF-8 byte of the chunk's text (byte-level tokens; a
        Latin-1 character takes at most two bytes)."""
        per_char = 1 if serialization.encoding == "hex" else 2
        for i, (count, size) in enumerate(zip(n_symbols, sizes)):
            if not 1 <= count <= serialization.to_text_length(size, group) * per_char:
                raise CorruptDataError(f"chunk {i} claims {count} symbols for {size} bytes")

    def full_forward_probabilities(self, symbols: np.ndarray, group: int) -> np.ndarray:
        """Probabilities of every symbol from one full forward pass (fast, for estimates only:
        they differ from the step-by-step values in the last bits, so they cannot drive a coder)."""
        if not len(symbols):
            return np.empty((0, self.alphabet_size))
        return self._forward(np.concatenate([[self.bos_id], self.token_ids[symbols[:-1]]]))


class _TokenStream:
    independent_batches = True  # each batch starts from an empty cache: ranks may split them

    def __init__(self, prior: LLMPrior) -> None:
        self._prior = prior
        self.max_symbols = prior.lm.max_positions - 1

    def open(self, lengths: Sequence[int]) -> LLMSession:
        return LLMSession(self._prior, lengths, lambda t: (), max(lengths, default=0))


class NibblePrior(_LLMBase):
    """Nibble mode: one hex digit per step, the LM restricted to its 16 single-digit tokens.

    The separators of the serialization are fed to the model after each group as context; they
    are known from the layout, so they cost no bits.
    """

    name, kind = "nibble", "llm-nibble"

    def __init__(self, lm: LanguageModel, serialization: Serialization, threads: int,
                 engine: str | None = None) -> None:  # fmt: skip
        if serialization.encoding != "hex":
            raise SerializationError(f"nibble mode needs a hex serialization, not {serialization.spec!r}")
        tok = lm.tokenizer
        digit_ids = []
        for digit in HEX_DIGITS:
            ids = tok(digit, add_special_tokens=False)["input_ids"]
            if len(ids) != 1:
                raise SerializationError(f"model {lm.spec!r} has no single token for the digit {digit!r}")
            digit_ids.append(ids[0])
        super().__init__(lm, digit_ids, threads, engine)
        self.serialization = serialization
        self.separator_ids = list(tok(serialization.separator, add_special_tokens=False)["input_ids"])

    def derived_identity(self) -> dict:
        return super().derived_identity() | {"separator_ids": self.separator_ids}

    def symbols(self, chunk: bytes, group: int) -> np.ndarray:
        return nibbles(chunk)

    def restore(self, symbols: np.ndarray, n_bytes: int, group: int) -> bytes:
        return pack_nibbles(symbols, n_bytes)

    def stream(self, group: int) -> _NibbleStream:
        return _NibbleStream(self, group)

    def separators_after(self, digits_fed: int, group: int) -> list[int]:
        """Separator tokens to feed after ``digits_fed`` digits (at each group's end)."""
        return self.separator_ids if digits_fed % (2 * group) == 0 else []

    def full_forward_probabilities(self, symbols: np.ndarray, group: int) -> np.ndarray:
        """As :meth:`LLMPrior.full_forward_probabilities`, at the digit positions."""
        ids, positions = [self.bos_id], []
        for t, digit in enumerate(symbols):
            positions.append(len(ids) - 1)
            ids.append(int(self.token_ids[digit]))
            if t + 1 < len(symbols):
                ids += self.separators_after(t + 1, group)
        return self._forward(np.asarray(ids[:-1]))[positions] if len(symbols) else np.empty((0, 16))


class _NibbleStream:
    independent_batches = True

    def __init__(self, prior: NibblePrior, group: int) -> None:
        self._prior, self._group = prior, group
        per_group = 2 * group + len(prior.separator_ids)
        self.max_symbols = (prior.lm.max_positions - 1 + len(prior.separator_ids)) // per_group * 2 * group

    def open(self, lengths: Sequence[int]) -> LLMSession:
        longest = max(lengths, default=0)
        prior, group = self._prior, self._group

        def separators(t: int) -> list[int]:
            return prior.separators_after(t, group) if t < longest else []

        per_group = 2 * group + len(prior.separator_ids)
        return LLMSession(prior, lengths, separators, 1 + -(-longest // (2 * group)) * per_group)
