"""The note's claims C1-C5 as functions from runs on disk to verdicts with their evidence.

Each claim first gathers its comparisons (a difference of means over seeds or repeats, with its 95% Welch interval,
lrnbn/stats.py) and evidence rows, then decides with one ladder. Nothing is assumed: a verdict is computed from the
runs it is given, names the runs and thresholds it used, and is "inconclusive" (saying which runs are missing) when
they are not there. The thresholds are constants here, described in docs/claims.md and printed in the report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from lrnbn.keys import is_norm_key
from lrnbn.results import Variant, mean_std, probe_summary, to_target
from lrnbn.stats import Difference, shows, welch

REPRODUCED, NOT_REPRODUCED, CONDITIONAL, INCONCLUSIVE = (
    "reproduced",
    "not reproduced",
    "reproduced only under conditions",
    "inconclusive",
)

CHANCE_TOLERANCE = 0.02  # "at chance": within 2 points of 1/classes; "learned": more than 2 points above it
MIN_SEEDS_CHANCE = 3  # seeds a setting needs before C5 may say it stays at chance
MIN_SEEDS = 2  # seeds per variant for the accuracy and convergence comparisons
SENSITIVITY_MIN = 0.05  # C1: LRN's best setting at least 5 points of final accuracy above its worst
EPOCHS_MIN = 0.5  # C2: LRN at least half an epoch slower than BN to the target
GAP_MARGIN = 0.01  # C3: LRN's train-test gap at least 1 point above BN's
FIT_ACC = 0.95  # C3: a model "fits its training data" at this mean final train-mode accuracy; below, a gap says
# more about how far training has come than about regularization
TIME_MARGIN = 0.05  # C4: LRN's epoch at least 5% of BN's time slower than BN's
GROWTH = 1.10  # C4: the largest n at least 10% slower than the smallest, per implementation
PROBE_NOISE_SE = 3  # C5: a probe-batch accuracy counts as learning only 3 binomial standard errors above a guess


@dataclass
class Comparison:
    """One difference a verdict rests on, and whether it shows the claimed effect."""

    what: str
    diff: Difference
    minimum: float
    holds: bool
    missing: str  # what keeps it from holding, in words; "" when it holds
    scale: float = 1.0  # for display: 100 for accuracies (points)
    unit: str = ""
    refuted: bool = False  # the interval excludes the claimed effect (not merely fails to show it)
    seeds_decide: bool = True  # more seeds could decide it; False where its runs cannot (e.g. a stuck control)

    @property
    def study(self) -> str:
        """Every comparison's text starts with its study's name."""
        return self.what.split(": ", 1)[0]

    def row(self) -> dict:
        return {
            "comparison": self.what,
            "difference [95% CI]": self.diff.text(self.scale, self.unit),
            "n": f"{self.diff.n_a} vs {self.diff.n_b}",
            "minimum": f"{self.minimum * self.scale:.3g}{self.unit}",
            "shown": "yes" if self.holds else "refuted" if self.refuted else "undecided",
        }


@dataclass
class Verdict:
    claim: str
    statement: str
    verdict: str
    reason: str
    thresholds: str
    comparisons: list[Comparison] = field(default_factory=list)
    evidence: list[dict] = field(default_factory=list)  # rows for a table
    runs: list[str] = field(default_factory=list)  # run directories used

    @property
    def key_comparison(self) -> Comparison | None:
        """The comparison to quote beside the verdict: the first that holds, else the first."""
        return next((c for c in self.comparisons if c.holds), self.comparisons[0] if self.comparisons else None)


def ladder(outcomes: list[bool]) -> str:
    """The verdict from the comparisons a claim rests on: all hold -> reproduced; some -> reproduced only under
    conditions; none -> not reproduced. (No comparison at all is "inconclusive", decided before this.)"""
    if all(outcomes):
        return REPRODUCED
    return CONDITIONAL if any(outcomes) else NOT_REPRODUCED


def _compare(what: str, a: list[float], b: list[float], minimum: float, scale: float = 1.0, unit: str = ""):
    """mean(a) - mean(b), claimed to be positive and at least `minimum`."""
    diff = welch(a, b)
    holds, missing = shows(diff, minimum)
    refuted = diff.has_interval and diff.high < minimum
    return Comparison(what, diff, minimum, holds, missing, scale, unit, refuted)


def _decide(claim, statement, thresholds, comparisons, reasons: dict, evidence, runs, extra: str = "") -> Verdict:
    if not any(c.holds or c.refuted for c in comparisons):
        # The runs neither show the claim nor rule it out: say why, and whether more seeds could change that.
        missing = "; ".join(f"{c.what} ({c.missing})" for c in comparisons)
        advice = "; run more seeds" if any(c.seeds_decide for c in comparisons) else ""
        return Verdict(
            claim,
            statement,
            INCONCLUSIVE,
            f"no comparison is decided: {missing}{advice}" + extra,
            thresholds,
            comparisons,
            evidence,
            runs,
        )
    verdict = ladder([c.holds for c in comparisons])
    reason = reasons[verdict]
    unshown = [c for c in comparisons if not c.holds]
    if unshown and verdict != NOT_REPRODUCED:
        reason += " Not shown: " + "; ".join(f"{c.what} ({c.missing})" for c in unshown) + "."
    return Verdict(claim, statement, verdict, reason + extra, thresholds, comparisons, evidence, runs)


def _runs_of(variants: list[Variant]) -> list[str]:
    return [str(r.path) for v in variants for r in v.runs]


def _all_but_norm(v: Variant) -> tuple:
    """The variant's study and settings other than the normalization's: equal for runs a fair comparison pairs."""
    return v.study, tuple(sorted((k, repr(x)) for k, x in v.settings.items() if not is_norm_key(k)))


def _norm_groups(studies: dict[str, list[Variant]]) -> list[list[Variant]]:
    """Per study, sets of variants that differ only in the normalization (model.norm, model.lrn.*) and that
    include BN and LRN: the fair comparisons."""
    groups = []
    for variants in studies.values():
        buckets: dict[tuple, list[Variant]] = {}
        for v in variants:
            buckets.setdefault(_all_but_norm(v), []).append(v)
        for bucket in buckets.values():
            norms = {v.norm for v in bucket}
            if {"bn", "lrn"} <= norms:
                groups.append(bucket)
    return groups


def _by_norm(group: list[Variant], norm: str) -> list[Variant]:
    """The group's variants with this norm (an identity LRN counts as none)."""
    return [v for v in group if v.norm == norm]


