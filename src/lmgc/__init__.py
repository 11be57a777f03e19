"""lmgc: lossless compression of gradients and other float tensors with LLMs as priors.

The pipeline, one module per stage: :mod:`lmgc.tensors` (files and arrays in and out) ->
:mod:`lmgc.serialize` (bytes as hex/ISO text) -> :mod:`lmgc.priors` (next-symbol probabilities:
the LLM, context models, their mix; one protocol and a registry) -> :mod:`lmgc.coder` (range
coding, driven in lockstep by :mod:`lmgc.codec`) -> :mod:`lmgc.container` (the ``.lmgc`` format,
its header in :mod:`lmgc.header` / :mod:`lmgc.wire`), exposed by :mod:`lmgc.api` (compress) and
:mod:`lmgc.decoder` (decompress). Evaluation tooling lives in :mod:`lmgc.eval`.
"""

from importlib.metadata import PackageNotFoundError, version

from .api import (
    CodecConfig,
    CompressionResult,
    Compressor,
    Decompressor,
    Estimate,
    compress,
    compress_file,
    decompress,
    decompress_file,
    read_container_info,
)
from .errors import *  # noqa: F403 - every error class is part of the public API
from .errors import __all__ as _errors
from .serialize import DEFAULT_SERIALIZATION, Serialization

try:
    __version__ = version("lmgc")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "CodecConfig",
    "CompressionResult",
    "Compressor",
    "Decompressor",
    "Estimate",
    "Serialization",
    "DEFAULT_SERIALIZATION",
    "compress",
    "compress_file",
    "decompress",
    "decompress_file",
    "read_container_info",
    "__version__",
    *_errors,
]
