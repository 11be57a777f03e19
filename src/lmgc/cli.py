"""Command-line interface: ``lmgc compress | decompress | info | estimate`` (+ bench, collect, data).

Progress goes to stderr, results to stdout; every :class:`~lmgc.errors.LmgcError` (and, as a last
resort, any OSError or MemoryError) becomes one line ``lmgc: error: ...`` and exit code 1. Outputs
are checked before any model loads, and never replace an input.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import __version__
from .argtypes import batch_size, int_at_least, positive_int
from .collect import cli as collect_cli
from .errors import InputError, LmgcError, VerificationError
from .eval import cli as eval_cli
from .header import DEFAULT_MAX_OUTPUT_BYTES
from .lossy import error_report, parse_lossy

__all__ = ["main", "build_parser"]

SAMPLE_NAME = "convnet_w32_mnist_step50.safetensors"


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model: smollm2-135m (default, or $LMGC_MODEL), gemma3-270m, "
                        "a .gguf file, a local HF directory or a hub id")  # fmt: skip




def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return str(n)


def _codec_config(args):
    """The command line's codec settings, validated before any input is read or model loaded."""
    from .config import CodecConfig

    return CodecConfig(serialization=args.serialization, group_bytes=args.group_bytes,
                       chunk_bytes=args.chunk_bytes, batch_size=args.batch, threads=args.threads,
                       dtype=args.model_dtype, device=args.device)  # fmt: skip


def _cmd_compress(args) -> int:
    from .api import Compressor
    from .files import check_output_path
    from .sources import open_input

    config = _codec_config(args)
    pipeline = parse_lossy(args.lossy) if args.lossy else None
    folder = Path(args.input).is_dir()
    if folder and not args.recursive:
        raise InputError(f"{args.input} is a directory, not a tensor file; pass --recursive (-r) to "
                         "compress the folder into one .lmgc file")  # fmt: skip
    out = Path(args.output) if args.output else Path(str(Path(args.input)) + ".lmgc")
    check_output_path(out, force=args.force, inputs=[args.input])  # all before the model loads
    # Checked by their headers (a .pt read whole); the tensors are read while they are coded.
    source = open_input(args.input, args.dtype)
    compressor = Compressor(args.model, prior=args.prior, level=args.level, config=config,
                            progress=not args.quiet, lossy=pipeline)  # fmt: skip
    result = compressor.compress_file(source, out, force=args.force, verify=args.verify)
    print(f"{args.input} -> {out}: {_human(result.original_bytes)} -> {_human(result.compressed_bytes)} "
          f"({100 * result.rate:.2f}%), {result.original_bytes / result.seconds:,.0f} B/s"
          f"{', verified' if result.verified else ''}")  # fmt: skip
    if pipeline:
        report = error_report(result.lossy_input, result.lossy_output)
        print(f"lossy {args.lossy}: max abs error {report['max_abs']:.3g}, "
              f"relative L2 error {report['rel_l2']:.3g} (side information included in the size)")
    return 0


def _cmd_decompress(args) -> int:
    from .api import Decompressor

    src = Path(args.input)
    if args.output:
        out = Path(args.output)
    elif src.suffix == ".lmgc":
        out = src.with_suffix("")
    else:
        raise InputError(f"cannot derive an output name from {src}; give -o/--output")
    decompressor = Decompressor(
        args.model, allow_environment_mismatch=args.allow_env_mismatch, progress=not args.quiet,
        max_output_bytes=args.max_output_bytes or None,
    )  # fmt: skip
    decompressor.decompress_file(src, out, force=args.force)
    print(f"{src} -> {out}: decoded and verified against the file's checksums")
    return 0


def _tensor_labels(manifest: dict) -> list[str]:
    """Each tensor's name, prefixed by its file's path in a folder container."""
    names = [t["name"] for t in manifest["tensors"]]
    if manifest["format"] != "folder":
        return [name or "<tensor>" for name in names]
    paths = [f["path"] for f in manifest["files"] for _ in range(f["tensors"])]
    return [f"{path}:{name}" if name else path for path, name in zip(paths, names)]


