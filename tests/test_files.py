"""Input and output paths: problems named before any work, outputs replaced only when complete."""

from __future__ import annotations

import os
import stat

import pytest

from lmgc.errors import InputError, OutputError, OutputExistsError
from lmgc.files import atomic_path, check_output_path, read_input_bytes


def test_inputs_that_are_not_readable_files_are_named(tmp_path):
    with pytest.raises(InputError, match="input file not found: .*missing.npy"):
        read_input_bytes(tmp_path / "missing.npy")
    with pytest.raises(InputError, match="is a directory, not a tensor file"):
        read_input_bytes(tmp_path)
    (tmp_path / "x").write_bytes(b"abc")
    assert read_input_bytes(tmp_path / "x") == b"abc"


def test_outputs_are_checked_before_work(tmp_path):
    src = tmp_path / "in.npy"
    src.write_bytes(b"x")
    with pytest.raises(OutputError, match="is the input file"):
        check_output_path(src, force=True, inputs=[src])
    with pytest.raises(OutputExistsError, match="exists; pass --force"):
        check_output_path(src, force=False)
    with pytest.raises(OutputError, match="is a directory"):
        check_output_path(tmp_path, force=True)
    with pytest.raises(OutputError, match="is not a directory"):
        check_output_path(src / "under-a-file.lmgc", force=False)
    assert check_output_path(tmp_path / "new" / "dir" / "out.lmgc", force=False) == tmp_path / "new/dir/out.lmgc"


def test_atomic_path_replaces_only_on_success_with_umask_permissions(tmp_path):
    target = tmp_path / "out.lmgc"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.lmgc"]
    old_umask = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "sub" / "new.lmgc") as tmp:
            tmp.write_bytes(b"new")
    finally:
        os.umask(old_umask)
    written = tmp_path / "sub" / "new.lmgc"
    assert written.read_bytes() == b"new" and stat.S_IMODE(written.stat().st_mode) == 0o644
