"""One training run: seed, load data, build, loop over epochs, time the training phase honestly, log to disk.

Flow: Config -> device, dataset (uint8 on device) and model -> epochs of (train, evaluate) -> RunDir files.
Everything that can be wrong with the user's input is checked before the run directory is created.
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

import lrnbn
from lrnbn import distributed, tblog
from lrnbn.config import Config, TrainConfig, all_keys, dump_config, load_config
from lrnbn.data import Dataset, DeviceSplit, input_stats, load_dataset
from lrnbn.distributed import World
from lrnbn.errors import UserError
from lrnbn.models import build_model, count_parameters
from lrnbn.probes import Probes, save_filter_grid
from lrnbn.rundir import CONFIG_FILE, FILTERS_FILE, SUMMARY_FILE, FollowerRunDir, RunDir

EXIT_CODES = {"completed": 0, "diverged": 3, "interrupted": 130}


@dataclass
class RunResult:
    run_dir: RunDir
    summary: dict

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.summary["status"], 1)


class NullView:
    """The display interface the loop reports to; this one shows nothing (library use, tests)."""

    def start(self, run_dir: RunDir, config: Config, dataset: Dataset, device: torch.device) -> None: ...
    def epoch_started(self, epoch: int, epochs: int, steps: int) -> None: ...
    def step(self, done: int, loss: float, acc: float, images_per_s: float) -> None: ...
    def epoch_done(self, record: dict) -> None: ...
    def finished(self, records: list[dict], summary: dict) -> None: ...


# ---------------------------------------------------------------------------------------------------------------
# Set-up.


def resolve_device(name: str) -> torch.device:
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if name == "cuda" and not cuda:
        raise UserError("train.device: cuda requested but torch sees no CUDA device; use train.device: cpu or auto")
    if name == "mps" and not mps:
        raise UserError("train.device: mps requested but this torch build or machine has no MPS; use cpu or auto")
    return torch.device(name)


def _training_device(config: Config) -> torch.device:
    """The device this process trains on, after the checks a torchrun launch adds (before the process group)."""
    device = resolve_device(config.train.device)
    world = distributed.current()
    if not world.launched:
        return device
    if device.type == "cuda":
        if world.local_rank >= torch.cuda.device_count():
            raise UserError(f"torchrun started local rank {world.local_rank} but torch sees "
                            f"{torch.cuda.device_count()} CUDA device(s); lower --nproc_per_node")
        device = torch.device("cuda", world.local_rank)
    elif config.model.sync_bn and config.model.norm == "bn":
        raise UserError(f"model.sync_bn: SyncBatchNorm runs on CUDA only, but the device is {device.type}; "
                        f"set model.sync_bn: false (each process then normalises over its slice of the batch)")
    if config.train.batch_size % world.size:
        raise UserError(f"train.batch_size: {config.train.batch_size} does not split evenly over {world.size} "
                        f"processes; use a multiple of {world.size}")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = model.parameters()
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    betas = (cfg.momentum, 0.999)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)


def lr_factor(cfg: TrainConfig, steps_per_epoch: int, step: int) -> float:
    """Multiplier on cfg.lr for optimizer step `step` (0-based); see TrainConfig.schedule for the shapes."""
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "onecycle":
        rise = cfg.warmup_epochs * steps_per_epoch or 0.3 * total
        if step < rise:
            return 1 / 25 + (1 - 1 / 25) * step / rise
        return max(0.0, (total - step) / max(1.0, total - rise))
    warmup = cfg.warmup_epochs * steps_per_epoch
    if step < warmup:
        return (step + 1) / warmup
    if cfg.schedule == "step":
        return cfg.step_gamma ** (step // steps_per_epoch // cfg.step_every)
    if cfg.schedule == "cosine":
        progress = (step - warmup) / max(1.0, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return 1.0


def _git_state() -> dict | None:
    here = Path(lrnbn.__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if commit.returncode != 0:
            return None
        status = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=5)
        return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.TimeoutExpired):
        return None


def _device_name(device: torch.device) -> str:
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


def environment(device: torch.device, world: World, dataset: Dataset, mean: list[float], std: list[float],
                model) -> dict:
    return {
        "lrnbn": lrnbn.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cuda": torch.version.cuda,
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "device": {"type": device.type, "name": _device_name(device)},
        "distributed": world.describe(),
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "git": _git_state(),
        "command": sys.argv,
        "dataset": {**dataset.describe(), "input_mean": mean, "input_std": std},
        "model": count_parameters(model),
    }


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


@contextmanager
def _stop_requests():
    """Ctrl-C and SIGTERM set a flag that the loop checks every step, so a run stops between steps, cleanly."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda *_: requested.set())
    try:
        yield requested
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# ---------------------------------------------------------------------------------------------------------------
# The loop.


