"""Tables, plots and a report file, from run directories on disk only (never the trainer), so a report can be rebuilt
on any machine from copied runs.

`build_report` reads the runs, groups them into studies and variants (results.py), computes the claims' verdicts
(claims.py) and writes report.md (or report.html, images inline) with PNG plots beside it.
"""

from __future__ import annotations

import base64
import html
import math
import shutil
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from lrnbn.chance import epochs_at_chance
from lrnbn.claims import Verdict, all_claims
from lrnbn.errors import UserError, writing
from lrnbn.keys import is_norm_key
from lrnbn.records import find_runs
from lrnbn.registry import NORMS
from lrnbn.results import Variant, group, mean_std, probe_summary, quartiles, short_names, to_target, varying_keys
from lrnbn.rundir import FILTERS_FILE, atomic_write_text
from lrnbn.stats import welch

STATUS_ORDER = ("completed", "diverged", "interrupted", "failed", "running")


@dataclass
class Section:
    heading: str
    level: int = 2
    paragraphs: list[str] = field(default_factory=list)
    tables: list[list[dict]] = field(default_factory=list)
    images: list[Path] = field(default_factory=list)


def _pm(values: list[float]) -> str:
    mean, std = mean_std(values)
    return "n/a" if math.isnan(mean) else f"{100 * mean:.1f} +- {100 * std:.1f}%"


def _time_ratio(v: Variant, median: float, bn_median: float) -> str:
    """The variant's median epoch time over BN's; not given where its epochs overlapped other work on the machine
    (a study run with --jobs 2, or beside other jobs), whose times measure the neighbours as much as the model."""
    if math.isnan(median) or math.isnan(bn_median):
        return "-"
    overlap = v.overlapped()
    if overlap and overlap[0]:
        return f"not comparable: {overlap[0]}/{overlap[1]} epochs overlapped other work"
    return f"{median / bn_median:.2f}"


def study_table(variants: list[Variant], target: float) -> list[dict]:
    bn_times = [t for v in variants if v.get("model.norm") == "bn" for t in v.epoch_times()]
    bn_median = quartiles(bn_times)[1] if bn_times else math.nan
    rows = []
    for v in variants:
        statuses = {}
        for r in v.runs:
            statuses[r.status] = statuses.get(r.status, 0) + 1
        reached = [to_target(r, target) for r in v.finished]
        epochs = [e for e, _ in reached if e]
        seconds = [s for e, s in reached if e]
        median = quartiles(v.epoch_times())[1] if v.epoch_times() else math.nan
        rows.append(
            {
                "variant": v.label,
                "runs": " ".join(
                    f"{n} {s}"
                    for s, n in sorted(
                        statuses.items(), key=lambda x: STATUS_ORDER.index(x[0]) if x[0] in STATUS_ORDER else 99
                    )
                ),
                "final test acc": _pm(v.final_accs()),
                "best test acc": _pm(v.best_accs()),
                "train-test gap": (f"{100 * mean_std(v.gaps())[0]:+.1f} points" if v.gaps() else "-"),
                f"epochs to {100 * target:.0f}%": f"{sum(epochs) / len(epochs):.1f} ({len(epochs)}/{len(reached)})"
                if epochs
                else f"never (0/{len(reached)})",
                f"train s to {100 * target:.0f}%": f"{sum(seconds) / len(seconds):.0f}" if seconds else "-",
                "median epoch s": f"{median:.2f}" if not math.isnan(median) else "-",
                "ratio to BN": _time_ratio(v, median, bn_median),
                "params": v.runs[0].env.trainable,
                "norm params": v.runs[0].env.norm_trainable,
            }
        )
    return rows


def _machine(variants: list[Variant]) -> str:
    """Where the runs were timed: device, CPU threads and, for torchrun runs, the number of processes."""
    machines = {
        (
            r.env.device_name,
            r.env.cpu_threads,
            r.env.world_size,
        )
        for v in variants
        for r in v.runs
    }
    return "; ".join(
        f"{name}, {threads} thread{'s' if threads != 1 else ''}"
        + (f" x {processes} processes" if processes > 1 else "")
        for name, threads, processes in sorted(machines, key=str)
    )


def _dataset(variants: list[Variant]) -> str:
    return "; ".join(sorted({r.env.dataset_label for v in variants for r in v.runs}))


