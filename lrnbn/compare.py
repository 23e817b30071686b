"""Studies: a base config, a grid and/or named variants, and seeds, expanded into runs under RUNS_DIR/<study>/<run id>/.

Every run's config is the base + the command's --set + the variant's and the grid point's values + the seed, and
goes through the same schema as `lrnbn train`. Running a study skips runs that have ended (completed or diverged),
resumes runs that stopped, and restarts failed ones; each run's lock keeps two processes off the same run. What
happened is read back from the run directories, never from memory, so `--jobs N` processes and reruns agree.

Beyond one machine: `--shard I/N` keeps every N-th run of the plan (starting at the I-th), so N batch jobs (a SLURM
array, say) writing to one shared runs dir cover the plan exactly once; `--devices` places runs on chosen GPUs.
"""

from __future__ import annotations

import itertools
import math
import multiprocessing
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lrnbn.config import (
    Config,
    ConfigError,
    all_keys,
    apply_overrides,
    differing_keys,
    format_validation_error,
    load_config,
    read_yaml_mapping,
    shorten,
    unknown_key_message,
    validate,
)
from lrnbn.errors import EXIT_INTERRUPTED, UserError
from lrnbn.results import short_names, show
from lrnbn.rundir import CONFIG_FILE, FINAL_STATUSES, RunBusy, RunDir
from lrnbn.views import NullStudyView, StudyView


def _distinct(seeds: list[int] | None) -> list[int] | None:
    if seeds is not None and len(set(seeds)) < len(seeds):
        raise ValueError("each seed once")
    return seeds


class VariantSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._=+-]*$", description="Readable name, part of the run ids.")
    set: dict[str, Any] = Field(default_factory=dict, description="Dotted key -> value, applied to the base.")
    seeds: list[int] | None = Field(
        None,
        min_length=1,
        description="This variant's seeds instead of the study's: more of them where its runs disagree. Interleaved "
        "rounds go by place in the list (round 3 runs each variant's fourth seed), so list the study's seeds first.",
    )
    _seeds = field_validator("seeds")(_distinct)


class StudyFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Default: the file's stem.")
    extends: str | None = Field(
        None, description="Another study file (relative to this one) whose keys this one starts from; set merges."
    )
    base: str | dict = Field(description="A config path relative to the study file, or an inline config.")
    set: dict[str, Any] = Field(
        default_factory=dict, description="Dotted key -> value, applied to the base for every run."
    )
    grid: dict[str, list] = Field(default_factory=dict, description="Dotted key -> values; the cartesian product.")
    variants: list[VariantSpec] = Field(default_factory=list, description="Named override sets.")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, description="experiment.seed of each run.")
    repeats: int = Field(1, ge=1, description="Runs of each config and seed (timing studies).")
    interleave: bool = Field(False, description="Run in rounds: every variant's first repeat, then every second ...")
    shuffle: bool = Field(
        False,
        description="With interleave: each round runs its variants in its own fixed random order (seeded by the "
        "study's name and the round), so that no variant always runs first after a pause or next to the same "
        "neighbour; timing studies use it.",
    )

    _seeds = field_validator("seeds")(_distinct)

    @field_validator("grid")
    @classmethod
    def _grid_values(cls, grid: dict) -> dict:
        for key, values in grid.items():
            if not values:
                raise ValueError(f"{key} has no values")
        return grid


MAX_RUN_ID_BYTES = 200  # file systems allow 255 bytes per folder name
MAX_PLANNED_RUNS = 10_000  # a study is expanded (and every run's config validated) before anything runs


@dataclass
class PlannedRun:
    run_id: str
    config: Config
    variant: str = ""  # the name of its variant ("" in a study of grid points only)


@dataclass
class Study:
    name: str
    source: Path
    runs: list[PlannedRun]


def _check_key(key: str, where: str) -> None:
    if key not in all_keys():
        raise ConfigError(f"{where}: {unknown_key_message(tuple(key.split('.')))}")


