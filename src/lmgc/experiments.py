"""``lmgc experiments``: the LM-GC paper's evaluation, end to end, on gradients lmgc collects itself.

One command trains the paper's models (:func:`lmgc.collect.collect_gradients`), measures every
figure with :func:`lmgc.bench.run_bench` (classical codecs and the LLM codec, each decoded and
compared byte for byte) or, where a figure says so, with the LLM's ideal code length
(:meth:`lmgc.api.Compressor.estimate`), and writes ``report.md`` (mean ± std over checkpoints),
PNG plots and ``results.json``.

LLM figures are measured on seeded windows of the checkpoints (:func:`lmgc.bench.sample_windows`).
All windows of one figure go into one container, each window its own chunks, so the model codes
them in one batch; the rate counts the coded chunk payloads, as the paper does, and the whole
container (header, chunk table, checksums) is reported beside it.

Example::

    lmgc experiments --quick --out runs/experiments          # ≤ 30 min on 2 CPU cores
    lmgc experiments --out runs/experiments-full --device cuda
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .baselines import Codec, LmgcCodec
from .bench import (
    CHUNK_BYTES,
    FileBytes,
    _apply_lossy,
    _positive_int,
    _versions,
    load_file_bytes,
    run_bench,
    sample_windows,
)
from .collect.architectures import ARCH_NAMES
from .collect.datasets import DATASET_NAMES, DatasetNotFoundError
from .collect.train import collect_gradients
from .errors import InputError, LmgcError, OutputExistsError
from .lossy import parse_lossy
from .models import default_model_spec
from .serialize import DEFAULT_SERIALIZATION, Serialization
from .tensors import ITEMSIZE

__all__ = [
    "CLASSICAL_CODECS",
    "OWN_MODES",
    "PAPER_SERIALIZATIONS",
    "Cell",
    "Plan",
    "Run",
    "Sample",
    "build_plan",
    "format_report",
    "own_mode_codec",
    "register",
    "run_experiments",
    "run_experiments_command",
]

CLASSICAL_CODECS = ("gzip", "lzma", "png", "flac", "fpzip", "zstd-19", "pcodec", "planes-zstd")
#: The paper's serializations (ISO, H_n, H_s, H_c, H_{c+s}) in its native little-endian layout.
PAPER_SERIALIZATIONS = ("iso-none-le", "hex-none-le", "hex-space-le", "hex-comma-le",
                        "hex-commaspace-le")
QUICK_MODELS = ("smollm2-135m",)
FULL_MODELS = ("smollm2-135m", "gemma3-270m")
ABLATION_SEPARATORS = ("none", "space", "comma", "commaspace", "semicolon", "0x")
ABLATION_GROUP_BYTES = (1, 2, 4, 8)
ABLATION_BYTE_ORDERS = ("le", "be")
#: LLM chunk sizes of the context-length ablation: ~256 to ~2048 tokens of hex text.
CONTEXT_CHUNK_BYTES = (128, 256, 512, 1024)
LOSSY_SPECS = ("none", "quant:8", "quant:4:block=256", "topk:10%", "topk:1%+quant:8",
               "randk:10%:seed=0", "sign")
LOSSY_LLM_SPECS = ("quant:8", "topk:1%+quant:8")
#: (prior, mode) pairs of lmgc's own modes, coded on the Table 1 windows with 512-byte chunks;
#: a mode is LmgcCodec's ``[MODEL:]SERIALIZATION`` (no model part: lmgc's default model).
OWN_MODES: tuple[tuple[str, str], ...] = tuple((prior, DEFAULT_SERIALIZATION)
                                               for prior in ("llm", "nibble", "hybrid", "context"))
SECTIONS = ("table1", "archs", "datasets", "separators", "group_bytes", "byte_order", "context",
            "checkpoints", "lossy", "own")
#: Sections measured by estimate even in a full run: LmgcCodec takes no group size.
ESTIMATE_ONLY = ("group_bytes",)
QUICK_WIDTHS = {"convnet": 128, "vgg16": 16, "resnet18": 16, "vit": 32}
QUICK_BATCH = {"vit": 32}  # the paper's 128 makes a CPU ViT step take seconds


# --- the plan -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Run:
    """One training run; gradients are saved at steps 0, every, 2·every, ... (``checkpoints``)."""

    arch: str
    dataset: str
    width: int | None  # None: the paper's width
    checkpoints: int
    every: int
    batch_size: int = 128

    @property
    def name(self) -> str:
        return f"{self.arch}-{self.dataset}"

    @property
    def steps(self) -> int:
        return self.every * (self.checkpoints - 1) + 1


@dataclass(frozen=True)
class Sample:
    """The seeded windows LLM figures are measured on: the same for every codec of a figure."""

    checkpoints: int | None  # evenly spaced along training; None: every checkpoint
    windows: int  # per checkpoint
    window_bytes: int
    seed: int = 0

    def describe(self, n_checkpoints: int) -> str:
        n = n_checkpoints if self.checkpoints is None else min(self.checkpoints, n_checkpoints)
        return (f"{n} checkpoint{'s' * (n != 1)} × {self.windows} window{'s' * (self.windows != 1)}"
                f" × {self.window_bytes:,} B = {n * self.windows * self.window_bytes:,} B "
                f"(seed {self.seed})")


@dataclass(frozen=True)
class Plan:
    """Everything one ``lmgc experiments`` run measures; :func:`build_plan` makes the two presets."""

    quick: bool
    runs: tuple[Run, ...]
    main_run: str  # Table 1 and the ablations
    arch_runs: tuple[str, ...]  # Table 2
    dataset_runs: tuple[str, ...]  # Table 3
    sample: Sample
    models: tuple[str, ...]  # LLM priors of Table 1
    coded_sections: tuple[str, ...]  # LLM figures of other sections are ideal estimates
    codecs: tuple[str, ...] = CLASSICAL_CODECS
    serializations: tuple[str, ...] = PAPER_SERIALIZATIONS
    lossy: tuple[str, ...] = LOSSY_SPECS
    lossy_llm: tuple[str, ...] = LOSSY_LLM_SPECS
    separators: tuple[str, ...] = ABLATION_SEPARATORS
    group_bytes: tuple[int, ...] = ABLATION_GROUP_BYTES
    context_chunk_bytes: tuple[int, ...] = CONTEXT_CHUNK_BYTES
    llm: bool = True
    chunk_bytes: int = CHUNK_BYTES  # LLM chunk and chunked protocol, the paper's 512 B
    batch_size: int = 16  # most LLM chunks coded in lockstep
    device: str = "cpu"
    seed: int = 0  # training seed
    data_dirs: tuple[tuple[str, str], ...] = ()

    def kind(self, section: str) -> str:
        """``coded`` (decoded and compared) or ``estimate`` (cross-entropy) for LLM figures."""
        coded = section in self.coded_sections and section not in ESTIMATE_ONLY
        return "coded" if coded else "estimate"


def build_plan(quick: bool, *, models: Iterable[str] = (), data_dirs: dict[str, str] | None = None,
               arch_dataset: str = "mnist", device: str = "cpu", windows: int | None = None,
               window_bytes: int | None = None, seed: int = 0, llm: bool = True) -> Plan:
    """The quick preset (≤ 30 min on 2 CPU cores) or the full one (the paper's sizes, for a GPU).

    Raises:
        InputError: unknown dataset, a --data-dir that is not a folder, bad window sizes.
    """
    data_dirs = dict(data_dirs or {})
    for name, directory in data_dirs.items():
        if name not in DATASET_NAMES or name == "synthetic":
            raise InputError(f"--data-dir {name}={directory}: unknown dataset {name!r}; choose one "
                             f"of {', '.join(d for d in DATASET_NAMES if d != 'synthetic')}")
        if not Path(directory).expanduser().is_dir():
            raise DatasetNotFoundError(f"--data-dir {name}={directory}: not a folder")
    if arch_dataset not in DATASET_NAMES:
        raise InputError(f"unknown dataset {arch_dataset!r} for the architectures table; choose "
                         f"one of {', '.join(DATASET_NAMES)}")
    sample = Sample(2, 1, 512, seed) if quick else Sample(None, 2, 2048, seed)
    sample = dataclasses.replace(sample, windows=windows or sample.windows,
                                 window_bytes=window_bytes or sample.window_bytes)
    if sample.window_bytes % CHUNK_BYTES:
        raise InputError(f"--window-bytes must be a multiple of the {CHUNK_BYTES}-byte chunk, "
                         f"got {sample.window_bytes}")
    checkpoints, every = (4, 20) if quick else (10, 400)

    def make(arch: str, dataset: str) -> Run:
        width = QUICK_WIDTHS[arch] if quick else None
        return Run(arch, dataset, width, checkpoints, every,
                   QUICK_BATCH.get(arch, 128) if quick else 128)

    arch_runs = [make(arch, arch_dataset) for arch in ARCH_NAMES]
    datasets = ["mnist", "fashion-mnist", *(d for d in ("cifar10", "tinyimagenet") if d in data_dirs)]
    dataset_runs = [make("convnet", d) for d in dict.fromkeys([arch_dataset, *datasets])]
    runs = tuple({r.name: r for r in [*arch_runs, *dataset_runs]}.values())
    return Plan(quick=quick, runs=runs, main_run=f"convnet-{arch_dataset}",
                arch_runs=tuple(r.name for r in arch_runs),
                dataset_runs=tuple(r.name for r in dataset_runs), sample=sample,
                models=tuple(dict.fromkeys([*(QUICK_MODELS if quick else FULL_MODELS), *models])),
                coded_sections=("table1", "own") if quick else SECTIONS, llm=llm,
                batch_size=16 if quick else 64, device=device, seed=seed,
                data_dirs=tuple(sorted(data_dirs.items())))


def own_mode_codec(prior: str, mode: str, chunk_bytes: int, batch_size: int,
                   device: str = "cpu") -> Codec:  # fmt: skip
    """The codec of one (prior, mode); ``llm`` is the paper's token mode."""
    return LmgcCodec(mode, prior=prior, chunk_bytes=chunk_bytes, batch_size=batch_size,
                     device=device)


# --- measuring ------------------------------------------------------------------------------

@dataclass
class Cell:
    """One figure: a codec's rate % per checkpoint on one run, and how it was measured.

    ``kind``: ``classical`` (round trip checked), ``coded`` (LLM; encoded, decoded, compared;
    rate = coded chunk payloads) or ``estimate`` (LLM; ideal code length, nothing coded).
    ``protocol``: ``whole`` / ``chunked`` files, or ``windows`` (the LLM sample, chunked).
    """

    section: str
    run: str
    setting: str  # what the section varies: serialization, group size, lossy spec, ...
    codec: str
    kind: str
    protocol: str
    data: str  # the bytes measured, in words
    steps: list[int] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)
    status: str = "ok"  # ok, failed, skipped, n/a
    message: str = ""
    container_pct: float | None = None  # coded: the whole .lmgc over the sampled bytes
    symbols_per_chunk: float | None = None  # tokens for the paper's token mode
    seconds: float | None = None

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.rates) if self.rates and self.status == "ok" else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.rates) if len(self.rates) > 1 else None


