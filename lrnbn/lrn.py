"""Local Response Normalization in every framework's terms, run as one canonical layer.

lrnbn.conventions maps each framework's size/alpha/beta/k onto the canonical layer (docs/lrn-conventions.md), and
rejects what that framework rejects; the implementations here compute it, each registered under its
`model.lrn.impl` name (lrnbn.registry.LRN_IMPLS declares the names and their help):

- impl "torch": PyTorch's stock `F.local_response_norm` (an average pool over a padded copy of the squares, so its
  cost grows with the window). A window with more channels after than before is the stock window of the
  channel-reversed tensor.
- impl "fast": window sums as one banded matrix product over the channels, and a hand-written backward
  (Caffe's gradient form) that uses the same product, so forward and backward cost the same for any window.
- impl "fused": one kernel per direction that reads its inputs once (fused.py: C++ on CPU, Triton on CUDA); where it
  cannot be built it falls back to "fast" and says so.

Region "within" is Caffe's WITHIN_CHANNEL: an n x n spatial window of the same channel, alpha / n^2, k = 1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lrnbn.conventions import CanonicalLRN, LRNParameterError, canonical
from lrnbn.registry import LRN_IMPLS

# ---------------------------------------------------------------------------------------------------------------
# Implementations.


@LRN_IMPLS.register("torch")
def _torch_across(x: torch.Tensor, p: CanonicalLRN) -> torch.Tensor:
    # The stock function's window is (size // 2 before, (size - 1) // 2 after) with alpha divided by size.
    if x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float16) and not torch.is_autocast_enabled("cpu"):
        # Its avg_pool3d has no bf16/fp16 CPU kernel; under autocast torch runs it in fp32, so do the same here.
        return _torch_across(x.float(), p).to(x.dtype)
    size = p.window
    if p.before >= p.after:
        return F.local_response_norm(x, size, alpha=p.alpha_eff * size, beta=p.beta, k=p.k)
    return F.local_response_norm(x.flip(1), size, alpha=p.alpha_eff * size, beta=p.beta, k=p.k).flip(1)


def _within(x: torch.Tensor, p: CanonicalLRN) -> torch.Tensor:
    # Caffe averages the squares over the zero-padded n x n window (divisor n^2), then scales by alpha. bf16 and fp16
    # are computed in fp32 and rounded once, as across-channel LRN is (in their own arithmetic: up to 2 ulps off).
    n = p.window
    xf = _at_least_fp32(x)
    mean_sq = F.avg_pool2d(xf * xf, n, stride=1, padding=n // 2, count_include_pad=True)
    return (xf / (1 + p.alpha_eff * n * n * mean_sq).pow(p.beta)).to(x.dtype)


def band_matrix(channels: int, before: int, after: int, like: torch.Tensor) -> torch.Tensor:
    """M[c, j] = 1 when channel j lies in channel c's window [c - before, c + after]."""
    index = torch.arange(channels, device=like.device)
    offset = index[None, :] - index[:, None]
    return ((offset >= -before) & (offset <= after)).to(like.dtype)


