"""The lossy pipeline: stages applied to a tensor bundle, the payload layout, and decoding.

:meth:`LossyPipeline.encode` turns a bundle into a payload bundle (codes, kept values, scales,
positions, untouched tensors, in that order) plus a JSON-able ``info``; the payload's layout follows
from ``info`` alone, so :meth:`LossyPipeline.split_payload` needs no stored lengths.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from ..errors import CorruptDataError, FormatError, InputError
from ..tensors import ITEMSIZE, NUMPY_DTYPE, TensorBundle, TensorRecord
from .floats import FLOAT_DTYPES, from_float32, native_values, to_float32
from .positions import decode_positions, encode_positions
from .stages import QUANTIZERS, Quantize, RandK, Sign, Stage, TopK

__all__ = ["INFO_VERSION", "LossyPipeline", "side_info_bytes"]

INFO_VERSION = 1


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
        return next((s for s in self.stages if isinstance(s, QUANTIZERS)), None)

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
            values = native_values(record)
            as_float = to_float32(values, record.dtype) if record.dtype == "bfloat16" else values
            if not np.isfinite(as_float).all():
                raise InputError(f"tensor {record.name or '<root>'!r} holds NaN or infinity; "
                                 "lossy stages need finite values")
            magnitude = np.abs(as_float.astype(np.float64))
            for j, (stage, k) in enumerate(zip(self.sparsifiers, self._sizes(values.size)[1:])):
                kept = stage.select(magnitude, k, index)
                kind, stream = encode_positions(kept, values.size)
                kinds.append(kind)
                blobs[f"positions{j}/{index}/{record.name}"] = stream
                values, magnitude = values[kept], magnitude[kept]
            if self.quantizer is None:
                blobs[f"values/{index}/{record.name}"] = values.tobytes()
            else:
                as_float32 = to_float32(values, record.dtype)
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
                values = np.frombuffer(data["values" + suffix], NUMPY_DTYPE[meta["dtype"]])
            else:
                decoded = self.quantizer.decode(data["codes" + suffix], data["scales" + suffix],
                                                plan.sizes[-1])
                values = from_float32(decoded, meta["dtype"])
            for j in reversed(range(len(plan.kinds))):
                kept = decode_positions(plan.kinds[j], data[f"positions{j}{suffix}"],
                                         plan.sizes[j], plan.sizes[j + 1])
                dense = np.zeros(plan.sizes[j], dtype=values.dtype)  # all-zero bits: +0.0
                dense[kept] = values
                values = dense
            blobs.append(values.astype(NUMPY_DTYPE[meta["dtype"]], copy=False).tobytes())
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


def side_info_bytes(info: dict) -> int:
    """Bytes of ``info`` that a lossless coder would not need: compact JSON without the manifest.

    The manifest (names, shapes, dtypes of the original tensors) is what any container stores for
    lossless coding too; the rest (version, spec, one bitmap-or-delta flag per tensor and
    sparsification stage) is side information of the lossy stages. Everything else (positions,
    minima, steps, scales) is in the payload; kept counts follow from the spec and the shapes.
    """
    rest = {key: value for key, value in info.items() if key != "manifest"}
    return len(json.dumps(rest, separators=(",", ":")).encode())
