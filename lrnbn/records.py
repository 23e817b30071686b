"""Reading run directories for compare, report and reproduce: plain data, typed, no torch.

A run's files come back as a LoadedRun (its config with every key of today's schema, its env.json as a RunEnv, its
metrics, summary and probes), checked for the shape the readers rely on; whatever is wrong with a file is one
DamagedRun naming the file. RunDir (rundir.py) writes these files and reads them back for a resume.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lrnbn.errors import UserError
from lrnbn.keys import lookup
from lrnbn.rundir import (
    CONFIG_FILE,
    ENV_FILE,
    METRICS_FILE,
    PROBES_FILE,
    SUMMARY_FILE,
    DamagedRun,
    RunDir,
    _read_text,
)
from lrnbn.safeyaml import one_line

METRIC_FIELDS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "epoch_time_s")


@dataclass(frozen=True)
class RunEnv:
    """What the readers use of env.json, each with the value a run written before lrnbn recorded it implies."""

    device_type: str | None
    device_name: str
    cpu_threads: int | None
    world_size: int
    dataset_label: str
    classes: int  # for chance: 1 / classes
    train_size: int | None
    precision: str
    probe_class_counts: list[int] | None  # the probe batch's images per class, where recorded
    trainable: int | str  # parameters; "?" where not recorded
    norm_trainable: int | str
    raw: dict  # the whole file, for what differs between two machines

    @classmethod
    def from_json(cls, env: dict) -> RunEnv:
        def section(name: str) -> dict:
            value = env.get(name)
            return value if isinstance(value, dict) else {}

        device, dataset, model = section("device"), section("dataset"), section("model")
        return cls(
            device_type=device.get("type"),
            device_name=device.get("name", "?"),
            cpu_threads=env.get("cpu_threads"),
            world_size=section("distributed").get("world_size", 1),
            dataset_label=dataset.get("label", "?"),
            classes=len(dataset.get("classes") or [None] * 10),
            train_size=dataset.get("train_size"),
            precision=section("compute").get("precision", "fp32"),
            probe_class_counts=section("probe_batch").get("class_counts"),
            trainable=model.get("trainable", "?"),
            norm_trainable=model.get("norm_trainable", "?"),
            raw=env,
        )


@dataclass
class LoadedRun:
    path: Path
    config: dict  # the saved config.yaml, every key present
    env: RunEnv
    summary: dict
    metrics: list[dict]
    truncated: bool  # metrics.jsonl ended in a line cut short (a crash); that line was dropped
    probes: list[dict]  # empty unless the run had probes enabled

    @property
    def status(self) -> str:
        return self.summary.get("status", "unknown")

    def get(self, dotted: str):
        return lookup(self.config, dotted)


def load_run(path: Path) -> LoadedRun:
    """A run's files as plain data, checked for the shape the readers rely on; DamagedRun says what is wrong."""
    from lrnbn.safeyaml import load_yaml_text

    run = RunDir(path)
    try:
        config = load_yaml_text(_read_text(run.path / CONFIG_FILE))
        env = json.loads(_read_text(run.path / ENV_FILE)) if (run.path / ENV_FILE).exists() else {}
        summary = json.loads(_read_text(run.path / SUMMARY_FILE))
        metrics, truncated = run.read_metrics()
        probes = run.read_probes()
    except DamagedRun:
        raise
    except Exception as exc:  # a damaged file shows up as many exception types: say which file and why
        raise DamagedRun(one_line(exc, 160)) from None
    for name, value in ((CONFIG_FILE, config), (ENV_FILE, env), (SUMMARY_FILE, summary)):
        if not isinstance(value, dict):
            raise DamagedRun(f"{name} does not hold a mapping")
    if not all(isinstance(config.get(section), dict) for section in ("experiment", "data", "model", "train")):
        raise DamagedRun(f"{CONFIG_FILE} lacks a section of a run's config")
    config = _with_defaults(config)
    for number, record in enumerate(metrics, 1):
        if not isinstance(record, dict) or not all(
            isinstance(record.get(f), (int, float)) and not isinstance(record.get(f), bool) for f in METRIC_FIELDS
        ):
            raise DamagedRun(f"{METRICS_FILE} record {number} lacks a number in one of {', '.join(METRIC_FIELDS)}")
    if not all(isinstance(p, dict) and isinstance(p.get("step"), int) for p in probes):
        raise DamagedRun(f"{PROBES_FILE} holds a record without its step")
    return LoadedRun(run.path, config, RunEnv.from_json(env), summary, metrics, truncated, probes)


def _with_defaults(config: dict) -> dict:
    """The saved config with every key of today's schema: a run written before a key existed has its default, so it
    groups with the runs written after (a study resumed across versions stays one study)."""
    from pydantic import ValidationError

    from lrnbn.config import Config

    try:
        return Config.model_validate(config).model_dump(mode="json")
    except ValidationError as err:
        first = err.errors()[0]
        raise DamagedRun(f"{CONFIG_FILE} is not a valid config at {'.'.join(map(str, first['loc']))}") from None


@dataclass
class FoundRuns:
    runs: list[LoadedRun]
    damaged: list[tuple[Path, str]]  # run directories that could not be read, and why


def find_runs(paths: list[Path]) -> FoundRuns:
    """Every run directory at or under the given paths, in path order, each once however often it is named; damaged
    ones are set aside with the reason, so that one bad run does not stop a report."""
    runs, damaged, seen = [], [], set()
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise UserError(f"{path}: no such file or folder")
        candidates = [path] if RunDir(path).is_run() else sorted(p.parent for p in path.rglob(SUMMARY_FILE))
        for candidate in candidates:
            if not RunDir(candidate).is_run() or candidate.resolve() in seen:
                continue
            seen.add(candidate.resolve())
            try:
                runs.append(load_run(candidate))
            except DamagedRun as err:
                damaged.append((candidate, str(err)))
    return FoundRuns(runs, damaged)
