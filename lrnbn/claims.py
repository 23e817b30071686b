"""The note's claims C1-C5 as functions from runs on disk to verdicts with their evidence.

Nothing here is assumed: a verdict is computed from the runs it is given, names the runs and thresholds it used,
and is "inconclusive" (saying which runs are missing) when they are not there. The thresholds are constants here
and are printed in the report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from lrnbn.keys import is_norm_key
from lrnbn.results import Variant, mean_std, probe_summary, quartiles, stays_at_chance, to_target

REPRODUCED, NOT_REPRODUCED, CONDITIONAL, INCONCLUSIVE = (
    "reproduced",
    "not reproduced",
    "reproduced only under conditions",
    "inconclusive",
)

CHANCE_TOLERANCE = 0.02  # "stays at chance": test accuracy within 2 points of 1/classes at every epoch ...
MIN_SEEDS_CHANCE = 3  # ... of at least 3 seeds
MIN_SEEDS = 2  # seeds per variant for the accuracy and convergence claims
TIME_MARGIN = 0.05  # "costs more": median epoch time more than 5% above BN's (and above BN's own spread)
GROWTH = 1.10  # "grows with n": time at the largest n >= 10% above the smallest, rising monotonically in rank
GAP_MARGIN = 0.01  # "regularizes": BN's train-test gap at least 1 point below LRN's
SENSITIVITY_MIN = 0.05  # "sensitive": LRN settings span >= 5 points of final accuracy, and 3x BN's seed spread


@dataclass
class Verdict:
    claim: str
    statement: str
    verdict: str
    reason: str
    thresholds: str
    evidence: list[dict] = field(default_factory=list)  # rows for a table
    runs: list[str] = field(default_factory=list)  # run directories used


def ladder(outcomes: list[bool]) -> str:
    """The verdict from the comparisons a claim rests on: all hold -> reproduced; some -> reproduced only under
    conditions; none -> not reproduced. (No comparison at all is "inconclusive", decided before this.)"""
    if all(outcomes):
        return REPRODUCED
    return CONDITIONAL if any(outcomes) else NOT_REPRODUCED


def _runs_of(variants: list[Variant]) -> list[str]:
    return [str(r.path) for v in variants for r in v.runs]


def _norm_groups(studies: dict[str, list[Variant]]) -> list[list[Variant]]:
    """Per study, sets of variants that differ only in the normalization (model.norm, model.lrn.*) and that
    include BN and LRN: the fair comparisons."""
    groups = []
    for variants in studies.values():
        buckets: dict[tuple, list[Variant]] = {}
        for v in variants:
            rest = tuple(sorted((k, repr(x)) for k, x in v.settings.items() if not is_norm_key(k)))
            buckets.setdefault(rest, []).append(v)
        for bucket in buckets.values():
            norms = {v.norm for v in bucket}
            if {"bn", "lrn"} <= norms:
                groups.append(bucket)
    return groups


def _by_norm(group: list[Variant], norm: str) -> list[Variant]:
    """The group's variants with this norm (an identity LRN counts as none)."""
    return [v for v in group if v.norm == norm]


def _probe_comparison(group: list[Variant], key: str, lower_is_claimed: bool = True) -> tuple[str, bool] | None:
    """BN's against LRN's mean of a probe measure; None when either lacks probes. The flag says whether BN's
    value is lower than every LRN variant's (the direction the note's mechanism predicts)."""
    bn = [probe_summary(v) for v in _by_norm(group, "bn")]
    lrn = [probe_summary(v) for v in _by_norm(group, "lrn")]
    none = [probe_summary(v) for v in _by_norm(group, "none")]
    if not all(bn) or not all(lrn) or not bn or not lrn:
        return None
    bn_value = min(p[key] for p in bn)
    holds = all(bn_value < p[key] for p in lrn)
    text = f"BN {bn_value:.3g}, LRN {', '.join(f'{p[key]:.3g}' for p in lrn)}"
    if none and all(none):
        text += f", none {', '.join(f'{p[key]:.3g}' for p in none)}"
    return text, holds


def _pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


# ---------------------------------------------------------------------------------------------------------------


