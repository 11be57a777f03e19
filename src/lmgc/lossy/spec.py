"""Lossy specs: ``stage+stage+...`` strings parsed into a :class:`LossyPipeline`.

``decode`` and ``split_payload`` parse the spec recorded in a payload's ``info``, so a decoder needs
nothing but that ``info``.
"""

from __future__ import annotations

from fractions import Fraction

from ..errors import CorruptDataError, LossySpecError
from ..tensors import TensorBundle
from .pipeline import LossyPipeline
from .stages import QUANTIZERS, Quantize, RandK, Sign, Stage, TopK

__all__ = ["QUANT_BITS", "VALID_FORMS", "parse_lossy", "decode", "split_payload"]

QUANT_BITS = (1, 2, 4, 8, 16)
VALID_FORMS = (
    "valid stages: quant:B[:block=N] (B in 1, 2, 4, 8, 16), sign[:block=N], topk:P% or topk:K, "
    "randk:P%[:seed=S] or randk:K[:seed=S] (0 < P <= 100, K >= 1); join stages with '+', "
    "sparsification first and quantization last, e.g. topk:1%+quant:8; or 'none'"
)


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
        if stages and isinstance(stages[-1], QUANTIZERS):
            raise _spec_error(spec, part, f"a stage after the quantizer {stages[-1]} "
                                          "(quantization must be the last stage)")
        stages.append(stage)
    return LossyPipeline(tuple(stages))


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
