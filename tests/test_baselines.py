"""Baseline codecs round-trip real gradient bytes; registry errors and missing packages are typed."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from lmgc.errors import InputError, LmgcError
from lmgc.eval import baselines
from lmgc.eval.baselines import (
    CODECS,
    BaselineCodec,
    get_codec,
    png_shape,
    register_codec,
)
from lmgc.eval.bench import run_bench
from lmgc.eval.inputs import load_file_bytes

DATA_DIR = Path(__file__).parent / "data"
MAX_GRADIENT_BYTES = 64 * 1024  # keeps the whole test file well under a minute


def make_real_gradients() -> bytes:
    """float32 gradients of a tiny MLP + conv net after a few SGD steps on random data."""
    import torch

    torch.manual_seed(0)
    conv = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10))
    mlp = torch.nn.Sequential(torch.nn.Linear(48, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    params = [*conv.parameters(), *mlp.parameters()]
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    for _ in range(4):
        opt.zero_grad()
        images, targets = torch.randn(16, 3, 8, 8), torch.randint(0, 10, (16,))
        loss = (torch.nn.functional.cross_entropy(conv(images), targets)
                + torch.nn.functional.cross_entropy(mlp(images[:, :, :4, :4].flatten(1)), targets))
        loss.backward()
        opt.step()
    return b"".join(p.grad.detach().numpy().astype("<f4").tobytes() for p in params)


@pytest.fixture(scope="session")
def real_gradients() -> dict[str, bytes]:
    """Real gradient bytes by dtype: the repository's fixture files when present, else made here."""
    data = None
    for path in sorted(DATA_DIR.rglob("*.safetensors")):
        loaded = load_file_bytes(path)
        if loaded.dtype_name == "float32":
            data = loaded.data[:MAX_GRADIENT_BYTES]
            break
    if data is None:
        data = make_real_gradients()
    values = np.frombuffer(data, "<f4")
    assert np.isfinite(values).all() and np.count_nonzero(values) > values.size // 2
    return {"float32": data, "float16": values.astype("<f2").tobytes()}


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("name", list(CODECS))
def test_codec_round_trips_real_gradients(name: str, dtype: str, real_gradients) -> None:
    codec = get_codec(name)
    if not codec.available():
        pytest.skip(f"{name} needs {codec.missing_packages()}")
    if not codec.supports(np.dtype(dtype)):
        pytest.skip(f"{name} does not take {dtype}")
    data = real_gradients[dtype]
    blob = codec.compress(data, np.dtype(dtype))
    assert isinstance(blob, bytes) and 0 < len(blob)
    assert codec.decompress(blob, np.dtype(dtype), len(data)) == data


@pytest.mark.parametrize("name", list(CODECS))
def test_codec_round_trips_empty_and_single_element(name: str) -> None:
    codec = get_codec(name)
    if not codec.available():
        pytest.skip(f"{name} needs {codec.missing_packages()}")
    for data in (b"", np.array([0.125], "<f4").tobytes()):
        blob = codec.compress(data, np.dtype("<f4"))
        assert codec.decompress(blob, np.dtype("<f4"), len(data)) == data


def test_float_only_codecs_declare_their_dtypes() -> None:
    assert get_codec("fpzip").supports(np.dtype("<f4"))
    assert not get_codec("fpzip").supports(np.dtype("<f2"))
    assert get_codec("pcodec").supports(np.dtype("<f2"))
    assert not get_codec("pcodec").supports(np.dtype("u1"))
    assert get_codec("gzip").supports(np.dtype("<f2"))


def test_png_shape_is_closest_to_square_factor() -> None:
    assert png_shape(12) == (3, 4)
    assert png_shape(16) == (4, 4)
    assert png_shape(13) == (1, 13)  # prime: a single row
    assert png_shape(4 * 1_000_003) == (4, 1_000_003)
    with pytest.raises(InputError, match="at least one byte"):
        png_shape(0)


def test_png_stores_an_8_bit_gray_image_of_that_shape() -> None:
    pytest.importorskip("PIL")
    import io

    from PIL import Image

    data = bytes(range(256)) * 3
    blob = get_codec("png").compress(data, np.dtype("u1"))
    with Image.open(io.BytesIO(blob)) as image:
        assert image.mode == "L" and image.size == (32, 24)  # (width, height) for 768 = 24 × 32


def test_flac_maps_every_byte_value_exactly() -> None:
    pytest.importorskip("soundfile")
    data = bytes(range(256)) * 4 + b"\x00\xff\x80"
    for name in ("flac", "flac-16"):
        blob = get_codec(name).compress(data, np.dtype("u1"))
        assert blob.startswith(b"fLaC")
        assert get_codec(name).decompress(blob, np.dtype("u1"), len(data)) == data


def test_byte_planes_count_their_header(real_gradients) -> None:
    data = real_gradients["float32"]
    blob = get_codec("planes-lzma").compress(data, np.dtype("<f4"))
    lengths = np.frombuffer(blob[:16], "<u4")
    assert len(blob) == 16 + int(lengths.sum())


def test_unknown_codec_is_a_typed_error_listing_valid_names() -> None:
    with pytest.raises(InputError, match=r"unknown codec 'gzp'.*gzip.*lzma"):
        get_codec("gzp")
    with pytest.raises(LmgcError):
        run_bench([], codecs=["nope"])


def test_register_codec_plugs_in_a_new_codec_once() -> None:
    identity = BaselineCodec("identity-test", "stores bytes as they are",
                             lambda d, t: d, lambda b, t, n: b)
    register_codec(identity)
    try:
        assert get_codec("identity-test") is identity
        with pytest.raises(InputError, match="already registered"):
            register_codec(identity)
        with pytest.raises(InputError, match="lacks the Codec members"):
            register_codec(object())  # type: ignore[arg-type]
    finally:
        CODECS.pop("identity-test")


def test_missing_package_makes_a_codec_unavailable(monkeypatch) -> None:
    monkeypatch.setattr(baselines, "_module_available", lambda module: module != "brotli")
    assert not get_codec("brotli").available()
    assert get_codec("brotli").missing_packages() == ["brotli"]
    assert get_codec("gzip").available()


@pytest.mark.skipif(shutil.which("zpaq") is None, reason="the zpaq binary is not installed")
def test_zpaq_round_trips_real_gradients_smaller_than_xz(real_gradients) -> None:
    codec = get_codec("zpaq")
    data = real_gradients["float32"][:16384]
    blob = codec.compress(data, np.dtype("float32"))
    assert codec.decompress(blob, np.dtype("float32"), len(data)) == data
    assert len(blob) < len(get_codec("lzma").compress(data, np.dtype("float32")))


def test_zpaq_without_the_binary_is_reported_plainly(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    path = tmp_path / "x.npy"
    np.save(path, np.zeros(16, np.float32))
    [result] = run_bench([path], codecs=["zpaq"], protocols=["whole"])
    assert result.status == "skipped"
    assert result.message == "needs the zpaq binary on PATH (e.g. apt-get install zpaq)"  # no pip hint