def _probe_comparison(group: list[Variant], key: str) -> tuple[str, bool] | None:
    """BN's against LRN's mean of a probe measure; None when either lacks probes. The flag says whether BN's
    value is lower than every LRN variant's (the direction the note's mechanism predicts)."""
    bn = [probe_summary(v) for v in _by_norm(group, "bn")]
    lrn = [probe_summary(v) for v in _by_norm(group, "lrn")]
    none = [probe_summary(v) for v in _by_norm(group, "none")]
    if not all(bn) or not all(lrn) or not bn or not lrn:
        return None
    bn_value = min(p[key] for p in bn)
    holds = all(bn_value < p[key] for p in lrn)
    text = f"{group[0].study}: BN {bn_value:.3g}, LRN {', '.join(f'{p[key]:.3g}' for p in lrn)}"
    if none and all(none):
        text += f", none {', '.join(f'{p[key]:.3g}' for p in none)}"
    return text, holds


def _pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


# ---------------------------------------------------------------------------------------------------------------


def claim_c1(studies: dict[str, list[Variant]]) -> Verdict:
    statement = "LRN has hand-set hyper-parameters (k, n, alpha, beta); BN has trainable ones (gamma, beta) instead."
    thresholds = (
        f"per group of runs alike but in the normalization, with BN learning above chance and two or more LRN "
        f"settings: LRN's best setting minus its worst "
        f"in final test accuracy, 95% Welch interval over seeds above 0 and the difference >= "
        f"{100 * SENSITIVITY_MIN:.0f} points"
    )
    comparisons, evidence, used = [], [], []
    # Within a group of runs that share every other setting (learning rate, inputs, ...), so that the spread is
    # LRN's hand-set values' alone.
    for variants in _norm_groups(studies):
        study = variants[0].study
        lrn = [v for v in _by_norm(variants, "lrn") if v.finished and v.seeds() >= MIN_SEEDS]
        bn = [v for v in _by_norm(variants, "bn") if v.finished]
        if len(lrn) < 2 or not bn or not any(v.learned(CHANCE_TOLERANCE) for v in bn):
            continue  # without a BN run that learned, accuracies say nothing about sensitivity
        ranked = sorted(lrn, key=lambda v: mean_std(v.final_accs())[0])
        worst, best = ranked[0], ranked[-1]
        comparisons.append(
            _compare(
                f"{study}: {best.label} minus {worst.label}",
                best.final_accs(),
                worst.final_accs(),
                SENSITIVITY_MIN,
                100,
                " points",
            )
        )
        per_norm = {v.norm: v.runs[0].env.get("model", {}).get("norm_trainable", "?") for v in variants}
        counts = ", ".join(f"{norm} {count}" for norm, count in sorted(per_norm.items()))
        evidence.append(
            {
                "study": study,
                "LRN settings": len(lrn),
                "best LRN": f"{best.label} {_pct(mean_std(best.final_accs())[0])}",
                "worst LRN": f"{worst.label} {_pct(mean_std(worst.final_accs())[0])}",
                "BN": _pct(mean_std(bn[0].final_accs())[0]),
                "trainable norm params": counts,
            }
        )
        used += lrn + bn
    if not comparisons:
        return Verdict(
            "C1",
            statement,
            INCONCLUSIVE,
            "needs runs: a study with BN (learning above chance) and at least two LRN settings (k, alpha or n swept)",
            thresholds,
        )
    reasons = {
        REPRODUCED: "BN's normalization has trainable parameters and LRN's has none; final accuracy moves with LRN's "
        "hand-set values.",
        CONDITIONAL: "LRN's hand-set values matter in some studies, not in others.",
        NOT_REPRODUCED: "LRN's accuracy does not move measurably across the swept settings, so its hand-set values "
        "are not a burden here.",
    }
    return _decide("C1", statement, thresholds, comparisons, reasons, evidence, _runs_of(used))


