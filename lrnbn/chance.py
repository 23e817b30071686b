"""C5's measurements, run by run: when a run is stuck at chance, what share of a setting's runs is stuck through
each epoch of interest, and what holds them there, judged against the settings that differ in one factor.

The note says LRN with k = 1 or 2 *always* keeps accuracy at 10%, so C5 is judged per run, not on a mean: a run is
stuck through epoch E when its best test accuracy over epochs 1..E stays within CHANCE_TOLERANCE of 1/classes.
A setting's runs are then "stuck" (all of them), "learn" (none) or "split" (some), with an exact interval on the
share. The cause of a stuck setting is read off the settings beside it in the same study:
- its control: the same settings with no normalization (does the stall need the LRN?);
- its twin: the same LRN under another initialisation (does the stall need this initialisation?).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from lrnbn.keys import is_norm_key
from lrnbn.results import Variant
from lrnbn.stats import Share, more_often, share

# 2 points: on CIFAR-10's 10,000 test images a net that guesses scores 10% +- 0.3% (binomial standard error), and
# one that answers every image with the same class exactly 10%, so 2 points is about 7 standard errors above a guess;
# every run of this project that learned at all was above 12% after its first epoch or two.
CHANCE_TOLERANCE = 0.02
HORIZONS = (1, 2, 5, 10)  # the epochs C5 reports stuck shares at (those a setting's runs reached), and the last
PROBE_NOISE_SE = 3  # a probe-batch accuracy counts as learning only 3 binomial standard errors above a guess
INIT_KEYS = ("model.init", "model.init_std", "model.init_bias")

STUCK, LEARN, SPLIT = "stuck", "learn", "split"  # a setting's runs through an epoch: all at chance, none, some
BY_K, NOT_BY_K, LEARNED, UNDECIDED = "by k", "not by k", "learned", "undecided"  # what a cause says of k


def epochs_at_chance(run, chance: float) -> int:
    """Epochs the run's test accuracy sat at chance before it first left it; all of its epochs when it never did."""
    return next(
        (i for i, m in enumerate(run.metrics) if m["test_acc"] > chance + CHANCE_TOLERANCE),
        len(run.metrics),
    )


def horizons(v: Variant) -> list[int]:
    """The epochs to judge a setting at: HORIZONS that all its finished runs reached, and their last common epoch."""
    reached = min(len(r.metrics) for r in v.finished)
    return sorted({e for e in HORIZONS if e <= reached} | {reached})


def stuck_share(v: Variant, epoch: int) -> Share:
    """Of the setting's finished runs, how many were still at chance through `epoch`."""
    stuck = sum(epochs_at_chance(r, v.chance()) >= epoch for r in v.finished)
    return share(stuck, len(v.finished))


def state(s: Share) -> str:
    return STUCK if s.count == s.runs else LEARN if s.count == 0 else SPLIT


def probe_chance_bar(run, chance: float) -> float | None:
    """The probe-batch accuracy above which a run has learned something: the batch's largest class share (what
    guessing that class scores) plus PROBE_NOISE_SE binomial standard errors of a guess at chance on that many
    images (about 6 points on 256). None where the batch is not trusted with it: not recorded in env.json's
    probe_batch, or one class filling more than twice its share (a batch of one class is all right or all wrong
    by guessing that class)."""
    counts = run.env.probe_class_counts
    if not counts or max(counts) / sum(counts) > 2 * chance:
        return None
    images = sum(counts)
    return max(counts) / images + PROBE_NOISE_SE * math.sqrt(chance * (1 - chance) / images)


def left_chance(run, chance: float) -> str:
    """Where a run first left chance: the epoch (test accuracy) and, with probes on a batch of every class, the
    step (probe-batch accuracy above probe_chance_bar)."""
    at_chance = epochs_at_chance(run, chance)
    epoch = run.metrics[at_chance]["epoch"] if at_chance < len(run.metrics) else None
    bar = probe_chance_bar(run, chance)
    probes = run.probes if bar is not None else []
    step = next((p["step"] for p in probes if p.get("probe_acc", 0) > bar), None)
    if epoch is None and step is None:
        return "never"
    return f"epoch {epoch or 'never'}" + (f" (step {step})" if step else "")


def control_of(v: Variant, variants: list[Variant]) -> Variant | None:
    """The study's setting alike in all but the normalization, with none (an identity LRN counts as none)."""
    mine = v.settings_without(is_norm_key)
    return next((c for c in variants if c.norm == "none" and c.settings_without(is_norm_key) == mine), None)


def twin_of(v: Variant, variants: list[Variant]) -> Variant | None:
    """The study's setting alike in all but the initialisation: the same LRN started elsewhere."""
    mine = v.settings_without(lambda k: k in INIT_KEYS)
    return next(
        (t for t in variants if t is not v and t.settings_without(lambda k: k in INIT_KEYS) == mine and t.finished),
        None,
    )


