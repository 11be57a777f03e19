"""``lmgc bench`` and ``lmgc experiments``: the subcommands, added to the main parser by :func:`register`.

Only argparse and light modules load at start-up (no torch, transformers or matplotlib): each
handler imports what it runs. Handlers return an exit code and let :class:`lmgc.errors.LmgcError`
propagate to :func:`lmgc.cli.main`, which reports it as one line ``lmgc: error: ...`` (exit 1).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..argtypes import positive_int
from ..collect.names import DATASET_NAMES
from ..errors import InputError
from ..tensors import NUMPY_DTYPE
from .bench import CHUNK_BYTES, DEFAULT_WINDOWS, PROTOCOLS
from .inputs import TENSOR_SUFFIXES

if TYPE_CHECKING:
    from .baselines import Codec

__all__ = ["register", "run_bench_command", "run_experiments_command"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bench`` and ``experiments`` subcommands to the main CLI's subparsers."""
    _register_bench(subparsers)
    _register_experiments(subparsers)


# --- lmgc bench -----------------------------------------------------------------------------

def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _register_bench(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench", help="compare codecs' compression rates on tensor files",
        description="Compress tensor files with classical codecs (and any registered LLM codec), "
                    "check every round trip, and report rates and speeds as markdown (stdout), "
                    "CSV, JSON and a bar chart.")
    parser.add_argument("files", nargs="*", metavar="FILE",
                        help=f"tensor files ({', '.join(TENSOR_SUFFIXES)}) or raw files with "
                             "--dtype")
    parser.add_argument("--codecs", type=_names, default=None,
                        help="comma-separated codec names (default: all; see --list-codecs)")
    parser.add_argument("--protocol", type=_names, default=list(PROTOCOLS),
                        help="comma-separated: whole, chunked (default: both)")
    parser.add_argument("--chunk-bytes", type=positive_int, default=CHUNK_BYTES,
                        help=f"chunk size of the chunked protocol (default {CHUNK_BYTES})")
    parser.add_argument("--sample-bytes", type=positive_int, metavar="N",
                        help="measure on seeded random windows of N bytes instead of whole files")
    parser.add_argument("--windows", type=positive_int, default=DEFAULT_WINDOWS, metavar="K",
                        help=f"windows per file with --sample-bytes (default {DEFAULT_WINDOWS})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the windows (default 0)")
    parser.add_argument("--lossy", action="append", metavar="SPEC",
                        help="lossy front-end applied once per file before every codec, e.g. "
                             "topk:1%%+quant:8, quant:4:block=256, sign, randk:10%%:seed=0 "
                             "(repeat for several; 'none' adds the lossless rows); the rate "
                             "counts payload + side info against the original bytes")
    parser.add_argument("--lmgc", action="append", metavar="MODE", default=[],
                        help="add the LLM codec in this mode, [MODEL:]SERIALIZATION, e.g. "
                             "hex-space-be or gemma3-270m:hex-none-le (repeatable; slow on CPU: "
                             "combine with --sample-bytes)")
    parser.add_argument("--lmgc-prior", type=_names, default=["llm"], metavar="PRIORS",
                        help="comma-separated priors for each --lmgc mode: llm (default), nibble, "
                             "hybrid, token-hybrid, context (e.g. --lmgc hex-comma-be --lmgc-prior llm,hybrid)")
    parser.add_argument("--lmgc-chunk-bytes", type=positive_int, metavar="N",
                        help="chunk size of the lmgc codec (default: the prior's, 1024 for LLM "
                             "priors)")
    parser.add_argument("--lmgc-batch", type=positive_int, default=16, metavar="B",
                        help="chunks coded in lockstep by the LLM codec (default 16)")
    parser.add_argument("--dtype", choices=sorted(NUMPY_DTYPE),
                        help="element dtype of raw (non-tensor) files")
    parser.add_argument("--out", metavar="DIR",
                        help="output folder (default runs/bench-YYYYmmdd-HHMMSS)")
    parser.add_argument("--force", action="store_true", help="overwrite outputs in --out")
    parser.add_argument("--list-codecs", action="store_true",
                        help="list codecs and whether they are installed, then exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_bench_command)


def _list_codecs() -> str:
    from .baselines import CODECS, EXTRA_HINT

    lines = []
    for codec in CODECS.values():
        state = "ok" if codec.available() else f"missing ({getattr(codec, 'install_hint', lambda: EXTRA_HINT)()})"
        lines.append(f"{codec.name:12} {state:10} {getattr(codec, 'description', '')}")
    return "\n".join(lines)


def _with_llm_codecs(names: list[str] | None, modes: list[str], priors: list[str],
                     chunk_bytes: int | None, batch_size: int) -> list[str | Codec] | None:
    """The classical codecs named (all when none are) plus one lmgc codec per ``--lmgc`` mode
    and ``--lmgc-prior``."""
    from .baselines import CODECS
    from .lmgc_codec import LmgcCodec

    if not modes:
        return names
    llm = [LmgcCodec(mode, prior=prior, chunk_bytes=chunk_bytes, batch_size=batch_size)
           for mode in modes for prior in priors]
    return [*(names if names is not None else CODECS), *llm]


def run_bench_command(args: argparse.Namespace) -> int:
    """Handler of ``lmgc bench``: the table on stdout, the files written and skips on stderr.

    Library errors propagate to :func:`lmgc.cli.main`, which prints them in one line (exit 1).
    """
    from .bench import run_bench
    from .bench_report import check_outputs_free, format_markdown, write_outputs

    if args.list_codecs:
        print(_list_codecs())
        return 0
    if not args.files:
        raise InputError("give at least one FILE (or --list-codecs)")
    out_dir = Path(args.out or f"runs/bench-{time.strftime('%Y%m%d-%H%M%S')}")
    check_outputs_free(out_dir, args.force)  # before a long run, not after it
    codecs = _with_llm_codecs(args.codecs, args.lmgc, args.lmgc_prior, args.lmgc_chunk_bytes,
                              args.lmgc_batch)
    results = run_bench(args.files, codecs, args.protocol, args.sample_bytes, args.seed,
                        windows=args.windows, dtype=args.dtype, chunk_bytes=args.chunk_bytes,
                        progress=not args.no_progress, lossy=args.lossy)
    settings = {"files": args.files, "codecs": list(dict.fromkeys(r.codec for r in results)),
                "protocols": args.protocol, "chunk_bytes": args.chunk_bytes,
                "sample_bytes": args.sample_bytes, "windows": args.windows, "seed": args.seed}
    if args.lossy:
        settings["lossy"] = list(dict.fromkeys(r.lossy or "none" for r in results))
    paths = write_outputs(results, out_dir, settings, force=args.force)
    print(format_markdown(results, args.chunk_bytes), end="")
    for codec, message in dict.fromkeys((r.codec, r.message) for r in results
                                        if r.status == "skipped"):
        print(f"lmgc bench: skipped {codec}: {message}", file=sys.stderr)
    print(f"lmgc bench: wrote {', '.join(str(p) for p in paths.values())}", file=sys.stderr)
    return 0


# --- lmgc experiments ------------------------------------------------------------------------

def _data_dir(text: str) -> tuple[str, str]:
    name, sep, directory = text.partition("=")
    if not sep or not name or not directory:
        raise argparse.ArgumentTypeError(f"expected DATASET=DIR (e.g. cifar10=~/data/cifar-10-"
                                         f"batches-py), got {text!r}")
    return name, directory


def _register_experiments(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "experiments", help="reproduce the LM-GC paper's evaluation into a report",
        description="Collect gradients, measure LLM priors and classical codecs (Tables 1-3, "
                    "ablations, lossy front-ends, lmgc's own modes) and write DIR/report.md, "
                    "PNG plots and DIR/results.json. --quick: ≤ 30 min on 2 CPU cores; the full "
                    "run uses the paper's sizes and wants a GPU (--device cuda).")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (new or empty)")
    parser.add_argument("--quick", action="store_true",
                        help="small models, 61 training steps, LLM figures on 2 × 512 B windows "
                             "(coded in Table 1 and own modes, estimated elsewhere)")
    parser.add_argument("--force", action="store_true",
                        help="write into a non-empty --out, replacing earlier experiment outputs")
    parser.add_argument("--model", action="append", default=[], metavar="SPEC",
                        help="another LLM prior for Table 1, coded there like the others "
                             "(repeatable; see lmgc compress --model)")
    parser.add_argument("--data-dir", action="append", default=[], type=_data_dir,
                        metavar="DATASET=DIR",
                        help="dataset folder, e.g. cifar10=DIR or tinyimagenet=DIR (adds them to "
                             "Table 3), mnist=DIR (repeatable)")
    parser.add_argument("--arch-dataset", default="mnist", choices=DATASET_NAMES,
                        help="dataset of the architectures table and Table 1 (default mnist)")
    parser.add_argument("--device", default="cpu",
                        help="torch device for training and the LLM (default cpu)")
    parser.add_argument("--windows", type=positive_int, metavar="K",
                        help="LLM windows per checkpoint (quick 1, full 2)")
    parser.add_argument("--window-bytes", type=positive_int, metavar="N",
                        help=f"LLM window size, a multiple of {CHUNK_BYTES} (quick 512, full 2048)")
    parser.add_argument("--seed", type=int, default=0, help="training and window seed (default 0)")
    parser.add_argument("--no-llm", action="store_true", help="classical codecs only")
    parser.add_argument("--no-progress", action="store_true", help="no progress on stderr")
    parser.set_defaults(func=run_experiments_command)


def run_experiments_command(args: argparse.Namespace) -> int:
    """Handler of ``lmgc experiments``: prints the report's path; progress goes to stderr.

    Library errors propagate to :func:`lmgc.cli.main`, which prints them in one line (exit 1).
    """
    from .experiments import run_experiments
    from .plan import build_plan

    names = [name for name, _ in args.data_dir]
    if len(set(names)) != len(names):
        raise InputError(f"--data-dir names a dataset twice: {', '.join(names)}")
    plan = build_plan(args.quick, models=args.model, data_dirs=dict(args.data_dir),
                      arch_dataset=args.arch_dataset, device=args.device, windows=args.windows,
                      window_bytes=args.window_bytes, seed=args.seed, llm=not args.no_llm)
    paths = run_experiments(plan, args.out, force=args.force, progress=not args.no_progress,
                            command="lmgc " + " ".join(sys.argv[1:]))
    print(paths["report"])
    return 0
