"""Mutation campaign against the decoder: every hostile or corrupted .lmgc gives an LmgcError.

Builds a few real containers (context prior: several chunks, one large range-coded chunk, a
lossy file, a folder of two files; the context-mixing level, and the golden file of its model's
version 1; the committed container-version-1 golden file; context files relabelled as LLM files,
one naming an embedded model and one naming a hub id), mutates them with the families below, and decodes
each case in worker processes with a memory limit (RLIMIT_AS) and a time limit. Outcomes:

  equal    decoded to exactly the pristine file's tensors (e.g. a flip in a coder's padding bits)
  typed    raised an lmgc.errors.LmgcError                          (good)
  v1 silent  a version-1 file whose header was edited decoded to other tensors: version 1
           has no check over its header (documented; version 2 closes it)
  untyped  raised anything else                                     (bad)
  silent   decoded without error to different tensors               (bad)
  timeout  took longer than --timeout seconds                       (bad)
  memory   ran out of memory, or grew the worker past --max-rss-mb  (bad)
  crash    killed the worker process                                (bad)
  loaded   called load_model with a spec the caller never allowed   (bad)

The LLM loader is a stand-in that records the spec and raises ModelError, so no model loads.

Run:  .venv/bin/python benchmarks/fuzz_campaign.py [--cases 12000] [--workers 2]
Writes benchmarks/results/fuzz_campaign.md and .json.
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing as mp
import platform
import queue
import resource
import signal
import subprocess
import tempfile
import time
import zlib
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "data" / "golden"
OUTCOMES = ("equal", "typed", "v1 silent", "untyped", "silent", "timeout", "memory", "crash", "loaded")
BAD = OUTCOMES[3:]
RAW_FAMILIES = ("bit flips", "byte overwrite", "truncation", "trailing bytes", "insert/delete")
FORGED_FAMILIES = ("frame edit (CRC fixed)", "payload swap", "payload corruption (CRC fixed)",
                   "header field edit (CRC fixed)", "plausible header edit (CRC fixed)",
                   "header sizes (CRC fixed)", "header nesting")  # fmt: skip
V1_FAMILIES = ("v1 header edit (re-packed)", "v1 plausible header edit (re-packed)")
EDGE_INTS = [0, 1, 2, 3, 7, 255, 256, 2**16, 2**31 - 1, 2**31, 2**32, 10**10, 2**63 - 1, 2**64 - 1]


class CaseTimeout(BaseException):
    """Raised by SIGALRM; a BaseException so lmgc's own ``except Exception`` cannot absorb it."""


# --- the containers under attack ---------------------------------------------------------------


