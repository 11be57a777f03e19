"""Classical lossless codecs behind one small interface, so LM-GC rates can be compared fairly.

Every codec takes raw little-endian bytes plus the element dtype (FPZIP, pcodec, blosc2 and the
byte-plane codecs need it) and returns one self-contained blob whose every byte is counted. The
paper's protocols are followed where it names one (gzip 9, lzma default, PNG, FLAC, FPZIP).
Codecs needing a package from the ``lmgc[baselines]`` extra import it lazily, so a missing package
makes that codec unavailable instead of breaking the import.

>>> import numpy as np
>>> codec = get_codec("gzip")
>>> data = np.arange(64, dtype=np.float32).tobytes()
>>> blob = codec.compress(data, np.float32)
>>> codec.decompress(blob, np.float32, len(data)) == data
True
"""

from __future__ import annotations

import bz2
import functools
import gzip
import importlib
import lzma
import platform
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import InputError
from .media_codecs import (
    flac8_compress, flac8_decompress, flac16_compress, flac16_decompress, png_compress, png_decompress,
    png_shape,
)  # fmt: skip

__all__ = [
    "Codec",
    "BaselineCodec",
    "BinaryCodec",
    "CODECS",
    "get_codec",
    "register_codec",
    "png_shape",
    "EXTRA_HINT",
    "VERSIONED_PACKAGES",
    "versions",
]

EXTRA_HINT = "pip install 'lmgc[baselines]'"
#: Distributions whose versions decide the codecs' output (``pillow`` is the ``PIL`` module).
VERSIONED_PACKAGES = ("numpy", "zstandard", "brotli", "pillow", "soundfile", "fpzip", "pcodec",
                      "blosc2")


@runtime_checkable
class Codec(Protocol):
    """What the benchmark needs from a codec; an LLM codec plugs in by having the same members."""

    name: str

    def available(self) -> bool:
        """True when every package the codec needs can be imported."""
        ...

    def supports(self, dtype: np.dtype) -> bool:
        """True when the codec can compress elements of this dtype."""
        ...

    def compress(self, data: bytes, dtype: np.dtype) -> bytes:
        """Compress raw little-endian element bytes into one self-contained blob."""
        ...

    def decompress(self, blob: bytes, dtype: np.dtype, n_bytes: int) -> bytes:
        """Invert ``compress``; ``n_bytes`` is the original length (used to strip padding)."""
        ...