class _ContainerProbe:
    """An LLM codec whose containers are read back: coded payload and tokens per chunk."""

    whole_only = True

    def __init__(self, codec: Codec) -> None:
        self.codec, self.name, self.containers = codec, codec.name, []

    def available(self) -> bool:
        return self.codec.available()

    def supports(self, dtype: np.dtype) -> bool:
        return self.codec.supports(dtype)

    def compress(self, data: bytes, dtype: np.dtype) -> bytes:
        from .api import read_container_info

        blob = self.codec.compress(data, dtype)
        self.containers.append(read_container_info(blob))
        return blob

    def decompress(self, blob: bytes, dtype: np.dtype, n_bytes: int) -> bytes:
        return self.codec.decompress(blob, dtype, n_bytes)


def _step(path: str | Path) -> int:
    return int(Path(path).stem.removeprefix("grad_step"))


def _element_dtype(source: FileBytes) -> str:
    """What the LLM codec serializes: the element type, or bytes for mixed lossy payloads."""
    return source.dtype_name if source.dtype_name in ITEMSIZE else "uint8"


@dataclass
class _Pieces:
    """The windows of one LLM figure, per checkpoint, and the lossy front-end they came through."""

    steps: list[int]
    windows: list[list[bytes]]
    lossy: list[Any]  # bench's applied lossy front-end per checkpoint, or None
    dtype: str

    def rate(self, i: int, coded_bytes: float) -> float:
        rate = 100 * coded_bytes / sum(map(len, self.windows[i]))
        return self.lossy[i].rate(rate) if self.lossy[i] else rate