def claim_c1(studies: dict[str, list[Variant]]) -> Verdict:
    statement = "LRN has hand-set hyper-parameters (k, n, alpha, beta); BN has trainable ones (gamma, beta) instead."
    thresholds = (
        f"LRN 'sensitive' if its settings span >= {100 * SENSITIVITY_MIN:.0f} points of mean final accuracy "
        f"and >= 3x BN's largest seed std in the same study"
    )
    evidence, used = [], []
    for study, variants in studies.items():
        lrn = [v for v in _by_norm(variants, "lrn") if v.finished]
        bn = [v for v in _by_norm(variants, "bn") if v.finished]
        if len(lrn) < 2 or not bn or not any(v.learned(CHANCE_TOLERANCE) for v in bn):
            continue  # without a BN run that learned, accuracies say nothing about sensitivity
        means = {v.label: mean_std(v.final_accs())[0] for v in lrn}
        spread = max(means.values()) - min(means.values())
        bn_noise = max(mean_std(v.final_accs())[1] for v in bn)
        lrn_params = {v.runs[0].env.get("model", {}).get("norm_trainable") for v in lrn}
        bn_params = {v.runs[0].env.get("model", {}).get("norm_trainable") for v in bn}
        evidence.append(
            {
                "study": study,
                "LRN settings": len(lrn),
                "LRN accuracy span": _pct(spread),
                "BN seed std": _pct(bn_noise),
                "trainable norm params LRN / BN": f"{lrn_params} / {bn_params}",
                "sensitive": spread >= max(SENSITIVITY_MIN, 3 * bn_noise),
            }
        )
        used += lrn + bn
    if not evidence:
        return Verdict(
            "C1",
            statement,
            INCONCLUSIVE,
            "needs runs: a study with BN (learning above chance) and at least two LRN settings (k, alpha or n swept)",
            thresholds,
        )
    verdict = ladder([e["sensitive"] for e in evidence])
    reason = {
        REPRODUCED: "BN's normalization has trainable parameters and LRN's has none; final accuracy moves with "
        "LRN's hand-set values by more than BN's seed noise.",
        CONDITIONAL: "LRN's hand-set values matter in some studies, not in others (see the table).",
        NOT_REPRODUCED: "LRN's accuracy hardly moves across the swept settings, so its hand-set values are not a "
        "burden here.",
    }[verdict]
    return Verdict("C1", statement, verdict, reason, thresholds, evidence, _runs_of(used))


def claim_c2(studies: dict[str, list[Variant]], target: float) -> Verdict:
    statement = "BN makes training converge faster than LRN (the note: because layer input distributions stay steady)."
    thresholds = (
        f"target test accuracy {_pct(target)}; BN must reach it in every seed and in fewer mean epochs "
        f"than LRN (a seed that never reaches it counts as epochs+1); >= {MIN_SEEDS} seeds per variant"
    )
    evidence, outcomes, used, unreached = [], [], [], []
    for group in _norm_groups(studies):
        bn, lrn = _by_norm(group, "bn"), _by_norm(group, "lrn")
        if any(v.seeds() < MIN_SEEDS for v in bn + lrn):
            continue

        def epochs(v: Variant) -> list[int]:
            return [to_target(r, target)[0] or len(r.metrics) + 1 for r in v.finished]

        if not any(to_target(r, target)[0] for v in bn + lrn for r in v.finished):
            unreached.append(group[0].study)  # the target is out of reach of these runs: they cannot tell
            continue
        bn_epochs = min(mean_std(epochs(v))[0] for v in bn)
        bn_all_reach = all(to_target(r, target)[0] for v in bn for r in v.finished)
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
                }
            )
        for v in lrn:
            outcomes.append(bn_all_reach and bn_epochs < mean_std(epochs(v))[0])
        used += group
    if not outcomes and unreached:
        return Verdict(
            "C2",
            statement,
            INCONCLUSIVE,
            f"neither BN nor LRN reached {_pct(target)} in {', '.join(unreached)}: lower --target or train longer",
            thresholds,
        )
    if not outcomes:
        return Verdict(
            "C2",
            statement,
            INCONCLUSIVE,
            f"needs runs: BN and LRN on the same schedule with >= {MIN_SEEDS} "
            "seeds each, e.g. configs/notes/convergence-quick.yaml",
            thresholds,
        )
    drifts = [c for c in (_probe_comparison(g, "output_drift") for g in _norm_groups(studies)) if c]
    if drifts:
        steady = all(holds for _, holds in drifts)
        mechanism = (
            f" Mechanism (probes): drift of the normalized layers' outputs, i.e. the next layers' inputs, per "
            f"probe interval: {'; '.join(t for t, _ in drifts)}; "
            + (
                "BN's is the lowest, as the note explains."
                if steady
                else "BN's is not the lowest, so steadier inputs do not explain the difference here."
            )
        )
    else:
        mechanism = " The mechanism (steady input distributions) is not measured by these runs (enable probes)."
    verdict = ladder(outcomes)
    reason = {
        REPRODUCED: "BN reached the target in fewer epochs than every LRN variant.",
        CONDITIONAL: "BN was faster than some LRN variants, not all (see the table).",
        NOT_REPRODUCED: "LRN reached the target as fast as BN or faster.",
    }[verdict]
    return Verdict("C2", statement, verdict, reason + mechanism, thresholds, evidence, _runs_of(used))


