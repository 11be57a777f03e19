"""``lmgc experiments`` (lmgc.eval.experiments, experiments_report): measurements (classical
codecs, a stand-in LLM), the report, CLI errors. The plans are in test_plan.py.

The LLM paths run against a stand-in codec that writes real lmgc containers (zlib per chunk) and
a stand-in ``Compressor.estimate``, so they stay fast; the real SmolLM2 run is marked slow.
"""

from __future__ import annotations

import dataclasses
import json
import zlib

import numpy as np
import pytest
import torch

from lmgc import api, models
from lmgc.api import Estimate
from lmgc.cli import main
from lmgc.container import pack, unpack
from lmgc.errors import InputError, OutputExistsError, SerializationError
from lmgc.eval import experiments
from lmgc.eval.bench import run_bench
from lmgc.eval.experiments import run_experiments
from lmgc.eval.experiments_report import format_report
from lmgc.eval.inputs import load_file_bytes, sample_windows
from lmgc.eval.plan import Plan, Run, Sample, build_plan
from lmgc.tensors import raw_bundle

TINY_RUNS = (Run("convnet", "synthetic", 8, 2, 1, 16), Run("vit", "synthetic", 16, 2, 1, 16))
MAIN = "convnet-synthetic"


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_plan(**changes) -> Plan:
    """Two tiny runs on synthetic data, three classical codecs, one lossy front-end."""
    plan = build_plan(True, arch_dataset="synthetic", llm=False)
    return dataclasses.replace(plan, runs=TINY_RUNS, arch_runs=(MAIN, "vit-synthetic"),
                               dataset_runs=(MAIN,), main_run=MAIN,
                               codecs=("gzip", "lzma", "pcodec"), lossy=("none", "quant:8"),
                               **changes)


# --- lmgc's own modes -------------------------------------------------------------------

def test_own_modes_are_lmgc_codecs_of_each_prior() -> None:
    paper = experiments.own_mode_codec("llm", "smollm2-135m:hex-comma-be", 512, 2)
    context = experiments.own_mode_codec("context", "hex-comma-be", 512, 2)
    assert paper.name == "lmgc:smollm2-135m:hex-comma-be"
    assert context.name == "lmgc-context:hex-comma-be"
    assert (context.chunk_bytes, context.batch_size) == (512, 2)


# --- a classical-only run -------------------------------------------------------------------

@pytest.fixture(scope="module")
def classical_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("experiments") / "out"
    paths = run_experiments(tiny_plan(), out, progress=False, command="lmgc experiments (test)")
    return out, paths, json.loads((out / "results.json").read_text())


def test_classical_run_writes_report_json_plots_and_gradients(classical_run) -> None:
    out, paths, results = classical_run
    assert paths["report"] == out / "report.md" and paths["json"] == out / "results.json"
    assert {p.name for p in out.glob("*.png")} >= {"table1.png", "runs.png", "lossy.png"}
    assert sorted(p.name for p in (out / "gradients" / MAIN).glob("*.safetensors")) == [
        "grad_step000000.safetensors", "grad_step000001.safetensors"]
    assert [r["name"] for r in results["runs"]] == [MAIN, "vit-synthetic"]
    assert results["meta"]["plan"]["llm"] is False
    report = (out / "report.md").read_text()
    for heading in ("## Gradients", "## Table 1", "## Table 2", "## Table 3",
                    "### Checkpoints along training", "## Lossy front-ends", "## Time"):
        assert heading in report
    assert "mean ± std over checkpoints" in report
    assert "No LLM figure was run (`--no-llm`)" in report
    assert "| `quant:8` |" in report and "![table1.png](table1.png)" in report


def test_cells_hold_per_checkpoint_rates_equal_to_bench(classical_run) -> None:
    out, _, results = classical_run
    cells = [c for c in results["cells"] if c["section"] == "table1" and c["kind"] == "classical"]
    assert {(c["codec"], c["protocol"]) for c in cells} == {
        (codec, protocol) for codec in ("gzip", "lzma", "pcodec")
        for protocol in ("whole", "chunked", "windows")}
    gzip = next(c for c in cells if (c["codec"], c["protocol"]) == ("gzip", "whole"))
    files = sorted((out / "gradients" / MAIN).glob("*.safetensors"))
    expected = [r.rate_pct for r in run_bench(files, ["gzip"], ["whole"])]
    assert gzip["steps"] == [0, 1] and gzip["rates"] == pytest.approx(expected)
    mean = f"{np.mean(expected):.2f} ± {np.std(expected, ddof=1):.2f}"
    assert f"| gzip | {mean} |" in (out / "report.md").read_text().replace("**", "")


