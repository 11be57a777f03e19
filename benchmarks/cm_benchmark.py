"""Benchmark of ``--prior context --level max`` (context mixing) against ``--level fast``,
zpaq -m5 and the best classical codec, per gradient file (issue: context-mixing engine).

For each file, every size coded, decoded and compared byte for byte:
  1. whole file: size % and MB/s (encode, decode) of lmgc context fast and max (container
     included), zpaq -m5 and the classical codecs of :data:`CLASSICAL`;
  2. bits per byte at each byte position of a value (big-endian: 0 = sign/exponent) for fast
     and max: max's from its own encoder (ideal code length of the coded bits, 8 for raw
     positions); fast's from the exact adaptive code length of its chosen count models per
     chunk (lanes ignored, so a close estimate).

Files: the repository fixture plus ``lmgc collect`` runs in benchmarks/data/ (git-ignored; the
commands are in :data:`FILES`). zpaq and the classical codecs do not change with lmgc, so
``--reuse`` takes their rows from the previous cm.json where the file's SHA-256 is the same.

Run:  .venv/bin/python benchmarks/cm_benchmark.py [--reuse] [--only LABEL ...]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "benchmarks" / "data"
OUT = ROOT / "benchmarks" / "results" / "cm.md"
COLLECT = "lmgc collect --dataset mnist --no-progress --out benchmarks/data/"
#: label -> (path, how it was made)
FILES = {
    "ConvNet-32 MNIST step 50": ("tests/data/gradients/convnet_w32_mnist/grad_step000050.safetensors", "fixture"),
    "ConvNet-32 F-MNIST step 0 (early)": ("benchmarks/data/convnet_w32_fmnist/grad_step000000.safetensors",
                                          "lmgc collect --arch convnet --width 32 --dataset fashion-mnist --steps 51 --every 50"),
    "ConvNet-32 F-MNIST step 50": ("benchmarks/data/convnet_w32_fmnist/grad_step000050.safetensors", "as above"),
    "ConvNet-128 MNIST step 0 (early, dense)": ("benchmarks/data/convnet_w128_mnist/grad_step000000.safetensors",
                                                "lmgc collect --arch convnet --dataset mnist --steps 51 --every 50"),
    "ConvNet-128 MNIST step 50 (dense)": ("benchmarks/data/convnet_w128_mnist/grad_step000050.safetensors", "as above"),
    "VGG-16-32 MNIST step 0 (early)": ("benchmarks/data/vgg16_w32_mnist/grad_step000000.safetensors",
                                       "lmgc collect --arch vgg16 --width 32 --dataset mnist --steps 2 --every 1"),
    "VGG-16-32 MNIST step 1": ("benchmarks/data/vgg16_w32_mnist/grad_step000001.safetensors", "as above"),
    "VGG-16-32 F-MNIST step 0 (early)": ("benchmarks/data/vgg16_w32_fmnist/grad_step000000.safetensors",
                                         "lmgc collect --arch vgg16 --width 32 --dataset fashion-mnist --steps 2 --every 1"),
    "VGG-16-32 F-MNIST step 1": ("benchmarks/data/vgg16_w32_fmnist/grad_step000001.safetensors", "as above"),
    "ResNet-18 MNIST step 0 (early)": ("benchmarks/data/resnet18_mnist/grad_step000000.safetensors",
                                       "lmgc collect --arch resnet18 --dataset mnist --steps 6 --every 5"),
    "ResNet-18 MNIST step 5": ("benchmarks/data/resnet18_mnist/grad_step000005.safetensors", "as above"),
    "ResNet-18 F-MNIST step 5": ("benchmarks/data/resnet18_fmnist/grad_step000005.safetensors",
                                 "lmgc collect --arch resnet18 --dataset fashion-mnist --steps 6 --every 5"),
    "ViT F-MNIST step 0 (early)": ("benchmarks/data/vit_fmnist/grad_step000000.safetensors",
                                   "lmgc collect --arch vit --dataset fashion-mnist --steps 11 --every 10"),
    "ViT F-MNIST step 10": ("benchmarks/data/vit_fmnist/grad_step000010.safetensors", "as above"),
    "ViT MNIST step 0 (early)": ("benchmarks/data/vit_mnist/grad_step000000.safetensors",
                                 "lmgc collect --arch vit --dataset mnist --steps 11 --every 10"),
    "ViT MNIST step 10": ("benchmarks/data/vit_mnist/grad_step000010.safetensors", "as above"),
    "ConvNet-128 init weights": ("benchmarks/data/convnet_w128_init_weights.safetensors",
                                 "torch.manual_seed(0); build_model('convnet', 1, 10, 28, 128) state dict"),
}  # fmt: skip
CLASSICAL = ["lzma", "zstd-19", "fpzip", "pcodec", "blosc2", "planes-zstd", "planes-lzma"]


class PriorCodec:
    """lmgc with one prior object, whole container counted (the benchmark's Codec members);
    also records the CPU time of its last compress and decompress (this machine is shared, so
    wall-clock speeds understate a free core). Given the file's shapes, it codes the list of
    its tensors as arrays (their shapes, not their names, in the container), as a user's
    ``lmgc.compress`` of the tensors does: both levels predict rows from them."""

    whole_only = True
    takes_shapes = True

    def __init__(self, name: str, make_prior) -> None:
        self.name, self.make_prior = name, make_prior
        self.cpu_seconds = {}

    def available(self) -> bool:
        return True

    def _keep_fastest(self, what: str, seconds: float) -> None:
        self.cpu_seconds[what] = min(seconds, self.cpu_seconds.get(what, seconds))

    def supports(self, dtype) -> bool:
        return True

    def compress(self, data: bytes, dtype, shapes=None) -> bytes:
        import lmgc
        from lmgc.eval.lmgc_codec import shaped_arrays

        source = shaped_arrays(data, dtype, shapes)
        source = np.frombuffer(data, dtype) if source is None else source
        start = time.process_time()
        blob = lmgc.compress(source, prior=self.make_prior())
        self._keep_fastest("compress", time.process_time() - start)
        return blob

    def decompress(self, blob: bytes, dtype, n_bytes: int) -> bytes:
        import lmgc

        start = time.process_time()
        back = lmgc.decompress(blob)
        data = b"".join(np.ascontiguousarray(a).tobytes() for a in (back if isinstance(back, list) else [back]))
        self._keep_fastest("decompress", time.process_time() - start)
        return data


def _rows(shapes, group: int) -> list:
    from types import SimpleNamespace

    from lmgc.priors.context_rows import tensor_rows

    tensors = [SimpleNamespace(shape=shape, dtype="float32", itemsize=group, nbytes=int(np.prod(shape)) * group)
               for shape in shapes or []]  # fmt: skip
    return tensor_rows(tensors, group, "big") if group == 4 else []


def max_position_bits(big_endian: bytes, group: int, shapes) -> list[float]:
    """Bits per byte at each byte position under level max, per 32 MiB chunk as it codes (the
    head bytes of predicted rows: their residuals)."""
    from lmgc.priors.cm import ContextMixingPrior
    from lmgc.priors.context_rows import chunk_spans

    prior = ContextMixingPrior().fit(big_endian, group)
    rows = _rows(shapes, group)
    coded = [p for p in range(group) if p not in prior.raw]
    bits = np.zeros(group)
    for start in range(0, len(big_endian), ContextMixingPrior.default_chunk_bytes):
        chunk = big_endian[start : start + ContextMixingPrior.default_chunk_bytes]
        spans = chunk_spans(rows, start, len(chunk) // group, group) if rows else []
        bits[coded] += prior.encode_chunk(chunk, group, stats=True, spans=spans)[1]
    n_values = len(big_endian) // group
    bits[prior.raw] = 8.0 * n_values
    return (bits / n_values).tolist()


def _log2_rising(n_max: int, alpha: float) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(np.log2(np.arange(n_max) + alpha))])


def _adaptive_bits(contexts: np.ndarray, digits: np.ndarray) -> float:
    """Code length of adaptive KT counts of hex digits per context (order-independent)."""
    _, contexts = np.unique(contexts, return_inverse=True)
    counts = np.bincount(contexts * 16 + digits).astype(np.int64)
    totals = np.bincount(contexts)
    n_max = int(totals.max(initial=0))
    return float(_log2_rising(n_max, 8.0)[totals].sum() - _log2_rising(n_max, 0.5)[counts[counts > 0]].sum())


def fast_position_bits(big_endian: bytes, group: int, shapes) -> list[float]:
    """Bits per byte at each byte position under level fast: exact adaptive (KT) code length of
    its chosen count model per hex digit (counts of row-predicted values apart, residuals in the
    head bytes of predicted rows; kind zr: 4 bits for values not zero so far), per 8 MiB chunk
    (lanes ignored)."""
    from lmgc.priors.context import ContextPrior, predict_rows
    from lmgc.priors.context_models import NONE, RAW, ZERO_RAW, kind_context, value_digits

    rows = _rows(shapes, group)
    prior = ContextPrior()
    bits = np.zeros(2 * group)
    matrix_all = value_digits(big_endian, group)[0]
    kinds = prior.choose_kinds(matrix_all, group, rows)
    step = ContextPrior.default_chunk_bytes // group
    for start in range(0, len(matrix_all), step):
        matrix = matrix_all[start : start + step].astype(np.int32)
        spans = prior.spans(rows, start * group, len(matrix) * group, group)
        flags = predict_rows(matrix.T, spans)[1]
        matrix = matrix.astype(np.int64)
        none = np.full((2, matrix.shape[1]), NONE)
        previous = np.vstack([none[:1], matrix[:-1]])
        previous2 = np.vstack([none, matrix[:-2]])[: len(matrix)]
        zero = np.ones(matrix.shape, dtype=np.int64)
        np.cumprod(matrix[:, :-1] == 0, axis=1, out=zero[:, 1:])
        for p, kind in enumerate(kinds):
            if kind == RAW:
                bits[p] += 4.0 * len(matrix)
                continue
            d1 = matrix[:, p - 1] if p else np.full(len(matrix), NONE)
            coded = np.flatnonzero(zero[:, p]) if kind == ZERO_RAW else slice(None)  # zr: the rest raw
            bits[p] += 4.0 * (len(matrix) - len(matrix[coded]))
            model = "z" if kind == ZERO_RAW else kind
            contexts = kind_context(model, p, d1, previous[:, p], previous2[:, p], zero[:, p]) * 2 + flags
            bits[p] += _adaptive_bits(contexts[coded], matrix[coded, p])
    return ((bits[0::2] + bits[1::2]) / len(matrix_all)).tolist()


#: lmgc's speeds on files under this size are the best of :data:`REPEATS` runs: one run of a few
#: milliseconds measures this shared machine's hiccups (the first file a process codes ran at
#: half the speed of the same file coded again; with 5 runs the 87 KB files' fast encode varied
#: 9.8-10.4 MB/s between runs of the benchmark, against 10.7-11.0 as the best of 30 alone).
SMALL_FILE, REPEATS = 4 << 20, 10


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(labels: list[str], previous: dict, save) -> dict:
    """Measure the files; ``save(files)`` after each one, so a long run keeps what it did."""
    from lmgc.eval.bench import run_bench
    from lmgc.eval.inputs import load_file_bytes
    from lmgc.priors.cm import ContextMixingPrior
    from lmgc.priors import compile_kernels
    from lmgc.priors.context import ContextPrior

    lmgc_codecs = [PriorCodec("lmgc context fast", ContextPrior.create),
                   PriorCodec("lmgc context max", ContextMixingPrior.create)]  # fmt: skip
    compile_kernels()  # numba compiles (or loads) them before anything is timed
    files = {}
    for label in labels:
        rel, made_by = FILES[label]
        path = ROOT / rel
        if not path.exists():
            print(f"skipping {label}: {rel} missing (made by: {made_by})", flush=True)
            continue
        sha = _sha256(path)
        old = previous.get(label, {})
        reused = {r["codec"]: r for r in old.get("rows", []) if old.get("sha256") == sha
                  and not r["codec"].startswith("lmgc")}  # fmt: skip
        others = [c for c in ["zpaq", *CLASSICAL] if c not in reused]
        source = load_file_bytes(path)
        shapes = [t.shape for t in source.bundle.tensors] if source.bundle else None
        print(f"{label}: {len(source.data):,} B; measuring {[c.name for c in lmgc_codecs] + others}", flush=True)
        for codec in lmgc_codecs:
            codec.cpu_seconds = {}
        rows = [r.__dict__ for r in run_bench([path], [*lmgc_codecs, *others], protocols=["whole"])]
        for _ in range(REPEATS - 1 if len(source.data) < SMALL_FILE else 0):
            for again in run_bench([path], lmgc_codecs, protocols=["whole"]):
                row = _row(rows, again.codec)
                if row["status"] != "ok" or again.status != "ok":
                    continue  # a failed run has no speeds; its row says why
                for speed in ("compress_mbps", "decompress_mbps"):
                    row[speed] = max(row[speed], getattr(again, speed))
        for codec in lmgc_codecs:
            row = _row(rows, codec.name)
            for what, seconds in codec.cpu_seconds.items():
                row[f"cpu_{what}_mbps"] = len(source.data) / 1e6 / seconds
        group = source.dtype.itemsize
        big_endian = np.frombuffer(source.data, np.uint8).reshape(-1, group)[:, ::-1].tobytes()
        files[label] = {
            "path": rel, "made_by": made_by, "sha256": sha, "bytes": len(source.data),
            "rows": rows + list(reused.values()),
            "position_bits": {"fast": fast_position_bits(big_endian, group, shapes),
                              "max": max_position_bits(big_endian, group, shapes)},
        }  # fmt: skip
        print(markdown_file(label, files[label]), flush=True)
        save(files)
    return files


def _row(rows: list[dict], codec: str) -> dict | None:
    return next((r for r in rows if r["codec"] == codec), None)


def _cell(row: dict | None) -> str:
    if row is None:
        return "–"
    if row["status"] != "ok" or not row["verified"]:
        return f"✗ ({row['status']}: {row.get('message') or 'no round trip'})"
    speed = f"{row['compress_mbps']:.2f} / {row['decompress_mbps']:.2f}"
    if "cpu_compress_mbps" in row:
        speed += f"; CPU {row['cpu_compress_mbps']:.2f} / {row['cpu_decompress_mbps']:.2f}"
    return f"{row['rate_pct']:.2f}% ({speed})"


def _best_classical(rows: list[dict]) -> dict | None:
    ok = [r for r in rows if r["codec"] in CLASSICAL and r["status"] == "ok" and r["verified"]]
    return min(ok, key=lambda r: r["rate_pct"], default=None)


def _target(entry: dict) -> tuple[float | None, str]:
    """(max's rate / the target's reference, verdict)."""
    rows = entry["rows"]
    refs = [r for r in (_best_classical(rows), _row(rows, "zpaq")) if r and r["status"] == "ok"]
    best = _row(rows, "lmgc context max")
    if not refs or best is None or best["status"] != "ok":
        return None, "–"
    ref = min(r["rate_pct"] for r in refs)
    factor = 0.98 if ref < 80 else 0.995
    ratio = best["rate_pct"] / ref
    return ratio, f"{ratio:.4f} (target ≤ {factor}: {'met' if ratio <= factor else 'missed'})"


def markdown_file(label: str, entry: dict) -> str:
    rows = entry["rows"]
    best = _best_classical(rows)
    best_name = f"{best['codec']}: {_cell(best)}" if best else "–"
    return (f"| {label} | {entry['bytes']:,} | {_cell(_row(rows, 'lmgc context fast'))} | "
            f"{_cell(_row(rows, 'lmgc context max'))} | {_cell(_row(rows, 'zpaq'))} | {best_name} | "
            f"{_target(entry)[1]} |")  # fmt: skip


def markdown(report: dict) -> str:
    lines = [
        "# Context mixing (`--prior context --level max`) vs fast, zpaq -m5 and classical codecs",
        "",
        (f"Generated {report['date']} on {report['machine']}, shared with other jobs. Every size "
         "is coded, decoded and compared byte for byte. Cells: size as % of the original (lmgc: "
         "the whole container, coding the file's tensors as a list of arrays: shapes kept, names "
         "not; both levels predict rows from the shapes) and (encode / decode MB/s, 10^6 B/s, wall clock, one thread; for "
         f"lmgc also from CPU time, nearer a free core's speed; on files under {SMALL_FILE >> 20} MiB "
         f"lmgc's best of {REPEATS} runs). Best classical: the best of "
         f"{', '.join(CLASSICAL)}. Target: max ≤ 0.98 × min(best classical, zpaq) where that "
         "min is < 80%, ≤ 0.995 × it otherwise. With `--reuse` the zpaq and classical rows come "
         "from the previous run on the same file (same SHA-256), whose load may have differed."),
        "",
        "| file | bytes | context fast | context max | zpaq -m5 | best classical | max / min(classical, zpaq) |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [markdown_file(label, entry) for label, entry in report["files"].items()]
    lines += ["", "## Bits per byte at each byte position of a value (0 = sign/exponent byte)", "",
              ("fast: ideal adaptive code length of its count models (predicted rows: of their "
               "residuals); max: ideal code length of its coded bits, raw positions 8.00."), "",
              "| file | fast | max | gain (bits per value) |", "|---|---|---|---|"]  # fmt: skip
    for label, entry in report["files"].items():
        fast, best = (np.array(entry["position_bits"][k]) for k in ("fast", "max"))
        lines.append(f"| {label} | {' / '.join(f'{b:.3f}' for b in fast)} | "
                     f"{' / '.join(f'{b:.3f}' for b in best)} | {fast.sum() - best.sum():.3f} |")  # fmt: skip
    zpaq = {e["rows"][0]["file"]: _row(e["rows"], "zpaq") for e in report["files"].values() if e["rows"]}
    if any(r and r["status"] == "skipped" for r in zpaq.values()):
        lines += ["", "zpaq: the binary was not found on this machine, so it was skipped."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reuse", action="store_true", help="take zpaq and classical rows from the last cm.json")
    parser.add_argument("--only", nargs="*", default=None, help="labels (substrings) to measure")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    previous = {}
    if OUT.with_suffix(".json").exists():
        previous = json.loads(OUT.with_suffix(".json").read_text())["files"]
    labels = [label for label in FILES if args.only is None or any(o in label for o in args.only)]
    start = time.perf_counter()

    def save(files: dict) -> str:
        report = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                  "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                  "seconds": time.perf_counter() - start,
                  "files": {label: files.get(label) or previous[label] for label in FILES
                            if label in files or label in previous}}  # fmt: skip
        text = markdown(report)
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(text)
        OUT.with_suffix(".json").write_text(json.dumps(report, indent=1, default=str))
        return text

    print(save(run(labels, previous if args.reuse else {}, save)))


if __name__ == "__main__":
    main()
