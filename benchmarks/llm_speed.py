"""LLM codec speed against the model's matmul-only limit, measured side by side in one run.

For each (dtype, batch) setting it measures on the packaged real gradient, chunk 256 B:
  - lmgc encode and decode through the public API (container decoded and compared), in tokens/s
    (symbols coded) and bytes/s, with the model loaded beforehand (load time apart);
  - the matmul-only limit: the model's linear layers alone (every ``nn.Linear`` of the decoder
    blocks, i.e. q/k/v/o and the MLP's gate/up/down), one token per sequence at the same batch and
    dtype, timed with torch on the same threads for 3 s right after the encode and again right
    after the decode (the mean rate of both; this VM's speed drifts over minutes), and its fastest
    single pass (peak);
  - their ratio (the issue's target: >= 0.5).
Runs on CPU, or on a GPU with ``--device cuda``: then the table also names the GPU, its driver and
CUDA, and gives a second ceiling, the FLOP roof (the rate of one large bfloat16 or float32 matrix
product measured in the same run, divided by the linear layers' FLOP per token): at a GPU's batch
sizes the per-layer limit counts kernel launches as much as arithmetic. More chunks than the
packaged gradient holds repeat it (the speed of a chunk does not depend on which chunk it is).

Settings are DTYPE:BATCH[:ENGINE]; BATCH may be ``auto`` (the codec's own choice, reported as
resolved) and ENGINE ``transformers`` (the model's own forward with transformers' cache, what
files before the ``lmgc-llama-1`` engine used) or the default engine.

Run:  .venv/bin/python benchmarks/llm_speed.py [--settings bfloat16:auto,float32:64,bfloat16:64:transformers]
          [--chunks 32] [--device cpu] [--out benchmarks/results/llm_speed.md]
GPU:  python benchmarks/llm_speed.py --device cuda     (bfloat16 and float32 at the automatic batch,
          2048 chunks; writes benchmarks/results/llm_speed_gpu.md)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone
from importlib.resources import files
from pathlib import Path

import numpy as np

import lmgc
from lmgc.config import default_threads
from lmgc.models import DEFAULT_MODEL, default_model_spec, load_model
from lmgc.tensors import read_tensors

ROOT = Path(__file__).resolve().parent.parent
CHUNK_BYTES = 256


def packaged_values() -> np.ndarray:
    """The float32 values of the packaged real gradient."""
    bundle = read_tensors(Path(str(files("lmgc") / "data" / "convnet_w32_mnist_step50.safetensors")))
    return np.frombuffer(b"".join(t.data for t in bundle.tensors if t.dtype == "float32"), "<f4")


def sample(n_chunks: int) -> np.ndarray:
    """The first ``n_chunks`` x 256 B of float32 values of the packaged real gradient, repeated
    where it is shorter."""
    values = packaged_values()
    need = n_chunks * CHUNK_BYTES // 4
    return np.resize(values, need) if need > len(values) else values[:need].copy()


def linear_flop_per_token(lm) -> int:
    """Multiply-adds x 2 of the decoder blocks' linear layers for one token."""
    import torch

    return 2 * sum(m.weight.numel() for name, m in lm.model.named_modules()
                   if isinstance(m, torch.nn.Linear) and ".layers." in name)  # fmt: skip


