"""Typed errors: every failure a user can cause is one of these, with a message naming the fix."""

from __future__ import annotations

__all__ = [
    "LmgcError",
    "InputError",
    "UnsupportedDtypeError",
    "UnsafePickleError",
    "LossySpecError",
    "DatasetNotFoundError",
    "OutputExistsError",
    "OutputError",
    "SerializationError",
    "VerificationError",
    "FormatError",
    "NotAnLmgcFileError",
    "UnsupportedVersionError",
    "CorruptDataError",
    "LimitExceededError",
    "ModelError",
    "ModelMismatchError",
    "UntrustedModelError",
    "EnvironmentMismatchError",
]


class LmgcError(Exception):
    """Base class of all errors raised by lmgc on bad input or mismatched environments."""


class InputError(LmgcError):
    """An input file or tensor cannot be read or is not supported."""


class UnsupportedDtypeError(InputError):
    """A tensor has a dtype lmgc does not compress."""


class UnsafePickleError(InputError):
    """A .pt/.pth file holds objects other than tensors (refused: loading them could run code)."""


class LossySpecError(InputError):
    """A ``--lossy`` spec cannot be parsed; the message names the bad part and the valid forms."""


class DatasetNotFoundError(InputError):
    """The files of a dataset are not where lmgc looked; the message says how to get them."""


class OutputExistsError(LmgcError):
    """The output path exists and overwriting was not requested."""


class OutputError(LmgcError):
    """The output path cannot be written (a directory, under a file, read-only, or the input)."""


class SerializationError(LmgcError):
    """Bytes cannot be turned into text (or back) with the chosen serialization and model."""


class VerificationError(LmgcError):
    """A freshly written container does not decode to its input (``--verify``): an lmgc bug or a
    numerically unstable setup; nothing was written."""


class FormatError(LmgcError):
    """A container is malformed."""


class NotAnLmgcFileError(FormatError):
    """The data does not start with the lmgc magic bytes."""


class UnsupportedVersionError(FormatError):
    """The container was written by a format version this lmgc cannot read."""


class CorruptDataError(FormatError):
    """The container is truncated, or a checksum (CRC32 / SHA-256) does not match."""


class LimitExceededError(FormatError):
    """A container claims more than the caller allows (output size, header size, nesting)."""


class ModelError(LmgcError):
    """A model cannot be found or loaded."""


class ModelMismatchError(ModelError):
    """The model given for decoding is not the one the data was encoded with."""


class UntrustedModelError(ModelError):
    """A container names a model the caller has not allowed (files never choose what is loaded)."""


class EnvironmentMismatchError(LmgcError):
    """Decoding would run on a numerically different stack (library versions, CPU kernels, device)."""
