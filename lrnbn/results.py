"""Runs on disk grouped into studies and variants, with the statistics that tables, plots and verdicts share.

A study is the folder that holds the runs (RUNS_DIR/<study or experiment>/). A variant is the set of runs of a
study whose configs are equal once the seed is set aside: the seeds (and timing repeats) of one setting.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from lrnbn.rundir import LoadedRun

# Keys that say nothing about the experiment: they never split a variant.
IGNORED_KEYS = {"experiment.seed", "experiment.name", "train.threads", "train.eval_batch_size", "data.root",
                "data.download"}


def flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def short_names(keys: list[str]) -> dict[str, str]:
    """Each dotted key's last part, or the whole key where two keys share a last part."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (short if last.count(short) == 1 else k) for k, short in zip(keys, last)}


def show(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


@dataclass
class Variant:
    study: str
    settings: dict  # flattened config, ignored keys removed
    runs: list[LoadedRun] = field(default_factory=list)
    label: str = ""

    def get(self, key: str):
        return self.settings[key]

    @property
    def finished(self) -> list[LoadedRun]:
        return [r for r in self.runs if r.metrics]

    def final_accs(self) -> list[float]:
        return [r.metrics[-1]["test_acc"] for r in self.finished]

    def best_accs(self) -> list[float]:
        return [max(m["test_acc"] for m in r.metrics) for r in self.finished]

    def epoch_times(self) -> list[float]:
        return [m["epoch_time_s"] for r in self.runs for m in r.metrics]

    def gaps(self) -> list[float]:
        return [r.metrics[-1]["train_acc"] - r.metrics[-1]["test_acc"] for r in self.finished]

    def chance(self) -> float:
        classes = self.runs[0].env.get("dataset", {}).get("classes") or [None] * 10
        return 1 / len(classes)


def group(runs: list[LoadedRun]) -> dict[str, list[Variant]]:
    """study name -> its variants, each labelled by the keys in which the study's variants differ."""
    studies: dict[str, dict[tuple, Variant]] = {}
    for run in runs:
        settings = {k: v for k, v in flatten(run.config).items() if k not in IGNORED_KEYS}
        key = tuple(sorted((k, repr(v)) for k, v in settings.items()))
        study = run.path.parent.name
        studies.setdefault(study, {}).setdefault(key, Variant(study, settings)).runs.append(run)
    grouped = {}
    for study, variants in studies.items():
        variants = list(variants.values())
        varying = [k for k in variants[0].settings if len({repr(v.settings.get(k)) for v in variants}) > 1]
        names = short_names(varying)
        for variant in variants:
            variant.label = ",".join(f"{names[k]}={show(variant.settings.get(k))}" for k in varying) or study
        grouped[study] = variants
    return grouped


def varying_keys(variants: list[Variant]) -> list[str]:
    return [k for k in variants[0].settings if len({repr(v.settings.get(k)) for v in variants}) > 1]


def mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        value = values[0] if values else math.nan
        return value, value, value
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def to_target(run: LoadedRun, target: float) -> tuple[int | None, float | None]:
    """The first epoch whose test accuracy reaches `target`, and the training seconds spent until then."""
    seconds = 0.0
    for m in run.metrics:
        seconds += m["epoch_time_s"]
        if m["test_acc"] >= target:
            return m["epoch"], seconds
    return None, None


def stays_at_chance(run: LoadedRun, chance: float, tolerance: float) -> bool:
    return bool(run.metrics) and all(abs(m["test_acc"] - chance) <= tolerance for m in run.metrics)