class _Experiment:
    """Runs a plan: collection, then each section's cells, memoized across sections."""

    def __init__(self, plan: Plan, out_dir: Path, force: bool, progress: bool) -> None:
        self.plan, self.out_dir, self.force, self.progress = plan, out_dir, force, progress
        self.started = time.perf_counter()
        self.checkpoints: dict[str, list[Path]] = {}
        self.runs: list[dict] = []
        self.cells: list[Cell] = []
        self.bench: list[dict] = []
        self.timings: dict[str, float] = {}
        self._memo: dict[tuple, list[Cell]] = {}

    def log(self, message: str) -> None:
        if self.progress:
            minutes, seconds = divmod(int(time.perf_counter() - self.started), 60)
            print(f"lmgc experiments [{minutes:02d}:{seconds:02d}] {message}", file=sys.stderr,
                  flush=True)

    @contextmanager
    def phase(self, name: str):
        start = time.perf_counter()
        self.log(f"{name} ...")
        yield
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start
        self.log(f"{name} done in {time.perf_counter() - start:.1f} s")

    def add(self, section: str, cells: Iterable[Cell], setting: str | None = None) -> None:
        for cell in cells:
            changes = {"section": section} | ({} if setting is None else {"setting": setting})
            self.cells.append(dataclasses.replace(cell, **changes))

    # --- collection -------------------------------------------------------------------------

    def collect(self) -> None:
        data_dirs = dict(self.plan.data_dirs)
        for run in self.plan.runs:
            phase = f"collect {run.name} ({run.steps} steps, every {run.every})"
            with self.phase(phase):
                files = collect_gradients(
                    run.arch, run.dataset, run.steps, run.every, self.plan.seed,
                    self.out_dir / "gradients" / run.name, data_dir=data_dirs.get(run.dataset),
                    width=run.width, batch_size=run.batch_size, overwrite=self.force,
                    progress=self.progress, device=self.plan.device)
            self.checkpoints[run.name] = files
            sidecars = [json.loads(p.with_suffix(".json").read_text()) for p in files]
            self.runs.append({**dataclasses.asdict(run), "name": run.name, "steps": run.steps,
                              "width": sidecars[0]["width"], "params": sidecars[0]["num_params"],
                              "bytes": 4 * sidecars[0]["num_params"],  # float32 gradients
                              "loss": [s["loss"] for s in sidecars],
                              "checkpoint_steps": [s["step"] for s in sidecars],
                              "seconds": self.timings[phase]})

    def selected(self, run: str, sample: Sample) -> list[Path]:
        files = self.checkpoints[run]
        if sample.checkpoints is None or sample.checkpoints >= len(files):
            return files
        picks = np.linspace(0, len(files) - 1, sample.checkpoints).round().astype(int)
        return [files[i] for i in dict.fromkeys(picks.tolist())]

    # --- classical codecs -------------------------------------------------------------------

    def classical(self, run: str, protocols: Sequence[str], sample: Sample | None = None,
                  lossy: Sequence[str] | None = None) -> list[Cell]:
        """Every classical codec on a run's checkpoints (or on the LLM windows, chunked)."""
        key = ("classical", run, tuple(protocols), sample, tuple(lossy or ()))
        if key in self._memo:
            return self._memo[key]
        files = self.checkpoints[run] if sample is None else self.selected(run, sample)
        sampling = {} if sample is None else {"sample_bytes": sample.window_bytes,
                                              "seed": sample.seed, "windows": sample.windows}
        results = run_bench(files, self.plan.codecs, protocols, chunk_bytes=self.plan.chunk_bytes,
                            lossy=lossy, **sampling)
        self.bench += [{"run": run, **dataclasses.asdict(r)} for r in results]
        data = (sample.describe(len(self.checkpoints[run])) if sample else
                f"{len(files)} checkpoints, whole files")
        groups: dict[tuple, list] = {}
        for r in results:
            groups.setdefault((r.codec, r.protocol, r.lossy), []).append(r)
        cells = []
        for (codec, protocol, spec), rows in groups.items():
            good = [r for r in rows if r.verified]
            bad = next((r for r in rows if r.status != "ok"), None)
            cells.append(Cell("", run, spec or ("none" if lossy else ""), codec, "classical",
                              "windows" if sample else protocol, data,
                              [_step(r.file) for r in good], [r.rate_pct for r in good],
                              bad.status if bad else "ok", bad.message if bad else ""))
        self._memo[key] = cells
        return cells

    # --- LLM --------------------------------------------------------------------------------

    def pieces(self, run: str, sample: Sample, lossy: str | None) -> _Pieces:
        pieces = _Pieces([], [], [], "float32")
        for path in self.selected(run, sample):
            source, applied = load_file_bytes(path), None
            if lossy:
                applied = _apply_lossy(source, parse_lossy(lossy))
                source = applied.payload
            spans = sample_windows(len(source.data), source.dtype.itemsize, sample.window_bytes,
                                   sample.windows, sample.seed)
            if any(end - start != sample.window_bytes for start, end in spans):
                raise InputError(f"{path}: {len(source.data):,} bytes{' of payload' * bool(lossy)} "
                                 f"is less than one {sample.window_bytes:,}-byte window; lower "
                                 "--window-bytes")
            pieces.steps.append(_step(path))
            pieces.windows.append([source.data[start:end] for start, end in spans])
            pieces.lossy.append(applied)
            pieces.dtype = _element_dtype(source)
        return pieces

    def mode(self, serialization: str, model: str | None = None) -> str:
        """``MODEL:SERIALIZATION``, the first prior of Table 1 unless ``model`` is given."""
        return f"{model or self.plan.models[0]}:{serialization}"

    def llm(self, run: str, mode: str, kind: str, *, prior: str = "llm",
            group_bytes: int | None = None, chunk_bytes: int | None = None,
            sample: Sample | None = None, lossy: str | None = None) -> list[Cell]:
        """One figure of an LLM codec mode (``[MODEL:]SERIALIZATION``), coded (through
        run_bench) or estimated, on the seeded windows."""
        chunk_bytes, sample = chunk_bytes or self.plan.chunk_bytes, sample or self.plan.sample
        key = ("llm", run, mode, kind, prior, group_bytes, chunk_bytes, sample, lossy)
        if key in self._memo:
            return self._memo[key]
        pieces = self.pieces(run, sample, lossy)
        data = sample.describe(len(self.checkpoints[run])) + (f" of the `{lossy}` payload"
                                                               if lossy else "")
        self.log(f"  LLM {kind}: {prior} {mode}"
                 + (f", {group_bytes} B/group" if group_bytes else "")
                 + f", {chunk_bytes} B chunks, {run}{f' {lossy}' if lossy else ''}: {data}")
        start = time.perf_counter()
        if kind == "coded":
            n_chunks = sum(len(w) for windows in pieces.windows for w in windows) // chunk_bytes
            codec = own_mode_codec(prior, mode, chunk_bytes, min(self.plan.batch_size, n_chunks),
                                   self.plan.device)
            cell = self._coded(pieces, _ContainerProbe(codec), chunk_bytes)
        else:
            cell = self._estimated(pieces, mode, group_bytes, chunk_bytes)
        cell = dataclasses.replace(cell, run=run, data=data, seconds=time.perf_counter() - start)
        self.log(f"  -> {_rate_text(cell)} in {cell.seconds:.0f} s")
        self._memo[key] = [cell]
        return [cell]

    def _coded(self, pieces: _Pieces, probe: _ContainerProbe, chunk_bytes: int) -> Cell:
        pooled = b"".join(w for windows in pieces.windows for w in windows)
        [result] = run_bench([FileBytes("llm windows", pooled, pieces.dtype)], [probe], ["whole"])
        cell = Cell("", "", "", probe.name, "coded", "windows", "", status=result.status,
                    message=result.message)
        if result.status != "ok":
            return cell
        chunks = probe.containers[-1]["chunks"]
        if len(chunks) * chunk_bytes != len(pooled):
            return dataclasses.replace(cell, status="failed", message=(
                f"the container holds {len(chunks)} chunks, not one per {chunk_bytes} B"))
        payloads = iter(c["payload_bytes"] for c in chunks)
        per_window = [[sum(next(payloads) for _ in range(len(w) // chunk_bytes)) for w in windows]
                      for windows in pieces.windows]
        return dataclasses.replace(
            cell, steps=pieces.steps,
            rates=[pieces.rate(i, sum(coded)) for i, coded in enumerate(per_window)],
            container_pct=100 * result.compressed_bytes / len(pooled),
            symbols_per_chunk=sum(c["symbols"] for c in chunks) / len(chunks))

    def _estimated(self, pieces: _Pieces, mode: str, group_bytes: int | None,
                   chunk_bytes: int) -> Cell:
        from .api import Compressor

        model, _, serialization = mode.rpartition(":")  # no model: lmgc's default
        cell = Cell("", "", "", f"lmgc:{mode}" + (f" ({group_bytes} B/group)" if group_bytes
                                                   else ""), "estimate", "windows", "")
        try:
            compressor = Compressor(model or None, serialization=serialization,
                                    group_bytes=group_bytes,
                                    chunk_bytes=chunk_bytes, device=self.plan.device)
            estimates = [[compressor.estimate(w, pieces.dtype) for w in windows]
                         for windows in pieces.windows]
        except LmgcError as exc:  # e.g. a serialization this tokenizer cannot write
            return dataclasses.replace(cell, status="failed", message=f"{type(exc).__name__}: {exc}")
        flat = [e for row in estimates for e in row]
        chunks = sum(math.ceil(e.original_bytes / chunk_bytes) for e in flat)
        return dataclasses.replace(
            cell, steps=pieces.steps,
            rates=[pieces.rate(i, sum(e.ideal_bits for e in row) / 8)
                   for i, row in enumerate(estimates)],
            symbols_per_chunk=sum(e.n_tokens for e in flat) / chunks)

    # --- sections ---------------------------------------------------------------------------

    def run_sections(self) -> None:
        plan, main = self.plan, self.plan.main_run
        encoding, separator, order = Serialization.parse(DEFAULT_SERIALIZATION).spec.split("-")
        base, both = self.mode(DEFAULT_SERIALIZATION), ("whole", "chunked")
        with self.phase("table 1: priors × serializations vs classical codecs"):
            self.add("table1", self.classical(main, both))
            self.add("table1", self.classical(main, ["chunked"], plan.sample))
            for model in plan.models if plan.llm else ():
                for serialization in plan.serializations:
                    for kind in ("coded", "estimate"):
                        self.add("table1", self.llm(main, self.mode(serialization, model), kind),
                                 f"{model} {serialization}")
        for section, runs in (("archs", plan.arch_runs), ("datasets", plan.dataset_runs)):
            with self.phase(f"{section} table"):
                for run in runs:
                    self.add(section, self.classical(run, both))
                    self.add(section, self.classical(run, ["chunked"], plan.sample))
                    if plan.llm:
                        self.add(section, self.llm(run, base, plan.kind(section)))
        with self.phase("checkpoints along training"):
            every_checkpoint = dataclasses.replace(plan.sample, checkpoints=None)
            self.add("checkpoints", self.classical(main, both))
            if plan.llm:
                self.add("checkpoints", self.llm(main, base, plan.kind("checkpoints"),
                                                 sample=every_checkpoint))
        with self.phase("lossy front-ends"):
            self.add("lossy", self.classical(main, both, lossy=plan.lossy))
            for spec in plan.lossy_llm if plan.llm else ():
                self.add("lossy", self.llm(main, base, plan.kind("lossy"), lossy=spec), spec)
        if not plan.llm:
            return
        with self.phase("ablations"):
            for sep in plan.separators:
                serialization = f"{encoding}-{sep}-{order}"
                self.add("separators", self.llm(main, self.mode(serialization),
                                                plan.kind("separators")), serialization)
            for group in plan.group_bytes:
                self.add("group_bytes", self.llm(main, base, plan.kind("group_bytes"),
                                                 group_bytes=group), f"{group} B")
            for byte_order in ABLATION_BYTE_ORDERS:
                serialization = f"{encoding}-{separator}-{byte_order}"
                self.add("byte_order", self.llm(main, self.mode(serialization),
                                                plan.kind("byte_order")), serialization)
            context = dataclasses.replace(plan.sample, window_bytes=math.lcm(
                plan.sample.window_bytes, *plan.context_chunk_bytes))
            for chunk in plan.context_chunk_bytes:
                self.add("context", self.llm(main, base, plan.kind("context"),
                                             chunk_bytes=chunk, sample=context), f"{chunk} B")
        with self.phase("lmgc's own modes"):
            for prior, mode in OWN_MODES:
                self.add("own", self.llm(main, mode, "coded", prior=prior), prior)

    def results(self, command: str) -> dict:
        import torch

        llm_seconds = {"coded": 0.0, "estimate": 0.0}
        for cell in (cells[0] for key, cells in self._memo.items() if key[0] == "llm"):
            llm_seconds[cell.kind] += cell.seconds
        meta = {
            "command": command, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "seconds": time.perf_counter() - self.started, "timings": self.timings,
            "llm_seconds": llm_seconds, "default_model": default_model_spec(),
            "plan": dataclasses.asdict(self.plan),
            "machine": {"platform": platform.platform(), "cpus": _cpu_count(),
                        "torch_threads": torch.get_num_threads(), "device": self.plan.device},
            "versions": _versions() | {"torch": torch.__version__},
            "rate": "compressed bytes / original bytes * 100; mean and std over checkpoints",
        }
        return {"meta": meta, "runs": self.runs, "cells": [dataclasses.asdict(c) for c in self.cells],
                "bench": self.bench}


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _prepare_out(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir} is a file, not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise OutputExistsError(f"--out {out_dir} is not empty; choose another folder or pass "
                                "--force to replace the experiment's outputs in it")


def run_experiments(plan: Plan, out_dir: str | Path, *, force: bool = False, progress: bool = True,
                    command: str = "") -> dict[str, Path]:
    """Collect, measure and write ``report.md``, ``results.json`` and the plots into ``out_dir``.

    Raises:
        OutputExistsError: ``out_dir`` holds files and ``force`` is False.
        InputError: a dataset is missing, a checkpoint is smaller than one LLM window, ...
        ModelError: an LLM prior cannot be loaded (checked before any training).
    """
    out_dir = Path(out_dir)
    _prepare_out(out_dir, force)
    experiment = _Experiment(plan, out_dir, force, progress)
    if plan.llm:
        from .models import load_model

        with experiment.phase(f"load {', '.join(plan.models)}"):
            for model in plan.models:
                load_model(model, device=plan.device)
    experiment.collect()
    experiment.run_sections()
    results = experiment.results(command)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "results.json", "report": out_dir / "report.md"}
    paths["json"].write_text(json.dumps(results, indent=1), encoding="utf-8")
    paths |= _plot_all(results, out_dir)
    paths["report"].write_text(format_report(results, [p.name for p in paths.values()
                                                       if p.suffix == ".png"]), encoding="utf-8")
    experiment.log(f"wrote {', '.join(str(p) for p in paths.values())}")
    return paths


# --- the report -----------------------------------------------------------------------------

def _rate_text(cell: Cell | None) -> str:
    if cell is None:
        return "—"
    if cell.status != "ok":
        return {"failed": "✗ failed", "skipped": "skipped", "n/a": "n/a"}.get(cell.status, "—")
    if cell.mean is None:
        return "—"
    return f"{cell.mean:.2f}" + ("" if cell.std is None else f" ± {cell.std:.2f}")


def _bold(text: str) -> str:
    return f"**{text}**" if text[:1].isdigit() else text


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(row) + " |" for row in rows), ""]


