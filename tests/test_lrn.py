"""The LRN layers against float64 references written from the documented formulas (LRN-CONVENTIONS.md),
with explicit loops: nothing here calls the code under test to build the expected values."""

import numpy as np
import pytest
import torch

from lrnbn.config import LRNConfig
from lrnbn.lrn import make_lrn


def across_reference(a: np.ndarray, size: int, alpha: float, beta: float, k: float) -> np.ndarray:
    """PyTorch convention: b_c = a_c / (k + alpha / size * sum_{j=c-size//2}^{c+(size-1)//2} a_j^2)^beta."""
    n, channels = a.shape[:2]
    out = np.empty_like(a)
    for c in range(channels):
        lo, hi = max(0, c - size // 2), min(channels - 1, c + (size - 1) // 2)
        s = (a[:, lo : hi + 1] ** 2).sum(axis=1)
        out[:, c] = a[:, c] / (k + alpha / size * s) ** beta
    return out


def within_reference(a: np.ndarray, size: int, alpha: float, beta: float) -> np.ndarray:
    """Caffe WITHIN_CHANNEL: b = a / (1 + alpha / size^2 * sum over the size x size window, zero outside)^beta."""
    r = size // 2
    n, c, h, w = a.shape
    out = np.empty_like(a)
    for y in range(h):
        for x in range(w):
            window = a[:, :, max(0, y - r) : y + r + 1, max(0, x - r) : x + r + 1]
            s = (window**2).sum(axis=(2, 3))
            out[:, :, y, x] = a[:, :, y, x] / (1 + alpha / size**2 * s) ** beta
    return out


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 10, 13])  # odd, even, and larger than the 7 channels
@pytest.mark.parametrize("alpha,beta,k", [(1e-4, 0.75, 1.0), (1.0, 0.5, 2.0), (5e-4, 0.75, 2.0)])
def test_across_channel_lrn_matches_the_formula(size, alpha, beta, k):
    a = np.random.default_rng(size).normal(0, 3, (2, 7, 4, 5))
    layer = make_lrn(LRNConfig(size=size, alpha=alpha, beta=beta, k=k))
    got = layer(torch.from_numpy(a)).numpy()
    np.testing.assert_allclose(got, across_reference(a, size, alpha, beta, k), rtol=1e-10)


@pytest.mark.parametrize("size", [1, 3, 5])
def test_within_channel_lrn_matches_the_formula(size):
    a = np.random.default_rng(size).normal(0, 3, (2, 3, 6, 7))
    layer = make_lrn(LRNConfig(size=size, alpha=0.5, beta=0.75, region="within"))
    got = layer(torch.from_numpy(a)).numpy()
    np.testing.assert_allclose(got, within_reference(a, size, 0.5, 0.75), rtol=1e-10)


def test_within_channel_lrn_rejects_even_sizes():
    with pytest.raises(ValueError, match="odd size"):
        make_lrn(LRNConfig(size=4, region="within"))