def flop_roof(lm, size: int = 8192, repeats: int = 10) -> float:
    """Tokens/s if every linear FLOP ran at the rate of one large square matrix product in the
    model's dtype on its device (mean of ``repeats`` after warm-up): a GPU's compute ceiling."""
    import torch

    dtype = next(lm.model.parameters()).dtype
    a = torch.randn(size, size, dtype=dtype, device=lm.device)
    b = torch.randn(size, size, dtype=dtype, device=lm.device)
    for _ in range(3):
        a @ b
    _sync(lm.device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(lm.device)
    flops = 2 * size**3 * repeats / (time.perf_counter() - start)
    return flops / linear_flop_per_token(lm)


def matmul_limit(lm, batch: int, threads: int, seconds: float = 3.0) -> tuple[float, float]:
    """Tokens/s of the decoder blocks' linear layers alone at this batch (the compute floor):
    the mean rate of passes over all of them repeated for ``seconds`` (at least 5 passes), and
    the rate of the fastest pass."""
    import torch

    torch.set_num_threads(threads)
    linears = [m for name, m in lm.model.named_modules()
               if isinstance(m, torch.nn.Linear) and ".layers." in name]  # fmt: skip
    dtype = next(lm.model.parameters()).dtype
    inputs = {m.in_features: torch.randn(batch, m.in_features, dtype=dtype, device=lm.device) for m in linears}
    with torch.inference_mode():
        for m in linears:  # warm-up
            m(inputs[m.in_features])
        best, passes = float("inf"), 0
        _sync(lm.device)
        began = time.perf_counter()
        while passes < 5 or time.perf_counter() - began < seconds:
            start = time.perf_counter()
            for m in linears:
                m(inputs[m.in_features])
            _sync(lm.device)
            best, passes = min(best, time.perf_counter() - start), passes + 1
        elapsed = time.perf_counter() - began
    return batch * passes / elapsed, batch / best


def attention_seconds(lm, batch: int, threads: int, positions: int, repeats: int = 3) -> float:
    """Seconds per step of attention alone (the two batched products and the softmax of every
    layer over a KV cache in the model's dtype, each layer its own cache, as the lmgc-llama-2
    engine computes them), averaged over a chunk of ``positions`` steps: its reads of the KV cache
    grow with the context and are no matmul against weights, so the matmul-only limit leaves
    them out."""
    import torch

    torch.set_num_threads(threads)
    config, dtype = lm.model.config, lm.model.dtype
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    layers, group = config.num_hidden_layers, heads // kv_heads
    samples = [max(1, int(positions * (i + 0.5) / 4)) for i in range(4)]
    query = torch.randn(batch, kv_heads, group, dim, device=lm.device).to(dtype)
    total = 0.0
    with torch.inference_mode():
        for length in samples:
            keys = [torch.randn(batch, kv_heads, length, dim, device=lm.device).to(dtype) for _ in range(layers)]
            values = [torch.randn(batch, kv_heads, length, dim, device=lm.device).to(dtype) for _ in range(layers)]
            best = float("inf")
            for _ in range(repeats):
                _sync(lm.device)
                start = time.perf_counter()
                for layer in range(layers):
                    scores = torch.matmul(query, keys[layer].transpose(2, 3)).float()
                    torch.matmul(torch.softmax(scores, dim=-1).to(dtype), values[layer])
                _sync(lm.device)
                best = min(best, time.perf_counter() - start)
            total += best
    return total / len(samples)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def coded(values: np.ndarray, dtype: str, batch: int | str, engine: str | None, device: str, threads: int) -> dict:
    """Encode + decode through the API; tokens are the container's coded symbols. The matmul-only
    limit is measured right after the encode and again right after the decode (this shared VM's
    speed drifts over minutes, so it is measured when the codec ran, not once)."""
    from lmgc.priors import LLMPrior
    from lmgc.serialize import Serialization

    lm = load_model(None, dtype=dtype, device=device)
    prior = LLMPrior(lm, Serialization.parse("hex-comma-be"), threads, engine)
    compressor = lmgc.Compressor(prior=prior, chunk_bytes=CHUNK_BYTES, batch_size=batch, device=device)
    start = time.perf_counter()
    blob = compressor.compress(values)
    encode_s = time.perf_counter() - start
    info = lmgc.read_container_info(blob)
    resolved = info["header"]["codec"]["batch_size"]
    limits = [matmul_limit(lm, resolved, threads)]
    decompressor = lmgc.Decompressor(model=compressor.prior.lm.spec)
    start = time.perf_counter()
    back = decompressor.decompress(blob)
    decode_s = time.perf_counter() - start
    limits.append(matmul_limit(lm, resolved, threads))
    if back.tobytes() != values.tobytes():
        raise SystemExit("decoded bytes differ from the original")
    tokens = sum(c["symbols"] for c in info["chunks"])
    return {"tokens": tokens, "bytes": values.nbytes, "encode_s": encode_s, "decode_s": decode_s,
            "rate_pct": 100 * len(blob) / values.nbytes, "engine": prior.engine, "resolved_batch": resolved,
            "limit_tok_s": sum(mean for mean, _ in limits) / 2, "peak_limit_tok_s": max(best for _, best in limits),
            "limits_tok_s": limits}  # fmt: skip


def run(settings: list[tuple[str, int | str, str | None]], n_chunks: int, device: str, threads: int,
        on_row=lambda rows: None) -> list[dict]:  # fmt: skip
    """Measure every setting; ``on_row(rows so far)`` after each (a cut-short run keeps its rows)."""
    values = sample(n_chunks)
    rows = []
    for dtype, batch, engine in settings:
        start = time.perf_counter()
        lm = load_model(None, dtype=dtype, device=device)
        load_s = time.perf_counter() - start
        result = coded(values, dtype, batch, engine, device, threads)
        limit = result["limit_tok_s"]
        attention = attention_seconds(lm, result["resolved_batch"], threads, result["tokens"] // n_chunks)
        with_attention = result["resolved_batch"] / (result["resolved_batch"] / limit + attention)
        roof = flop_roof(lm) if device.startswith("cuda") else None
        enc_tps, dec_tps = result["tokens"] / result["encode_s"], result["tokens"] / result["decode_s"]
        row = {"dtype": dtype, "batch": batch, "load_s": load_s, **result,
               "attention_s_per_step": attention, "limit_with_attention_tok_s": with_attention,
               "encode_tok_s": enc_tps, "decode_tok_s": dec_tps,
               "encode_ratio": enc_tps / limit, "decode_ratio": dec_tps / limit,
               "encode_ratio_attention": enc_tps / with_attention, "flop_roof_tok_s": roof,
               "encode_ratio_roof": roof and enc_tps / roof}  # fmt: skip
        print(f"{dtype} batch {batch} ({result['resolved_batch']}) {result['engine']}: encode {enc_tps:,.0f} tok/s, decode {dec_tps:,.0f} tok/s, "
              f"limit {limit:,.0f} tok/s, ratio {row['encode_ratio']:.2f} / {row['decode_ratio']:.2f}"
              + (f", FLOP roof {roof:,.0f} tok/s" if roof else ""), flush=True)  # fmt: skip
        rows.append(row)
        on_row(rows)
    return rows


def markdown(rows: list[dict], meta: dict) -> str:
    gpu = any(r["flop_roof_tok_s"] for r in rows)
    lines = [
        "# LLM codec speed vs the matmul-only limit",
        "",
        f"{meta['date']}, {meta['machine']}, device {meta['device']}, {meta['threads']} torch threads, "
        f"torch {meta['torch']}, load average {meta['load']} at the start. Model {meta['model']}, "
        f"`--prior llm`, chunks of {CHUNK_BYTES} B of the packaged ConvNet gradient "
        f"({meta['chunks']} chunks{meta.get('tiled', '')}), encoded, decoded and compared. Limit: the "
        "decoder blocks' linear layers alone at the same batch, dtype and threads, passes over all of them "
        "repeated for 3 s right after the encode and again right after the decode, the mean rate of both "
        "(the speed of this shared VM drifts over minutes, so the limit is measured when the codec ran); "
        "peak: the fastest single pass. Limit "
        "with attention: that plus attention alone over a KV cache in the model's dtype, averaged over a chunk's "
        "context lengths (best of 3 at four lengths)."
        + (" FLOP roof: the linear layers' FLOP per token at the rate of an 8192³ matrix product in "
           "the same dtype, measured in this run." if gpu else ""),
        "",
    ]
    if meta.get("gpu"):
        lines += [f"GPU: {meta['gpu']}.", ""]
    head = ("| engine | dtype | batch | tokens | encode tok/s | decode tok/s | limit tok/s | encode / limit | "
            "decode / limit | peak limit tok/s | limit with attention tok/s | encode / it | encode B/s | decode B/s | "
            "size % |")
    rule = "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    if gpu:
        head, rule = head + " FLOP roof tok/s | encode / roof |", rule + "---:|---:|"
    lines += [head, rule]
    for r in rows:
        batch = r["batch"] if r["batch"] != "auto" else f"auto → {r['resolved_batch']}"
        line = (
            f"| {r['engine']} | {r['dtype']} | {batch} | {r['tokens']:,} | {r['encode_tok_s']:,.0f} | "
            f"{r['decode_tok_s']:,.0f} | {r['limit_tok_s']:,.0f} | {r['encode_ratio']:.2f} | "
            f"{r['decode_ratio']:.2f} | {r['peak_limit_tok_s']:,.0f} | {r['limit_with_attention_tok_s']:,.0f} | "
            f"{r['encode_ratio_attention']:.2f} | {r['bytes'] / r['encode_s']:,.0f} | {r['bytes'] / r['decode_s']:,.0f} | "
            f"{r['rate_pct']:.2f} |"
        )
        if gpu:
            line += f" {r['flop_roof_tok_s']:,.0f} | {r['encode_ratio_roof']:.4f} |"
        lines.append(line)
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", help="comma-separated DTYPE:BATCH[:ENGINE] (default: "
                        "bfloat16:auto,float32:64,bfloat16:64:transformers; on a GPU bfloat16:auto,float32:auto)")
    parser.add_argument("--chunks", type=int, help="chunks of 256 B to code (default 64; on a GPU 2048)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--out", type=Path, help="table (default benchmarks/results/llm_speed.md, "
                        "on a GPU llm_speed_gpu.md; the rows also go to the .json beside it)")
    args = parser.parse_args()
    import torch

    gpu = args.device.startswith("cuda")
    args.settings = args.settings or ("bfloat16:auto,float32:auto" if gpu else
                                      "bfloat16:auto,float32:64,bfloat16:64:transformers")
    args.chunks = args.chunks or (2048 if gpu else 64)
    args.out = args.out or ROOT / "benchmarks/results" / ("llm_speed_gpu.md" if gpu else "llm_speed.md")

    settings = []
    for setting in args.settings.split(","):
        dtype, batch, *engine = setting.split(":")
        settings.append((dtype, batch if batch == "auto" else int(batch), engine[0] if engine else None))
    meta = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "device": args.device if not gpu else torch.cuda.get_device_name(args.device),
            "threads": args.threads, "torch": torch.__version__, "chunks": args.chunks,
            "load": f"{os.getloadavg()[0]:.1f}"}  # fmt: skip
    spec = default_model_spec()
    meta["model"] = "SmolLM2-135M (GGUF Q4_1 dequantized)" if spec == DEFAULT_MODEL else spec
    if args.chunks * CHUNK_BYTES > packaged_values().nbytes:
        meta["tiled"] = ", the gradient repeated"
    if gpu:
        env = lmgc.environment.environment(args.device)
        meta["gpu"] = ", ".join(f"{key} {env[key]}" for key in env if key not in ("numpy", "constriction"))

    def save(rows: list[dict]) -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(markdown(rows, meta))
        args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))

    print(markdown(run(settings, args.chunks, args.device, args.threads, save), meta))


if __name__ == "__main__":
    main()
