"""The numerical environment recorded beside the coded bits, and the refusal of a different one."""

from __future__ import annotations

from importlib.metadata import version

import pytest

from lmgc.environment import NUMERICS, check_environment, check_numerics, context_environment, numerics_environment
from lmgc.errors import EnvironmentMismatchError


def test_the_context_prior_records_the_installed_constriction():
    assert context_environment() == {"constriction": version("constriction")}


def test_a_different_environment_is_refused_with_what_differs():
    recorded = {"torch": "2.13.0", "numpy": "2.4.6"}
    with pytest.raises(EnvironmentMismatchError, match=r"\(torch: encoded with 2.13.0, here 2.0.0\); use the same versions"):
        check_environment(recorded, {"torch": "2.0.0", "numpy": "2.4.6"}, allow_mismatch=False)
    check_environment(recorded, {"torch": "2.0.0", "numpy": "2.4.6"}, allow_mismatch=True)
    check_environment(recorded, dict(recorded), allow_mismatch=False)


def test_unknown_recorded_versions_are_not_compared():
    """Version-1 writers recorded constriction as "unknown" (the module has no __version__)."""
    check_environment({"constriction": "unknown"}, context_environment(), allow_mismatch=False)


class _Probed:
    """A prior whose arithmetic a probe checks (the LLM priors' protocol)."""

    def __init__(self, digest: str) -> None:
        self.digest, self.batches = digest, []

    def numerics_probe(self, batch: int) -> str:
        self.batches.append(batch)
        return self.digest


def test_the_probe_digest_is_recorded_for_priors_that_have_one():
    prior = _Probed("ab" * 16)
    assert numerics_environment(prior, 3) == {NUMERICS: "ab" * 16} and prior.batches == [3]
    assert numerics_environment(object(), 3) == {}


def test_a_different_probe_digest_is_refused_after_the_model_loads():
    """The digest needs the model, so the version check before loading passes over it."""
    recorded = {"torch": "2.13.0", NUMERICS: "ab" * 16}
    check_environment(recorded, {"torch": "2.13.0"}, allow_mismatch=False)
    with pytest.raises(EnvironmentMismatchError, match=r"other probabilities than the encoder's \(digest of a "
                                                       r"fixed probe: encoded abababababab…, here cdcdcdcdcdcd…\)"):  # fmt: skip
        check_numerics(recorded, _Probed("cd" * 16), 2, allow_mismatch=False)
    check_numerics(recorded, _Probed("ab" * 16), 2, allow_mismatch=False)
    skipped = _Probed("cd" * 16)
    check_numerics(recorded, skipped, 2, allow_mismatch=True)
    check_numerics({"torch": "2.13.0"}, skipped, 2, allow_mismatch=False)  # files from before probes
    assert skipped.batches == []  # neither runs the probe


def test_a_gpu_file_is_refused_by_name_on_a_machine_without_one():
    """A GPU's entries compare by name: no torch error about a missing CUDA build."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    from lmgc.environment import environment

    here = environment("cuda")
    assert here["cuda_device"] == "none" and "cuda_driver" not in here
    recorded = here | {"cuda_device": "NVIDIA H200", "cuda_driver": "580.159.04", "tf32": "off"}
    with pytest.raises(EnvironmentMismatchError, match=r"cuda_device: encoded with NVIDIA H200, here none; "
                                                       r"cuda_driver: encoded with 580.159.04, here absent"):  # fmt: skip
        check_environment(recorded, here, allow_mismatch=False)


def test_gpu_settings_fix_the_cublas_workspace_and_turn_tf32_off(monkeypatch):
    import torch

    from lmgc.environment import deterministic_cuda

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)  # fmt: skip
    try:
        deterministic_cuda()
        import os

        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before[2], before[3]
