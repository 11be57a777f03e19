"""The numerical environment: what besides the model and the data decides the decoded bits.

An LLM prior's probabilities depend on torch, transformers and numpy versions and on the CPU
kernels (or GPU) they run on; the context prior's only on constriction's quantization. The
encoder records this, and the decoder refuses a different one unless the caller allows it (the
checksums still catch a wrong result).

Versions and torch's CPU capability do not pin every bit: two machines with the same ones have
computed different float32 and bfloat16 probabilities (kernels choose code paths and blockings
by CPU model). So an LLM prior also records the digest of a fixed probe run through the model
with the file's own settings (:data:`NUMERICS`), which the decoder recomputes once the model is
loaded, before decoding anything.
"""

from __future__ import annotations

import ctypes
import functools
import os

from .errors import EnvironmentMismatchError

__all__ = ["environment", "deterministic_cuda", "context_environment", "check_environment", "NUMERICS",
           "numerics_environment", "check_numerics"]


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
        env.update(_cuda_environment(device))
    return env


def _cuda_environment(device: str) -> dict:
    """The GPU, its driver and the CUDA runtime torch was built for, plus the settings that
    :func:`~lmgc.models.load_model` fixes on a GPU (cuBLAS workspace, no TF32). On a machine
    without one the GPU is ``none``, so a GPU-coded file is refused by name, not by a torch error."""
    import torch

    if not torch.cuda.is_available():
        return {"cuda_device": "none"}
    deterministic_cuda()  # the decoder checks before loading the model, which applies them too
    return {
        "cuda_device": torch.cuda.get_device_name(torch.device(device)),
        "cuda_driver": _cuda_driver_version(),
        "cuda_runtime": torch.version.cuda or "unknown",
        "cublas_workspace": os.environ.get("CUBLAS_WORKSPACE_CONFIG", "default"),
        "tf32": "on" if torch.backends.cuda.matmul.allow_tf32 else "off",
    }


def deterministic_cuda() -> None:
    """Make a GPU compute an LLM prior's probabilities the same way every run, as the decoder
    must: a fixed cuBLAS workspace (read when cuBLAS first runs in the process; later, torch
    warns), deterministic algorithms and no TF32 for float32 matmuls. Process-wide settings, as
    torch has them; :func:`environment` records them."""
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.use_deterministic_algorithms(True, warn_only=True)


@functools.cache
def _cuda_driver_version() -> str:
    """The NVIDIA driver's release (NVML), else the CUDA version the driver supports."""
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
        text = ctypes.create_string_buffer(96)
        if nvml.nvmlInit_v2() == 0 and nvml.nvmlSystemGetDriverVersion(text, 96) == 0:
            return text.value.decode("ascii", "replace")
    except (OSError, AttributeError):
        pass
    try:
        version = ctypes.c_int()
        if ctypes.CDLL("libcuda.so.1").cuDriverGetVersion(ctypes.byref(version)) == 0:
            return f"cuda {version.value // 1000}.{version.value % 1000 // 10}"
    except (OSError, AttributeError):
        pass
    return "unknown"


#: The environment entry holding a prior's probe digest (``numerics_probe``); it needs the model,
#: so :func:`check_numerics` compares it after loading, not :func:`check_environment`.
NUMERICS = "numerics"


def context_environment() -> dict:
    """The context prior's arithmetic is numpy integers plus constriction's quantization."""
    return {"constriction": _constriction_version()}


def check_environment(recorded: dict, here: dict, allow_mismatch: bool) -> None:
    """Refuse to decode where the arithmetic may differ from the encoder's.

    Raises:
        EnvironmentMismatchError: a recorded entry differs here and ``allow_mismatch`` is false.
    """
    # "unknown": a version-1 writer could not read constriction's version
    diffs = {k: (v, here.get(k, "absent")) for k, v in recorded.items()
             if k != NUMERICS and v != "unknown" and here.get(k) != v}
    if diffs and not allow_mismatch:
        listing = "; ".join(f"{k}: encoded with {a}, here {b}" for k, (a, b) in diffs.items())
        raise EnvironmentMismatchError(
            f"decoding here may not reproduce the encoder's arithmetic ({listing}); use the "
            "same versions, or pass --allow-env-mismatch to try (checksums verify the result)"
        )


def numerics_environment(prior, batch: int) -> dict:
    """``{NUMERICS: digest}`` for a prior whose arithmetic a probe checks, at the size of its
    first lockstep batch; nothing for the others (integer arithmetic decodes anywhere)."""
    probe = getattr(prior, "numerics_probe", None)
    return {NUMERICS: probe(batch)} if probe is not None else {}


def check_numerics(recorded: dict, prior, batch: int, allow_mismatch: bool) -> None:
    """Refuse, before decoding, where the loaded model computes other probabilities than the
    encoder's on the recorded probe (files without a digest are checked by their checksums).

    Raises:
        EnvironmentMismatchError: the digests differ and ``allow_mismatch`` is false.
    """
    probe = getattr(prior, "numerics_probe", None)
    if allow_mismatch or NUMERICS not in recorded or probe is None:
        return
    here = probe(batch)
    if here != recorded[NUMERICS]:
        raise EnvironmentMismatchError(
            "this machine's arithmetic gives the model other probabilities than the encoder's "
            f"(digest of a fixed probe: encoded {recorded[NUMERICS][:12]}…, here {here[:12]}…), so "
            "decoding here would not reproduce the data; decode on the machine type that coded it, "
            "or pass --allow-env-mismatch to try (checksums verify the result)"
        )
