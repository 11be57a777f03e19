"""``lmgc experiments``: the LM-GC paper's evaluation, end to end, on gradients lmgc collects itself.

One command trains the paper's models (:func:`lmgc.collect.collect_gradients`), measures every
figure with :func:`lmgc.eval.bench.run_bench` (classical codecs and the LLM codec, each decoded and
compared byte for byte) or, where a figure says so, with the LLM's ideal code length
(:meth:`lmgc.api.Compressor.estimate`), and writes ``report.md`` (mean ± std over checkpoints),
PNG plots and ``results.json``. This module runs a :class:`~lmgc.eval.plan.Plan`; the report is
:mod:`lmgc.eval.experiments_report`, the plots :mod:`lmgc.eval.plots`.

LLM figures are measured on seeded windows of the checkpoints
(:func:`lmgc.eval.inputs.sample_windows`). All windows of one figure go into one container, each
window its own chunks, so the model codes them in one batch; the rate counts the coded chunk
payloads, as the paper does, and the whole container (header, chunk table, checksums) is reported
beside it.

Example::

    lmgc experiments --quick --out runs/experiments          # ≤ 30 min on 2 CPU cores
    lmgc experiments --out runs/experiments-full --device cuda
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import sys
import time
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..collect.train import collect_gradients
from ..errors import InputError, LmgcError, OutputExistsError
from ..lossy import parse_lossy
from ..models import default_model_spec
from ..serialize import DEFAULT_SERIALIZATION, Serialization
from .baselines import Codec, versions
from .bench import run_bench
from .cells import Cell, cell_text
from .experiments_report import format_report
from .inputs import (
    FileBytes,
    LossyPayload,
    apply_lossy,
    load_file_bytes,
    sample_windows,
)
from .lmgc_codec import ContainerProbe, LmgcCodec, element_dtype
from .plan import ABLATION_BYTE_ORDERS, OWN_MODES, Plan, Sample
from .plots import plot_experiments

__all__ = ["own_mode_codec", "run_experiments"]


def own_mode_codec(prior: str, mode: str, chunk_bytes: int, batch_size: int,
                   device: str = "cpu") -> Codec:  # fmt: skip
    """The codec of one (prior, mode); ``llm`` is the paper's token mode."""
    return LmgcCodec(mode, prior=prior, chunk_bytes=chunk_bytes, batch_size=batch_size,
                     device=device)


def _step(path: str | Path) -> int:
    return int(Path(path).stem.removeprefix("grad_step"))


@dataclass
class _Pieces:
    """The windows of one LLM figure, per checkpoint, and the lossy front-end they came through."""

    steps: list[int]
    windows: list[list[bytes]]
    lossy: list[LossyPayload | None]  # the lossy front-end of each checkpoint
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
                applied = apply_lossy(source, parse_lossy(lossy))
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
            pieces.dtype = element_dtype(source.dtype_name)
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
            cell = self._coded(pieces, ContainerProbe(codec), chunk_bytes)
        else:
            cell = self._estimated(pieces, mode, group_bytes, chunk_bytes)
        cell = dataclasses.replace(cell, run=run, data=data, seconds=time.perf_counter() - start)
        self.log(f"  -> {cell_text(cell)} in {cell.seconds:.0f} s")
        self._memo[key] = [cell]
        return [cell]

    def _coded(self, pieces: _Pieces, probe: ContainerProbe, chunk_bytes: int) -> Cell:
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
        from ..api import Compressor

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
            "versions": versions() | {"torch": torch.__version__},
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
        from ..models import load_model

        with experiment.phase(f"load {', '.join(plan.models)}"):
            for model in plan.models:
                load_model(model, device=plan.device)
    experiment.collect()
    experiment.run_sections()
    results = experiment.results(command)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "results.json", "report": out_dir / "report.md"}
    paths["json"].write_text(json.dumps(results, indent=1), encoding="utf-8")
    paths |= plot_experiments(results, out_dir)
    paths["report"].write_text(format_report(results, [p.name for p in paths.values()
                                                       if p.suffix == ".png"]), encoding="utf-8")
    experiment.log(f"wrote {', '.join(str(p) for p in paths.values())}")
    return paths
