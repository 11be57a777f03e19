"""Where a step of the LLM codec's time goes: the model's forward, the output head and the copy of
its logits to the host, the float64 softmax, and the per-chunk range coding with the loop around it.

Encodes chunks of the packaged gradient in one lockstep batch (as ``llm_speed.py`` does) with
timers around each phase (a GPU is synchronised at each, so every phase is charged its own
kernels), then:
  - the milliseconds per step at batch 1 and at the batch, model step alone: where they are
    close, the step is bound by kernel launches and Python, not by arithmetic;
  - a step with 300 positions cached, as run and with attention's products and softmax replaced
    by zeros: what reading the KV cache costs a step at a chunk's typical context;
  - torch's profiler over a few steps: the operators by their own time on the device and on the
    host, and kernel launches per step.
The coded bytes are the codec's own (the timers only wrap), so the round trip is not repeated.

Run:  .venv/bin/python benchmarks/llm_profile.py [--device cuda] [--dtype bfloat16] [--batch auto]
          [--chunks N] [--model SPEC] [--out benchmarks/results/llm_profile.md]
A model of the same shape with random weights profiles the same as the real one (``--model DIR``
with a Hugging Face directory), since no step's work depends on the weights' values.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

import lmgc
from lmgc.config import default_threads
from lmgc.models import load_model
from lmgc.priors import LLMPrior, llama_step, llm_engine
from lmgc.serialize import Serialization

from llm_speed import CHUNK_BYTES, sample

ROOT = Path(__file__).resolve().parent.parent


class PhaseTimer:
    """Seconds per phase, a phase's device work synchronised before its clock stops."""

    def __init__(self, device: str) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._gpu = device.startswith("cuda")

    def sync(self) -> None:
        if self._gpu:
            import torch

            torch.cuda.synchronize()

    def wrap(self, owner, name: str, phase: str, stack: contextlib.ExitStack) -> None:
        """Replace ``owner.name`` by a timed call for as long as ``stack`` is open."""
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            self.sync()
            start = time.perf_counter()
            result = original(*args, **kwargs)
            self.sync()
            self.seconds[phase] += time.perf_counter() - start
            self.calls[phase] += 1
            return result

        setattr(owner, name, timed)
        stack.callback(setattr, owner, name, original)


def phases(prior: LLMPrior, values: np.ndarray, batch, device: str) -> tuple[dict, dict, float, int, int]:
    """Encode ``values`` with every phase timed; (seconds, calls, total, symbols, resolved batch)."""
    timer = PhaseTimer(device)
    with contextlib.ExitStack() as stack:
        timer.wrap(llm_engine.LLMSession, "step", "step (all model-side work)", stack)
        timer.wrap(llama_step.LlamaStepper, "hidden", "forward (embedding, 30 blocks, norm)", stack)
        timer.wrap(llm_engine.RestrictedHead, "project", "output head + logits to host", stack)
        timer.wrap(llm_engine, "softmax", "float64 softmax", stack)
        compressor = lmgc.Compressor(prior=prior, chunk_bytes=CHUNK_BYTES, batch_size=batch, device=device)
        start = time.perf_counter()
        blob = compressor.compress(values)
        total = time.perf_counter() - start
    info = lmgc.read_container_info(blob)
    symbols = sum(c["symbols"] for c in info["chunks"])
    return dict(timer.seconds), dict(timer.calls), total, symbols, info["header"]["codec"]["batch_size"]


def step_ms(prior: LLMPrior, batch: int, steps: int = 32) -> float:
    """Milliseconds per model step (from BOS, fixed symbols) at ``batch``, after 4 warm-up steps."""
    timer = PhaseTimer(prior.lm.device)
    session = llm_engine.LLMSession(prior, [steps + 8] * batch, lambda t: (), steps + 8)
    symbols = None
    for t in range(steps + 4):
        if t == 4:
            timer.sync()
            start = time.perf_counter()
        session.step(symbols)
        symbols = (np.arange(batch) * 7 + t) % prior.alphabet_size
    timer.sync()
    return 1000 * (time.perf_counter() - start) / steps


#: Positions cached when attention's cost per step is timed: about a 256-B chunk's mean context.
ATTENTION_POSITIONS = 300