@dataclass
class Position:
    """Where a run stands: what a checkpoint captures beyond the model and optimizer, and what resume restores."""

    epoch: int = 1  # the epoch in progress, 1-based
    step: int = 0  # steps of it already done
    loss_sum: float = 0.0  # running sums of the epoch in progress
    correct: int = 0
    elapsed: float = 0.0  # training-phase seconds of the epoch in progress
    epoch_generator_state: torch.Tensor | None = None  # the data generator at the start of the epoch in progress
    records: list = field(default_factory=list)  # metrics of the finished epochs


class _Stopped(Exception):
    def __init__(self, status: str, step: int):
        self.status, self.step = status, step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, enabled: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def train_epoch(trainer: "Trainer", position: Position, stop, view, record_probe) -> dict:
    """Train from `position` to the end of its epoch, keeping position's step and sums current.

    Raises _Stopped on a non-finite loss (position then holds the last finite step) or a stop request."""
    model, split, optimizer, scheduler = trainer.train_module, trainer.train_split, trainer.optimizer, trainer.scheduler
    cfg, device, generator, probes = trainer.config, trainer.device, trainer.data_generator, trainer.probes
    world = trainer.world
    model.train()
    steps = split.steps_per_epoch(cfg.train.batch_size)
    # Running sums stay on the device; they are read (a sync) only every `report_every` steps. Each rank adds its
    # share of the global batch's mean loss; the sums over ranks are the epoch's figures, and a position holds
    # those, so on resume rank 0 starts from them and the others from zero.
    loss_sum = torch.tensor(position.loss_sum if world.main else 0.0, device=device, dtype=torch.float64)
    correct = torch.tensor(position.correct if world.main else 0, device=device, dtype=torch.int64)
    first_bad_step = torch.full((), -1, device=device, dtype=torch.int64)

    def totals() -> list[float]:
        """Loss sum, correct count and ranks that saw a non-finite loss, summed over ranks (reads the device)."""
        return world.sum(torch.stack([loss_sum, correct.double(), (first_bad_step >= 0).double()])).tolist()

    report_every = max(1, steps // 20)
    lr = optimizer.param_groups[0]["lr"]
    _sync(device)
    start = time.perf_counter() - position.elapsed
    batches = split.train_batches(cfg.train.batch_size, generator, cfg.data.augment, start_step=position.step,
                                  part=world.slice(cfg.train.batch_size))
    for step, (images, labels) in enumerate(batches, start=position.step):
        with _autocast(device, cfg.train.amp):
            logits = model(images)
        loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        lr = optimizer.param_groups[0]["lr"]
        if probes:
            probes.before_step()
        optimizer.step()
        scheduler.step()
        if probes:
            probes.after_step()
            global_step = (position.epoch - 1) * steps + step + 1
            if probes.due(global_step):
                record_probe(probes.measure(global_step, position.epoch))
        first_bad_step = torch.where((first_bad_step < 0) & ~torch.isfinite(loss), step, first_bad_step)
        loss_sum += loss.detach() / world.size
        correct += (logits.argmax(1) == labels).sum()
        at_report = (step + 1) % report_every == 0 or step + 1 == steps
        if at_report:
            loss_total, correct_total, bad_ranks = totals()
            if bad_ranks:
                raise _Stopped("diverged", int(world.min(torch.where(first_bad_step >= 0, first_bad_step, steps))) + 1)
            seen = (step + 1) * cfg.train.batch_size
            view.step(step + 1, loss_total / (step + 1), correct_total / seen, seen / (time.perf_counter() - start))
        # All ranks must stop at the same step, or the others would wait forever in the next gradient all-reduce:
        # under torchrun they agree at report points (one small collective); one process checks every step.
        if (at_report or not world.launched) and world.any(stop.is_set(), device):
            _sync(device)
            loss_total, correct_total, _ = totals()
            position.step, position.loss_sum, position.correct = step + 1, loss_total, int(correct_total)
            position.elapsed = time.perf_counter() - start
            raise _Stopped("interrupted", step + 1)
    loss_total, correct_total, _ = totals()
    _sync(device)
    epoch_time = time.perf_counter() - start
    images = steps * cfg.train.batch_size
    return {
        "train_loss": loss_total / steps,
        "train_acc": correct_total / images,
        "epoch_time_s": epoch_time,
        "images_per_s": images / epoch_time,
        "lr": lr,
    }


@torch.inference_mode()
def evaluate(model, split: DeviceSplit, batch_size: int, amp: bool, device, world: World = World()) -> dict:
    """Test loss and accuracy over the whole split; under torchrun each rank evaluates its part of it."""
    model.eval()
    world.share_buffers(model)
    sums = torch.zeros(2, device=device, dtype=torch.float64)  # loss, correct
    start = time.perf_counter()
    for images, labels in split.eval_batches(batch_size, world.slice(len(split))):
        with _autocast(device, amp):
            logits = model(images).float()
        sums[0] += F.cross_entropy(logits, labels, reduction="sum")
        sums[1] += (logits.argmax(1) == labels).sum()
    test_loss, test_acc = (world.sum(sums) / len(split)).tolist()  # .tolist() syncs the device
    return {"test_loss": test_loss, "test_acc": test_acc, "eval_time_s": time.perf_counter() - start}


@dataclass
class Trainer:
    """Everything built from a config, ready to train: the same for a new run and a resumed one."""

    config: Config
    device: torch.device
    dataset: Dataset
    mean: list[float]
    std: list[float]
    train_split: DeviceSplit
    test_split: DeviceSplit
    model: torch.nn.Module
    train_module: torch.nn.Module  # what a training step calls: the model, or under torchrun DDP around it
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    data_generator: torch.Generator
    probes: Probes | None  # rank 0 only
    world: World

    @classmethod
    def build(cls, config: Config) -> "Trainer":
        """Check the config against this machine and the data, then build; raises UserError before any write."""
        seed = config.experiment.seed
        device = _training_device(config)
        if config.train.amp and device.type != "cuda":
            raise UserError(f"train.amp: bf16 autocast is supported on CUDA only, but the device is {device.type}")
        if config.log.tensorboard:
            tblog.check_installed()
        if config.train.threads:
            torch.set_num_threads(config.train.threads)
        world = distributed.join(device)
        load = partial(load_dataset, config.data, seed)
        dataset = world.main_first(load, others=load)  # a download, if any, happens once
        if config.train.batch_size > len(dataset.train):
            raise UserError(f"train.batch_size: {config.train.batch_size} exceeds the {len(dataset.train)} training images")
        mean, std = input_stats(dataset.train, config.data.input_norm)
        train_split = DeviceSplit(dataset.train, device, mean, std)
        seed_everything(seed)
        model = build_model(config.model, len(dataset.classes))
        train_module = model = model.to(device)
        if world.launched:
            if config.model.sync_bn:
                model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            train_module = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
            torch.manual_seed(world.seed(seed))  # dropout: every rank draws its own masks
        optimizer = make_optimizer(model, config.train)
        steps = train_split.steps_per_epoch(config.train.batch_size)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(lr_factor, config.train, steps))
        probes = None
        if config.probes.enabled and world.main:
            probes = Probes(model, train_split.first(min(config.probes.batch_size, len(train_split))), config.probes.every)
        return cls(config, device, dataset, mean, std, train_split, DeviceSplit(dataset.test, device, mean, std),
                   model, train_module, optimizer, scheduler, torch.Generator().manual_seed(seed), probes, world)

    def checkpoint(self, position: Position) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            # bf16 autocast needs no gradient scaler, so there is no scaler state to keep.
            "position": {**position.__dict__},
            "probes": self.probes.state() if self.probes else None,
            # Every rank's generators, in rank order (a collective: every rank calls this, rank 0 saves it).
            "rng": self.world.gather({
                "python": random.getstate(),
                "numpy": _numpy_state_to_torch(np.random.get_state()),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
                "data": self.data_generator.get_state(),
            }),
        }

    def restore(self, state: dict) -> Position:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        rng = state["rng"][self.world.rank]
        random.setstate(rng["python"])
        np.random.set_state(_numpy_state_from_torch(rng["numpy"]))
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(rng["cuda"])
        position = Position(**state["position"])
        self.data_generator.set_state(position.epoch_generator_state)
        if self.probes and state["probes"]:
            self.probes.restore(state["probes"])
        return position