class _Cells:
    """Lookups over a report's cells."""

    def __init__(self, cells: Iterable[Cell]) -> None:
        self.cells = list(cells)

    def find(self, section: str, **match: Any) -> list[Cell]:
        return [c for c in self.cells if c.section == section
                and all(getattr(c, k) == v for k, v in match.items())]

    def one(self, section: str, **match: Any) -> Cell | None:
        found = self.find(section, **match)
        return found[0] if found else None

    def best(self, section: str, **match: Any) -> Cell | None:
        measured = [c for c in self.find(section, **match) if c.mean is not None]
        return min(measured, key=lambda c: c.mean) if measured else None


def _llm_cell(cells: _Cells, section: str, **match: Any) -> Cell | None:
    return next((c for c in cells.find(section, **match) if c.kind != "classical"), None)


def _best_text(cell: Cell | None) -> str:
    return "—" if cell is None else f"{_rate_text(cell)} ({cell.codec})"


def _kind_text(cell: Cell) -> str:
    if cell.status != "ok":
        return f"✗ {cell.message[:80]}"
    return {"coded": "coded ✓", "estimate": "estimate"}.get(cell.kind, cell.kind)


def _intro(meta: dict, sample: Sample) -> list[str]:
    plan, machine = meta["plan"], meta["machine"]
    preset = "quick preset (`--quick`)" if plan["quick"] else "full preset"
    coded = ", ".join(s for s in plan["coded_sections"] if s not in ESTIMATE_ONLY)
    checkpoints = next(r["checkpoints"] for r in plan["runs"]
                       if f"{r['arch']}-{r['dataset']}" == plan["main_run"])
    return [
        f"# LM-GC experiments — {preset}", "",
        (f"`{meta['command'] or 'lmgc experiments'}` · {meta['date']} · "
         f"{meta['seconds'] / 60:.1f} min in all · {machine['cpus']} CPU cores, "
         f"{machine['torch_threads']} torch threads, device {machine['device']} · "
         f"{machine['platform']}"), "",
        ("Rate = compressed bytes / original bytes × 100 (lower is better), **mean ± std over "
         "checkpoints** (each checkpoint is one gradient file of the run; each table says how "
         "many)."), "",
        "How each figure was measured:", "",
        ("- **classical**: `lmgc bench`, every file compressed, decompressed and compared byte "
         "for byte. *whole* = one call per checkpoint file; *chunked* = every "
         f"{plan['chunk_bytes']}-byte chunk compressed alone, each chunk's headers counted (the "
         "paper's protocol); *LLM windows* = the chunked protocol on exactly the windows the LLM "
         "figures of the same table use."),
        ("- **coded** (LLM): `lmgc bench` with the LLM codec: range-coded with the model's "
         "probabilities, decoded and compared byte for byte. The rate counts the coded chunk "
         f"payloads, as the paper does ({plan['chunk_bytes']}-byte chunks, each coded alone); "
         "*container* is the whole `.lmgc` file holding all windows of that figure (header with "
         "model hashes, chunk table, checksums) over the same bytes."),
        ("- **estimate** (LLM): the ideal code length, i.e. the cross-entropy of one full forward "
         "pass per chunk (`Compressor.estimate`); nothing is coded or decoded."),
        (f"- **LLM data**: seeded random windows of the checkpoints (`bench.sample_windows`): "
         f"{sample.describe(checkpoints)} per figure unless a row says "
         "otherwise; checkpoints evenly spaced along training. All windows of a figure are "
         "coded in one container, each window its own chunks, in lockstep batches of up to "
         f"{plan['batch_size']} chunks."),
        (f"- Coded LLM figures: sections {coded}; every other LLM figure is an estimate."
         if plan["llm"] else "- **No LLM figure was run (`--no-llm`).**"), ""]


