"""Every CUDA path of lrnbn in one command (a few minutes on one GPU): `python scripts/gpu_check.py [--out DIR]`.

1. the fused (Triton) and fast LRN against the stock layer on CUDA: values and gradients, fp32 and bf16,
   contiguous and channels_last;
2. a short bf16 autocast run per norm (BN, fused LRN, none) on synthetic data;
3. `lrnbn compare --devices cuda:0` placing a small study's runs on the GPU;
4. a one-process NCCL torchrun run, and one with model.sync_bn;
5. `lrnbn bench lrn` and `lrnbn bench train` on CUDA;
6. the GPU target: AlexNet-style at width 1 with BN, one epoch of 50,000 (synthetic) 32x32 images, bf16 and
   channels_last, epoch time (training phase, synchronised), against the fused LRN's.
Each step prints PASS or FAIL with its figures; the exit code is the number of failed steps. With --out, every
step's output, run directory and JSON lands there.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent


def lrnbn(*args: str, out: Path, name: str, timeout: int = 300, torchrun: bool = False) -> subprocess.CompletedProcess:
    prefix = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"]
        if torchrun
        else [sys.executable]
    )
    result = subprocess.run([*prefix, "-m", "lrnbn", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)
    (out / f"{name}.log").write_text(f"$ lrnbn {' '.join(args)}\n{result.stdout}\n{result.stderr}")
    return result


def check_lrn_against_stock() -> dict:
    from lrnbn.lrn import apply_lrn, canonical

    worst = {}
    torch.manual_seed(0)
    for convention, size in (("pytorch", 5), ("onnx", 4), ("alexnet-paper", 5), ("cudnn", 16)):
        p = canonical(size, 1e-2, 0.75, 2.0, convention)
        for dtype in (torch.float32, torch.bfloat16):
            for last in (False, True):
                x = (torch.randn(64, 96, 16, 16, device="cuda") * 3).to(dtype)
                g = torch.randn(64, 96, 16, 16, device="cuda").to(dtype)
                if last:
                    x = x.contiguous(memory_format=torch.channels_last)
                x64 = x.double().requires_grad_()
                y64 = apply_lrn(x64, p, "torch")
                (d64,) = torch.autograd.grad(y64, x64, g.double())
                for impl in ("fast", "fused"):
                    xi = x.clone().requires_grad_()
                    y = apply_lrn(xi, p, impl)
                    (d,) = torch.autograd.grad(y, xi, g)
                    key = f"{impl} {str(dtype).removeprefix('torch.')}"
                    err = max(
                        ((y.double() - y64).abs() / (y64.abs() + 1e-2)).max().item(),
                        ((d.double() - d64).abs() / (d64.abs() + 1e-1)).max().item(),
                    )
                    worst[key] = max(worst.get(key, 0.0), err)
    from lrnbn import fused

    limits = {"float32": 1e-4, "bfloat16": 3e-2}
    ok = all(err <= limits[key.split()[1]] for key, err in worst.items())
    return {"ok": ok, "worst relative error": worst, "fused ran as": fused.status("cuda")}


SYNTHETIC = ["--set", "data.dataset=synthetic", "--set", "train.device=cuda", "--set", "train.amp=true"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="folder for logs, runs and JSON (default: a temp dir)")
    out = (parser.parse_args().out or Path(tempfile.mkdtemp(prefix="lrnbn-gpu-check-"))).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not torch.cuda.is_available():
        print("no CUDA device: this script checks lrnbn's GPU paths and needs one", file=sys.stderr)
        return 2
    print(f"{torch.cuda.get_device_name()} | torch {torch.__version__} | CUDA {torch.version.cuda} | out: {out}")
    results: dict[str, dict] = {}

    def step(name: str, action) -> None:
        started = time.perf_counter()
        try:
            outcome = action()
        except Exception as exc:  # report every step, whatever breaks
            outcome = {"ok": False, "error": f"{exc.__class__.__name__}: {str(exc)[:500]}"}
        outcome["seconds"] = round(time.perf_counter() - started, 1)
        results[name] = outcome
        figures = json.dumps({k: v for k, v in outcome.items() if k != "ok"})
        print(f"{'PASS' if outcome['ok'] else 'FAIL'} {name}: {figures}", flush=True)

    step("lrn kernels vs stock", check_lrn_against_stock)

    def amp_runs() -> dict:
        figures = {}
        for norm, extra in (("bn", []), ("lrn", ["--set", "model.lrn.impl=fused"]), ("none", [])):
            r = lrnbn(
                "train",
                "-c",
                "configs/alexnet-lrn.yaml",
                *SYNTHETIC,
                "--set",
                f"model.norm={norm}",
                *extra,
                "--set",
                "train.epochs=2",
                "--set",
                "data.synthetic_train_size=10000",
                "--runs-dir",
                str(out / "runs"),
                "--name",
                f"amp-{norm}",
                out=out,
                name=f"amp-{norm}",
            )
            runs = sorted((out / "runs" / f"amp-{norm}").glob("*/metrics.jsonl"))
            last = json.loads(runs[-1].read_text().splitlines()[-1]) if runs else {}
            env = json.loads((runs[-1].parent / "env.json").read_text()) if runs else {}
            figures[norm] = {
                "exit": r.returncode,
                "test_acc": last.get("test_acc"),
                "epoch_s": last.get("epoch_time_s"),
                "compute": env.get("compute"),
            }
        return {"ok": all(f["exit"] == 0 for f in figures.values()), **figures}

    step("bf16 runs per norm", amp_runs)

    def compare_on_gpu() -> dict:
        study = out / "gpu-study.yaml"
        study.write_text(
            json.dumps(
                {
                    "name": "gpu-study",
                    "base": str(REPO / "configs/smoke.yaml"),
                    "set": {"train.device": "cuda", "train.epochs": 1},
                    "grid": {"model.norm": ["bn", "lrn"]},
                    "seeds": [0, 1],
                }
            )
        )
        r = lrnbn(
            "compare",
            str(study),
            "--devices",
            "cuda:0",
            "--jobs",
            "2",
            "--runs-dir",
            str(out / "runs"),
            out=out,
            name="compare",
        )
        envs = [json.loads(p.read_text()) for p in (out / "runs" / "gpu-study").glob("*/env.json")]
        on_gpu = [e["device"]["type"] == "cuda" for e in envs]
        return {"ok": r.returncode == 0 and len(envs) == 4 and all(on_gpu), "runs": len(envs), "on cuda": sum(on_gpu)}

    step("compare --devices cuda:0", compare_on_gpu)

    def torchrun_runs() -> dict:
        figures = {}
        for name, extra in (("ddp", []), ("ddp-syncbn", ["--set", "model.sync_bn=true"])):
            r = lrnbn(
                "train",
                "-c",
                "configs/smoke.yaml",
                "--set",
                "train.device=cuda",
                *extra,
                "--runs-dir",
                str(out / "runs"),
                "--name",
                name,
                out=out,
                name=name,
                torchrun=True,
            )
            envs = sorted((out / "runs" / name).glob("*/env.json"))
            env = json.loads(envs[-1].read_text()) if envs else {}
            figures[name] = {"exit": r.returncode, "distributed": env.get("distributed")}
        ok = all(f["exit"] == 0 and (f["distributed"] or {}).get("backend") == "nccl" for f in figures.values())
        return {"ok": ok, **figures}

    step("torchrun nccl (and sync_bn)", torchrun_runs)

    def benchmarks() -> dict:
        lrn = lrnbn(
            "bench", "lrn", "--device", "cuda", "--json", str(out / "bench-lrn.json"), out=out, name="bench-lrn"
        )
        train = lrnbn(
            "bench",
            "train",
            "--device",
            "cuda",
            "--width",
            "1",
            "--json",
            str(out / "bench-train.json"),
            out=out,
            name="bench-train",
        )
        figures = {}
        if lrn.returncode == 0:
            figures["bench lrn"] = [line for line in lrn.stdout.splitlines() if ":" in line and "_" in line]
        if train.returncode == 0:
            rows = json.loads((out / "bench-train.json").read_text())["rows"]
            figures["bench train ratio to BN"] = {
                f"{r['norm']} {r['precision']} {r['format']}": round(r["ratio_to_bn"], 2) for r in rows
            }
        return {"ok": lrn.returncode == 0 and train.returncode == 0, **figures}

    step("benchmarks on cuda", benchmarks)

    def epoch_target() -> dict:
        figures = {}
        for norm, extra in (("bn", []), ("lrn-fused", ["--set", "model.norm=lrn", "--set", "model.lrn.impl=fused"])):
            args = [
                "train",
                "-c",
                "configs/alexnet-bn.yaml",
                *SYNTHETIC,
                "--set",
                "model.width=1",
                *extra,
                "--set",
                "data.synthetic_train_size=50000",
                "--set",
                "data.synthetic_test_size=10000",
                "--set",
                "train.epochs=3",
                "--set",
                "train.eval_batch_size=1000",
                "--runs-dir",
                str(out / "runs"),
                "--name",
                f"epoch-{norm}",
            ]
            r = lrnbn(*args, out=out, name=f"epoch-{norm}", timeout=600)
            metrics = sorted((out / "runs" / f"epoch-{norm}").glob("*/metrics.jsonl"))
            times = (
                [json.loads(line)["epoch_time_s"] for line in metrics[-1].read_text().splitlines()] if metrics else []
            )
            figures[norm] = {"exit": r.returncode, "epoch_s (first is warm-up)": [round(t, 2) for t in times]}
        bn, lrn = (min(figures[k]["epoch_s (first is warm-up)"][1:] or [float("nan")]) for k in ("bn", "lrn-fused"))
        figures["BN epoch <= 2 s"] = bn <= 2.0
        figures["fused LRN / BN"] = round(lrn / bn, 2)
        return {"ok": all(f["exit"] == 0 for f in figures.values() if isinstance(f, dict)), **figures}

    step("epoch of 50,000 images at width 1", epoch_target)

    (out / "gpu-check.json").write_text(
        json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "steps": results}, indent=2)
        + "\n"
    )
    failed = [name for name, r in results.items() if not r["ok"]]
    print(
        f"{len(results) - len(failed)}/{len(results)} steps passed"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return len(failed)


if __name__ == "__main__":
    sys.exit(main())