def _numpy_state_to_torch(state: tuple) -> tuple:
    name, keys, pos, has_gauss, cached = state
    return name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached


def _numpy_state_from_torch(state: tuple) -> tuple:
    name, keys, pos, has_gauss, cached = state
    return name, keys.numpy().astype(np.uint32), pos, has_gauss, cached


def run_training(config: Config, runs_dir: Path, view=NullView()) -> RunResult:
    """Start a new run in a new, timestamped directory (under torchrun: rank 0 creates it, the others follow)."""
    trainer = Trainer.build(config)  # every check of the input happens before anything is written
    world = trainer.world
    run = _as_seen_by(world, world.main_first(lambda: RunDir.create(runs_dir, config.experiment.name).path))
    with run.lock():
        return _start(run, trainer, view)


def _as_seen_by(world: World, path: Path) -> RunDir:
    """The run directory as this rank may use it: rank 0 writes it, the others only read it."""
    return RunDir(path) if world.main else FollowerRunDir(path)


# Keys a resume may change: where the data is, how evaluation is batched, what is logged; none changes the trajectory.
RESUMABLE_KEYS = {"data.root", "data.download", "train.eval_batch_size", "log.tensorboard"}
FINAL_STATUSES = ("completed", "diverged")  # rerunning either would give the same result


