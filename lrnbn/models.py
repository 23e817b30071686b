"""The networks: an AlexNet-style CNN for 32x32 inputs and Caffe's cifar10_full, with one norm factory.

`model.norm` puts one of the normalizations of lrnbn.norms after the conv layers that `model.norm_at` names: where
the architecture had LRN, after every conv layer, or after a chosen few (the note's author: conv1, conv2, conv5). Norm
layers sit after the ReLU by default (AlexNet's order), so that the variants differ in that one layer and nothing
else. Each architecture registers in lrnbn.registry.ARCHITECTURES, which declares its name and help (`model.arch`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from lrnbn.errors import UserError
from lrnbn.norms import make_norm, norm_parameter_count
from lrnbn.registry import ARCHITECTURES

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


def norm_positions(cfg: ModelConfig, conv_layers: int, lrn_at: tuple[int, ...]) -> set[int]:
    """The 1-based conv layers that a norm follows (model.norm_at), checked against the architecture's count."""
    if cfg.norm_at == "lrn":
        return set(lrn_at)
    if cfg.norm_at == "every":
        return set(range(1, conv_layers + 1))
    beyond = [i for i in cfg.norm_at if i > conv_layers]
    if beyond:
        raise UserError(f"model.norm_at: {cfg.arch} has conv layers 1 to {conv_layers}, got {beyond[0]}")
    return set(cfg.norm_at)


def _scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


@ARCHITECTURES.register("alexnet")
def alexnet(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """AlexNet's layout shrunk for 32x32: conv 64-192-384-256-256 (5x5, 5x5, then 3x3), overlapping 3x3/2 max
    pools after conv1, conv2 and conv5, then three fully connected layers (1024-1024-classes) with dropout.
    Norm after the ReLU of conv1 and conv2, before their pools, as in the original."""
    c1, c2, c3, c4, c5 = (_scaled(c, cfg.width) for c in (64, 192, 384, 256, 256))
    hidden = _scaled(1024, cfg.width)
    at = norm_positions(cfg, conv_layers=5, lrn_at=(1, 2))

    def block(cin, cout, kernel, norm, pool):
        layers = [nn.Conv2d(cin, cout, kernel, padding=kernel // 2), *_relu_and_norm(cfg, cout, norm)]
        layers += [nn.MaxPool2d(3, stride=2, padding=1)] if pool else []
        return layers

    features = nn.Sequential(
        *block(3, c1, 5, norm=1 in at, pool=True),
        *block(c1, c2, 5, norm=2 in at, pool=True),
        *block(c2, c3, 3, norm=3 in at, pool=False),
        *block(c3, c4, 3, norm=4 in at, pool=False),
        *block(c4, c5, 3, norm=5 in at, pool=True),
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


@ARCHITECTURES.register("cifar-full")
def cifar_full(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """Caffe's examples/cifar10 `cifar10_full` (after cuda-convnet's '18% error' net): conv 32-32-64 5x5,
    pool 3x3/2 (max, then average; Caffe rounds pool output sizes up), norm after the first two pooling
    stages, one linear layer. Caffe's order is conv-pool-relu-norm for the first stage, conv-relu-pool-norm after."""
    c1, c2, c3 = (_scaled(c, cfg.width) for c in (32, 32, 64))
    at = norm_positions(cfg, conv_layers=3, lrn_at=(1, 2))

    def stage(index, cin, cout, pool):
        conv, norm = nn.Conv2d(cin, cout, 5, padding=2), index in at
        if index == 1:  # Caffe pools conv1's output before its ReLU
            return [conv, pool, *_relu_and_norm(cfg, cout, norm)]
        if cfg.norm_position == "before_relu":
            return [conv, *_relu_and_norm(cfg, cout, norm), pool]
        return [conv, nn.ReLU(inplace=True), pool, *([make_norm(cfg, cout)] if norm else [])]

    layers = [
        *stage(1, 3, c1, nn.MaxPool2d(3, stride=2, ceil_mode=True)),
        *stage(2, c1, c2, nn.AvgPool2d(3, stride=2, ceil_mode=True)),
        *stage(3, c2, c3, nn.AvgPool2d(3, stride=2, ceil_mode=True)),
    ]
    return nn.Sequential(
        nn.Sequential(*layers, nn.AdaptiveAvgPool2d(4)),
        nn.Sequential(nn.Flatten(), nn.Linear(c3 * 16, num_classes)),
    )


def build_model(cfg: ModelConfig, num_classes: int) -> nn.Module:
    return ARCHITECTURES[cfg.arch](cfg, num_classes)


def count_parameters(model: nn.Module) -> dict:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "norm_trainable": norm_parameter_count(model)}
