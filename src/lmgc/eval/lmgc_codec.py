"""lmgc itself behind the benchmark's :class:`~lmgc.eval.baselines.Codec` protocol.

The model loads on first use, so naming the codec costs nothing; ``lmgc bench --lmgc MODE`` and
``lmgc experiments`` measure it like any classical codec, whole container bytes counted.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..tensors import ITEMSIZE
from .baselines import Codec

__all__ = ["LmgcCodec", "ContainerProbe", "element_dtype", "shaped_arrays"]


def element_dtype(name: str) -> str:
    """The dtype lmgc codes elements of dtype ``name`` as: itself if lmgc knows it, else bytes."""
    return name if name in ITEMSIZE else "uint8"


class LmgcCodec:
    """lmgc itself behind the benchmark's Codec interface (whole container bytes counted).

    A mode is ``[MODEL:]SERIALIZATION``, e.g. ``hex-space-be`` or ``gemma3-270m:hex-none-le``;
    ``prior`` is one of :data:`lmgc.api.PRIORS` (``llm``, the paper's token mode, by default).
    The model is loaded on first use, so listing the codec costs nothing. It chunks internally
    (``chunk_bytes``, default: the prior's), so the benchmark runs it under the whole-file
    protocol only. Names: ``lmgc:MODE`` for the token mode, ``lmgc-PRIOR:MODE`` otherwise
    (``lmgc-context:SERIALIZATION``, the context prior has no model).
    """

    whole_only = True
    takes_shapes = True  # a whole file's tensors are coded with their shapes (rows for context)

    def __init__(self, mode: str, *, prior: str = "llm", chunk_bytes: int | None = None,
                 batch_size: int = 16, device: str = "cpu") -> None:  # fmt: skip
        from ..api import PRIORS
        from ..serialize import Serialization

        if prior not in PRIORS:
            raise InputError(f"unknown prior {prior!r}; valid: {', '.join(PRIORS)}")
        model, _, serialization = mode.rpartition(":")
        Serialization.parse(serialization)  # validate now, with lmgc's own error
        if prior == "context" and model:
            raise InputError(f"the context prior uses no model; drop {model!r} from {mode!r}")
        self.name = f"lmgc:{mode}" if prior == "llm" else f"lmgc-{prior}:{mode}"
        self.prior = prior
        self.model = model or None
        self.serialization = serialization
        self.chunk_bytes, self.batch_size, self.device = chunk_bytes, batch_size, device
        self._compressor = None

    def available(self) -> bool:
        return True

    def supports(self, dtype: np.dtype) -> bool:
        return True

    def compress(self, data: bytes, dtype: np.dtype, shapes: list | None = None) -> bytes:
        """``shapes``: the file's tensors' shapes, which the container then keeps (as arrays
        without names), where they cover ``data`` in elements of ``dtype``."""
        if self._compressor is None:
            from ..api import Compressor

            self._compressor = Compressor(self.model, prior=self.prior,
                                          serialization=self.serialization,
                                          chunk_bytes=self.chunk_bytes, batch_size=self.batch_size,
                                          device=self.device)
        name = element_dtype(np.dtype(dtype).name)
        arrays = shaped_arrays(data, np.dtype(dtype), shapes) if name != "uint8" else None
        return self._compressor.compress(data, name) if arrays is None else self._compressor.compress(arrays)

    def decompress(self, blob: bytes, dtype: np.dtype, n_bytes: int) -> bytes:
        from ..api import Decompressor

        return b"".join(t.data for t in Decompressor(self.model).decompress_bundle(blob).tensors)


def shaped_arrays(data: bytes, dtype: np.dtype, shapes: list | None) -> list[np.ndarray] | None:
    """``data`` as the list of arrays of ``shapes`` where they cover it exactly, else None."""
    values = np.frombuffer(data, dtype)
    sizes = [int(np.prod(shape)) for shape in shapes or []]
    if not sizes or sum(sizes) != values.size:
        return None
    return [piece.reshape(shape) for piece, shape in zip(np.split(values, np.cumsum(sizes)[:-1]), shapes)]


class ContainerProbe:
    """An lmgc codec whose containers are read back (:func:`lmgc.api.read_container_info`) into
    ``containers``: each one's coded chunk payloads and symbols per chunk, beside its total size."""

    whole_only = True

    def __init__(self, codec: Codec) -> None:
        self.codec, self.name, self.containers = codec, codec.name, []

    def available(self) -> bool:
        return self.codec.available()

    def supports(self, dtype: np.dtype) -> bool:
        return self.codec.supports(dtype)

    def compress(self, data: bytes, dtype: np.dtype) -> bytes:
        from ..api import read_container_info

        blob = self.codec.compress(data, dtype)
        self.containers.append(read_container_info(blob))
        return blob

    def decompress(self, blob: bytes, dtype: np.dtype, n_bytes: int) -> bytes:
        return self.codec.decompress(blob, dtype, n_bytes)
