"""Gradient collection: train the LM-GC paper's models and save raw gradients as test data for the codec.

Entry points: :func:`collect_gradients` (Python API), ``lmgc collect`` and ``lmgc data fetch`` (CLI,
registered by :func:`lmgc.collect.cli.register`), :func:`load_gradients` to read checkpoints back.
"""

from __future__ import annotations

from lmgc.collect.architectures import ARCH_NAMES, build_model
from lmgc.collect.datasets import (
    DATASET_NAMES,
    DatasetNotFoundError,
    fetch_fashion_mnist,
    fetch_mnist,
    load_dataset,
)
from lmgc.collect.train import FORMATS, collect_gradients, load_gradients

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
