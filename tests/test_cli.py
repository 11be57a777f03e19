"""The command line: real runs in-process (model loaded once) and error paths in a subprocess."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from lmgc.cli import main

TINY = ["--chunk-bytes", "16", "--batch", "2", "-q"]


@pytest.fixture
def grad_npy(tmp_path, gradient_sample):
    path = tmp_path / "g.npy"
    np.save(path, gradient_sample[:8])
    return path


def test_compress_info_decompress(tmp_path, grad_npy, smollm2, capsys):
    assert main(["compress", str(grad_npy), *TINY, "--verify"]) == 0
    out = capsys.readouterr().out
    assert "g.npy -> " in out and "verified" in out
    packed = tmp_path / "g.npy.lmgc"
    assert packed.is_file()

    assert main(["info", str(packed)]) == 0
    info = capsys.readouterr().out
    assert "serialization: hex-comma-be, 4 B per group" in info
    assert "smollm2-135m" in info and "float32 [8]" in info

    assert main(["decompress", str(packed), "-o", str(tmp_path / "back.npy"), "-q"]) == 0
    assert np.load(tmp_path / "back.npy").tobytes() == np.load(grad_npy).tobytes()


def test_output_is_never_overwritten_without_force(tmp_path, grad_npy, smollm2, capsys):
    target = tmp_path / "exists.lmgc"
    target.write_bytes(b"keep me")
    assert main(["compress", str(grad_npy), "-o", str(target), *TINY]) == 1
    assert "exists; pass --force" in capsys.readouterr().err
    assert target.read_bytes() == b"keep me"
    assert main(["compress", str(grad_npy), "-o", str(target), *TINY, "--force"]) == 0


def test_estimate_is_labelled(grad_npy, smollm2, capsys):
    assert main(["estimate", str(grad_npy), *TINY[:2], "-q"]) == 0
    assert "ESTIMATE" in capsys.readouterr().out


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmgc.cli", *args], capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def test_not_an_lmgc_file_is_one_line_error(tmp_path):
    bogus = tmp_path / "x.lmgc"
    bogus.write_bytes(b"hello world")
    result = _run("decompress", str(bogus), "-o", str(tmp_path / "y.npy"))
    assert result.returncode == 1
    assert result.stderr.strip() == "lmgc: error: not an lmgc file (magic bytes missing)"


def test_bad_input_errors_have_no_traceback(tmp_path):
    result = _run("info", str(tmp_path / "missing.lmgc"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "input file not found" in result.stderr
    (tmp_path / "a.txt").write_text("x")
    result = _run("compress", str(tmp_path / "a.txt"))
    assert result.returncode == 1 and "cannot tell the format" in result.stderr
    result = _run("compress", str(tmp_path / "a.txt"), "--serialization", "hex-tab")
    assert result.returncode == 1 and "bad serialization 'hex-tab'" in result.stderr


def test_truncated_file_is_reported(tmp_path, grad_npy, smollm2):
    packed = tmp_path / "t.lmgc"
    assert main(["compress", str(grad_npy), "-o", str(packed), *TINY]) == 0
    packed.write_bytes(packed.read_bytes()[:-5])
    result = _run("decompress", str(packed), "-o", str(tmp_path / "t.npy"))
    assert result.returncode == 1 and "truncated" in result.stderr
    assert not (tmp_path / "t.npy").exists()


def test_version():
    result = _run("--version")
    assert result.returncode == 0 and result.stdout.startswith("lmgc ")


def test_demo_decodes_both_samples_and_compares_codecs(smollm2, capsys):
    assert main(["demo", "--bytes", "32", "--chunk-bytes", "16", "--batch", "2", "-q"]) == 0
    out = capsys.readouterr().out
    assert "decoded and compared: identical" in out and "lmgc --prior context (no LLM; whole" in out
    assert "lmgc --prior llm (smollm2-135m, hex-comma-be)" in out and "gzip -9" in out
    assert "model load" in out and "B/s" in out
