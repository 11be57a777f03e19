"""Benchmark of the hybrids against the token LLM alone, `--prior context` at levels max and fast,
and the best classical codec, on the same 4 KB windows (issue 13, part 2). Hybrids: v4
(`--prior hybrid`: the nibble LLM mixed with the context models per digit, with the encoder's
chosen context kinds, averaged with uniform and the context models mixed alone), v3 (a guard
that codes random digit positions uniformly instead of the average; decode-only now), v1 (no
guard; decode-only) and v2 (`--prior token-hybrid`: the token-mode LLM mixed per token).

Every size is coded, decoded (through :class:`lmgc.Decompressor`, which picks the hybrid's
version from the header) and compared byte for byte. LLM priors: 512-B chunks (the paper's; one
model context each), 8 chunks in lockstep, SmolLM2-135M at `--model-dtype auto`, two torch
threads; the hybrids' context models and mixer learn across the chunks of a window. Cells are
payload % (the coded chunks; a container's header is a fixed ~0.3-0.7 KB, large on a 4 KB window
and negligible on a real file); best classical: the best of :data:`CLASSICAL` on the whole window
and on each 512-B chunk alone (the paper's protocol, where every LLM chunk is coded alone too).
Bits per value at each byte position (0 = sign/exponent) come from the encoders' own
probabilities: a digit prior's per digit, a token prior's per token, shared evenly among the
token's characters (separator characters: the last column).

Files: the packaged gradient and the files of benchmarks/cm_benchmark.py (git-ignored
benchmarks/data; the commands that make them are listed there).

Run:  .venv/bin/python benchmarks/hybrid_benchmark.py [--windows 1] [--only LABEL ...] [--llm PRIOR ...]
      [--reuse-llm]
      (default: one window of the packaged gradient, every LLM prior; each further window, file
      or LLM prior adds ~2 minutes a window on 2 cores; ``--reuse-llm`` keeps the LLM priors'
      rows of the last report for windows with the same bytes, for when only the codecs
      without an LLM changed)
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from cm_benchmark import FILES as CM_FILES  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "hybrid.md"
FILES = {"ConvNet-32 MNIST step 50 (packaged)": "src/lmgc/data/convnet_w32_mnist_step50.safetensors"} | {
    label: path for label, (path, _) in CM_FILES.items() if label != "ConvNet-32 MNIST step 50"}  # fmt: skip
#: the packaged gradient only by default: every LLM prior codes each window twice (encode, decode)
DEFAULT_FILES = ["ConvNet-32 MNIST step 50 (packaged)"]
CLASSICAL = ["gzip", "lzma", "bz2", "zstd-19", "fpzip", "pcodec", "blosc2", "planes-zstd", "planes-lzma"]
LLM = ["token LLM", "hybrid v1", "hybrid v3", "hybrid v4", "token-hybrid v2"]
HYBRID = "hybrid v4"  # what --prior hybrid makes
CONTEXT = {"context max": "max", "context fast": "fast"}
CHUNK, BATCH, GROUP, THREADS = 512, 8, 4, 2


def _recording(prior) -> list:
    """Make ``prior`` keep every step's probabilities while it encodes (one list per batch)."""
    stream_of, steps = prior.stream, []

    def stream(group):
        inner = stream_of(group)

        class Recorded:
            max_symbols = inner.max_symbols
            independent_batches = False

            def open(self, lengths):
                session, batch = inner.open(lengths), []
                steps.append(batch)

                class Session:
                    def step(self, symbols):
                        batch.append(session.step(symbols))
                        return batch[-1]

                return Session()

        return Recorded()

    prior.stream = stream
    return steps


