"""The statistics a verdict rests on: a difference of two means with its 95% Welch interval, and the decision
whether it shows an effect on the claimed side, at least as large as the claim's minimum.

Welch's t interval (unequal variances) over seeds or repeats: the usual choice for a handful of runs per variant,
assuming roughly normal per-seed figures. With no spread on either side (every seed equal, as for runs stuck at
exactly chance) the interval is the point itself; with fewer than 2 values on a side there is none.

A share of runs (k of n stuck at chance, say) gets the exact Clopper-Pearson interval, which assumes nothing beyond
independent runs and stays honest at n = 3, where 3 of 3 is [29%, 100%]; two shares are told apart by Fisher's
exact test (one-sided: the first larger), whose smallest p at 3 against 3 runs is 1/20.
"""

from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import dataclass

LEVEL = 0.95


ALPHA = (1 - LEVEL) / 2  # one-sided: a 95% two-sided interval lies above 0 exactly when this p is below 0.025
EXACT_SPLITS = 20_000  # up to this many ways to split the pooled values, the permutation test enumerates them all
RESAMPLES = 20_000  # beyond, it draws this many at random (seeded: the same p on every rerun)


@dataclass(frozen=True)
class Difference:
    """mean(a) - mean(b) with its two-sided 95% Welch interval (nan bounds: too few values, or no spread on either
    side, to have one), and two one-sided p-values that it is above 0: Welch's t and an exact permutation test."""

    estimate: float
    low: float
    high: float
    n_a: int
    n_b: int
    p_welch: float = math.nan
    p_permutation: float = math.nan

    @property
    def has_interval(self) -> bool:
        return not (math.isnan(self.low) or math.isnan(self.high))

    @property
    def p(self) -> float:
        """The p a decision rests on: Welch's, or the permutation test's where Welch has none (no spread)."""
        return self.p_permutation if math.isnan(self.p_welch) else self.p_welch

    @property
    def tests_disagree(self) -> bool:
        """Welch's t and the permutation test fall on different sides of ALPHA (small samples, skewed values)."""
        return not math.isnan(self.p_welch) and (self.p_welch < ALPHA) != (self.p_permutation < ALPHA)

    def text(self, scale: float = 1.0, unit: str = "", digits: int = 1) -> str:
        est = f"{self.estimate * scale:+.{digits}f}"
        if self.has_interval:
            return f"{est} [{self.low * scale:+.{digits}f}, {self.high * scale:+.{digits}f}]{unit}"
        if min(self.n_a, self.n_b) < 2:
            return f"{est}{unit} (no interval: n = {self.n_a} vs {self.n_b})"
        return f"{est}{unit} (no spread on either side: no interval; permutation p = {self.p_permutation:.2g})"


def welch(a: list[float], b: list[float]) -> Difference:
    """mean(a) - mean(b), its 95% Welch-Satterthwaite interval and one-sided p, and the permutation test's p."""
    from scipy import stats

    estimate = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        return Difference(estimate, math.nan, math.nan, len(a), len(b), p_permutation=permutation(a, b))
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0:
        return Difference(estimate, math.nan, math.nan, len(a), len(b), p_permutation=permutation(a, b))
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    se = math.sqrt(va + vb)
    half = stats.t.ppf(0.5 + LEVEL / 2, dof) * se
    p = float(stats.t.sf(estimate / se, dof))
    return Difference(estimate, float(estimate - half), float(estimate + half), len(a), len(b), p, permutation(a, b))


def permutation(a: list[float], b: list[float]) -> float:
    """One-sided p of the permutation test that mean(a) > mean(b): the share of the ways to split the pooled values
    into groups of len(a) and len(b) whose difference of means is at least the observed one. Exact (every split)
    up to EXACT_SPLITS splits; its smallest value is 1 / C(n_a + n_b, n_a), 1/20 at 3 against 3."""
    import random

    pooled, k = list(a) + list(b), len(a)
    if not a or not b:
        return math.nan
    observed = statistics.fmean(a) - statistics.fmean(b)
    tolerance = 1e-12 * max(1.0, abs(observed))  # a split equal to the observed one up to rounding counts as equal

    def diff(chosen: set[int]) -> float:
        first = [pooled[i] for i in chosen]
        rest = [pooled[i] for i in range(len(pooled)) if i not in chosen]
        return statistics.fmean(first) - statistics.fmean(rest)

    if math.comb(len(pooled), k) <= EXACT_SPLITS:
        splits = [set(c) for c in itertools.combinations(range(len(pooled)), k)]
    else:
        rng = random.Random(0)
        splits = [set(rng.sample(range(len(pooled)), k)) for _ in range(RESAMPLES)] + [set(range(k))]
    return sum(diff(s) >= observed - tolerance for s in splits) / len(splits)


def holm(ps: list[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (each compared with the same level afterwards): the
    smallest is multiplied by m, the next by m - 1, ..., kept monotone and at most 1."""
    order = sorted(range(len(ps)), key=lambda i: ps[i])
    adjusted, running = [math.nan] * len(ps), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(ps) - rank) * ps[i]))
        adjusted[i] = running
    return adjusted


def shows(diff: Difference, minimum: float, p: float | None = None) -> tuple[bool, str]:
    """Whether `diff` shows a positive effect of at least `minimum`: its p (`p`, Holm-adjusted within the claim's
    family, or its own) below ALPHA and its estimate at least the minimum. Otherwise what is missing, in words."""
    p = diff.p if p is None else p
    if math.isnan(p):
        return False, f"needs 2 or more seeds on each side (has {diff.n_a} and {diff.n_b})"
    if p >= ALPHA:
        corrected = " after Holm's correction" if p != diff.p else ""
        return False, f"p = {p:.2g}{corrected}, not below {ALPHA:g}: more seeds, or the effect is not there"
    if diff.estimate < minimum:
        return False, f"the effect is below the minimum of {minimum:g}"
    return True, ""


@dataclass(frozen=True)
class Share:
    """k of n runs, with the exact (Clopper-Pearson) two-sided 95% interval of the share."""

    count: int
    runs: int
    low: float
    high: float

    @property
    def value(self) -> float:
        return self.count / self.runs

    def text(self) -> str:
        return f"{self.count}/{self.runs} [{100 * self.low:.0f}%, {100 * self.high:.0f}%]"


def share(count: int, runs: int) -> Share:
    from scipy import stats

    interval = stats.binomtest(count, runs).proportion_ci(confidence_level=LEVEL, method="exact")
    return Share(count, runs, float(interval.low), float(interval.high))


def more_often(a: Share, b: Share) -> float:
    """One-sided p of Fisher's exact test that a's share is larger than b's."""
    from scipy import stats

    table = [[a.count, a.runs - a.count], [b.count, b.runs - b.count]]
    return float(stats.fisher_exact(table, alternative="greater").pvalue)
