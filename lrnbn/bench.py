"""Micro-benchmarks that print ratios measured side by side in one run.

`bench_lrn`: forward + backward of BatchNorm2d, the stock (torch) LRN and the fast LRN for several window sizes,
interleaved (every repeat times each variant once, in turn) so that the machine's drift hits all of them alike.
Two reference rows bound what an elementwise implementation can reach: one elementwise pass over the tensor
(x * y) and one pass of pow (the exponent -beta that LRN needs and BN does not).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from lrnbn.lrn import IMPLS, local_response_norm

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


def _timer(device: torch.device) -> Callable[[Callable[[], None]], float]:
    def time_once(work: Callable[[], None]) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        work()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return (time.perf_counter() - start) * 1000

    return time_once


def _forward_backward(layer: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, grad: torch.Tensor):
    def work():
        x.grad = None
        layer(x).backward(grad)

    return work


def bench_lrn(
    shape=(128, 64, 32, 32),
    device: str = "cpu",
    dtype: str = "float32",
    threads: int | None = None,
    repeats: int = 10,
    warmup: int = 2,
    sizes=(1, 3, 5, 7, 9, 11, 15),
    channels_last: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict]:
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=generator).to(dev, DTYPES[dtype])
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    grad = torch.randn(shape, generator=generator).to(dev, DTYPES[dtype])
    bn = nn.BatchNorm2d(shape[1]).to(dev, DTYPES[dtype])
    plain = x.detach()

    variants: list[tuple[str, int | None, Callable[[], None]]] = [("bn", None, _forward_backward(bn, x, grad))]
    for impl in IMPLS:
        for n in sizes:

            def layer(t, n=n, impl=impl):
                return local_response_norm(t, n, impl=impl)

            variants.append((impl, n, _forward_backward(layer, x, grad)))
    variants.append(("elementwise-pass", None, lambda: plain * grad))
    variants.append(("pow-pass", None, lambda: plain.abs().add_(1).pow_(-0.75)))

    time_once = _timer(dev)
    samples: dict[int, list[float]] = {i: [] for i in range(len(variants))}
    rounds = warmup + repeats
    for round_ in range(rounds):
        for i, (_, _, work) in enumerate(variants):
            elapsed = time_once(work)
            if round_ >= warmup:
                samples[i].append(elapsed)
        if progress:
            progress(round_ + 1, rounds)

    bn_median = statistics.median(samples[0])
    results = []
    for i, (impl, size, _) in enumerate(variants):
        ms = sorted(samples[i])
        results.append(
            {
                "impl": impl,
                "size": size,
                "median_ms": statistics.median(ms),
                "min_ms": ms[0],
                "max_ms": ms[-1],
                "ratio_to_bn": statistics.median(ms) / bn_median,
            }
        )
    return results


def lrn_targets(results: list[dict]) -> dict:
    """The issue's targets, computed from one run's results."""
    fast = {r["size"]: r["median_ms"] for r in results if r["impl"] == "fast"}
    stock = {r["size"]: r["median_ms"] for r in results if r["impl"] == "torch"}
    bn = next(r["median_ms"] for r in results if r["impl"] == "bn")
    n = 5 if 5 in fast else sorted(fast)[len(fast) // 2]
    return {
        "fast_max_ratio_to_bn": max(fast.values()) / bn,
        "fast_flatness_max_over_min": max(fast.values()) / min(fast.values()),
        f"torch_over_fast_at_n{n}": stock[n] / fast[n],
    }


def bench_probes(config, repeats: int = 3, progress: Callable[[int, int], None] | None = None) -> dict:
    """Train `config` with probes off and on, alternating, `repeats` times each (run directories in a temporary
    folder): the median training-phase epoch time of each, and the overhead of probing."""
    import tempfile
    from pathlib import Path

    from lrnbn.train import run_training

    times: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as runs_dir:
        for round_ in range(repeats):
            for enabled in (False, True):
                probed = config.model_copy(update={"probes": config.probes.model_copy(update={"enabled": enabled})})
                records, _ = run_training(probed, Path(runs_dir)).run_dir.read_metrics()
                times[enabled] += [r["epoch_time_s"] for r in records]
            if progress:
                progress(round_ + 1, repeats)
    off, on = statistics.median(times[False]), statistics.median(times[True])
    return {"epochs_timed": len(times[False]), "off_median_s": off, "on_median_s": on, "overhead": on / off - 1}
