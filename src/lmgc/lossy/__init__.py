"""Lossy front-ends: sparsification and quantization in front of any lossless codec.

A pipeline is a ``+``-joined spec read left to right: zero or more sparsification stages, then at
most one quantization stage (which must be last)::

    quant:8             uniform min-max quantization to 8 bits, one (min, step) per tensor
    quant:4:block=256   ... 4 bits, one (min, step) per block of 256 values
    sign[:block=N]      1 bit per value (its sign), reconstructed as ±mean(|x|) of its block
    topk:1%             keep the 1% largest magnitudes of each tensor (at least one value)
    topk:1000           keep the 1000 largest magnitudes of each tensor (all, if fewer)
    randk:10%:seed=0    keep 10% of each tensor's values, chosen uniformly at random (seeded)
    topk:1%+quant:8     keep the top 1%, then quantize the kept values to 8 bits

:meth:`LossyPipeline.encode` turns a :class:`~lmgc.tensors.TensorBundle` into a *payload*
bundle (the bytes a lossless codec then compresses) and a small JSON-able ``info`` dict; the two
together are everything :meth:`LossyPipeline.decode` needs. No side information is left out:
kept positions (a bitmap or delta-coded LEB128 varints, whichever is smaller, per tensor and
stage), quantization minima and steps, sign scales all travel as payload tensors; which of the
two position codings each stream uses is in ``info["positions"]`` (see :func:`side_info_bytes`).

Quantized values are stored with the narrowest element width that holds them: 1/2/4-bit codes
packed into bytes (first value in the high bits), 8-bit codes one byte each, 16-bit codes as
int16 (code - 32768). Values kept by a sparsification stage with no quantizer after it keep their
original dtype and are bit-exact. Non-float tensors (ints, bools) pass through unchanged.

Decoding is deterministic numpy arithmetic on the payload: it returns exactly the dequantized
tensors the encoder meant, as the original names, shapes, dtypes and format (float32
reconstructions are rounded back to float16 / bfloat16; float64 tensors are quantized in float32).

Modules, in pipeline order: :mod:`~lmgc.lossy.spec` (parsing), :mod:`~lmgc.lossy.stages`
(sparsifiers, quantizers, code packing), :mod:`~lmgc.lossy.positions` (kept positions),
:mod:`~lmgc.lossy.floats` (float dtypes), :mod:`~lmgc.lossy.pipeline` (encode, layout, decode),
:mod:`~lmgc.lossy.report` (reconstruction error).

>>> import numpy as np
>>> from lmgc.tensors import bundle_objects
>>> pipeline = parse_lossy("topk:10%+quant:8")
>>> bundle = bundle_objects({"w": np.linspace(-1, 1, 100, dtype=np.float32)})
>>> payload, info = pipeline.encode(bundle)
>>> for t in payload.tensors:
...     print(t.name, t.dtype, t.shape)
codes/0/w uint8 (10,)
scales/0/w float32 (1, 2)
positions0/0/w uint8 (10,)
>>> info["positions"]  # the 10 positions as delta varints (10 bytes) beat a bitmap (13)
'd'
>>> restored = pipeline.decode(payload, info)
>>> round(error_report(bundle, restored)["rel_l2"], 3)
0.854
"""

from __future__ import annotations

from ..errors import LossySpecError
from .pipeline import INFO_VERSION, LossyPipeline, side_info_bytes
from .report import error_report
from .spec import decode, parse_lossy, split_payload
from .stages import Quantize, RandK, Sign, TopK

__all__ = [
    "LossySpecError",
    "Quantize",
    "Sign",
    "TopK",
    "RandK",
    "LossyPipeline",
    "parse_lossy",
    "decode",
    "split_payload",
    "error_report",
    "side_info_bytes",
    "INFO_VERSION",
]