def _runs_section(runs: list[dict]) -> list[str]:
    rows = [[r["name"], r["arch"], r["dataset"], str(r["width"]), f"{r['params']:,}",
             str(r["batch_size"]), str(r["steps"]),
             ", ".join(map(str, r["checkpoint_steps"])), f"{r['bytes']:,}",
             f"{r['loss'][0]:.3f} → {r['loss'][-1]:.3f}", f"{r['seconds']:.0f} s"] for r in runs]
    return ["## Gradients", "",
            ("Collected by `lmgc collect` (SGD lr 0.1, momentum 0.9, wd 5e-4, cosine schedule), "
             "float32 gradients after `backward()`, before the optimizer step."), "",
            *_table(["run", "arch", "dataset", "width", "params", "batch", "steps",
                     "checkpoint steps", "bytes / checkpoint", "batch loss", "time"], rows)]


def _table1(cells: _Cells, plan: dict, runs: dict[str, dict]) -> list[str]:
    main = plan["main_run"]
    n = len(runs[main]["checkpoint_steps"])
    codecs = list(dict.fromkeys(c.codec for c in cells.find("table1", kind="classical")))
    best = {p: cells.best("table1", kind="classical", protocol=p)
            for p in ("whole", "chunked", "windows")}
    rows = []
    for codec in codecs:
        row = [codec]
        for protocol in ("whole", "chunked", "windows"):
            cell = cells.one("table1", codec=codec, protocol=protocol)
            text = _rate_text(cell)
            row.append(_bold(text) if cell is not None and cell is best[protocol] else text)
        rows.append(row)
    windows = cells.one("table1", protocol="windows", kind="classical")
    lines = [f"## Table 1 — LLM priors × serializations vs classical codecs ({main})", "",
             (f"Classical codecs: *whole* and *chunked* over all {n} checkpoints; *LLM windows* = "
              f"{windows.data if windows else '—'}. Best of each column in bold."), "",
             *_table(["codec", "whole file", f"{plan['chunk_bytes']}-B chunks", "LLM windows"],
                     rows)]
    llm_rows = []
    for model in plan["models"]:
        for serialization in plan["serializations"]:
            setting = f"{model} {serialization}"
            coded = cells.one("table1", setting=setting, kind="coded")
            estimate = cells.one("table1", setting=setting, kind="estimate")
            if coded is None and estimate is None:
                continue
            llm_rows.append([
                model, f"`{serialization}`", _rate_text(coded),
                "—" if coded is None or coded.container_pct is None
                else f"{coded.container_pct:.2f}",
                _rate_text(estimate),
                next((f"{c.symbols_per_chunk:.0f}" for c in (coded, estimate)
                      if c is not None and c.symbols_per_chunk), "—"),
                "; ".join(f"{c.kind} {c.seconds:.0f} s" for c in (coded, estimate)
                          if c is not None and c.seconds is not None),
                "; ".join(f"{c.kind}: {c.message[:100]}" for c in (coded, estimate)
                          if c is not None and c.message)])
    if llm_rows:
        sample = _llm_cell(cells, "table1")
        lines += [(f"LLM priors on {sample.data}: *coded* = payload rate of a real, verified "
                   "encode/decode; *container* = whole `.lmgc` file; *estimate* = "
                   f"cross-entropy. Best classical codec on the same windows: "
                   f"{_best_text(best['windows'])}."), "",
                  *_table(["prior", "serialization", "coded %", "container %", "estimate %",
                           "tokens / chunk", "time", "notes"], llm_rows)]
    return lines