def build_bases() -> dict[str, tuple[bytes, bool]]:
    """name -> (container bytes, whether the forging families apply: version 2 files)."""
    import lmgc
    from lmgc.api import environment
    from lmgc.container import unpack
    from lmgc.tensors import read_tensors
    from lmgc.testing import forge
    from safetensors.numpy import save_file

    with np.load(GOLDEN / "sample.npz") as data:
        sample = {name: data[name] for name in ("conv.weight", "conv.bias")}
    grads = read_tensors(ROOT / "src/lmgc/data/convnet_w32_mnist_step50.safetensors")
    values = np.frombuffer(b"".join(t.data for t in grads.tensors if t.dtype == "float32"), "<f4")
    chunked = lmgc.compress(sample, prior="context", chunk_bytes=512)

    def as_llm(model: str, hybrid: bool = False) -> bytes:
        """The context file relabelled as an LLM file (or a hybrid version-4 one) of ``model``."""
        header = unpack(chunked).header
        fields = copy.deepcopy(header.fields)
        fields["prior"] = {"kind": "llm-nibble" if hybrid else "llm", "model": model, "weights_sha256": "ab" * 32,
                           "tokenizer_sha256": "cd" * 32, "dtype": "float32", "device": "cpu",
                           "threads": 2}  # fmt: skip
        if hybrid:
            fields["prior"] = {"kind": "hybrid", "version": 4, "llm": fields["prior"], "learning_rate": 0.005,
                               "digit_contexts": ["zP", "z", "zd", "raw", "raw", "raw", "raw", "z"]}  # fmt: skip
        fields["environment"] = environment("cpu")
        counts = [2 * header.chunk_size(i) for i in range(header.n_chunks)]
        return forge(chunked, fields, n_symbols=counts)

    with tempfile.TemporaryDirectory() as tmp:  # a folder: its file paths are untrusted input too
        root = Path(tmp) / "run"
        (root / "sub").mkdir(parents=True)
        np.save(root / "a.npy", values[:600])
        save_file({"w": values[600:1000].reshape(20, 20).copy()}, str(root / "sub" / "b.safetensors"))
        lmgc.compress_file(root, Path(tmp) / "run.lmgc", prior="context", chunk_bytes=1024)
        folder = (Path(tmp) / "run.lmgc").read_bytes()

    rng = np.random.default_rng(0)  # rows nearly scaled copies: both levels predict them
    low_rank = (np.outer(rng.normal(size=64), rng.normal(size=128)) * (1 + 1e-3 * rng.normal(size=(64, 128)))
                * 1e-3).astype(np.float32)  # fmt: skip
    sparse = values[:4096].copy()  # dead channels: kind zr stores the nonzero values' low digits raw
    sparse[rng.random(4096) < 0.4] = 0
    return {
        "context, rows predicted (2 tensors, 2 chunks)": (lmgc.compress({"w": low_rank, "b": values[:7].copy()},
                                                                         prior="context", chunk_bytes=16384), True),
        "context --level max, rows predicted": (lmgc.compress({"w": low_rank}, prior="context", level="max"), True),
        "context, 4 chunks (dict of 2 tensors)": (chunked, True),
        "context --level max, 2 chunks": (lmgc.compress(values[:2048].copy(), prior="context", level="max",
                                                        chunk_bytes=4096), True),  # fmt: skip
        "context, a folder of 2 files": (folder, True),
        "context, one 32 KB chunk": (lmgc.compress(values[:8192].copy(), prior="context"), True),
        "context version 3, sparse (raw digits of kind zr, 2 chunks)": (lmgc.compress(
            sparse, prior="context", chunk_bytes=8192), True),
        "context version 2 (golden, rows predicted)": ((GOLDEN / "rows-context2.lmgc").read_bytes(), True),
        "context + lossy quant:8": (lmgc.compress(sample, prior="context", lossy="quant:8"), True),
        "version 1 golden (context)": ((GOLDEN / "sample-v1-context.lmgc").read_bytes(), False),
        "context --level max model version 1 (golden)": ((GOLDEN / "sample-v2-cm1.lmgc").read_bytes(), True),
        "context --level max model version 2 (golden)": ((GOLDEN / "sample-v2-cm2.lmgc").read_bytes(), True),
        "context --level max version 3 (golden)": ((GOLDEN / "sample-v2-cm3.lmgc").read_bytes(), True),
        "context --level max version 4 (golden)": ((GOLDEN / "sample-v2-cm4.lmgc").read_bytes(), True),
        "context --level max version 5 (golden)": ((GOLDEN / "sample-v2-cm5.lmgc").read_bytes(), True),
        "context --level max version 6 (golden)": ((GOLDEN / "sample-v2-cm6.lmgc").read_bytes(), True),
        "context --level max, sparse (zero flags)": (lmgc.compress(sparse, prior="context", level="max"), True),
        "LLM file naming smollm2-135m": (as_llm("smollm2-135m"), True),
        "LLM file naming a hub id": (as_llm("some-org/some-model"), True),
        "hybrid v4 file naming smollm2-135m": (as_llm("smollm2-135m", hybrid=True), True),
    }


# --- mutations ---------------------------------------------------------------------------------


def _pick(rng: np.random.Generator, options: list):
    """One of ``options`` as it is (numpy's choice would turn 2**64 - 1 into a float)."""
    return options[int(rng.integers(len(options)))]


def _random_json(rng: np.random.Generator, depth: int = 0):
    choice = int(rng.integers(9 if depth < 3 else 6))
    if choice == 0:
        return None
    if choice == 1:
        return bool(rng.integers(2))
    if choice == 2:
        return _pick(rng, EDGE_INTS) * (-1 if rng.integers(4) == 0 else 1) // (1 if rng.integers(2) else 2)
    if choice == 3:
        return float(rng.choice([0.0, -1.0, 1e300, float("inf"), float("nan"), 0.5]))
    if choice in (4, 5):
        return str(rng.choice(["", "z", "raw", "float32", "int32", "npy", "pt", "context", "llm",
                               "hex-comma-le", "<f4", ">f4", "O", "../../etc", "x" * 300]))  # fmt: skip
    if choice == 6:
        return [_random_json(rng, depth + 1) for _ in range(int(rng.integers(4)))]
    if choice == 7:
        return {str(rng.choice(["__tensor__", "__dict__", "a", "kind"])): _random_json(rng, depth + 1)}
    return {"__tensor__": int(rng.integers(-1, 3))}


