"""The fused across-channel LRN on CUDA, in Triton: the same layer and backward as kernels/lrn_cpu.cpp.

Each program takes BLOCK_P pixels (over the batch and the image) by BLOCK_C channels and sums the window's squares
by loading its neighbouring channels (cached reads), so one pass reads x and writes y. The backward takes two: the
first writes t_j = g_j a_j q_j / s_j and q, the second sums t over the mirrored window and writes dL/da. Storage may
be bf16 or fp16; arithmetic is in fp32. Contiguous and channels_last tensors are addressed through their strides
(32-bit offsets: tensors up to 2^31 elements).

Checked against the float64 references on CPU under Triton's interpreter (TRITON_INTERPRET=1, tests/test_lrn.py);
`python scripts/gpu_check.py` runs it on a GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_P = 64
BLOCK_C = 32


@triton.jit
def _window_sum_of_squares(
    x_ptr,
    base,
    offs_c,
    C,
    stride_c,
    pixel_mask,
    LO: tl.constexpr,
    HI: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    acc = tl.zeros((BLOCK_C, BLOCK_P), dtype=tl.float32)
    for d in tl.static_range(-LO, HI + 1):
        cc = offs_c + d
        mask = (cc[:, None] >= 0) & (cc[:, None] < C) & pixel_mask[None, :]
        v = tl.load(x_ptr + base + cc[:, None] * stride_c, mask=mask, other=0.0).to(tl.float32)
        acc += v * v
    return acc


@triton.jit
def _pixel_base(offs_p, HW, stride_n, stride_p):
    n = offs_p // HW
    return n * stride_n + (offs_p - n * HW) * stride_p


@triton.jit
def _tile(
    x_ptr,
    C,
    HW,
    P,
    stride_n,
    stride_c,
    stride_p,
    BEFORE: tl.constexpr,
    AFTER: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """This program's BLOCK_C x BLOCK_P tile of x (in fp32), its window sums of squares, addresses and mask."""
    offs_p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    pixel_mask = offs_p < P
    base = _pixel_base(offs_p, HW, stride_n, stride_p)[None, :]
    sums = _window_sum_of_squares(x_ptr, base, offs_c, C, stride_c, pixel_mask, BEFORE, AFTER, BLOCK_C, BLOCK_P)
    mask = (offs_c[:, None] < C) & pixel_mask[None, :]
    where = base + offs_c[:, None] * stride_c
    x = tl.load(x_ptr + where, mask=mask, other=0.0).to(tl.float32)
    return x, sums, where, mask


@triton.jit
def _forward(
    x_ptr,
    y_ptr,
    C,
    HW,
    P,
    stride_n,
    stride_c,
    stride_p,
    k,
    alpha,
    beta,
    BEFORE: tl.constexpr,
    AFTER: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    x, sums, where, mask = _tile(x_ptr, C, HW, P, stride_n, stride_c, stride_p, BEFORE, AFTER, BLOCK_P, BLOCK_C)
    q = tl.exp2(-beta * tl.log2(k + alpha * sums))
    tl.store(y_ptr + where, (x * q).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _backward_terms(
    x_ptr,
    g_ptr,
    t_ptr,
    q_ptr,
    C,
    HW,
    P,
    stride_n,
    stride_c,
    stride_p,
    k,
    alpha,
    beta,
    BEFORE: tl.constexpr,
    AFTER: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    x, sums, where, mask = _tile(x_ptr, C, HW, P, stride_n, stride_c, stride_p, BEFORE, AFTER, BLOCK_P, BLOCK_C)
    g = tl.load(g_ptr + where, mask=mask, other=0.0).to(tl.float32)
    s = k + alpha * sums
    q = tl.exp2(-beta * tl.log2(s))
    tl.store(q_ptr + where, q, mask=mask)
    tl.store(t_ptr + where, g * x * q / s, mask=mask)


@triton.jit
def _backward_input(
    x_ptr,
    g_ptr,
    t_ptr,
    q_ptr,
    dx_ptr,
    C,
    HW,
    P,
    stride_n,
    stride_c,
    stride_p,
    two_alpha_beta,
    BEFORE: tl.constexpr,
    AFTER: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    offs_p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    pixel_mask = offs_p < P
    base = _pixel_base(offs_p, HW, stride_n, stride_p)[None, :]
    inner = tl.zeros((BLOCK_C, BLOCK_P), dtype=tl.float32)
    for d in tl.static_range(-AFTER, BEFORE + 1):  # the mirrored window
        cc = offs_c + d
        m = (cc[:, None] >= 0) & (cc[:, None] < C) & pixel_mask[None, :]
        inner += tl.load(t_ptr + base + cc[:, None] * stride_c, mask=m, other=0.0)
    mask = (offs_c[:, None] < C) & pixel_mask[None, :]
    where = base + offs_c[:, None] * stride_c
    x = tl.load(x_ptr + where, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + where, mask=mask, other=0.0).to(tl.float32)
    q = tl.load(q_ptr + where, mask=mask, other=0.0)
    tl.store(dx_ptr + where, (g * q - two_alpha_beta * x * inner).to(dx_ptr.dtype.element_ty), mask=mask)


def _geometry(x: torch.Tensor):
    n, c, h, w = x.shape
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        strides = (h * w * c, 1, c)
    else:
        strides = (c * h * w, h * w, 1)
    grid = (triton.cdiv(n * h * w, BLOCK_P), triton.cdiv(c, BLOCK_C))
    return c, h * w, n * h * w, strides, grid


def forward(x: torch.Tensor, k: float, alpha: float, beta: float, before: int, after: int) -> torch.Tensor:
    y = torch.empty_like(x)
    c, hw, pixels, strides, grid = _geometry(x)
    _forward[grid](
        x, y, c, hw, pixels, *strides, k, alpha, beta, BEFORE=before, AFTER=after, BLOCK_P=BLOCK_P, BLOCK_C=BLOCK_C
    )
    return y


def backward(
    x: torch.Tensor, grad: torch.Tensor, k: float, alpha: float, beta: float, before: int, after: int
) -> torch.Tensor:
    g = grad.contiguous(
        memory_format=torch.channels_last
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        else torch.contiguous_format
    ).to(x.dtype)
    t = torch.empty_like(x, dtype=torch.float32)
    q = torch.empty_like(x, dtype=torch.float32)
    dx = torch.empty_like(x)
    c, hw, pixels, strides, grid = _geometry(x)
    meta = dict(BEFORE=before, AFTER=after, BLOCK_P=BLOCK_P, BLOCK_C=BLOCK_C)
    _backward_terms[grid](x, g, t, q, c, hw, pixels, *strides, k, alpha, beta, **meta)
    _backward_input[grid](x, g, t, q, dx, c, hw, pixels, *strides, 2 * alpha * beta, **meta)
    return dx