def claim_c2(studies: dict[str, list[Variant]], target: float) -> Verdict:
    statement = "BN makes training converge faster than LRN (the note: because layer input distributions stay steady)."
    thresholds = (
        f"target test accuracy {_pct(target)}; per LRN variant, its epochs to the target minus BN's in the same study "
        f"(a seed that never reaches it counts as epochs + 1), >= {MIN_SEEDS} seeds each, 95% Welch interval above 0 "
        f"and the difference >= {EPOCHS_MIN:g} epoch"
    )
    comparisons, evidence, compared, unreached = [], [], [], []
    for group in _norm_groups(studies):
        bn, lrn = _by_norm(group, "bn"), _by_norm(group, "lrn")
        if any(v.seeds() < MIN_SEEDS for v in bn + lrn):
            continue

        def epochs(v: Variant) -> list[float]:
            return [to_target(r, target)[0] or len(r.metrics) + 1 for r in v.finished]

        if not any(to_target(r, target)[0] for v in bn + lrn for r in v.finished):
            unreached.append(group[0].study)  # the target is out of reach of these runs: they cannot tell
            continue
        for v in lrn:
            comparisons.append(
                _compare(
                    f"{v.study}: {v.label} minus {bn[0].label}, epochs to {_pct(target)}",
                    epochs(v),
                    epochs(bn[0]),
                    EPOCHS_MIN,
                    unit=" epochs",
                )
            )
        for v in group:
            reached = [to_target(r, target) for r in v.finished]
            evidence.append(
                {
                    "study": v.study,
                    "variant": v.label,
                    "seeds": v.seeds(),
                    "reached": f"{sum(1 for e, _ in reached if e)}/{len(reached)}",
                    "mean epochs to target": f"{mean_std(epochs(v))[0]:.1f}",
                    "mean seconds to target": _mean_seconds(reached),
                    "final test acc": _pct(mean_std(v.final_accs())[0]),
                }
            )
        compared.append(group)
    if not comparisons and unreached:
        return Verdict(
            "C2",
            statement,
            INCONCLUSIVE,
            f"neither BN nor LRN reached {_pct(target)} in {', '.join(unreached)}: lower --target or train longer",
            thresholds,
        )
    if not comparisons:
        return Verdict(
            "C2",
            statement,
            INCONCLUSIVE,
            f"needs runs: BN and LRN on the same schedule with "
            f">= {MIN_SEEDS} seeds each, e.g. configs/notes/convergence-quick.yaml",
            thresholds,
        )
    # The mechanism for the groups the verdict compared: elsewhere (a target out of reach, one seed) it explains
    # nothing.
    drifts = [c for c in (_probe_comparison(g, "output_drift") for g in compared) if c]
    if drifts:
        steady = all(holds for _, holds in drifts)
        mechanism = (
            f" Mechanism (probes): drift of the normalized layers' outputs, i.e. the next layers' inputs, per probe "
            f"interval: {'; '.join(t for t, _ in drifts)}; "
            + (
                "BN's is the lowest, as the note explains."
                if steady
                else "BN's is not the lowest, so steadier inputs do not explain the difference here."
            )
        )
    else:
        mechanism = " The mechanism (steady input distributions) is not measured by these runs (enable probes)."
    reasons = {
        REPRODUCED: "BN reached the target measurably sooner than every LRN variant.",
        CONDITIONAL: "BN reached the target measurably sooner than some LRN variants, not all.",
        NOT_REPRODUCED: "BN did not reach the target measurably sooner than LRN.",
    }
    used = [v for group in compared for v in group]
    return _decide("C2", statement, thresholds, comparisons, reasons, evidence, _runs_of(used), mechanism)