def _cmd_info(args) -> int:
    from .api import read_container_info
    from .files import read_input_bytes
    from .priors import recorded_class
    from .tensors import TensorBundle

    path = Path(args.input)
    info = read_container_info(read_input_bytes(path))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    header = info["header"]
    codec, prior, total = header["codec"], header["prior"], header["total_bytes"]
    manifest = header["manifest"]
    rate = info["file_bytes"] / total if total else 0.0
    symbols = sum(c["symbols"] for c in info["chunks"])
    lines = [
        f"file:          {path} ({_human(info['file_bytes'])}, {100 * rate:.2f}% of {_human(total)})",
        f"payload:       {_human(info['payload_bytes'])} in {info['n_chunks']} chunks of "
        f"{codec['chunk_bytes']} B, {symbols:,} symbols",
    ]
    if "ideal_bits" in header:
        lines.append(f"ideal:         {header['ideal_bits'] / 8:,.0f} B (cross-entropy of the coded symbols)")
    lines += [
        f"serialization: {codec['serialization']}, {codec['group_bytes']} B per group, "
        f"batches of {codec['batch_size']} chunks",
        *(f"{label + ':':<15}{text}" for label, text in recorded_class(prior).describe(prior)),
        "environment:   " + ", ".join(f"{k} {v}" for k, v in header["environment"].items()),
        f"tensors:       {len(manifest['tensors'])} ({manifest['format']})",
    ]
    bundle = TensorBundle.from_manifest(manifest, [b""] * len(manifest["tensors"]))
    for label, t in list(zip(_tensor_labels(manifest), bundle.tensors))[: args.max_tensors]:
        lines.append(f"  {label}: {t.dtype} {list(t.shape)}")
    if len(bundle.tensors) > args.max_tensors:
        lines.append(f"  … {len(bundle.tensors) - args.max_tensors} more")
    sizes = [c["payload_bytes"] for c in info["chunks"]]
    if sizes:
        lines.append(f"chunk payloads: min {min(sizes)} B, mean {sum(sizes) / len(sizes):.0f} B, max {max(sizes)} B")
    lines.append(f"sha256:        {info['sha256']}")
    lines.append(f"integrity:     {info['integrity']}")
    print("\n".join(lines))
    return 0


def _cmd_estimate(args) -> int:
    from .api import Compressor
    from .tensors import read_tensors

    config = _codec_config(args)
    bundle = read_tensors(args.input, args.dtype)
    compressor = Compressor(args.model, prior=args.prior, level=args.level, config=config,
                            progress=not args.quiet)  # fmt: skip
    start = time.perf_counter()
    est = compressor.estimate(bundle)
    seconds = time.perf_counter() - start
    print(f"{args.input}: ESTIMATE (ideal code length from a full forward pass, not a coded size): "
          f"{_human(est.ideal_bits / 8)} of {_human(est.original_bytes)} = {100 * est.rate:.2f}%, "
          f"{est.n_tokens:,} tokens, {est.n_tokens / seconds:,.0f} tok/s")  # fmt: skip
    return 0


def _demo_rows(title: str, raw: bytes, rows: list[tuple[str, int]]) -> None:
    """Print ``rows`` (name, bytes) beside gzip, lzma and zstd on the same bytes."""
    import lzma
    import zlib

    rows = rows + [("gzip -9", len(zlib.compress(raw, 9))), ("lzma (default preset)", len(lzma.compress(raw)))]
    try:
        import zstandard

        rows.append(("zstd -19", len(zstandard.ZstdCompressor(level=19).compress(raw))))
    except ImportError:  # an optional extra (pip install lmgc[baselines])
        pass
    print(f"\n{title}\n{'codec':<66} {'bytes':>8} {'rate':>8}")
    for name, size in rows:
        print(f"{name:<66} {size:>8,} {100 * size / len(raw):>7.2f}%")


