"""Paths the user gave: inputs read with a clear error, outputs checked before the work and
written atomically, so nothing the user has is overwritten or lost."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO

from .errors import InputError, OutputError, OutputExistsError

__all__ = ["read_input_bytes", "open_input", "check_input_file", "check_output_path", "check_output_folder",
           "atomic_path", "atomic_folder"]


def read_input_bytes(path: str | os.PathLike) -> bytes:
    """A whole input file, or an InputError that says what is wrong with the path."""
    with open_input(path) as file:
        try:
            return file.read()
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None


def open_input(path: str | os.PathLike) -> BinaryIO:
    """An input file opened for reading, or an InputError that says what is wrong with the path."""
    path = Path(path)
    check_input_file(path)
    try:
        return open(path, "rb")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None


def check_input_file(path: Path) -> None:
    """Name what is wrong with an input path, rather than letting the first read raise an OSError."""
    try:
        mode = path.stat().st_mode
        if stat.S_ISREG(mode):
            with open(path, "rb"):  # opened only once known to be a file: a FIFO would block
                return
    except FileNotFoundError:
        raise InputError(f"input file not found: {path}") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    if stat.S_ISDIR(mode):
        raise InputError(f"{path} is a directory, not a tensor file")
    raise InputError(f"{path} is not a regular file")


def check_output_path(path: str | os.PathLike, *, force: bool, inputs=()) -> Path:
    """Refuse an output that cannot or must not be written, before any long work starts.

    Parent directories that do not exist yet are fine (:func:`atomic_path` creates them). The
    directory is probed by creating a file in it, since permission bits do not bind root and say
    nothing about read-only mounts.

    Raises:
        OutputError: ``path`` is one of ``inputs`` (even with ``force``), a directory, under a
            file, or in a directory that cannot be written.
        OutputExistsError: ``path`` exists and ``force`` is false.
    """
    path = Path(path)
    for source in inputs:
        if _same_file(path, Path(source)):
            raise OutputError(f"{path} is the input file; write the output to another path")
    if path.is_dir():
        raise OutputError(f"{path} is a directory; give a file path for the output")
    if path.exists() and not path.is_file():  # replacing e.g. /dev/null would break the system
        raise OutputError(f"{path} is not a regular file; give another path for the output")
    if path.exists() and not force:
        raise OutputExistsError(f"{path} exists; pass --force (force=True) to overwrite it")
    return _probe_parent(path)


def check_output_folder(path: str | os.PathLike, *, force: bool, inputs=()) -> Path:
    """:func:`check_output_path` for a folder output (the files of a compressed folder): it must
    not exist, or with ``force`` be a folder, into which files of the same paths are written.

    Raises:
        OutputError: ``path`` is one of ``inputs``, a file, or in a directory that cannot be written.
        OutputExistsError: ``path`` exists and ``force`` is false.
    """
    path = Path(path)
    for source in inputs:
        if _same_file(path, Path(source)):
            raise OutputError(f"{path} is the input file; write the output to another path")
    if (path.exists() or path.is_symlink()) and not path.is_dir():
        raise OutputError(f"{path} is not a folder, and the compressed data is a folder; give a folder path")
    if path.exists() and not force:
        raise OutputExistsError(f"{path} exists; pass --force (force=True) to write into it, replacing "
                                "files of the same paths")  # fmt: skip
    return _probe_parent(path)


def _probe_parent(path: Path) -> Path:
    """Where ``path``'s temporary file or folder goes must be a writable directory."""
    directory = path.parent
    while not directory.exists() and directory.parent != directory:  # nearest existing ancestor
        directory = directory.parent
    if not directory.is_dir():
        raise OutputError(f"cannot write {path}: {directory} is not a directory")
    try:
        with tempfile.NamedTemporaryFile(prefix=f".{path.name}.", dir=directory):
            pass
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {directory} is not writable ({exc.strerror})") from None
    return path


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # either does not exist (yet): they cannot be the same file
        return False


@contextlib.contextmanager
def atomic_path(target: Path):
    """A temporary path next to ``target``, renamed onto it only if the block succeeds.

    The file is created like ``open(target, "w")`` would create it (0o666 less the umask), not
    with mkstemp's 0o600, which would leave every output private to its writer.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(8)}")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_folder(target: Path):
    """A temporary folder next to ``target`` whose files take their places under ``target`` only
    if the block succeeds: the folder is renamed to ``target`` if that does not exist, or its files
    are moved into the existing folder (``force``), replacing files of the same paths, once every
    destination is checked: none may lie under a symbolic link or be a link or a folder, since a
    link would lead the write out of ``target``.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(8)}")
    tmp.mkdir()
    try:
        yield tmp
        if not target.exists():
            os.rename(tmp, target)
            return
        moves = [(file, target / file.relative_to(tmp)) for file in sorted(tmp.rglob("*")) if not file.is_dir()]
        for _, dest in moves:
            _check_destination(target, dest)
        for file, dest in moves:
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(file, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_destination(root: Path, dest: Path) -> None:
    for place in [*reversed(dest.relative_to(root).parents[:-1]), dest.relative_to(root)]:
        path = root / place
        if path.is_symlink() or (path.exists() and (path == dest) == path.is_dir()):
            raise OutputError(f"cannot write {dest}: {path} is a symbolic link, or a file where a folder "
                              "belongs (or a folder where a file belongs); nothing was written")  # fmt: skip

