"""Train a model with the LM-GC paper's recipe and save its raw gradients every K steps.

Recipe: SGD (lr 0.1, momentum 0.9, weight decay 5e-4), batch 128, cosine schedule with T_max = steps.
The gradient saved at step ``s`` is ``p.grad`` right after ``backward()`` on the (s+1)-th batch and
before ``optimizer.step()``, i.e. after ``s`` updates; step 0 is the gradient at initialization. It is
the pure loss gradient: SGD adds weight decay inside ``step()``, not to ``p.grad``.
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lmgc.collect.architectures import build_model
from lmgc.collect.datasets import batch_indices, load_dataset
from lmgc.collect.names import ARCH_NAMES, DATASET_NAMES, DEFAULT_WIDTHS, FORMATS
from lmgc.errors import InputError, OutputExistsError

__all__ = ["FORMATS", "collect_gradients", "gradient_filename", "load_gradients", "planned_steps"]

SIDECAR_VERSION = 1


def gradient_filename(step: int, ext: str) -> str:
    """``grad_step000400.<ext>``: zero-padded so files sort by step."""
    return f"grad_step{step:06d}.{ext}"


def planned_steps(steps: int, every: int) -> list[int]:
    """Steps whose gradient is saved: 0, K, 2K, ... below ``steps``."""
    return list(range(0, steps, every))


@contextmanager
def _seeded_deterministic(seed: int, device: torch.device):
    """Seed torch and enable deterministic kernels for the run, restoring the caller's RNG and settings."""
    was_enabled = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cuda_devices = [device.index or 0] if device.type == "cuda" else []
    if device.type == "cuda":  # cuBLAS needs a fixed workspace to be deterministic.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        # warn_only: an op without a deterministic kernel warns instead of aborting a long run.
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(was_enabled, warn_only=was_warn_only)


def _validate(arch: str, dataset: str, steps: int, every: int, batch_size: int, fmt: str) -> None:
    if arch not in ARCH_NAMES:
        raise InputError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCH_NAMES)}")
    if dataset not in DATASET_NAMES:
        raise InputError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASET_NAMES)}")
    for name, value in (("steps", steps), ("every", every), ("batch_size", batch_size)):
        if not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")
    if fmt not in FORMATS:
        raise InputError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")


def _selected_names(model: nn.Module, include: str | None) -> list[str]:
    names = [name for name, _ in model.named_parameters()]
    if include is None:
        return names
    try:
        pattern = re.compile(include)
    except re.error as exc:
        raise InputError(f"--include {include!r} is not a valid regular expression ({exc})") from None
    selected = [n for n in names if pattern.search(n)]
    if not selected:
        raise InputError(f"--include {include!r} matches no parameter; names look like {', '.join(names[:4])}, ...")
    return selected


def _save_checkpoint(grads: dict[str, torch.Tensor], out_dir: Path, step: int, fmt: str,
                     sidecar: dict) -> list[Path]:
    """Write the gradient file(s) and the JSON sidecar; return the gradient file paths."""
    written = []
    if fmt in ("pt", "both"):
        path = out_dir / gradient_filename(step, "pt")
        torch.save(grads, path)  # dict keeps named_parameters() order
        written.append(path)
    if fmt in ("safetensors", "both"):
        from safetensors.torch import save_file

        path = out_dir / gradient_filename(step, "safetensors")
        # safetensors stores tensors sorted, not in insertion order: keep the order in the metadata.
        # One key only: safetensors writes metadata in hash-map order, so several keys make files differ
        # byte-wise between identical runs.
        save_file(grads, str(path), metadata={"param_order": json.dumps(list(grads))})
        written.append(path)
    sidecar = dict(sidecar, files=[p.name for p in written])
    (out_dir / gradient_filename(step, "json")).write_text(json.dumps(sidecar, indent=2) + "\n")
    return written


