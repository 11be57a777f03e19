"""Lossy front-ends: spec parsing, round trips per stage and combination, side info, errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from lmgc import lossy
from lmgc.errors import CorruptDataError, FormatError, InputError
from lmgc.lossy import (
    LossySpecError,
    Quantize,
    RandK,
    Sign,
    TopK,
    error_report,
    parse_lossy,
    side_info_bytes,
)
from lmgc.lossy.floats import from_float32
from lmgc.tensors import TensorBundle, bundle_objects

torch.set_num_threads(1)

SPECS = ["quant:1", "quant:2", "quant:4", "quant:8", "quant:16", "quant:4:block=256", "sign",
         "sign:block=64", "topk:1%", "topk:1000", "randk:10%:seed=3", "topk:1%+quant:8",
         "topk:10%+quant:4:block=32", "randk:5%+sign", "topk:50%+randk:20%:seed=1+quant:2",
         "none"]


def _floats(record) -> np.ndarray:
    return np.frombuffer(record.data, "<f4")


def _round_trip(pipeline, bundle):
    payload, info = pipeline.encode(bundle)
    info = json.loads(json.dumps(info))  # what a container header stores
    return payload, info, pipeline.decode(payload, info)


# --- parsing --------------------------------------------------------------------------------

def test_parse_valid_specs_and_canonical_form() -> None:
    assert parse_lossy("quant:8").stages == (Quantize(8),)
    assert parse_lossy(" quant:4:block=256 ").stages == (Quantize(4, 256),)
    assert parse_lossy("sign").stages == (Sign(),)
    assert parse_lossy("topk:1%").stages == (TopK(percent=1),)
    assert parse_lossy("topk:1000").stages == (TopK(count=1000),)
    assert parse_lossy("randk:10%:seed=7").stages == (RandK(percent=10, seed=7),)
    combined = parse_lossy("TopK:0.5%+quant:8")
    assert combined.stages == (TopK(percent=0.5), Quantize(8))
    assert str(combined) == "topk:0.5%+quant:8"
    assert parse_lossy("none").stages == () and str(parse_lossy("")) == "none"
    for spec in SPECS:
        pipeline = parse_lossy(spec)
        assert parse_lossy(pipeline.spec) == pipeline
    assert TopK(percent=1).keep(10) == 1 and TopK(percent=1).keep(9216) == 93
    assert TopK(count=1000).keep(10) == 10 and RandK(percent=100).keep(7) == 7


@pytest.mark.parametrize(("spec", "names"), [
    ("quant:0", ["'quant:0'", "bits must be one of 1, 2, 4, 8, 16"]),
    ("quant:3", ["bits must be one of"]),
    ("quant", ["missing the number of bits"]),
    ("topk:150%", ["'topk:150%'", "(0, 100]"]),
    ("topk:0%", ["(0, 100]"]),
    ("topk:0", ["at least 1"]),
    ("topk:0.01", ["neither a percentage"]),
    ("randk:x%", ["not a percentage"]),
    ("zip:3", ["unknown stage 'zip'"]),
    ("topk:1%+", ["empty stage"]),
    ("quant:8+topk:1%", ["'topk:1%'", "quantization must be the last stage"]),
    ("sign+quant:8", ["quantization must be the last stage"]),
    ("quant:8:bloc=3", ["unexpected 'bloc=3'", "block=N"]),
    ("quant:8:block=0", ["block must be at least 1"]),
    ("randk:1%:seed=x", ["seed must be an integer"]),
    ("topk:1%:seed=1", ["unexpected 'seed=1'"]),
    ("none+quant:8", ["cannot be combined"]),
])
def test_invalid_specs_name_the_bad_part_and_the_valid_forms(spec, names) -> None:
    with pytest.raises(LossySpecError) as caught:
        parse_lossy(spec)
    assert isinstance(caught.value, InputError)
    message = str(caught.value)
    assert all(name in message for name in names), message
    assert "valid stages: quant:B[:block=N]" in message and "topk:P%" in message


# --- round trips on the real gradients --------------------------------------------------------

@pytest.mark.parametrize("spec", SPECS)
def test_round_trip_is_deterministic_and_restores_the_structure(spec, gradient_bundle) -> None:
    pipeline = parse_lossy(spec)
    payload, info, restored = _round_trip(pipeline, gradient_bundle)
    again, info_again = pipeline.encode(gradient_bundle)
    assert [t.data for t in again.tensors] == [t.data for t in payload.tensors]
    assert json.loads(json.dumps(info_again)) == info
    assert [t.data for t in pipeline.decode(again, info).tensors] == [
        t.data for t in restored.tensors]
    assert lossy.decode(payload, info).manifest() == gradient_bundle.manifest()
    assert restored.manifest() == gradient_bundle.manifest()  # names, shapes, dtypes, format
    assert all(len(r.data) == len(o.data)
               for r, o in zip(restored.tensors, gradient_bundle.tensors))
    # the payload's layout follows from info alone: its concatenated bytes are enough
    flat = b"".join(t.data for t in payload.tensors)
    split = lossy.split_payload(flat, info)
    assert [(t.name, t.dtype, t.shape, t.data) for t in split.tensors] == [
        (t.name, t.dtype, t.shape, t.data) for t in payload.tensors]
    report = error_report(gradient_bundle, restored)
    assert set(report["tensors"]) == {t.name for t in gradient_bundle.tensors}
    if spec == "none":
        assert report["max_abs"] == 0 and payload.nbytes == gradient_bundle.nbytes
    else:
        assert 0 < report["rel_l2"] < math.inf and payload.nbytes < gradient_bundle.nbytes
    restored.to_objects()  # rebuilds torch tensors


@pytest.mark.parametrize("bits", [1, 2, 4, 8, 16])
def test_quantization_is_the_documented_grid_and_packs_codes(bits, gradient_bundle) -> None:
    pipeline = parse_lossy(f"quant:{bits}")
    payload, info, restored = _round_trip(pipeline, gradient_bundle)
    by_name = {t.name: t for t in payload.tensors}
    for index, (orig, back) in enumerate(zip(gradient_bundle.tensors, restored.tensors)):
        x, n = _floats(orig).astype(np.float64), math.prod(orig.shape)
        codes = by_name[f"codes/{index}/{orig.name}"]
        if bits == 16:
            assert codes.dtype == "int16" and len(codes.data) == 2 * n
            q = np.frombuffer(codes.data, "<i2").astype(np.int64) + 32768
        else:
            assert codes.dtype == "uint8" and len(codes.data) == math.ceil(n * bits / 8)
            q = np.unpackbits(np.frombuffer(codes.data, np.uint8)).reshape(-1, bits)
            q = (q.astype(np.int64) << np.arange(bits - 1, -1, -1)).sum(1)[:n]  # MSB first
        lo, step = np.frombuffer(by_name[f"scales/{index}/{orig.name}"].data, "<f4")
        assert lo == np.float32(x.min())
        assert step == np.float32((x.max() - float(lo)) / (2**bits - 1))
        expected = (float(lo) + q * float(step)).astype(np.float32)
        assert back.data == expected.tobytes()  # bit-exact w.r.t. the quantized representation
        rounding = float(np.spacing(np.float32(np.abs(x).max())))  # the final float32 rounding
        assert np.abs(expected - x).max() <= float(step) / 2 * (1 + 1e-5) + rounding


def test_block_quantization_has_one_scale_pair_per_block(gradient_bundle) -> None:
    payload, info, restored = _round_trip(parse_lossy("quant:4:block=100"), gradient_bundle)
    per_tensor = error_report(gradient_bundle, _round_trip(parse_lossy("quant:4"),
                                                           gradient_bundle)[2])
    for index, orig in enumerate(gradient_bundle.tensors):
        scales = next(t for t in payload.tensors if t.name == f"scales/{index}/{orig.name}")
        assert scales.shape == (math.ceil(math.prod(orig.shape) / 100), 2)
    assert error_report(gradient_bundle, restored)["rel_l2"] < per_tensor["rel_l2"]


def test_sign_decodes_to_plus_minus_block_mean(gradient_bundle) -> None:
    payload, info, restored = _round_trip(parse_lossy("sign:block=64"), gradient_bundle)
    for orig, back in zip(gradient_bundle.tensors, restored.tensors):
        x, r = _floats(orig), _floats(back)
        for start in range(0, x.size, 64):
            block = x[start:start + 64]
            scale = np.float32(np.abs(block.astype(np.float64)).mean())
            assert np.array_equal(r[start:start + 64], np.where(block >= 0, scale, -scale))


@pytest.mark.parametrize("spec", ["topk:1%", "topk:1000", "randk:10%:seed=3"])
def test_sparsification_keeps_exact_values_and_zeroes_the_rest(spec, gradient_bundle) -> None:
    stage = parse_lossy(spec).stages[0]
    _, _, restored = _round_trip(parse_lossy(spec), gradient_bundle)
    for orig, back in zip(gradient_bundle.tensors, restored.tensors):
        x, r = _floats(orig), _floats(back)
        kept = np.flatnonzero(r != 0)
        k = stage.keep(x.size)
        assert kept.size <= k and np.count_nonzero(x[r == 0] != 0) >= np.count_nonzero(x) - k
        assert np.array_equal(r[kept], x[kept])
        if isinstance(stage, TopK) and np.count_nonzero(x) >= k:
            assert kept.size == k
            assert np.abs(x[r == 0]).max(initial=0) <= np.abs(x[kept]).min()


def test_randk_is_seeded() -> None:
    values = np.arange(1, 1001, dtype=np.float32)
    bundle = bundle_objects({"w": values})

    def positions(spec):
        return np.flatnonzero(_floats(_round_trip(parse_lossy(spec), bundle)[2].tensors[0]))

    assert np.array_equal(positions("randk:5%:seed=1"), positions("randk:5%:seed=1"))
    assert not np.array_equal(positions("randk:5%:seed=1"), positions("randk:5%:seed=2"))
    assert positions("randk:5%:seed=1").size == 50


# --- side information --------------------------------------------------------------------------

def test_every_side_byte_is_in_the_payload_or_the_info(gradient_bundle) -> None:
    pipeline = parse_lossy("topk:1%+quant:8")
    payload, info = pipeline.encode(gradient_bundle)
    restored = pipeline.decode(payload, info)
    expected = 0
    for index, (orig, back) in enumerate(zip(gradient_bundle.tensors, restored.tensors)):
        n = math.prod(orig.shape)
        k = math.ceil(n / 100)
        positions = next(t for t in payload.tensors if t.name == f"positions0/{index}/{orig.name}")
        kept = np.flatnonzero(_floats(back) != 0)
        bitmap = math.ceil(n / 8)
        if kept.size == k:  # no kept value was quantized to exactly zero
            gaps = np.diff(kept, prepend=-1) - 1
            delta = int(sum(max(1, math.ceil(int(g).bit_length() / 7)) for g in gaps))
            assert len(positions.data) == min(bitmap, delta)  # the cheaper coding
        assert info["positions"][index] == ("b" if len(positions.data) == bitmap else "d")
        expected += k + 8 + len(positions.data)  # 8-bit codes + (min, step) + positions
    assert payload.nbytes == expected
    assert set(info) == {"lossy", "spec", "manifest", "positions"}
    assert info["manifest"] == gradient_bundle.manifest()
    side = side_info_bytes(info)
    assert side == len(json.dumps({"lossy": 1, "spec": "topk:1%+quant:8",
                                   "positions": info["positions"]}, separators=(",", ":")))
    assert side < 80 and payload.nbytes + side < gradient_bundle.nbytes / 50


def test_bitmap_wins_for_dense_positions_and_deltas_for_sparse() -> None:
    bundle = bundle_objects({"a": np.linspace(-1, 1, 4096, dtype=np.float32)})
    dense, dense_info = parse_lossy("randk:50%").encode(bundle)
    sparse, sparse_info = parse_lossy("topk:0.5%").encode(bundle)
    assert dense_info["positions"] == "b" and dense.tensors[0].dtype == "float32"
    assert dense.tensors[1].shape == (512,)  # 4096 bits
    assert sparse_info["positions"] == "d" and sparse.tensors[1].shape[0] < 512


def test_far_apart_positions_need_multi_byte_varints() -> None:
    values = np.zeros(300_000, dtype=np.float32)
    values[[5, 200_000, 299_999]] = [3.0, -2.0, 1.0]
    bundle = bundle_objects({"w": values})
    payload, info, restored = _round_trip(parse_lossy("topk:3"), bundle)
    assert info["positions"] == "d"
    assert payload.tensors[1].shape == (1 + 3 + 3,)  # gaps 5, 199994, 99998
    assert restored.tensors[0].data == values.tobytes()
    flat = b"".join(t.data for t in payload.tensors)
    assert lossy.split_payload(flat, info).tensors[1].data == payload.tensors[1].data


# --- dtypes, structure, edge cases ----------------------------------------------------------

def _mixed_bundle() -> TensorBundle:
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(3, 70, generator=generator)
    return bundle_objects({
        "half": base.half(), "bf16": base.bfloat16(), "double": base.double(),
        "step": torch.tensor([400, 7], dtype=torch.int64), "mask": base > 0,
        "empty": torch.zeros(0), "const": torch.full((5,), 0.25),
        "nested": [base[0].clone(), (np.arange(6, dtype=np.float32).reshape(2, 3),)],
    }, "pt")


@pytest.mark.parametrize("spec", ["quant:8", "topk:10%", "topk:10%+quant:4", "sign"])
def test_other_dtypes_and_non_float_passthrough(spec) -> None:
    bundle = _mixed_bundle()
    payload, info, restored = _round_trip(parse_lossy(spec), bundle)
    assert restored.manifest() == bundle.manifest()
    by_name = {t.name: (o, t) for o, t in zip(bundle.tensors, restored.tensors)}
    for name in ("step", "mask", "empty"):
        assert by_name[name][0].data == by_name[name][1].data
    objects = restored.to_objects()
    assert objects["bf16"].dtype == torch.bfloat16 and objects["half"].dtype == torch.float16
    assert isinstance(objects["nested"][1][0], np.ndarray)
    report = error_report(bundle, restored)
    assert report["tensors"]["step"]["max_abs"] == 0 and report["rel_l2"] < 1
    if spec.startswith("quant"):
        assert report["tensors"]["const"]["max_abs"] == 0  # min == max: exact
        for name in ("half", "bf16", "double"):  # quantized in float32, rounded back
            assert report["tensors"][name]["max_abs"] <= 6 / 255 / 2 + 0.02
    if spec == "topk:10%":  # no quantizer: kept values stay in their dtype, bit-exact
        for name in ("half", "bf16", "double"):
            orig, back = (t.to_object() for t in by_name[name])
            kept = back != 0
            assert int(kept.sum()) == 21 and torch.equal(back[kept], orig[kept])


def test_bfloat16_round_to_nearest_even() -> None:
    values = np.array([1.0, 1 + 2**-8, 1 + 3 * 2**-8, -2.5, 1e-30], dtype=np.float32)
    expected = torch.from_numpy(values).bfloat16().view(torch.int16).numpy().view("<u2")
    assert np.array_equal(from_float32(values, "bfloat16"), expected)


def test_non_finite_values_are_refused() -> None:
    bundle = bundle_objects({"w": np.array([1.0, np.nan, 2.0], dtype=np.float32)})
    with pytest.raises(InputError, match="NaN or infinity"):
        parse_lossy("quant:8").encode(bundle)


def test_decode_checks_spec_and_payload(gradient_bundle) -> None:
    payload, info = parse_lossy("topk:1%+quant:8").encode(gradient_bundle)
    with pytest.raises(FormatError, match="encoded with 'topk:1%\\+quant:8'"):
        parse_lossy("topk:1%+quant:4").decode(payload, info)
    short = TensorBundle(payload.format, payload.tree, payload.tensors[:-1])
    with pytest.raises(CorruptDataError, match="does not match"):
        lossy.decode(short, info)
    with pytest.raises(CorruptDataError, match="bytes"):
        lossy.split_payload(b"".join(t.data for t in payload.tensors) + b"\0", info)
    with pytest.raises(FormatError, match="version"):
        lossy.decode(payload, {**info, "lossy": 99})
    with pytest.raises(CorruptDataError, match="position codings"):
        lossy.decode(payload, {**info, "positions": info["positions"][:-1]})
    with pytest.raises(CorruptDataError, match="position codings"):
        lossy.decode(payload, {**info, "positions": info["positions"] + "d"})
    with pytest.raises(CorruptDataError, match="malformed"):
        lossy.decode(payload, {k: v for k, v in info.items() if k != "manifest"})
    flat = b"".join(t.data for t in payload.tensors)
    with pytest.raises(CorruptDataError, match="truncated"):
        lossy.split_payload(flat[:-40], info)
    corrupted = [t.data for t in payload.tensors]
    last = len(corrupted) - 1  # a delta stream: make it hold one position too few
    corrupted[last] = corrupted[last][:-1] + bytes([corrupted[last][-1] | 0x80])
    bad = TensorBundle(payload.format, payload.tree, [
        type(t)(t.name, t.dtype, t.shape, d, t.kind) for t, d in zip(payload.tensors, corrupted)])
    with pytest.raises(CorruptDataError, match="positions"):
        lossy.decode(bad, info)


def test_error_report_matches_numpy() -> None:
    a = np.array([1.0, -2.0, 2.0], dtype=np.float32)
    b = np.array([1.5, -2.0, 1.0], dtype=np.float32)
    report = error_report(bundle_objects({"x": a, "n": np.arange(3)}),
                          bundle_objects({"x": b, "n": np.arange(3)}))
    assert report["max_abs"] == 1.0
    assert report["rel_l2"] == pytest.approx(math.sqrt(1.25) / math.sqrt(9 + 5))
    assert report["tensors"]["x"]["rel_l2"] == pytest.approx(math.sqrt(1.25) / 3)
    assert report["tensors"]["n"] == {"max_abs": 0.0, "rel_l2": 0.0}
    with pytest.raises(InputError, match="same tensors"):
        error_report(bundle_objects({"x": a}), bundle_objects({"y": a}))
