"""What ``lmgc experiments`` measures: the training runs, the LLM windows, the sections.

:func:`build_plan` makes the two presets: ``quick`` (small models, a few checkpoints, LLM figures on
two 512-byte windows; ≤ 30 min on 2 CPU cores) and the full one (the paper's sizes, for a GPU).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..collect.names import ARCH_NAMES, DATASET_NAMES
from ..errors import DatasetNotFoundError, InputError
from ..serialize import DEFAULT_SERIALIZATION
from .bench import CHUNK_BYTES

__all__ = [
    "CLASSICAL_CODECS",
    "OWN_MODES",
    "PAPER_SERIALIZATIONS",
    "ABLATION_BYTE_ORDERS",
    "ESTIMATE_ONLY",
    "SECTIONS",
    "Plan",
    "Run",
    "Sample",
    "build_plan",
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
