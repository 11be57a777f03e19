"""Every chart of the evaluation, drawn with matplotlib when it is installed (``lmgc[baselines]``).

:func:`plot_rates` draws a bench's rates; :func:`plot_experiments` the figures of an
``lmgc experiments`` run. Without matplotlib both draw nothing and say so by their return value.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .bench import PROTOCOLS, BenchResult
from .cells import Cell, Cells, column_name
from .markdown import short_label

__all__ = ["plot_rates", "plot_experiments"]


def plot_rates(results: Sequence[BenchResult], path: str | Path) -> bool:
    """Bar chart of rates per codec (x) and file (bars), one panel per protocol.

    Returns False, drawing nothing, when matplotlib is not installed.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return False
    measured = [r for r in results if r.verified]
    protocols = [p for p in PROTOCOLS if any(r.protocol == p for r in measured)] or ["whole"]
    files = list(dict.fromkeys((r.file, r.lossy) for r in measured))
    codecs = list(dict.fromkeys(r.codec for r in measured))
    fig = Figure(figsize=(max(6.0, 0.6 * len(codecs) * max(1, len(files)) ** 0.5 + 2),
                          3.2 * len(protocols)), layout="constrained")
    axes = fig.subplots(len(protocols), 1, squeeze=False)[:, 0]
    width = 0.8 / max(1, len(files))
    for ax, protocol in zip(axes, protocols):
        for j, file in enumerate(files):
            by_codec = {r.codec: r for r in measured
                        if r.protocol == protocol and (r.file, r.lossy) == file}
            xs = [i + j * width for i, c in enumerate(codecs) if c in by_codec]
            ax.bar(xs, [by_codec[c].rate_pct for c in codecs if c in by_codec], width,
                   yerr=[by_codec[c].rate_ci95 or 0 for c in codecs if c in by_codec],
                   label=short_label(file[0]) + (f" [{file[1]}]" if file[1] else ""))
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(codecs))], codecs,
                      rotation=45, ha="right")
        ax.set_ylabel("rate % (lower is better)")
        ax.set_title(f"protocol: {protocol}")
        ax.axhline(100, color="grey", linewidth=0.5)
    if len(files) > 1:
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside upper center",
                   ncols=min(4, len(files)), fontsize="small")
    fig.savefig(path, dpi=120)
    return True


_COLORS = {"classical": "tab:gray", "coded": "tab:blue", "estimate": "lightsteelblue"}


def plot_experiments(results: dict, out_dir: Path) -> dict[str, Path]:
    """table1.png, runs.png, ablations.png, lossy.png of a ``results.json`` dict, by name.

    Returns an empty dict, drawing nothing, when matplotlib is not installed.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return {}
    cells = Cells(Cell(**c) for c in results["cells"])
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


def _plot_table1(fig, cells: Cells, plan: dict) -> bool:
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


def _plot_runs(fig, cells: Cells, plan: dict) -> bool:
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
        llm = [cells.llm(section, run=n) for n in names]
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


def _plot_ablations(fig, cells: Cells, plan: dict) -> bool:
    panels = [s for s in ("separators", "group_bytes", "byte_order", "context", "checkpoints")
              if any(c.mean is not None for c in cells.find(s))]
    if not panels:
        return False
    axes = fig.subplots(2, 3, squeeze=False).ravel()
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    for ax, section in zip(axes, panels):
        if section == "checkpoints":
            for c in cells.checkpoint_columns():
                ax.plot(c.steps, c.rates, marker="o", label=column_name(c))
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


def _plot_lossy(fig, cells: Cells, plan: dict) -> bool:
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
