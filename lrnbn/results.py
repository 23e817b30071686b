"""Runs on disk grouped into studies and variants, with the statistics that tables, plots and verdicts share.

A study is the folder that holds the runs (RUNS_DIR/<study or experiment>/). A variant is the set of runs of a
study whose configs are equal once the seed is set aside: the seeds (and timing repeats) of one setting.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass, field

from lrnbn.keys import effective_norm, flatten, variant_settings
from lrnbn.records import LoadedRun


def short_names(keys: list[str]) -> dict[str, str]:
    """Each dotted key's last part, or the whole key where two keys share a last part."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (short if last.count(short) == 1 else k) for k, short in zip(keys, last)}


def show(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


OVERLAP_LOAD = 0.5  # load average above a run's own threads that counts as other work competing for its cores


@dataclass
class Variant:
    study: str
    settings: dict  # flattened config, as lrnbn.keys.variant_settings keeps it
    runs: list[LoadedRun] = field(default_factory=list)
    label: str = ""

    def get(self, key: str):
        # None for a key the run's config lacks (a run written before the key existed).
        return self.settings.get(key)

    def settings_without(self, drop) -> tuple:
        """The study and the settings whose keys `drop(key)` does not name: equal for two variants that differ only
        there (the pairs a comparison of one factor takes)."""
        return self.study, tuple(sorted((k, repr(x)) for k, x in self.settings.items() if not drop(k)))

    @property
    def norm(self) -> str | None:
        """The normalization the variant really has (an identity LRN counts as none)."""
        return effective_norm(self.settings)

    @property
    def finished(self) -> list[LoadedRun]:
        return [r for r in self.runs if r.metrics]

    def seeds(self) -> int:
        """Distinct seeds among the finished runs (timing repeats of one seed count once)."""
        return len({r.config["experiment"]["seed"] for r in self.finished})

    def learned(self, margin: float) -> bool:
        """Whether the mean final test accuracy is above chance by more than `margin`."""
        accs = self.final_accs()
        return bool(accs) and sum(accs) / len(accs) > self.chance() + margin

    def final_accs(self) -> list[float]:
        return [r.metrics[-1]["test_acc"] for r in self.finished]

    def best_accs(self) -> list[float]:
        return [max(m["test_acc"] for m in r.metrics) for r in self.finished]

    def epoch_times(self) -> list[float]:
        return [m["epoch_time_s"] for r in self.runs for m in r.metrics]

    def overlapped(self) -> tuple[int, int] | None:
        """Of its epochs that recorded the machine's load, how many overlapped other work (a 1-minute load average
        more than OVERLAP_LOAD above the run's own threads), and how many recorded it; None where none did (runs
        written before lrnbn recorded the load)."""
        loads = [m["load_1m"] - m["threads"] for r in self.runs for m in r.metrics if m.get("load_1m") is not None]
        return (sum(load > OVERLAP_LOAD for load in loads), len(loads)) if loads else None

    def gaps(self) -> list[float]:
        return [r.metrics[-1]["train_acc"] - r.metrics[-1]["test_acc"] for r in self.finished]

    def chance(self) -> float:
        return 1 / self.runs[0].env.classes


def study_name_of(run: LoadedRun) -> str | None:
    """The name a study gave the run's variant: its run id (`pt-k2-norm,lr=0.01,seed=0`) without the seed and
    repeat; None for a run of `lrnbn train`, whose folder is a timestamp."""
    parts = [p for p in run.path.name.split(",") if not p.startswith(("seed=", "rep="))]
    name = ",".join(parts)
    return None if not name or TIMESTAMPED.match(run.path.name) else name


TIMESTAMPED = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{6}$")


def group(runs: list[LoadedRun]) -> dict[str, list[Variant]]:
    """study name -> its variants, each labelled by the name the study gave it (its run ids without seed and
    repeat), or else by the keys in which the study's variants differ."""
    studies: dict[str, dict[tuple, Variant]] = {}
    for run in runs:
        settings = variant_settings(flatten(run.config))
        key = tuple(sorted((k, repr(v)) for k, v in settings.items()))
        study = run.path.parent.name
        studies.setdefault(study, {}).setdefault(key, Variant(study, settings)).runs.append(run)
    grouped = {}
    for study, variants in studies.items():
        variants = list(variants.values())
        varying = varying_keys(variants)
        names = short_names(varying)
        for variant in variants:
            given = {study_name_of(r) for r in variant.runs}
            variant.label = (
                given.pop()
                if len(given) == 1 and None not in given
                else ",".join(f"{names[k]}={show(variant.settings[k])}" for k in varying if k in variant.settings)
                or study
            )
        grouped[study] = variants
    return grouped


def varying_keys(variants: list[Variant]) -> list[str]:
    """Keys on which the variants that have them disagree, in schema order."""
    keys = list(dict.fromkeys(k for v in variants for k in v.settings))
    return [k for k in keys if len({repr(v.settings[k]) for v in variants if k in v.settings}) > 1]


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


def to_target(run: LoadedRun, target: float) -> tuple[float | None, float | None]:
    """When test accuracy first reached `target`: the epoch, interpolated linearly between the last epoch below it
    and the first at or above it (from chance at epoch 0), and the training seconds until then, interpolated the
    same way; (None, None) where it never did. Fractional, so that seeds crossing within the same epoch differ."""
    chance = 1 / run.env.classes
    before, seconds = chance, 0.0
    for m in run.metrics:
        if m["test_acc"] >= target:
            part = (target - before) / (m["test_acc"] - before) if m["test_acc"] > before else 1.0
            part = min(1.0, max(0.0, part))
            return m["epoch"] - 1 + part, seconds + part * m["epoch_time_s"]
        before, seconds = m["test_acc"], seconds + m["epoch_time_s"]
    return None, None


def probe_summary(variant: Variant, until_epoch: float = math.inf) -> dict | None:
    """Means over the variant's probed runs, from their probes of epochs up to `until_epoch`: the normalized layers'
    gain (output std / input std; an LRN with small alpha x window sum scales by k^-beta), their input and output
    drift per probe interval, relative weight update per step, and conv1 filter similarity at the last of those
    probes. None without such probes."""
    # A record without its epoch counts only when no bound is asked for.
    probed = [ps for r in variant.runs if (ps := [p for p in r.probes if p.get("epoch", math.inf) <= until_epoch])]
    if not probed:
        return None

    def mean(values):
        return statistics.fmean(values) if values else math.nan

    def drifts(side):
        return [
            layer[f"{side}_drift"]
            for probes in probed
            for p in probes
            for layer in p["layers"]
            if layer[f"{side}_drift"] is not None
        ]

    gains = [
        layer["output_std"] / layer["input_std"]
        for probes in probed
        for p in probes
        for layer in p["layers"]
        if layer.get("input_std") and layer.get("output_std") is not None
    ]
    return {
        "gain": mean(gains),
        "input_drift": mean(drifts("input")),
        "output_drift": mean(drifts("output")),
        "update_ratio": mean([w["update_ratio"] for probes in probed for p in probes for w in p["weights"]]),
        "filter_similarity": mean([probes[-1]["filter_similarity"] for probes in probed]),
    }
