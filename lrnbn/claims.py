"""The note's claims C1-C5 as functions from runs on disk to verdicts with their evidence.

Each claim first gathers its comparisons (a difference of means over seeds or repeats with its 95% Welch interval
and its Welch and permutation p, or for C5 a share of runs with its exact interval: lrnbn/stats.py,
lrnbn/chance.py) and evidence rows, corrects the family's p-values (Holm), then decides with one ladder. Nothing is
assumed: a verdict is computed from the runs it is given, names the runs and thresholds it used, and is
"inconclusive" (saying which runs are missing) when they are not there. The thresholds are constants here,
described in docs/claims.md and printed in the report.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from lrnbn.chance import (
    BY_K,
    CHANCE_TOLERANCE,
    HORIZONS,
    LEARN,
    NOT_BY_K,
    SPLIT,
    STUCK,
    Stall,
    horizons,
    left_chance,
    mechanism,
    stall_of,
    stuck_share,
)
from lrnbn.keys import is_norm_key
from lrnbn.results import Variant, mean_std, probe_summary, to_target
from lrnbn.stats import ALPHA, Difference, Share, holm, shows, welch

REPRODUCED, NOT_REPRODUCED, CONDITIONAL, INCONCLUSIVE = (
    "reproduced",
    "not reproduced",
    "reproduced only under conditions",
    "inconclusive",
)

MIN_SEEDS_CHANCE = 3  # seeds a setting needs before C5 may say it stays at chance
MIN_SEEDS = 2  # seeds per variant for the accuracy and convergence comparisons
SENSITIVITY_MIN = 0.05  # C1: LRN's best setting at least 5 points of final accuracy above its worst
EPOCHS_MIN = 0.5  # C2: LRN at least half an epoch slower than BN to the target
GAP_MARGIN = 0.01  # C3: LRN's train-test gap at least 1 point above BN's
FULL_FIT = 0.995  # C3: runs this close to 100% training accuracy have gaps that differ only by their test accuracy
FIT_ACC = 0.95  # C3: a model "fits its training data" at this mean final train-mode accuracy; below, a gap says
# more about how far training has come than about regularization
TIME_MARGIN = 0.05  # C4: LRN's epoch at least 5% of BN's time slower than BN's
GROWTH = 1.10  # C4: the largest n at least 10% slower than the smallest, per implementation
# How a difference of means is decided, as every claim's thresholds say it.
DECIDES = (
    f"Welch's one-sided p below {ALPHA:g} (its 95% interval above 0) after Holm's correction over the claim's "
    f"comparisons, with the exact permutation test's p beside it"
)
NOTES_PAIRS = ((10, 5, 30.0), (3, None, 40.0))  # C4: the note's n (depth_radius) minus n or BN (None), its seconds


@dataclass
class Comparison:
    """One figure a verdict rests on, and whether it shows the claimed effect: a difference of means (subject minus
    baseline, Welch interval) or a share of runs (exact interval), of one measure in one study."""

    study: str
    subject: str  # the variant (or group) the claim is about
    baseline: str  # what it is compared with; "" for a share or a difference against a fixed value
    measure: str  # "epochs to 75.0%", "train-test gap", ...
    diff: Difference
    minimum: float
    holds: bool
    missing: str  # what keeps it from holding, in words; "" when it holds
    scale: float = 1.0  # for display: 100 for accuracies (points)
    unit: str = ""
    refuted: bool = False  # the interval excludes the claimed effect (not merely fails to show it)
    seeds_decide: bool = True  # more seeds could decide it; False where its runs cannot (e.g. a stuck control)
    share: Share | None = None  # for a share of runs: the count behind the figure
    p_adjusted: float = math.nan  # the difference's p after Holm's correction within the claim's family

    @property
    def what(self) -> str:
        """The comparison in words, derived from its parts: "study: subject minus baseline, measure"."""
        versus = f" minus {self.baseline}" if self.baseline else ""
        return f"{self.study}: {self.subject}{versus}" + (f", {self.measure}" if self.measure else "")

    @property
    def reads(self) -> str:
        """The comparison as a person reads it: "LRN minus BN: epochs to 75.0% (convergence-standard)"."""
        versus = f" minus {plain(self.baseline)}" if self.baseline else ""
        return f"{plain(self.subject)}{versus}: {self.measure} ({self.study})"

    def figure(self) -> str:
        return self.share.text() if self.share else self.diff.text(self.scale, self.unit)

    def row(self) -> dict:
        d = self.diff
        return {
            "comparison": self.what,
            "figure [95% CI]": self.figure(),
            "n": f"{d.n_a} vs {d.n_b}" if not self.share else f"{self.share.runs}",
            "p: Welch, permutation, Holm": ""
            if self.share
            else f"{d.p_welch:.2g}, {d.p_permutation:.2g}, {self.p_adjusted:.2g}",
            "minimum": f"{self.minimum * self.scale:.3g}{self.unit}",
            "shown": ("yes" if self.holds else "refuted" if self.refuted else "undecided")
            + (" (the tests disagree)" if not self.share and d.tests_disagree else ""),
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
    figure: str = ""  # the study plot that shows the claim (its Claim's figure)
    limits: list[str] = field(default_factory=list)  # what the verdict does not show, one phrase each

    @property
    def key_comparison(self) -> Comparison | None:
        """The comparison to quote beside the verdict: the first that holds, else the first."""
        return next((c for c in self.comparisons if c.holds), self.comparisons[0] if self.comparisons else None)


NORM_WORDS = {"bn": "BN", "lrn": "LRN", "none": "no normalization", "gn": "GroupNorm", "ln": "LayerNorm"}


def plain(label: str) -> str:
    """A variant's label in words: "norm=bn,lr=0.01" -> "BN, lr 0.01", "none" -> "no normalization"; another name
    ("pytorch-lrn-k1") stays as it is."""
    parts = []
    for part in label.split(","):
        key, eq, value = part.partition("=")
        if not eq:
            parts.append(NORM_WORDS.get(part, part))
        else:
            parts.append(NORM_WORDS.get(value, value) if key == "norm" else f"{key} {value}")
    return ", ".join(parts)


def ladder(outcomes: list[bool]) -> str:
    """The verdict from the comparisons a claim rests on: all hold -> reproduced; some -> reproduced only under
    conditions; none -> not reproduced. (No comparison at all is "inconclusive", decided before this.)"""
    if all(outcomes):
        return REPRODUCED
    return CONDITIONAL if any(outcomes) else NOT_REPRODUCED


def _compare(
    study: str,
    subject: str,
    baseline: str,
    measure: str,
    a: list[float],
    b: list[float],
    minimum: float,
    scale: float = 1.0,
    unit: str = "",
) -> Comparison:
    """mean(a) - mean(b), claimed to be positive and at least `minimum`."""
    diff = welch(a, b)
    holds, missing = shows(diff, minimum)
    refuted = diff.has_interval and diff.high < minimum
    return Comparison(study, subject, baseline, measure, diff, minimum, holds, missing, scale, unit, refuted)


def corrected(comparisons: list[Comparison]) -> list[Comparison]:
    """The claim's differences decided again with Holm's correction over the family (its comparisons of means):
    with 24 comparisons in C4, a p of 0.01 no longer shows an effect on its own."""
    family = [c for c in comparisons if not c.share]
    adjusted = dict(zip(map(id, family), holm([c.diff.p for c in family])))
    result = []
    for c in comparisons:
        if c.share:
            result.append(c)
            continue
        p = adjusted[id(c)]
        holds, missing = shows(c.diff, c.minimum, p if not math.isnan(p) else None)
        result.append(replace(c, holds=holds, missing=missing, p_adjusted=p))
    return result


def _inconclusive(claim: str, statement: str, thresholds: str, reason: str, evidence=(), runs=()) -> Verdict:
    """A verdict the runs cannot give, and why (which runs are missing, or what they cannot tell)."""
    return Verdict(claim, statement, INCONCLUSIVE, reason, thresholds, [], list(evidence), list(runs))


def _decide(
    claim, statement, thresholds, comparisons, reasons: dict, evidence, runs, extra: str = "", limits=()
) -> Verdict:
    """The verdict from the comparisons after Holm's correction, with its reason in words and `limits`, what it does
    not show (to which it adds the comparisons that hold by Welch's t alone)."""
    comparisons = corrected(comparisons)
    limits = list(limits)
    doubted = [c for c in comparisons if c.holds and not c.share and c.diff.tests_disagree]
    if doubted:
        extra += (
            f" {len(doubted)} of the comparisons shown {'holds' if len(doubted) == 1 else 'hold'} by Welch's t but "
            f"not by the exact permutation test, whose smallest p is 1 / C(n_a + n_b, n_a) (1/20 at 3 seeds against "
            f"3): with so few seeds they rest on normality; more seeds would settle them."
        )
        verb = "holds" if len(doubted) == 1 else "hold"
        limits.append(f"certainty beyond normality: {len(doubted)} of its comparisons {verb} by Welch's t alone")
    if not any(c.holds or c.refuted for c in comparisons):
        # The runs neither show the claim nor rule it out: say why, and whether more seeds could change that.
        missing = "; ".join(f"{c.what} ({c.missing})" for c in comparisons)
        advice = "; run more seeds" if any(c.seeds_decide for c in comparisons) else ""
        reason = f"no comparison is decided: {missing}{advice}" + extra
        return Verdict(claim, statement, INCONCLUSIVE, reason, thresholds, comparisons, evidence, runs, limits=limits)
    verdict = ladder([c.holds for c in comparisons])
    reason = reasons[verdict]
    unshown = [c for c in comparisons if not c.holds]
    if unshown and verdict != NOT_REPRODUCED:
        reason += " Not shown: " + "; ".join(f"{c.what} ({c.missing})" for c in unshown) + "."
    return Verdict(claim, statement, verdict, reason + extra, thresholds, comparisons, evidence, runs, limits=limits)


def _runs_of(variants: list[Variant]) -> list[str]:
    return [str(r.path) for v in variants for r in v.runs]


def _all_but_norm(v: Variant) -> tuple:
    """The variant's study and settings other than the normalization's: equal for runs a fair comparison pairs."""
    return v.settings_without(is_norm_key)


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
        f"settings, one of them learning: LRN's best setting minus its worst "
        f"in final test accuracy, {DECIDES} and the difference >= {100 * SENSITIVITY_MIN:.0f} points"
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
        if not any(v.learned(CHANCE_TOLERANCE) for v in lrn):
            continue  # every LRN setting held at chance by something else (an initialisation): no spread to measure
        ranked = sorted(lrn, key=lambda v: mean_std(v.final_accs())[0])
        worst, best = ranked[0], ranked[-1]
        comparisons.append(
            _compare(
                study,
                best.label,
                worst.label,
                "final test accuracy",
                best.final_accs(),
                worst.final_accs(),
                SENSITIVITY_MIN,
                100,
                " points",
            )
        )
        per_norm = {v.norm: v.runs[0].env.norm_trainable for v in variants}
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
        return _inconclusive(
            "C1",
            statement,
            thresholds,
            "needs runs: a study with BN (learning above chance) and at least two LRN settings (k, alpha or n swept)",
        )
    yardsticks = [text for study in dict.fromkeys(v.study for v in used) if (text := _lr_yardstick(studies[study]))]
    extra = f" For scale, the learning rate moves the others: {'; '.join(yardsticks)}." if yardsticks else ""
    # Best minus worst picks both ends after seeing the data: it overstates the spread a fresh sweep would give.
    limits = ["how far a fresh sweep would spread: best minus worst is picked after the fact"]
    reasons = {
        REPRODUCED: "BN's normalization has trainable parameters and LRN's has none; final accuracy moves with LRN's "
        "hand-set values.",
        CONDITIONAL: "LRN's hand-set values matter in some studies, not in others.",
        NOT_REPRODUCED: "LRN's accuracy does not move measurably across the swept settings, so its hand-set values "
        "are not a burden here.",
    }
    return _decide("C1", statement, thresholds, comparisons, reasons, evidence, _runs_of(used), extra, limits)


def _lr_yardstick(variants: list[Variant]) -> str | None:
    """The pre-stated contrast to LRN's sensitivity to its hand-set values: how much the learning rate alone moves
    BN's and no normalization's final accuracy in the same study (its best lr minus its worst, Welch interval)."""
    alike: dict[tuple, list[Variant]] = {}  # the same setting but for the learning rate
    for v in variants:
        if v.norm in ("bn", "none") and v.seeds() >= MIN_SEEDS:
            alike.setdefault(v.settings_without(lambda k: k == "train.lr"), []).append(v)
    texts = []
    for group in (g for g in alike.values() if len(g) >= 2):
        ranked = sorted(group, key=lambda v: mean_std(v.final_accs())[0])
        diff = welch(ranked[-1].final_accs(), ranked[0].final_accs())
        texts.append(f"{ranked[-1].label} minus {ranked[0].label} {diff.text(100, ' points')}")
    return f"{variants[0].study}: {', '.join(texts)}" if texts else None


def claim_c2(studies: dict[str, list[Variant]], target: float) -> Verdict:
    statement = "BN makes training converge faster than LRN (the note: because layer input distributions stay steady)."
    thresholds = (
        f"target test accuracy {_pct(target)}; per LRN variant, its epochs to the target minus BN's in the same study "
        f"(interpolated between epochs; a seed that never reaches it counts as epochs + 1), >= {MIN_SEEDS} seeds "
        f"each, {DECIDES} and the difference >= {EPOCHS_MIN:g} epoch"
    )

    def epochs(v: Variant) -> list[float]:
        return [e if (e := to_target(r, target)[0]) is not None else len(r.metrics) + 1 for r in v.finished]

    comparisons, evidence, compared, unreached = [], [], [], []
    for group in _norm_groups(studies):
        bn, lrn = _by_norm(group, "bn"), _by_norm(group, "lrn")
        if any(v.seeds() < MIN_SEEDS for v in bn + lrn):
            continue

        if all(to_target(r, target)[0] is None for v in bn + lrn for r in v.finished):
            unreached.append(group[0].study)  # the target is out of reach of these runs: they cannot tell
            continue
        for v in (v for v in lrn if v.learned(CHANCE_TOLERANCE)):  # one held at chance is C5's, not slow
            comparisons.append(
                _compare(
                    v.study,
                    v.label,
                    bn[0].label,
                    f"epochs to {_pct(target)}",
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
        return _inconclusive(
            "C2",
            statement,
            thresholds,
            f"neither BN nor LRN reached {_pct(target)} in {', '.join(unreached)}: lower --target or train longer",
        )
    if not comparisons:
        return _inconclusive(
            "C2",
            statement,
            thresholds,
            f"needs runs: BN and LRN on the same schedule with >= {MIN_SEEDS} seeds each, e.g. "
            "configs/notes/convergence-quick.yaml",
        )
    # Against no normalization, and the mechanism, for the groups the verdict compared: elsewhere (a target out of
    # reach, one seed) they explain nothing.
    against_none = [(group[0].study, *found) for group in compared if (found := _against_none(group, epochs))]
    mechanisms = [found for group in compared if (found := _drift_mechanism(group, epochs))]
    extra = f" Against no normalization: {'; '.join(t for _, t, _ in against_none)}." if against_none else ""
    limits = []
    # Named by study: one study's few seeds leave open what another's more seeds decide.
    if not_slower := dict.fromkeys(study for study, _, lrn_slower in against_none if not lrn_slower):
        limits.append(
            f"that LRN slows training: in {', '.join(not_slower)} it is not measurably slower than no "
            "normalization; BN is fast"
        )
    if mechanisms:
        extra += f" Mechanism (probes): {'; '.join(t for t, _ in mechanisms)}."
        if not all(predicts for _, predicts in mechanisms):
            limits.append("the note's why: output drift does not predict the speed order")
    else:
        extra += " The mechanism (steady input distributions) is not measured by these runs (enable probes)."
        limits.append("the note's why: drift is not measured (no probes)")
    reasons = {
        REPRODUCED: "BN reached the target measurably sooner than every LRN variant.",
        CONDITIONAL: "BN reached the target measurably sooner than some LRN variants, not all.",
        NOT_REPRODUCED: "BN did not reach the target measurably sooner than LRN.",
    }
    used = [v for group in compared for v in group]
    return _decide("C2", statement, thresholds, comparisons, reasons, evidence, _runs_of(used), extra, limits)


def _against_none(group: list[Variant], epochs) -> tuple[str, bool] | None:
    """BN's and LRN's epochs to the target minus no normalization's: which of them is the fast or the slow one; and
    whether every LRN variant that learned is measurably slower than none (its interval above 0)."""
    none = [v for v in _by_norm(group, "none") if v.seeds() >= MIN_SEEDS]
    if not none:
        return None
    diffs = {v.label: welch(epochs(v), epochs(none[0])) for v in group if v.norm in ("bn", "lrn")}
    texts = [f"{label} minus {none[0].label} {d.text(unit=' epochs', digits=2)}" for label, d in diffs.items()]
    lrn = [diffs[v.label] for v in _by_norm(group, "lrn") if v.learned(CHANCE_TOLERANCE)]  # at chance: C5's
    return f"{group[0].study}: {', '.join(texts)}", all(d.has_interval and d.low > 0 for d in lrn)


def _run_drift(run) -> float | None:
    """A run's mean output drift of its normalized layers over its probe intervals."""
    values = [
        layer["output_drift"] for p in run.probes for layer in p["layers"] if layer.get("output_drift") is not None
    ]
    return statistics.fmean(values) if values else None


def _drift_mechanism(group: list[Variant], epochs) -> tuple[str, bool] | None:
    """The note's mechanism, tested: each variant's output drift (per-run means, so with intervals against BN's), and
    whether ordering the variants by drift orders them by epochs to the target (the text, and that answer)."""
    drift = {v.label: [d for r in v.finished if (d := _run_drift(r)) is not None] for v in group}
    bn = _by_norm(group, "bn")
    if not bn or any(len(values) < MIN_SEEDS for values in drift.values()):
        return None
    bn = bn[0]
    others = [v for v in group if v is not bn]
    versus = [welch(drift[v.label], drift[bn.label]) for v in others]
    means = ", ".join(f"{v.label} {statistics.fmean(drift[v.label]):.3g}" for v in group)
    differences = ", ".join(f"{v.label} minus BN {d.text(digits=3)}" for v, d in zip(others, versus))
    lowest = (
        "measurably the lowest"
        if all(d.has_interval and d.low > 0 for d in versus)
        else "the lowest in the means, not measurably"
        if all(d.estimate > 0 for d in versus)
        else "not the lowest"
    )
    by_drift = [v.label for v in sorted(group, key=lambda v: statistics.fmean(drift[v.label]))]
    by_speed = [v.label for v in sorted(group, key=lambda v: statistics.fmean(epochs(v)))]
    predicts = "predicts" if by_drift == by_speed else "does not predict"
    text = (
        f"{group[0].study}: output drift per probe interval {means} ({differences}); BN's is {lowest}; ordered by "
        f"drift {' < '.join(by_drift)}, by epochs to the target {' < '.join(by_speed)}: drift {predicts} the speed "
        f"order"
    )
    return text, by_drift == by_speed


def _mean_seconds(reached: list[tuple]) -> str:
    seconds = [s for e, s in reached if e]
    return f"{sum(seconds) / len(seconds):.0f}" if seconds else "never"


def _final_train_acc(v: Variant) -> float:
    return mean_std([r.metrics[-1]["train_acc"] for r in v.finished])[0]


def _gap_row(v: Variant) -> dict:
    mean, std = mean_std(v.gaps())
    return {
        "study": v.study,
        "variant": v.label,
        "seeds": v.seeds(),
        "learned": v.learned(CHANCE_TOLERANCE),
        "final train acc": _pct(_final_train_acc(v)),
        "train-test gap": f"{100 * mean:+.1f} +- {100 * std:.1f} points",
    }


def _why_no_gap(stuck: list[str], underfit: list[str]) -> str:
    """Why C3 compared no gap: LRN runs that did not fit their training data, or stayed at chance, or none ran."""
    if underfit:
        return (
            f"no LRN run fits its training data as BN does (mean final train accuracy >= {100 * FIT_ACC:.0f}% for "
            f"both; not so for {'; '.join(underfit)}), so the gap cannot show regularization: train longer on less "
            "data, e.g. configs/notes/regularization-standard.yaml"
        )
    if stuck:
        return (
            f"the LRN runs ({'; '.join(stuck)}) stayed at chance, so there is no train-test gap to compare with "
            "BN's: train longer"
        )
    return (
        f"needs runs: BN (learning above chance) and LRN with >= {MIN_SEEDS} seeds each, e.g. "
        "configs/notes/regularization-standard.yaml"
    )


def _gap_caveats(compared: list[list[Variant]]) -> tuple[str, list[str]]:
    """What the gap does not show: where every run fits fully it is the test accuracy difference; and whether BN's
    weight updates are the smallest, as the note's mechanism says (the words, and the limits in a phrase each)."""
    memorised = [
        g[0].study for g in compared if all(min(r.metrics[-1]["train_acc"] for r in v.finished) >= FULL_FIT for v in g)
    ]
    text = (
        f" In {', '.join(memorised)} every run ends at >= {100 * FULL_FIT:.1f}% training accuracy, so the gap "
        "difference is the test accuracy difference: C3 here says BN generalizes better, not why."
        if memorised
        else ""
    )
    limits = ["why BN generalizes better: every run fits its training data fully"] if memorised else []
    updates = [c for c in (_probe_comparison(g, "update_ratio") for g in compared) if c]
    if not updates:
        text += " Weight-update sizes are not measured by these runs (enable probes); the gap is the only evidence."
        return text, limits + ["the note's why: weight-update sizes are not measured (no probes)"]
    smallest = all(h for _, h in updates)
    text += (
        f" Relative weight update per step (probes): {'; '.join(t for t, _ in updates)}; BN's updates "
        f"{'are' if smallest else 'are not'} the smallest."
    )
    return text, limits + ([] if smallest else ["the note's why: BN's weight updates are not the smallest"])


def _weight_decay_part(group: list[Variant], variants: list[Variant]) -> tuple[str, list[str]]:
    """BN's gap without weight decay against with it, in the same study: BN's scale invariance interacts with weight
    decay, so part of BN's smaller gap may be weight decay's rather than BN's."""
    bn = _by_norm(group, "bn")[0]

    def rest(v: Variant) -> tuple:
        return v.settings_without(lambda k: k == "train.weight_decay")

    undecayed = [v for v in variants if v.norm == "bn" and v.get("train.weight_decay") == 0 and v is not bn]
    twin = next((v for v in undecayed if rest(v) == rest(bn) and v.seeds() >= MIN_SEEDS), None)
    if twin is None:
        text = f" {bn.study} has no BN run without weight decay, so weight decay's part in BN's gap is not measured."
        return text, ["weight decay's part in BN's gap (no BN run without it)"]
    diff = welch(twin.gaps(), bn.gaps())
    return f" {bn.study}: BN's train-test gap without weight decay minus with it {diff.text(100, ' points')}.", []


def claim_c3(studies: dict[str, list[Variant]]) -> Verdict:
    statement = "BN regularizes: it keeps weights from changing abruptly (a smaller train-test gap)."
    thresholds = (
        f"final train accuracy (training mode) minus test accuracy; per LRN variant that fits its training data "
        f"as BN does (mean final train accuracy >= {100 * FIT_ACC:.0f}% for both), its gap minus BN's, "
        f">= {MIN_SEEDS} seeds each, {DECIDES} and the difference >= {100 * GAP_MARGIN:.0f} point"
    )
    comparisons, evidence, used, compared, stuck, underfit = [], [], [], [], [], []
    for group in _norm_groups(studies):
        bn = _by_norm(group, "bn")
        if any(v.seeds() < MIN_SEEDS for v in group) or not any(v.learned(CHANCE_TOLERANCE) for v in bn):
            continue  # a gap between runs that learned nothing says nothing about regularization
        evidence += [_gap_row(v) for v in group]
        for v in _by_norm(group, "lrn"):
            if not v.learned(CHANCE_TOLERANCE):
                stuck.append(v.label)  # a variant that stayed at chance has no gap worth comparing
            elif min(_final_train_acc(bn[0]), _final_train_acc(v)) < FIT_ACC:
                underfit.append(v.label)  # the gap shows how far training has come, not regularization
            else:
                compared += [group] if group not in compared else []
                gaps = (v.gaps(), bn[0].gaps())
                comparisons.append(
                    _compare(v.study, v.label, bn[0].label, "train-test gap", *gaps, GAP_MARGIN, 100, " points")
                )
        used += group
    if not comparisons:
        return _inconclusive("C3", statement, thresholds, _why_no_gap(stuck, underfit), evidence, _runs_of(used))
    reasons = {
        REPRODUCED: "BN's train-test gap is measurably smaller than every LRN variant's.",
        CONDITIONAL: "BN's gap is measurably smaller than some LRN variants' only.",
        NOT_REPRODUCED: "BN's train-test gap is not measurably smaller than LRN's.",
    }
    caveats, limits = _gap_caveats(compared)
    for text, missing in (_weight_decay_part(g, studies[g[0].study]) for g in compared):
        caveats, limits = caveats + text, limits + missing
    return _decide("C3", statement, thresholds, comparisons, reasons, evidence, _runs_of(used), caveats, limits)


def _window(v: Variant) -> str:
    """LRN's n as the study set it: TensorFlow's depth_radius (the note's n) where given, else the window size."""
    radius, size = v.get("model.lrn.depth_radius"), v.get("model.lrn.size")
    return f"n {radius} (window {size})" if radius is not None else f"n {size}"


def _notes_own_pairs(group: list[Variant]) -> list[str]:
    """The note's two timings, measured again where a study times LRN by depth_radius: n 10 against n 5 ("30 s
    more") and n 3 against BN ("40 s more"), per implementation, with Welch intervals."""
    bn = [v for v in _by_norm(group, "bn") if v.epoch_times()]
    by_radius = {
        (v.get("model.lrn.impl"), v.get("model.lrn.depth_radius")): v for v in _by_norm(group, "lrn") if v.epoch_times()
    }
    texts = []
    for impl in dict.fromkeys(impl for impl, _ in by_radius):
        for radius, against, seconds in NOTES_PAIRS:
            mine = by_radius.get((impl, radius))
            theirs = by_radius.get((impl, against)) if against is not None else (bn[0] if bn else None)
            if mine and theirs:
                diff = welch(mine.epoch_times(), theirs.epoch_times())
                versus = f"n {against}" if against is not None else "BN"
                texts.append(
                    f"{group[0].study}: impl {impl}, n {radius} minus {versus} {diff.text(unit=' s')} "
                    f"({diff.estimate / mean_std(theirs.epoch_times())[0]:+.0%}; the note: {seconds:+.0f} s)"
                )
    return texts


def _time_row(v: Variant, bn_mean: float) -> dict:
    mean, std = mean_std(v.epoch_times())
    overlap = v.overlapped()
    return {
        "study": v.study,
        "variant": v.label,
        "epochs timed": len(v.epoch_times()),
        "mean epoch s": f"{mean:.2f} +- {std:.2f}",
        "ratio to BN": f"{mean / bn_mean:.2f}",
        "epochs overlapping other work": f"{overlap[0]}/{overlap[1]}" if overlap else "not recorded",
    }


def _growth(group: list[Variant], timed: list[Variant]) -> list[tuple[str, Comparison]]:
    """Per implementation timed at two or more n: its largest n's epoch time minus its smallest's."""
    pairs = []
    for impl in dict.fromkeys(v.get("model.lrn.impl") for v in timed):
        by_size = {v.get("model.lrn.size"): v for v in timed if v.get("model.lrn.impl") == impl}
        if len(by_size) >= 2:
            small, large = by_size[min(by_size)], by_size[max(by_size)]
            minimum = (GROWTH - 1) * mean_std(small.epoch_times())[0]
            subject, times = f"impl {impl}, {_window(large)}", (large.epoch_times(), small.epoch_times())
            pairs.append(
                (impl, _compare(group[0].study, subject, _window(small), "epoch s", *times, minimum, unit=" s"))
            )
    return pairs


def _cost_summary(
    comparisons: list[Comparison], growth: dict, used: list[Variant], note_pairs: list[str]
) -> tuple[str, list[str]]:
    """C4 in words: how many LRN variants cost more than BN, which implementations grow with n, the note's own pairs,
    and how many timed epochs overlapped other work (the words, and the limits in a phrase each)."""
    grows = {impl: all(comparisons[i].holds for i in places) for impl, places in growth.items()}
    costlier = [c.holds for c in comparisons if c.baseline == "BN"]
    text = f" LRN cost measurably more than BN in {sum(costlier)}/{len(costlier)} LRN variants."
    text += "".join(f" With impl {i}, epoch time {'grew' if g else 'did not grow'} with n." for i, g in grows.items())
    if grows and any(grows.values()) and not all(grows.values()):
        by_impl = ", ".join(f"{i}: {'grows' if g else 'flat'}" for i, g in grows.items())
        text += f" Growth with n is a property of an implementation, not of LRN: {by_impl}."
    if note_pairs:
        text += f" The note's own pairs, per epoch: {'; '.join(note_pairs)}."
    busy = [o for v in used if (o := v.overlapped())]
    if any(o[0] for o in busy):
        text += (
            f" {sum(o[0] for o in busy)} of {sum(o[1] for o in busy)} timed epochs overlapped other work on the "
            f"machine (load above their own threads): rerun the study alone for times that compare."
        )
        return text, [f"times alone on the machine: {sum(o[0] for o in busy)} timed epochs overlapped other work"]
    return text, []


def claim_c4(studies: dict[str, list[Variant]]) -> Verdict:
    statement = "BN is cheaper to compute than LRN, and LRN's cost grows with its window n."
    thresholds = (
        f"from studies that time LRN at two or more n beside BN, training-phase epoch times over repeats: per LRN "
        f"variant its time minus BN's, >= {100 * TIME_MARGIN:.0f}% of BN's; per implementation the largest n's time "
        f"minus the smallest's, >= {100 * (GROWTH - 1):.0f}% of the smallest's; each {DECIDES}"
    )
    comparisons, evidence, used, growth, note_pairs = [], [], [], {}, []
    for group in _norm_groups(studies):
        bn = [v for v in _by_norm(group, "bn") if v.epoch_times()]
        timed = [v for v in _by_norm(group, "lrn") if v.epoch_times()]
        # Only timing studies count: LRN timed at two or more n beside BN (others may run jobs side by side).
        if not bn or len({v.get("model.lrn.size") for v in timed}) < 2:
            continue
        bn_times = bn[0].epoch_times()
        bn_mean = mean_std(bn_times)[0]
        order = sorted(group, key=lambda v: (v.norm, str(v.get("model.lrn.impl")), v.get("model.lrn.size") or 0))
        evidence += [_time_row(v, bn_mean) for v in order]
        for v in timed:
            costs = (v.epoch_times(), bn_times)
            comparisons.append(_compare(v.study, v.label, "BN", "epoch s", *costs, TIME_MARGIN * bn_mean, unit=" s"))
        for impl, grows in _growth(group, timed):
            comparisons.append(grows)
            growth.setdefault(impl, []).append(len(comparisons) - 1)  # where it sits, for after Holm
        note_pairs += _notes_own_pairs(group)
        used += group
    if not comparisons:
        needs = "needs runs: BN and LRN timed in one study, e.g. configs/notes/timing-quick.yaml"
        return _inconclusive("C4", statement, thresholds, needs)
    comparisons = corrected(comparisons)
    extra, limits = _cost_summary(comparisons, growth, used, note_pairs)
    reasons = {
        REPRODUCED: "LRN cost more than BN, and its cost grew with n.",
        CONDITIONAL: "Only part of the claim holds.",
        NOT_REPRODUCED: "LRN was not measurably costlier than BN, nor did its cost grow with n.",
    }
    return _decide("C4", statement, thresholds, comparisons, reasons, evidence, _runs_of(used), extra, limits)


def _in_notes_conditions(v: Variant) -> bool:
    """C5's stated conditions: an LRN with k = 1 or 2 on normalized inputs (per channel or per image)."""
    return v.norm == "lrn" and v.get("model.lrn.k") in (1, 2) and v.get("data.input_norm") is True


def _always(stall: Stall) -> Comparison:
    """The note's "always" in one setting: k held every run at chance to its last epoch. Refuted where every run
    left chance; undecided where the runs split (more seeds tell how often) or where the net is stuck without LRN
    too, or has no control (more seeds of the same runs cannot tell what k does)."""
    v, last = stall.setting, stall.last
    s = stall.shares[last]
    holds = stall.outcome == STUCK and stall.cause_kind == BY_K
    missing = {
        LEARN: "every run left chance",
        SPLIT: f"{s.count} of {s.runs} runs stayed: sometimes, not always",
        STUCK: "" if holds else stall.cause,
    }[stall.outcome]
    return Comparison(
        v.study,
        v.label,
        "",
        f"runs at chance through epoch {last}",
        Difference(s.value, s.low, s.high, s.runs, 0),
        1.0,
        holds,
        missing,
        100,
        "%",
        refuted=stall.outcome == LEARN,
        seeds_decide=stall.outcome == SPLIT or "split" in stall.cause,
        share=s,
    )


def _stall_text(stall: Stall) -> str:
    """A setting that held runs at chance, in words: through which epoch every run stayed, how it ended, the cause
    and what it was judged against, with what the probes saw over the first epoch beside the control's."""
    v, at, last = stall.setting, stall.judged_at, stall.last
    if stall.held:
        text = f"{v.study}: {v.label}, every run at chance through epoch {at} ({stall.shares[at].text()})"
        if stall.held < last:
            text += f", {stall.shares[last].text()} through epoch {last}"
    else:
        text = f"{v.study}: {v.label}, {stall.shares[last].text()} runs at chance through epoch {last}"
    text += f": {stall.cause}"
    beside = [f"{n.label} {s.text()}" for n, s in stall.neighbours_at(at)]
    p = stall.p_against_control()
    if beside:
        text += f" (against {', '.join(beside)}" + (f"; Fisher's p against the control {p:.2g})" if p else ")")
    mine = mechanism(v)
    theirs = mechanism(stall.control) if stall.control else None
    if mine and theirs:
        text += (
            f"; over epoch 1 its logits' spread between images was {mine['logit_spread']:.2g} (control "
            f"{theirs['logit_spread']:.2g}), {100 * mine['dead_channels']:.0f}% of the channels behind its norm "
            f"positions were dead (control {100 * theirs['dead_channels']:.0f}%), the gradient reaching conv1 "
            f"{mine['conv1_grad_norm']:.2g} (control {theirs['conv1_grad_norm']:.2g}), behind layers of gain "
            f"{mine['gain']:.2f}"
        )
    return text


def _stall_row(stall: Stall | None, v: Variant) -> dict:
    """One setting of the evidence table: stuck shares per epoch, the cause, and the first epoch's probes."""
    shares = stall.shares if stall else {e: stuck_share(v, e) for e in horizons(v)}
    probes = mechanism(v)
    p = stall.p_against_control() if stall else None
    return {
        "study": v.study,
        "variant": v.label,
        "runs": len(v.finished),
        "note's condition": _in_notes_conditions(v),
        **{f"at chance through epoch {e}": shares[e].text() if e in shares else "" for e in HORIZONS},
        "last epoch": f"{shares[max(shares)].text()} (epoch {max(shares)})",
        "every run at chance through": f"epoch {stall.held}" if stall and stall.held else "",
        "cause, there": stall.cause if stall else "(control)",
        "p, more often than control": f"{p:.2g}" if p is not None else "",
        "left chance": ", ".join(left_chance(r, v.chance()) for r in v.finished),
        "final test acc": _pct(mean_std(v.final_accs())[0]),
        "logit spread, epoch 1": f"{probes['logit_spread']:.2g}" if probes else "n/a",
        "dead channels": f"{100 * probes['dead_channels']:.0f}%" if probes else "n/a",
        "conv1 grad norm": f"{probes['conv1_grad_norm']:.2g}" if probes else "n/a",
        "gain": f"{probes['gain']:.2f}" if probes else "n/a",
    }


def claim_c5(studies: dict[str, list[Variant]]) -> Verdict:
    statement = "With input normalization, LRN's k = 1 or 2 destabilises training: accuracy stays at chance (10%)."
    thresholds = (
        f"per run: at chance through epoch E if its best test accuracy over epochs 1..E is within "
        f"{100 * CHANCE_TOLERANCE:.0f} points of 1/classes; per LRN setting with >= {MIN_SEEDS_CHANCE} runs, the "
        f"share of its runs at chance through epochs {', '.join(map(str, HORIZONS))} and its last, with exact 95% "
        f"(Clopper-Pearson) intervals; the note's 'always' holds in a setting when every run is at chance through "
        f"its last epoch and is refuted when none is; the cause from its control (no normalization) and its twin "
        f"(the other initialisation), with Fisher's exact one-sided p against the control"
    )
    stalls = [
        stall_of(v, variants)
        for variants in studies.values()
        for v in variants
        if v.norm == "lrn" and v.seeds() >= MIN_SEEDS_CHANCE
    ]
    neighbours = {id(n): n for s in stalls for n in (s.control, s.twin) if n and n.norm != "lrn"}
    evidence = [_stall_row(s, s.setting) for s in stalls] + [_stall_row(None, n) for n in neighbours.values()]
    used = [s.setting for s in stalls] + list(neighbours.values())
    held = [s for s in stalls if s.held or s.outcome == SPLIT]
    extra = ""
    for in_note, words in ((True, "Under the note's conditions"), (False, "Outside them")):
        texts = [_stall_text(s) for s in held if _in_notes_conditions(s.setting) == in_note]
        if texts:
            extra += f" {words}: {'; '.join(texts)}."
    comparisons = [_always(s) for s in stalls if _in_notes_conditions(s.setting)]
    if not comparisons:
        needs = (
            f"needs runs: LRN with k in {{1, 2}} and input_norm true, >= {MIN_SEEDS_CHANCE} seeds, e.g. "
            "configs/notes/recipe-standard.yaml."
        )
        return _inconclusive("C5", statement, thresholds, needs + extra, evidence, _runs_of(used))
    # Settings the note would count (every run at chance) whose control stayed at chance without LRN too.
    masked = [
        f"{s.setting.study}: {s.setting.label}"
        for s in stalls
        if _in_notes_conditions(s.setting) and s.outcome == STUCK and s.cause_kind == NOT_BY_K
    ]
    reasons = {
        REPRODUCED: "In every LRN setting with k in {1, 2} on normalized inputs k held every run at chance to its end.",
        CONDITIONAL: "k held every run at chance to its end only in some settings under the note's conditions: "
        + ", ".join(f"{c.study}: {c.subject}" for c in comparisons if c.holds)
        + ".",
        NOT_REPRODUCED: "In no setting with k in {1, 2} and normalized inputs did k hold every run at chance"
        + (
            f"; where every run stayed at chance ({', '.join(masked)}), the net stayed there without LRN too."
            if masked
            else ": the note's stated conditions alone do not produce it."
        ),
    }
    # Where the net stays at chance without LRN too, the 10% is there but k is not its cause.
    stuck_anyway = f"that k causes the 10% in the {len(masked)} settings stuck at it: they stay there without LRN"
    limits = [stuck_anyway] if masked else []
    return _decide("C5", statement, thresholds, comparisons, reasons, evidence, _runs_of(used), extra, limits)


@dataclass(frozen=True)
class Claim:
    """One of the note's claims: the function that judges it from the studies (and the target accuracy), and the
    study plot that shows it best (a plot of the report's study sections: accuracy, gap, time or heatmap)."""

    id: str
    judge: Callable[[dict[str, list[Variant]], float], Verdict]
    figure: str


CLAIMS = (
    Claim("C1", lambda studies, target: claim_c1(studies), "heatmap"),
    Claim("C2", claim_c2, "accuracy"),
    Claim("C3", lambda studies, target: claim_c3(studies), "gap"),
    Claim("C4", lambda studies, target: claim_c4(studies), "time"),
    Claim("C5", lambda studies, target: claim_c5(studies), "heatmap"),
)


def all_claims(studies: dict[str, list[Variant]], target: float) -> list[Verdict]:
    return [replace(claim.judge(studies, target), figure=claim.figure) for claim in CLAIMS]