# ---------------------------------------------------------------------------------------------------------------
# Plots.


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _figure(ncols: int = 1, figsize=(7, 4.5)):
    """A figure whose layout engine places the two-line title and the panels with no empty band between them."""
    fig, axes = _plt().subplots(1, ncols, figsize=figsize, squeeze=False, layout="constrained")
    return fig, axes[0]


def _integer_x(ax) -> None:
    """Epochs and steps are counts: no tick at 1.5."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _save(fig, ax, title: str, variants: list[Variant], path: Path, grid: bool = True) -> Path:
    """Title (with the dataset and machine, so a plot stands on its own), legend, grid; write the PNG."""
    fig.suptitle(f"{title}\n{_dataset(variants)} | {_machine(variants)}", fontsize=8)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    if grid:
        ax.grid(alpha=0.3)
    try:
        with writing(path):  # a refused write names the plot, not only the report's folder
            fig.savefig(path, dpi=110)
    finally:
        _plt().close(fig)
    return path


def plot_accuracy(study: str, variants: list[Variant], out: Path) -> Path | None:
    if max((len(r.metrics) for v in variants for r in v.finished), default=0) < 2:
        return None  # one epoch is a point, not a curve
    fig, (ax,) = _figure()
    for v in variants:
        finished = v.finished
        if not finished:
            continue
        epochs = range(1, max(len(r.metrics) for r in finished) + 1)
        per_epoch = [[r.metrics[e - 1]["test_acc"] * 100 for r in finished if len(r.metrics) >= e] for e in epochs]
        mean = [sum(x) / len(x) for x in per_epoch]
        (line,) = ax.plot(list(epochs), mean, marker="o", ms=3, label=f"{v.label} (n={len(finished)})")
        ax.fill_between(
            list(epochs), [min(x) for x in per_epoch], [max(x) for x in per_epoch], alpha=0.2, color=line.get_color()
        )
    ax.set(xlabel="epoch", ylabel="test accuracy (%)")
    _integer_x(ax)
    return _save(
        fig, ax, f"{study}: test accuracy (mean, band = min-max over seeds)", variants, out / f"{study}-accuracy.png"
    )


def plot_gap(study: str, variants: list[Variant], out: Path) -> Path:
    """Train (training mode) and test accuracy per epoch, per variant: the gap C3 compares, and whether the models
    fit their training data at all."""

    def mean_per_epoch(v: Variant, key: str) -> list[float]:
        epochs = min(len(r.metrics) for r in v.finished)
        return [100 * statistics.fmean(r.metrics[e][key] for r in v.finished) for e in range(epochs)]

    fig, (ax,) = _figure()
    for v in variants:
        test, train = mean_per_epoch(v, "test_acc"), mean_per_epoch(v, "train_acc")
        epochs = list(range(1, len(test) + 1))
        (line,) = ax.plot(epochs, test, label=f"{v.label} test")
        ax.plot(epochs, train, ls="--", color=line.get_color(), label=f"{v.label} train")
    ax.set(xlabel="epoch", ylabel="accuracy (%)")
    _integer_x(ax)
    return _save(
        fig, ax, f"{study}: train (dashed) and test accuracy, mean over seeds", variants, out / f"{study}-gap.png"
    )


def plot_time_vs_n(study: str, variants: list[Variant], out: Path) -> Path | None:
    lrn = [v for v in variants if v.get("model.norm") == "lrn" and v.epoch_times()]
    if len({v.get("model.lrn.size") for v in lrn}) < 2:
        return None
    fig, (ax,) = _figure()
    for impl in sorted({v.get("model.lrn.impl") for v in lrn}):
        points = sorted(
            (v.get("model.lrn.size"), quartiles(v.epoch_times())) for v in lrn if v.get("model.lrn.impl") == impl
        )
        sizes = [n for n, _ in points]
        medians = [q[1] for _, q in points]
        ax.errorbar(
            sizes,
            medians,
            yerr=[[q[1] - q[0] for _, q in points], [q[2] - q[1] for _, q in points]],
            marker="o",
            capsize=3,
            label=f"LRN, impl {impl}",
        )
    for norm, style in (("bn", "--"), ("none", ":")):
        times = [t for v in variants if v.get("model.norm") == norm for t in v.epoch_times()]
        if times:
            ax.axhline(quartiles(times)[1], linestyle=style, color="k", label=f"{norm} (median)")
    ax.set(xlabel="LRN window n (channels)", ylabel="epoch time, training phase (s)")
    _integer_x(ax)
    return _save(
        fig, ax, f"{study}: epoch time vs LRN n (median, bars = IQR)", variants, out / f"{study}-time-vs-n.png"
    )


# The note's questions are about LRN's settings: the heatmap prefers these keys, in this order, when they vary.
HEATMAP_KEYS = (
    "model.lrn.k",
    "data.input_norm",
    "train.lr",
    "model.lrn.alpha",
    "model.lrn.size",
    "model.lrn.convention",
)
MAX_PANELS = 4  # a third swept key with at most this many values gets a panel per value


@dataclass
class HeatMap:
    """Mean final test accuracy (%) and mean epochs at chance per cell: maps[panel][row][col]. LRN's settings make
    the rows; the controls of a study (no normalization, BN) get a row each, named by their normalization, so the map
    shows what k costs."""

    row_key: str
    col_key: str
    panel_key: str | None
    rows: list
    cols: list
    panels: list
    maps: list[list[list[float]]]
    epochs_at_chance: list[list[list[float]]]  # mean epochs before test accuracy first left chance, same layout
    averaged: list[str]  # swept keys the map averages over


def heatmap(variants: list[Variant]) -> HeatMap | None:
    """Final test accuracy over the first two swept keys (LRN's first), one panel per value of a third key when it
    has at most MAX_PANELS values; nothing when the map would show one number everywhere."""
    varying = [k for k in varying_keys(variants) if k != "model.norm"]
    keys = [k for k in HEATMAP_KEYS if k in varying] + [k for k in varying if k not in HEATMAP_KEYS]
    if len(keys) < 2:
        return None
    row_key, col_key = keys[0], keys[1]
    controls: list[Variant] = []
    if is_norm_key(row_key) or is_norm_key(col_key):
        # An identity LRN is a control, not an LRN setting; controls are rows of their own when LRN's key is a row.
        controls = [v for v in variants if v.norm != "lrn" and not is_norm_key(col_key)]
        variants = [v for v in variants if v.norm == "lrn"]
    variants = [v for v in variants if row_key in v.settings and col_key in v.settings]
    controls = [v for v in controls if col_key in v.settings]
    panel_key = next((k for k in keys[2:] if 1 < len({repr(v.get(k)) for v in variants}) <= MAX_PANELS), None)
    panels = sorted({v.get(panel_key) for v in variants}, key=str) if panel_key else [None]
    rows = sorted({v.get(row_key) for v in variants}, key=str) + sorted({v.norm for v in controls})
    cols = sorted({v.get(col_key) for v in variants}, key=str)

    def row_of(v: Variant):
        return v.norm if v.norm != "lrn" else v.get(row_key)

    def cell(panel, r, c, measure) -> float:
        values = [
            x
            for v in variants + controls
            if row_of(v) == r and v.get(col_key) == c and (panel_key is None or v.get(panel_key) == panel)
            for x in measure(v)
        ]
        return sum(values) / len(values) if values else math.nan

    def accuracy(v: Variant) -> list[float]:
        return [100 * a for a in v.final_accs()]

    def at_chance(v: Variant) -> list[float]:
        return [epochs_at_chance(r, v.chance()) for r in v.finished]

    maps = [[[cell(p, r, c, accuracy) for c in cols] for r in rows] for p in panels]
    stalls = [[[cell(p, r, c, at_chance) for c in cols] for r in rows] for p in panels]
    shown = [x for m in maps for row in m for x in row if not math.isnan(x)]
    if not shown or max(shown) - min(shown) < 1:
        return None
    averaged = [k for k in keys[2:] if k != panel_key]
    return HeatMap(row_key, col_key, panel_key, rows, cols, panels, maps, stalls, averaged)


def plot_heatmap(study: str, variants: list[Variant], out: Path) -> Path | None:
    t = heatmap(variants)
    if t is None:
        return None
    names = short_names([t.row_key, t.col_key] + ([t.panel_key] if t.panel_key else []))
    fig, axes = _figure(
        len(t.panels), figsize=(len(t.panels) * (1.3 * len(t.cols) + 1.5) + 1.5, 0.6 * len(t.rows) + 2.5)
    )
    for ax, panel, values, stalls in zip(axes, t.panels, t.maps, t.epochs_at_chance):
        image = ax.imshow(values, cmap="viridis", vmin=0, vmax=100, aspect="auto")
        for i, row in enumerate(values):
            for j, value in enumerate(row):
                empty = math.isnan(value)  # no run at this cell: the background shows through
                stalled = f"\n{stalls[i][j]:.1f} epochs at chance" if not empty and stalls[i][j] >= 0.5 else ""
                ax.text(
                    j,
                    i,
                    "-" if empty else f"{value:.1f}{stalled}",
                    ha="center",
                    va="center",
                    color="k" if empty else "w",
                    fontsize=8,
                )
        ax.set_xticks(range(len(t.cols)), [str(c) for c in t.cols])
        ax.set_yticks(range(len(t.rows)), [str(r) for r in t.rows])
        ax.set(xlabel=names[t.col_key], ylabel=names[t.row_key])
        if t.panel_key:
            ax.set_title(f"{names[t.panel_key]} = {panel}", fontsize=8)
    fig.colorbar(image, ax=list(axes), label="test accuracy (%)")
    title = f"{study}: final test accuracy (%) and epochs before it left chance, mean over seeds" + (
        f" and {', '.join(short_names(t.averaged).values())}" if t.averaged else ""
    )
    return _save(fig, axes[-1], title, variants, out / f"{study}-heatmap.png", grid=False)


def _probe_series(v: Variant, pick) -> tuple[list[int], list[float]]:
    """Mean over the variant's probed runs of pick(probe record) at each probe step (None values skipped)."""
    by_step: dict[int, list[float]] = {}
    for r in v.runs:
        for p in r.probes:
            value = pick(p)
            if value is not None:
                by_step.setdefault(p["step"], []).append(value)
    steps = sorted(by_step)
    return steps, [sum(by_step[s]) / len(by_step[s]) for s in steps]


def plot_probes(study: str, variants: list[Variant], out: Path) -> list[Path]:
    """Drift per normalized layer, relative update size and conv1 filter similarity over training."""
    probed = [v for v in variants if any(r.probes for r in v.runs)]
    if not probed:
        return []
    positions = max(len(r.probes[0]["layers"]) for v in probed for r in v.runs if r.probes)
    fig, axes = _figure(positions, figsize=(5 * positions, 4))
    for position, ax in enumerate(axes):
        for v in probed:
            steps, values = _probe_series(
                v, lambda p, i=position: p["layers"][i]["output_drift"] if i < len(p["layers"]) else None
            )
            ax.plot(steps, values, label=v.label)
        ax.set(xlabel="step", ylabel="drift of the layer's output (in stds)", yscale="log")
        _integer_x(ax)
        ax.set_title(f"norm position {position}", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    paths = [
        _save(
            fig,
            axes[-1],
            f"{study}: drift between probe points of each normalized layer's output "
            "(the next layer's input), mean over seeds",
            variants,
            out / f"{study}-drift.png",
        )
    ]
    for name, pick, label, log in (
        (
            "updates",
            lambda p: sum(w["update_ratio"] for w in p["weights"]) / len(p["weights"]),
            "relative weight update per step, mean over layers",
            True,
        ),
        ("filter-similarity", lambda p: p["filter_similarity"], "conv1 filter similarity (mean |cos|)", False),
    ):
        fig, (ax,) = _figure()
        for v in probed:
            ax.plot(*_probe_series(v, pick), label=v.label)
        ax.set(xlabel="step", ylabel=label, yscale="log" if log else "linear")
        _integer_x(ax)
        paths.append(_save(fig, ax, f"{study}: {label}, mean over seeds", variants, out / f"{study}-{name}.png"))
    return paths


def filter_grids(study: str, variants: list[Variant], out: Path) -> tuple[list[Path], str]:
    """The conv1 filters of the study's worst and best probed runs (by final test accuracy), side by side."""
    runs = [r for v in variants for r in v.runs if r.metrics and (r.path / FILTERS_FILE).exists()]
    if len(runs) < 2:
        return [], ""
    worst = min(runs, key=lambda r: r.metrics[-1]["test_acc"])
    best = max(runs, key=lambda r: r.metrics[-1]["test_acc"])
    paths = []
    for tag, run in (("worst", worst), ("best", best)):
        target = out / f"{study}-filters-{tag}.png"
        shutil.copyfile(run.path / FILTERS_FILE, target)
        paths.append(target)
    text = (
        f"conv1 filters of the worst run ({worst.path.name}: {100 * worst.metrics[-1]['test_acc']:.1f}%, filter "
        f"similarity {worst.probes[-1]['filter_similarity']:.2f}) and the best ({best.path.name}: "
        f"{100 * best.metrics[-1]['test_acc']:.1f}%, similarity {best.probes[-1]['filter_similarity']:.2f})."
    )
    return paths, text


def probe_table(variants: list[Variant]) -> list[dict]:
    rows = []
    for v in variants:
        summary = probe_summary(v)
        if summary:
            rows.append(
                {
                    "variant": v.label,
                    "gain (out/in std)": f"{summary['gain']:.3f}",
                    "input drift": f"{summary['input_drift']:.3f}",
                    "output drift": f"{summary['output_drift']:.3f}",
                    "update ratio per step": f"{summary['update_ratio']:.2e}",
                    "final filter similarity": f"{summary['filter_similarity']:.3f}",
                }
            )
    return rows


# ---------------------------------------------------------------------------------------------------------------
# The document.


def _claim_section(verdict: Verdict) -> Section:
    section = Section(f"{verdict.claim}: {verdict.verdict}", level=3)
    section.paragraphs += [
        f"*Claim:* {verdict.statement}",
        f"*Verdict:* **{verdict.verdict}**. {verdict.reason}",
        f"*Thresholds:* {verdict.thresholds}.",
        f"*Runs used:* {len(verdict.runs)}" + (f" (under {_common_parent(verdict.runs)})" if verdict.runs else ""),
    ]
    for rows in ([c.row() for c in verdict.comparisons], verdict.evidence):
        if rows:
            section.tables.append(
                [{k: ("yes" if v is True else "no" if v is False else v) for k, v in row.items()} for row in rows]
            )
    return section


def _common_parent(paths: list[str]) -> str:
    parents = {str(Path(p).parent.parent) for p in paths}
    return ", ".join(sorted(parents))


def horizon(variants: list[Variant]) -> str:
    """How long and on what the study's runs trained: what every verdict drawn from it holds for."""
    runs = [r for v in variants for r in v.finished] or [r for v in variants for r in v.runs]
    epochs = sorted({len(r.metrics) for r in runs})
    images = sorted({r.env.train_size for r in runs} - {None})
    models = sorted({f"{r.get('model.arch')} width {r.get('model.width')}" for r in runs})
    precision = sorted({r.env.precision for r in runs})
    span = f"{epochs[0]}-{epochs[-1]}" if len(epochs) > 1 else f"{epochs[0] if epochs else 0}"
    sizes = "/".join(f"{n:,}" for n in images) or "?"
    plural = "" if span == "1" else "s"
    return f"{span} epoch{plural} of {sizes} training images, {', '.join(models)}, {', '.join(precision)}"


# The ablations that pull BN and LRN apart (keys.effective_norm names the first and last), by their table label.
BN_AND_LRN_ABLATIONS = (
    ("BN without affine", "bn-noaffine", "after_relu"),
    ("BN before ReLU", "bn", "before_relu"),
    ("learnable LRN", "lrn-learnable", "after_relu"),
)


def _ablation_arm(variants: list[Variant], norm: str, position: str = "after_relu") -> Variant | None:
    return next(
        (
            v
            for v in variants
            if v.norm == norm and (v.get("model.norm_position") or "after_relu") == position and v.finished
        ),
        None,
    )


def ablation_rows(variants: list[Variant]) -> tuple[list[dict], str]:
    """What in BN beats LRN, from a study with BN, LRN and some of their ablations: each variant's final test accuracy
    minus hand-set LRN's (95% Welch interval), and in words how much of BN's lead remains without BN's affine and
    how much of LRN's gap closes when its parameters learn. Empty without BN and LRN in the study."""
    lrn, bn = _ablation_arm(variants, "lrn"), _ablation_arm(variants, "bn")
    arms = [("BN", bn)]
    arms += [(name, _ablation_arm(variants, norm, position)) for name, norm, position in BN_AND_LRN_ABLATIONS]
    # Every other normalization of the registry, so that one added there shows up here unasked.
    arms += [(norm, _ablation_arm(variants, norm)) for norm in NORMS.names if norm not in ("bn", "lrn")]
    present = [(name, v) for name, v in arms if v]
    if not (lrn and bn) or len(present) < 3:
        return [], ""
    diffs = {name: welch(v.final_accs(), lrn.final_accs()) for name, v in present}
    rows = [
        {
            "variant": name if name == v.label else f"{name} ({v.label})",
            "final test acc": _pm(v.final_accs()),
            "minus hand-set LRN [95% CI]": diffs[name].text(100, " points"),
            "seeds": v.seeds(),
        }
        for name, v in present
    ]
    lead = diffs["BN"].estimate
    words = [f"BN leads hand-set LRN by {diffs['BN'].text(100, ' points')}."]
    if "BN without affine" in diffs and lead:
        remains = diffs["BN without affine"].estimate
        words.append(
            f"Without its affine, BN leads by {diffs['BN without affine'].text(100, ' points')}: "
            f"{100 * remains / lead:.0f}% of its lead remains."
        )
    if "learnable LRN" in diffs and lead:
        closed = diffs["learnable LRN"].estimate
        words.append(
            f"Learning k, alpha and beta moves LRN by {diffs['learnable LRN'].text(100, ' points')}: "
            f"{100 * closed / lead:.0f}% of the gap to BN closes."
        )
    if "BN before ReLU" in diffs:
        words.append(
            f"BN before its ReLU: {diffs['BN before ReLU'].text(100, ' points')} against LRN "
            f"(after: {diffs['BN'].text(100, ' points')})."
        )
    return rows, " ".join(words)


def summary_rows(verdicts: list[Verdict], studies: dict[str, list[Variant]]) -> list[dict]:
    rows = []
    for v in verdicts:
        key = v.key_comparison
        # The horizon of the studies the verdict's comparisons come from (others may sit in its evidence tables).
        used = sorted({c.study for c in v.comparisons} or {Path(run).parent.name for run in v.runs})
        rows.append(
            {
                "claim": v.claim,
                "verdict": v.verdict,
                "key comparison": key.reads if key else v.reason,
                "figure [95% CI]": key.figure() if key else "-",
                "seeds": key.row()["n"] if key else "-",
                "shown": f"{sum(c.holds for c in v.comparisons)}/{len(v.comparisons)}" if v.comparisons else "-",
                "does not show": "; ".join(v.limits) or "-",
                "horizon": "; ".join(f"{s}: {horizon(studies[s])}" for s in used if s in studies) or "-",
            }
        )
    return rows


def _study_section(study: str, variants: list[Variant], out: Path, target: float, gap: bool):
    """One study's section: its table, its plots (by name, for the summary to pick from), its ablations (and their
    answer in words) and its probes."""
    section = Section(
        f"Study {study}",
        paragraphs=[f"Dataset: {_dataset(variants)}. Machine: {_machine(variants)}. Horizon: {horizon(variants)}."],
    )
    section.tables.append(study_table(variants, target))
    plots = {
        "accuracy": plot_accuracy(study, variants, out),
        "time": plot_time_vs_n(study, variants, out),
        "heatmap": plot_heatmap(study, variants, out),
        "gap": plot_gap(study, [v for v in variants if v.finished], out) if gap else None,
    }
    figures = {name: path for name, path in plots.items() if path}
    section.images += list(figures.values())
    ablations, answer = ablation_rows(variants)
    if ablations:
        section.paragraphs.append(f"*Ablations (C1, C2):* {answer}")
        section.tables.append(ablations)
    probes = probe_table(variants)
    if probes:
        section.paragraphs.append(
            "Probes (see lrnbn/probes.py): drift is the mean shift of a normalized layer's "
            "per-channel means between probe points, in units of the earlier std."
        )
        section.tables.append(probes)
        section.images += plot_probes(study, variants, out)
        grids, text = filter_grids(study, variants, out)
        if grids:
            section.paragraphs.append(text)
            section.images += grids
    return section, figures, answer


def build_sections(paths: list[Path], out: Path, target: float) -> tuple[list[Section], list[Verdict], dict, list]:
    """The report: a one-screen summary (each claim's verdict, its key difference with its interval, the horizon,
    the plot that shows it), then each claim's comparisons and evidence, then each study's tables and plots."""
    found = find_runs(paths)
    runs = found.runs
    if not runs:
        damaged = (
            f" ({len(found.damaged)} damaged: {found.damaged[0][0]}: {found.damaged[0][1]})" if found.damaged else ""
        )
        raise UserError(f"no run directories under {', '.join(map(str, paths))}{damaged}")
    studies = group(runs)
    verdicts = all_claims(studies, target)
    gap_studies = {c.study for v in verdicts if v.figure == "gap" for c in v.comparisons}
    tables, figures, study_sections, answers = {}, {}, [], []
    for study, variants in studies.items():
        section, figures[study], answer = _study_section(study, variants, out, target, study in gap_studies)
        tables[study] = section.tables[0]
        answers += [f"*Ablations in {study}:* {answer}"] if answer else []
        study_sections.append(section)

    summary = Section(
        "lrnbn report",
        level=1,
        paragraphs=[
            f"{len(runs)} runs in {len(studies)} studies, read from {', '.join(map(str, paths))}. Each verdict "
            f"rests on differences of means over seeds with their 95% Welch intervals, decided after Holm's "
            f"correction within the claim, with an exact permutation test beside each, or (C5) on shares of runs "
            f"with exact intervals (docs/claims.md); 'shown' counts the comparisons that show the claimed effect. "
            f"Every verdict holds for its horizon only. Target accuracy for 'epochs to': {100 * target:.0f}%."
        ],
    )
    summary.tables.append(summary_rows(verdicts, studies))
    summary.paragraphs += answers
    for v in verdicts:
        # The plot of the study the quoted comparison comes from; else of the first study the verdict used.
        study = v.key_comparison.study if v.key_comparison else None
        if study not in figures:
            study = next((Path(run).parent.name for run in v.runs if Path(run).parent.name in figures), None)
        figure = figures.get(study, {}).get(v.figure) if study else None
        if figure and figure not in summary.images:
            summary.images.append(figure)
    if found.damaged:
        summary.paragraphs.append(
            f"{len(found.damaged)} damaged run director{'y was' if len(found.damaged) == 1 else 'ies were'} left out: "
            + "; ".join(f"{path} ({why})" for path, why in found.damaged)
        )
    truncated = [str(r.path) for r in runs if r.truncated]
    if truncated:
        summary.paragraphs.append(
            "metrics.jsonl ended in a truncated line (a crash) in: "
            + ", ".join(truncated)
            + "; that line was left out."
        )
    claims = Section(
        "Claims", paragraphs=["Each verdict is computed from the runs of the studies below (lrnbn/claims.py)."]
    )
    sections = [summary, claims, *map(_claim_section, verdicts), *study_sections]
    return sections, verdicts, tables, found.damaged


def _markdown_table(rows: list[dict]) -> str:
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(row.get(k, "")) for k in header) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(sections: list[Section], out: Path) -> str:
    parts = []
    for s in sections:
        parts.append("#" * s.level + " " + s.heading)
        parts += s.paragraphs
        parts += [_markdown_table(t) for t in s.tables if t]
        parts += [f"![{p.stem}]({p.relative_to(out)})" for p in s.images]
    return "\n\n".join(parts) + "\n"


def render_html(sections: list[Section]) -> str:
    def inline(text: str) -> str:
        text = html.escape(text)
        for marker, tag in (("**", "b"), ("*", "i")):
            pieces = text.split(marker)
            text = "".join(p if i % 2 == 0 else f"<{tag}>{p}</{tag}>" for i, p in enumerate(pieces))
        return text

    body = []
    for s in sections:
        body.append(f"<h{s.level}>{html.escape(s.heading)}</h{s.level}>")
        body += [f"<p>{inline(p)}</p>" for p in s.paragraphs]
        for table in (t for t in s.tables if t):
            head = "".join(f"<th>{html.escape(k)}</th>" for k in table[0])
            rows = "".join(
                "<tr>" + "".join(f"<td>{html.escape(str(r.get(k, '')))}</td>" for k in table[0]) + "</tr>"
                for r in table
            )
            body.append(f"<table><tr>{head}</tr>{rows}</table>")
        for p in s.images:
            data = base64.b64encode(p.read_bytes()).decode()
            body.append(f'<p><img alt="{html.escape(p.stem)}" src="data:image/png;base64,{data}"></p>')
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px}img{max-width:100%}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>lrnbn report</title><style>{style}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )


def build_report(paths: list[Path], out: Path, fmt: str = "md", target: float = 0.5):
    if fmt not in ("md", "html"):
        raise UserError(f"--format: expected md or html, got {fmt!r}")
    if not 0 < target <= 1:
        raise UserError(f"--target: a test accuracy in (0, 1], got {target}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {out}: {exc.strerror or exc}") from None
    sections, verdicts, tables, damaged = build_sections(paths, out, target)
    report = out / f"report.{fmt}"
    atomic_write_text(report, render_markdown(sections, out) if fmt == "md" else render_html(sections))
    return report, verdicts, tables, damaged
