"""The normalizations a model can put at its norm positions, by name (`model.norm`), and how to count them.

Each builder registered in NORMS makes the layer for one position from the model config and the channel count;
lrnbn.registry declares its name, its help text and the config keys it alone reads. Every layer sits in a NormSlot,
so the probes and the parameter count find each position whatever fills it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from lrnbn.lrn import LRN
from lrnbn.registry import NORMS

if TYPE_CHECKING:
    from lrnbn.config import ModelConfig


class NormSlot(nn.Module):
    """A normalization position, holding BN, LRN or nothing."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


@NORMS.register("bn")
def batch_norm(cfg: ModelConfig, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels, affine=cfg.norm_affine)


@NORMS.register("gn")
def group_norm(cfg: ModelConfig, channels: int) -> nn.Module:
    return nn.GroupNorm(groups_for(channels, cfg.gn_groups), channels, affine=cfg.norm_affine)


@NORMS.register("ln")
def layer_norm(cfg: ModelConfig, channels: int) -> nn.Module:
    # GroupNorm with one group: LayerNorm's statistics with a per-channel (not per-element) scale and shift.
    return nn.GroupNorm(1, channels, affine=cfg.norm_affine)


def groups_for(channels: int, wanted: int) -> int:
    """The largest divisor of `channels` not above `wanted`: GroupNorm needs groups that divide the channels."""
    return max(g for g in range(1, min(wanted, channels) + 1) if channels % g == 0)


@NORMS.register("lrn")
def local_response_norm(cfg: ModelConfig, channels: int) -> nn.Module:
    lrn = cfg.lrn
    return LRN(
        lrn.size,
        lrn.alpha,
        lrn.beta,
        lrn.k,
        convention=lrn.convention,
        region=lrn.region,
        impl=lrn.impl,
        learnable=lrn.learnable,
    )


@NORMS.register("none")
def no_norm(cfg: ModelConfig, channels: int) -> nn.Module:
    return nn.Identity()


def make_norm(cfg: ModelConfig, channels: int) -> NormSlot:
    return NormSlot(NORMS[cfg.norm](cfg, channels))


def norm_parameter_count(model: nn.Module) -> int:
    """Trainable parameters of the normalization layers (C1's evidence), whatever the layer's class: a BN turned
    into SyncBatchNorm under torchrun counts the same."""
    return sum(
        p.numel()
        for slot in model.modules()
        if isinstance(slot, NormSlot)
        for p in slot.parameters()
        if p.requires_grad
    )