@functools.cache
def _module_available(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _any_dtype(dtype: np.dtype) -> bool:
    return True


@dataclass(frozen=True)
class BaselineCodec:
    """A classical codec: a compress/decompress pair plus the packages and dtypes it needs."""

    name: str
    description: str
    encode: Callable[[bytes, np.dtype], bytes]
    decode: Callable[[bytes, np.dtype, int], bytes]
    requires: tuple[str, ...] = ()
    accepts: Callable[[np.dtype], bool] = _any_dtype

    def available(self) -> bool:
        return all(_module_available(m) for m in self.requires)

    def missing_packages(self) -> list[str]:
        return [m for m in self.requires if not _module_available(m)]

    def install_hint(self) -> str:
        """How to get what :meth:`missing_packages` names."""
        return EXTRA_HINT

    def supports(self, dtype: np.dtype) -> bool:
        return self.accepts(np.dtype(dtype))

    def compress(self, data: bytes, dtype: np.dtype) -> bytes:
        return self.encode(bytes(data), _little_endian(dtype))

    def decompress(self, blob: bytes, dtype: np.dtype, n_bytes: int) -> bytes:
        return self.decode(bytes(blob), _little_endian(dtype), int(n_bytes))


def _little_endian(dtype: np.dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    return dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype


def _is_float32_or_64(dtype: np.dtype) -> bool:
    return dtype.kind == "f" and dtype.itemsize in (4, 8)


def _is_pcodec_type(dtype: np.dtype) -> bool:
    # pcodec refuses 8-bit types by default ("often a mistake"); bf16 arrives as uint16 bits.
    return dtype.kind in "fiu" and dtype.itemsize in (2, 4, 8)


# --- general-purpose byte codecs (standard library, zstandard, brotli) -------------------------

def _zstd_compress(level: int) -> Callable[[bytes, np.dtype], bytes]:
    def encode(data: bytes, dtype: np.dtype) -> bytes:
        import zstandard

        return zstandard.ZstdCompressor(level=level).compress(data)

    return encode


def _zstd_decompress(blob: bytes, dtype: np.dtype, n_bytes: int) -> bytes:
    import zstandard

    return zstandard.ZstdDecompressor().decompress(blob, max_output_size=max(n_bytes, 1))


def _brotli_compress(data: bytes, dtype: np.dtype) -> bytes:
    import brotli

    return brotli.compress(data, quality=11)


def _brotli_decompress(blob: bytes, dtype: np.dtype, n_bytes: int) -> bytes:
    import brotli

    return brotli.decompress(blob)


# --- float-aware codecs: FPZIP, pcodec, blosc2 ----------------------------------------------

def _fpzip_compress(data: bytes, dtype: np.dtype) -> bytes:
    import fpzip

    # fpzip wants a writable array; precision 0 means lossless
    return fpzip.compress(np.frombuffer(data, dtype).copy(), precision=0, order="C")


def _fpzip_decompress(blob: bytes, dtype: np.dtype, n_bytes: int) -> bytes:
    import fpzip

    return np.ascontiguousarray(fpzip.decompress(blob, order="C"), dtype).tobytes()


def _pcodec_compress(data: bytes, dtype: np.dtype) -> bytes:
    import pcodec
    from pcodec import standalone

    return standalone.simple_compress(np.frombuffer(data, dtype), pcodec.ChunkConfig())


def _pcodec_decompress(blob: bytes, dtype: np.dtype, n_bytes: int) -> bytes:
    from pcodec import standalone

    values = standalone.simple_decompress(blob)
    return b"" if values is None else np.asarray(values, dtype).tobytes()


def _blosc2_compress(data: bytes, dtype: np.dtype) -> bytes:
    import blosc2

    params = blosc2.CParams(codec=blosc2.Codec.ZSTD, clevel=9, typesize=dtype.itemsize,
                            nthreads=1, filters=[blosc2.Filter.SHUFFLE], filters_meta=[0])
    return blosc2.compress2(data, cparams=params)


def _blosc2_decompress(blob: bytes, dtype: np.dtype, n_bytes: int) -> bytes:
    import blosc2

    return bytes(blosc2.decompress2(blob))


# --- byte planes (ZipNN-style grouping) ----------------------------------------------------

def _byte_planes_codec(compress_plane: Callable[[bytes], bytes],
                       decompress_plane: Callable[[bytes, int], bytes]):
    """Split elements into byte planes (exponent bytes apart from mantissa bytes), compress each.

    Layout: ``itemsize`` little-endian uint32 plane lengths (counted), then the planes.
    """

    def encode(data: bytes, dtype: np.dtype) -> bytes:
        k = dtype.itemsize
        rows = np.frombuffer(data, np.uint8).reshape(-1, k)
        planes = [compress_plane(rows[:, j].tobytes()) for j in range(k)]
        return struct.pack(f"<{k}I", *map(len, planes)) + b"".join(planes)

    def decode(blob: bytes, dtype: np.dtype, n_bytes: int) -> bytes:
        k = dtype.itemsize
        lengths = struct.unpack_from(f"<{k}I", blob)
        rows = np.empty((n_bytes // k, k), np.uint8)
        pos = 4 * k
        for j, length in enumerate(lengths):
            plane = decompress_plane(blob[pos:pos + length], n_bytes // k)
            rows[:, j] = np.frombuffer(plane, np.uint8)
            pos += length
        return rows.tobytes()

    return encode, decode


def _zstd19_plane(plane: bytes) -> bytes:
    return _zstd_compress(19)(plane, np.dtype(np.uint8))


def _zstd_plane_decompress(blob: bytes, n: int) -> bytes:
    return _zstd_decompress(blob, np.dtype(np.uint8), n)


def _lzma_plane_decompress(blob: bytes, n: int) -> bytes:
    return lzma.decompress(blob)


def _stdlib(compress: Callable[[bytes], bytes], decompress: Callable[[bytes], bytes]):
    return (lambda data, dtype: compress(data)), (lambda blob, dtype, n: decompress(blob))


# --- zpaq: a context-mixing archiver, run as an external binary -----------------------------

ZPAQ_HINT = "e.g. apt-get install zpaq"


def _zpaq_compress(data: bytes, dtype: np.dtype) -> bytes:
    """``zpaq a -m5`` (its strongest built-in method) on one file; the whole archive is counted,
    its small journal and file entry included. One thread, like lmgc's context coder."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "x").write_bytes(data)
        _run_zpaq(["a", "a.zpaq", "x", "-m5", "-t1", "-noattributes"], tmp)
        return (Path(tmp) / "a.zpaq").read_bytes()


def _zpaq_decompress(blob: bytes, dtype: np.dtype, n_bytes: int) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "a.zpaq").write_bytes(blob)
        _run_zpaq(["x", "a.zpaq", "x", "-to", "out", "-t1"], tmp)
        out = Path(tmp) / "out"
        return out.read_bytes() if out.is_file() else b""


def _run_zpaq(args: list[str], cwd: str) -> None:
    done = subprocess.run(["zpaq", *args], cwd=cwd, capture_output=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"zpaq {args[0]} failed ({done.returncode}): {done.stderr[-300:]!r}")


@dataclass(frozen=True)
class BinaryCodec(BaselineCodec):
    """A codec that runs an external program: available when ``program`` is on PATH."""

    program: str = ""
    hint: str = ""

    def available(self) -> bool:
        return shutil.which(self.program) is not None

    def missing_packages(self) -> list[str]:
        return [] if self.available() else [f"the {self.program} binary on PATH"]

    def install_hint(self) -> str:
        return self.hint


_PLANES_ZSTD = _byte_planes_codec(_zstd19_plane, _zstd_plane_decompress)
_PLANES_LZMA = _byte_planes_codec(lzma.compress, _lzma_plane_decompress)

_BUILTIN = [
    BaselineCodec("gzip", "gzip level 9 (paper)",
                  *_stdlib(lambda d: gzip.compress(d, 9, mtime=0), gzip.decompress)),
    BaselineCodec("lzma", "xz, default preset 6 (paper)", *_stdlib(lzma.compress, lzma.decompress)),
    BaselineCodec("lzma-9e", "xz, preset 9 | EXTREME",
                  *_stdlib(lambda d: lzma.compress(d, preset=9 | lzma.PRESET_EXTREME),
                           lzma.decompress)),
    BaselineCodec("bz2", "bzip2 level 9", *_stdlib(lambda d: bz2.compress(d, 9), bz2.decompress)),
    BaselineCodec("zstd-3", "zstd level 3", _zstd_compress(3), _zstd_decompress, ("zstandard",)),
    BaselineCodec("zstd-19", "zstd level 19", _zstd_compress(19), _zstd_decompress,
                  ("zstandard",)),
    BaselineCodec("brotli", "brotli quality 11", _brotli_compress, _brotli_decompress,
                  ("brotli",)),
    BaselineCodec("png", "8-bit gray PNG, closest-to-square shape, optimize (paper)",
                  png_compress, png_decompress, ("PIL",)),
    BaselineCodec("flac", "FLAC 8-bit mono 16 kHz, level 8 (paper protocol)",
                  flac8_compress, flac8_decompress, ("soundfile",)),
    BaselineCodec("flac-16", "FLAC 16-bit mono 16 kHz, level 8 (byte pairs as int16)",
                  flac16_compress, flac16_decompress, ("soundfile",)),
    BaselineCodec("fpzip", "FPZIP precision 0 (lossless; float32/float64 only) (paper)",
                  _fpzip_compress, _fpzip_decompress, ("fpzip",), _is_float32_or_64),
    BaselineCodec("pcodec", "pcodec standalone, default level (16/32/64-bit numbers)",
                  _pcodec_compress, _pcodec_decompress, ("pcodec",), _is_pcodec_type),
    BaselineCodec("blosc2", "blosc2 byte shuffle + zstd clevel 9, 1 thread",
                  _blosc2_compress, _blosc2_decompress, ("blosc2",)),
    BaselineCodec("planes-zstd", "byte planes, each zstd-19 (ZipNN-style)", *_PLANES_ZSTD,
                  ("zstandard",)),
    BaselineCodec("planes-lzma", "byte planes, each xz preset 6 (ZipNN-style)", *_PLANES_LZMA),
    BinaryCodec("zpaq", "zpaq -m5, one thread (context mixing; external binary)", _zpaq_compress,
                _zpaq_decompress, program="zpaq", hint=ZPAQ_HINT),
]

CODECS: dict[str, Codec] = {codec.name: codec for codec in _BUILTIN}
"""All known codecs by name, in table order; ``register_codec`` adds more (e.g. an LLM codec)."""


def register_codec(codec: Codec, *, replace: bool = False) -> None:
    """Add a codec (for example one wrapping the LLM compressor) so the benchmark can name it."""
    if not isinstance(codec, Codec):
        raise InputError(f"{codec!r} lacks the Codec members name/available/supports/"
                         "compress/decompress")
    if codec.name in CODECS and not replace:
        raise InputError(f"codec {codec.name!r} is already registered; pass replace=True")
    CODECS[codec.name] = codec


def get_codec(name: str) -> Codec:
    """Look a codec up by name; unknown names raise InputError listing the valid ones."""
    try:
        return CODECS[name]
    except KeyError:
        raise InputError(f"unknown codec {name!r}; valid codecs: {', '.join(CODECS)}") from None


def versions() -> dict[str, str]:
    """Python's version and every installed package of :data:`VERSIONED_PACKAGES`, for results."""
    found = {"python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return found