def _mean_seconds(reached: list[tuple]) -> str:
    seconds = [s for e, s in reached if e]
    return f"{sum(seconds) / len(seconds):.0f}" if seconds else "never"


def claim_c3(studies: dict[str, list[Variant]]) -> Verdict:
    statement = "BN regularizes: it keeps weights from changing abruptly (a smaller train-test gap)."
    thresholds = (
        f"final train accuracy (training mode: dropout and augmentation on) minus test accuracy, mean over "
        f">= {MIN_SEEDS} seeds; BN's gap at least {100 * GAP_MARGIN:.0f} point below that of each LRN variant "
        f"that learned (mean final test accuracy more than {100 * CHANCE_TOLERANCE:.0f} points above chance), "
        f"where at least one of the two has a positive gap"
    )
    evidence, outcomes, used, stuck, underfit = [], [], [], [], []
    for group in _norm_groups(studies):
        if any(v.seeds() < MIN_SEEDS for v in group) or not any(
            v.learned(CHANCE_TOLERANCE) for v in _by_norm(group, "bn")
        ):
            continue  # a gap between runs that learned nothing says nothing about regularization
        gaps = {v.label: mean_std(v.gaps()) for v in group}
        for v in group:
            evidence.append(
                {
                    "study": v.study,
                    "variant": v.label,
                    "seeds": v.seeds(),
                    "learned": v.learned(CHANCE_TOLERANCE),
                    "train-test gap": f"{100 * gaps[v.label][0]:+.1f} +- {100 * gaps[v.label][1]:.1f} points",
                }
            )
        bn_gap = min(gaps[v.label][0] for v in _by_norm(group, "bn"))
        for v in _by_norm(group, "lrn"):
            if not v.learned(CHANCE_TOLERANCE):
                stuck.append(v.label)  # a variant that stayed at chance has no gap worth comparing
            elif max(bn_gap, gaps[v.label][0]) <= 0:
                underfit.append(v.label)  # neither fits its training data yet: the gap shows no regularization
            else:
                outcomes.append(bn_gap <= gaps[v.label][0] - GAP_MARGIN)
        used += group
    if not outcomes and underfit:
        return Verdict(
            "C3",
            statement,
            INCONCLUSIVE,
            "no run fits its training data yet (train-mode accuracy below test "
            f"accuracy for BN and {'; '.join(underfit)}), so the gap cannot show regularization: train longer",
            thresholds,
            evidence,
            _runs_of(used),
        )
    if not outcomes and stuck:
        return Verdict(
            "C3",
            statement,
            INCONCLUSIVE,
            f"the LRN runs ({'; '.join(stuck)}) stayed at chance, so there is no "
            "train-test gap to compare with BN's: train longer",
            thresholds,
            evidence,
            _runs_of(used),
        )
    if not outcomes:
        return Verdict(
            "C3",
            statement,
            INCONCLUSIVE,
            f"needs runs: BN (learning above chance) and LRN with >= {MIN_SEEDS} "
            "seeds each, e.g. configs/notes/convergence-quick.yaml",
            thresholds,
        )
    updates = [c for c in (_probe_comparison(g, "update_ratio") for g in _norm_groups(studies)) if c]
    if updates:
        caveat = f" Relative weight update per step (probes): {'; '.join(t for t, _ in updates)}; " + (
            "BN's updates are the smallest." if all(h for _, h in updates) else "BN's updates are not the smallest."
        )
    else:
        caveat = " Weight-update sizes are not measured by these runs (enable probes); the gap is the only evidence."
    verdict = ladder(outcomes)
    reason = {
        REPRODUCED: "BN's train-test gap is smaller than LRN's.",
        CONDITIONAL: "BN's gap is smaller than some LRN variants' only.",
        NOT_REPRODUCED: "BN's train-test gap is not smaller than LRN's.",
    }[verdict]
    return Verdict("C3", statement, verdict, reason + caveat, thresholds, evidence, _runs_of(used))