def _read_study(path: Path) -> dict:
    """A study file's mapping; one that `extends` another starts from that one's (its base found from its own
    folder), its own keys replacing the other's and its `set` applied on top of the other's."""
    raw = read_yaml_mapping(path, what="study file")
    if "extends" not in raw:
        return raw
    parent_path = path.parent / str(raw.pop("extends"))
    if parent_path.resolve() == path.resolve():
        raise ConfigError(f"{path}: extends itself")
    parent = _read_study(parent_path)
    if isinstance(parent.get("base"), str):
        parent["base"] = str((parent_path.parent / parent["base"]).resolve())  # absolute: found from any folder
    parent.pop("name", None)  # a study's name is its own (default: its file's stem)
    return {**parent, **raw, "set": {**parent.get("set", {}), **raw.get("set", {})}}


def load_study(path: Path, overrides: list[str] = ()) -> Study:
    raw = _read_study(path)
    try:
        spec = StudyFile.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, str(path))) from None
    if not spec.grid and not spec.variants:
        raise ConfigError(f"{path}: empty grid and no variants: a study needs grid keys or variants to compare")
    for key in spec.set:
        _check_key(key, f"{path}: set")
    for key in spec.grid:
        _check_key(key, f"{path}: grid")
    for variant in spec.variants:
        for key in variant.set:
            _check_key(key, f"{path}: variant {variant.name}")
    base = spec.base if isinstance(spec.base, dict) else read_yaml_mapping(path.parent / spec.base)
    # Precedence: base < the study's set < the command's --set < a variant's set < a grid point < the seed.
    base = apply_overrides(base, [f"{k}={_yaml_scalar(v)}" for k, v in spec.set.items()] + list(overrides))
    name = spec.name or path.stem

    grid_keys = list(spec.grid)
    short = short_names(grid_keys)
    variants = spec.variants or [VariantSpec(name="base")]
    planned = sum(len(v.seeds or spec.seeds) for v in variants) * math.prod(map(len, spec.grid.values())) * spec.repeats
    if planned > MAX_PLANNED_RUNS:
        raise ConfigError(
            f"{path}: {planned} runs (variants x grid x seeds x repeats), more than {MAX_PLANNED_RUNS} in "
            f"one study: split it"
        )
    if spec.shuffle and not spec.interleave:
        raise ConfigError(f"{path}: shuffle orders the variants inside each round: it needs interleave: true")
    points = list(itertools.product(*spec.grid.values())) or [()]
    settings = len(variants) * len(points)
    runs = []
    for v_index, variant in enumerate(variants):
        for p_index, point in enumerate(points):
            position = v_index * len(points) + p_index  # where this setting runs inside a round
            for s_index, seed in enumerate(variant.seeds or spec.seeds):
                for repeat in range(spec.repeats):
                    parts = [variant.name] if spec.variants else []
                    parts += [f"{short[k]}={show(v)}" for k, v in zip(grid_keys, point)]
                    parts += [f"seed={seed}"] + ([f"rep={repeat}"] if spec.repeats > 1 else [])
                    run_id = ",".join(parts).replace("/", "_")
                    values = {
                        **variant.set,
                        **dict(zip(grid_keys, point)),
                        "experiment.seed": seed,
                        "experiment.name": name,
                    }
                    raw_config = apply_overrides(base, [f"{k}={_yaml_scalar(v)}" for k, v in values.items()])
                    config = validate(raw_config, source=f"{path}: run {run_id}")
                    if spec.interleave:
                        shuffled = _round_order(name, (s_index, repeat), settings) if spec.shuffle else None
                        order = (s_index, repeat, shuffled[position] if shuffled else position)
                    else:  # a variant's grid points alternate seed by seed, the order studies (and --shard) always had
                        order = (v_index, s_index, repeat)
                    runs.append((order, PlannedRun(run_id, config, variant.name if spec.variants else "")))
    runs.sort(key=lambda pair: pair[0])
    seen = set()
    for _, planned in runs:
        if len(planned.run_id.encode()) > MAX_RUN_ID_BYTES:
            raise ConfigError(
                f"{path}: run id {shorten(planned.run_id)} is longer than {MAX_RUN_ID_BYTES} bytes "
                f"(a folder name): shorten the variant names or grid values"
            )
        if planned.run_id in seen:
            raise ConfigError(
                f"{path}: two runs would share the id {shorten(planned.run_id)}: give every variant its "
                f"own name and every grid value a distinct spelling"
            )
        seen.add(planned.run_id)
    return Study(name, path, [run for _, run in runs])


