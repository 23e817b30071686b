"""The fused LRN (`model.lrn.impl: fused`): forward and backward each read their inputs once and write one output.

On a CPU it is a C++ kernel (kernels/lrn_cpu.cpp) that torch's cpp_extension builds on first use (about a minute)
and caches; on CUDA it is a Triton kernel (kernels/lrn_triton.py). Where neither can be built or loaded (no
compiler, no ninja, no Triton) lrnbn falls back to `impl: fast`, which computes the same layer, says so once in one
line on stderr, and records the kernel that ran in env.json (`kernel_status`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from pathlib import Path

import torch

KERNELS = Path(__file__).parent / "kernels"
CPU_SOURCE = KERNELS / "lrn_cpu.cpp"
# -march=native is fine for the CPU that builds it: the cache key below includes the CPU's flags, so another CPU
# builds its own. -fopenmp: ATen's parallel_for is inline OpenMP; without it the kernel ran on one thread (measured:
# forward 22 ms instead of 13 ms at 128x64x32x32 on 2 cores). The extension then shares torch's own libgomp (same
# soname, already loaded), so torch.set_num_threads governs it.
CPU_FLAGS = ["-O3", "-march=native", "-fopenmp", "-fno-math-errno"]
DISABLE_ENV = "LRNBN_NO_FUSED"  # set to 1 to refuse the fused kernels (the fallback path, e.g. to test it)

_loaded: dict[str, object] = {}
_failures: dict[str, str] = {}
_warned: set[str] = set()


def _cpu_signature() -> str:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        flags = ""
    text = CPU_SOURCE.read_text() + " ".join(CPU_FLAGS) + torch.__version__ + flags
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _build_cpu():
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # its import-time CUDA_HOME notice
    from torch.utils.cpp_extension import load

    name = f"lrnbn_lrn_cpu_{_cpu_signature()}"
    directory = Path(os.environ.get("LRNBN_CACHE", Path.home() / ".cache" / "lrnbn")) / "extensions" / name
    directory.mkdir(parents=True, exist_ok=True)
    return load(
        name=name,
        sources=[str(CPU_SOURCE)],
        extra_cflags=CPU_FLAGS,
        extra_ldflags=["-fopenmp"],
        build_directory=str(directory),
        verbose=False,
    )


def _build_cuda():
    from lrnbn.kernels import lrn_triton

    return lrn_triton


def backend(device_type: str):
    """The loaded kernel module for this device type, or None (the reason is in `status`)."""
    if device_type in _loaded:
        return _loaded[device_type]
    if device_type in _failures:
        return None
    builders = {"cpu": _build_cpu, "cuda": _build_cuda}
    try:
        if os.environ.get(DISABLE_ENV) == "1":
            raise RuntimeError(f"{DISABLE_ENV}=1")
        if device_type not in builders:
            raise RuntimeError(f"no fused kernel for {device_type}")
        _loaded[device_type] = builders[device_type]()
        return _loaded[device_type]
    except Exception as exc:  # a missing compiler, ninja or Triton shows up as many exception types
        first_line = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:200]
        _failures[device_type] = f"{exc.__class__.__name__}: {first_line}"
        return None


def status(device_type: str) -> str:
    """What `impl: fused` runs on this device type: the fused kernel, or the fallback and why (loads it if need be)."""
    if backend(device_type) is not None:
        return {"cpu": "fused (C++ kernel)", "cuda": "fused (Triton kernel)"}[device_type]
    return f"fast (fallback: {_failures[device_type]})"


def warn_fallback(device_type: str) -> None:
    if device_type not in _warned:
        _warned.add(device_type)
        print(
            f"lrnbn: the fused LRN kernel is unavailable on {device_type} ({_failures[device_type]}); "
            f"using impl fast, which computes the same layer",
            file=sys.stderr,
        )


class _FusedAcrossLRN(torch.autograd.Function):
    """Saves only the input: the backward recomputes the scale from it (cheaper than storing and rereading it)."""

    @staticmethod
    def forward(ctx, x, kernels, k: float, alpha: float, beta: float, before: int, after: int):
        ctx.save_for_backward(x)
        ctx.params = (kernels, k, alpha, beta, before, after)
        return kernels.forward(x, k, alpha, beta, before, after)

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        kernels, k, alpha, beta, before, after = ctx.params
        return kernels.backward(x, grad_out, k, alpha, beta, before, after), None, None, None, None, None, None


def across(x: torch.Tensor, k: float, alpha: float, beta: float, before: int, after: int, fallback):
    """The fused across-channel LRN of x, or `fallback(x)` where no fused kernel loads for x's device."""
    kernels = backend(x.device.type)
    if kernels is None:
        warn_fallback(x.device.type)
        return fallback(x)
    if not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)):
        x = x.contiguous()
    return _FusedAcrossLRN.apply(x, kernels, k, alpha, beta, before, after)
