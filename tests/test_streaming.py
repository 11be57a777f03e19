"""Files of any size: coded piece by piece, decoded chunk by chunk, the same bytes as in memory.

Small ``chunk_bytes`` (not multiples of the element size) make many chunks that cut elements and
tensors anywhere; inputs of more than 64 x 4096 values make the context prior sample its kinds
from blocks read out of the file. One test measures a real process's peak memory.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import lmgc
from lmgc.cli import main
from lmgc.container import unpack
from lmgc.errors import CorruptDataError, LimitExceededError, VerificationError
from lmgc.priors import ContextPrior
from lmgc.sources import open_folder, open_tensors
from lmgc.tensors import (
    _load_npy,
    _read_safetensors,
    bundle_objects,
    raw_bundle,
    read_tensors,
    write_tensors,
)
from lmgc.testing import forge


def _gradient(n: int, seed: int = 0, dtype=np.float32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = (rng.standard_normal(n) * 1e-3).astype(dtype)
    values[rng.random(n) < 0.3] = 0
    return values


def _npy(tmp_path, array, name="g.npy"):
    np.save(tmp_path / name, array)
    return tmp_path / name


def _safetensors(tmp_path, name="g.safetensors", metadata=None):
    tensors = {
        "layer.weight": torch.from_numpy(_gradient(3000, 1).reshape(60, 50)),
        "layer.bias": torch.from_numpy(_gradient(37, 2, np.float16)),
        "a_bf16": torch.from_numpy(_gradient(999, 3)).to(torch.bfloat16),
        "steps": torch.arange(11, dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 4),
        "ünïcode/name": torch.ones(5, dtype=torch.float64),
    }
    save_file(tensors, tmp_path / name, metadata=metadata)
    return tmp_path / name


def _pt(tmp_path):
    torch.save({"w": torch.ones(33), "steps": [torch.arange(3)]}, tmp_path / "g.pt")
    return tmp_path / "g.pt"


def _raw(tmp_path):
    (tmp_path / "g.bin").write_bytes(_gradient(2501, 4).tobytes())
    return tmp_path / "g.bin"


INPUTS = {
    "npy": lambda p: _npy(p, _gradient(4000).reshape(40, 100)),
    "npy-big-endian": lambda p: _npy(p, _gradient(3001, dtype=np.float64).astype(">f8")),
    "npy-1d-fortran": lambda p: _npy(p, np.asfortranarray(_gradient(100))),
    "npy-2d-fortran": lambda p: _npy(p, np.asfortranarray(_gradient(600).reshape(20, 30))),
    "npy-empty": lambda p: _npy(p, np.zeros((0, 3), np.float32)),
    "safetensors": _safetensors,
    "safetensors-metadata": lambda p: _safetensors(p, metadata={"z": "1", "a": "x\n\u0001é", "step": "7"}),
    "raw": _raw,
    "pt": lambda p: _pt(p),
}


def _in_memory(path, dtype=None, **settings) -> bytes:
    """The container the in-memory path writes (the whole input read first, then coded)."""
    return lmgc.Compressor(prior="context", **settings).compress(read_tensors(path, dtype))


@pytest.mark.parametrize("chunk_bytes", [61, 1000, 4096, 1 << 20])
@pytest.mark.parametrize("name", list(INPUTS))
def test_streamed_containers_are_the_in_memory_ones(tmp_path, name, chunk_bytes):
    path = INPUTS[name](tmp_path)
    dtype = "float32" if name == "raw" else None
    result = lmgc.compress_file(path, tmp_path / "g.lmgc", dtype=dtype, prior="context", chunk_bytes=chunk_bytes)
    data = (tmp_path / "g.lmgc").read_bytes()
    assert data == _in_memory(path, dtype, chunk_bytes=chunk_bytes)
    assert result.compressed_bytes == len(data) and result.original_bytes == read_tensors(path, dtype).nbytes


@pytest.mark.parametrize("settings", [{"serialization": "hex-comma-le"}, {"group_bytes": 2}, {"group_bytes": 8}])
def test_other_layouts_and_a_sampled_choice_of_kinds(tmp_path, settings):
    """More than 64 x 4096 values: the kinds come from 64 blocks read out of the file."""
    path = _npy(tmp_path, _gradient(300_001))
    lmgc.compress_file(path, tmp_path / "g.lmgc", prior="context", chunk_bytes=400_003, **settings)
    assert (tmp_path / "g.lmgc").read_bytes() == _in_memory(path, chunk_bytes=400_003, **settings)


def test_fixed_kinds_are_kept_and_checked(tmp_path):
    path = _npy(tmp_path, _gradient(1000))
    kinds = ["zP", "s1", "z", "z", "zd", "raw", "raw", "raw"]
    lmgc.Compressor(prior=ContextPrior(kinds), chunk_bytes=999).compress_file(path, tmp_path / "g.lmgc")
    assert unpack((tmp_path / "g.lmgc").read_bytes()).header.prior["digit_contexts"] == kinds
    with pytest.raises(lmgc.SerializationError, match="8 digit contexts given for values of 4 digits"):
        lmgc.Compressor(prior=ContextPrior(kinds), group_bytes=2).compress_file(path, tmp_path / "h.lmgc")
    assert not (tmp_path / "h.lmgc").exists()


@pytest.mark.parametrize("chunk_bytes", [61, 1000, 1 << 20])
@pytest.mark.parametrize("name", list(INPUTS))
def test_streamed_decoding_writes_the_in_memory_files(tmp_path, name, chunk_bytes):
    path = INPUTS[name](tmp_path)
    dtype = "float32" if name == "raw" else None
    packed = tmp_path / "g.lmgc"
    lmgc.compress_file(path, packed, dtype=dtype, prior="context", chunk_bytes=chunk_bytes)
    out = tmp_path / f"back{path.suffix}"
    lmgc.decompress_file(packed, out)
    expected = write_tensors(lmgc.Decompressor().decompress_bundle(packed.read_bytes()), tmp_path / "mem" / out.name)
    if name != "safetensors-metadata":  # safetensors writes metadata in a random order
        assert out.read_bytes() == expected.read_bytes()
    if name in ("npy", "npy-big-endian", "npy-empty", "safetensors", "safetensors-metadata", "raw"):
        assert out.read_bytes() == path.read_bytes()  # these files are written as lmgc writes them


def _packed(tmp_path, chunk_bytes=1000):
    path = _npy(tmp_path, _gradient(5000))
    lmgc.compress_file(path, tmp_path / "g.lmgc", prior="context", chunk_bytes=chunk_bytes)
    return tmp_path / "g.lmgc"


def test_a_corrupt_middle_frame_is_found_before_any_decoding(tmp_path, monkeypatch):
    packed = _packed(tmp_path)
    container = unpack(packed.read_bytes())
    data = bytearray(packed.read_bytes())
    middle = data.index(container.payloads[10])
    data[middle + 3] ^= 0x10
    packed.write_bytes(bytes(data))
    monkeypatch.setattr(ContextPrior, "decode_chunk", lambda *a: pytest.fail("decoded before the CRC check"))
    with pytest.raises(CorruptDataError, match="chunk 10 fails its CRC32 check"):
        lmgc.decompress_file(packed, tmp_path / "back.npy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.lmgc", "g.npy"]


def test_a_wrong_digest_leaves_no_output_and_keeps_the_old_one(tmp_path):
    packed = _packed(tmp_path)
    packed.write_bytes(forge(packed.read_bytes(), digest=bytes(32)))
    (tmp_path / "back.npy").write_bytes(b"keep me")
    with pytest.raises(CorruptDataError, match="SHA-256"):
        lmgc.decompress_file(packed, tmp_path / "back.npy", force=True)
    assert (tmp_path / "back.npy").read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.npy", "g.lmgc", "g.npy"]


def test_corrupt_payloads_and_truncations_are_typed(tmp_path):
    packed = _packed(tmp_path)
    container = unpack(packed.read_bytes())
    payloads = list(container.payloads)
    payloads[3] = bytes(len(payloads[3]))  # a valid frame (CRC recomputed) that decodes wrongly
    forged = tmp_path / "forged.lmgc"
    forged.write_bytes(forge(packed.read_bytes(), payloads=payloads))
    with pytest.raises(CorruptDataError):
        lmgc.decompress_file(forged, tmp_path / "back.npy")
    for cut in (5, 40, len(packed.read_bytes()) // 2, len(packed.read_bytes()) - 1):
        forged.write_bytes(packed.read_bytes()[:cut])
        with pytest.raises(lmgc.FormatError):
            lmgc.decompress_file(forged, tmp_path / "back.npy")
    forged.write_bytes(packed.read_bytes() + b"\0")
    with pytest.raises(CorruptDataError, match="1 unexpected trailing bytes"):
        lmgc.decompress_file(forged, tmp_path / "back.npy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["forged.lmgc", "g.lmgc", "g.npy"]


def test_the_output_limit_holds(tmp_path):
    packed = _packed(tmp_path)
    with pytest.raises(LimitExceededError, match="more than the 100 allowed"):
        lmgc.decompress_file(packed, tmp_path / "back.npy", max_output_bytes=100)
    assert not (tmp_path / "back.npy").exists()


def test_streamed_verify_decodes_the_written_file(tmp_path, monkeypatch):
    path = _npy(tmp_path, _gradient(3000))
    result = lmgc.compress_file(path, tmp_path / "g.lmgc", prior="context", chunk_bytes=1000, verify=True)
    assert result.verified
    monkeypatch.setattr(ContextPrior, "decode_chunk", lambda self, payload, n, group: bytes(n))
    with pytest.raises(VerificationError, match="does not decode to .*g.npy.*SHA-256"):
        lmgc.compress_file(path, tmp_path / "h.lmgc", prior="context", chunk_bytes=1000, verify=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.lmgc", "g.npy"]


def test_a_file_that_shrinks_while_read_is_an_input_error(tmp_path):
    path = _npy(tmp_path, _gradient(3000))
    source = open_tensors(path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(lmgc.InputError, match="changed while it was read"):
        lmgc.compress_file(source, tmp_path / "g.lmgc", prior="context")
    assert not (tmp_path / "g.lmgc").exists()


def _peak_mb(*args: str) -> float:
    """Peak resident memory of ``lmgc ARGS`` run in a fresh process (its own children only)."""
    script = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
              "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", script, sys.executable, "-m", "lmgc.cli", *args, "-q"],
                         capture_output=True, text=True, check=True, timeout=300).stdout  # fmt: skip
    return int(out.split()[-1]) / 1024  # KiB on Linux


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux")
def test_peak_memory_does_not_grow_with_the_file(tmp_path):
    """A 64 MB .npy: the in-memory path needed ~14 times the file; streaming needs a few 8 MiB
    chunks' worth on top of the interpreter, whatever the file's size."""
    path = _npy(tmp_path, _gradient(16 << 20))
    size_mb = path.stat().st_size / 2**20
    compress_mb = _peak_mb("compress", str(path), "-o", str(tmp_path / "g.lmgc"), "--prior", "context")
    decompress_mb = _peak_mb("decompress", str(tmp_path / "g.lmgc"), "-o", str(tmp_path / "back.npy"))
    assert (tmp_path / "back.npy").read_bytes() == path.read_bytes()
    for peak in (compress_mb, decompress_mb):
        assert peak < size_mb + 320, (compress_mb, decompress_mb)


WHOLE_FILE_READERS = {
    "npy": lambda path: bundle_objects(_load_npy(path), "npy"),
    "safetensors": _read_safetensors,
    "raw": lambda path: raw_bundle(path.read_bytes(), "float32", str(path)),
}


@pytest.mark.parametrize("name", [name for name in INPUTS if name.split("-")[0] in WHOLE_FILE_READERS])
def test_files_opened_by_their_header_hold_what_the_whole_file_readers_read(tmp_path, name):
    path = INPUTS[name](tmp_path)
    bundle = open_tensors(path, "float32" if name == "raw" else None).load()
    whole = WHOLE_FILE_READERS[name.split("-")[0]](path)
    assert bundle.manifest() == whole.manifest()
    assert [t.data for t in bundle.tensors] == [t.data for t in whole.tensors]


# --- folders -------------------------------------------------------------------------------------


def _folder(tmp_path):
    root = tmp_path / "run"
    (root / "deep" / "er").mkdir(parents=True)
    _npy(root, _gradient(3000).reshape(30, 100), "grad_1.npy")
    _npy(root / "deep" / "er", _gradient(500, 5).astype(">f8"), "momentum.npy")
    _safetensors(root / "deep", "state.safetensors", metadata={"step": "5", "arch": "convnet"})
    _pt(root / "deep")
    (root / "grad_1.json").write_text(json.dumps({"step": 1, "loss": 0.25}))
    (root / "empty.bin").write_bytes(b"")
    return root


def _tree(root) -> dict:
    """Every file's bytes; a .pt file's tensors (torch.save names the archive after the file it
    first writes, a temporary one, so its bytes differ: today's single-file writer does the same)."""
    return {p.relative_to(root).as_posix(): _pt_content(p) if p.suffix == ".pt" else p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}  # fmt: skip


def _pt_content(path) -> str:
    loaded = torch.load(path, weights_only=True)
    return repr({"w": loaded["w"].tolist(), "steps": [t.tolist() for t in loaded["steps"]]})


def test_a_folder_round_trips_through_the_cli(tmp_path, capsys):
    root = _folder(tmp_path)
    packed = tmp_path / "run.lmgc"
    assert main(["compress", "-r", str(root), "--prior", "context", "--chunk-bytes", "5000", "--verify", "-q"]) == 0
    assert "verified" in capsys.readouterr().out
    assert main(["decompress", str(packed), "-o", str(tmp_path / "back"), "-q"]) == 0
    assert _tree(tmp_path / "back") == _tree(root)
    files = unpack(packed.read_bytes()).header.manifest["files"]
    assert [(f["path"], f["format"]) for f in files] == [
        ("deep/er/momentum.npy", "npy"), ("deep/g.pt", "pt"), ("deep/state.safetensors", "safetensors"),
        ("empty.bin", "raw"), ("grad_1.json", "raw"), ("grad_1.npy", "npy")]  # fmt: skip
    objects = lmgc.decompress(packed.read_bytes())
    assert np.array_equal(objects["grad_1.npy"], np.load(root / "grad_1.npy"))
    assert objects["grad_1.json"].tobytes() == (root / "grad_1.json").read_bytes()
    assert packed.read_bytes() == lmgc.Compressor(prior="context", chunk_bytes=5000).compress(open_folder(root).load())
    capsys.readouterr()
    assert main(["info", str(packed), "--max-tensors", "100"]) == 0
    listing = capsys.readouterr().out
    assert "  grad_1.npy: float32" in listing and "  empty.bin: uint8 [0]" in listing  # tensors under their files


def test_a_folder_needs_recursive_and_refuses_links_and_lossy(tmp_path, capsys):
    root = _folder(tmp_path)
    err = _cli_error(capsys, "compress", str(root), "--prior", "context")
    assert "is a directory, not a tensor file; pass --recursive" in err
    (root / "deep" / "link.npy").symlink_to(root / "grad_1.npy")
    assert "link.npy is a symbolic link" in _cli_error(capsys, "compress", "-r", str(root), "--prior", "context")
    (root / "deep" / "link.npy").unlink()
    with pytest.raises(lmgc.InputError, match="not a folder"):
        lmgc.compress_file(root, tmp_path / "x.lmgc", prior="context", lossy="quant:8")
    (tmp_path / "void").mkdir()
    assert "holds no files" in _cli_error(capsys, "compress", "-r", str(tmp_path / "void"), "--prior", "context")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "void"]


