"""The CLI never prints a traceback and never loses or clobbers a file.

Every bad input or output is one line ``lmgc: error: ...`` with exit code 1 (argparse's own
errors: exit code 2), checked before any model loads; inputs stay byte-identical and no temporary
``.NAME.*`` file is left behind. All runs use ``--prior context``: no model is loaded.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import errno
import os
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

import lmgc.api
import lmgc.files
import lmgc.sources
from lmgc.cli import main
from lmgc.errors import (
    CorruptDataError,
    InputError,
    OutputError,
    OutputExistsError,
    UnsafePickleError,
)
from lmgc.files import atomic_path, check_output_path
from lmgc.tensors import (
    bundle_objects,
    check_output_format,
    read_tensors,
    write_tensors,
)

CONTEXT = ["--prior", "context", "-q"]
ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
needs_non_root = pytest.mark.skipif(
    ROOT, reason="root ignores permission bits, so no file is unreadable and no directory read-only"
)


class Ordered(collections.OrderedDict):
    """A dict subclass: harmless, but unpickling it means importing and calling this class."""


@pytest.fixture
def grad(tmp_path):
    path = tmp_path / "a.npy"
    np.save(path, np.random.default_rng(0).standard_normal(256).astype(np.float32))
    return path


def _files(directory) -> dict[str, bytes]:
    """Every file under ``directory`` with its bytes: compared before and after a refused run."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _error(capsys, *args: str) -> str:
    """Run the CLI, expecting exit code 1 and one error line; returns that line."""
    code = main([*args])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("lmgc: error: "), err
    return err.strip()


