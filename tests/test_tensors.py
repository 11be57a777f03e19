from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from lmgc.errors import (
    InputError,
    OutputExistsError,
    UnsafePickleError,
    UnsupportedDtypeError,
)
from lmgc.tensors import bundle_objects, read_tensors, write_tensors

SPECIAL = np.array([0.0, -0.0, np.inf, -np.inf, 1e-45, -3.4e38], dtype=np.float32)


def _nan_payloads(dtype):
    bits = {np.float32: [0x7FC00001, 0xFFBADBAD, 0x7F800001], np.float64: [0x7FF8DEADBEEF0001]}
    return np.array(bits[dtype], dtype={np.float32: np.uint32, np.float64: np.uint64}[dtype]).view(dtype)


def _bits_equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        same_type = a.dtype == b.dtype and a.shape == b.shape
        return same_type and a.reshape(-1).view(torch.uint8).equal(b.reshape(-1).view(torch.uint8))
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


ARRAYS = {
    "f32_special": np.concatenate([SPECIAL, _nan_payloads(np.float32)]),
    "f64_nan": _nan_payloads(np.float64),
    "f16": np.arange(-6, 6, dtype=np.float16).reshape(3, 4),
    "empty": np.zeros((0, 3), dtype=np.float32),
    "scalar": np.array(1.5, dtype=np.float32),
    "big_endian": np.arange(4, dtype=">f4"),
}


@pytest.mark.parametrize("name", list(ARRAYS))
def test_npy_round_trip(tmp_path, name):
    array = ARRAYS[name]
    np.save(tmp_path / "a.npy", array)
    bundle = read_tensors(tmp_path / "a.npy")
    out = write_tensors(bundle, tmp_path / "b.npy")
    assert _bits_equal(np.load(out), array)


def test_pt_nested_state_dict_round_trip(tmp_path):
    state = {
        "state_dict": {
            "conv.weight": torch.randn(4, 3, 3, 3),
            "bn.num_batches_tracked": torch.tensor(7),
            "bf16": torch.randn(5).to(torch.bfloat16),
            "f64": torch.tensor([float("nan"), -0.0], dtype=torch.float64),
            "empty": torch.zeros(0, 2),
        },
        "batch_step": 400,
        "lr": 0.1,
        "layers": [torch.ones(2), (torch.zeros(1), "tag")],
    }
    torch.save(state, tmp_path / "g.pt")
    bundle = read_tensors(tmp_path / "g.pt")
    assert [t.name for t in bundle.tensors][:2] == ["state_dict.conv.weight", "state_dict.bn.num_batches_tracked"]
    back = torch.load(write_tensors(bundle, tmp_path / "h.pt"), weights_only=True)
    assert back["batch_step"] == 400 and back["lr"] == 0.1 and back["layers"][1][1] == "tag"
    assert isinstance(back["layers"][1], tuple)
    for key, value in state["state_dict"].items():
        assert _bits_equal(back["state_dict"][key], value), key


def test_safetensors_round_trip_keeps_metadata(tmp_path):
    from safetensors.torch import load_file, save_file

    tensors = {"a": torch.randn(3, 2), "b": torch.randn(4).half()}
    save_file(tensors, tmp_path / "x.safetensors", metadata={"step": "5"})
    bundle = read_tensors(tmp_path / "x.safetensors")
    assert bundle.metadata == {"step": "5"}
    out = write_tensors(bundle, tmp_path / "y.safetensors")
    back = load_file(out)
    assert all(_bits_equal(back[k], v) for k, v in tensors.items())


def test_raw_bytes(tmp_path):
    (tmp_path / "g.bin").write_bytes(np.arange(5, dtype="<f4").tobytes())
    bundle = read_tensors(tmp_path / "g.bin", dtype="float32")
    assert bundle.tensors[0].shape == (5,)
    assert write_tensors(bundle, tmp_path / "h.bin").read_bytes() == (tmp_path / "g.bin").read_bytes()
    with pytest.raises(InputError, match="not a whole number of float64 values"):
        read_tensors(tmp_path / "g.bin", dtype="float64")
    with pytest.raises(UnsupportedDtypeError, match="unsupported dtype complex64"):
        read_tensors(tmp_path / "g.bin", dtype="complex64")


def test_in_memory_objects_round_trip():
    obj = {"w": torch.randn(3), "n": np.ones(2, dtype=np.float64)}
    back = bundle_objects(obj).to_objects()
    assert _bits_equal(back["w"], obj["w"]) and _bits_equal(back["n"], obj["n"])


def test_bad_inputs_are_typed_errors(tmp_path):
    with pytest.raises(InputError, match="input file not found"):
        read_tensors(tmp_path / "missing.npy")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="cannot tell the format"):
        read_tensors(tmp_path / "notes.txt")
    (tmp_path / "broken.pt").write_bytes(b"not a zip file")
    with pytest.raises(InputError, match="cannot read .* as a PyTorch file"):
        read_tensors(tmp_path / "broken.pt")
    (tmp_path / "broken.safetensors").write_bytes(b"\x00" * 4)
    with pytest.raises(InputError, match="safetensors"):
        read_tensors(tmp_path / "broken.safetensors")
    np.save(tmp_path / "c.npy", np.zeros(2, dtype=np.complex64))
    with pytest.raises(UnsupportedDtypeError, match="complex64"):
        read_tensors(tmp_path / "c.npy")
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(UnsafePickleError, match="Python objects"):
        read_tensors(tmp_path / "o.npy")


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickle_with_code_is_refused(tmp_path, capsys):
    with open(tmp_path / "evil.pt", "wb") as fh:
        torch.save({"w": torch.ones(1), "x": Payload()}, fh)
    with pytest.raises(UnsafePickleError, match="refusing to unpickle"):
        read_tensors(tmp_path / "evil.pt")
    assert "this must never run" not in capsys.readouterr().out
    assert pickle  # plain pickle module is what torch uses underneath


def test_existing_output_is_not_overwritten(tmp_path):
    target = tmp_path / "keep.npy"
    target.write_bytes(b"precious")
    bundle = bundle_objects(np.ones(2, dtype=np.float32), "npy")
    with pytest.raises(OutputExistsError, match="--force"):
        write_tensors(bundle, target)
    assert target.read_bytes() == b"precious"
    write_tensors(bundle, target, force=True)
    assert np.load(target).tolist() == [1.0, 1.0]
