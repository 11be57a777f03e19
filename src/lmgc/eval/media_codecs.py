"""The paper's image and audio baselines: tensor bytes as an 8-bit grayscale PNG and as FLAC
(8-bit mono at 16 kHz, the paper's protocol, plus a 16-bit variant). Pillow and soundfile come
from the ``lmgc[baselines]`` extra and are imported when a codec runs."""

from __future__ import annotations

import io
import math

import numpy as np

from ..errors import InputError

__all__ = ["png_shape", "png_compress", "png_decompress", "flac8_compress", "flac8_decompress",
           "flac16_compress", "flac16_decompress", "FLAC_SAMPLE_RATE"]  # fmt: skip

FLAC_SAMPLE_RATE = 16_000  # the paper's protocol; FLAC ignores it apart from the header


# --- PNG: the paper's protocol --------------------------------------------------------------

def png_shape(n: int) -> tuple[int, int]:
    """(height, width) with height the largest divisor of ``n`` not above sqrt(n).

    A prime ``n`` gives a single 1×n row, where PNG's "up" filters have nothing to use.
    """
    if n <= 0:
        raise InputError(f"PNG needs at least one byte, got {n}")
    h = next(h for h in range(math.isqrt(n), 0, -1) if n % h == 0)
    return h, n // h


def png_compress(data: bytes, dtype: np.dtype) -> bytes:
    from PIL import Image

    if not data:  # PNG has no empty image; an empty input stays empty (its length is known)
        return b""
    h, w = png_shape(len(data))  # h*w == n exactly, so no padding is ever needed
    out = io.BytesIO()
    Image.frombytes("L", (w, h), data).save(out, format="PNG", optimize=True)
    return out.getvalue()


def png_decompress(blob: bytes, dtype: np.dtype, n_bytes: int) -> bytes:
    from PIL import Image

    if n_bytes == 0:
        return b""
    saved_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # large gradients are not decompression bombs
    try:
        with Image.open(io.BytesIO(blob)) as image:
            if image.mode != "L":
                raise ValueError(f"PNG decoded as mode {image.mode}, expected L")
            return image.tobytes()[:n_bytes]
    finally:
        Image.MAX_IMAGE_PIXELS = saved_limit


# --- FLAC: the paper's protocol (8-bit mono, 16 kHz) plus a 16-bit variant -------------------

def _flac_encode(samples: np.ndarray, subtype: str) -> bytes:
    import soundfile

    out = io.BytesIO()
    # libsndfile maps compression_level 1.0 to FLAC level 8, the highest the libFLAC encoder has
    # (the paper's "level 12" only exists in ffmpeg's own FLAC encoder).
    soundfile.write(out, samples, FLAC_SAMPLE_RATE, format="FLAC", subtype=subtype,
                    compression_level=1.0)
    return out.getvalue()


def _flac_decode(blob: bytes) -> np.ndarray:
    import soundfile

    samples, _ = soundfile.read(io.BytesIO(blob), dtype="int16", always_2d=False)
    return samples


def flac8_compress(data: bytes, dtype: np.dtype) -> bytes:
    if not data:  # libsndfile writes no file for zero samples
        return b""
    signed = np.frombuffer(data, np.uint8).astype(np.int16) - 128  # byte b -> sample b-128
    return _flac_encode(signed << 8, "PCM_S8")  # libsndfile keeps the high byte of int16


def flac8_decompress(blob: bytes, dtype: np.dtype, n_bytes: int) -> bytes:
    if n_bytes == 0:
        return b""
    return ((_flac_decode(blob) >> 8) + 128).astype(np.uint8).tobytes()


def flac16_compress(data: bytes, dtype: np.dtype) -> bytes:
    if not data:
        return b""
    padded = data + b"\0" * (len(data) % 2)  # odd length: one zero byte, stripped on decode
    return _flac_encode(np.frombuffer(padded, "<i2"), "PCM_16")


def flac16_decompress(blob: bytes, dtype: np.dtype, n_bytes: int) -> bytes:
    if n_bytes == 0:
        return b""
    return _flac_decode(blob).astype("<i2").tobytes()[:n_bytes]
