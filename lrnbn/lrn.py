"""Local Response Normalization: the one factory every model uses to build an LRN layer from config.

region across: torch's `nn.LocalResponseNorm` (PyTorch convention: alpha is divided by size; the window holds
size // 2 channels before and (size - 1) // 2 after). region within: Caffe's WITHIN_CHANNEL LRN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lrnbn.config import LRNConfig


class WithinChannelLRN(nn.Module):
    """Caffe's WITHIN_CHANNEL LRN: b = a / (1 + alpha / n^2 * sum of a^2 over an n x n window of the same channel)^beta.

    Caffe computes it with an average pool over the padded squares; counting the padding matches its divisor
    of n^2 (its pool clips the window to the padded input, which for stride 1 and pad (n-1)/2 is always n^2).
    """

    def __init__(self, size: int, alpha: float, beta: float):
        super().__init__()
        if size % 2 == 0:
            raise ValueError(f"within-channel LRN needs an odd size, got {size}")
        self.size, self.alpha, self.beta = size, alpha, beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean_sq = F.avg_pool2d(x * x, self.size, stride=1, padding=self.size // 2, count_include_pad=True)
        return x / (1 + self.alpha * mean_sq).pow(self.beta)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}"


def make_lrn(cfg: LRNConfig) -> nn.Module:
    if cfg.region == "within":
        return WithinChannelLRN(cfg.size, cfg.alpha, cfg.beta)
    return nn.LocalResponseNorm(cfg.size, alpha=cfg.alpha, beta=cfg.beta, k=cfg.k)