def resume_training(path: Path, overrides: list[str], view=NullView()) -> RunResult:
    """Continue a run from its last checkpoint, with its saved config (under torchrun: as many processes as before)."""
    run = _as_seen_by(distributed.current(), path)
    if not run.is_run():
        raise UserError(f"{path} is not a run directory (it lacks {CONFIG_FILE} or {SUMMARY_FILE})")
    config = load_config(path / CONFIG_FILE, overrides)
    changed = changed_keys(load_config(path / CONFIG_FILE), config)
    if changed:
        raise UserError(f"--set {changed[0]}: a resumed run keeps its config (only {', '.join(sorted(RESUMABLE_KEYS))} "
                        f"may change); start a new run instead")
    with run.lock():
        summary = run.read_summary()
        if summary["status"] in FINAL_STATUSES:
            return RunResult(run, summary)
        return _resume(run, config, view)


def train_at(path: Path, config: Config, view=NullView(), threads: int | None = None) -> RunResult:
    """Bring the run that lives at `path` (a study's run) to an end: leave it if it has ended, resume it if it
    stopped, start it (afresh, if it failed) otherwise. `threads` applies when the config leaves train.threads null."""
    if threads and config.train.threads is None:
        torch.set_num_threads(threads)
    run = RunDir(path)
    trainer = None if run.is_run() else Trainer.build(config)  # check the input before creating anything
    path.mkdir(parents=True, exist_ok=True)
    with run.lock():
        if run.is_run():
            changed = changed_keys(load_config(path / CONFIG_FILE), config)
            if changed:
                raise UserError(f"{path}: its saved config differs from the study's at {changed[0]}; "
                                f"delete the run directory to run it with the new config")
            summary = run.read_summary()
            if summary["status"] in FINAL_STATUSES:
                return RunResult(run, summary)
            if summary["status"] != "failed" and run.has_checkpoint():
                return _resume(run, config, view)
        run.clear()
        return _start(run, trainer or Trainer.build(config), view)


def changed_keys(saved: Config, config: Config) -> list[str]:
    """Keys on which two configs describe different experiments."""
    return [key for key in all_keys() if _get(saved, key) != _get(config, key) and key not in RESUMABLE_KEYS]


def _start(run: RunDir, trainer: Trainer, view) -> RunResult:
    config = trainer.config
    run.write_config(dump_config(config))
    run.write_env(environment(trainer.device, trainer.world, trainer.dataset, trainer.mean, trainer.std, trainer.model))
    summary = {"status": "running", "started_at": _now(), "epochs_planned": config.train.epochs, "epochs_done": 0}
    return _train(trainer, run, Position(), summary, view)


