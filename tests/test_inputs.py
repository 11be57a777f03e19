"""Evaluation inputs (lmgc.eval.inputs): tensor files flattened in stored order, seeded windows."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from lmgc.errors import InputError, UnsafePickleError, UnsupportedDtypeError
from lmgc.eval.inputs import load_file_bytes, sample_windows


def test_sample_windows_are_seeded_aligned_and_disjoint() -> None:
    spans = sample_windows(100_003 * 4, 4, 1000, 8, seed=3)
    assert spans == sample_windows(100_003 * 4, 4, 1000, 8, seed=3)
    assert spans != sample_windows(100_003 * 4, 4, 1000, 8, seed=4)
    assert len(spans) == 8
    assert all(start % 4 == 0 and end - start == 1000 for start, end in spans)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    assert spans[-1][1] <= 100_003 * 4
    assert sample_windows(400, 4, 1000, 8, seed=0) == [(0, 400)]  # shorter than a window
    assert sample_windows(400, 4, 1002, 8, seed=0) == [(0, 400)]
    with pytest.raises(InputError):
        sample_windows(400, 4, 3, 8, seed=0)


def _state_dict(data: bytes) -> dict[str, torch.Tensor]:
    values = torch.from_numpy(np.frombuffer(data, "<f4").copy())
    return {"layer.weight": values[:1000].reshape(10, 100), "layer.bias": values[1000:1010],
            "head.weight": values[1010:1510]}


def test_loaders_flatten_tensors_in_stored_order(gradient_bytes, tmp_path) -> None:
    state = _state_dict(gradient_bytes)
    expected = b"".join(t.numpy().tobytes() for t in state.values())
    torch.save({"state_dict": state, "batch_step": 400}, tmp_path / "g.pt")  # LM-GC's layout
    np.save(tmp_path / "g.npy", np.frombuffer(expected, "<f4"))
    (tmp_path / "g.bin").write_bytes(expected)
    from safetensors.torch import save_file

    save_file(state, str(tmp_path / "g.safetensors"))
    for name in ("g.pt", "g.npy"):
        assert load_file_bytes(tmp_path / name).data == expected
    loaded = load_file_bytes(tmp_path / "g.safetensors")
    assert (loaded.dtype_name, sorted(loaded.data)) == ("float32", sorted(expected))
    assert load_file_bytes(tmp_path / "g.bin", "float32").dtype == np.dtype("<f4")
    bf16 = {"w": state["layer.weight"].to(torch.bfloat16)}
    save_file(bf16, str(tmp_path / "b.safetensors"))
    loaded = load_file_bytes(tmp_path / "b.safetensors")
    assert loaded.dtype_name == "bfloat16" and loaded.dtype == np.dtype("<u2")
    assert loaded.data == bf16["w"].view(torch.int16).numpy().tobytes()


def test_loader_errors_are_typed(tmp_path) -> None:
    (tmp_path / "raw.bin").write_bytes(b"\0" * 10)
    with pytest.raises(InputError, match="needs --dtype"):
        load_file_bytes(tmp_path / "raw.bin")
    with pytest.raises(InputError, match="not a whole number of float32"):
        load_file_bytes(tmp_path / "raw.bin", "float32")
    with pytest.raises(UnsupportedDtypeError, match="dtype uint16 is not supported"):
        load_file_bytes(tmp_path / "raw.bin", "uint16")  # lmgc's dtypes only (tensors.NUMPY_DTYPE)
    with pytest.raises(InputError, match="no such file"):
        load_file_bytes(tmp_path / "missing.pt")
    torch.save({"model": argparse.Namespace(a=1)}, tmp_path / "unsafe.pt")
    with pytest.raises(UnsafePickleError):
        load_file_bytes(tmp_path / "unsafe.pt")
    (tmp_path / "bad.safetensors").write_bytes(b"\x05")
    with pytest.raises(InputError, match="cannot read .*bad.safetensors"):
        load_file_bytes(tmp_path / "bad.safetensors")