def _runs_table(cells: _Cells, section: str, title: str, names: Sequence[str],
                runs: dict[str, dict], plan: dict) -> list[str]:
    header = ["codec", *(f"{n} ({runs[n]['params']:,} params, "
                         f"{len(runs[n]['checkpoint_steps'])} checkpoints)" for n in names)]
    codecs = list(dict.fromkeys(c.codec for c in cells.find(section, kind="classical")))
    rows = [[f"{codec} ({protocol})",
             *(_rate_text(cells.one(section, run=n, codec=codec, protocol=protocol))
               for n in names)]
            for protocol in ("whole", "chunked") for codec in codecs]
    rows.append(["best classical on the LLM windows",
                 *(_best_text(cells.best(section, run=n, kind="classical", protocol="windows"))
                   for n in names)])
    first = _llm_cell(cells, section)
    if first is not None:
        rows.append([f"`{first.codec}` ({first.kind})",
                     *(_rate_text(cells.one(section, run=n, codec=first.codec, kind=first.kind))
                       for n in names)])
    note = f" LLM row: {first.kind}, {first.data} per run." if first else ""
    return [f"## {title}", "",
            (f"Classical rows: all checkpoints of each run; *whole* file or {plan['chunk_bytes']}-B "
             f"*chunked*.{note}"), "", *_table(header, rows)]


def _ablations(cells: _Cells) -> list[str]:
    lines = ["## Ablations (on the Table 1 run)", ""]
    for section, title, what in (
            ("separators", "Separators", "serialization"),
            ("group_bytes", "Bytes per group", "bytes per group"),
            ("byte_order", "Byte order", "serialization"),
            ("context", "Context length", "chunk size")):
        found = cells.find(section)
        if not found:
            continue
        rows = [[c.setting, _rate_text(c), "—" if c.symbols_per_chunk is None
                 else f"{c.symbols_per_chunk:.0f}", _kind_text(c)] for c in found]
        lines += [f"### {title}", "", f"`{DEFAULT_SERIALIZATION}` unless varied; {found[0].data}.",
                  "", *_table([what, "rate %", "tokens / chunk", "measured"], rows)]
    return lines + _checkpoints(cells)


def _checkpoint_columns(cells: _Cells) -> list[Cell]:
    """The best classical codec per protocol and the LLM, each with a rate per checkpoint."""
    columns = [cells.best("checkpoints", kind="classical", protocol=p) for p in ("whole", "chunked")]
    columns += [c for c in cells.find("checkpoints", protocol="windows")]
    return [c for c in columns if c is not None and c.rates]


def _column_name(cell: Cell) -> str:
    return f"{cell.codec} ({cell.protocol})" if cell.kind == "classical" else f"LLM ({cell.kind})"


def _checkpoints(cells: _Cells) -> list[str]:
    columns = _checkpoint_columns(cells)
    if not columns:
        return []
    steps = sorted({s for c in columns for s in c.steps})
    rows = [[str(step), *(f"{dict(zip(c.steps, c.rates)).get(step, math.nan):.2f}"
                          for c in columns)] for step in steps]
    running = []
    for n in range(1, len(steps) + 1):
        prefix = [Cell("", "", "", "", "", "", "",
                       rates=[r for s, r in zip(c.steps, c.rates) if s in steps[:n]])
                  for c in columns]
        running.append([f"first {n}", *map(_rate_text, prefix)])
    llm = next((c for c in columns if c.kind != "classical"), None)
    note = f" LLM: {llm.kind}, {llm.data}." if llm is not None else ""
    return ["### Checkpoints along training", "",
            ("Rate of each checkpoint (training step) for the best classical codec of each "
             "protocol and the LLM, then the mean ± std over the first n checkpoints: how many "
             f"checkpoints a figure needs.{note}"), "",
            *_table(["step", *map(_column_name, columns)], rows),
            *_table(["checkpoints", *map(_column_name, columns)], running)]