def _mean_seconds(reached: list[tuple]) -> str:
    seconds = [s for e, s in reached if e]
    return f"{sum(seconds) / len(seconds):.0f}" if seconds else "never"


def claim_c3(studies: dict[str, list[Variant]]) -> Verdict:
    statement = "BN regularizes: it keeps weights from changing abruptly (a smaller train-test gap)."
    thresholds = (
        f"final train accuracy (training mode) minus test accuracy; per LRN variant that fits its training data "
        f"as BN does (mean final train accuracy >= {100 * FIT_ACC:.0f}% for both), its gap minus BN's, "
        f">= {MIN_SEEDS} seeds each, 95% Welch interval above 0 and the difference >= {100 * GAP_MARGIN:.0f} point"
    )

    def final_train_acc(v: Variant) -> float:
        return mean_std([r.metrics[-1]["train_acc"] for r in v.finished])[0]

    comparisons, evidence, used, compared, stuck, underfit = [], [], [], [], [], []
    for group in _norm_groups(studies):
        bn = _by_norm(group, "bn")
        if any(v.seeds() < MIN_SEEDS for v in group) or not any(v.learned(CHANCE_TOLERANCE) for v in bn):
            continue  # a gap between runs that learned nothing says nothing about regularization
        for v in group:
            mean, std = mean_std(v.gaps())
            final_train = final_train_acc(v)
            evidence.append(
                {
                    "study": v.study,
                    "variant": v.label,
                    "seeds": v.seeds(),
                    "learned": v.learned(CHANCE_TOLERANCE),
                    "final train acc": _pct(final_train),
                    "train-test gap": f"{100 * mean:+.1f} +- {100 * std:.1f} points",
                }
            )
        for v in _by_norm(group, "lrn"):
            if not v.learned(CHANCE_TOLERANCE):
                stuck.append(v.label)  # a variant that stayed at chance has no gap worth comparing
            elif min(final_train_acc(bn[0]), final_train_acc(v)) < FIT_ACC:
                underfit.append(v.label)  # the gap shows how far training has come, not regularization
            else:
                if group not in compared:
                    compared.append(group)
                comparisons.append(
                    _compare(
                        f"{v.study}: {v.label} minus {bn[0].label}, train-test gap",
                        v.gaps(),
                        bn[0].gaps(),
                        GAP_MARGIN,
                        100,
                        " points",
                    )
                )
        used += group
    if not comparisons and underfit:
        return Verdict(
            "C3",
            statement,
            INCONCLUSIVE,
            f"no LRN run fits its training data as BN does (mean final train accuracy >= {100 * FIT_ACC:.0f}% for "
            f"both; not so for {'; '.join(underfit)}), so the gap cannot show regularization: train longer on less "
            "data, e.g. configs/notes/regularization-standard.yaml",
            thresholds,
            [],
            evidence,
            _runs_of(used),
        )
    if not comparisons and stuck:
        return Verdict(
            "C3",
            statement,
            INCONCLUSIVE,
            f"the LRN runs ({'; '.join(stuck)}) stayed at chance, so there "
            "is no train-test gap to compare with BN's: train longer",
            thresholds,
            [],
            evidence,
            _runs_of(used),
        )
    if not comparisons:
        return Verdict(
            "C3",
            statement,
            INCONCLUSIVE,
            f"needs runs: BN (learning above chance) and LRN with "
            f">= {MIN_SEEDS} seeds each, e.g. configs/notes/regularization-standard.yaml",
            thresholds,
        )
    updates = [c for c in (_probe_comparison(g, "update_ratio") for g in compared) if c]
    if updates:
        caveat = f" Relative weight update per step (probes): {'; '.join(t for t, _ in updates)}; " + (
            "BN's updates are the smallest." if all(h for _, h in updates) else "BN's updates are not the smallest."
        )
    else:
        caveat = " Weight-update sizes are not measured by these runs (enable probes); the gap is the only evidence."
    reasons = {
        REPRODUCED: "BN's train-test gap is measurably smaller than every LRN variant's.",
        CONDITIONAL: "BN's gap is measurably smaller than some LRN variants' only.",
        NOT_REPRODUCED: "BN's train-test gap is not measurably smaller than LRN's.",
    }
    return _decide("C3", statement, thresholds, comparisons, reasons, evidence, _runs_of(used), caveat)