def test_lossy_rows_count_side_information(classical_run) -> None:
    _, _, results = classical_run
    quant = [r for r in results["bench"] if r["lossy"] == "quant:8" and r["status"] == "ok"]
    assert quant and all(r["side_info_bytes"] > 0 for r in quant)
    cell = next(c for c in results["cells"] if c["section"] == "lossy"
                and (c["setting"], c["codec"], c["protocol"]) == ("quant:8", "gzip", "whole"))
    assert cell["rates"] == pytest.approx([r["rate_pct"] for r in quant if r["codec"] == "gzip"
                                           and r["protocol"] == "whole"])


# --- output folder and CLI errors -----------------------------------------------------------

def test_refuses_a_non_empty_out_and_leaves_it_alone(tmp_path, capsys) -> None:
    kept = tmp_path / "notes.txt"
    kept.write_text("mine")
    with pytest.raises(OutputExistsError, match="is not empty; choose another folder or pass "
                                                "--force"):
        run_experiments(tiny_plan(), tmp_path, progress=False)
    assert main(["experiments", "--out", str(tmp_path), "--no-progress"]) == 1
    assert "lmgc: error: --out" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"] and kept.read_text() == "mine"


def test_out_that_is_a_file_is_refused(tmp_path) -> None:
    target = tmp_path / "report"
    target.write_text("x")
    with pytest.raises(InputError, match="is a file, not a folder"):
        run_experiments(tiny_plan(), target, progress=False)