def _position_bits(prior, steps: list, chunks: list[bytes], texts: list[str] | None) -> np.ndarray:
    """Bits per value at byte positions 0..3 and on the separator, from the recorded steps."""
    bits, values = np.zeros(GROUP + 1), 0
    for i, chunk in enumerate(chunks):
        batch, row = steps[i // BATCH], i % BATCH
        symbols = prior.symbols(chunk, GROUP)
        coded = -np.log2([batch[t][row, s] for t, s in enumerate(symbols)])
        values += len(chunk) // GROUP
        if texts is None:  # one hex digit per symbol
            np.add.at(bits, (np.arange(len(symbols)) % (2 * GROUP)) // 2, coded)
            continue
        position = 0
        for s, b in zip(symbols, coded):
            for c in range(position, position + len(texts[s])):
                phase = c % (2 * GROUP + 1)
                bits[phase // 2 if phase < 2 * GROUP else GROUP] += b / len(texts[s])
            position += len(texts[s])
    return bits / values


def _lmgc_run(compressor, array: np.ndarray) -> dict:
    import lmgc

    start = time.perf_counter()
    blob = compressor.compress(array)
    encode = time.perf_counter() - start
    back = lmgc.Decompressor().decompress(blob)
    decode = time.perf_counter() - start - encode
    if back.tobytes() != array.tobytes():
        raise SystemExit("round trip failed: decoded bytes differ")
    info = lmgc.read_container_info(blob)
    return {"container": len(blob), "payload": info["payload_bytes"], "encode_s": encode, "decode_s": decode,
            "prior": info["header"]["prior"].get("version")}  # fmt: skip


def _reusable(previous: dict | None) -> dict:
    """LLM prior rows of a previous report by (file path, window start, window SHA-256), each
    with the date of the run that measured it (``measured``; reports before the field said it
    once for all their reused rows, as ``llm_rows_from``)."""
    rows = {}
    for entry in (previous or {}).get("files", {}).values():
        for window in entry["windows"]:
            key = (entry["path"], window["start"], window.get("sha256"))
            rows[key] = {name: window[name] | {"measured": _measured(window[name], previous)}
                         for name in LLM if name in window}  # fmt: skip
    return rows


def _measured(row: dict, report: dict) -> str:
    if "measured" in row:
        return row["measured"]
    return report["llm_rows_from"] if row.get("reused") else report["date"]


def run(labels: list[str], llm_priors: list[str], windows: int, window_bytes: int, seed: int,
        previous: dict | None = None) -> dict:  # fmt: skip
    import lmgc
    from lmgc import decoder
    from lmgc.eval.bench import run_bench
    from lmgc.eval.inputs import FileBytes, load_file_bytes, sample_windows
    from lmgc.priors import HybridPrior, LLMPrior, NibblePrior, TokenHybridPrior
    from lmgc.priors.context_models import choose_kinds, value_digits
    from lmgc.priors.hybrid import HybridPriorV1, HybridPriorV3

    # The decoder loads the recorded model per file; here it is the same model every time.
    decoder.load_model = functools.lru_cache(maxsize=1)(decoder.load_model)
    settings = dict(chunk_bytes=CHUNK, batch_size=BATCH, threads=THREADS)
    lm = lmgc.Compressor(prior="llm", **settings).prior.lm
    serialization = lmgc.CodecConfig().serialization
    priors = {"token LLM": LLMPrior(lm, serialization, THREADS),
              "hybrid v1": HybridPriorV1(NibblePrior(lm, serialization, THREADS)),
              "hybrid v3": HybridPriorV3(NibblePrior(lm, serialization, THREADS)),
              "hybrid v4": HybridPrior(NibblePrior(lm, serialization, THREADS)),
              "token-hybrid v2": TokenHybridPrior(LLMPrior(lm, serialization, THREADS))}  # fmt: skip
    priors = {name: prior for name, prior in priors.items() if name in llm_priors}
    token_llm = LLMPrior(lm, serialization, THREADS)
    tokens = [token_llm.detokenize(np.array([s])) for s in range(token_llm.alphabet_size)]
    texts = {"token LLM": tokens, "token-hybrid v2": tokens}
    steps = {name: _recording(prior) for name, prior in priors.items()}
    compressors = {name: lmgc.Compressor(prior=prior, **settings) for name, prior in priors.items()}
    compressors |= {name: lmgc.Compressor(prior="context", level=level) for name, level in CONTEXT.items()}
    report = {"files": {}}
    reusable = _reusable(previous)
    for label in labels:
        path = ROOT / FILES[label]
        source = load_file_bytes(path)
        if source.dtype != np.float32:
            print(f"== {label}: skipped ({source.dtype_name}, not float32)", file=sys.stderr)
            continue
        spans = sample_windows(len(source.data), 4, window_bytes, windows, seed)
        entry = {"path": FILES[label], "bytes": len(source.data), "windows": [], "classical": []}
        for rows, protocol in ((run_bench([source], CLASSICAL, ["whole"], window_bytes, seed, windows=windows), "whole"),
                               (run_bench([source], CLASSICAL, ["chunked"], window_bytes, seed, windows=windows,
                                          chunk_bytes=CHUNK), "chunked")):  # fmt: skip
            entry["classical"] += [r.__dict__ | {"protocol": protocol} for r in rows]
        for start, end in spans:
            array = np.frombuffer(source.data[start:end], "<f4")
            big_endian = array.astype(">f4").tobytes()
            chunks = [big_endian[i : i + CHUNK] for i in range(0, len(big_endian), CHUNK)]
            sha = hashlib.sha256(source.data[start:end]).hexdigest()
            reused = reusable.get((FILES[label], start, sha), {})
            window = {"start": start, "bytes": end - start, "sha256": sha, "classical_whole": min(
                r.rate_pct for r in run_bench([FileBytes(label, source.data[start:end], "float32")], CLASSICAL, ["whole"])
                if r.status == "ok" and r.verified)}  # fmt: skip
            for name, compressor in compressors.items():
                if name in reused:
                    window[name] = reused[name] | {"reused": True}
                    continue
                print(f"== {label} [{start}:{end}] {name}", file=sys.stderr, flush=True)
                if name in steps:
                    steps[name].clear()
                if name == "hybrid v4":  # the kinds its encoder would choose, set so its steps are recorded
                    priors[name].kinds = choose_kinds(value_digits(big_endian, GROUP)[0])
                window[name] = _lmgc_run(compressor, array)
                if name in steps:
                    window[name]["position_bits"] = _position_bits(
                        priors[name], steps[name], chunks, texts.get(name)).tolist()  # fmt: skip
            entry["windows"].append(window)
        report["files"][label] = entry
    return report


def _best(rows: list[dict], protocol: str) -> tuple[float, str]:
    ok = [r for r in rows if r["protocol"] == protocol and r["status"] == "ok" and r["verified"]]
    top = min(ok, key=lambda r: r["rate_pct"])
    return top["rate_pct"], top["codec"]


def _pct(entry: dict, name: str) -> float:
    return 100 * sum(w[name]["payload"] for w in entry["windows"]) / sum(w["bytes"] for w in entry["windows"])


def _ratio(cells: dict, name: str, reference: str) -> str:
    return f"{cells[name] / cells[reference]:.4f}" if name in cells and reference in cells else "-"


def _window_pct(window: dict, name: str) -> float:
    return 100 * window[name]["payload"] / window["bytes"]


def _reuse_sentence(report: dict) -> str:
    """Which files' LLM rows an earlier run measured (``--reuse-llm``), and when."""
    kept = {}
    for label, entry in report["files"].items():
        for window in entry["windows"]:
            for name in report["llm_priors"]:
                if window.get(name, {}).get("reused"):
                    kept.setdefault(window[name]["measured"], set()).add(label)
    if not kept:
        return ""
    runs = "; ".join(f"{', '.join(sorted(labels))}: the run of {date}" for date, labels in sorted(kept.items()))
    return (f" The LLM priors' rows (sizes, times, bits per position) were kept from earlier runs on the same "
            f"window bytes (SHA-256) for these files ({runs}); everything else was measured in this run.")


def markdown(report: dict) -> str:
    n, llm = report["windows"], report["llm_priors"]
    lines = [
        "# Hybrids (LLM mixed with context models) vs the token LLM, context models and classical codecs",
        "",
        f"Generated {report['date']} on {report['machine']}, "
        f"{report['seconds'] / 60:.0f} min; {n} seeded window(s) of {report['window_bytes']} B per file "
        f"(seed {report['seed']}); SmolLM2-135M ({report['dtype']}, {THREADS} torch threads), `hex-comma-be`. "
        "Every size is coded, decoded and compared byte for byte."
        + _reuse_sentence(report),
        "",
        "Cells: payload % of the window bytes, over all windows of the file (lmgc: coded chunks "
        "without the container header; classical: their whole output). LLM priors: 512-B chunks, "
        "one model context each, 8 in lockstep; the hybrids' count models and mixer learn across the "
        "window's chunks. *classical, whole*: best of " + ", ".join(CLASSICAL) + " on the window; "
        "*classical, 512-B chunks*: the same codecs on each 512-B chunk alone (the paper's protocol).",
        "",
        f"`{HYBRID}` is what `--prior hybrid` makes. *best no LLM*: the smallest of context max, "
        "context fast and classical, whole; *windows won*: windows where the hybrid is smaller than "
        "each of them.",
        "",
        "| file | " + " | ".join(f"**{name}**" if name == HYBRID else name for name in llm)
        + " | context max | context fast | classical, whole | classical, 512-B chunks | "
        f"{HYBRID} / max | {HYBRID} / token LLM | {HYBRID} / best no LLM | windows won |",
        "|---|" + "---|" * (len(llm) + 8),
    ]
    for label, entry in report["files"].items():
        cells = {name: _pct(entry, name) for name in [*llm, *CONTEXT]}
        whole, chunked = _best(entry["classical"], "whole"), _best(entry["classical"], "chunked")
        cells["best no LLM"] = min(cells["context max"], cells["context fast"], whole[0])
        won = "-"
        if HYBRID in llm:
            won = sum(_window_pct(w, HYBRID) < min(_window_pct(w, "context max"), _window_pct(w, "context fast"),
                                                     w["classical_whole"])
                      for w in entry["windows"])  # fmt: skip
            won = f"{won}/{len(entry['windows'])}"
        lines.append(
            f"| {label} | " + " | ".join(f"{cells[name]:.2f}" for name in [*llm, *CONTEXT])
            + f" | {whole[0]:.2f} ({whole[1]}) | {chunked[0]:.2f} ({chunked[1]}) | "
            f"{_ratio(cells, HYBRID, 'context max')} | {_ratio(cells, HYBRID, 'token LLM')} | "
            f"{_ratio(cells, HYBRID, 'best no LLM')} | {won} |"
        )  # fmt: skip
    lines += [
        "",
        "## Bits per value at each byte position (0 = sign/exponent), separator last",
        "",
        "From each encoder's own probabilities, summed over the windows: a token's bits are "
        "shared evenly among its characters (so the split between neighbouring positions is "
        "approximate for tokens that span them). 8 bits per byte = stored as is.",
        "",
        "| file | " + " | ".join(llm) + " |",
        "|---|" + "---|" * len(llm),
    ]
    for label, entry in report["files"].items():
        cells = []
        for name in llm:
            bits = np.mean([w[name]["position_bits"] for w in entry["windows"]], axis=0)
            cells.append(" / ".join(f"{b:.2f}" for b in bits))
        lines.append(f"| {label} | {' | '.join(cells)} |")
    lines += ["", f"## Speed (bytes/s, {THREADS} torch threads, wall clock)", "",
              "| prior | encode | decode |", "|---|---|---|"]  # fmt: skip
    for name in [*llm, *CONTEXT]:
        runs = [w[name] for e in report["files"].values() for w in e["windows"]]
        total = sum(w["bytes"] for e in report["files"].values() for w in e["windows"])
        lines.append(f"| {name} | {total / sum(r['encode_s'] for r in runs):,.0f} | "
                     f"{total / sum(r['decode_s'] for r in runs):,.0f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=1, help="windows per file (default 1)")
    parser.add_argument("--window-bytes", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="+", choices=list(FILES), default=DEFAULT_FILES, metavar="LABEL",
                        help=f"files (default: {', '.join(DEFAULT_FILES)}); all: {', '.join(FILES)}")
    parser.add_argument("--llm", nargs="+", choices=LLM, default=LLM, metavar="PRIOR",
                        help=f"LLM priors to run (default: all): {', '.join(LLM)}")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--reuse-llm", action="store_true",
                        help="take the LLM priors' rows from the previous report (--out's .json) for windows "
                             "whose bytes are the same (SHA-256); the rest is measured again")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from lmgc.config import model_dtype

    start = time.perf_counter()
    llm_priors = [name for name in LLM if name in args.llm]
    previous_json = args.out.with_suffix(".json")
    previous = json.loads(previous_json.read_text()) if args.reuse_llm and previous_json.exists() else None
    report = run(args.only, llm_priors, args.windows, args.window_bytes, args.seed, previous)
    report |= {"llm_priors": llm_priors, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "machine": f"{platform.machine()}, {os.cpu_count()} cores", "windows": args.windows,
               "window_bytes": args.window_bytes, "seed": args.seed, "dtype": model_dtype("auto", "cpu"),
               "seconds": time.perf_counter() - start}  # fmt: skip
    text = markdown(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1, default=str))
    print(text)


if __name__ == "__main__":
    main()