def _lossy(cells: _Cells, bench: list[dict], plan: dict) -> list[str]:
    found = cells.find("lossy", kind="classical", protocol="whole")
    if not found:
        return []
    specs = list(dict.fromkeys(c.setting for c in found))
    codecs = list(dict.fromkeys(c.codec for c in found))
    front_end: dict[str, list[dict]] = {}  # one bench record per checkpoint and spec
    for record in bench:
        if (record["run"], record["codec"], record["protocol"]) == (plan["main_run"], codecs[0],
                                                                      "whole"):
            front_end.setdefault(record["lossy"] or "none", []).append(record)
    rows = []
    for spec in specs:
        records = [r for r in front_end.get(spec, []) if r["lossy"]]
        uncoded = [100 * (r["payload_bytes"] + r["side_info_bytes"]) / r["original_bytes"]
                   for r in records]
        llm = cells.one("lossy", setting=spec, protocol="windows")
        rows.append([f"`{spec}`", f"{statistics.fmean(uncoded):.2f}" if uncoded else "100",
                     f"{statistics.fmean(r['rel_l2_error'] for r in records):.4f}"
                     if records else "0",
                     *(_rate_text(cells.one("lossy", setting=spec, codec=codec, protocol="whole"))
                       for codec in codecs),
                     _best_text(cells.best("lossy", setting=spec, protocol="chunked")),
                     f"{_rate_text(llm)} ({llm.kind})" if llm else "—"])
    llm = next(iter(cells.find("lossy", protocol="windows")), None)
    llm_note = f" LLM: `{DEFAULT_SERIALIZATION}`, {llm.kind}, {llm.data}." if llm else ""
    return ["## Lossy front-ends + lossless codecs", "",
            "Each checkpoint is preprocessed once and every codec compresses the same payload; "
            "rate = (compressed payload + side information) / original bytes × 100, mean ± std "
            "over all checkpoints of the Table 1 run. *uncoded* = payload + side information "
            "before any codec; *rel L2* = ‖decoded − original‖ / ‖original‖ (mean)."
            + llm_note, "",
            *_table(["lossy", "uncoded %", "rel L2", *(f"{c} (whole)" for c in codecs),
                     "best chunked", "LLM"], rows)]


def _own(cells: _Cells, default_model: str) -> list[str]:
    found = cells.find("own")
    if not found:
        return []
    rows = [[c.setting, f"`{c.codec}`", _rate_text(c),
             "—" if c.container_pct is None else f"{c.container_pct:.2f}",
             "—" if c.symbols_per_chunk is None else f"{c.symbols_per_chunk:.0f}",
             "—" if c.seconds is None else f"{c.seconds:.0f} s", _kind_text(c)] for c in found]
    return ["## lmgc's own modes beside the paper's", "",
            (f"All coded (encoded, decoded, compared) on the Table 1 windows, {found[0].data}; "
             f"a mode without a model part uses lmgc's default model, `{default_model}`."), "",
            *_table(["prior", "codec", "coded %", "container %", "symbols / chunk",
                     "time (encode + decode)", "measured"], rows)]


def _timings(meta: dict) -> list[str]:
    rows = [[name, f"{seconds:.0f} s"] for name, seconds in meta["timings"].items()]
    llm = meta["llm_seconds"]
    return ["## Time", "",
            (f"{meta['seconds'] / 60:.1f} min in all, of which LLM coded figures "
             f"{llm['coded'] / 60:.1f} min and LLM estimates {llm['estimate'] / 60:.1f} min (a "
             "figure shared by several sections is measured once)."), "",
            *_table(["phase", "time"], rows)]


def format_report(results: dict, plots: Sequence[str] = ()) -> str:
    """The markdown report of a ``results.json`` dict (as written by :func:`run_experiments`)."""
    meta, plan = results["meta"], results["meta"]["plan"]
    cells = _Cells(Cell(**c) for c in results["cells"])
    runs = {r["name"]: r for r in results["runs"]}
    lines = _intro(meta, Sample(**plan["sample"]))
    lines += _runs_section(results["runs"])
    lines += _table1(cells, plan, runs)
    arch_dataset = runs[plan["arch_runs"][0]]["dataset"]
    lines += _runs_table(cells, "archs", f"Table 2 — architectures ({arch_dataset})",
                         plan["arch_runs"], runs, plan)
    lines += _runs_table(cells, "datasets", "Table 3 — datasets (ConvNet)", plan["dataset_runs"],
                         runs, plan)
    lines += _ablations(cells)
    lines += _lossy(cells, results["bench"], plan)
    lines += _own(cells, meta["default_model"])
    lines += _timings(meta)
    if plots:
        lines += ["## Plots", "", *(f"![{name}]({name})" for name in plots), ""]
    return "\n".join(lines)


# --- plots ----------------------------------------------------------------------------------

_COLORS = {"classical": "tab:gray", "coded": "tab:blue", "estimate": "lightsteelblue"}


