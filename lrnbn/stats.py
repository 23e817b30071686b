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

import math
import statistics
from dataclasses import dataclass

LEVEL = 0.95


@dataclass(frozen=True)
class Difference:
    """mean(a) - mean(b) with its two-sided 95% Welch interval (nan bounds: too few values to have one)."""

    estimate: float
    low: float
    high: float
    n_a: int
    n_b: int

    @property
    def has_interval(self) -> bool:
        return not (math.isnan(self.low) or math.isnan(self.high))

    def text(self, scale: float = 1.0, unit: str = "", digits: int = 1) -> str:
        est = f"{self.estimate * scale:+.{digits}f}"
        if not self.has_interval:
            return f"{est}{unit} (no interval: n = {self.n_a} vs {self.n_b})"
        return f"{est} [{self.low * scale:+.{digits}f}, {self.high * scale:+.{digits}f}]{unit}"


def welch(a: list[float], b: list[float]) -> Difference:
    """mean(a) - mean(b) and its 95% Welch-Satterthwaite interval."""
    from scipy import stats

    estimate = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        return Difference(estimate, math.nan, math.nan, len(a), len(b))
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0:
        return Difference(estimate, estimate, estimate, len(a), len(b))
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = stats.t.ppf(0.5 + LEVEL / 2, dof) * math.sqrt(va + vb)
    return Difference(estimate, estimate - half, estimate + half, len(a), len(b))


def shows(diff: Difference, minimum: float) -> tuple[bool, str]:
    """Whether `diff` shows a positive effect of at least `minimum`: its interval above 0 and its estimate at least
    the minimum. Otherwise what is missing, in words."""
    if not diff.has_interval:
        return False, f"needs 2 or more seeds on each side (has {diff.n_a} and {diff.n_b})"
    if diff.low <= 0:
        return False, "its interval reaches 0 or below: more seeds, or the effect is not there"
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
