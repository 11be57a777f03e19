"""Float tensors as numpy values: the dtypes lossy stages transform, and float32 round trips.

Quantizers work in float32; float16 and bfloat16 reconstructions are rounded back (bfloat16 to
nearest even), float64 tensors are quantized in float32.
"""

from __future__ import annotations

import numpy as np

from ..tensors import NUMPY_DTYPE, TensorRecord

__all__ = ["FLOAT_DTYPES", "native_values", "to_float32", "from_float32"]

FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


def native_values(record: TensorRecord) -> np.ndarray:
    """The tensor's values as numpy reads its bytes (bfloat16 as uint16 bits)."""
    return np.frombuffer(record.data, NUMPY_DTYPE[record.dtype])


def to_float32(values: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":
        return (values.astype(np.uint32) << np.uint32(16)).view(np.float32)
    return values.astype(np.float32)


def from_float32(values: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":  # round to nearest even
        bits = values.astype("<f4").view(np.uint32).astype(np.uint64)
        bits = bits + ((bits >> np.uint64(16)) & np.uint64(1)) + np.uint64(0x7FFF)
        return ((bits >> np.uint64(16)) & np.uint64(0xFFFF)).astype("<u2")
    return values.astype(NUMPY_DTYPE[dtype])