def _plot_all(results: dict, out_dir: Path) -> dict[str, Path]:
    """table1.png, runs.png, ablations.png, lossy.png; none when matplotlib is missing."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return {}
    cells = _Cells(Cell(**c) for c in results["cells"])
    plan = results["meta"]["plan"]
    drawn = {}
    for name, draw in (("table1", _plot_table1), ("runs", _plot_runs),
                       ("ablations", _plot_ablations), ("lossy", _plot_lossy)):
        fig = Figure(figsize=(10, 6), layout="constrained")
        if draw(fig, cells, plan):
            path = out_dir / f"{name}.png"
            fig.savefig(path, dpi=110)
            drawn[name] = path
    return drawn


def _plot_table1(fig, cells: _Cells, plan: dict) -> bool:
    shown = sorted((c for c in [*cells.find("table1", protocol="windows"), *cells.find("own")]
                    if c.mean is not None), key=lambda c: c.mean)
    if not shown:
        return False
    ax = fig.subplots()
    labels = [c.codec if c.kind == "classical" or c.section == "own" else
              f"{c.setting} ({c.kind})" for c in shown]
    ax.barh(range(len(shown)), [c.mean for c in shown], xerr=[c.std or 0 for c in shown],
            color=[_COLORS[c.kind] for c in shown])
    ax.set_yticks(range(len(shown)), labels, fontsize="small")
    ax.invert_yaxis()
    ax.axvline(100, color="black", linewidth=0.6)
    ax.set_xlabel("rate % (lower is better); bars: mean ± std over checkpoints")
    ax.set_title(f"{plan['main_run']}, same windows for every codec: {shown[0].data}\n"
                 "gray: classical (chunked), blue: LLM coded + verified, light: LLM estimate",
                 fontsize="medium")
    return True


def _plot_runs(fig, cells: _Cells, plan: dict) -> bool:
    axes = fig.subplots(1, 2, squeeze=False)[0]
    drawn = False
    for ax, section, names in zip(axes, ("archs", "datasets"),
                                  (plan["arch_runs"], plan["dataset_runs"])):
        series = [(f"best classical ({label})", shade,
                   [cells.best(section, run=n, kind="classical", protocol=protocol)
                    for n in names])
                  for protocol, label, shade in (("whole", "whole", "dimgray"),
                                                 ("chunked", "chunked", "darkgray"),
                                                 ("windows", "LLM windows", "lightgray"))]
        llm = [_llm_cell(cells, section, run=n) for n in names]
        kinds = sorted({c.kind for c in llm if c is not None})
        if kinds:
            series.append((f"LLM ({', '.join(kinds)})", _COLORS[kinds[0]], llm))
        width, lowest = 0.8 / len(series), 100.0
        for j, (label, color, found) in enumerate(series):
            shown = [(i, c) for i, c in enumerate(found) if c is not None and c.mean is not None]
            ax.bar([i + j * width for i, _ in shown], [c.mean for _, c in shown], width,
                   yerr=[c.std or 0 for _, c in shown], color=color, label=label)
            lowest = min([lowest, *(c.mean for _, c in shown)])
            drawn = drawn or bool(shown)
        ax.set_ylim(max(0.0, lowest - 15), None)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names, rotation=20,
                      fontsize="small")
        ax.set_ylabel("rate % (lower is better)")
        ax.set_title({"archs": "Table 2: architectures", "datasets": "Table 3: datasets"}[section])
        ax.axhline(100, color="black", linewidth=0.6)
    axes[0].legend(fontsize="small", loc="lower left")
    return drawn


def _plot_ablations(fig, cells: _Cells, plan: dict) -> bool:
    panels = [s for s in ("separators", "group_bytes", "byte_order", "context", "checkpoints")
              if any(c.mean is not None for c in cells.find(s))]
    if not panels:
        return False
    axes = fig.subplots(2, 3, squeeze=False).ravel()
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    for ax, section in zip(axes, panels):
        if section == "checkpoints":
            for c in _checkpoint_columns(cells):
                ax.plot(c.steps, c.rates, marker="o", label=_column_name(c))
            ax.set_xlabel("training step")
            ax.legend(fontsize="x-small")
        else:
            found = [c for c in cells.find(section) if c.mean is not None]
            ax.bar(range(len(found)), [c.mean for c in found], yerr=[c.std or 0 for c in found],
                   color=[_COLORS[c.kind] for c in found])
            labels = [f"{c.setting}\n{c.symbols_per_chunk:.0f} tok" if section == "context"
                      else c.setting for c in found]
            ax.set_xticks(range(len(found)), labels, rotation=30, fontsize="x-small")
            ax.set_ylim(min(c.mean for c in found) - 5, max(c.mean for c in found) + 5)
        ax.set_title(section.replace("_", " "), fontsize="medium")
        ax.set_ylabel("rate %")
    fig.suptitle(f"LLM ablations on {plan['main_run']} (dark: coded, light: estimate)",
                 fontsize="medium")
    return True


def _plot_lossy(fig, cells: _Cells, plan: dict) -> bool:
    found = cells.find("lossy", protocol="whole")
    specs = list(dict.fromkeys(c.setting for c in found))
    if not specs:
        return False
    ax = fig.subplots()
    best = [cells.best("lossy", setting=s, protocol="whole") for s in specs]
    llm = [cells.one("lossy", setting=s, protocol="windows") for s in specs]
    ax.bar([i - 0.2 for i in range(len(specs))], [c.mean if c else 0 for c in best], 0.4,
           color=_COLORS["classical"], label="best classical (whole)")
    for i, (b, c) in enumerate(zip(best, llm)):
        if b is not None:
            ax.annotate(b.codec, (i - 0.2, b.mean), ha="center", va="bottom", fontsize="x-small")
        if c is not None and c.mean is not None:
            ax.bar(i + 0.2, c.mean, 0.4, color=_COLORS[c.kind],
                   label=f"LLM ({c.kind})" if i == specs.index(c.setting) else None)
    ax.set_xticks(range(len(specs)), specs, rotation=20, fontsize="small")
    ax.set_yscale("log")
    ax.set_ylabel("rate % incl. side info (log scale)")
    ax.set_title(f"Lossy front-ends on {plan['main_run']}", fontsize="medium")
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(dict(zip(labels, handles)).values(), dict(zip(labels, handles)).keys(),
              fontsize="small")
    return True


# --- CLI ------------------------------------------------------------------------------------

def _data_dir(text: str) -> tuple[str, str]:
    name, sep, directory = text.partition("=")
    if not sep or not name or not directory:
        raise argparse.ArgumentTypeError(f"expected DATASET=DIR (e.g. cifar10=~/data/cifar-10-"
                                         f"batches-py), got {text!r}")
    return name, directory


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``experiments`` subcommand to the main CLI."""
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
    parser.add_argument("--windows", type=_positive_int, metavar="K",
                        help="LLM windows per checkpoint (quick 1, full 2)")
    parser.add_argument("--window-bytes", type=_positive_int, metavar="N",
                        help=f"LLM window size, a multiple of {CHUNK_BYTES} (quick 512, full 2048)")
    parser.add_argument("--seed", type=int, default=0, help="training and window seed (default 0)")
    parser.add_argument("--no-llm", action="store_true", help="classical codecs only")
    parser.add_argument("--no-progress", action="store_true", help="no progress on stderr")
    parser.set_defaults(func=run_experiments_command)


def run_experiments_command(args: argparse.Namespace) -> int:
    """Run ``lmgc experiments``; library errors become one line on stderr and exit code 1."""
    try:
        names = [name for name, _ in args.data_dir]
        if len(set(names)) != len(names):
            raise InputError(f"--data-dir names a dataset twice: {', '.join(names)}")
        plan = build_plan(args.quick, models=args.model, data_dirs=dict(args.data_dir),
                          arch_dataset=args.arch_dataset, device=args.device,
                          windows=args.windows, window_bytes=args.window_bytes, seed=args.seed,
                          llm=not args.no_llm)
        paths = run_experiments(plan, args.out, force=args.force, progress=not args.no_progress,
                                command="lmgc " + " ".join(sys.argv[1:]))
    except LmgcError as exc:
        print(f"lmgc experiments: error: {exc}", file=sys.stderr)
        return 1
    print(paths["report"])
    return 0
