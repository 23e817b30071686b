"""Everything one run is built from: device, data on the device, model, optimizer and schedule, seeded from the
config; their checkpoint and its restoration. The step, the epoch and evaluation that use them are in loop.py.

Built the same way for a new run and a resumed one; every check of the user's input happens in `Trainer.build`,
before anything is written.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from lrnbn import distributed, tblog
from lrnbn.config import Config, TrainConfig
from lrnbn.data import Dataset, DeviceSplit, input_stats, load_dataset
from lrnbn.distributed import World
from lrnbn.errors import UserError
from lrnbn.initialisation import initialise, weight_layers
from lrnbn.machine import check_amp, training_device
from lrnbn.models import build_model, count_parameters
from lrnbn.probes import Probes


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def check_per_layer_keys(config: Config, model: torch.nn.Module) -> None:
    layers = len(weight_layers(model))
    for key, values in (
        ("model.init_std", config.model.init_std),
        ("model.init_bias", config.model.init_bias),
        ("train.decay_mult", config.train.decay_mult),
        ("train.bias_decay_mult", config.train.bias_decay_mult),
    ):
        if values is not None and len(values) != layers:
            raise UserError(f"{key}: {config.model.arch} has {layers} conv/linear layers, got {len(values)} values")


def parameter_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict]:
    """One group per conv/linear weight and bias with its decay and lr multipliers (Caffe's decay_mult and lr_mult),
    and one for every other parameter; a single group when no multiplier is set."""
    if cfg.decay_mult is None and cfg.bias_decay_mult is None and cfg.bias_lr_mult == 1.0:
        return [{"params": list(model.parameters())}]
    groups, grouped = [], set()
    for i, layer in enumerate(weight_layers(model)):
        decay = cfg.decay_mult[i] if cfg.decay_mult else 1.0
        groups.append({"params": [layer.weight], "weight_decay": cfg.weight_decay * decay})
        grouped.add(layer.weight)
        if layer.bias is not None:
            bias_decay = cfg.bias_decay_mult[i] if cfg.bias_decay_mult else 1.0
            groups.append(
                {"params": [layer.bias], "weight_decay": cfg.weight_decay * bias_decay, "lr": cfg.lr * cfg.bias_lr_mult}
            )
            grouped.add(layer.bias)
    rest = [p for p in model.parameters() if p not in grouped]
    return groups + ([{"params": rest}] if rest else [])


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = parameter_groups(model, cfg)
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
    if cfg.schedule == "multistep":
        return cfg.step_gamma ** sum(1 for milestone in cfg.milestones if step >= milestone)
    if cfg.schedule == "cosine":
        progress = (step - warmup) / max(1.0, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return 1.0


def lrn_kernel_status(config: Config, device: torch.device) -> str | None:
    """What computes the LRN layers: the configured impl, or for impl fused the kernel that loads (building it on
    first use) or the fallback and why, said once on stderr."""
    lrn = config.model.lrn
    if config.model.norm != "lrn":
        return None
    if lrn.region == "within":
        return "within (avg_pool2d)"
    if lrn.impl != "fused":
        return lrn.impl
    from lrnbn import fused

    status = fused.status(device.type)
    if fused.backend(device.type) is None:
        fused.warn_fallback(device.type)
    return status


def autocast(device: torch.device, enabled: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


@dataclass
class Trainer:
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
    compute: dict  # how it computes, for env.json: precision, memory format, the LRN kernel

    @classmethod
    def build(cls, config: Config) -> Trainer:
        """Check the config against this machine and the data, then build; raises UserError before any write."""
        seed = config.experiment.seed
        device = training_device(config)
        if config.train.amp:
            check_amp(device)
        lrn_kernel = lrn_kernel_status(config, device)
        if config.log.tensorboard:
            tblog.check_installed()
        if config.train.threads:
            torch.set_num_threads(config.train.threads)
        world = distributed.join(device)
        load = partial(load_dataset, config.data, seed)
        dataset = world.main_first(load, others=load)  # a download, if any, happens once
        if config.train.batch_size > len(dataset.train):
            raise UserError(
                f"train.batch_size: {config.train.batch_size} exceeds the {len(dataset.train)} training images"
            )
        per_image = config.data.input_norm and config.data.input_norm_per == "image"  # scaled to [0, 1] first
        mean, std = input_stats(dataset.train, config.data.input_norm and not per_image, config.data.pixel_units)
        memory_format = torch.channels_last if config.train.channels_last else torch.contiguous_format
        train_split = DeviceSplit(dataset.train, device, mean, std, memory_format, per_image)
        seed_everything(seed)
        model = build_model(config.model, len(dataset.classes))
        check_per_layer_keys(config, model)
        initialise(model, config.model)
        train_module = model = model.to(device, memory_format=memory_format)
        if world.launched:
            if config.model.sync_bn:
                model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            train_module = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
            torch.manual_seed(world.seed(seed))  # dropout: every rank draws its own masks
        optimizer = make_optimizer(model, config.train)
        steps = train_split.steps_per_epoch(config.train.batch_size)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(lr_factor, config.train, steps))
        probes = None
        if config.probes.enabled and world.main:
            probes = Probes(
                model, *train_split.fixed_sample(min(config.probes.batch_size, len(train_split))), config.probes.every
            )
        compute = {
            "precision": "bf16 autocast" if config.train.amp else "fp32",
            "memory_format": "channels_last" if config.train.channels_last else "contiguous",
            "lrn_kernel": lrn_kernel,
        }
        return cls(
            config=config,
            device=device,
            dataset=dataset,
            mean=mean,
            std=std,
            train_split=train_split,
            test_split=DeviceSplit(dataset.test, device, mean, std, memory_format, per_image),
            model=model,
            train_module=train_module,
            optimizer=optimizer,
            scheduler=scheduler,
            data_generator=torch.Generator().manual_seed(seed),
            probes=probes,
            world=world,
            compute=compute,
        )

    @property
    def steps_per_epoch(self) -> int:
        return self.train_split.steps_per_epoch(self.config.train.batch_size)

    def parameter_counts(self) -> dict:
        return count_parameters(self.model)

    def checkpoint(self, position) -> dict:
        return {
            "config": self.config.model_dump(mode="json"),  # what resume checks config.yaml against
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            # bf16 autocast needs no gradient scaler, so there is no scaler state to keep.
            "position": {**position.__dict__},
            "probes": self.probes.state() if self.probes else None,
            # Every rank's generators, in rank order (a collective: every rank calls this, rank 0 saves it).
            "rng": self.world.gather(
                {
                    "python": random.getstate(),
                    "numpy": _numpy_state_to_torch(np.random.get_state()),
                    "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
                }  # the data generator's state is the position's: the one at the start of the epoch in progress
            ),
        }

    def restore(self, state: dict) -> dict:
        """Load a checkpoint's model, optimizer, schedule, RNG states and probe state; return its position."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        rng = state["rng"][self.world.rank]
        random.setstate(rng["python"])
        np.random.set_state(_numpy_state_from_torch(rng["numpy"]))
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.data_generator.set_state(state["position"]["epoch_generator_state"])
        if self.probes and state["probes"]:
            self.probes.restore(state["probes"])
        return state["position"]


def _numpy_state_to_torch(state: tuple) -> tuple:
    # A checkpoint loads with weights_only=True, which takes tensors but not numpy arrays.
    name, keys, pos, has_gauss, cached = state
    return name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached


def _numpy_state_from_torch(state: tuple) -> tuple:
    name, keys, pos, has_gauss, cached = state
    return name, keys.numpy().astype(np.uint32), pos, has_gauss, cached
