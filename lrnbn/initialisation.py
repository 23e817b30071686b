"""Initial weights and biases, by name (`model.init`): PyTorch's default, Caffe's gaussian filler, the AlexNet
paper's, and Keras's glorot-uniform.

Each builder registered in INITS fills the conv and linear layers of a freshly built model in place; lrnbn.registry
declares its name and its help text (`model.init`). Per-layer values (`model.init_std`, `model.init_bias`) count the
conv and linear layers in model order, as `weight_layers` lists them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from lrnbn.registry import INITS

if TYPE_CHECKING:
    from lrnbn.config import ModelConfig

ALEXNET_PAPER_STD = 0.01  # Krizhevsky et al. 2012, section 5: "a zero-mean Gaussian distribution with std 0.01"
ALEXNET_PAPER_BIAS_ONE_CONVS = (2, 4, 5)  # ... "biases in the second, fourth, and fifth convolutional layers" = 1


def weight_layers(model: nn.Module) -> list[nn.Module]:
    """The conv and linear layers in model order: what per-layer keys (init_std, init_bias, decay_mult) count."""
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def alexnet_paper_biases(layers: list[nn.Module]) -> list[float]:
    """The paper's bias constants for any conv/linear stack: 1 on the 2nd, 4th and 5th conv layers and on the hidden
    fully connected layers, 0 on the other conv layers and on the output layer ("the remaining layers")."""
    convs = [i for i, layer in enumerate(layers) if isinstance(layer, nn.Conv2d)]
    linears = [i for i, layer in enumerate(layers) if isinstance(layer, nn.Linear)]
    ones = {convs[n - 1] for n in ALEXNET_PAPER_BIAS_ONE_CONVS if n <= len(convs)} | set(linears[:-1])
    return [1.0 if i in ones else 0.0 for i in range(len(layers))]


@torch.no_grad()
def _gaussian(layers: list[nn.Module], stds: list[float], biases: list[float]) -> None:
    for layer, std, bias in zip(layers, stds, biases):
        nn.init.normal_(layer.weight, 0.0, std)
        if layer.bias is not None:
            nn.init.constant_(layer.bias, bias)


@INITS.register("pytorch")
def pytorch_default(cfg: ModelConfig, layers: list[nn.Module]) -> None:
    """Nothing to do: nn.Conv2d and nn.Linear initialise themselves so when they are built."""


@INITS.register("gaussian")
def gaussian(cfg: ModelConfig, layers: list[nn.Module]) -> None:
    _gaussian(layers, cfg.init_std, cfg.init_bias or [0.0] * len(layers))


@INITS.register("alexnet-paper")
def alexnet_paper(cfg: ModelConfig, layers: list[nn.Module]) -> None:
    stds = cfg.init_std or [ALEXNET_PAPER_STD] * len(layers)
    _gaussian(layers, stds, cfg.init_bias or alexnet_paper_biases(layers))


@INITS.register("glorot-uniform")
@torch.no_grad()
def glorot_uniform(cfg: ModelConfig, layers: list[nn.Module]) -> None:
    for layer in layers:
        nn.init.xavier_uniform_(layer.weight)  # the same fans as Keras: channels times the kernel's area
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)


def initialise(model: nn.Module, cfg: ModelConfig) -> None:
    INITS[cfg.init](cfg, weight_layers(model))