def _cmd_demo(args) -> int:
    """Two real gradient samples, each compressed, decoded and compared byte for byte: a whole
    file through the context prior (lmgc's fast mode), and a small window through the LLM."""
    from importlib.resources import files

    import numpy as np

    from .api import Compressor, Decompressor, read_container_info
    from .tensors import read_tensors

    source = Path(args.input) if args.input else Path(str(files("lmgc") / "data" / SAMPLE_NAME))
    bundle = read_tensors(source)
    raw = b"".join(t.data for t in bundle.tensors)
    values = np.frombuffer(b"".join(t.data for t in bundle.tensors if t.dtype == "float32"), "<f4")
    sample = values[: args.bytes // 4].copy()
    if not sample.size:
        raise InputError(f"{source} holds no float32 values to demonstrate on")

    start = time.perf_counter()
    whole = Compressor(prior="context").compress(bundle)
    encode_s, start = time.perf_counter() - start, time.perf_counter()
    if [t.data for t in Decompressor().decompress_bundle(whole).tensors] != [t.data for t in bundle.tensors]:
        raise VerificationError("demo: decoded bytes differ from the original")
    decode_s = time.perf_counter() - start
    _demo_rows(f"1. {source.name}: {len(raw):,} bytes, {len(bundle.tensors)} tensors, decoded and compared: "
               "identical", raw, [("lmgc --prior context (no LLM; whole .lmgc file)", len(whole))])  # fmt: skip
    print(f"lmgc --prior context speed: encode {len(raw) / encode_s / 1e6:.1f} MB/s, decode "
          f"{len(raw) / decode_s / 1e6:.1f} MB/s (one core; start-up included: loading numba and its "
          "cached kernels takes ~0.4 s)")  # fmt: skip

    start = time.perf_counter()
    compressor = Compressor(args.model, prior=args.prior, chunk_bytes=args.chunk_bytes,
                            batch_size=args.batch, progress=not args.quiet)  # fmt: skip
    load_s, start = time.perf_counter() - start, time.perf_counter()
    blob = compressor.compress(sample)
    encode_s, start = time.perf_counter() - start, time.perf_counter()
    back = Decompressor(args.model, progress=not args.quiet).decompress(blob)
    decode_s = time.perf_counter() - start
    context_blob = Compressor(prior="context").compress(sample)
    if back.tobytes() != sample.tobytes() or Decompressor().decompress(context_blob).tobytes() != sample.tobytes():
        raise VerificationError("demo: decoded bytes differ from the original")
    spec, info = compressor.prior.lm.spec, read_container_info(blob)
    _demo_rows(f"2. the first {sample.nbytes:,} bytes of its float32 gradients through the LLM, decoded and "
               "compared: identical", sample.tobytes(), [
        (f"lmgc --prior {args.prior} ({spec}, {compressor.config.serialization.spec})", len(blob)),
        ("  of which coded chunks (the paper's measure, without the header)", info["payload_bytes"]),
        ("lmgc --prior context (no LLM)", len(context_blob)),
    ])  # fmt: skip
    print(f"lmgc --prior {args.prior}: model load {load_s:.1f} s; encode {sample.nbytes / encode_s:,.0f} B/s, "
          f"decode {sample.nbytes / decode_s:,.0f} B/s ({compressor.prior.threads} threads, batch {info['header']['codec']['batch_size']}, "
          f"CPU; see README: Benchmarks)")  # fmt: skip
    return 0


def _add_codec_options(parser: argparse.ArgumentParser) -> None:
    from .api import (
        CONTEXT_CHUNK_BYTES,
        DEFAULT_CHUNK_BYTES,
        DEFAULT_PRIOR,
        PRIORS,
    )
    from .config import AUTO_BATCH, AUTO_DTYPE, BATCH_CAP, MODEL_DTYPES, STATE_BUDGET
    from .priors import LEVELS
    from .serialize import DEFAULT_SERIALIZATION

    parser.add_argument("input", help="tensor file: .npy, .pt/.pth, .safetensors, or raw with --dtype")
    parser.add_argument("--dtype", help="read the input as raw little-endian values of this dtype")
    parser.add_argument("--prior", choices=PRIORS, default=DEFAULT_PRIOR,
                        help="llm: the LLM on the paper's tokens (default); nibble: the LLM one hex "
                        "digit per step; hybrid: the nibble LLM mixed with structural context "
                        "models per digit (best rate); token-hybrid: the token LLM mixed with them "
                        "per token; context: the context models alone (no LLM, MB/s)")  # fmt: skip
    parser.add_argument("--level", choices=sorted({level for _, level in LEVELS}),
                        help="for priors offered at several levels: " + ", ".join(
                            f"{name} {level}" for name, level in LEVELS))  # fmt: skip
    _add_model_options(parser)
    parser.add_argument("--serialization", "-s", default=DEFAULT_SERIALIZATION,
                        help=f"ENCODING[-SEPARATOR][-le|-be], e.g. hex-comma-be (default "
                        f"{DEFAULT_SERIALIZATION}), hex-none-le, hex-commaspace, hex-0x, iso")  # fmt: skip
    parser.add_argument("--group-bytes", type=int, choices=(1, 2, 4, 8),
                        help="bytes per group (default: the element size)")  # fmt: skip
    parser.add_argument("--chunk-bytes", type=positive_int,
                        help=f"bytes per independently coded chunk (default {DEFAULT_CHUNK_BYTES}; "
                        f"{CONTEXT_CHUNK_BYTES >> 20} MiB with --prior context)")  # fmt: skip
    parser.add_argument("--batch", type=batch_size, default=AUTO_BATCH,
                        help="chunks coded in lockstep (default auto: the LLM priors take as many "
                        f"as the device profits from, up to {BATCH_CAP['cpu']} on a CPU, within a "
                        f"{STATE_BUDGET['cpu'] >> 30} GiB cache budget; the header records it)")  # fmt: skip
    parser.add_argument("--threads", type=positive_int, help="torch CPU threads (default min(4, cores))")
    parser.add_argument("--model-dtype", default=AUTO_DTYPE, choices=(AUTO_DTYPE, *MODEL_DTYPES),
                        help="what the LLM computes in (default auto: bfloat16 where the CPU or GPU "
                        "has native bfloat16, else float32; the header records the one used)")  # fmt: skip
    parser.add_argument("--device", default="cpu", help="torch device for the model (default cpu)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmgc", description="Lossless compression of gradients and float tensors with LLM priors."
    )
    parser.add_argument("--version", action="version", version=f"lmgc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compress", help="compress a tensor file into .lmgc")
    _add_codec_options(p)
    p.add_argument("-o", "--output", help="output file (default INPUT.lmgc)")
    p.add_argument("--force", action="store_true", help="overwrite the output if it exists")
    p.add_argument("--verify", action="store_true", help="decode the result and compare bytes")
    p.add_argument("--recursive", "-r", action="store_true",
                   help="INPUT may be a folder: all its files (relative paths and formats kept; other files "
                   "as raw values of --dtype, default bytes) go into one .lmgc file")  # fmt: skip
    p.add_argument("--lossy", metavar="SPEC", help="lossy front-end before coding, e.g. "
                   "topk:1%%+quant:8, quant:4:block=256, sign, randk:10%%:seed=0")  # fmt: skip
    p.set_defaults(func=_cmd_compress)

    p = sub.add_parser("decompress", help="decode an .lmgc file back to the original tensor file")
    p.add_argument("input")
    p.add_argument("-o", "--output", help="output file, or folder for a compressed folder (default: INPUT "
                   "without .lmgc)")  # fmt: skip
    _add_model_options(p)
    p.add_argument("--force", action="store_true", help="overwrite the output if it exists")
    p.add_argument("--max-output-bytes", type=int_at_least(0), default=DEFAULT_MAX_OUTPUT_BYTES,
                   help="refuse files that decode to more bytes than this (default "
                   f"{DEFAULT_MAX_OUTPUT_BYTES >> 30} GiB; 0: no limit)")  # fmt: skip
    p.add_argument("--allow-env-mismatch", action="store_true",
                   help="decode even if library versions / CPU kernels differ from the encoder's")  # fmt: skip
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_decompress)

    p = sub.add_parser("info", help="print an .lmgc file's header and chunk statistics")
    p.add_argument("input")
    p.add_argument("--json", action="store_true", help="print everything as JSON")
    p.add_argument("--max-tensors", type=int_at_least(0), default=20, help="tensors to list (default 20)")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("estimate", help="fast ideal code length (full forward pass; an estimate)")
    _add_codec_options(p)
    p.set_defaults(func=_cmd_estimate)

    p = sub.add_parser("demo", help="compress + decompress real gradients (context prior and LLM), compare codecs")
    p.add_argument("input", nargs="?", help="tensor file (default: the packaged ConvNet/MNIST gradient)")
    _add_model_options(p)
    p.add_argument("--prior", choices=("llm", "nibble", "hybrid", "token-hybrid"), default="llm",
                   help="LLM prior to demonstrate (default llm, the paper's token mode); the "
                   "context prior (no LLM) is always shown beside it")  # fmt: skip
    p.add_argument("--bytes", type=int_at_least(4), default=2048, help="sample size in bytes (default 2048)")
    p.add_argument("--chunk-bytes", type=positive_int, default=512, help="bytes per chunk (default 512)")
    p.add_argument("--batch", type=positive_int, default=4, help="chunks in lockstep (default 4)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_demo)

    eval_cli.register(sub)
    collect_cli.register(sub)
    return parser


#: Commands whose coding is split across the ranks of a torchrun job (see lmgc.distributed).
_SHARDED_COMMANDS = ("compress", "decompress")


def _run(args) -> int:
    """Run the command; under torchrun, compress/decompress split their batches across ranks and
    only rank 0 writes the output (the others check the same path, then write a scratch file)."""
    from . import distributed

    shard = distributed.from_launcher() if args.command in _SHARDED_COMMANDS else None
    if shard is None:
        return args.func(args)
    if not args.output:
        raise InputError("under torchrun, give the output path with -o")
    with distributed.sharding(shard):
        if shard.writes:
            return args.func(args)
        import contextlib
        import os
        import tempfile

        from .files import check_output_path

        check_output_path(args.output, force=args.force, inputs=[args.input])  # fail as rank 0 does
        with tempfile.TemporaryDirectory(prefix="lmgc-rank-") as scratch, \
                open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):  # fmt: skip
            args.output, args.force, args.quiet = str(Path(scratch) / Path(args.output).name), True, True
            return args.func(args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except (LmgcError, OSError) as exc:  # OSError: the last resort (disk full, a race with another process)
        print(f"lmgc: error: {exc}", file=sys.stderr)
        return 1
    except MemoryError as exc:
        print(f"lmgc: error: {str(exc) or 'out of memory'}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lmgc: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
