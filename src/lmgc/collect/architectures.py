"""The four architectures of the LM-GC paper, in plain torch (no torchvision), sized per dataset.

ConvNet and ResNet-18 use GroupNorm (per-sample statistics), VGG-16 uses BatchNorm as in the paper;
ViT is a small pre-norm transformer with explicit attention (deterministic on CPU).
``width`` scales each model's base width so tests can run reduced models; defaults are the paper's.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lmgc.collect.names import ARCH_NAMES, DEFAULT_WIDTHS
from lmgc.errors import InputError

__all__ = ["ARCH_NAMES", "DEFAULT_WIDTHS", "ConvNet", "VGG16", "ResNet18", "ViT", "build_model"]


class ConvNet(nn.Module):
    """``depth`` x [conv3x3 -> instance norm (GroupNorm, one group per channel) -> ReLU -> avgpool 2x2] -> linear."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int, width: int = 128, depth: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        channels, size = in_channels, image_size
        for _ in range(depth):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.GroupNorm(width, width, affine=True),
                       nn.ReLU(inplace=True), nn.AvgPool2d(2)]
            channels, size = width, size // 2
        if size < 1:
            raise InputError(f"ConvNet depth {depth} pools a {image_size}px image below 1px; lower the depth")
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width * size * size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


_VGG16_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG16(nn.Module):
    """CIFAR-style VGG-16 with batch norm and a single linear classifier.

    Max-pools use ``ceil_mode`` so 28px inputs reach 1x1 after five pools (28-14-7-4-2-1); for 32px
    inputs this is identical to the usual floor mode.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 64):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for item in _VGG16_CONFIG:
            if item == "M":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            else:
                out = item * width // 64
                layers += [nn.Conv2d(channels, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
                channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def _group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups (Wu & He's default), fewer when a reduced width has fewer channels."""
    return nn.GroupNorm(math.gcd(32, channels), channels)


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs) with GroupNorm and a 1x1 projection shortcut when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.norm1 = _group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.norm2 = _group_norm(out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                          _group_norm(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR-style ResNet-18: 3x3 stem without max-pool, stages [2, 2, 2, 2], GroupNorm instead of BatchNorm."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.norm1 = _group_norm(width)
        stages, channels = [], width
        for i, stride in enumerate((1, 2, 2, 2)):
            out = width * 2**i
            stages.append(nn.Sequential(BasicBlock(channels, out, stride), BasicBlock(out, out, 1)))
            channels = out
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.norm1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(torch.flatten(self.pool(out), 1))


class Attention(nn.Module):
    """Multi-head self-attention written out (softmax(QK^T/sqrt(d))V) so CPU results are deterministic."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise InputError(f"ViT width {dim} is not divisible by {heads} heads; use a multiple of {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // self.heads), dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attn(LN(x)); x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """Small ViT for 28/32px images: patch embedding, class token, learned positions, ``depth`` blocks."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int, width: int = 256, depth: int = 8,
                 heads: int = 8, patch_size: int = 2, mlp_ratio: int = 2):
        super().__init__()
        if image_size % patch_size:
            raise InputError(f"ViT patch size {patch_size} does not divide the image size {image_size}")
        tokens = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(in_channels, width, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.empty(1, tokens + 1, width))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.blocks = nn.Sequential(*(TransformerBlock(width, heads, mlp_ratio * width) for _ in range(depth)))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


def build_model(arch: str, in_channels: int, num_classes: int, image_size: int, width: int | None = None) -> nn.Module:
    """Instantiate ``arch`` for the given input; ``width`` None means the paper's default for that arch."""
    if arch not in ARCH_NAMES:
        raise InputError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCH_NAMES)}")
    width = DEFAULT_WIDTHS[arch] if width is None else width
    if width < 1:
        raise InputError(f"width must be positive, got {width}")
    if arch == "convnet":
        return ConvNet(in_channels, num_classes, image_size, width=width)
    if arch == "vgg16":
        return VGG16(in_channels, num_classes, width=width)
    if arch == "resnet18":
        return ResNet18(in_channels, num_classes, width=width)
    return ViT(in_channels, num_classes, image_size, width=width)