def claim_c4(studies: dict[str, list[Variant]]) -> Verdict:
    statement = "BN is cheaper to compute than LRN, and LRN's cost grows with its window n."
    thresholds = (
        f"from studies that time LRN at two or more n beside BN; "
        f"LRN costs more if its median epoch time exceeds BN's by > {100 * TIME_MARGIN:.0f}% and by more "
        f"than BN's interquartile spread; grows with n if the median time rises with n in rank order and "
        f"the largest n is >= {100 * (GROWTH - 1):.0f}% slower than the smallest (per impl)"
    )
    evidence, costlier, growth, used = [], [], {}, []
    for group in _norm_groups(studies):
        bn_times = [t for v in _by_norm(group, "bn") for t in v.epoch_times()]
        # Only timing studies count: LRN timed at two or more n beside BN (others may run jobs side by side).
        if not bn_times or len({v.get("model.lrn.size") for v in _by_norm(group, "lrn")}) < 2:
            continue
        q1, bn_median, q3 = quartiles(bn_times)
        margin = max(TIME_MARGIN, (q3 - q1) / bn_median)
        for v in sorted(group, key=lambda v: (v.norm, str(v.get("model.lrn.impl")), v.get("model.lrn.size") or 0)):
            lo, median, hi = quartiles(v.epoch_times())
            lrn = v.norm == "lrn"
            evidence.append(
                {
                    "study": v.study,
                    "variant": v.label,
                    "epochs timed": len(v.epoch_times()),
                    "median epoch s": f"{median:.2f}",
                    "IQR s": f"{lo:.2f}-{hi:.2f}",
                    "ratio to BN": f"{median / bn_median:.2f}",
                }
            )
            if lrn:
                costlier.append(median / bn_median > 1 + margin)
        timed = [v for v in _by_norm(group, "lrn") if v.epoch_times()]
        for impl in dict.fromkeys(v.get("model.lrn.impl") for v in timed):
            sizes = {
                v.get("model.lrn.size"): quartiles(v.epoch_times())[1] for v in timed if v.get("model.lrn.impl") == impl
            }
            if len(sizes) >= 2:
                ordered = [sizes[n] for n in sorted(sizes)]
                rising = all(b >= a for a, b in zip(ordered, ordered[1:])) and ordered[-1] >= GROWTH * ordered[0]
                growth.setdefault(impl, []).append(rising)
        used += group
    if not costlier:
        return Verdict(
            "C4",
            statement,
            INCONCLUSIVE,
            "needs runs: BN and LRN timed in one study, e.g. configs/notes/timing-quick.yaml",
            thresholds,
        )
    parts = [f"LRN cost more than BN in {sum(costlier)}/{len(costlier)} LRN variants."]
    for impl, flags in growth.items():
        parts.append(f"With impl {impl}, epoch time {'grew' if all(flags) else 'did not grow'} with n.")
    grows = {impl: all(flags) for impl, flags in growth.items()}
    # The claim has two halves: every LRN variant costlier than BN, and the cost growing with n in every impl. Growth
    # that was not tested counts as not shown.
    verdict = ladder(costlier + (list(grows.values()) or [False]))
    if verdict == CONDITIONAL and grows and not all(grows.values()):
        parts.append(
            "Growth with n is a property of the stock implementation, not of LRN: "
            + ", ".join(f"{i}: {'grows' if g else 'flat'}" for i, g in grows.items())
            + "."
        )
    if not grows:
        parts.append("Growth with n was not tested (needs LRN at two or more sizes).")
    return Verdict("C4", statement, verdict, " ".join(parts), thresholds, evidence, _runs_of(used))


