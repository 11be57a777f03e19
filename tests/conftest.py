"""Shared fixtures: real gradient bytes from the committed fixture, and one loaded SmolLM2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"


def fixture_files() -> list[Path]:
    return sorted(DATA.rglob("*.safetensors"))


@pytest.fixture(scope="session")
def gradient_bundle():
    """The first committed real-gradient checkpoint (see tests/data/README.md)."""
    from lmgc.tensors import read_tensors

    files = fixture_files()
    assert files, "tests/data holds no .safetensors gradient fixture"
    return read_tensors(files[0])


@pytest.fixture(scope="session")
def gradient_bytes(gradient_bundle) -> bytes:
    """float32 little-endian bytes of the real gradients, in parameter order."""
    return b"".join(t.data for t in gradient_bundle.tensors if t.dtype == "float32")


@pytest.fixture(scope="session")
def gradient_sample(gradient_bytes) -> np.ndarray:
    """A small slice (64 values) of real gradients with nonzero entries, for slow LLM paths."""
    values = np.frombuffer(gradient_bytes, dtype="<f4")
    start = int(np.flatnonzero(values)[0])
    return values[start : start + 64].copy()


@pytest.fixture(scope="session")
def smollm2():
    """The embedded default model, loaded once per test session."""
    from lmgc.models import load_model

    return load_model("smollm2-135m")
