"""The machine a run trains on: which device, and the facts about it that env.json records."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from pathlib import Path

import torch
import torchvision

import lrnbn
from lrnbn import distributed
from lrnbn.errors import UserError


def resolve_device(name: str) -> torch.device:
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if name == "cuda" and not cuda:
        raise UserError("train.device: cuda requested but torch sees no CUDA device; use train.device: cpu or auto")
    if name == "mps" and not mps:
        raise UserError("train.device: mps requested but this torch build or machine has no MPS; use cpu or auto")
    return torch.device(name)


def training_device(config) -> torch.device:
    """The device this process trains on, after the checks a torchrun launch adds (before the process group)."""
    device = resolve_device(config.train.device)
    world = distributed.current()
    if not world.launched:
        return device
    if device.type == "cuda":
        if world.local_rank >= torch.cuda.device_count():
            raise UserError(
                f"torchrun started local rank {world.local_rank} but torch sees "
                f"{torch.cuda.device_count()} CUDA device(s); lower --nproc_per_node"
            )
        device = torch.device("cuda", world.local_rank)
    elif config.model.sync_bn and config.model.norm == "bn":
        raise UserError(
            f"model.sync_bn: SyncBatchNorm runs on CUDA only, but the device is {device.type}; "
            f"set model.sync_bn: false (each process then normalises over its slice of the batch)"
        )
    if config.train.batch_size % world.size:
        raise UserError(
            f"train.batch_size: {config.train.batch_size} does not split evenly over {world.size} "
            f"processes; use a multiple of {world.size}"
        )
    return device


def cpu_bf16_support() -> dict:
    """Which native bf16 instructions this CPU has (from /proc/cpuinfo's flags where it exists, else torch's probe)."""
    try:
        flags = set(
            next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
            .split(":", 1)[1]
            .split()
        )
        avx512_bf16, amx_bf16 = "avx512_bf16" in flags, "amx_bf16" in flags
    except (OSError, StopIteration):
        avx512_bf16 = bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)())
        amx_bf16 = bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())
    return {"avx512_bf16": avx512_bf16, "amx_bf16": amx_bf16, "capability": torch.backends.cpu.get_cpu_capability()}


def check_amp(device: torch.device) -> None:
    """bf16 autocast where the device computes bf16 natively; elsewhere it would be emulated, slower than fp32."""
    if device.type == "cuda":
        if not torch.cuda.is_bf16_supported():
            raise UserError(f"train.amp: {device_name(device)} has no native bf16; set train.amp: false")
    elif device.type == "cpu":
        support = cpu_bf16_support()
        if not (support["avx512_bf16"] or support["amx_bf16"]):
            raise UserError(
                "train.amp: this CPU lacks native bf16 (neither AVX512-BF16 nor AMX-BF16 in its flags), "
                "where emulated bf16 is slower than fp32; set train.amp: false"
            )
    else:
        raise UserError(f"train.amp: bf16 autocast runs on CUDA and on CPUs with native bf16, not on {device.type}")


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a clock read after it measures that work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def steal_seconds() -> float | None:
    """CPU time the hypervisor gave to other guests since boot (the 'steal' column of /proc/stat's cpu line), in
    seconds; None where the kernel does not report it."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK") if fields[0] == "cpu" and len(fields) > 8 else None
    except (OSError, ValueError, IndexError):
        return None


def busy_during(start_steal: float | None) -> dict:
    """How busy the machine was at the end of an epoch: the 1-minute load average beside this process's threads
    (load above them is other work competing for the cores), and the steal time since `start_steal`."""
    now = steal_seconds()
    return {
        "load_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "threads": torch.get_num_threads(),
        "steal_s": round(now - start_steal, 3) if now is not None and start_steal is not None else None,
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
    return platform.processor() or device.type


def git_state() -> dict | None:
    here = Path(lrnbn.__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if commit.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.TimeoutExpired):
        return None


def environment(
    device: torch.device,
    world,
    dataset,
    mean: list[float],
    std: list[float],
    parameters: dict,
    compute: dict,
    probe_batch: dict | None = None,
) -> dict:
    """env.json: versions, device, threads, host, git state, the command, the dataset's identity, parameter counts,
    how the run computes (`compute`: precision, memory format, the LRN kernel that ran) and, with probes, the
    probe batch's class counts."""
    return {
        "lrnbn": lrnbn.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cuda": torch.version.cuda,
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "device": {
            "type": device.type,
            "name": device_name(device),
            **({"cpu_bf16": cpu_bf16_support()} if device.type == "cpu" else {}),
        },
        "compute": compute,
        "distributed": world.describe(),
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "git": git_state(),
        "command": sys.argv,
        "dataset": {**dataset.describe(), "input_mean": mean, "input_std": std},
        "model": parameters,
        **({"probe_batch": probe_batch} if probe_batch else {}),
    }