def _forbid(monkeypatch, name: str) -> None:
    """Make ``lmgc.api.<name>`` (a model-loading class) fail if the CLI gets as far as using it."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"{name} was used before the error was reported")

    monkeypatch.setattr(lmgc.api, name, refuse)


# --- inputs --------------------------------------------------------------------------------------


def _truncated_npy(path):
    np.save(path, np.ones(256, dtype=np.float32))
    path.write_bytes(path.read_bytes()[:200])


def _npz(path):
    with open(path, "wb") as fh:
        np.savez(fh, a=np.ones(2))


def _truncated_pt(path):
    torch.save({"w": torch.ones(256)}, path)
    path.write_bytes(path.read_bytes()[:400])


BAD_INPUTS = {
    "missing.npy": (None, "input file not found"),
    "folder.npy": (lambda p: p.mkdir(), "is a directory, not a tensor file"),
    "zero.npy": (lambda p: p.write_bytes(b""), r"is empty \(0 bytes\)"),
    "truncated.npy": (_truncated_npy, "cannot read .* as .npy: Failed to read all data"),
    "archive.npy": (_npz, "cannot read .* as .npy"),
    "objects.npy": (lambda p: np.save(p, np.array([{}], dtype=object), allow_pickle=True), "refused as unsafe"),
    "garbage.safetensors": (lambda p: p.write_bytes(b"garbage" * 10), "cannot read .* as safetensors"),
    "zero.pt": (lambda p: p.write_bytes(b""), r"is empty \(0 bytes\)"),
    "random.pt": (lambda p: p.write_bytes(np.random.default_rng(1).bytes(300)), "not a valid checkpoint"),
    "truncated.pt": (_truncated_pt, "cannot read .* as a PyTorch file"),
    "notes.txt": (lambda p: p.write_text("hello"), "cannot tell the format"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_is_one_line_and_changes_nothing(tmp_path, capsys, monkeypatch, name):
    setup, message = BAD_INPUTS[name]
    if setup:
        setup(tmp_path / name)
    before = _files(tmp_path)
    _forbid(monkeypatch, "Compressor")
    err = _error(capsys, "compress", str(tmp_path / name), *CONTEXT)
    assert re.search(message, err), err
    assert _files(tmp_path) == before


@needs_non_root
def test_unreadable_input(grad, capsys):
    grad.chmod(0)
    try:
        assert "Permission denied" in _error(capsys, "compress", str(grad), *CONTEXT)
    finally:
        grad.chmod(0o644)
    assert not grad.with_name("a.npy.lmgc").exists()


@pytest.mark.parametrize("kind", ["npy", "raw"])
def test_empty_input_round_trips(tmp_path, capsys, kind):
    """An empty array is a valid tensor: it compresses, and decodes to the same empty file."""
    if kind == "npy":
        source, options = tmp_path / "e.npy", []
        np.save(source, np.zeros(0, dtype=np.float32))
    else:
        source, options = tmp_path / "e.bin", ["--dtype", "float32"]
        source.write_bytes(b"")
    assert main(["compress", str(source), *options, *CONTEXT]) == 0
    back = tmp_path / f"back{source.suffix}"
    assert main(["decompress", f"{source}.lmgc", "-o", str(back), "-q"]) == 0
    assert back.read_bytes() == source.read_bytes()


# --- refused pickles -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "obj, name",
    [({"w": torch.ones(2), "args": argparse.Namespace(lr=0.1)}, "argparse.Namespace"),
     (Ordered(w=torch.ones(2)), "Ordered")],
)  # fmt: skip
def test_pickled_objects_are_refused_as_unsafe(tmp_path, capsys, obj, name):
    torch.save(obj, tmp_path / "x.pt")
    with pytest.raises(UnsafePickleError, match=f"{name}.*refused as unsafe"):
        read_tensors(tmp_path / "x.pt")
    assert "refused as unsafe" in _error(capsys, "compress", str(tmp_path / "x.pt"), *CONTEXT)


@pytest.mark.parametrize(
    "message, unsafe",
    [("Weights only load failed. Unsupported global: GLOBAL argparse.Namespace was not an allowed global", True),
     ("Weights only load failed. Original error: Unsupported class argparse.Namespace", True),
     ("Weights only load failed. WeightsUnpickler error: tensor rebuild is not allowed here", True),
     ("Can only build Tensor, Parameter, OrderedDict or types allowlisted via `add_safe_globals`", True),
     ("Trying to call reduce for unrecognized function <built-in function print>", True),
     ("Weights only load failed. Re-run with `weights_only` set to `False`. Unsupported operand 177", False),
     ("invalid load key, 'x'.", False)],
)  # fmt: skip
def test_refusal_does_not_depend_on_one_torch_wording(tmp_path, monkeypatch, message, unsafe):
    """torch words the weights_only refusal differently across versions; a damaged file, whose
    message also mentions weights_only, must stay a plain InputError."""

    def fail(*args, **kwargs):
        raise pickle.UnpicklingError(message)

    monkeypatch.setattr(torch, "load", fail)
    (tmp_path / "x.pt").write_bytes(b"PK")
    with pytest.raises(InputError) as caught:
        read_tensors(tmp_path / "x.pt")
    assert isinstance(caught.value, UnsafePickleError) == unsafe
    assert ("argparse.Namespace" in str(caught.value)) == ("argparse.Namespace" in message)


# --- outputs -------------------------------------------------------------------------------------


def test_output_is_never_the_input(grad, capsys, monkeypatch):
    _forbid(monkeypatch, "Compressor")
    before = _files(grad.parent)
    (grad.parent / "link.npy").symlink_to(grad)
    os.link(grad, grad.parent / "hard.npy")
    for spelling in (grad, grad.parent / "." / "a.npy", grad.parent / "link.npy", grad.parent / "hard.npy"):
        err = _error(capsys, "compress", str(grad), "-o", str(spelling), "--force", *CONTEXT)
        assert "is the input file" in err
    (grad.parent / "link.npy").unlink()
    (grad.parent / "hard.npy").unlink()
    assert _files(grad.parent) == before


@pytest.mark.parametrize(
    "target, message",
    [(".", "is a directory"), ("a.npy/x.lmgc", "a.npy is not a directory"),
     ("a.npy/deeper/x.lmgc", "a.npy is not a directory")],
)  # fmt: skip
def test_unwritable_output_is_refused_before_loading(grad, capsys, monkeypatch, target, message):
    _forbid(monkeypatch, "Compressor")
    before = _files(grad.parent)
    err = _error(capsys, "compress", str(grad), "-o", str(grad.parent / target), "--force", *CONTEXT)
    assert message in err
    assert _files(grad.parent) == before


@pytest.mark.skipif(not os.path.exists(os.devnull) or os.name != "posix", reason="needs /dev/null")
def test_device_file_is_never_replaced(grad, capsys):
    assert "not a regular file" in _error(capsys, "compress", str(grad), "-o", os.devnull, "--force", *CONTEXT)
    assert os.path.exists(os.devnull) and not os.path.isfile(os.devnull)


def test_existing_output_needs_force(grad, capsys, monkeypatch):
    target = grad.with_name("out.lmgc")
    target.write_bytes(b"keep me")
    with monkeypatch.context() as patch:
        _forbid(patch, "Compressor")
        assert "exists; pass --force" in _error(capsys, "compress", str(grad), "-o", str(target), *CONTEXT)
    assert target.read_bytes() == b"keep me"
    assert main(["compress", str(grad), "-o", str(target), "--force", *CONTEXT]) == 0
    assert target.read_bytes()[:5] == b"\x89LMGC"


def test_missing_parent_directories_are_created(grad, capsys):
    target = grad.parent / "new" / "deeper" / "a.lmgc"
    assert main(["compress", str(grad), "-o", str(target), *CONTEXT]) == 0
    assert target.is_file()


@needs_non_root
def test_read_only_directory_is_refused(grad, capsys, monkeypatch):
    locked = grad.parent / "locked"
    locked.mkdir(mode=0o555)
    _forbid(monkeypatch, "Compressor")
    try:
        assert "is not writable" in _error(capsys, "compress", str(grad), "-o", str(locked / "x.lmgc"), *CONTEXT)
    finally:
        locked.chmod(0o755)
    assert not any(locked.iterdir())


def test_check_output_path_directly(tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    assert check_output_path(tmp_path / "new.npy", force=False) == tmp_path / "new.npy"
    with pytest.raises(OutputExistsError, match="exists; pass --force"):
        check_output_path(tmp_path / "f", force=False)
    assert check_output_path(tmp_path / "f", force=True) == tmp_path / "f"
    with pytest.raises(OutputError, match="is the input file"):
        check_output_path(tmp_path / "f", force=True, inputs=[tmp_path / "missing", tmp_path / "f"])
    assert _files(tmp_path) == {"f": b"x"}  # the writability probe leaves nothing behind


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_outputs_honour_the_umask(grad, capsys, umask):
    """Outputs get the mode a plain open() gives (0o666 less the umask), not mkstemp's 0o600."""
    old = os.umask(umask)
    try:
        assert main(["compress", str(grad), "-o", str(grad.with_name("a.lmgc")), *CONTEXT]) == 0
        assert main(["decompress", str(grad.with_name("a.lmgc")), "-o", str(grad.with_name("b.npy")), "-q"]) == 0
    finally:
        os.umask(old)
    for name in ("a.lmgc", "b.npy"):
        assert grad.with_name(name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_failed_write_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "out.npy"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("disk on fire")
    assert list(tmp_path.iterdir()) == []


def test_os_and_memory_errors_are_one_line(grad, capsys, monkeypatch):
    before = _files(grad.parent)

    @contextlib.contextmanager
    def full_disk(target):
        raise OSError(errno.ENOSPC, "No space left on device", str(target))
        yield

    monkeypatch.setattr(lmgc.api, "atomic_path", full_disk)  # where compress_file writes
    assert "No space left on device" in _error(capsys, "compress", str(grad), *CONTEXT)

    def exhausted(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(lmgc.sources, "open_tensors", exhausted)
    assert _error(capsys, "compress", str(grad), *CONTEXT) == "lmgc: error: out of memory"
    assert _files(grad.parent) == before


# --- the decoded file's format -------------------------------------------------------------------


@pytest.mark.parametrize(
    "fmt, name, written",
    [("npy", "x.npy", "npy"), ("pt", "x.PTH", "pt"), ("safetensors", "x.safetensors", "safetensors"),
     ("raw", "x.bin", "raw"), ("raw", "x", "raw"), ("object", "x.npy", "npy"), ("object", "x.bin", "pt")],
)  # fmt: skip
def test_output_suffix_matching_the_format(fmt, name, written):
    assert check_output_format(fmt, name) == written


@pytest.mark.parametrize(
    "fmt, name, message",
    [("npy", "x.pt", "holds a .npy array; write it to a .npy path"),
     ("pt", "x.npy", "write it to a .pt or .pth path"),
     ("safetensors", "x.bin", "write it to a .safetensors path"),
     ("raw", "x.npy", "holds raw bytes, not a tensor file")],
)  # fmt: skip
def test_output_suffix_contradicting_the_format(fmt, name, message):
    with pytest.raises(OutputError, match=message):
        check_output_format(fmt, name)


def test_unknown_stored_format_is_corrupt():
    with pytest.raises(CorruptDataError, match="unknown tensor file format"):
        check_output_format("zip", "x.zip")


def test_in_memory_objects_go_where_they_fit(tmp_path):
    array = bundle_objects(np.arange(3, dtype=np.float32))
    assert np.load(write_tensors(array, tmp_path / "a.npy")).tolist() == [0, 1, 2]
    assert torch.load(write_tensors(array, tmp_path / "a.bin"), weights_only=False).tolist() == [0, 1, 2]
    named = bundle_objects({"w": torch.ones(2)})
    assert write_tensors(named, tmp_path / "n.safetensors").is_file()
    with pytest.raises(OutputError, match="one numpy array"):
        write_tensors(named, tmp_path / "n.npy")
    with pytest.raises(OutputError, match="flat dict of named torch tensors"):
        write_tensors(bundle_objects({"w": [torch.ones(2)]}), tmp_path / "m.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "a.npy", "n.safetensors"]


def test_decompress_checks_the_suffix_before_decoding(grad, capsys, monkeypatch):
    packed = grad.with_name("a.lmgc")
    assert main(["compress", str(grad), "-o", str(packed), *CONTEXT]) == 0
    with monkeypatch.context() as patch:
        patch.setattr(lmgc.api.Decompressor, "_decode", lambda *a: pytest.fail("decoded before the check"))
        err = _error(capsys, "decompress", str(packed), "-o", str(grad.with_name("b.pt")))
        assert "holds a .npy array; write it to a .npy path" in err
        assert "is the input file" in _error(capsys, "decompress", str(packed), "-o", str(packed), "--force")
    assert sorted(p.name for p in grad.parent.iterdir()) == ["a.lmgc", "a.npy"]
    assert main(["decompress", str(packed), "-o", str(grad.with_name("b.npy")), "-q"]) == 0
    assert grad.with_name("b.npy").read_bytes() == grad.read_bytes()


# --- arguments -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [["compress", "a.npy", "--chunk-bytes", "0"], ["compress", "a.npy", "--chunk-bytes", "-4"],
     ["compress", "a.npy", "--batch", "0"], ["compress", "a.npy", "--threads", "0"],
     ["estimate", "a.npy", "--chunk-bytes", "0"], ["demo", "--bytes", "0"], ["demo", "--batch", "0"],
     ["info", "a.lmgc", "--max-tensors", "-1"]],
)  # fmt: skip
def test_sizes_and_counts_must_be_positive(capsys, args):
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    assert "must be at least" in capsys.readouterr().err


def test_demo_without_float32_values_is_an_error(tmp_path, capsys, monkeypatch):
    np.save(tmp_path / "i.npy", np.arange(8, dtype=np.int32))
    _forbid(monkeypatch, "Compressor")
    assert "holds no float32 values" in _error(capsys, "demo", str(tmp_path / "i.npy"))


# --- no traceback, for real ----------------------------------------------------------------------


def test_subprocess_errors_have_no_traceback(tmp_path, grad):
    (tmp_path / "zero.npy").write_bytes(b"")
    torch.save({"args": argparse.Namespace()}, tmp_path / "ns.pt")
    runs = {
        ("compress", str(tmp_path)): (1, "is a directory"),
        ("compress", str(tmp_path / "zero.npy")): (1, "is empty"),
        ("compress", str(tmp_path / "ns.pt")): (1, "refused as unsafe"),
        ("compress", str(grad), "-o", str(grad), "--force"): (1, "is the input file"),
        ("compress", str(grad), "--chunk-bytes", "0"): (2, "must be at least 1"),
    }
    before = _files(tmp_path)
    for args, (code, message) in runs.items():
        result = subprocess.run([sys.executable, "-m", "lmgc.cli", *args, *CONTEXT], capture_output=True,
                                text=True, timeout=300)  # fmt: skip
        assert result.returncode == code, result.stderr
        assert "Traceback" not in result.stderr and message in result.stderr, result.stderr
    assert _files(tmp_path) == before