def _as_matrix(t: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """A view of a 4-D tensor as matrices over its channels: [N, C, H*W] (channels first in memory) or
    [N*H*W, C] (channels_last), and which of the two it is."""
    n, c, h, w = t.shape
    if t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous():
        return t.permute(0, 2, 3, 1).reshape(n * h * w, c), True
    return t.reshape(n, c, h * w), False


def _window_sum(band: torch.Tensor, values: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out[:, c] = sum over j of band[c, j] * values[:, j], as one matrix product (out has values' layout).

    With a banded 0/1 `band` these are LRN's window sums: their cost depends on the channel count, not the window,
    and they add without cancellation. (Measured on a 2-core CPU: 3.5x faster than a cumulative sum along the
    channels, which also needs a padded copy.)"""
    matrix, channels_last = _as_matrix(values)
    target, _ = _as_matrix(out)
    if channels_last:
        torch.matmul(matrix, band.T, out=target)
    else:
        torch.matmul(band, matrix, out=target)
    return out


# On a CPU, LRN is bound by passes over memory (about ten, plus one pow, against BN's fused kernel). Working through
# the batch a few samples at a time keeps each chunk's temporaries in cache: measured with `lrnbn bench lrn` on a
# 2-core CPU at 128x64x32x32, 512 KB chunks took forward+backward from about 170 ms to about 105 ms. GPUs run the
# whole batch at once.
CPU_CHUNK_BYTES = 1 << 19


def _chunks(x: torch.Tensor) -> list[slice]:
    per_sample = x[0].numel() * x.element_size()
    size = len(x) if x.device.type != "cpu" else max(1, CPU_CHUNK_BYTES // per_sample)
    return [slice(i, i + size) for i in range(0, len(x), size)]


def _at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    # Window sums in fp16/bf16 lose accuracy: they accumulate in fp32 (float64 stays float64).
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


class _FastAcrossLRN(torch.autograd.Function):
    """Forward and backward in at least fp32 at a cost independent of the window; keeps the input, the scale
    s = k + alpha_eff * S and s^-beta for the backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, k: float, alpha: float, beta: float, before: int, after: int):
        xf = _at_least_fp32(x)
        band = band_matrix(x.shape[1], before, after, xf).mul_(alpha)
        scale, scale_pow, out = torch.empty_like(xf), torch.empty_like(xf), torch.empty_like(xf)
        for part in _chunks(xf):
            xc = xf[part]
            s = _window_sum(band, xc * xc, scale[part]).add_(k)
            torch.pow(s, -beta, out=scale_pow[part])
            torch.mul(xc, scale_pow[part], out=out[part])
        ctx.save_for_backward(xf, scale, scale_pow)
        ctx.params = (alpha, beta, before, after)
        return out.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        # dL/da_i = g_i s_i^-beta - 2 alpha beta a_i * sum over j whose window holds i of g_j b_j / s_j;
        # j's window holds i exactly when j lies in [i - after, i + before]: the mirrored window.
        xf, scale, scale_pow = ctx.saved_tensors
        alpha, beta, before, after = ctx.params
        g = _at_least_fp32(grad_out)
        mirrored = band_matrix(xf.shape[1], after, before, xf)
        grad = torch.empty_like(xf)
        for part in _chunks(xf):
            xc, sp, gc = xf[part], scale_pow[part], g[part]
            gb_over_s = (xc * sp).div_(scale[part]).mul_(gc)
            inner = _window_sum(mirrored, gb_over_s, torch.empty_like(gb_over_s))
            torch.mul(gc, sp, out=grad[part]).addcmul_(xc, inner, value=-2 * alpha * beta)
        return grad.to(grad_out.dtype), None, None, None, None, None


@LRN_IMPLS.register("fast")
def _fast_across(x: torch.Tensor, p: CanonicalLRN) -> torch.Tensor:
    return _FastAcrossLRN.apply(x, p.k, p.alpha_eff, p.beta, p.before, p.after)


@LRN_IMPLS.register("fused")
def _fused_across(x: torch.Tensor, p: CanonicalLRN) -> torch.Tensor:
    from lrnbn import fused  # builds its kernel on first use: only runs that ask for it pay

    return fused.across(x, p.k, p.alpha_eff, p.beta, p.before, p.after, fallback=lambda t: _fast_across(t, p))


def local_response_norm(
    x: torch.Tensor,
    size: int,
    alpha: float = 1e-4,
    beta: float = 0.75,
    k: float = 1.0,
    *,
    convention: str = "pytorch",
    region: str = "across",
    impl: str = "torch",
) -> torch.Tensor:
    """LRN of a 4-D NCHW tensor, with size/alpha/beta/k meaning what they mean in `convention`."""
    return apply_lrn(x, canonical(size, alpha, beta, k, convention, region), impl)


def apply_lrn(x: torch.Tensor, p: CanonicalLRN, impl: str) -> torch.Tensor:
    if x.ndim != 4:
        raise ValueError(f"LRN expects a 4-D NCHW tensor, got {x.ndim}-D")
    across = LRN_IMPLS[impl]  # an unknown impl is refused whatever the region
    if p.region == "within":
        return _within(x, p)  # one implementation: the spatial window is small in every known net
    return across(x, p)


def learnable_lrn(
    x: torch.Tensor, p: CanonicalLRN, k: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, impl: str
) -> torch.Tensor:
    """LRN with k, alpha_eff and beta as tensors that autograd differentiates: p gives the window and region.

    impl torch runs the stock function (which takes tensor parameters); fast and fused (whose hand-written backward
    has no gradient for the parameters) run the banded window sum as plain differentiable operations."""
    if p.region == "within":
        n = p.window
        mean_sq = F.avg_pool2d(x * x, n, stride=1, padding=n // 2, count_include_pad=True)
        return x / (k + alpha * n * n * mean_sq).pow(beta)
    if impl == "torch":
        size = p.window
        flip = p.before < p.after
        out = F.local_response_norm(x.flip(1) if flip else x, size, alpha=alpha * size, beta=beta, k=k)
        return out.flip(1) if flip else out
    xf = _at_least_fp32(x)
    band = band_matrix(x.shape[1], p.before, p.after, xf)
    squares, channels_last = _as_matrix(xf * xf)
    sums = squares @ band.T if channels_last else band @ squares
    if channels_last:
        n, c, h, w = x.shape
        sums = sums.reshape(n, h, w, c).permute(0, 3, 1, 2)
    else:
        sums = sums.reshape(x.shape)
    return (xf * (k + alpha * sums).pow(-beta)).to(x.dtype)


class LRN(nn.Module):
    """The layer the models use: parameters in a framework's terms, computed canonically by `impl`. With
    `learnable`, k, alpha_eff and beta are parameters of the layer, kept positive as exp of a free parameter and
    starting at the configured values."""

    def __init__(
        self,
        size: int,
        alpha: float = 1e-4,
        beta: float = 0.75,
        k: float = 1.0,
        *,
        convention: str = "pytorch",
        region: str = "across",
        impl: str = "torch",
        learnable: bool = False,
    ):
        super().__init__()
        self.params = canonical(size, alpha, beta, k, convention, region)
        LRN_IMPLS[impl]  # refuse an unknown impl now, not at the first forward (learnable_lrn would take it for fast)
        self.impl = impl
        self.learnable = learnable
        if learnable:
            if alpha <= 0 or beta <= 0:
                raise LRNParameterError(
                    "learnable",
                    f"a learnable LRN needs alpha > 0 and beta > 0 (its parameters "
                    f"are exp of a free parameter), got alpha {alpha}, beta {beta}",
                )
            p = self.params
            self.log_k = nn.Parameter(torch.tensor(math.log(p.k)))
            self.log_alpha = nn.Parameter(torch.tensor(math.log(p.alpha_eff)))
            self.log_beta = nn.Parameter(torch.tensor(math.log(p.beta)))
        self.described = (
            f"size={size}, alpha={alpha}, beta={beta}, k={k}, convention={convention}, region={region}, impl={impl}"
            + (", learnable" if learnable else "")
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.learnable:
            k, alpha, beta = self.log_k.exp(), self.log_alpha.exp(), self.log_beta.exp()
            return learnable_lrn(x, self.params, k, alpha, beta, self.impl)
        return apply_lrn(x, self.params, self.impl)

    def extra_repr(self) -> str:
        return self.described
