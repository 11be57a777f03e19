"""The numerical environment: what besides the model and the data decides the decoded bits.

An LLM prior's probabilities depend on torch, transformers and numpy versions and on the CPU
kernels (or GPU) they run on; the context prior's only on constriction's quantization. The
encoder records this, and the decoder refuses a different one unless the caller allows it (the
checksums still catch a wrong result).
"""

from __future__ import annotations

import functools

from .errors import EnvironmentMismatchError

__all__ = ["environment", "context_environment", "check_environment"]


@functools.cache  # reading package metadata costs ~1 ms, as much as coding a small tensor
def _constriction_version() -> str:
    from importlib.metadata import version

    return version("constriction")  # the module itself has no __version__


def environment(device: str) -> dict:
    """Library versions and kernels that change an LLM prior's floating-point results."""
    import numpy
    import torch
    import transformers

    env = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": numpy.__version__,
        "constriction": _constriction_version(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    if device.startswith("cuda"):
        env["cuda_device"] = torch.cuda.get_device_name(torch.device(device))
    return env


def context_environment() -> dict:
    """The context prior's arithmetic is numpy integers plus constriction's quantization."""
    return {"constriction": _constriction_version()}


def check_environment(recorded: dict, here: dict, allow_mismatch: bool) -> None:
    """Refuse to decode where the arithmetic may differ from the encoder's.

    Raises:
        EnvironmentMismatchError: a recorded entry differs here and ``allow_mismatch`` is false.
    """
    # "unknown": a version-1 writer could not read constriction's version
    diffs = {k: (v, here.get(k)) for k, v in recorded.items() if v != "unknown" and here.get(k) != v}
    if diffs and not allow_mismatch:
        listing = "; ".join(f"{k}: encoded with {a}, here {b}" for k, (a, b) in diffs.items())
        raise EnvironmentMismatchError(
            f"decoding here may not reproduce the encoder's arithmetic ({listing}); use the "
            "same versions, or pass --allow-env-mismatch to try (checksums verify the result)"
        )
