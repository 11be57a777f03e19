"""What ``lmgc collect`` accepts, without importing torch: architectures, datasets, file formats.

Command-line parsers offer these as choices at start-up; the modules that train and load import them
from here, so each name is written once.
"""

from __future__ import annotations

__all__ = ["ARCH_NAMES", "DEFAULT_WIDTHS", "DATASET_NAMES", "SYNTHETIC_LIKE", "FORMATS"]

ARCH_NAMES = ("convnet", "vgg16", "resnet18", "vit")
#: The paper's width of each architecture (ConvNet channels, base width of the others).
DEFAULT_WIDTHS = {"convnet": 128, "vgg16": 64, "resnet18": 64, "vit": 256}
DATASET_NAMES = ("mnist", "fashion-mnist", "cifar10", "tinyimagenet", "synthetic")
#: Datasets whose image shape and class count ``--dataset synthetic`` can mimic.
SYNTHETIC_LIKE = ("mnist", "cifar10")
#: Gradient file formats ``collect_gradients`` writes.
FORMATS = ("pt", "safetensors", "both")
