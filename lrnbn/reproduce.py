"""`lrnbn reproduce RUN_DIR`: rerun a recorded run as it was made, and say whether it came out the same.

The rerun takes the run's config.yaml with the machine keys it really ran with, from env.json: its thread count
(a study's `--jobs` sets the threads of runs whose config.yaml leaves train.threads null) and its device type. It
trains in a scratch folder from scratch (the schedule is the config's, however few epochs are asked for) and
compares its metrics epoch by epoch with the record. On the same CPU model, thread count and library versions a
run is bitwise reproducible; elsewhere bf16 and the order of float sums differ, and the answer names what differs.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lrnbn.config import Config, apply_overrides, validate
from lrnbn.errors import UserError
from lrnbn.keys import MACHINE_KEYS
from lrnbn.records import load_run
from lrnbn.rundir import CONFIG_FILE, SUMMARY_FILE, DamagedRun, RunDir

COMPARED = ("train_loss", "train_acc", "test_loss", "test_acc")  # epoch times differ on any machine
# What env.json records of the machine, by the words the answer uses for it.
MACHINE = {
    "CPU or GPU model": ("device", "name"),
    "native bf16 (ISA flags)": ("device", "cpu_bf16"),
    "threads": ("cpu_threads",),
    "torch": ("torch",),
    "torchvision": ("torchvision",),
    "python": ("python",),
    "lrnbn": ("lrnbn",),
}


@dataclass
class Outcome:
    epochs: int  # compared
    first_differing: int | None  # the first epoch whose metrics differ; None: identical
    largest: tuple[str, int, float] | None  # (metric, epoch, |difference|) of the largest difference
    machine: list[str]  # what differs between the recorded machine and this one, in words

    def text(self, path: Path) -> str:
        if self.first_differing is None:
            epochs = f"{self.epochs} epoch" + ("s" if self.epochs != 1 else "")
            return f"identical: {epochs} of {path}, every metric equal to the record"
        metric, epoch, size = self.largest
        where = f"; the machines differ in {', '.join(self.machine)}" if self.machine else "; on the same machine"
        return (
            f"differs from epoch {self.first_differing} of {self.epochs}: the largest difference is {metric} "
            f"{size:.3g} at epoch {epoch}{where}"
        )


def recorded_config(run, overrides: list[str]) -> Config:
    """The run's config with the thread count and device it really ran with, and `overrides` of machine keys."""
    for text in overrides:
        key = text.split("=", 1)[0].strip()
        if key not in MACHINE_KEYS:
            raise UserError(
                f"--set {key}: a reproduction keeps the run's experiment; only {', '.join(sorted(MACHINE_KEYS))} "
                "may change"
            )
    threads, device = run.env.cpu_threads, run.env.device_type
    machine = [f"train.threads={threads}"] if threads else []
    machine += [f"train.device={device}"] if device else []
    return validate(apply_overrides(run.config, machine + list(overrides)), source=f"{run.path}/config.yaml")


def compare_metrics(recorded: list[dict], rerun: list[dict]) -> tuple[int | None, tuple[str, int, float] | None]:
    """The first epoch whose compared metrics differ, and the largest difference (metric, epoch, size)."""
    first, largest = None, None
    for then, now in zip(recorded, rerun):
        for metric in COMPARED:
            size = abs(then[metric] - now[metric])
            if size > 0 or math.isnan(size):
                first = first or then["epoch"]
                if largest is None or size > largest[2]:
                    largest = (metric, then["epoch"], size)
    return first, largest


def _at(env: dict, path: tuple[str, ...]):
    for part in path:
        env = env.get(part) if isinstance(env, dict) else None
    return env


def machine_differences(then: dict, now: dict) -> list[str]:
    return [
        f"{words} ({_at(then, path)} then, {_at(now, path)} now)"
        for words, path in MACHINE.items()
        if _at(then, path) != _at(now, path)
    ]


def reproduce(path: Path, epochs: int | None = None, overrides: list[str] = ()) -> Outcome:
    """Rerun the run at `path` through its first `epochs` (all it recorded by default) and compare."""
    from lrnbn.lifecycle import run_training

    if not RunDir(path).is_run():
        raise UserError(f"{path} is not a run directory (it lacks {CONFIG_FILE} or {SUMMARY_FILE})")
    try:
        run = load_run(path)
    except DamagedRun as err:
        raise UserError(f"{path}: {err}") from None
    if not run.metrics:
        raise UserError(f"{path}: the run recorded no finished epoch, so there is nothing to compare with")
    wanted = len(run.metrics) if epochs is None else min(epochs, len(run.metrics))
    config = recorded_config(run, list(overrides))
    with tempfile.TemporaryDirectory(prefix="lrnbn-reproduce-") as scratch:
        rerun = run_training(config, Path(scratch), until_epoch=wanted).run_dir
        metrics = rerun.read_metrics()[0]
        env_now = json.loads((rerun.path / "env.json").read_text())
    first, largest = compare_metrics(run.metrics[:wanted], metrics[:wanted])
    return Outcome(wanted, first, largest, machine_differences(run.env.raw, env_now) if first else [])
