"""A run's life: start it in a new directory, or bring an existing one to an end (resume it, or leave it if it has
ended), under its lock, with Ctrl-C/SIGTERM turned into a clean stop, and its summary written however it ends.

One path serves `lrnbn train`, `lrnbn train --resume` and every run of `lrnbn compare`: `bring_to_end`.
Flow: Config -> Trainer (data, model, optimizer; trainer.py) -> epochs of (train_epoch, evaluate; loop.py) ->
RunDir files (rundir.py).
"""

from __future__ import annotations

import datetime
import signal
import threading
import time
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import torch

from lrnbn import distributed, tblog
from lrnbn.config import Config, differing_keys, dump_config, load_config
from lrnbn.distributed import World
from lrnbn.errors import UserError, WriteFailed, exit_code_of
from lrnbn.keys import MACHINE_KEYS, lookup
from lrnbn.loop import Position, Stopped, evaluate, train_epoch
from lrnbn.machine import environment
from lrnbn.probes import save_filter_grid
from lrnbn.rundir import CONFIG_FILE, FINAL_STATUSES, SUMMARY_FILE, FollowerRunDir, RunDir
from lrnbn.trainer import Trainer
from lrnbn.views import NullView, RunView


@dataclass
class RunResult:
    run_dir: RunDir
    summary: dict

    @property
    def exit_code(self) -> int:
        return exit_code_of(self.summary["status"])


def run_training(
    config: Config, runs_dir: Path, view: RunView = NullView(), until_epoch: int | None = None
) -> RunResult:
    """Start a new run in a new, timestamped directory (under torchrun: rank 0 creates it, the others follow).
    `until_epoch` stops it after that epoch, interrupted and resumable, its schedule still the config's."""
    trainer = Trainer.build(config)  # every check of the input happens before anything is written
    world = trainer.world
    run = _as_seen_by(world, world.main_first(lambda: RunDir.create(runs_dir, config.experiment.name).path))
    return bring_to_end(run, config, view, trainer, until_epoch=until_epoch)


def resume_training(path: Path, overrides: list[str], view: RunView = NullView()) -> RunResult:
    """Continue a run from its last checkpoint with its saved config, `overrides` changing machine keys only
    (under torchrun: as many processes as before)."""
    run = _as_seen_by(distributed.current(), path)
    if not run.is_run():
        raise UserError(f"{path} is not a run directory (it lacks {CONFIG_FILE} or {SUMMARY_FILE})")
    return bring_to_end(run, load_config(path / CONFIG_FILE, overrides), view)


def train_at(path: Path, config: Config, view: RunView = NullView(), threads: int | None = None) -> RunResult:
    """A study's run at `path`: bring it to an end; a failed one starts afresh. `threads` applies when the config
    leaves train.threads null."""
    if threads and config.train.threads is None:
        torch.set_num_threads(threads)
    run = RunDir(path)
    trainer = None if run.is_run() else Trainer.build(config)  # check the input before creating anything
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the run directory {path}: {exc.strerror or exc}") from None
    return bring_to_end(run, config, view, trainer, restart_failed=True)


def bring_to_end(
    run: RunDir,
    config: Config,
    view: RunView = NullView(),
    trainer: Trainer | None = None,
    restart_failed: bool = False,
    until_epoch: int | None = None,
) -> RunResult:
    """Under the run's lock: an ended run (completed, diverged) is left as it is; a stopped one continues from its
    checkpoint (a failed one too, unless `restart_failed`); a directory without a run starts one. A run keeps its
    config: `config` may differ from the saved one only in machine keys."""
    with run.lock():
        if run.is_run():
            _refuse_changes(
                load_config(run.path / CONFIG_FILE),
                config,
                f"{run.path}: the run was made with {{key}} = {{then!r}}, not {{now!r}}; a run keeps its config (only "
                f"{', '.join(sorted(MACHINE_KEYS))} may change): start a new run, or delete the run directory to "
                f"redo it",
            )
            summary = run.read_summary()
            if summary["status"] in FINAL_STATUSES:
                return RunResult(run, summary)
            if not (restart_failed and summary["status"] == "failed"):
                return _resume(run, config, view)
        run.clear()
        return _start(run, trainer or Trainer.build(config), view, until_epoch)


def _refuse_changes(then: Config, now: Config, message: str) -> None:
    """UserError(message) at the first experiment key where `now` differs from `then` (message names {key}, {then},
    {now})."""
    differing = differing_keys(then, now)
    if differing:
        key = differing[0]
        raise UserError(message.format(key=key, then=lookup(then, key), now=lookup(now, key)))


def _as_seen_by(world: World, path: Path) -> RunDir:
    """The run directory as this rank may use it: rank 0 writes it, the others only read it."""
    return RunDir(path) if world.main else FollowerRunDir(path)


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _start(run: RunDir, trainer: Trainer, view: RunView, until_epoch: int | None = None) -> RunResult:
    config = trainer.config
    run.write_config(dump_config(config))
    run.write_env(
        environment(
            trainer.device,
            trainer.world,
            trainer.dataset,
            trainer.mean,
            trainer.std,
            trainer.parameter_counts(),
            trainer.compute,
            trainer.probes.describe() if trainer.probes else None,
        )
    )
    summary = {"status": "running", "started_at": _now(), "epochs_planned": config.train.epochs, "epochs_done": 0}
    return _train(trainer, run, Position(), summary, view, until_epoch)