def _cli_error(capsys, *args: str) -> str:
    assert main([*args, "-q"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("lmgc: error: ") and len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize("path", ["../escape.npy", "/tmp/abs.npy", "a/../../b.npy", "a\\b.npy", "", "a//b.npy",
                                  "./a.npy", "C:/x.npy", "a/\0.npy", "grad_1.json/x.npy"])  # fmt: skip
def test_folder_paths_that_leave_the_folder_are_refused(tmp_path, path):
    root = _folder(tmp_path)
    packed = tmp_path / "run.lmgc"
    lmgc.compress_file(root, packed, prior="context")
    fields = copy.deepcopy(unpack(packed.read_bytes()).header.fields)
    fields["manifest"]["files"][-1]["path"] = path
    packed.write_bytes(forge(packed.read_bytes(), fields))
    with pytest.raises(CorruptDataError, match="relative path inside the folder|listed twice|names another format"):
        lmgc.decompress_file(packed, tmp_path / "out" / "back")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "run.lmgc"]


def test_folder_manifests_are_checked_as_untrusted(tmp_path):
    root = _folder(tmp_path)
    packed = tmp_path / "run.lmgc"
    lmgc.compress_file(root, packed, prior="context")
    fields = unpack(packed.read_bytes()).header.fields
    edits = {
        "a file claims another's tensors": lambda m: m["files"][0].update(tensors=m["files"][0]["tensors"] + 1),
        "files hold fewer tensors": lambda m: m["files"][-1].update(tensors=0),
        "no files": lambda m: m.update(files=[]),
        "a folder with a tree": lambda m: m.update(tree={"__tensor__": 0}),
        "a file of another format": lambda m: m["files"][0].update(format="folder"),
        "files in a single file": lambda m: m.update(format="npy"),
        "a raw file of two tensors": lambda m: m["files"][3].update(tensors=2),
    }
    for edit in edits.values():
        forged = copy.deepcopy(fields)
        edit(forged["manifest"])
        with pytest.raises(CorruptDataError, match="lmgc header is corrupt"):
            lmgc.decompress(forge(packed.read_bytes(), forged))
    lossy = unpack(lmgc.compress(np.ones(8, np.float32), prior="context", lossy="quant:8")).header.fields["lossy"]
    with pytest.raises(CorruptDataError, match="a folder has no lossy section"):
        lmgc.decompress(forge(packed.read_bytes(), fields | {"lossy": lossy}))


def test_folder_outputs_are_checked_and_written_only_whole(tmp_path):
    root = _folder(tmp_path)
    packed = tmp_path / "run.lmgc"
    lmgc.compress_file(root, packed, prior="context", chunk_bytes=3000)
    target = tmp_path / "back"
    target.mkdir()
    (target / "grad_1.npy").write_bytes(b"old")
    (target / "mine.txt").write_bytes(b"keep me")
    with pytest.raises(lmgc.OutputExistsError, match="pass --force"):
        lmgc.decompress_file(packed, target)
    (target / "deep").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(lmgc.OutputError, match="symbolic link"):
        lmgc.decompress_file(packed, target, force=True)
    assert not any((tmp_path / "elsewhere").iterdir()) and (target / "grad_1.npy").read_bytes() == b"old"
    (target / "deep").unlink()
    lmgc.decompress_file(packed, target, force=True)
    assert _tree(target) == _tree(root) | {"mine.txt": b"keep me"}
    corrupt = forge(packed.read_bytes(), digest=bytes(32))
    packed.write_bytes(corrupt)
    with pytest.raises(CorruptDataError, match="SHA-256"):
        lmgc.decompress_file(packed, tmp_path / "other")
    with pytest.raises(lmgc.OutputError, match="not a folder"):
        lmgc.decompress_file(packed, root / "grad_1.json", force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back", "elsewhere", "run", "run.lmgc"]


@pytest.mark.parametrize("version", [1, 2])
def test_golden_files_still_decode_to_files(tmp_path, version):
    """Version-1 files are read whole by unpack_file; in-memory objects are rebuilt whole."""
    golden = Path(__file__).parent / "data" / "golden" / f"sample-v{version}-context.lmgc"
    out = lmgc.decompress_file(golden, tmp_path / "x.pt")
    expected = lmgc.Decompressor().decompress_bundle(golden.read_bytes())
    written = bundle_objects(torch.load(out, weights_only=False))  # holds numpy arrays: our own file
    assert [t.data for t in written.tensors] == [t.data for t in expected.tensors]