def claim_c5(studies: dict[str, list[Variant]]) -> Verdict:
    statement = "With input normalization, LRN's k = 1 or 2 destabilises training: accuracy stays at chance (10%)."
    thresholds = (
        f"a setting 'stays at chance' if every epoch's test accuracy of each of >= {MIN_SEEDS_CHANCE} seeds "
        f"is within {100 * CHANCE_TOLERANCE:.0f} points of 1/classes"
    )
    evidence, note_conditions, others, used = [], [], [], []
    for variants in studies.values():
        for v in variants:
            # An identity LRN counts as none: a control (below), not an LRN setting.
            if v.norm != "lrn" or v.seeds() < MIN_SEEDS_CHANCE:
                continue
            at_chance = all(stays_at_chance(r, v.chance(), CHANCE_TOLERANCE) for r in v.finished)
            is_note = v.get("model.lrn.k") in (1, 2) and v.get("data.input_norm") is True
            evidence.append(
                {
                    "study": v.study,
                    "variant": v.label,
                    "seeds": v.seeds(),
                    "final test acc": _pct(mean_std(v.final_accs())[0]),
                    "note's condition": is_note,
                    "stays at chance": at_chance,
                }
            )
            (note_conditions if is_note else others).append((v, at_chance))
            used.append(v)
    if not note_conditions:
        return Verdict(
            "C5",
            statement,
            INCONCLUSIVE,
            f"needs runs: LRN with k in {{1, 2}} and input_norm true, "
            f">= {MIN_SEEDS_CHANCE} seeds, e.g. configs/notes/k_collapse-quick.yaml",
            thresholds,
            evidence,
        )
    collapsed = [v.label for v, chance in note_conditions if chance]
    elsewhere = [v.label for v, chance in others if chance]
    # Controls: the same study's runs without an effective LRN. If they stay at chance too, k is not the cause.
    controls = [
        v
        for variants in studies.values()
        for v in variants
        if v.study in {n.study for n, _ in note_conditions} and v.seeds() >= MIN_SEEDS_CHANCE and v.norm == "none"
    ]
    stuck_controls = [
        v.label for v in controls if all(stays_at_chance(r, v.chance(), CHANCE_TOLERANCE) for r in v.finished)
    ]
    for v in controls:
        if v.get("model.norm") == "none":
            evidence.append(
                {
                    "study": v.study,
                    "variant": v.label,
                    "seeds": v.seeds(),
                    "final test acc": _pct(mean_std(v.final_accs())[0]),
                    "note's condition": False,
                    "stays at chance": v.label in stuck_controls,
                }
            )
    used += [v for v in controls if v not in used]
    if collapsed and stuck_controls:
        return Verdict(
            "C5",
            statement,
            INCONCLUSIVE,
            f"controls without an effective LRN ({'; '.join(stuck_controls)}) "
            "stayed at chance too, so these runs cannot tell k's effect: train longer or at another "
            "learning rate.",
            thresholds,
            evidence,
            _runs_of(used),
        )
    verdict = ladder([chance for _, chance in note_conditions])
    reason = {
        REPRODUCED: "Every LRN setting with k in {1, 2} and normalized inputs stayed at chance.",
        CONDITIONAL: f"Stayed at chance only for: {'; '.join(collapsed)}.",
        NOT_REPRODUCED: "No setting with k in {1, 2} and normalized inputs stayed at chance: the note's stated "
        "conditions alone do not produce it.",
    }[verdict]
    if elsewhere:
        reason += f" Outside the note's conditions, these stayed at chance too: {'; '.join(elsewhere)}."
    similarity = {
        v.label: probe_summary(v)["filter_similarity"] for v, _ in note_conditions + others if probe_summary(v)
    }
    if similarity:
        reason += (
            " conv1 filter similarity at the end (probes, mean |cos|): "
            + ", ".join(f"{label} {value:.2f}" for label, value in similarity.items())
            + "."
        )
    else:
        reason += " Filter similarity is not measured by these runs (enable probes)."
    return Verdict("C5", statement, verdict, reason, thresholds, evidence, _runs_of(used))


def all_claims(studies: dict[str, list[Variant]], target: float) -> list[Verdict]:
    return [claim_c1(studies), claim_c2(studies, target), claim_c3(studies), claim_c4(studies), claim_c5(studies)]