def claim_c4(studies: dict[str, list[Variant]]) -> Verdict:
    statement = "BN is cheaper to compute than LRN, and LRN's cost grows with its window n."
    thresholds = (
        f"from studies that time LRN at two or more n beside BN, training-phase epoch times over repeats: per LRN "
        f"variant its time minus BN's, >= {100 * TIME_MARGIN:.0f}% of BN's; per implementation the largest n's time "
        f"minus the smallest's, >= {100 * (GROWTH - 1):.0f}% of the smallest's; each with its 95% Welch interval "
        f"above 0"
    )
    comparisons, evidence, used, growth = [], [], [], {}
    for group in _norm_groups(studies):
        bn = [v for v in _by_norm(group, "bn") if v.epoch_times()]
        timed = [v for v in _by_norm(group, "lrn") if v.epoch_times()]
        # Only timing studies count: LRN timed at two or more n beside BN (others may run jobs side by side).
        if not bn or len({v.get("model.lrn.size") for v in timed}) < 2:
            continue
        bn_times = bn[0].epoch_times()
        bn_mean = mean_std(bn_times)[0]
        for v in sorted(group, key=lambda v: (v.norm, str(v.get("model.lrn.impl")), v.get("model.lrn.size") or 0)):
            mean, std = mean_std(v.epoch_times())
            evidence.append(
                {
                    "study": v.study,
                    "variant": v.label,
                    "epochs timed": len(v.epoch_times()),
                    "mean epoch s": f"{mean:.2f} +- {std:.2f}",
                    "ratio to BN": f"{mean / bn_mean:.2f}",
                }
            )
        for v in timed:
            comparisons.append(
                _compare(
                    f"{v.study}: {v.label} minus BN, epoch s",
                    v.epoch_times(),
                    bn_times,
                    TIME_MARGIN * bn_mean,
                    unit=" s",
                )
            )
        for impl in dict.fromkeys(v.get("model.lrn.impl") for v in timed):
            by_size = {v.get("model.lrn.size"): v for v in timed if v.get("model.lrn.impl") == impl}
            if len(by_size) >= 2:
                small, large = by_size[min(by_size)], by_size[max(by_size)]
                grows = _compare(
                    f"{group[0].study}: impl {impl}, n {max(by_size)} minus n {min(by_size)}, epoch s",
                    large.epoch_times(),
                    small.epoch_times(),
                    (GROWTH - 1) * mean_std(small.epoch_times())[0],
                    unit=" s",
                )
                comparisons.append(grows)
                growth.setdefault(impl, []).append(grows.holds)
        used += group
    if not comparisons:
        return Verdict(
            "C4",
            statement,
            INCONCLUSIVE,
            "needs runs: BN and LRN timed in one study, e.g. configs/notes/timing-quick.yaml",
            thresholds,
        )
    grows = {impl: all(flags) for impl, flags in growth.items()}
    costlier = [c.holds for c in comparisons if "minus BN" in c.what]
    extra = f" LRN cost measurably more than BN in {sum(costlier)}/{len(costlier)} LRN variants."
    extra += "".join(f" With impl {i}, epoch time {'grew' if g else 'did not grow'} with n." for i, g in grows.items())
    if grows and any(grows.values()) and not all(grows.values()):
        extra += (
            " Growth with n is a property of an implementation, not of LRN: "
            + ", ".join(f"{i}: {'grows' if g else 'flat'}" for i, g in grows.items())
            + "."
        )
    reasons = {
        REPRODUCED: "LRN cost more than BN, and its cost grew with n.",
        CONDITIONAL: "Only part of the claim holds.",
        NOT_REPRODUCED: "LRN was not measurably costlier than BN, nor did its cost grow with n.",
    }
    return _decide("C4", statement, thresholds, comparisons, reasons, evidence, _runs_of(used), extra)


