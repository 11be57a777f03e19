"""Gradient collection: train the LM-GC paper's models and save raw gradients as test data for the codec.

Entry points: :func:`collect_gradients` (Python API), ``lmgc collect`` and ``lmgc data fetch`` (CLI,
registered by :func:`lmgc.collect.cli.register`), :func:`load_gradients` to read checkpoints back.
The names (:mod:`lmgc.collect.names`) import without torch; the rest loads torch on first use, so a
command line that only offers the names as choices starts fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from lmgc.collect.names import ARCH_NAMES, DATASET_NAMES, FORMATS
from lmgc.errors import DatasetNotFoundError

if TYPE_CHECKING:
    from lmgc.collect.architectures import build_model
    from lmgc.collect.datasets import load_dataset
    from lmgc.collect.fetch import fetch_fashion_mnist, fetch_mnist
    from lmgc.collect.train import collect_gradients, load_gradients

__all__ = [
    "ARCH_NAMES",
    "DATASET_NAMES",
    "FORMATS",
    "DatasetNotFoundError",
    "build_model",
    "collect_gradients",
    "fetch_fashion_mnist",
    "fetch_mnist",
    "load_dataset",
    "load_gradients",
]

_MODULE_OF = {
    "build_model": "architectures",
    "fetch_fashion_mnist": "fetch",
    "fetch_mnist": "fetch",
    "load_dataset": "datasets",
    "collect_gradients": "train",
    "load_gradients": "train",
}


def __getattr__(name: str):
    """Import the torch-backed entry points when first asked for (PEP 562)."""
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"lmgc.collect.{_MODULE_OF[name]}"), name)