def _round_order(study: str, round_: tuple[int, int], settings: int) -> list[int]:
    """Setting index -> its place in one round: a permutation that depends only on the study's name and the round,
    so that every process and every rerun (and --shard) plans the same order."""
    import random

    places = list(range(settings))
    random.Random(f"{study}/{round_[0]}/{round_[1]}").shuffle(places)
    return places


def shard(study: Study, index: int, count: int) -> Study:
    """The index-th (1-based) of `count` slices of the plan: runs index-1, index-1+count, ... of the plan's order,
    which depends on the study file alone, so every batch job computes the same slices; their sizes differ by at
    most one run."""
    if not 1 <= index <= count:
        raise UserError(f"--shard: expected I/N with 1 <= I <= N, got {index}/{count}")
    return Study(study.name, study.source, study.runs[index - 1 :: count])


def only(study: Study, names: list[str]) -> Study:
    """The runs of the named variants, in the plan's order: a study's key settings first (`--only`), the rest later
    by running the whole study, which skips what has ended."""
    known = list(dict.fromkeys(run.variant for run in study.runs if run.variant))
    if not known:
        raise UserError("--only: this study has no named variants (its runs are grid points only)")
    unknown = [name for name in names if name not in known]
    if unknown:
        raise UserError(f"--only: no variant {unknown[0]!r} in {study.name}; its variants: {', '.join(known)}")
    return Study(study.name, study.source, [run for run in study.runs if run.variant in names])


def _yaml_scalar(value) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


# ---------------------------------------------------------------------------------------------------------------
# Running.


def run_state(path: Path, config: Config | None = None) -> str:
    """What a planned run's directory says: absent, its summary's status (completed, diverged, ...), or stale when
    its saved config no longer matches the study's `config`."""
    run = RunDir(path)
    if not run.is_run():
        return "absent"
    try:
        if config is not None and differing_keys(load_config(run.path / CONFIG_FILE), config):
            return "stale: its config differs from the study's; delete it to rerun"
        return run.read_summary()["status"]
    except UserError as err:  # a damaged file: say so, and let the run's own attempt report it
        return f"damaged: {str(err).removeprefix(str(run.path) + '/')}"


def _child(path: str, config_json: dict, threads: int, cuda_index: int | None) -> None:
    """A worker process: train one run quietly and exit with its exit code."""
    import sys

    if cuda_index is not None:
        import torch

        torch.cuda.set_device(cuda_index)
    from lrnbn.lifecycle import train_at

    try:
        result = train_at(Path(path), Config.model_validate(config_json), threads=threads)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    sys.exit(result.exit_code)


@dataclass
class StudyOutcome:
    statuses: dict[str, str]  # run id -> status on disk after the sweep
    errors: dict[str, str]  # run id -> one-line error of runs that could not start
    busy: list[str]  # run ids another process was training
    interrupted: bool
    wall_time_s: float