@pytest.mark.parametrize(("argv", "message"), [
    (["--window-bytes", "100"], "multiple of the 512-byte chunk"),
    (["--data-dir", "mnist=/no/such/folder"], "not a folder"),
    (["--data-dir", "cifar10=.", "--data-dir", "cifar10=."], "names a dataset twice"),
])
def test_cli_reports_bad_arguments_in_one_line(tmp_path, capsys, argv, message) -> None:
    assert main(["experiments", "--out", str(tmp_path / "new"), *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("lmgc: error:") and message in err
    assert not (tmp_path / "new").exists()


def test_cli_rejects_a_data_dir_without_a_name(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["experiments", "--out", str(tmp_path), "--data-dir", "somewhere"])
    assert "expected DATASET=DIR" in capsys.readouterr().err


# --- LLM figures with a stand-in LLM --------------------------------------------------------

class StandInLlmCodec:
    """Writes real lmgc containers (one zlib payload per chunk) without a model."""

    whole_only = True

    def __init__(self, prior: str, mode: str, chunk_bytes: int, batch_size: int,
                 device: str = "cpu") -> None:  # fmt: skip
        self.name, self.chunk_bytes, self.batch_size = f"lmgc:{mode}", chunk_bytes, batch_size

    def available(self) -> bool:
        return True

    def supports(self, dtype) -> bool:
        return True

    def compress(self, data: bytes, dtype) -> bytes:
        if "iso" in self.name:
            raise SerializationError("the tokenizer cannot represent this text exactly")
        chunks = [data[i:i + self.chunk_bytes] for i in range(0, len(data), self.chunk_bytes)]
        payloads = [zlib.compress(c, 9) for c in chunks]
        fields = {"total_bytes": len(data), "environment": {},
                  "codec": {"serialization": "hex-none-be", "group_bytes": 1,
                            "chunk_bytes": self.chunk_bytes, "batch_size": self.batch_size},
                  "prior": {"kind": "context", "version": 1, "digit_contexts": ["z", "z"]},
                  "manifest": raw_bundle(data, "uint8", "stand-in").manifest()}
        return pack(fields, payloads, [2 * len(c) for c in chunks], [data])

    def decompress(self, blob: bytes, dtype, n_bytes: int) -> bytes:
        return b"".join(zlib.decompress(p) for p in unpack(blob).payloads)


class StandInCompressor:
    """``Compressor.estimate`` with zlib's size as the ideal code length."""

    def __init__(self, model, *, serialization, group_bytes, chunk_bytes, device) -> None:
        self.serialization = serialization

    def estimate(self, data: bytes, dtype: str) -> Estimate:
        if self.serialization.startswith("iso"):
            raise SerializationError("the tokenizer cannot represent this text exactly")
        return Estimate(len(data), 8 * len(zlib.compress(data, 9)), 3 * len(data))


@pytest.fixture(scope="module")
def llm_run(tmp_path_factory):
    plan = tiny_plan(llm=True, sample=Sample(2, 1, 64), chunk_bytes=64,
                     serializations=("iso-none-le", "hex-comma-le"), lossy_llm=("quant:8",),
                     separators=("none", "comma"), group_bytes=(1, 4),
                     context_chunk_bytes=(32, 64))
    out = tmp_path_factory.mktemp("experiments_llm") / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(experiments, "own_mode_codec", StandInLlmCodec)
        patch.setattr(api, "Compressor", StandInCompressor)
        patch.setattr(models, "load_model", lambda spec, device: None)
        run_experiments(plan, out, progress=False)
    return out, json.loads((out / "results.json").read_text())


def _llm_cells(results, section, kind=None):
    return [c for c in results["cells"] if c["section"] == section and c["kind"] != "classical"
            and (kind is None or c["kind"] == kind)]


def test_coded_rate_counts_chunk_payloads_of_the_seeded_windows(llm_run) -> None:
    out, results = llm_run
    [coded] = [c for c in _llm_cells(results, "table1", "coded")
               if c["setting"] == "smollm2-135m hex-comma-le"]
    assert coded["codec"] == "lmgc:smollm2-135m:hex-comma-le" and coded["status"] == "ok"
    assert coded["data"] == "2 checkpoints × 1 window × 64 B = 128 B (seed 0)"
    files = sorted((out / "gradients" / MAIN).glob("*.safetensors"))
    expected, windows = [], []
    for path in files:
        data = load_file_bytes(path).data
        [(start, end)] = sample_windows(len(data), 4, 64, 1, 0)
        windows.append(data[start:end])
        expected.append(100 * len(zlib.compress(data[start:end], 9)) / 64)
    assert coded["steps"] == [0, 1] and coded["rates"] == pytest.approx(expected)
    container = len(StandInLlmCodec("llm", "", 64, 2).compress(b"".join(windows), None))
    assert coded["container_pct"] == pytest.approx(100 * container / 128)
    assert coded["symbols_per_chunk"] == 128


def test_every_llm_figure_says_how_it_was_measured(llm_run) -> None:
    out, results = llm_run
    report = (out / "report.md").read_text()
    estimates = _llm_cells(results, "separators") + _llm_cells(results, "context")
    assert estimates and {c["kind"] for c in estimates} == {"estimate"}
    assert [c["setting"] for c in _llm_cells(results, "context")] == ["32 B", "64 B"]
    assert all(c["data"].endswith("(seed 0)") for c in _llm_cells(results, "table1"))
    assert "Coded LLM figures: sections table1, own" in report
    assert "2 checkpoints × 1 window × 64 B = 128 B (seed 0)" in report
    assert "| smollm2-135m | `hex-comma-le` |" in report
    assert "### Separators" in report and "| estimate |" in report
    assert "## lmgc's own modes" in report and "| llm | `lmgc:hex-comma-be` |" in report


def test_a_serialization_the_tokenizer_refuses_is_reported_failed(llm_run) -> None:
    out, results = llm_run
    iso = [c for c in _llm_cells(results, "table1") if "iso" in c["setting"]]
    assert {c["kind"] for c in iso} == {"coded", "estimate"}
    assert all(c["status"] == "failed" and "SerializationError" in c["message"] for c in iso)
    assert "| smollm2-135m | `iso-none-le` | ✗ failed |" in (out / "report.md").read_text()


def test_lossy_llm_rate_includes_side_information(llm_run) -> None:
    _, results = llm_run
    [cell] = _llm_cells(results, "lossy")
    records = [r for r in results["bench"] if r["lossy"] == "quant:8" and r["codec"] == "gzip"
               and r["protocol"] == "whole"]
    floor = [100 * r["side_info_bytes"] / r["original_bytes"] for r in records]
    assert cell["setting"] == "quant:8" and cell["data"].endswith("of the `quant:8` payload")
    assert all(rate > low for rate, low in zip(cell["rates"], floor))


def test_report_can_be_rebuilt_from_results_json(llm_run) -> None:
    out, results = llm_run
    assert format_report(results, ["table1.png", "runs.png", "ablations.png", "lossy.png"]) == \
        (out / "report.md").read_text()


@pytest.mark.slow
def test_real_llm_figures_on_tiny_windows(tmp_path) -> None:
    """SmolLM2 codes and estimates two 64-byte windows; the two rates land close together."""
    plan = tiny_plan(llm=True, sample=Sample(2, 1, 64), chunk_bytes=64,
                     serializations=("hex-comma-le",), lossy=("none",), lossy_llm=(),
                     separators=(), group_bytes=(), context_chunk_bytes=(64,))
    results = json.loads(run_experiments(plan, tmp_path / "out", progress=False)["json"]
                         .read_text())
    [coded] = _llm_cells(results, "table1", "coded")
    [estimate] = _llm_cells(results, "table1", "estimate")
    assert coded["status"] == "ok" and 50 < np.mean(coded["rates"]) < 200
    assert abs(np.mean(coded["rates"]) - np.mean(estimate["rates"])) < 10
    assert coded["container_pct"] > np.mean(coded["rates"])  # the header is counted there
