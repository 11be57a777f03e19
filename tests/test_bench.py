"""Benchmark harness (lmgc.eval.bench, bench_report): protocols, sampling, failures, outputs, CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from test_baselines import real_gradients  # noqa: F401  (shared session fixture)

from lmgc.cli import main
from lmgc.errors import InputError
from lmgc.eval import baselines, bench
from lmgc.eval.baselines import BaselineCodec
from lmgc.eval.bench import run_bench
from lmgc.eval.bench_report import format_markdown
from lmgc.eval.inputs import FileBytes

GZIP_HEADER_AND_TRAILER = 18


@pytest.fixture()
def grads(real_gradients) -> FileBytes:  # noqa: F811
    return FileBytes("grads.bin", real_gradients["float32"], "float32")


def test_chunked_protocol_counts_every_chunk_header(grads) -> None:
    whole, chunked = run_bench([grads], codecs=["gzip"], protocols=["whole", "chunked"])
    n_chunks = math.ceil(len(grads.data) / bench.CHUNK_BYTES)
    assert (whole.protocol, chunked.protocol) == ("whole", "chunked")
    assert whole.verified and chunked.verified
    assert chunked.compressed_bytes >= n_chunks * GZIP_HEADER_AND_TRAILER
    assert chunked.compressed_bytes > whole.compressed_bytes
    assert whole.rate_pct == pytest.approx(100 * whole.compressed_bytes / len(grads.data))


def test_results_are_labelled_and_timed(grads) -> None:
    results = run_bench([grads], codecs=["lzma", "planes-zstd"], protocols=["whole"])
    assert [(r.codec, r.protocol, r.status) for r in results] == [
        ("lzma", "whole", "ok"), ("planes-zstd", "whole", "ok")]
    assert all(r.compress_mbps and r.decompress_mbps for r in results)
    assert all(r.rate_pct < 100 for r in results)  # real gradients do compress a little
    table = format_markdown(results)
    assert "| grads.bin | float32 | whole | lzma |" in table
    assert "chunked" in table and "✓" in table


def _broken(name: str, decode) -> BaselineCodec:
    return BaselineCodec(name, "test double", lambda d, t: d, decode)


def test_codec_that_does_not_round_trip_is_reported_failed(grads) -> None:
    lossy = _broken("lossy", lambda b, t, n: b[:-1] + b"\0")
    crashing = _broken("crashing", lambda b, t, n: 1 / 0)
    lossy_result, crash_result = run_bench([grads], codecs=[lossy, crashing], protocols=["whole"])
    assert (lossy_result.status, lossy_result.verified) == ("failed", False)
    assert crash_result.status == "failed" and "ZeroDivisionError" in crash_result.message
    table = format_markdown([lossy_result, crash_result])
    assert "| lossy | 100.00 |" in table.replace("| grads.bin | float32 | whole ", "| ")
    assert "✗" in table and "failed **crashing**: ZeroDivisionError" in table


def test_missing_optional_codec_is_skipped_with_a_message(grads, monkeypatch) -> None:
    monkeypatch.setattr(BaselineCodec, "available",
                        lambda self: self.name != "zstd-19")
    monkeypatch.setattr(baselines, "_module_available", lambda module: module != "zstandard")
    results = run_bench([grads], codecs=["zstd-19", "gzip"], protocols=["whole"])
    assert [r.status for r in results] == ["skipped", "ok"]
    assert "zstandard" in results[0].message and "lmgc[baselines]" in results[0].message
    assert "skipped **zstd-19**" in format_markdown(results)


def test_codec_that_does_not_take_the_dtype_is_not_applicable(real_gradients) -> None:  # noqa: F811
    half = FileBytes("half.bin", real_gradients["float16"], "float16")
    (result,) = run_bench([half], codecs=["fpzip"], protocols=["whole"])
    assert result.status == "n/a" and "float16" in result.message


def test_sampled_run_reports_mean_with_confidence_interval(grads) -> None:
    results = run_bench([grads], codecs=["gzip", "zstd-3"], protocols=["whole", "chunked"],
                        sample_bytes=4096, seed=1, windows=5)
    assert all(r.windows == 5 and r.window_bytes == 4096 for r in results)
    assert all(r.measured_bytes == 5 * 4096 and r.rate_ci95 >= 0 for r in results)
    # chunks that are stored raw all cost the same, so only the whole-file rates must vary
    assert all(r.rate_ci95 > 0 for r in results if r.protocol == "whole")
    table = format_markdown(results)
    assert "5 × 4096 B" in table and "95% confidence interval" in table


def test_mean_and_std_over_files(grads) -> None:
    other = FileBytes("other.bin", grads.data[: len(grads.data) // 2], "float32")
    results = run_bench([grads, other], codecs=["gzip"], protocols=["whole"])
    rates = [r.rate_pct for r in results]
    expected = f"{np.mean(rates):.2f} ± {np.std(rates, ddof=1):.2f}"
    assert f"| whole | gzip | **{expected}** |" in format_markdown(results)


def test_unknown_protocol_is_a_typed_error(grads) -> None:
    with pytest.raises(InputError, match="unknown protocol 'stream'"):
        run_bench([grads], codecs=["gzip"], protocols=["stream"])


def test_cli_prints_and_saves_table_csv_json_chart(grads, tmp_path, capsys) -> None:
    path = tmp_path / "g.npy"
    np.save(path, np.frombuffer(grads.data, "<f4"))
    out = tmp_path / "out"
    argv = ["bench", str(path), "--codecs", "gzip,fpzip", "--protocol", "whole,chunked",
            "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"| {tmp_path.name}/g.npy | float32 | chunked | fpzip |" in printed
    assert (out / "bench.md").read_text(encoding="utf-8") == printed
    assert (out / "bench.csv").read_text().count("\n") == 1 + 4
    saved = json.loads((out / "bench.json").read_text())
    assert saved["meta"]["protocols"] == ["whole", "chunked"] and len(saved["results"]) == 4
    assert (out / "rates.png").read_bytes().startswith(b"\x89PNG")
    assert main(argv) == 1  # outputs exist: refused without --force
    err = capsys.readouterr().err
    assert err.startswith("lmgc: error: ") and "--force" in err and "lmgc bench: error" not in err
    assert main(argv + ["--force"]) == 0


def test_cli_module_starts_without_torch_or_matplotlib() -> None:
    code = ("import sys, lmgc.eval.cli; "
            "print([m for m in ('torch', 'transformers', 'matplotlib') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr


def test_cli_bad_codec_name_exits_1_with_message(grads, tmp_path, capsys) -> None:
    path = tmp_path / "g.npy"
    np.save(path, np.frombuffer(grads.data[:4096], "<f4"))
    assert main(["bench", str(path), "--codecs", "gzip,nope", "--out", str(tmp_path / "o")]) == 1
    assert "lmgc: error: unknown codec 'nope'" in capsys.readouterr().err
    assert main(["bench", "--list-codecs"]) == 0
    assert "planes-zstd" in capsys.readouterr().out


# --- lossy front-end --------------------------------------------------------------------------

def _fixture_file():
    from conftest import fixture_files

    return fixture_files()[0]


def test_lossy_rate_counts_payload_and_side_info_against_the_original() -> None:
    from lmgc.lossy import error_report, parse_lossy, side_info_bytes
    from lmgc.tensors import read_tensors

    path = _fixture_file()
    results = run_bench([path], codecs=["gzip", "zstd-19"], protocols=["whole", "chunked"],
                        lossy="topk:1%+quant:8")
    bundle = read_tensors(path)
    pipeline = parse_lossy("topk:1%+quant:8")
    payload, info = pipeline.encode(bundle)
    report = error_report(bundle, pipeline.decode(payload, info))
    for r in results:
        assert r.status == "ok" and r.verified and r.lossy == "topk:1%+quant:8"
        assert r.original_bytes == bundle.nbytes and r.payload_bytes == payload.nbytes
        assert r.measured_bytes == payload.nbytes  # every codec saw the same payload
        assert r.side_info_bytes == side_info_bytes(info) > 0
        assert r.rate_pct == pytest.approx(
            100 * (r.compressed_bytes + r.side_info_bytes) / r.original_bytes)
        assert (r.max_abs_error, r.rel_l2_error) == (report["max_abs"], report["rel_l2"])
        assert r.dtype == "mixed(uint8,float32)"
    assert all(r.rate_pct < 5 for r in results)
    table = format_markdown(results)
    label = f"{path.parent.name}/{path.name}"
    assert f"| {label} | `topk:1%+quant:8` | mixed(uint8,float32) | whole | gzip |" in table
    assert "| topk:1%+quant:8 | whole | gzip |" in table  # summary, grouped by spec
    assert "side info" in table and "rel L2 error" in table
    error_row = (f"| {label} | `topk:1%+quant:8` | {bundle.nbytes:,} | {payload.nbytes:,} | "
                 f"{side_info_bytes(info):,} |")
    assert table.count(error_row) == 1 and f"{report['rel_l2']:.4f}" in table


def test_several_lossy_specs_and_none_share_one_table(grads) -> None:
    plain = run_bench([grads], codecs=["gzip"], protocols=["whole"])
    results = run_bench([grads], codecs=["gzip"], protocols=["whole"],
                        lossy=["none", "quant:8", "quant:4:block=256"])
    assert [r.lossy for r in results] == [None, "quant:8", "quant:4:block=256"]
    assert (results[0].compressed_bytes, results[0].rate_pct, results[0].payload_bytes) == (
        plain[0].compressed_bytes, plain[0].rate_pct, None)  # "none": the lossless row
    n_values = len(grads.data) // 4
    assert results[1].payload_bytes == n_values + 8  # one byte per code + (min, step)
    assert results[2].payload_bytes == n_values // 2 + 8 * math.ceil(n_values / 256)
    assert results[2].rate_pct < results[1].rate_pct < plain[0].rate_pct
    table = format_markdown(results)
    assert "| grads.bin | `none` | float32 | whole | gzip |" in table
    assert "| grads.bin | `quant:8` | mixed(uint8,float32) | whole | gzip |" in table
    for spec in ("quant:8", "quant:4:block=256"):  # best per spec: each alone in its group
        assert f"| {spec} | whole | gzip | **" in table


def test_plain_tables_do_not_mention_lossy(grads) -> None:
    table = format_markdown(run_bench([grads], codecs=["gzip"], protocols=["whole"]))
    assert "lossy" not in table.lower() and "| file | dtype | protocol |" in table


def test_sampled_lossy_rate_is_extrapolated(grads) -> None:
    (result,) = run_bench([grads], codecs=["gzip"], protocols=["whole"], lossy="quant:16",
                          sample_bytes=4096, windows=3)
    assert result.windows == 3 and result.measured_bytes == 3 * 4096
    assert result.payload_bytes == len(grads.data) // 2 + 8
    window_rate = 100 * result.compressed_bytes / result.measured_bytes
    # the same compression over the whole payload, plus the side info, against the original
    assert result.rate_pct == pytest.approx(
        (window_rate * result.payload_bytes + 100 * result.side_info_bytes) / len(grads.data),
        rel=0.05)


def test_lossy_errors_are_typed(grads) -> None:
    from lmgc.errors import LossySpecError

    with pytest.raises(LossySpecError, match="'topk:150%'"):
        run_bench([grads], codecs=["gzip"], protocols=["whole"], lossy="topk:150%")
    mixed = FileBytes("mixed.bin", grads.data[:64], "mixed(float32,int64)")
    with pytest.raises(InputError, match="lossy front-end needs the tensors"):
        run_bench([mixed], codecs=["gzip"], protocols=["whole"], lossy="quant:8")


def test_cli_lossy_table_and_json(tmp_path, capsys) -> None:
    path = _fixture_file()
    out = tmp_path / "out"
    argv = ["bench", str(path), "--codecs", "gzip,lzma", "--protocol", "whole", "--lossy",
            "topk:1%+quant:8", "--lossy", "sign", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "`topk:1%+quant:8`" in printed and "`sign`" in printed and "max abs error" in printed
    saved = json.loads((out / "bench.json").read_text())
    assert saved["meta"]["lossy"] == ["topk:1%+quant:8", "sign"]
    assert {r["lossy"] for r in saved["results"]} == {"topk:1%+quant:8", "sign"}
    assert all(r["side_info_bytes"] > 0 for r in saved["results"])
    assert main(["bench", str(path), "--lossy", "quant:0", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "lmgc: error: invalid lossy spec 'quant:0'" in err and "valid stages" in err


def test_lmgc_context_codes_a_whole_tensor_file_with_its_shapes(tmp_path) -> None:
    """Whole files reach lmgc with their tensors' shapes (the context prior predicts rows from
    them); the round trip still compares the file's bytes, and raw bytes still work."""
    from safetensors.numpy import save_file

    from lmgc.container import unpack
    from lmgc.eval.lmgc_codec import LmgcCodec

    rng = np.random.default_rng(0)
    rows = np.outer(rng.normal(size=64), rng.normal(size=96)) * (1 + 1e-3 * rng.normal(size=(64, 96)))
    path = tmp_path / "g.safetensors"
    save_file({"b": np.ones(5, np.float32), "w": (rows * 1e-3).astype(np.float32)}, path)
    codec = LmgcCodec("hex-comma-be", prior="context")
    [shaped] = run_bench([path], codecs=[codec], protocols=["whole"])
    assert shaped.status == "ok" and shaped.verified
    data = np.concatenate([np.ones(5, np.float32), (rows * 1e-3).astype(np.float32).ravel()]).tobytes()
    blob = codec.compress(data, np.dtype(np.float32), shapes=[(5,), (64, 96)])
    assert [t["shape"] for t in unpack(blob).header.fields["manifest"]["tensors"]] == [[5], [64, 96]]
    flat = codec.compress(data, np.dtype(np.float32))
    assert shaped.compressed_bytes == len(blob) < len(flat)
    assert codec.decompress(flat, np.dtype(np.float32), len(data)) == data
