"""The networks: an AlexNet-style CNN for 32x32 inputs and Caffe's cifar10_full, with one norm factory.

`model.norm` puts one of lrnbn.norms.NORMS at the positions where the architecture had LRN; `norm_after_every_conv`
adds it after the remaining conv layers too. Norm layers sit after the ReLU (AlexNet's order), so that the three
variants differ in that one layer and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from torch import nn

from lrnbn.norms import make_norm, norm_parameter_count

if TYPE_CHECKING:
    from lrnbn.config import ModelConfig


def _relu_and_norm(cfg: ModelConfig, channels: int, norm: bool) -> list[nn.Module]:
    """The ReLU and, where the architecture has a norm, the norm after it (AlexNet's order) or before it (the BN
    paper's), per model.norm_position."""
    if not norm:
        return [nn.ReLU(inplace=True)]
    if cfg.norm_position == "before_relu":
        return [make_norm(cfg, channels), nn.ReLU(inplace=True)]
    return [nn.ReLU(inplace=True), make_norm(cfg, channels)]


def _scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


def alexnet(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """5 conv + 3 fully connected layers with dropout (AlexNet's layout for 32x32 inputs).

    AlexNet's layout shrunk for 32x32: conv 64-192-384-256-256 (5x5, 5x5, then 3x3), overlapping 3x3/2 max
    pools after conv1, conv2 and conv5, then three fully connected layers (1024-1024-classes) with dropout.
    Norm after the ReLU of conv1 and conv2, before their pools, as in the original."""
    c1, c2, c3, c4, c5 = (_scaled(c, cfg.width) for c in (64, 192, 384, 256, 256))
    hidden = _scaled(1024, cfg.width)
    every = cfg.norm_after_every_conv

    def block(cin, cout, kernel, norm, pool):
        layers = [nn.Conv2d(cin, cout, kernel, padding=kernel // 2), *_relu_and_norm(cfg, cout, norm)]
        layers += [nn.MaxPool2d(3, stride=2, padding=1)] if pool else []
        return layers

    features = nn.Sequential(
        *block(3, c1, 5, norm=True, pool=True),
        *block(c1, c2, 5, norm=True, pool=True),
        *block(c2, c3, 3, norm=every, pool=False),
        *block(c3, c4, 3, norm=every, pool=False),
        *block(c4, c5, 3, norm=every, pool=True),
        nn.AdaptiveAvgPool2d(4),  # identity for 32x32 inputs; lets other image sizes through
    )
    classifier = nn.Sequential(
        nn.Flatten(),
        nn.Dropout(cfg.dropout),
        nn.Linear(c5 * 16, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(cfg.dropout),
        nn.Linear(hidden, hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, num_classes),
    )
    return nn.Sequential(features, classifier)


def cifar_full(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """Caffe's cifar10_full (cuda-convnet's '18% error' net).

    Caffe's examples/cifar10 `cifar10_full` (after cuda-convnet's '18% error' net): conv 32-32-64 5x5,
    pool 3x3/2 (max, then average; Caffe rounds pool output sizes up), norm after the first two pooling
    stages, one linear layer. Caffe's order is conv-pool-relu-norm for the first stage, conv-relu-pool-norm after."""
    c1, c2, c3 = (_scaled(c, cfg.width) for c in (32, 32, 64))
    every = cfg.norm_after_every_conv
    if cfg.norm_position == "before_relu":  # each norm moves to just before its stage's ReLU
        stages = [
            [nn.Conv2d(3, c1, 5, padding=2), nn.MaxPool2d(3, stride=2, ceil_mode=True), *_relu_and_norm(cfg, c1, True)],
            [
                nn.Conv2d(c1, c2, 5, padding=2),
                *_relu_and_norm(cfg, c2, True),
                nn.AvgPool2d(3, stride=2, ceil_mode=True),
            ],
            [
                nn.Conv2d(c2, c3, 5, padding=2),
                *_relu_and_norm(cfg, c3, every),
                nn.AvgPool2d(3, stride=2, ceil_mode=True),
            ],
        ]
    else:
        stages = [
            [
                nn.Conv2d(3, c1, 5, padding=2),
                nn.MaxPool2d(3, stride=2, ceil_mode=True),
                nn.ReLU(inplace=True),
                make_norm(cfg, c1),
            ],
            [
                nn.Conv2d(c1, c2, 5, padding=2),
                nn.ReLU(inplace=True),
                nn.AvgPool2d(3, stride=2, ceil_mode=True),
                make_norm(cfg, c2),
            ],
            [
                nn.Conv2d(c2, c3, 5, padding=2),
                nn.ReLU(inplace=True),
                nn.AvgPool2d(3, stride=2, ceil_mode=True),
                *([make_norm(cfg, c3)] if every else []),
            ],
        ]
    return nn.Sequential(
        nn.Sequential(*(layer for stage in stages for layer in stage), nn.AdaptiveAvgPool2d(4)),
        nn.Sequential(nn.Flatten(), nn.Linear(c3 * 16, num_classes)),
    )


ARCHITECTURES: dict[str, Callable[[ModelConfig, int], nn.Module]] = {"alexnet": alexnet, "cifar-full": cifar_full}


def build_model(cfg: ModelConfig, num_classes: int) -> nn.Module:
    return ARCHITECTURES[cfg.arch](cfg, num_classes)


def count_parameters(model: nn.Module) -> dict:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "norm_trainable": norm_parameter_count(model)}