def run_study(
    study: Study, runs_dir: Path, jobs: int = 1, display: StudyView = NullStudyView(), devices: list[int] = ()
) -> StudyOutcome:
    """Bring every run of the study to an end (see the module doc). `display` shows progress (see console.py);
    `devices`: CUDA device indices to place runs on, in turn (runs then train in child processes)."""
    from lrnbn.lifecycle import train_at

    started = time.perf_counter()
    root = Path(runs_dir) / study.name
    pending = [run for run in study.runs if run_state(root / run.run_id, run.config) not in FINAL_STATUSES]
    errors: dict[str, str] = {}
    busy: list[str] = []
    interrupted = False
    display.study_started(study, len(study.runs) - len(pending))
    if jobs <= 1 and not devices:
        for planned in pending:
            view = display.run_started(planned.run_id, planned.config)
            try:
                result = train_at(root / planned.run_id, planned.config, view)
            except RunBusy:
                busy.append(planned.run_id)
                result = None
            except UserError as err:
                errors[planned.run_id] = str(err)
                result = None
            display.run_finished(
                planned.run_id,
                result.summary["status"]
                if result
                else "busy (another process holds it)"
                if planned.run_id in busy
                else "error",
            )
            if result is not None and result.summary["status"] == "interrupted":
                interrupted = True
                break
    else:
        interrupted = _run_parallel(pending, root, jobs, devices, errors, busy, display)
    statuses = {run.run_id: run_state(root / run.run_id) for run in study.runs}
    return StudyOutcome(statuses, errors, busy, interrupted, time.perf_counter() - started)


def slot_devices(jobs: int, devices: list[int], visible_gpus: int) -> list[int | None]:
    """The CUDA device of each parallel slot (None: the slot trains on the CPU). Chosen devices take the slots in
    turn, so jobs > devices shares GPUs; without a choice, one run per visible GPU, or CPU slots when none is."""
    if devices:
        return [devices[slot % len(devices)] for slot in range(jobs)]
    if visible_gpus:
        return list(range(min(jobs, visible_gpus)))
    return [None] * jobs


def _run_parallel(
    pending: list[PlannedRun], root: Path, jobs: int, devices: list[int], errors: dict, busy: list, display: StudyView
) -> bool:
    import torch

    wants_cuda = any(r.config.train.device in ("auto", "cuda") for r in pending)
    slots = slot_devices(jobs, devices, torch.cuda.device_count() if wants_cuda and torch.cuda.is_available() else 0)
    threads = max(1, (os.cpu_count() or 1) // len(slots))
    context = multiprocessing.get_context("spawn")
    free_slots = list(range(len(slots)))
    active: dict[Any, tuple[PlannedRun, int]] = {}
    queue = list(pending)
    interrupted = False
    previous_sigterm = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        while queue or active:
            while queue and free_slots and not interrupted:
                planned, slot = queue.pop(0), free_slots.pop(0)
                process = context.Process(
                    target=_child, args=(str(root / planned.run_id), planned.config.model_dump(), threads, slots[slot])
                )
                process.start()
                active[process] = (planned, slot)
                display.run_started(planned.run_id, planned.config, root / planned.run_id)
            multiprocessing.connection.wait([p.sentinel for p in active], timeout=0.5)
            display.poll()
            for process in [p for p in active if not p.is_alive()]:
                planned, slot = active.pop(process)
                free_slots.append(slot)
                status = run_state(root / planned.run_id)
                if process.exitcode == RunBusy.exit_code:
                    busy.append(planned.run_id)
                    status = "busy (another process holds it)"
                elif process.exitcode == UserError.exit_code:
                    errors[planned.run_id] = "could not start (see the message above)"
                    status = "error"
                if status == "interrupted" or process.exitcode == EXIT_INTERRUPTED:
                    interrupted = True
                display.run_finished(planned.run_id, status)
            if interrupted:
                queue.clear()
    except KeyboardInterrupt:
        # Ctrl-C reaches the workers too (same process group); a SIGTERM to this process does not, so pass it on.
        # Each worker stops between two steps, checkpoints and exits; wait for them.
        for process in active:
            process.terminate()
        for process in active:
            process.join()
        interrupted = True
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
    return interrupted


def _raise_keyboard_interrupt(*_):
    raise KeyboardInterrupt
