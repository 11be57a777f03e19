"""Start-up cost: commands that need no model import neither torch nor transformers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

GOLDEN = Path(__file__).parent / "data" / "golden" / "sample-v2-context.lmgc"

SCRIPT = """
import contextlib, io, sys
from lmgc.cli import main
for argv in {commands!r}:
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exit:  # --version
            code = exit.code
    assert code == 0, (argv, code)
print(sorted(m for m in ("torch", "transformers", "matplotlib") if m in sys.modules))
"""


def test_version_info_and_context_prior_commands_import_no_torch(tmp_path):
    """Importing torch takes about 1 s, a hundred times the coding of a small gradient; a
    safetensors file of numpy's dtypes needs it neither to read nor to write."""
    from safetensors.numpy import save_file

    grad, named = tmp_path / "g.npy", tmp_path / "g.safetensors"
    np.save(grad, np.linspace(-1, 1, 1000, dtype=np.float32))
    save_file({"w": np.linspace(-1, 1, 600, dtype=np.float32).reshape(20, 30), "n": np.arange(7)}, named)
    commands = [
        ["--version"],
        ["info", str(GOLDEN)],
        ["compress", str(grad), "--prior", "context", "-q"],
        ["decompress", str(grad) + ".lmgc", "-o", str(tmp_path / "back.npy"), "-q"],
        ["compress", str(named), "--prior", "context", "-q"],
        ["decompress", str(named) + ".lmgc", "-o", str(tmp_path / "back.safetensors"), "-q"],
    ]
    result = subprocess.run([sys.executable, "-c", SCRIPT.format(commands=commands)],
                            capture_output=True, text=True, check=True)  # fmt: skip
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
    assert (tmp_path / "back.npy").read_bytes() == grad.read_bytes()
    assert (tmp_path / "back.safetensors").read_bytes() == named.read_bytes()


def test_importing_lmgc_loads_no_compiler():
    """numba (about 0.3 s to import) loads when a codec first runs a compiled kernel."""
    result = subprocess.run([sys.executable, "-c", "import sys, lmgc; print('numba' in sys.modules)"],
                            capture_output=True, text=True, check=True)  # fmt: skip
    assert result.stdout.strip() == "False", result.stdout + result.stderr