def _probe_chance_bar(run, chance: float) -> float | None:
    """The probe-batch accuracy above which a run has learned something: the batch's largest class share (what
    guessing that class scores) plus PROBE_NOISE_SE binomial standard errors of a guess at chance on that many
    images (about 6 points on 256). None where the batch is not trusted with it: not recorded in env.json's
    probe_batch, or one class filling more than twice its share (a batch of one class is all right or all wrong
    by guessing that class)."""
    counts = (run.env.get("probe_batch") or {}).get("class_counts")
    if not counts or max(counts) / sum(counts) > 2 * chance:
        return None
    images = sum(counts)
    return max(counts) / images + PROBE_NOISE_SE * math.sqrt(chance * (1 - chance) / images)


def epochs_at_chance(run, chance: float) -> int:
    """Epochs the run's test accuracy sat at chance before it first left it; all of its epochs when it never did."""
    return next(
        (i for i, m in enumerate(run.metrics) if m["test_acc"] > chance + CHANCE_TOLERANCE),
        len(run.metrics),
    )


def steps_at_chance(run, chance: float) -> int:
    """Optimizer steps taken by the end of the run's last epoch at chance before it first left it: 0 when it left in
    the first epoch, all of them when it never did."""
    at = epochs_at_chance(run, chance)
    return run.metrics[at - 1]["steps"] if at else 0


def _left_chance(run, chance: float) -> str:
    """Where a run first left chance: the epoch (test accuracy) and, with probes on a batch of every class, the
    step (probe-batch accuracy above _probe_chance_bar)."""
    at_chance = epochs_at_chance(run, chance)
    epoch = run.metrics[at_chance]["epoch"] if at_chance < len(run.metrics) else None
    bar = _probe_chance_bar(run, chance)
    probes = run.probes if bar is not None else []
    step = next((p["step"] for p in probes if p.get("probe_acc", 0) > bar), None)
    if epoch is None and step is None:
        return "never"
    return f"epoch {epoch or 'never'}" + (f" (step {step})" if step else "")


def _times(a: float, b: float) -> str:
    """a against b in words: "17x smaller" or "1.5x larger"."""
    return f"{b / a:.2g}x smaller" if a < b else f"{a / b:.2g}x larger"


def _in_notes_conditions(v: Variant) -> bool:
    """C5's stated conditions: an LRN with k = 1 or 2 on normalized inputs."""
    return v.norm == "lrn" and v.get("model.lrn.k") in (1, 2) and v.get("data.input_norm") is True


