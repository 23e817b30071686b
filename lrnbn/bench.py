"""Benchmarks that print ratios measured side by side in one run. Every variant is timed once per round, each round
in its own shuffled order (interleaved), so that the machine's drift and a variant's place in the round hit all of
them alike; figures are medians with min-max.

`bench_lrn`: forward + backward of BatchNorm2d and of each LRN implementation for several window sizes. Two
reference rows bound what an elementwise implementation can reach: one elementwise pass over the tensor (x * y) and
one pass of pow (the exponent -beta that LRN needs and BN does not).
`bench_peers`: the LRN of every framework installed beside lrnbn's, timed and checked against float64 (peers.py).
`bench_train`: one training step (forward, backward, SGD) of a whole model per normalization, precision and memory
format.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from lrnbn.lrn import local_response_norm
from lrnbn.machine import synchronize
from lrnbn.registry import LRN_IMPLS, NORMS

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


def _timer(device: torch.device) -> Callable[[Callable[[], None]], float]:
    def time_once(work: Callable[[], None]) -> float:
        synchronize(device)
        start = time.perf_counter()
        work()
        synchronize(device)
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
    impls=None,
) -> list[dict]:
    """`impls`: the LRN implementations to time beside BN (default: every one). Timing the fused layer alone keeps
    the stock layer's second-long calls out of its rounds, which measures its flatness in n more closely."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    impls = impls or LRN_IMPLS.names
    for impl in impls:
        LRN_IMPLS[impl]  # refuses an unknown name, naming the valid ones
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    generator = torch.Generator().manual_seed(0)
    # The gradient in x's layout, as a layer meets it in training. A contiguous gradient under a channels_last x sent
    # BatchNorm2d down a slow path: 134.6 ms instead of 23.2 in fp32, 121.3 instead of 8.9 in bf16 (this shape, 2
    # threads, AMD EPYC, the two gradients alternated in one run of BN alone), which had made every LRN look 3-7x
    # cheaper than BN in channels_last.
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(shape, generator=generator).to(dev, DTYPES[dtype]).contiguous(memory_format=memory_format)
    x.requires_grad_()
    grad = torch.randn(shape, generator=generator).to(dev, DTYPES[dtype]).contiguous(memory_format=memory_format)
    bn = nn.BatchNorm2d(shape[1]).to(dev, DTYPES[dtype])
    plain = x.detach()

    variants: list[tuple[str, int | None, Callable[[], None]]] = [("bn", None, _forward_backward(bn, x, grad))]
    for impl in impls:
        for n in sizes:

            def layer(t, n=n, impl=impl):
                return local_response_norm(t, n, impl=impl)

            variants.append((impl, n, _forward_backward(layer, x, grad)))
    variants.append(("elementwise-pass", None, lambda: plain * grad))
    variants.append(("pow-pass", None, lambda: plain.abs().add_(1).pow_(-0.75)))

    samples = _interleaved([work for _, _, work in variants], _timer(dev), repeats, warmup, progress)
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


def bench_peers(
    shape=(128, 64, 32, 32), radii=(1, 2, 5, 10), repeats: int = 10, warmup: int = 2, progress=None
) -> tuple[list[dict], dict[str, str]]:
    """Every peer's median time at each depth_radius on one float32 tensor, interleaved, with its largest relative
    error against the float64 reference there and on the wide-magnitude input."""
    from lrnbn.peers import ALPHA, BETA, BIAS, WIDE, WIDE_LAYER, peers, reference, relative_error

    found, skipped = peers()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).numpy()
    cases = [(peer, r, *peer.prepare(x, r, ALPHA, BETA, BIAS)) for peer in found for r in radii]
    samples = _interleaved([work for _, _, work, _ in cases], _timer(torch.device("cpu")), repeats, warmup, progress)
    wide_want = reference(WIDE, *WIDE_LAYER)
    wide_error = {peer.name: relative_error(peer.prepare(WIDE, *WIDE_LAYER)[1](), wide_want) for peer in found}
    rows = []
    for (peer, radius, _, output), times in zip(cases, samples):
        rows.append(
            {
                "peer": peer.name,
                "version": peer.version,
                "direction": peer.direction,
                "depth_radius": radius,
                "median_ms": statistics.median(times),
                "min_ms": min(times),
                "max_ms": max(times),
                "max_rel_error": relative_error(output(), reference(x, radius, ALPHA, BETA, BIAS)),
                "max_rel_error_wide": wide_error[peer.name],
            }
        )
    return rows, skipped