def attention_ms(prior: LLMPrior, batch: int, positions: int = ATTENTION_POSITIONS,
                 steps: int = 8) -> tuple[float, float] | None:  # fmt: skip
    """Milliseconds per model step with ``positions`` positions cached (filled by one forward), as
    the engine runs it and with attention's products and softmax replaced by zeros of their
    shape: the difference is what attention costs a step there (best of 3 runs of ``steps``).
    None for the ``transformers`` engine, which has no stepper of lmgc's."""
    import torch

    if prior.engine not in llm_engine.STEPPERS:
        return None
    timer = PhaseTimer(prior.lm.device)
    ids = torch.full((batch, 1), int(prior.token_ids[1]), device=prior.lm.device)
    times = []
    for stubbed in (False, True):
        stepper = llm_engine.STEPPERS[prior.engine](prior.fused_model(), batch, positions + 1)
        stepper.hidden(ids.expand(batch, positions).contiguous())
        if stubbed:
            stepper._attend = lambda index, grouped, end, mask: torch.zeros_like(grouped)
        best = float("inf")
        for _ in range(3):
            timer.sync()
            start = time.perf_counter()
            for _ in range(steps):
                stepper.hidden(ids)
                stepper._filled = positions
            timer.sync()
            best = min(best, time.perf_counter() - start)
        times.append(1000 * best / steps)
        del stepper  # one cache at a time (on a GPU's batch, tens of GB)
    return times[0], times[1]


def profile_table(prior: LLMPrior, batch: int, steps: int = 12, rows: int = 15) -> str:
    """torch's profiler over ``steps`` model steps: operators by own time, launches per step."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    gpu = prior.lm.device.startswith("cuda")
    session = llm_engine.LLMSession(prior, [64] * batch, lambda t: (), 64)
    symbols = None
    for t in range(4):  # warm-up (prompt shape, first allocations)
        session.step(symbols)
        symbols = (np.arange(batch) * 7 + t) % prior.alphabet_size
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
    with profile(activities=activities) as prof:
        for t in range(steps):
            session.step(symbols)
            symbols = (np.arange(batch) * 7 + t) % prior.alphabet_size
        if gpu:
            torch.cuda.synchronize()
    events = prof.key_averages()
    launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC"))
    sort = "self_cuda_time_total" if gpu else "self_cpu_time_total"
    text = events.table(sort_by=sort, row_limit=rows)
    return (f"{steps} steps at batch {batch}; kernel launches per step: {launches / steps:.0f}\n\n"
            f"```\n{text}\n```\n")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--batch", default="auto", help="chunks in lockstep, or auto")
    parser.add_argument("--chunks", type=int, help="chunks of 256 B (default: one batch; 64 on a CPU, 1294 on a GPU)")
    parser.add_argument("--model", help="model spec (default: the embedded SmolLM2-135M)")
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--out", type=Path, help="default benchmarks/results/llm_profile[_gpu].md")
    args = parser.parse_args()
    import torch

    gpu = args.device.startswith("cuda")
    chunks = args.chunks or (1294 if gpu else 64)
    batch = args.batch if args.batch == "auto" else int(args.batch)
    out = args.out or ROOT / "benchmarks/results" / ("llm_profile_gpu.md" if gpu else "llm_profile.md")
    lm = load_model(args.model, dtype=args.dtype, device=args.device)
    prior = LLMPrior(lm, Serialization.parse("hex-comma-be"), args.threads)
    seconds, calls, total, symbols, resolved = phases(prior, sample(chunks), batch, args.device)
    steps = calls["step (all model-side work)"]
    step_total = seconds.pop("step (all model-side work)")
    rows = [(name, s) for name, s in seconds.items()]
    rows.append(("rest of the model step (inputs to the device, slicing)", step_total - sum(s for _, s in rows)))
    rows.append(("range coding and the codec's loop (host)", total - step_total))
    device = torch.cuda.get_device_name(args.device) if gpu else f"cpu, {args.threads} threads"
    lines = [
        "# Where an LLM codec step's time goes",
        "",
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}, {device}, torch {torch.__version__}, model "
        f"{lm.spec} in {args.dtype}, engine {prior.engine}, {chunks} chunks of {CHUNK_BYTES} B encoded at "
        f"batch {resolved} ({steps} steps, {symbols:,} symbols, {symbols / total:,.0f} tokens/s, "
        f"{total:.1f} s). Each phase is synchronised with the device before its clock stops.",
        "",
        "| phase | s | ms per step | share |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {name} | {s:.2f} | {1000 * s / steps:.2f} | {100 * s / total:.0f}% |" for name, s in rows]
    small, large = step_ms(prior, 1), step_ms(prior, resolved)
    lines += ["", f"Model step alone (from BOS, 32 steps after 4 warm-up): {small:.2f} ms at batch 1, "
              f"{large:.2f} ms at batch {resolved}."]  # fmt: skip
    attention = attention_ms(prior, resolved)
    if attention:
        lines += ["", f"With {ATTENTION_POSITIONS} positions cached, batch {resolved}: {attention[0]:.2f} ms per model step, "
                  f"{attention[1]:.2f} ms with attention's products and softmax replaced by zeros "
                  f"(attention: {attention[0] - attention[1]:.2f} ms a step)."]  # fmt: skip
    lines += ["", "## torch profiler", "", profile_table(prior, resolved)]
    text = "\n".join(lines)
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    main()