def claim_c5(studies: dict[str, list[Variant]]) -> Verdict:
    statement = "With input normalization, LRN's k = 1 or 2 destabilises training: accuracy stays at chance (10%)."
    thresholds = (
        f"a setting 'stays at chance' if, over >= {MIN_SEEDS_CHANCE} seeds, the 95% interval of its best epoch's test "
        f"accuracy minus 1/classes lies below {100 * CHANCE_TOLERANCE:.0f} points; it 'sits at chance longer' than its "
        f"control if its steps at chance (to the end of its last epoch at chance before it first left it) exceed the "
        f"control's by one epoch's steps or more, 95% Welch interval above 0"
    )

    def at_chance(v: Variant) -> tuple[Comparison, bool]:
        best = v.best_accs()
        diff = welch(best, [v.chance()] * len(best))
        stays = diff.has_interval and diff.high <= CHANCE_TOLERANCE
        missing = (
            ""
            if stays
            else (
                "its best accuracy is measurably above chance"
                if diff.low > CHANCE_TOLERANCE
                else "its interval reaches beyond the tolerance"
            )
        )
        refuted = diff.has_interval and diff.low > CHANCE_TOLERANCE
        return Comparison(
            f"{v.study}: {v.label}, best test accuracy minus chance",
            diff,
            CHANCE_TOLERANCE,
            stays,
            missing,
            100,
            " points",
            refuted,
        ), stays

    # Controls: runs alike in all but the normalization, without an effective LRN. Where they stay at chance too,
    # k is not what holds the LRN runs there, so that setting decides nothing.
    controls: dict[tuple, list[tuple[Variant, bool]]] = {}  # an identity LRN and none may share their settings
    for variants in studies.values():
        for v in variants:
            if v.norm == "none" and v.seeds() >= MIN_SEEDS_CHANCE:
                controls.setdefault(_all_but_norm(v), []).append((v, at_chance(v)[1]))

    def stall(v: Variant) -> tuple[Comparison, Variant] | None:
        """How many more steps than its first control the setting sat at chance before it first left it. In steps,
        not epochs: studies differ in epoch size; at least one epoch, the resolution of a per-epoch test."""
        pairs = controls.get(_all_but_norm(v), [])
        if not pairs:
            return None
        control = pairs[0][0]
        chance = v.chance()
        comparison = _compare(
            f"{v.study}: {v.label} minus {control.label}, steps at chance",
            [steps_at_chance(r, chance) for r in v.finished],
            [steps_at_chance(r, chance) for r in control.finished],
            v.finished[0].metrics[0]["steps"],
            unit=" steps",
        )
        return comparison, control

    def evidence_row(v: Variant, is_note: bool, stays: bool, stalled: tuple | None = None) -> dict:
        probes = probe_summary(v)
        return {
            "study": v.study,
            "variant": v.label,
            "seeds": v.seeds(),
            "final test acc": _pct(mean_std(v.final_accs())[0]),
            "note's condition": is_note,
            "stays at chance": stays,
            "left chance": ", ".join(_left_chance(r, v.chance()) for r in v.finished),
            "steps at chance minus control's [95% CI]": stalled[0].diff.text(digits=0) if stalled else "",
            "gain": f"{probes['gain']:.2f}" if probes else "n/a",
            "update per step": f"{probes['update_ratio']:.1e}" if probes else "n/a",
            "filter similarity": f"{probes['filter_similarity']:.2f}" if probes else "n/a",
        }

    def stall_text(v: Variant, comparison: Comparison, control: Variant) -> str:
        """How long the setting sat at chance against its control, and what the probes saw meanwhile."""
        chance = v.chance()
        epochs = [epochs_at_chance(r, chance) for r in v.finished]
        text = (
            f"{v.study}: {v.label} at chance for {', '.join(map(str, epochs))} of {len(v.finished[0].metrics)} "
            f"epochs, against {', '.join(str(epochs_at_chance(r, chance)) for r in control.finished)} for "
            f"{control.label}: {comparison.diff.text(unit=' steps', digits=0)}"
        )
        window = max(1.0, sum(epochs) / len(epochs))
        mine, theirs = probe_summary(v, window), probe_summary(control, window)
        if mine and theirs:
            text += (
                f"; over those epochs, a relative weight update per step of {mine['update_ratio']:.1e} against the "
                f"control's {theirs['update_ratio']:.1e} ({_times(mine['update_ratio'], theirs['update_ratio'])}), "
                f"behind LRN layers of gain {mine['gain']:.2f} each"
            )
        return text

    comparisons, evidence, others, stalls, used = [], [], [], [], []
    for variants in studies.values():
        for v in variants:
            if v.norm != "lrn" or v.seeds() < MIN_SEEDS_CHANCE:
                continue  # an identity LRN counts as none: a control, not an LRN setting
            comparison, stays = at_chance(v)
            is_note = _in_notes_conditions(v)
            stalled = stall(v)
            evidence.append(evidence_row(v, is_note, stays, stalled))
            used.append(v)
            if stalled and stalled[0].holds and not stays:
                stalls.append((is_note, stall_text(v, *stalled)))
            if not is_note:
                others.append((v, stays))
                continue
            stuck = [control.label for control, at in controls.get(_all_but_norm(v), []) if at]
            if stays and stuck:
                comparison = replace(
                    comparison,
                    holds=False,
                    missing=f"its control {', '.join(stuck)} stayed at chance too",
                    seeds_decide=False,
                )
            comparisons.append(comparison)
    if not comparisons:
        return Verdict(
            "C5",
            statement,
            INCONCLUSIVE,
            f"needs runs: LRN with k in {{1, 2}} and input_norm true, "
            f">= {MIN_SEEDS_CHANCE} seeds, e.g. configs/notes/k_collapse-quick.yaml",
            thresholds,
            [],
            evidence,
        )
    # The comparison nearest to chance first: the one the summary quotes when none holds.
    comparisons.sort(key=lambda c: c.diff.estimate)
    studied = {v.study for v in used}
    for control, stuck_too in (pair for pairs in controls.values() for pair in pairs):
        if control.study in studied:
            evidence.append(evidence_row(control, False, stuck_too))
            used.append(control)
    collapsed = [c for c in comparisons if c.holds]
    left_by = ""
    note_runs = {}  # study -> epoch by which every run under the note's conditions left chance
    for v in used:
        if _in_notes_conditions(v):
            for r in v.finished:
                at = epochs_at_chance(r, v.chance())
                note_runs[v.study] = max(note_runs.get(v.study, 0), at + 1 if at < len(r.metrics) else math.inf)
    if note_runs and all(e < math.inf for e in note_runs.values()):
        left_by = (
            " Every such run left chance, by epoch " + ", ".join(f"{e} in {s}" for s, e in note_runs.items()) + "."
        )

    def with_controls(v: Variant) -> str:
        """A setting outside the note's conditions at chance, and whether its controls learned: raw inputs alone
        may hold a net at chance, LRN or not."""
        pairs = controls.get(_all_but_norm(v), [])
        said = ", ".join(f"{c.label} {'stayed at chance too' if at else 'learned'}" for c, at in pairs)
        return f"{v.label} ({'control: ' + said if said else 'no control ran'})"

    elsewhere = [with_controls(v) for v, stays in others if stays]
    extra = f" Outside the note's conditions, these stayed at chance too: {'; '.join(elsewhere)}." if elsewhere else ""
    note_stalls = [text for is_note, text in stalls if is_note]
    other_stalls = [text for is_note, text in stalls if not is_note]
    if note_stalls:
        extra += (
            f" Under the note's conditions, these sat at chance longer than their control: {'; '.join(note_stalls)}."
        )
    if other_stalls:
        extra += f" Outside them, these sat at chance longer than their control: {'; '.join(other_stalls)}."
    if any(probe_summary(v) for v in used):
        extra += (
            " The evidence table gives each variant's probes (mean over the run): its normalized layers' gain "
            "(output/input std; an LRN whose alpha x window sum is this small scales by k^-0.75, 0.59 at k = 2), "
            "relative weight update per step and conv1 filter similarity at the end (mean |cos|)."
        )
    else:
        extra += " Gains, update sizes and filter similarity are not measured by these runs (enable probes)."
    reasons = {
        REPRODUCED: "Every LRN setting with k in {1, 2} and normalized inputs stayed at chance.",
        CONDITIONAL: "Stayed at chance only under some of the note's conditions: "
        + "; ".join(c.what.removeprefix(f"{c.study}: ").rsplit(", best test accuracy", 1)[0] for c in collapsed)
        + ".",
        NOT_REPRODUCED: "No setting with k in {1, 2} and normalized inputs stayed at chance: the note's stated "
        "conditions alone do not produce it." + left_by,
    }
    return _decide("C5", statement, thresholds, comparisons, reasons, evidence, _runs_of(used), extra)


def all_claims(studies: dict[str, list[Variant]], target: float) -> list[Verdict]:
    return [claim_c1(studies), claim_c2(studies, target), claim_c3(studies), claim_c4(studies), claim_c5(studies)]
