"""Lossy front-ends: sparsification and quantization in front of any lossless codec.

A pipeline is a ``+``-joined spec read left to right: zero or more sparsification stages, then at
most one quantization stage (which must be last)::

    quant:8             uniform min-max quantization to 8 bits, one (min, step) per tensor
    quant:4:block=256   ... 4 bits, one (min, step) per block of 256 values
    sign[:block=N]      1 bit per value (its sign), reconstructed as ±mean(|x|) of its block
    topk:1%             keep the 1% largest magnitudes of each tensor (at least one value)
    topk:1000           keep the 1000 largest magnitudes of each tensor (all, if fewer)
    randk:10%:seed=0    keep 10% of each tensor's values, chosen uniformly at random (seeded)
    topk:1%+quant:8     keep the top 1%, then quantize the kept values to 8 bits

:meth:`LossyPipeline.encode` turns a :class:`~lmgc.tensors.TensorBundle` into a *payload*
bundle (the bytes a lossless codec then compresses) and a small JSON-able ``info`` dict; the two
together are everything :meth:`LossyPipeline.decode` needs. No side information is left out:
kept positions (a bitmap or delta-coded LEB128 varints, whichever is smaller, per tensor and
stage), quantization minima and steps, sign scales all travel as payload tensors; which of the
two position codings each stream uses is in ``info["positions"]`` (see :func:`side_info_bytes`).

Quantized values are stored with the narrowest element width that holds them: 1/2/4-bit codes
packed into bytes (first value in the high bits), 8-bit codes one byte each, 16-bit codes as
int16 (code - 32768). Values kept by a sparsification stage with no quantizer after it keep their
original dtype and are bit-exact. Non-float tensors (ints, bools) pass through unchanged.

Decoding is deterministic numpy arithmetic on the payload: it returns exactly the dequantized
tensors the encoder meant, as the original names, shapes, dtypes and format (float32
reconstructions are rounded back to float16 / bfloat16; float64 tensors are quantized in float32).

>>> import numpy as np
>>> from lmgc.tensors import bundle_objects
>>> pipeline = parse_lossy("topk:10%+quant:8")
>>> bundle = bundle_objects({"w": np.linspace(-1, 1, 100, dtype=np.float32)})
>>> payload, info = pipeline.encode(bundle)
>>> for t in payload.tensors:
...     print(t.name, t.dtype, t.shape)
codes/0/w uint8 (10,)
scales/0/w float32 (1, 2)
positions0/0/w uint8 (10,)
>>> info["positions"]  # the 10 positions as delta varints (10 bytes) beat a bitmap (13)
'd'
>>> restored = pipeline.decode(payload, info)
>>> round(error_report(bundle, restored)["rel_l2"], 3)
0.854
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Union

import numpy as np

from .errors import CorruptDataError, FormatError, InputError, LossySpecError
from .tensors import ITEMSIZE, TensorBundle, TensorRecord

__all__ = [
    "LossySpecError",
    "Quantize",
    "Sign",
    "TopK",
    "RandK",
    "LossyPipeline",
    "parse_lossy",
    "decode",
    "split_payload",
    "error_report",
    "side_info_bytes",
    "INFO_VERSION",
]

INFO_VERSION = 1
QUANT_BITS = (1, 2, 4, 8, 16)
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
# How element bytes are viewed in numpy; bfloat16 travels as its uint16 bit pattern.
_NATIVE = {"float16": "<f2", "bfloat16": "<u2", "float32": "<f4", "float64": "<f8"}

VALID_FORMS = (
    "valid stages: quant:B[:block=N] (B in 1, 2, 4, 8, 16), sign[:block=N], topk:P% or topk:K, "
    "randk:P%[:seed=S] or randk:K[:seed=S] (0 < P <= 100, K >= 1); join stages with '+', "
    "sparsification first and quantization last, e.g. topk:1%+quant:8; or 'none'"
)


# --- stages ---------------------------------------------------------------------------------

def _amount_text(percent: Fraction | None, count: int | None) -> str:
    if count is not None:
        return str(count)
    assert percent is not None
    if percent.denominator == 1:
        return f"{percent.numerator}%"
    return f"{float(percent):g}%" if Fraction(f"{float(percent):g}") == percent else f"{percent}%"


@dataclass(frozen=True)
class _Sparsifier:
    """Keeps ``percent``% (rounded up, at least one) or ``count`` values of each tensor."""

    percent: Fraction | None = None
    count: int | None = None

    def keep(self, n: int) -> int:
        """How many of ``n`` values this stage keeps."""
        if n == 0:
            return 0
        if self.count is not None:
            return min(self.count, n)
        return max(1, min(n, math.ceil(n * self.percent / 100)))


@dataclass(frozen=True)
class TopK(_Sparsifier):
    """Top-k by magnitude; ties go to the lower index (deterministic)."""

    def __str__(self) -> str:
        return f"topk:{_amount_text(self.percent, self.count)}"

    def select(self, magnitude: np.ndarray, k: int, tensor_index: int) -> np.ndarray:
        n = magnitude.size
        if k >= n:
            return np.arange(n, dtype=np.int64)
        threshold = np.partition(magnitude, n - k)[n - k]  # the k-th largest magnitude
        above = np.flatnonzero(magnitude > threshold)
        ties = np.flatnonzero(magnitude == threshold)[: k - above.size]
        return np.sort(np.concatenate([above, ties])).astype(np.int64)


@dataclass(frozen=True)
class RandK(_Sparsifier):
    """k positions drawn uniformly without replacement, seeded by ``seed`` and the tensor index.

    The positions are stored (not re-drawn from the seed when decoding), so decoding does not
    depend on numpy's sampling algorithm. Kept values are not rescaled.
    """

    seed: int = 0

    def __str__(self) -> str:
        return f"randk:{_amount_text(self.percent, self.count)}:seed={self.seed}"

    def select(self, magnitude: np.ndarray, k: int, tensor_index: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, tensor_index])
        return np.sort(rng.choice(magnitude.size, size=k, replace=False)).astype(np.int64)


@dataclass(frozen=True)
class Quantize:
    """Uniform min-max quantization to ``bits`` bits, per tensor or per ``block`` values.

    Per block: ``lo = min``, ``step = float32((max - min) / (2**bits - 1))``, code
    ``q = clip(rint((x - lo) / step))``; the value decoded is ``float32(lo + q * step)``
    (computed in float64, exact up to the final rounding). Side information: (lo, step) as two
    float32 per block.
    """

    bits: int
    block: int | None = None

    def __str__(self) -> str:
        return f"quant:{self.bits}" + (f":block={self.block}" if self.block else "")

    def n_blocks(self, m: int) -> int:
        return 0 if m == 0 else -(-m // (self.block or m))

    def codes_record(self, m: int) -> tuple[str, tuple[int, ...]]:
        if self.bits == 16:
            return "int16", (m,)
        return "uint8", (-(-m * self.bits // 8),)

    def scales_shape(self, m: int) -> tuple[int, ...]:
        return (self.n_blocks(m), 2)

    def encode(self, values: np.ndarray) -> tuple[bytes, bytes]:
        x = values.astype(np.float64)
        m, levels = x.size, (1 << self.bits) - 1
        block = self.block or max(m, 1)
        starts = np.arange(0, m, block)
        lo = np.minimum.reduceat(x, starts).astype(np.float32)
        hi = np.maximum.reduceat(x, starts)
        step = ((hi - lo.astype(np.float64)) / levels).astype(np.float32)
        if not np.isfinite(step).all():
            raise InputError(f"quant:{self.bits}: a block's value range exceeds float32; "
                             "use more bits or smaller blocks")
        which = np.arange(m) // block
        lo64, step64 = lo.astype(np.float64)[which], step.astype(np.float64)[which]
        safe = np.where(step64 > 0, step64, 1.0)
        q = np.where(step64 > 0, np.rint((x - lo64) / safe), 0.0)
        codes = np.clip(q, 0, levels).astype(np.int64)
        scales = np.stack([lo, step], axis=1).astype("<f4")
        return _pack_codes(codes, self.bits), scales.tobytes()

    def decode(self, codes: bytes, scales: bytes, m: int) -> np.ndarray:
        q = _unpack_codes(codes, self.bits, m).astype(np.float64)
        table = np.frombuffer(scales, "<f4").reshape(-1, 2).astype(np.float64)
        which = np.arange(m) // (self.block or max(m, 1))
        return (table[which, 0] + q * table[which, 1]).astype(np.float32)


@dataclass(frozen=True)
class Sign:
    """1-bit sign quantization: bit 1 for x >= 0; decoded as ±scale, scale = mean(|x|) per block.

    Side information: one float32 scale per block.
    """

    block: int | None = None

    def __str__(self) -> str:
        return "sign" + (f":block={self.block}" if self.block else "")

    def n_blocks(self, m: int) -> int:
        return 0 if m == 0 else -(-m // (self.block or m))

    def codes_record(self, m: int) -> tuple[str, tuple[int, ...]]:
        return "uint8", (-(-m // 8),)

    def scales_shape(self, m: int) -> tuple[int, ...]:
        return (self.n_blocks(m),)

    def encode(self, values: np.ndarray) -> tuple[bytes, bytes]:
        x = values.astype(np.float64)
        block = self.block or max(x.size, 1)
        starts = np.arange(0, x.size, block)
        sizes = np.diff(np.append(starts, x.size))
        scales = (np.add.reduceat(np.abs(x), starts) / sizes).astype("<f4")
        return _pack_codes((x >= 0).astype(np.int64), 1), scales.tobytes()

    def decode(self, codes: bytes, scales: bytes, m: int) -> np.ndarray:
        bits = _unpack_codes(codes, 1, m)
        scale = np.frombuffer(scales, "<f4")[np.arange(m) // (self.block or max(m, 1))]
        return np.where(bits == 1, scale, -scale).astype(np.float32)


Stage = Union[Quantize, Sign, TopK, RandK]
_Quantizer = (Quantize, Sign)


# --- code packing and position coding -------------------------------------------------------

def _pack_codes(codes: np.ndarray, bits: int) -> bytes:
    if bits == 16:
        return (codes - 32768).astype("<i2").tobytes()
    if bits == 8:
        return codes.astype(np.uint8).tobytes()
    per_byte = 8 // bits
    padded = np.zeros(-(-codes.size // per_byte) * per_byte, dtype=np.uint8)
    padded[: codes.size] = codes
    shifts = (8 - bits * (np.arange(per_byte) + 1)).astype(np.uint8)  # first value: high bits
    return np.bitwise_or.reduce(padded.reshape(-1, per_byte) << shifts, axis=1).astype(
        np.uint8).tobytes()


def _unpack_codes(data: bytes, bits: int, m: int) -> np.ndarray:
    if bits == 16:
        return np.frombuffer(data, "<i2").astype(np.int64) + 32768
    raw = np.frombuffer(data, np.uint8)
    if bits == 8:
        return raw.astype(np.int64)
    per_byte = 8 // bits
    shifts = (8 - bits * (np.arange(per_byte) + 1)).astype(np.uint8)
    codes = ((raw[:, None] >> shifts) & ((1 << bits) - 1)).reshape(-1)
    if np.any(codes[m:]):
        raise CorruptDataError("lossy payload: nonzero padding bits after the last packed code")
    return codes[:m].astype(np.int64)


def _varints(values: np.ndarray) -> bytes:
    """Unsigned LEB128 of every value, concatenated."""
    values = values.astype(np.uint64)
    if values.size == 0:
        return b""
    lengths = np.ones(values.size, dtype=np.int64)
    rest = values >> np.uint64(7)
    while rest.any():
        lengths += rest > 0
        rest >>= np.uint64(7)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    out = np.zeros(int(lengths.sum()), dtype=np.uint8)
    for j in range(int(lengths.max())):
        sel = lengths > j
        low = (values[sel] >> np.uint64(7 * j)) & np.uint64(0x7F)
        more = np.where(lengths[sel] > j + 1, 0x80, 0).astype(np.uint64)
        out[offsets[sel] + j] = (low | more).astype(np.uint8)
    return out.tobytes()


def _unvarints(data: bytes, count: int) -> np.ndarray:
    raw = np.frombuffer(data, np.uint8)
    last = (raw & 0x80) == 0
    ends = np.flatnonzero(last)
    if ends.size != count or (raw.size and not last[-1]):
        raise CorruptDataError(f"lossy payload: expected {count} delta-coded positions")
    starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
    lengths = ends - starts + 1
    if count and lengths.max() > 9:
        raise CorruptDataError("lossy payload: position varint too long")
    values = np.zeros(count, dtype=np.uint64)
    for j in range(int(lengths.max()) if count else 0):
        sel = lengths > j
        values[sel] |= (raw[starts[sel] + j] & 0x7F).astype(np.uint64) << np.uint64(7 * j)
    return values.astype(np.int64)


def _encode_positions(positions: np.ndarray, m: int) -> tuple[str, bytes]:
    """The cheaper of a bitmap (ceil(m/8) bytes) and delta-coded varints; ties go to the bitmap."""
    gaps = np.diff(positions, prepend=-1) - 1
    deltas = _varints(gaps)
    if len(deltas) < -(-m // 8):
        return "d", deltas
    mask = np.zeros(m, dtype=bool)
    mask[positions] = True
    return "b", np.packbits(mask).tobytes()


def _decode_positions(kind: str, data: bytes, m: int, k: int) -> np.ndarray:
    if kind == "b":
        bits = np.unpackbits(np.frombuffer(data, np.uint8))
        if np.any(bits[m:]) or int(bits[:m].sum()) != k:
            raise CorruptDataError(f"lossy payload: position bitmap does not mark {k} of {m}")
        return np.flatnonzero(bits[:m]).astype(np.int64)
    positions = np.cumsum(_unvarints(data, k) + 1) - 1
    if k and positions[-1] >= m:
        raise CorruptDataError(f"lossy payload: position {positions[-1]} beyond {m} values")
    return positions


# --- float conversions ----------------------------------------------------------------------

def _native(record: TensorRecord) -> np.ndarray:
    return np.frombuffer(record.data, _NATIVE[record.dtype])


def _to_float32(values: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":
        return (values.astype(np.uint32) << np.uint32(16)).view(np.float32)
    return values.astype(np.float32)


def _from_float32(values: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":  # round to nearest even
        bits = values.astype("<f4").view(np.uint32).astype(np.uint64)
        bits = bits + ((bits >> np.uint64(16)) & np.uint64(1)) + np.uint64(0x7FFF)
        return ((bits >> np.uint64(16)) & np.uint64(0xFFFF)).astype("<u2")
    return values.astype(_NATIVE[dtype])


# --- the pipeline ---------------------------------------------------------------------------

def _numel(shape) -> int:
    return int(np.prod(shape, dtype=np.int64)) if len(shape) else 1


@dataclass(frozen=True)
class _Slot:
    """One payload tensor: name, dtype, shape (None: delta varints, as long as its k varints)."""

    name: str
    dtype: str
    shape: tuple[int, ...] | None
    kept: int = 0  # for position streams: how many positions it holds


@dataclass(frozen=True)
class _Plan:
    """What the pipeline does to one tensor: value counts after each stage, position codings."""

    sizes: tuple[int, ...]  # n, then the count kept by each sparsification stage
    kinds: str  # per sparsification stage: "b" (bitmap) or "d" (delta-coded varints)


@dataclass(frozen=True)
class LossyPipeline:
    """Stages applied left to right: sparsifiers, then at most one quantizer (last)."""

    stages: tuple[Stage, ...] = ()

    def __str__(self) -> str:
        return "+".join(str(s) for s in self.stages) or "none"

    @property
    def spec(self) -> str:
        """The canonical spec (``parse_lossy(p.spec) == p``)."""
        return str(self)

    @property
    def sparsifiers(self) -> tuple[TopK | RandK, ...]:
        return tuple(s for s in self.stages if isinstance(s, (TopK, RandK)))

    @property
    def quantizer(self) -> Quantize | Sign | None:
        return next((s for s in self.stages if isinstance(s, _Quantizer)), None)

    def _transforms(self, dtype: str, n: int) -> bool:
        """Float tensors with values go through the stages; the rest pass through unchanged."""
        return bool(self.stages) and dtype in FLOAT_DTYPES and n > 0

    def _sizes(self, n: int) -> tuple[int, ...]:
        sizes = [n]
        for stage in self.sparsifiers:
            sizes.append(stage.keep(sizes[-1]))
        return tuple(sizes)

    # -- encoding --

    def encode(self, bundle: TensorBundle) -> tuple[TensorBundle, dict]:
        """The payload bundle to code losslessly, and the JSON-able ``info`` that inverts it.

        ``info`` holds the version, the spec, the original manifest and one character per
        transformed tensor and sparsification stage (``b``: bitmap, ``d``: delta varints).

        Raises:
            InputError: a float tensor holds NaN or infinity (or, quantized, exceeds float32).
        """
        blobs: dict[str, bytes] = {}
        kinds: list[str] = []
        for index, record in enumerate(bundle.tensors):
            if not self._transforms(record.dtype, len(record.data)):
                blobs[f"pass/{index}/{record.name}"] = record.data
                continue
            values = _native(record)
            as_float = _to_float32(values, record.dtype) if record.dtype == "bfloat16" else values
            if not np.isfinite(as_float).all():
                raise InputError(f"tensor {record.name or '<root>'!r} holds NaN or infinity; "
                                 "lossy stages need finite values")
            magnitude = np.abs(as_float.astype(np.float64))
            for j, (stage, k) in enumerate(zip(self.sparsifiers, self._sizes(values.size)[1:])):
                kept = stage.select(magnitude, k, index)
                kind, stream = _encode_positions(kept, values.size)
                kinds.append(kind)
                blobs[f"positions{j}/{index}/{record.name}"] = stream
                values, magnitude = values[kept], magnitude[kept]
            if self.quantizer is None:
                blobs[f"values/{index}/{record.name}"] = values.tobytes()
            else:
                as_float32 = _to_float32(values, record.dtype)
                if not np.isfinite(as_float32).all():
                    raise InputError(f"tensor {record.name or '<root>'!r} has values beyond the "
                                     "float32 range; quantization works in float32")
                codes, scales = self.quantizer.encode(as_float32)
                blobs[f"codes/{index}/{record.name}"] = codes
                blobs[f"scales/{index}/{record.name}"] = scales
        info = {"lossy": INFO_VERSION, "spec": self.spec, "manifest": bundle.manifest(),
                "positions": "".join(kinds)}
        slots = self._layout(info)
        assert sorted(blobs) == sorted(s.name for s in slots)
        records = [TensorRecord(s.name, s.dtype, (len(blobs[s.name]),) if s.shape is None
                                else s.shape, blobs[s.name], "numpy", None) for s in slots]
        assert all(len(r.data) == _numel(r.shape) * r.itemsize for r in records)
        return _payload_bundle(records), info

    # -- layout: every payload tensor's name, dtype and shape, from info alone --

    def _plans(self, info: dict) -> list[_Plan | None]:
        """Per original tensor: its plan, or None when it passes through; validates ``info``."""
        try:
            if info.get("lossy") != INFO_VERSION:
                raise FormatError(f"lossy info version {info.get('lossy')!r} is not supported "
                                  f"(this lmgc reads version {INFO_VERSION})")
            if info["spec"] != self.spec:
                raise FormatError(f"the payload was encoded with {info['spec']!r}, "
                                  f"not {self.spec!r}")
            kinds, per = info["positions"], len(self.sparsifiers)
            plans: list[_Plan | None] = []
            for meta in info["manifest"]["tensors"]:
                n = _numel(meta["shape"])
                if not self._transforms(meta["dtype"], n):
                    plans.append(None)
                    continue
                mine, kinds = kinds[:per], kinds[per:]
                if len(mine) != per or set(mine) - {"b", "d"}:
                    raise CorruptDataError("lossy info: bad position codings")
                plans.append(_Plan(self._sizes(n), mine))
            if kinds:
                raise CorruptDataError("lossy info: more position codings than tensors")
            return plans
        except (KeyError, TypeError, IndexError, AttributeError) as exc:
            raise CorruptDataError(f"lossy info is malformed: {type(exc).__name__}: {exc}"
                                   ) from None

    def _layout(self, info: dict) -> list[_Slot]:
        plans = self._plans(info)  # validates info first
        groups: dict[str, list[_Slot]] = {"codes": [], "values": [], "scales": [], "pass": []}
        positions: list[list[_Slot]] = [[] for _ in self.sparsifiers]
        for index, (meta, plan) in enumerate(zip(info["manifest"]["tensors"], plans)):
            suffix = f"/{index}/{meta['name']}"
            if plan is None:
                groups["pass"].append(_Slot("pass" + suffix, meta["dtype"], tuple(meta["shape"])))
                continue
            for j, kind in enumerate(plan.kinds):
                m, k = plan.sizes[j], plan.sizes[j + 1]
                shape = (-(-m // 8),) if kind == "b" else None
                positions[j].append(_Slot(f"positions{j}{suffix}", "uint8", shape, k))
            m = plan.sizes[-1]
            if self.quantizer is None:
                groups["values"].append(_Slot("values" + suffix, meta["dtype"], (m,)))
            else:
                dtype, shape = self.quantizer.codes_record(m)
                groups["codes"].append(_Slot("codes" + suffix, dtype, shape))
                groups["scales"].append(_Slot("scales" + suffix, "float32",
                                              self.quantizer.scales_shape(m)))
        return [*groups["codes"], *groups["values"], *groups["scales"],
                *(slot for stage in positions for slot in stage), *groups["pass"]]

    # -- decoding --

    def decode(self, coded: TensorBundle, info: dict) -> TensorBundle:
        """The dense reconstruction: the original names, shapes, dtypes, structure and format.

        Raises:
            FormatError: ``info`` is from another spec or version, or the payload does not match
                it (:class:`~lmgc.errors.CorruptDataError`).
        """
        slots = self._layout(info)
        if [t.name for t in coded.tensors] != [s.name for s in slots] or any(
                s.shape is not None and len(t.data) != _numel(s.shape) * ITEMSIZE[s.dtype]
                for s, t in zip(slots, coded.tensors)):
            raise CorruptDataError("lossy payload does not match its info (tensor names or sizes "
                                   "differ)")
        data = {t.name: t.data for t in coded.tensors}
        manifest = info["manifest"]
        blobs = []
        for index, (meta, plan) in enumerate(zip(manifest["tensors"], self._plans(info))):
            suffix = f"/{index}/{meta['name']}"
            if plan is None:
                blobs.append(data["pass" + suffix])
                continue
            if self.quantizer is None:
                values = np.frombuffer(data["values" + suffix], _NATIVE[meta["dtype"]])
            else:
                decoded = self.quantizer.decode(data["codes" + suffix], data["scales" + suffix],
                                                plan.sizes[-1])
                values = _from_float32(decoded, meta["dtype"])
            for j in reversed(range(len(plan.kinds))):
                kept = _decode_positions(plan.kinds[j], data[f"positions{j}{suffix}"],
                                         plan.sizes[j], plan.sizes[j + 1])
                dense = np.zeros(plan.sizes[j], dtype=values.dtype)  # all-zero bits: +0.0
                dense[kept] = values
                values = dense
            blobs.append(values.astype(_NATIVE[meta["dtype"]], copy=False).tobytes())
        return TensorBundle.from_manifest(manifest, blobs)

    def split_payload(self, data: bytes, info: dict) -> TensorBundle:
        """Rebuild the payload bundle from its concatenated bytes (its layout follows from info).

        A delta-coded position stream ends with its k-th varint, so no lengths are stored.
        """
        records, offset = [], 0
        for slot in self._layout(info):
            if slot.shape is None:
                window = np.frombuffer(data, np.uint8, count=min(len(data) - offset,
                                                                 10 * slot.kept), offset=offset)
                ends = np.flatnonzero((window & 0x80) == 0)
                if ends.size < slot.kept:
                    raise CorruptDataError(f"lossy payload: {slot.name} is truncated")
                shape = (int(ends[slot.kept - 1]) + 1,)
            else:
                shape = slot.shape
            size = _numel(shape) * ITEMSIZE[slot.dtype]
            if offset + size > len(data):
                raise CorruptDataError(f"lossy payload: {slot.name} is truncated")
            records.append(TensorRecord(slot.name, slot.dtype, shape,
                                        bytes(data[offset:offset + size]), "numpy", None))
            offset += size
        if offset != len(data):
            raise CorruptDataError(f"lossy payload has {len(data)} bytes, its info describes "
                                   f"{offset}")
        return _payload_bundle(records)


def _payload_bundle(records: list[TensorRecord]) -> TensorBundle:
    tree = {"__dict__": [[r.name, {"__tensor__": i}] for i, r in enumerate(records)]}
    return TensorBundle("object", tree, records)


def decode(coded: TensorBundle, info: dict) -> TensorBundle:
    """Decode with the pipeline named in ``info`` (no need to parse the spec yourself)."""
    return parse_lossy(_info_spec(info)).decode(coded, info)


def split_payload(data: bytes, info: dict) -> TensorBundle:
    """The payload bundle from its concatenated bytes, for the pipeline named in ``info``."""
    return parse_lossy(_info_spec(info)).split_payload(data, info)


def _info_spec(info: dict) -> str:
    if not isinstance(info, dict) or not isinstance(info.get("spec"), str):
        raise CorruptDataError("lossy info is malformed: no spec")
    return info["spec"]


def side_info_bytes(info: dict) -> int:
    """Bytes of ``info`` that a lossless coder would not need: compact JSON without the manifest.

    The manifest (names, shapes, dtypes of the original tensors) is what any container stores for
    lossless coding too; the rest (version, spec, one bitmap-or-delta flag per tensor and
    sparsification stage) is side information of the lossy stages. Everything else (positions,
    minima, steps, scales) is in the payload; kept counts follow from the spec and the shapes.
    """
    rest = {key: value for key, value in info.items() if key != "manifest"}
    return len(json.dumps(rest, separators=(",", ":")).encode())


# --- spec parsing ---------------------------------------------------------------------------

def _spec_error(spec: str, part: str, problem: str) -> LossySpecError:
    return LossySpecError(f"invalid lossy spec {spec!r}: {problem} in {part!r}; {VALID_FORMS}")


def _options(spec: str, part: str, tokens: list[str], allowed: tuple[str, ...]) -> dict[str, int]:
    options: dict[str, int] = {}
    for token in tokens:
        key, sep, value = token.partition("=")
        key = key.strip().lower()
        if not sep or key not in allowed:
            hint = f" (options: {', '.join(k + '=N' for k in allowed)})" if allowed else ""
            raise _spec_error(spec, part, f"unexpected {token!r}{hint}")
        if key in options:
            raise _spec_error(spec, part, f"{key} given twice")
        try:
            options[key] = int(value.strip())
        except ValueError:
            raise _spec_error(spec, part, f"{key} must be an integer, got {value!r}") from None
        if key == "block" and options[key] < 1:
            raise _spec_error(spec, part, f"block must be at least 1, got {options[key]}")
        if key == "seed" and options[key] < 0:
            raise _spec_error(spec, part, f"seed must be non-negative, got {options[key]}")
    return options


def _amount(spec: str, part: str, text: str) -> dict:
    text = text.strip()
    if text.endswith("%"):
        try:
            percent = Fraction(text[:-1].strip())
        except ValueError:
            raise _spec_error(spec, part, f"{text!r} is not a percentage") from None
        if not 0 < percent <= 100:
            raise _spec_error(spec, part, f"the percentage must be in (0, 100], got {text}")
        return {"percent": percent}
    try:
        count = int(text)
    except ValueError:
        raise _spec_error(spec, part, f"{text!r} is neither a percentage (P%) nor a count of "
                                      "values (an integer)") from None
    if count < 1:
        raise _spec_error(spec, part, f"the count must be at least 1, got {count}")
    return {"count": count}


def _parse_stage(spec: str, part: str) -> Stage:
    name, *args = [token.strip() for token in part.split(":")]
    name = name.lower()
    if name == "quant":
        if not args or "=" in args[0]:
            raise _spec_error(spec, part, "missing the number of bits")
        try:
            bits = int(args[0])
        except ValueError:
            bits = None
        if bits not in QUANT_BITS:
            raise _spec_error(spec, part, f"bits must be one of {', '.join(map(str, QUANT_BITS))},"
                                          f" got {args[0]!r}")
        return Quantize(bits, **_options(spec, part, args[1:], ("block",)))
    if name == "sign":
        return Sign(**_options(spec, part, args, ("block",)))
    if name in ("topk", "randk"):
        if not args or "=" in args[0]:
            raise _spec_error(spec, part, "missing how many values to keep (P% or K)")
        amount = _amount(spec, part, args[0])
        if name == "topk":
            _options(spec, part, args[1:], ())
            return TopK(**amount)
        return RandK(**amount, **_options(spec, part, args[1:], ("seed",)))
    raise _spec_error(spec, part, f"unknown stage {name!r}")


def parse_lossy(spec: str) -> LossyPipeline:
    """Parse ``stage+stage+...``; ``none`` (or an empty spec) is the identity pipeline.

    Raises:
        LossySpecError: the message names the bad part and lists the valid forms.
    """
    if not isinstance(spec, str):
        raise LossySpecError(f"a lossy spec is a string, got {type(spec).__name__}; {VALID_FORMS}")
    if spec.strip().lower() in ("", "none"):
        return LossyPipeline(())
    stages: list[Stage] = []
    for part in spec.split("+"):
        if not part.strip():
            raise _spec_error(spec, part, "empty stage")
        if part.strip().lower() == "none":
            raise _spec_error(spec, part, "'none' cannot be combined with other stages")
        stage = _parse_stage(spec, part.strip())
        if stages and isinstance(stages[-1], _Quantizer):
            raise _spec_error(spec, part, f"a stage after the quantizer {stages[-1]} "
                                          "(quantization must be the last stage)")
        stages.append(stage)
    return LossyPipeline(tuple(stages))


# --- error report ---------------------------------------------------------------------------

def _as_float64(record: TensorRecord) -> np.ndarray:
    if record.dtype == "bfloat16":
        return _to_float32(_native(record), "bfloat16").astype(np.float64)
    return np.frombuffer(record.data, np.dtype(record.dtype).newbyteorder("<")).astype(np.float64)


def _errors(original: np.ndarray, restored: np.ndarray) -> dict:
    diff = restored - original
    norm = float(np.linalg.norm(original))
    err = float(np.linalg.norm(diff))
    return {"max_abs": float(np.max(np.abs(diff))) if diff.size else 0.0,
            "rel_l2": err / norm if norm else (0.0 if err == 0 else math.inf),
            "sq_err": err * err, "sq_norm": norm * norm}


def error_report(original: TensorBundle, reconstructed: TensorBundle) -> dict:
    """Max absolute error and relative L2 error (||r - x|| / ||x||), overall and per tensor.

    Computed in float64 over every tensor (non-float tensors pass through, so their error is 0).

    Raises:
        InputError: the bundles do not hold the same tensors (count, names, shapes).
    """
    if [(t.name, tuple(t.shape)) for t in original.tensors] != [
            (t.name, tuple(t.shape)) for t in reconstructed.tensors]:
        raise InputError("error_report needs the same tensors (names and shapes) on both sides")
    per_tensor, sq_err, sq_norm, max_abs = {}, 0.0, 0.0, 0.0
    for index, (a, b) in enumerate(zip(original.tensors, reconstructed.tensors)):
        found = _errors(_as_float64(a), _as_float64(b))
        sq_err, sq_norm = sq_err + found.pop("sq_err"), sq_norm + found.pop("sq_norm")
        max_abs = max(max_abs, found["max_abs"])
        per_tensor[a.name if a.name not in per_tensor else f"{a.name}#{index}"] = found
    rel = math.sqrt(sq_err / sq_norm) if sq_norm else (0.0 if sq_err == 0 else math.inf)
    return {"max_abs": max_abs, "rel_l2": rel, "tensors": per_tensor}