def load_gradients(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a gradient checkpoint written by :func:`collect_gradients`, in ``named_parameters()`` order."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            order = json.loads((fh.metadata() or {}).get("param_order", "null")) or list(fh.keys())
            return {name: fh.get_tensor(name) for name in order}
    if path.suffix == ".pt":
        return dict(torch.load(path, map_location="cpu", weights_only=True))
    raise InputError(f"{path}: expected a .safetensors or .pt gradient file")


def collect_gradients(arch: str, dataset: str, steps: int, every: int, seed: int = 0,
                      out_dir: str | os.PathLike = "grads", *, data_dir: str | os.PathLike | None = None,
                      width: int | None = None, batch_size: int = 128, fmt: str = "safetensors",
                      lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 5e-4,
                      synthetic_like: str = "cifar10", include: str | None = None, overwrite: bool = False,
                      progress: bool = True, device: str = "cpu") -> list[Path]:
    """Train ``arch`` on ``dataset`` for ``steps`` steps, saving gradients at steps 0, K, 2K, ...

    Returns the gradient files written (one or two per checkpoint, per ``fmt``); each has a
    ``grad_stepNNNNNN.json`` sidecar. Bit-identical across runs with the same arguments on the same
    machine and thread count.
    """
    from tqdm import tqdm

    _validate(arch, dataset, steps, every, batch_size, fmt)
    out_dir = Path(out_dir).expanduser()
    save_steps = planned_steps(steps, every)
    exts = {"pt": ["pt"], "safetensors": ["safetensors"], "both": ["pt", "safetensors"]}[fmt] + ["json"]
    existing = [out_dir / gradient_filename(s, e) for s in save_steps for e in exts
                if (out_dir / gradient_filename(s, e)).exists()]
    if existing and not overwrite:
        raise OutputExistsError(f"{existing[0]} already exists ({len(existing)} planned output files do); "
                                "choose another --out or pass --overwrite")
    try:
        torch_device = torch.device(device)
    except RuntimeError as exc:
        raise InputError(f"invalid device {device!r} ({exc})") from None
    if torch_device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available; use --device cpu")

    data = load_dataset(dataset, data_dir, "train", synthetic_like=synthetic_like)
    spec = data.spec
    written: list[Path] = []
    with _seeded_deterministic(seed, torch_device):
        model = build_model(arch, spec.channels, spec.num_classes, spec.image_size, width).to(torch_device)
        names = _selected_names(model, include)
        params = dict(model.named_parameters())
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        batches = batch_indices(len(data), batch_size, seed)
        base_sidecar = {
            "sidecar_version": SIDECAR_VERSION, "arch": arch, "dataset": dataset,
            "synthetic_like": synthetic_like if dataset == "synthetic" else None,
            "width": DEFAULT_WIDTHS[arch] if width is None else width, "seed": seed,
            "steps_total": steps, "every": every, "batch_size": batch_size, "optimizer": "SGD", "lr": lr,
            "momentum": momentum, "weight_decay": weight_decay, "schedule": "cosine", "t_max": steps,
            "num_classes": spec.num_classes, "input_shape": [spec.channels, spec.image_size, spec.image_size],
            "normalization": {"mean": list(spec.mean), "std": list(spec.std)},
            "dataset_size": len(data), "device": str(torch_device),
            "torch_version": torch.__version__, "numpy_version": np.__version__,
            "python_version": platform.python_version(), "torch_num_threads": torch.get_num_threads(),
            "deterministic_algorithms": True, "data_order_seed": seed, "include": include,
            "params": [{"name": n, "shape": list(params[n].shape)} for n in names],
            "num_params": sum(params[n].numel() for n in names),
            "num_params_model": sum(p.numel() for p in params.values()),
        }
        model.train()
        loss_fn = nn.CrossEntropyLoss()
        bar = tqdm(total=steps, desc=f"{arch}/{dataset}", unit="step", file=sys.stderr, disable=not progress)
        for step in range(steps):
            x, y = data.batch(next(batches))
            x, y = x.to(torch_device), y.to(torch_device)
            optimizer.zero_grad(set_to_none=True)
            logits = model(x)
            loss = loss_fn(logits, y)
            loss.backward()
            loss_value = float(loss.item())
            accuracy = float((logits.detach().argmax(1) == y).float().mean().item())
            if step % every == 0:
                grads = {n: (params[n].grad if params[n].grad is not None else torch.zeros_like(params[n]))
                         .detach().to("cpu", torch.float32).clone().contiguous() for n in names}
                zeros = sum(int((g == 0).sum()) for g in grads.values())
                sidecar = dict(base_sidecar, step=step, loss=loss_value, accuracy=accuracy,
                               lr_at_step=optimizer.param_groups[0]["lr"],
                               zero_fraction=zeros / max(1, base_sidecar["num_params"]))
                out_dir.mkdir(parents=True, exist_ok=True)
                written += _save_checkpoint(grads, out_dir, step, fmt, sidecar)
            optimizer.step()
            scheduler.step()
            bar.set_postfix(loss=f"{loss_value:.4f}", acc=f"{accuracy:.3f}", refresh=False)
            bar.update(1)
        bar.close()
    return written
