"""How far a lossy reconstruction is from the original: max absolute and relative L2 error."""

from __future__ import annotations

import math

import numpy as np

from ..errors import InputError
from ..tensors import TensorBundle, TensorRecord
from .floats import native_values, to_float32

__all__ = ["error_report"]


def _as_float64(record: TensorRecord) -> np.ndarray:
    values = native_values(record)
    if record.dtype == "bfloat16":
        values = to_float32(values, "bfloat16")
    return values.astype(np.float64)


def _errors(original: np.ndarray, restored: np.ndarray) -> dict:
    diff = restored - original
    norm = float(np.linalg.norm(original))
    err = float(np.linalg.norm(diff))
    return {"max_abs": float(np.max(np.abs(diff))) if diff.size else 0.0,
            "rel_l2": err / norm if norm else (0.0 if err == 0 else math.inf),
            "sq_err": err * err, "sq_norm": norm * norm}


def error_report(original: TensorBundle, reconstructed: TensorBundle) -> dict:
    """Max absolute error and relative L2 error (||r - x|| / ||x||), overall and per tensor.

    Computed in float64 over every tensor (non-float tensors pass through, so their error is 0).

    Raises:
        InputError: the bundles do not hold the same tensors (count, names, shapes).
    """
    if [(t.name, tuple(t.shape)) for t in original.tensors] != [
            (t.name, tuple(t.shape)) for t in reconstructed.tensors]:
        raise InputError("error_report needs the same tensors (names and shapes) on both sides")
    per_tensor, sq_err, sq_norm, max_abs = {}, 0.0, 0.0, 0.0
    for index, (a, b) in enumerate(zip(original.tensors, reconstructed.tensors)):
        found = _errors(_as_float64(a), _as_float64(b))
        sq_err, sq_norm = sq_err + found.pop("sq_err"), sq_norm + found.pop("sq_norm")
        max_abs = max(max_abs, found["max_abs"])
        per_tensor[a.name if a.name not in per_tensor else f"{a.name}#{index}"] = found
    rel = math.sqrt(sq_err / sq_norm) if sq_norm else (0.0 if sq_err == 0 else math.inf)
    return {"max_abs": max_abs, "rel_l2": rel, "tensors": per_tensor}
