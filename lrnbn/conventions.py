"""LRN's parameters in every framework's terms, mapped onto one canonical layer (docs/lrn-conventions.md).

Canonical form: b_c = a_c / (k + alpha_eff * S_c)^beta, S_c = sum of a_j^2 for j in [c - before, c + after], channels
outside 0..C-1 counting as zero. `canonical()` maps each framework's own parameters onto it and rejects what that
framework rejects; lrnbn.lrn computes it. Plain Python: the config schema checks LRN parameters with it without
importing torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

CONVENTIONS = ("pytorch", "tensorflow", "caffe", "cudnn", "onnx", "alexnet-paper")
REGIONS = ("across", "within")
CUDNN_MAX_N = 16


# What every convention requires of alpha, beta and k: finite numbers in these ranges (a framework may require more:
# cuDNN's lrnK >= 1e-5 and lrnBeta >= 0.01). alpha < 0 can make the base negative and k <= 0 divides by zero where
# the window is dark (NaN either way); beta < 0 amplifies instead of normalizing. config.py's fields take their bounds
# from here, so that a config and the Python API refuse the same values.
PARAMETER_BOUNDS = {"alpha": {"ge": 0}, "beta": {"ge": 0}, "k": {"gt": 0}}


class LRNParameterError(ValueError):
    """A parameter a framework rejects; `key` names it (size, alpha, beta, k, region)."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class CanonicalLRN:
    k: float
    alpha_eff: float  # multiplies the plain sum of squares (across) or of the n x n window (within)
    beta: float
    before: int  # channels before c in the window (across); for within, before = after = n // 2 pixels
    after: int
    region: str = "across"

    @property
    def window(self) -> int:
        return self.before + self.after + 1


def canonical(
    size: int, alpha: float, beta: float, k: float, convention: str = "pytorch", region: str = "across"
) -> CanonicalLRN:
    """Map one framework's LRN parameters onto the canonical layer; raise LRNParameterError where it refuses them."""
    if convention not in CONVENTIONS:
        raise LRNParameterError(
            "convention", f"unknown convention {convention!r}; choose one of {', '.join(CONVENTIONS)}"
        )
    if size < 1:
        raise LRNParameterError("size", f"size must be >= 1, got {size}")
    _check_bounds(alpha=alpha, beta=beta, k=k)
    if region == "within":
        if convention != "caffe":
            raise LRNParameterError(
                "region", f"region 'within' is Caffe's WITHIN_CHANNEL; set convention: caffe, not {convention}"
            )
        if size % 2 == 0:
            raise LRNParameterError("size", f"Caffe's WITHIN_CHANNEL LRN needs an odd local_size, got {size}")
        return CanonicalLRN(1.0, alpha / size**2, beta, size // 2, size // 2, "within")
    if region != "across":
        raise LRNParameterError("region", f"unknown region {region!r}; choose across or within")
    if convention == "pytorch":
        return CanonicalLRN(k, alpha / size, beta, size // 2, (size - 1) // 2)
    if convention == "onnx":
        return CanonicalLRN(k, alpha / size, beta, (size - 1) // 2, size // 2)
    if convention == "cudnn":
        if not 1 <= size <= CUDNN_MAX_N:
            raise LRNParameterError("size", f"cuDNN accepts lrnN in 1..{CUDNN_MAX_N}, got {size}")
        if k < 1e-5 or beta < 0.01:
            raise LRNParameterError(
                "k" if k < 1e-5 else "beta", f"cuDNN needs lrnK >= 1e-5 and lrnBeta >= 0.01, got K {k}, beta {beta}"
            )
        before = (size - 1) // 2
        return CanonicalLRN(k, alpha / size, beta, before, size - 1 - before)
    if size % 2 == 0:
        why = {
            "tensorflow": "its window is 2 * depth_radius + 1",
            "caffe": "Caffe rejects an even local_size",
            "alexnet-paper": "the paper's window i - n/2 .. i + n/2 holds n channels only for odd n",
        }[convention]
        raise LRNParameterError("size", f"{convention} needs an odd size ({why}), got {size}")
    half = size // 2
    if convention == "caffe":
        return CanonicalLRN(k, alpha / size, beta, half, half)
    return CanonicalLRN(k, alpha, beta, half, half)  # tensorflow and the AlexNet paper: alpha is not divided


def _check_bounds(**values: float) -> None:
    """Refuse a value that is not finite or lies outside its PARAMETER_BOUNDS."""
    for key, value in values.items():
        ((relation, bound),) = PARAMETER_BOUNDS[key].items()
        inside = value >= bound if relation == "ge" else value > bound
        if not (math.isfinite(value) and inside):
            symbol = ">=" if relation == "ge" else ">"
            raise LRNParameterError(key, f"{key} must be a finite number {symbol} {bound:g}, got {value}")