def _reached(v: Variant | None, epoch: int) -> bool:
    return v is not None and bool(v.finished) and epoch <= min(len(r.metrics) for r in v.finished)


@dataclass
class Stall:
    """One LRN setting's stuck shares; for how long every run stayed at chance; and the cause at that epoch (or at
    its last, where no epoch held every run), read off its control and twin."""

    setting: Variant
    shares: dict[int, Share]  # epoch -> share of runs stuck through it
    control: Variant | None
    twin: Variant | None
    cause: str  # in words: "k", "the initialisation", "k and the initialisation together", ...
    cause_kind: str  # BY_K, NOT_BY_K, LEARNED or UNDECIDED

    @property
    def last(self) -> int:
        return max(self.shares)

    @property
    def outcome(self) -> str:
        """At the last epoch: every run stuck, none, or some (the note's "always" is judged here)."""
        return state(self.shares[self.last])

    @property
    def held(self) -> int:
        """The latest epoch of interest through which every run stayed at chance; 0 where none did."""
        return max((e for e, s in self.shares.items() if state(s) == STUCK), default=0)

    @property
    def judged_at(self) -> int:
        return self.held or self.last

    def neighbours_at(self, epoch: int) -> list[tuple[Variant, Share]]:
        """The control and the twin that ran to `epoch`, with their shares stuck through it."""
        return [(n, stuck_share(n, epoch)) for n in (self.control, self.twin) if _reached(n, epoch)]

    def p_against_control(self) -> float | None:
        """One-sided Fisher p that the setting is stuck through judged_at more often than its control."""
        if not _reached(self.control, self.judged_at):
            return None
        return more_often(self.shares[self.judged_at], stuck_share(self.control, self.judged_at))


def _outcome_at(v: Variant | None, epoch: int) -> str | None:
    """The state of a neighbouring setting through `epoch`; None where it did not run that long."""
    return state(stuck_share(v, epoch)) if _reached(v, epoch) else None


def cause_of(outcome: str, control: str | None, twin: str | None) -> tuple[str, str]:
    """Why a setting is stuck, from its own outcome, its control's (no normalization) and its twin's (the other
    initialisation), each stuck, learn, split or None (not run): the words, and their kind (BY_K: k is needed or
    enough; NOT_BY_K: the net is stuck without LRN too; LEARNED; or UNDECIDED)."""
    if outcome == LEARN:
        return "it learned", LEARNED
    if outcome == SPLIT:
        return "undecided: its runs split", UNDECIDED
    if control is None:
        return "undecided: no control without normalization ran", UNDECIDED
    if SPLIT in (control, twin):
        return "undecided: a neighbouring setting's runs split", UNDECIDED
    if control == LEARN:
        if twin == LEARN:
            return "k and the initialisation together (neither alone)", BY_K
        return ("k, under either initialisation" if twin == STUCK else "k (the LRN: its control learned)"), BY_K
    if twin == LEARN:
        return "the initialisation (its control is stuck too; LRN under the other initialisation learned)", NOT_BY_K
    if twin == STUCK:
        return "each alone: k under either initialisation, and this initialisation without LRN", BY_K
    return "not k: its control is stuck too", NOT_BY_K


def stall_of(v: Variant, variants: list[Variant]) -> Stall:
    control, twin = control_of(v, variants), twin_of(v, variants)
    shares = {e: stuck_share(v, e) for e in horizons(v)}
    held = max((e for e, s in shares.items() if state(s) == STUCK), default=0)
    at = held or max(shares)
    cause, kind = cause_of(state(shares[at]), _outcome_at(control, at), _outcome_at(twin, at))
    return Stall(v, shares, control, twin, cause, kind)


def mechanism(v: Variant, epochs: float = 1.0) -> dict | None:
    """What the probes saw over the first `epochs` (where a stalled run is stuck): how much the logits depend on the
    image, the dead share of the channels behind the norm positions, the gradient norm reaching conv1, the norm
    layers' gain (output std / input std) and conv1's filter similarity. None without such probes."""
    probes = [p for r in v.finished for p in r.probes if p.get("epoch", math.inf) <= epochs and "logit_spread" in p]
    if not probes:
        return None

    def mean(values):
        values = [x for x in values if x is not None]
        return statistics.fmean(values) if values else math.nan

    layers = [layer for p in probes for layer in p["layers"]]
    return {
        "logit_spread": mean(p["logit_spread"] for p in probes),
        "logit_class_spread": mean(p["logit_class_spread"] for p in probes),
        "dead_channels": mean(layer.get("dead_channel_share") for layer in layers),
        "conv1_grad_norm": mean(p["weights"][0]["grad_norm"] for p in probes if p["weights"]),
        "gain": mean(layer["output_std"] / layer["input_std"] for layer in layers if layer.get("input_std")),
        "filter_similarity": mean(p["filter_similarity"] for p in probes),
    }