def _resume(run: RunDir, config: Config, view: RunView) -> RunResult:
    trainer = Trainer.build(config)
    env = run.read_env()
    recorded = env["dataset"]["fingerprint"]
    if trainer.dataset.fingerprint() != recorded:
        raise UserError(
            f"the dataset differs from the one the run started with (fingerprint "
            f"{trainer.dataset.fingerprint()}, recorded {recorded})"
        )
    processes = env.get("distributed", {}).get("world_size", 1)
    if processes != trainer.world.size:
        raise UserError(
            f"the run was trained by {processes} process(es) and this is {trainer.world.size}: each "
            f"process's random state (and BN statistics) is part of it; resume with "
            + ("torchrun --nproc_per_node " + str(processes) if processes > 1 else "one process")
        )
    state = run.load_checkpoint(map_location=trainer.device)
    if state and "config" in state:  # config.yaml is a file anyone can edit; the checkpoint is what was trained
        _refuse_changes(
            Config.model_validate(state["config"]),
            config,
            f"{run.path / CONFIG_FILE} no longer matches the run's checkpoint at {{key}} ({{then!r}} in the "
            f"checkpoint, {{now!r}} now): restore it, or start a new run",
        )
    # No checkpoint: it stopped inside its first epoch, so the freshly built trainer is where it began.
    position = Position(**trainer.restore(state)) if state else Position()
    run.rewrite_metrics(position.records)
    run.rewrite_probes(until_step=(position.epoch - 1) * trainer.steps_per_epoch + position.step)
    summary = {k: v for k, v in run.read_summary().items() if k not in ("stopped_at", "error")}
    summary.update(status="running", epochs_done=len(position.records))
    summary.setdefault("resumed", []).append({"at": _now(), "epoch": position.epoch, "step": position.step})
    return _train(trainer, run, position, summary, view)


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


def _train(
    trainer: Trainer, run: RunDir, position: Position, summary: dict, view: RunView, until_epoch: int | None = None
) -> RunResult:
    config = trainer.config
    epochs = config.train.epochs
    last = min(epochs, until_epoch or epochs)
    started = time.perf_counter()
    board = None
    try:
        run.write_summary(summary)
        if config.log.tensorboard and trainer.world.main:
            board = tblog.EpochLog(run, dump_config(config), position.records, bool(summary.get("resumed")))
        view.start(run, config, trainer.dataset, trainer.device)
        with _stop_requests() as stop:
            while position.epoch <= epochs:
                epoch = position.epoch
                if position.step == 0:
                    position.epoch_generator_state = trainer.data_generator.get_state()
                view.epoch_started(epoch, epochs, trainer.steps_per_epoch)
                try:
                    trained = train_epoch(trainer, position, stop, view, run.append_probe)
                except Stopped as stopped:
                    summary.update(status=stopped.status, stopped_at={"epoch": epoch, "step": stopped.step})
                    if stopped.status == "interrupted":
                        run.save_checkpoint(trainer.checkpoint(position))
                    break
                record = {"epoch": epoch, **trained, **evaluate(trainer), "steps": epoch * trainer.steps_per_epoch}
                finished = Position(
                    epoch=epoch + 1,
                    records=position.records + [record],
                    epoch_generator_state=trainer.data_generator.get_state(),
                )
                # Checkpoint first: it holds the records, and resume rewrites metrics.jsonl from it. The epoch counts
                # as finished once it is on disk, so a refused write leaves the summary with the epochs kept.
                run.save_checkpoint(trainer.checkpoint(finished))
                position = finished
                run.append_metrics(record)
                if board:
                    board.add(record)
                view.epoch_done(record)
                summary["epochs_done"] = epoch
                if (trainer.world.any(stop.is_set(), trainer.device) or epoch == last) and epoch < epochs:
                    summary.update(status="interrupted", stopped_at={"epoch": epoch + 1, "step": 0})
                    break
            else:
                summary["status"] = "completed"
        if trainer.probes:
            run.write_filter_grid(lambda file: save_filter_grid(trainer.probes.conv1.weight, file))
    except BaseException as exc:
        summary.update(status=_status_after(exc), error=f"{exc.__class__.__name__}: {exc}")
        with suppress(WriteFailed):  # the disk that refused a write may refuse this one: the last summary then stays
            _finish(run, summary, position.records, started)
        raise
    finally:
        if board:
            board.close()
    _finish(run, summary, position.records, started)
    view.finished(position.records, summary)
    return RunResult(run, summary)


def _status_after(exc: BaseException) -> str:
    """Ctrl-C, and a write the machine refused (a full disk), leave a run to resume from its last checkpoint; any
    other error fails it (and a study starts a failed run afresh)."""
    return "interrupted" if isinstance(exc, (KeyboardInterrupt, WriteFailed)) else "failed"


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