def lrn_targets(results: list[dict]) -> dict:
    """Per implementation other than the stock one: its slowest ratio to BN, its flatness in n (slowest over
    fastest) and, where the stock layer was timed, how many times faster than it it is at n = 5 (or the middle n)."""
    bn = next(r["median_ms"] for r in results if r["impl"] == "bn")
    by_impl = {impl: {r["size"]: r["median_ms"] for r in results if r["impl"] == impl} for impl in LRN_IMPLS.names}
    stock = by_impl.pop("torch")
    targets = {}
    for impl, times in by_impl.items():
        if not times:
            continue
        n = 5 if 5 in times else sorted(times)[len(times) // 2]
        targets[f"{impl}_max_ratio_to_bn"] = max(times.values()) / bn
        targets[f"{impl}_flatness_max_over_min"] = max(times.values()) / min(times.values())
        if n in stock:
            targets[f"torch_over_{impl}_at_n{n}"] = stock[n] / times[n]
    return targets


# Every normalization, LRN once per implementation.
TRAIN_NORMS = tuple(n for n in NORMS.names if n != "lrn") + tuple(f"lrn-{impl}" for impl in LRN_IMPLS.names)
PRECISIONS = ("fp32", "bf16")
FORMATS = ("contiguous", "channels_last")


def bench_train(
    arch: str = "alexnet",
    width: float = 0.5,
    batch_size: int = 128,
    device: str = "cpu",
    threads: int | None = None,
    repeats: int = 5,
    warmup: int = 2,
    norms=None,
    precisions=PRECISIONS,
    formats=FORMATS,
    sizes=(5,),
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """One SGD step (forward, backward, update) on a fixed random batch for every norm x precision x memory format,
    and every LRN once per window size n in `sizes`.

    LRN is the AlexNet paper's layer (alpha 1e-4, beta 0.75, k 2) at each n. bf16 is autocast, where the device has
    native bf16 (otherwise those variants are skipped and `skipped` says why). Returns the rows (median, min, max ms;
    ratios to BN in the same precision and format, and to the fp32 contiguous BN step) and what was skipped."""
    from lrnbn.config import Config, LRNConfig, ModelConfig
    from lrnbn.errors import UserError
    from lrnbn.machine import check_amp
    from lrnbn.trainer import lrn_kernel_status

    norms = norms or TRAIN_NORMS
    unknown = [n for n in norms if n not in TRAIN_NORMS]
    if unknown:
        raise ValueError(f"unknown norm {unknown[0]!r}; choose from {', '.join(TRAIN_NORMS)}")
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    skipped = {}
    if "bf16" in precisions:
        try:
            check_amp(dev)
        except UserError as err:
            skipped["bf16"] = str(err)
            precisions = [p for p in precisions if p != "bf16"]
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, 3, 32, 32, generator=generator).to(dev)
    labels = torch.randint(0, 10, (batch_size,), generator=generator).to(dev)
    variants, kernels = [], {}
    for norm in norms:
        name, _, impl = norm.partition("-")
        for size in sizes if name == "lrn" else (None,):
            lrn = LRNConfig(convention="alexnet-paper", size=size or 5, alpha=1e-4, k=2.0, impl=impl or "torch")
            cfg = ModelConfig(arch=arch, width=width, norm=name, lrn=lrn)
            if name == "lrn":
                kernels[norm] = lrn_kernel_status(Config(model=cfg), dev)
            for fmt in formats:
                for precision in precisions:
                    step = _sgd_step(cfg, dev, images, labels, fmt, precision == "bf16")
                    variants.append(((norm, size, precision, fmt), step))
    samples = _interleaved([work for _, work in variants], _timer(dev), repeats, warmup, progress)
    setting = {"arch": arch, "width": width, "batch_size": batch_size, "device": device}
    setting |= {"threads": torch.get_num_threads(), "repeats": repeats}
    return {"rows": _step_rows(variants, samples), "skipped": skipped, "lrn_kernels": kernels, "setting": setting}


def _sgd_step(cfg, dev: torch.device, images, labels, fmt: str, amp: bool) -> Callable[[], None]:
    """One SGD step of a fresh model of `cfg` (seeded alike for every variant) on the fixed batch, in `fmt`."""
    from lrnbn.models import build_model
    from lrnbn.trainer import autocast

    memory_format = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
    torch.manual_seed(0)
    model = build_model(cfg, 10).to(dev, memory_format=memory_format).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batch = images.contiguous(memory_format=memory_format)

    def step():
        with autocast(dev, amp):
            logits = model(batch)
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _step_rows(variants: list, samples: list[list[float]]) -> list[dict]:
    """Per (norm, LRN size, precision, format): median, min and max ms, and ratios to BN alike and to fp32
    contiguous BN."""
    medians = {key: statistics.median(samples[i]) for i, (key, _) in enumerate(variants)}
    reference = medians.get(("bn", None, "fp32", "contiguous"))
    rows = []
    for i, (key, _) in enumerate(variants):
        norm, size, precision, fmt = key
        bn = medians.get(("bn", None, precision, fmt))
        rows.append(
            {
                "norm": norm,
                "size": size,
                "precision": precision,
                "format": fmt,
                "median_ms": medians[key],
                "min_ms": min(samples[i]),
                "max_ms": max(samples[i]),
                "ratio_to_bn": medians[key] / bn if bn else None,
                "ratio_to_fp32_contiguous_bn": medians[key] / reference if reference else None,
            }
        )
    return rows


def _interleaved(works: list[Callable[[], None]], time_once, repeats: int, warmup: int, progress) -> list[list[float]]:
    """Time every work once per round, for warmup + repeats rounds, each round in its own shuffled order (seeded, so
    a rerun times the same orders); the timed rounds' samples (ms), one list per work in `works`' order. In a fixed
    order a variant always follows the same one, whose freed memory and caches it inherits."""
    samples: list[list[float]] = [[] for _ in works]
    rounds = warmup + repeats
    order = list(range(len(works)))
    shuffler = random.Random(0)
    for round_ in range(rounds):
        shuffler.shuffle(order)
        for i in order:
            elapsed = time_once(works[i])
            if round_ >= warmup:
                samples[i].append(elapsed)
        if progress:
            progress(round_ + 1, rounds)
    return samples


def bench_probes(config, repeats: int = 3, progress: Callable[[int, int], None] | None = None) -> dict:
    """Train `config` with probes off and on, alternating, `repeats` times each (run directories in a temporary
    folder): the median training-phase epoch time of each, and the overhead of probing."""
    import tempfile
    from pathlib import Path

    from lrnbn.lifecycle import run_training

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
