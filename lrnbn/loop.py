"""The training loop: one step, one epoch of steps from a position, and evaluation, side by side. Timing covers the
training phase only, with the device synchronised before the clock is read.

The loop keeps its running sums on the device and reads them (a sync) only at 20 progress points per epoch.
Under torchrun every collective goes through World, which returns its input unchanged in one process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from lrnbn.distributed import World
from lrnbn.machine import busy_during, steal_seconds, synchronize
from lrnbn.trainer import Trainer, autocast

PROGRESS_POINTS = 20  # per epoch: display updates, and where torchrun ranks agree on stopping


@dataclass
class Position:
    """Where a run stands: what a checkpoint captures beyond the model and optimizer, and what resume restores."""

    epoch: int = 1  # the epoch in progress, 1-based
    step: int = 0  # steps of it already done
    loss_sum: float = 0.0  # running sums of the epoch in progress, over all ranks
    correct: int = 0
    elapsed: float = 0.0  # training-phase seconds of the epoch in progress
    epoch_generator_state: torch.Tensor | None = None  # the data generator at the start of the epoch in progress
    records: list = field(default_factory=list)  # metrics of the finished epochs


class Stopped(Exception):
    """The epoch ended early: status "diverged" (a non-finite loss) or "interrupted" (a stop request)."""

    def __init__(self, status: str, step: int):
        self.status, self.step = status, step


class EpochMeter:
    """The epoch's loss sum, correct count and first non-finite step, on the device.

    Each rank adds its share of the global batch's mean loss; the sums over ranks are the epoch's figures. A position
    holds those, so on resume rank 0 starts from them and the other ranks from zero."""

    def __init__(self, position: Position, world: World, device: torch.device):
        self.world = world
        self.loss_sum = torch.tensor(position.loss_sum if world.main else 0.0, device=device, dtype=torch.float64)
        self.correct = torch.tensor(position.correct if world.main else 0, device=device, dtype=torch.int64)
        self.first_bad_step = torch.full((), -1, device=device, dtype=torch.int64)

    def add(self, step: int, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.first_bad_step = torch.where((self.first_bad_step < 0) & ~torch.isfinite(loss), step, self.first_bad_step)
        self.loss_sum += loss.detach() / self.world.size
        self.correct += (logits.argmax(1) == labels).sum()

    def totals(self) -> tuple[float, float, int]:
        """Loss sum, correct count, and how many ranks saw a non-finite loss, over all ranks (reads the device)."""
        loss, correct, bad = self.world.sum(
            torch.stack([self.loss_sum, self.correct.double(), (self.first_bad_step >= 0).double()])
        ).tolist()
        return loss, correct, int(bad)

    def first_bad(self, steps: int) -> int:
        """The earliest non-finite step over all ranks, 1-based."""
        mine = torch.where(self.first_bad_step >= 0, self.first_bad_step, steps)
        return int(self.world.min(mine)) + 1


def train_step(
    trainer: Trainer, images: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """One optimizer step on a batch: its logits, its loss (on the device, unread) and the lr it used."""
    with autocast(trainer.device, trainer.config.train.amp):
        logits = trainer.train_module(images)
    loss = F.cross_entropy(logits.float(), labels)
    trainer.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    lr = trainer.optimizer.param_groups[0]["lr"]
    if trainer.probes:
        trainer.probes.before_step()
    trainer.optimizer.step()
    trainer.scheduler.step()
    if trainer.probes:
        trainer.probes.after_step()
    return logits, loss, lr


def train_epoch(trainer: Trainer, position: Position, stop, view, record_probe) -> dict:
    """Train from `position` to the end of its epoch; return the epoch's training figures.

    Raises Stopped on a non-finite loss or a stop request; for a stop, `position` then holds the step reached and
    the sums so far, ready to checkpoint."""
    batch_size = trainer.config.train.batch_size
    world, device = trainer.world, trainer.device
    steps = trainer.steps_per_epoch
    trainer.train_module.train()
    meter = EpochMeter(position, world, device)
    report_every = max(1, steps // PROGRESS_POINTS)
    lr = trainer.optimizer.param_groups[0]["lr"]
    synchronize(device)
    steal_at_start = steal_seconds()
    start = time.perf_counter() - position.elapsed
    batches = trainer.train_split.train_batches(
        batch_size,
        trainer.data_generator,
        trainer.config.data.augment,
        start_step=position.step,
        part=world.slice(batch_size),
    )
    for step, (images, labels) in enumerate(batches, start=position.step):
        logits, loss, lr = train_step(trainer, images, labels)
        global_step = (position.epoch - 1) * steps + step + 1
        if trainer.probes and trainer.probes.due(global_step):
            record_probe(trainer.probes.measure(global_step, position.epoch))
        meter.add(step, loss, logits, labels)
        at_report = (step + 1) % report_every == 0 or step + 1 == steps
        if at_report:
            loss_total, correct_total, bad_ranks = meter.totals()
            if bad_ranks:
                raise Stopped("diverged", meter.first_bad(steps))
            seen = (step + 1) * batch_size
            view.step(step + 1, loss_total / (step + 1), correct_total / seen, seen / (time.perf_counter() - start))
        # All ranks must stop at the same step, or the others would wait forever in the next gradient all-reduce:
        # under torchrun they agree at progress points (one small collective); one process checks every step.
        if (at_report or not world.launched) and world.any(stop.is_set(), device):
            synchronize(device)
            loss_total, correct_total, _ = meter.totals()
            position.step, position.loss_sum, position.correct = step + 1, loss_total, int(correct_total)
            position.elapsed = time.perf_counter() - start
            raise Stopped("interrupted", step + 1)
    loss_total, correct_total, _ = meter.totals()
    synchronize(device)
    epoch_time = time.perf_counter() - start
    images = steps * batch_size
    return {
        "train_loss": loss_total / steps,
        "train_acc": correct_total / images,
        "epoch_time_s": epoch_time,
        "images_per_s": images / epoch_time,
        "lr": lr,
        **busy_during(steal_at_start),
    }


@torch.inference_mode()
def evaluate(trainer: Trainer) -> dict:
    """Test loss and accuracy over the whole split; under torchrun each rank evaluates its part of it."""
    model, split, world, device = trainer.model, trainer.test_split, trainer.world, trainer.device
    model.eval()
    world.share_buffers(model)
    sums = torch.zeros(2, device=device, dtype=torch.float64)  # loss, correct
    start = time.perf_counter()
    for images, labels in split.eval_batches(trainer.config.train.eval_batch_size, world.slice(len(split))):
        with autocast(device, trainer.config.train.amp):
            logits = model(images).float()
        sums[0] += F.cross_entropy(logits, labels, reduction="sum")
        sums[1] += (logits.argmax(1) == labels).sum()
    test_loss, test_acc = (world.sum(sums) / len(split)).tolist()  # .tolist() syncs the device
    return {"test_loss": test_loss, "test_acc": test_acc, "eval_time_s": time.perf_counter() - start}
