"""LRN against float64 references transcribed from each framework's documented formula (explicit loops, nothing
from the code under test), every implementation against the stock one (values and gradients, fp32 and bf16,
contiguous and channels_last), the fused kernel's fallback and its Triton version, and each framework's rejections."""

import inspect
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from lrnbn.config import LRNConfig
from lrnbn.conventions import canonical
from lrnbn.lrn import LRN, local_response_norm
from lrnbn.registry import LRN_IMPLS
from tests.test_config import _assert_rejected

# Per framework, from its documentation: the window [lo(c, n), hi(c, n)] before clipping to 0..C-1, and the factor
# on the sum of squares given (alpha, n).
DOCUMENTED = {
    # torch.nn.LocalResponseNorm: alpha / n, over c - n//2 .. c + (n-1)//2 (its avg_pool3d over a padded copy).
    "pytorch": (lambda c, n: c - n // 2, lambda c, n: c + (n - 1) // 2, lambda alpha, n: alpha / n),
    # tf.nn.local_response_normalization: sum(input[..., d - r : d + r + 1] ** 2), alpha not divided; n = 2r + 1.
    "tensorflow": (lambda c, n: c - (n - 1) // 2, lambda c, n: c + (n - 1) // 2, lambda alpha, n: alpha),
    # Caffe LRN ACROSS_CHANNELS: (k + alpha / n * sum over the region centred at c)^beta, n odd.
    "caffe": (lambda c, n: c - (n - 1) // 2, lambda c, n: c + (n - 1) // 2, lambda alpha, n: alpha / n),
    # cudnnLRNCrossChannelForward: alpha / N over c - floor((N-1)/2) .. c + N - 1 - floor((N-1)/2).
    "cudnn": (lambda c, n: c - (n - 1) // 2, lambda c, n: c + n - 1 - (n - 1) // 2, lambda alpha, n: alpha / n),
    # ONNX LRN: max(0, c - floor((size-1)/2)) <= i <= min(C-1, c + ceil((size-1)/2)), alpha / size.
    "onnx": (
        lambda c, n: c - math.floor((n - 1) / 2),
        lambda c, n: c + math.ceil((n - 1) / 2),
        lambda alpha, n: alpha / n,
    ),
    # Krizhevsky et al. 2012, section 3.3: sum from max(0, i - n/2) to min(N-1, i + n/2), alpha not divided.
    "alexnet-paper": (lambda c, n: c - n // 2, lambda c, n: c + n // 2, lambda alpha, n: alpha),
}
ODD_ONLY = {"tensorflow", "caffe", "alexnet-paper"}


def documented_reference(a: np.ndarray, convention: str, size: int, alpha: float, beta: float, k: float) -> np.ndarray:
    lo, hi, factor = DOCUMENTED[convention]
    channels = a.shape[1]
    out = np.empty_like(a)
    for c in range(channels):
        window = range(max(0, lo(c, size)), min(channels - 1, hi(c, size)) + 1)
        squares = sum(a[:, j] ** 2 for j in window)
        out[:, c] = a[:, c] / (k + factor(alpha, size) * squares) ** beta
    return out


def within_reference(a: np.ndarray, size: int, alpha: float, beta: float) -> np.ndarray:
    """Caffe WITHIN_CHANNEL: a / (1 + alpha / n^2 * sum over the n x n window of the same channel, zero-padded)^beta."""
    r = size // 2
    out = np.empty_like(a)
    for y in range(a.shape[2]):
        for x in range(a.shape[3]):
            window = a[:, :, max(0, y - r) : y + r + 1, max(0, x - r) : x + r + 1]
            out[:, :, y, x] = a[:, :, y, x] / (1 + alpha / size**2 * (window**2).sum(axis=(2, 3))) ** beta
    return out


CASES = [(conv, n) for conv in DOCUMENTED for n in (1, 2, 3, 4, 5, 7, 9, 16) if not (conv in ODD_ONLY and n % 2 == 0)]


@pytest.mark.parametrize("impl", LRN_IMPLS.names)
@pytest.mark.parametrize("convention,size", CASES, ids=[f"{c}-n{n}" for c, n in CASES])
def test_each_convention_matches_its_documented_formula(convention, size, impl):
    # 7 channels: n = 9 and 16 exceed the channel count; every n touches the edge channels.
    a = np.random.default_rng(size).normal(0, 3, (2, 7, 3, 4))
    got = local_response_norm(torch.from_numpy(a), size, 0.3, 0.75, 2.0, convention=convention, impl=impl).numpy()
    np.testing.assert_allclose(got, documented_reference(a, convention, size, 0.3, 0.75, 2.0), rtol=1e-10)


@pytest.mark.parametrize("size", [1, 3, 5])
def test_within_channel_matches_caffes_formula(size):
    a = np.random.default_rng(size).normal(0, 3, (2, 3, 6, 7))
    for impl in LRN_IMPLS.names:
        got = local_response_norm(torch.from_numpy(a), size, 0.5, 0.75, convention="caffe", region="within", impl=impl)
        np.testing.assert_allclose(got.numpy(), within_reference(a, size, 0.5, 0.75), rtol=1e-10)


def test_the_alexnet_papers_layer_in_three_frameworks_terms_is_one_layer():
    # docs/lrn-conventions.md: the paper's layer is PyTorch's (5, alpha 5e-4, k 2) and TensorFlow's (r 2, bias 2,
    # alpha 1e-4).
    paper = canonical(5, 1e-4, 0.75, 2.0, "alexnet-paper")
    for other in (canonical(5, 5e-4, 0.75, 2.0, "pytorch"), canonical(5, 1e-4, 0.75, 2.0, "tensorflow")):
        assert (other.k, other.beta, other.before, other.after) == (paper.k, paper.beta, paper.before, paper.after)
        assert other.alpha_eff == pytest.approx(paper.alpha_eff)


@pytest.mark.parametrize("impl", ["fast", "fused"])
@pytest.mark.parametrize("size", [1, 2, 3, 5, 6, 11, 15, 40])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_fast_and_fused_equal_torch_in_fp32(impl, size, layout):
    torch.manual_seed(size)
    x = torch.randn(4, 32, 6, 5) * 4  # 40 > 32 channels
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    x_fast, x_torch = x.clone().requires_grad_(), x.clone().requires_grad_()
    fast = local_response_norm(x_fast, size, 1e-2, 0.75, 1.0, impl=impl)
    stock = local_response_norm(x_torch, size, 1e-2, 0.75, 1.0, impl="torch")
    torch.testing.assert_close(fast, stock, rtol=1e-5, atol=1e-6)
    assert fast.is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last")
    weights = torch.randn_like(x)
    (fast * weights).sum().backward()
    (stock * weights).sum().backward()
    torch.testing.assert_close(x_fast.grad, x_torch.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("size", [1, 5, 21])
def test_fused_gives_the_same_bits_in_both_layouts(dtype, size):
    # Both layouts go through the same channel-major tiles (of 128, 64 or 32 pixels, as wide as the image allows);
    # channels_last tiles are transposed in 16x16 blocks (in registers, on AVX-512) and element by element beyond
    # them: 37 channels leave 5 beyond the blocks, 35 pixels a tile of 3 (no block), 49 a tile of 17 (one block and
    # one pixel), 64 one tile of 64 and 228 a tile of 128 and one of 100 (six blocks and four pixels).
    for shape in [(3, 37, 5, 7), (2, 37, 7, 7), (2, 48, 8, 8), (2, 37, 12, 19)]:
        generator = torch.Generator().manual_seed(size)
        x = (torch.randn(shape, generator=generator) * 3).to(dtype)
        g = torch.randn(shape, generator=generator).to(dtype)
        results = []
        for memory_format in (torch.contiguous_format, torch.channels_last):
            xi = x.contiguous(memory_format=memory_format).requires_grad_()
            out = local_response_norm(xi, size, 1e-2, 0.75, 1.0, impl="fused")
            (dx,) = torch.autograd.grad(out, xi, g.contiguous(memory_format=memory_format))
            assert out.is_contiguous(memory_format=memory_format)
            results.append((out.contiguous(), dx.contiguous()))
        (out, dx), (out_last, dx_last) = results
        assert torch.equal(out, out_last) and torch.equal(dx, dx_last), shape


@pytest.mark.parametrize("impl", ["fast", "fused"])
@pytest.mark.parametrize(
    "convention,size,beta",
    [("pytorch", 4, 0.75), ("onnx", 4, 0.75), ("cudnn", 5, 0.5), ("tensorflow", 3, 1.0), ("pytorch", 12, 0.6)],
)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_backward_passes_gradcheck(impl, convention, size, beta, layout):
    x = torch.randn(2, 9, 3, 3, dtype=torch.float64) * 2
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    assert torch.autograd.gradcheck(
        lambda t: local_response_norm(t, size, 0.2, beta, 1.5, convention=convention, impl=impl), (x.requires_grad_(),)
    )


@pytest.mark.parametrize("impl", ["fast", "fused"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_bf16_accumulates_in_fp32_and_returns_the_input_dtype(impl, layout):
    torch.manual_seed(0)
    x = (torch.randn(2, 64, 4, 4) * 3).to(torch.bfloat16)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    out = local_response_norm(x, 5, 1.0, 0.75, 1.0, impl=impl)
    assert out.dtype == torch.bfloat16
    grad = torch.randn(out.shape).to(torch.bfloat16)
    (dx,) = torch.autograd.grad(out, x, grad)
    x64 = x.detach().double().requires_grad_()
    reference = local_response_norm(x64, 5, 1.0, 0.75, 1.0, impl="torch")
    (dx64,) = torch.autograd.grad(reference, x64, grad.double())
    torch.testing.assert_close(out.double(), reference, rtol=1e-2, atol=1e-2)  # bf16 output rounding only
    torch.testing.assert_close(dx.double(), dx64, rtol=2e-2, atol=2e-2)


FUSED_FALLBACK = """
import torch
from lrnbn.lrn import local_response_norm
x = torch.randn(2, 12, 3, 3)
for _ in range(3):
    fused = local_response_norm(x, 5, 0.5, 0.75, 1.0, impl="fused")
assert torch.equal(fused, local_response_norm(x, 5, 0.5, 0.75, 1.0, impl="fast"))
from lrnbn import fused as kernels
print(kernels.status("cpu"))
"""


def test_fused_falls_back_to_fast_with_one_line_when_it_cannot_load():
    env = {**os.environ, "LRNBN_NO_FUSED": "1"}
    result = subprocess.run([sys.executable, "-c", FUSED_FALLBACK], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "fast (fallback: RuntimeError: LRNBN_NO_FUSED=1)"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "fused LRN kernel is unavailable on cpu" in lines[0] and "using impl fast" in lines[0]


TRITON_CHECK = """
import torch
from lrnbn.kernels import lrn_triton
from lrnbn.lrn import apply_lrn, canonical
torch.manual_seed(0)
worst = {}
for convention, size in (("pytorch", 5), ("onnx", 4), ("cudnn", 16)):
    p = canonical(size, 0.3, 0.75, 1.5, convention)
    for dtype in (torch.float32, torch.bfloat16):
        for last in (False, True):
            x = (torch.randn(2, 37, 5, 7) * 3).to(dtype)
            g = torch.randn(2, 37, 5, 7).to(dtype)
            if last:
                x = x.contiguous(memory_format=torch.channels_last)
            x64 = x.double().requires_grad_()
            y64 = apply_lrn(x64, p, "torch")
            (d64,) = torch.autograd.grad(y64, x64, g.double())
            y = lrn_triton.forward(x, p.k, p.alpha_eff, p.beta, p.before, p.after)
            d = lrn_triton.backward(x, g, p.k, p.alpha_eff, p.beta, p.before, p.after)
            assert y.dtype == dtype and d.dtype == dtype
            key = str(dtype)
            worst[key] = max(worst.get(key, 0), ((y.double() - y64).abs() / (y64.abs() + 1e-2)).max().item(),
                             ((d.double() - d64).abs() / (d64.abs() + 1e-1)).max().item())
print(worst["torch.float32"], worst["torch.bfloat16"])
"""


def test_the_triton_kernel_matches_the_reference_under_the_interpreter():
    pytest.importorskip("triton", reason="Triton is not installed (the CUDA path falls back to impl fast)")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run([sys.executable, "-c", TRITON_CHECK], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    fp32, bf16 = map(float, result.stdout.split())
    assert fp32 < 1e-5 and bf16 < 2e-2


def test_the_module_reports_its_parameters_and_rejects_non_4d_input():
    layer = LRN(4, convention="onnx", impl="fast")
    assert "convention=onnx" in repr(layer) and "impl=fast" in repr(layer)
    with pytest.raises(ValueError, match="4-D NCHW"):
        layer(torch.randn(2, 3, 4))


@pytest.mark.parametrize("api", [LRN.__init__, local_response_norm], ids=["LRN", "local_response_norm"])
def test_the_python_api_defaults_to_what_a_config_without_the_keys_means(api):
    parameters = inspect.signature(api).parameters
    for name in ("alpha", "beta", "k", "convention", "region", "impl"):
        assert parameters[name].default == getattr(LRNConfig(), name), name


@pytest.mark.parametrize("learnable", [False, True])
def test_an_unknown_impl_is_refused_when_the_layer_is_built_naming_the_choices(learnable):
    with pytest.raises(ValueError, match="unknown impl 'cuda'; choose one of torch, fast, fused"):
        LRN(5, impl="cuda", learnable=learnable)


REJECTED = [
    ("caffe_even", {"convention": "caffe", "size": 4}, "model.lrn.size: caffe needs an odd size"),
    ("tensorflow_even", {"convention": "tensorflow", "size": 6}, "model.lrn.size: tensorflow needs an odd size"),
    ("paper_even", {"convention": "alexnet-paper", "size": 2}, "model.lrn.size: alexnet-paper needs an odd size"),
    ("cudnn_too_wide", {"convention": "cudnn", "size": 17}, "model.lrn.size: cuDNN accepts lrnN in 1..16"),
    ("cudnn_small_k", {"convention": "cudnn", "k": 1e-6}, "model.lrn.k: cuDNN needs lrnK >= 1e-5"),
    ("within_not_caffe", {"region": "within", "size": 3}, "model.lrn.region: region 'within' is Caffe's"),
    (
        "within_even",
        {"convention": "caffe", "region": "within", "size": 2},
        "model.lrn.size: Caffe's WITHIN_CHANNEL LRN needs an odd",
    ),
    ("depth_radius_not_tf", {"depth_radius": 2}, "model.lrn.depth_radius: only the tensorflow convention has it"),
    (
        "depth_radius_disagrees",
        {"convention": "tensorflow", "depth_radius": 2, "size": 7},
        "size 7 disagrees with depth_radius 2",
    ),
    ("unknown_convention", {"convention": "mxnet"}, "model.lrn.convention: Input should be 'pytorch'"),
    ("unknown_impl", {"impl": "cuda"}, "model.lrn.impl: Input should be 'torch', 'fast' or 'fused'"),
]


@pytest.mark.parametrize("name,lrn,fragment", REJECTED, ids=[r[0] for r in REJECTED])
def test_what_a_framework_rejects_is_a_config_error(cli, tmp_path, write_config, name, lrn, fragment):
    config = write_config({"model": {"norm": "lrn", "lrn": lrn}})
    _assert_rejected(cli("train", "--config", config, "--runs-dir", tmp_path / "runs"), fragment, tmp_path / "runs")


def test_tensorflow_depth_radius_is_the_window_2r_plus_1(write_config):
    from lrnbn.config import load_config

    config = load_config(
        write_config({"model": {"norm": "lrn", "lrn": {"convention": "tensorflow", "depth_radius": 2}}})
    )
    assert config.model.lrn.size == 5
    assert load_config(write_config({"model": {"norm": "lrn", "lrn": config.model.lrn.model_dump()}})) == config


@pytest.mark.parametrize("impl", LRN_IMPLS.names)
@pytest.mark.parametrize(
    "convention,size,region",
    [("pytorch", 5, "across"), ("onnx", 4, "across"), ("alexnet-paper", 3, "across"), ("caffe", 3, "within")],
)
def test_learnable_lrn_starts_at_the_configured_layer_and_its_parameter_gradients_pass_gradcheck(
    impl, convention, size, region
):
    torch.manual_seed(1)
    layer = LRN(size, 0.3, 0.75, 1.5, convention=convention, region=region, impl=impl, learnable=True).double()
    fixed = LRN(size, 0.3, 0.75, 1.5, convention=convention, region=region, impl=impl)
    x = torch.randn(2, 7, 4, 4, dtype=torch.float64) * 2
    torch.testing.assert_close(layer(x), fixed(x))

    # gradcheck compares autograd's gradients with finite differences, for k, alpha, beta and the input.
    from lrnbn.lrn import learnable_lrn

    k, alpha, beta = (p.detach().exp().requires_grad_() for p in (layer.log_k, layer.log_alpha, layer.log_beta))
    assert torch.autograd.gradcheck(
        lambda k, a, b, t: learnable_lrn(t, layer.params, k, a, b, impl), (k, alpha, beta, x.clone().requires_grad_())
    )
    layer(x).sum().backward()  # and the layer's own parameters receive them
    assert all(p.grad is not None and torch.isfinite(p.grad) for p in (layer.log_k, layer.log_alpha, layer.log_beta))