def _resume(run: RunDir, config: Config, view) -> RunResult:
    trainer = Trainer.build(config)
    env = run.read_env()
    recorded = env["dataset"]["fingerprint"]
    if trainer.dataset.fingerprint() != recorded:
        raise UserError(f"the dataset differs from the one the run started with (fingerprint "
                        f"{trainer.dataset.fingerprint()}, recorded {recorded})")
    processes = env.get("distributed", {}).get("world_size", 1)
    if processes != trainer.world.size:
        raise UserError(f"the run was trained by {processes} process(es) and this is {trainer.world.size}: each "
                        f"process's random state (and BN statistics) is part of it; resume with "
                        + ("torchrun --nproc_per_node " + str(processes) if processes > 1 else "one process"))
    state = run.load_checkpoint(map_location=trainer.device)
    # No checkpoint: it stopped inside its first epoch, so the freshly built trainer is where it began.
    position = trainer.restore(state) if state else Position()
    run.rewrite_metrics(position.records)
    steps = trainer.train_split.steps_per_epoch(config.train.batch_size)
    run.rewrite_probes(until_step=(position.epoch - 1) * steps + position.step)
    summary = {k: v for k, v in run.read_summary().items() if k not in ("stopped_at", "error")}
    summary.update(status="running", epochs_done=len(position.records))
    summary.setdefault("resumed", []).append({"at": _now(), "epoch": position.epoch, "step": position.step})
    return _train(trainer, run, position, summary, view)


def _get(config: Config, dotted: str):
    value = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def _train(trainer: Trainer, run: RunDir, position: Position, summary: dict, view) -> RunResult:
    config = trainer.config
    started = time.perf_counter()
    board = None
    try:
        run.write_summary(summary)
        if config.log.tensorboard and trainer.world.main:
            board = tblog.EpochLog(run.tensorboard_dir, dump_config(config), position.records, bool(summary.get("resumed")))
        view.start(run, config, trainer.dataset, trainer.device)
        with _stop_requests() as stop:
            while position.epoch <= config.train.epochs:
                epoch = position.epoch
                if position.step == 0:
                    position.epoch_generator_state = trainer.data_generator.get_state()
                view.epoch_started(epoch, config.train.epochs, trainer.train_split.steps_per_epoch(config.train.batch_size))
                try:
                    trained = train_epoch(trainer, position, stop, view, run.append_probe)
                except _Stopped as stopped:
                    summary.update(status=stopped.status, stopped_at={"epoch": epoch, "step": stopped.step})
                    if stopped.status == "interrupted":
                        run.save_checkpoint(trainer.checkpoint(position))
                    break
                evaluated = evaluate(trainer.model, trainer.test_split, config.train.eval_batch_size, config.train.amp,
                                     trainer.device, trainer.world)
                record = {"epoch": epoch, **trained, **evaluated,
                          "steps": epoch * trainer.train_split.steps_per_epoch(config.train.batch_size)}
                position = Position(epoch=epoch + 1, records=position.records + [record],
                                    epoch_generator_state=trainer.data_generator.get_state())
                # Checkpoint first: it holds the records, and resume rewrites metrics.jsonl from it.
                run.save_checkpoint(trainer.checkpoint(position))
                run.append_metrics(record)
                if board:
                    board.add(record)
                view.epoch_done(record)
                summary["epochs_done"] = epoch
                if trainer.world.any(stop.is_set(), trainer.device) and epoch < config.train.epochs:
                    summary.update(status="interrupted", stopped_at={"epoch": epoch + 1, "step": 0})
                    break
            else:
                summary["status"] = "completed"
        if trainer.probes:
            save_filter_grid(trainer.probes.conv1.weight, run.path / FILTERS_FILE)
    except BaseException as exc:
        summary.update(status="failed" if not isinstance(exc, KeyboardInterrupt) else "interrupted",
                       error=f"{exc.__class__.__name__}: {exc}")
        _finish(run, summary, position.records, started)
        raise
    finally:
        if board:
            board.close()
    _finish(run, summary, position.records, started)
    view.finished(position.records, summary)
    return RunResult(run, summary)


def _finish(run: RunDir, summary: dict, records: list[dict], started: float) -> None:
    test_accs = [r["test_acc"] for r in records]
    summary.update(
        final_test_acc=test_accs[-1] if test_accs else None,
        best_test_acc=max(test_accs) if test_accs else None,
        best_epoch=records[test_accs.index(max(test_accs))]["epoch"] if test_accs else None,
        total_train_time_s=sum(r["epoch_time_s"] for r in records),
        total_eval_time_s=sum(r["eval_time_s"] for r in records),
        wall_time_s=summary.get("wall_time_s", 0.0) + time.perf_counter() - started,
        finished_at=_now(),
    )
    run.write_summary(summary)