def _set(fields: dict, path: tuple, value) -> None:
    parent = fields
    for key in path[:-1]:
        parent = parent[key]
    if value is _DELETE and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = None if value is _DELETE else value


_DELETE = object()


def _plausible(fields: dict, rng: np.random.Generator) -> None:
    """Edits that keep the header well-formed, as the issue's 410 silent cases did: only the
    digest can tell them apart from the truth."""
    manifest = fields["lossy"]["manifest"] if "lossy" in fields and rng.integers(2) else fields["manifest"]
    tensor = _pick(rng, manifest["tensors"])
    same_size = {"float32": "int32", "int32": "float32", "float16": "int16", "int16": "float16",
                 "uint8": "int8", "int8": "uint8", "float64": "int64", "int64": "float64"}  # fmt: skip
    edit = int(rng.integers(9))
    if edit == 0 and tensor["dtype"] in same_size:
        tensor["dtype"] = same_size[tensor["dtype"]]
        if tensor["numpy_dtype"] is not None:
            tensor["numpy_dtype"] = tensor["numpy_dtype"][0] + np.dtype(tensor["dtype"]).str[1:]
    elif edit == 1:
        n = int(np.prod(tensor["shape"]))
        tensor["shape"] = _pick(rng, [[n], [1, n], [n, 1]] + ([[2, n // 2]] if n % 2 == 0 else []))
    elif edit == 2:
        tensor.update(kind="torch", numpy_dtype=None) if tensor["kind"] == "numpy" else tensor.update(
            kind="numpy", numpy_dtype=None)
    elif edit == 3:
        tensor["name"] = tensor["name"] + "x"
    elif edit == 4:
        manifest["format"] = _pick(rng, ["pt", "safetensors", "object"])
    elif edit == 5:
        manifest["tree"] = {"__tuple__": [manifest["tree"]]}
    elif edit == 6:
        order = fields["codec"]["serialization"]
        fields["codec"]["serialization"] = order[:-2] + ("le" if order.endswith("be") else "be")
    elif edit == 7 and "lossy" in fields:
        fields["lossy"]["spec"] = _pick(rng, ["quant:4", "quant:8:block=64", "sign"])
    else:
        manifest["metadata"] = {"format": "pt"}


def _raw(data: bytes, family: str, rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    at = int(rng.integers(len(out)))
    if family == "bit flips":
        for _ in range(int(rng.integers(1, 4))):
            out[int(rng.integers(len(out)))] ^= 1 << int(rng.integers(8))
    elif family == "byte overwrite":
        out[at : at + int(rng.integers(1, 9))] = rng.bytes(int(rng.integers(1, 9)))
    elif family == "truncation":
        del out[at:]
    elif family == "trailing bytes":
        out += rng.bytes(int(rng.integers(1, 65)))
    elif rng.integers(2):
        out[at:at] = rng.bytes(int(rng.integers(1, 9)))
    else:
        del out[at : at + int(rng.integers(1, 9))]
    return bytes(out)


def _forged(data: bytes, family: str, rng: np.random.Generator) -> bytes:
    from lmgc.container import unpack
    from lmgc.testing import field_paths, forge

    container = unpack(data, max_output_bytes=None)
    fields = copy.deepcopy(container.header.fields)
    payloads = list(container.payloads)
    counts = [c.n_symbols for c in container.chunks]
    chunk = int(rng.integers(len(payloads))) if payloads else 0
    if family == "frame edit (CRC fixed)" and payloads:
        counts[chunk] = _pick(rng, EDGE_INTS + [counts[chunk] + 1, max(counts[chunk] - 1, 0)])
        if rng.integers(2):
            payloads[chunk] = payloads[chunk][: int(rng.integers(len(payloads[chunk]) + 1))]
        return forge(data, payloads=payloads, n_symbols=counts)
    if family == "payload swap" and len(payloads) > 1:
        other = (chunk + 1 + int(rng.integers(len(payloads) - 1))) % len(payloads)
        payloads[chunk], payloads[other] = payloads[other], payloads[chunk]
        counts[chunk], counts[other] = counts[other], counts[chunk]
        return forge(data, payloads=payloads, n_symbols=counts)
    if family in ("payload corruption (CRC fixed)", "payload swap") and payloads:
        broken = bytearray(payloads[chunk])
        for _ in range(int(rng.integers(1, 4))):
            if broken:
                broken[int(rng.integers(len(broken)))] ^= 1 << int(rng.integers(8))
        payloads[chunk] = bytes(broken)
        return forge(data, payloads=payloads)
    if family == "header sizes (CRC fixed)":
        size = _pick(rng, EDGE_INTS)
        target = int(rng.integers(4))
        if target == 0:
            fields["total_bytes"] = size
        elif target == 1:
            fields["codec"]["chunk_bytes"] = size
        elif target == 2:
            fields["manifest"]["tensors"][0]["shape"] = [size]
        else:  # consistent: total, shape and chunk size all agree, so only the frames disagree
            size = min(size, 1 << 26)
            fields["total_bytes"] = size
            fields["manifest"]["tensors"] = fields["manifest"]["tensors"][:1]
            fields["manifest"]["tensors"][0].update(dtype="uint8", shape=[size],
                                                   numpy_dtype=None if fields["manifest"]["tensors"][0]["kind"] == "torch" else "|u1")  # fmt: skip
            fields["manifest"]["tree"] = {"__tensor__": 0}
            fields["codec"]["chunk_bytes"] = max(1, min(size, 1 << 20))
        return forge(data, fields)
    if family == "header nesting":
        value: object = 0
        for _ in range(_pick(rng, [10, 40, 70, 200])):
            value = [value] if rng.integers(2) else {"__tuple__": value}
        fields["manifest"]["tree"] = value
        return forge(data, fields)
    if family == "plausible header edit (CRC fixed)":
        _plausible(fields, rng)
        return forge(data, fields)
    paths = [p for p in field_paths(fields) if p]
    path = paths[int(rng.integers(len(paths)))]
    _set(fields, path, _DELETE if rng.integers(4) == 0 else _random_json(rng))
    return forge(data, fields)


def _v1_repacked(data: bytes, family: str, rng: np.random.Generator) -> bytes:
    """A version-1 file with its zlib JSON header edited and every length fixed."""
    from lmgc.testing import field_paths

    length = int.from_bytes(data[10:14], "little")
    fields = json.loads(zlib.decompress(data[14 : 14 + length]))
    rest = data[14 + length :]
    kind = -1 if family.startswith("v1 plausible") else int(rng.integers(5))
    if kind == -1:
        _plausible(fields, rng)
    elif kind == 0:
        fields["total_bytes"] = _pick(rng, [10**10, 10**400, -5])
    elif kind == 1:
        fields["n_chunks"] = _pick(rng, [0, 2, 10**6])
    elif kind == 2:  # a header that inflates to more than the cap
        text = json.dumps(fields).encode()
        header = zlib.compress(text[:-1] + b" " * (int(rng.integers(1, 4)) << 23) + text[-1:], 9)
        return data[:10] + len(header).to_bytes(4, "little") + header + rest
    else:
        paths = [p for p in field_paths(fields) if p]
        _set(fields, paths[int(rng.integers(len(paths)))],
             _DELETE if kind == 3 else _random_json(rng))  # fmt: skip
    header = zlib.compress(json.dumps(fields).encode(), 9)
    return data[:10] + len(header).to_bytes(4, "little") + header + rest


def make_case(index: int, bases: dict) -> tuple[str, str, bytes]:
    rng = np.random.default_rng(index)
    names = list(bases)
    name = names[index % len(names)]
    data, forgeable = bases[name]
    families = RAW_FAMILIES + (FORGED_FAMILIES if forgeable else V1_FAMILIES)
    family = families[(index // len(names)) % len(families)]
    if family in RAW_FAMILIES:
        return name, family, _raw(data, family, rng)
    if family in V1_FAMILIES:
        return name, family, _v1_repacked(data, family, rng)
    return name, family, _forged(data, family, rng)


# --- workers -----------------------------------------------------------------------------------


def _same(a, b) -> bool:
    """Exactly the same decoded objects: keys in order, dtypes, shapes and bytes (numpy arrays, or
    torch tensors: a .safetensors file decodes to torch tensors)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    if type(a).__name__ == "Tensor" and type(b).__name__ == "Tensor":
        return _tensor_key(a) == _tensor_key(b)
    return False


def _tensor_key(tensor) -> tuple:
    import torch

    raw = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    return str(tensor.dtype), tuple(tensor.shape), raw


def _cli_outcome(data: bytes, folder: Path) -> str:
    """``lmgc info`` and ``lmgc decompress`` on the file: each must exit 0 or 1 with one error
    line; an exception escaping ``main`` would be a traceback for the user."""
    import contextlib
    import io

    from lmgc.cli import main

    path = folder / "case.lmgc"
    path.write_bytes(data)
    for argv in (["info", str(path)], ["decompress", str(path), "-o", str(folder / "out.npy"), "--force", "-q"]):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
        lines = err.getvalue().strip().splitlines()
        if code not in (0, 1) or (code == 1 and (len(lines) != 1 or not lines[0].startswith("lmgc: error:"))):
            return f"untyped CLI {argv[0]}: exit {code}, {lines[:2]}"
    return ""


def worker(indices: list[int], results: mp.Queue, timeout: float, memory_mb: int, max_rss_mb: int,
           cli_every: int) -> None:  # fmt: skip
    from lmgc import api, decoder
    from lmgc.errors import LimitExceededError, LmgcError, ModelError

    resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
    loads: list[str] = []

    def stand_in_loader(spec, dtype="float32", device="cpu", announce=False):
        loads.append(spec)
        raise ModelError(f"stand-in loader refused {spec}")

    decoder.load_model = stand_in_loader
    bases = build_bases()
    references = {}
    for name, (data, _) in bases.items():
        try:
            references[name] = api.Decompressor().decompress(data)
        except LmgcError:
            references[name] = None

    def alarm(*_):
        raise CaseTimeout

    signal.signal(signal.SIGALRM, alarm)
    for index in indices:
        name, family, data = make_case(index, bases)
        loads.clear()
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10
        signal.setitimer(signal.ITIMER_REAL, timeout)
        detail = ""
        try:
            decoded = api.Decompressor().decompress(data)
            if references[name] is not None and _same(decoded, references[name]):
                outcome = "equal"
            else:
                outcome = "v1 silent" if family in V1_FAMILIES else "silent"
        except CaseTimeout:
            outcome = "timeout"
        except LimitExceededError as exc:
            outcome, detail = ("memory" if "not enough memory" in str(exc) else "typed"), str(exc)[:120]
        except LmgcError as exc:
            outcome, detail = "typed", f"{type(exc).__name__}: {exc}"[:120]
        except MemoryError:
            outcome = "memory"
        except Exception as exc:  # noqa: BLE001 - counting exactly these is the point
            outcome, detail = "untyped", f"{type(exc).__name__}: {exc}"[:200]
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        if cli_every and index % cli_every == 0 and outcome != "timeout":
            signal.setitimer(signal.ITIMER_REAL, 2 * timeout)
            try:
                with tempfile.TemporaryDirectory() as folder:
                    problem = _cli_outcome(data, Path(folder))
            except CaseTimeout:
                problem = "timeout in the CLI"
            except Exception as exc:  # noqa: BLE001 - a traceback the user would see
                problem = f"CLI traceback: {type(exc).__name__}: {exc}"[:200]
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            if problem:
                outcome, detail = ("timeout" if "timeout" in problem else "untyped"), problem
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10
        if outcome in ("typed", "equal") and rss_after > max(rss_before, max_rss_mb):
            outcome, detail = "memory", f"peak RSS {rss_after} MB"
        if any(spec not in ("smollm2-135m", "gemma3-270m") for spec in loads):
            outcome, detail = "loaded", f"load_model({loads})"
        results.put((index, name, family, outcome, detail))
    results.put((None, None, None, "done", ""))


def run(cases: int, workers: int, timeout: float, memory_mb: int, max_rss_mb: int,
        cli_every: int) -> list[tuple]:  # fmt: skip
    """Runs every case; a worker that dies or stalls is replaced and its case counted."""
    results: mp.Queue = mp.Queue()
    pending = [list(range(w, cases, workers)) for w in range(workers)]
    rows: dict[int, tuple] = {}
    procs: dict[int, tuple[mp.Process, float]] = {}

    def start(slot: int) -> None:
        proc = mp.Process(target=worker, args=(pending[slot], results, timeout, memory_mb, max_rss_mb,
                                               cli_every))  # fmt: skip
        proc.start()
        procs[slot] = (proc, time.monotonic())

    for slot in range(workers):
        start(slot)
    started = time.monotonic()
    while procs:
        try:
            index, name, family, outcome, detail = results.get(timeout=1.0)
            if index is not None:
                rows[index] = (index, name, family, outcome, detail)
                slot = index % workers
                pending[slot].remove(index)
                procs[slot] = (procs[slot][0], time.monotonic())
                if len(rows) % 1000 == 0:
                    print(f"{len(rows):,}/{cases:,} cases, {time.monotonic() - started:.0f} s", flush=True)
        except queue.Empty:
            pass
        for slot, (proc, last) in list(procs.items()):
            stalled = time.monotonic() - last > timeout + 60  # + start-up (imports, references)
            if proc.is_alive() and not stalled:
                continue
            if stalled:
                proc.kill()
            proc.join()
            if not pending[slot]:
                del procs[slot]
                continue
            index = pending[slot].pop(0)
            bases = build_bases()
            name, family, _ = make_case(index, bases)
            outcome = "timeout" if stalled else "crash"
            rows[index] = (index, name, family, outcome, f"worker exit {proc.exitcode}")
            if pending[slot]:
                start(slot)
            else:
                del procs[slot]
    return [rows[i] for i in sorted(rows)]


# --- report ------------------------------------------------------------------------------------


def table(rows: list[tuple], key: int, title: str) -> list[str]:
    groups: dict[str, dict[str, int]] = {}
    for row in rows:
        counts = groups.setdefault(row[key], dict.fromkeys(OUTCOMES, 0))
        counts[row[3]] += 1
    total = dict.fromkeys(OUTCOMES, 0)
    for counts in groups.values():
        for outcome, n in counts.items():
            total[outcome] += n
    lines = [f"| {title} | cases | " + " | ".join(OUTCOMES) + " |",
             "|---|---:|" + "---:|" * len(OUTCOMES)]  # fmt: skip
    for name, counts in [*groups.items(), ("**all**", total)]:
        lines.append(f"| {name} | {sum(counts.values()):,} | " + " | ".join(f"{counts[o]:,}" for o in OUTCOMES) + " |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=30_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per case")
    parser.add_argument("--memory-mb", type=int, default=6144, help="RLIMIT_AS per worker")
    parser.add_argument("--max-rss-mb", type=int, default=1536, help="peak RSS that counts as a memory bomb")
    parser.add_argument("--cli-every", type=int, default=10,
                        help="also run `lmgc info` and `lmgc decompress` on every Nth case (0: never)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fuzz_campaign")
    args = parser.parse_args()
    start = time.monotonic()
    rows = run(args.cases, args.workers, args.timeout, args.memory_mb, args.max_rss_mb, args.cli_every)
    seconds = time.monotonic() - start
    bad = [row for row in rows if row[3] in BAD]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()  # fmt: skip
    lines = [
        "# Decoder mutation campaign (`benchmarks/fuzz_campaign.py`)",
        "",
        f"{len(rows):,} cases in {seconds:.0f} s on {args.workers} worker processes "
        f"({platform.machine()}, {mp.cpu_count()} CPUs), {datetime.now(timezone.utc):%Y-%m-%d}, "
        f"commit {commit}; per case: {args.timeout:.0f} s, RLIMIT_AS {args.memory_mb} MB, "
        f"peak RSS above {args.max_rss_mb} MB counts as memory; every {args.cli_every}th case also "
        "through `lmgc info` and `lmgc decompress` (an exception escaping the CLI counts as untyped). "
        f"Bad columns: {', '.join(BAD)}. `v1 silent`: version-1 files have no check over their "
        "header (stated by `lmgc info`); version 2 closes that.",
        "",
        *table(rows, 2, "mutation family"),
        "",
        *table(rows, 1, "container"),
        "",
    ]
    if bad:
        lines += ["## Bad cases", "", *(f"- case {r[0]} ({r[1]}, {r[2]}): {r[3]} {r[4]}" for r in bad[:50])]
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(
        {"cases": len(rows), "seconds": seconds, "commit": commit,
         "outcomes": {o: sum(r[3] == o for r in rows) for o in OUTCOMES},
         "bad": [list(r) for r in bad]}, indent=1) + "\n")  # fmt: skip
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
