"""``report.md`` of an ``lmgc experiments`` run, rebuilt from its ``results.json`` alone.

:func:`format_report` writes the paper's tables (1: priors × serializations, 2: architectures,
3: datasets), the ablations, the lossy front-ends, lmgc's own modes and the time spent, each
saying how its figures were measured (classical, coded or estimate) and on which bytes.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from ..serialize import DEFAULT_SERIALIZATION
from .cells import Cell, Cells, cell_text, column_name
from .markdown import table
from .plan import ESTIMATE_ONLY, Sample

__all__ = ["format_report"]


def _bold(text: str) -> str:
    return f"**{text}**" if text[:1].isdigit() else text


def _best_text(cell: Cell | None) -> str:
    return "—" if cell is None else f"{cell_text(cell)} ({cell.codec})"


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
        ("- **LLM data**: seeded random windows of the checkpoints "
         f"(`lmgc.eval.inputs.sample_windows`): {sample.describe(checkpoints)} per figure "
         "unless a row says otherwise; checkpoints evenly spaced along training. All windows of "
         "a figure are coded in one container, each window its own chunks, in lockstep batches "
         f"of up to {plan['batch_size']} chunks."),
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
            *table(["run", "arch", "dataset", "width", "params", "batch", "steps",
                     "checkpoint steps", "bytes / checkpoint", "batch loss", "time"], rows), ""]


def _table1(cells: Cells, plan: dict, runs: dict[str, dict]) -> list[str]:
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
            text = cell_text(cell)
            row.append(_bold(text) if cell is not None and cell is best[protocol] else text)
        rows.append(row)
    windows = cells.one("table1", protocol="windows", kind="classical")
    lines = [f"## Table 1 — LLM priors × serializations vs classical codecs ({main})", "",
             (f"Classical codecs: *whole* and *chunked* over all {n} checkpoints; *LLM windows* = "
              f"{windows.data if windows else '—'}. Best of each column in bold."), "",
             *table(["codec", "whole file", f"{plan['chunk_bytes']}-B chunks", "LLM windows"],
                     rows), ""]
    llm_rows = []
    for model in plan["models"]:
        for serialization in plan["serializations"]:
            setting = f"{model} {serialization}"
            coded = cells.one("table1", setting=setting, kind="coded")
            estimate = cells.one("table1", setting=setting, kind="estimate")
            if coded is None and estimate is None:
                continue
            llm_rows.append([
                model, f"`{serialization}`", cell_text(coded),
                "—" if coded is None or coded.container_pct is None
                else f"{coded.container_pct:.2f}",
                cell_text(estimate),
                next((f"{c.symbols_per_chunk:.0f}" for c in (coded, estimate)
                      if c is not None and c.symbols_per_chunk), "—"),
                "; ".join(f"{c.kind} {c.seconds:.0f} s" for c in (coded, estimate)
                          if c is not None and c.seconds is not None),
                "; ".join(f"{c.kind}: {c.message[:100]}" for c in (coded, estimate)
                          if c is not None and c.message)])
    if llm_rows:
        sample = cells.llm("table1")
        lines += [(f"LLM priors on {sample.data}: *coded* = payload rate of a real, verified "
                   "encode/decode; *container* = whole `.lmgc` file; *estimate* = "
                   f"cross-entropy. Best classical codec on the same windows: "
                   f"{_best_text(best['windows'])}."), "",
                  *table(["prior", "serialization", "coded %", "container %", "estimate %",
                           "tokens / chunk", "time", "notes"], llm_rows), ""]
    return lines


def _runs_table(cells: Cells, section: str, title: str, names: Sequence[str],
                runs: dict[str, dict], plan: dict) -> list[str]:
    header = ["codec", *(f"{n} ({runs[n]['params']:,} params, "
                         f"{len(runs[n]['checkpoint_steps'])} checkpoints)" for n in names)]
    codecs = list(dict.fromkeys(c.codec for c in cells.find(section, kind="classical")))
    rows = [[f"{codec} ({protocol})",
             *(cell_text(cells.one(section, run=n, codec=codec, protocol=protocol))
               for n in names)]
            for protocol in ("whole", "chunked") for codec in codecs]
    rows.append(["best classical on the LLM windows",
                 *(_best_text(cells.best(section, run=n, kind="classical", protocol="windows"))
                   for n in names)])
    first = cells.llm(section)
    if first is not None:
        rows.append([f"`{first.codec}` ({first.kind})",
                     *(cell_text(cells.one(section, run=n, codec=first.codec, kind=first.kind))
                       for n in names)])
    note = f" LLM row: {first.kind}, {first.data} per run." if first else ""
    return [f"## {title}", "",
            (f"Classical rows: all checkpoints of each run; *whole* file or {plan['chunk_bytes']}-B "
             f"*chunked*.{note}"), "", *table(header, rows), ""]


def _ablations(cells: Cells) -> list[str]:
    lines = ["## Ablations (on the Table 1 run)", ""]
    for section, title, what in (
            ("separators", "Separators", "serialization"),
            ("group_bytes", "Bytes per group", "bytes per group"),
            ("byte_order", "Byte order", "serialization"),
            ("context", "Context length", "chunk size")):
        found = cells.find(section)
        if not found:
            continue
        rows = [[c.setting, cell_text(c), "—" if c.symbols_per_chunk is None
                 else f"{c.symbols_per_chunk:.0f}", _kind_text(c)] for c in found]
        lines += [f"### {title}", "", f"`{DEFAULT_SERIALIZATION}` unless varied; {found[0].data}.",
                  "", *table([what, "rate %", "tokens / chunk", "measured"], rows), ""]
    return lines + _checkpoints(cells)


def _checkpoints(cells: Cells) -> list[str]:
    columns = cells.checkpoint_columns()
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
        running.append([f"first {n}", *map(cell_text, prefix)])
    llm = next((c for c in columns if c.kind != "classical"), None)
    note = f" LLM: {llm.kind}, {llm.data}." if llm is not None else ""
    return ["### Checkpoints along training", "",
            ("Rate of each checkpoint (training step) for the best classical codec of each "
             "protocol and the LLM, then the mean ± std over the first n checkpoints: how many "
             f"checkpoints a figure needs.{note}"), "",
            *table(["step", *map(column_name, columns)], rows), "",
            *table(["checkpoints", *map(column_name, columns)], running), ""]


def _lossy(cells: Cells, bench: list[dict], plan: dict) -> list[str]:
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
                     *(cell_text(cells.one("lossy", setting=spec, codec=codec, protocol="whole"))
                       for codec in codecs),
                     _best_text(cells.best("lossy", setting=spec, protocol="chunked")),
                     f"{cell_text(llm)} ({llm.kind})" if llm else "—"])
    llm = next(iter(cells.find("lossy", protocol="windows")), None)
    llm_note = f" LLM: `{DEFAULT_SERIALIZATION}`, {llm.kind}, {llm.data}." if llm else ""
    return ["## Lossy front-ends + lossless codecs", "",
            "Each checkpoint is preprocessed once and every codec compresses the same payload; "
            "rate = (compressed payload + side information) / original bytes × 100, mean ± std "
            "over all checkpoints of the Table 1 run. *uncoded* = payload + side information "
            "before any codec; *rel L2* = ‖decoded − original‖ / ‖original‖ (mean)."
            + llm_note, "",
            *table(["lossy", "uncoded %", "rel L2", *(f"{c} (whole)" for c in codecs),
                     "best chunked", "LLM"], rows), ""]


def _own(cells: Cells, default_model: str) -> list[str]:
    found = cells.find("own")
    if not found:
        return []
    rows = [[c.setting, f"`{c.codec}`", cell_text(c),
             "—" if c.container_pct is None else f"{c.container_pct:.2f}",
             "—" if c.symbols_per_chunk is None else f"{c.symbols_per_chunk:.0f}",
             "—" if c.seconds is None else f"{c.seconds:.0f} s", _kind_text(c)] for c in found]
    return ["## lmgc's own modes beside the paper's", "",
            (f"All coded (encoded, decoded, compared) on the Table 1 windows, {found[0].data}; "
             f"a mode without a model part uses lmgc's default model, `{default_model}`."), "",
            *table(["prior", "codec", "coded %", "container %", "symbols / chunk",
                     "time (encode + decode)", "measured"], rows), ""]


def _timings(meta: dict) -> list[str]:
    rows = [[name, f"{seconds:.0f} s"] for name, seconds in meta["timings"].items()]
    llm = meta["llm_seconds"]
    return ["## Time", "",
            (f"{meta['seconds'] / 60:.1f} min in all, of which LLM coded figures "
             f"{llm['coded'] / 60:.1f} min and LLM estimates {llm['estimate'] / 60:.1f} min (a "
             "figure shared by several sections is measured once)."), "",
            *table(["phase", "time"], rows), ""]


def format_report(results: dict, plots: Sequence[str] = ()) -> str:
    """The markdown report of a ``results.json`` dict (as written by
    :func:`lmgc.eval.experiments.run_experiments`)."""
    meta, plan = results["meta"], results["meta"]["plan"]
    cells = Cells(Cell(**c) for c in results["cells"])
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
