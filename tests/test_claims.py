"""Verdicts from hand-made runs: each claim can come out reproduced, not reproduced, conditional or inconclusive."""

import json

import pytest

from lrnbn import chance, claims
from lrnbn.records import find_runs
from lrnbn.results import group
from tests.rundirs import make_run

LEARNS = [0.3, 0.45, 0.55, 0.6]
CHANCE = [0.1, 0.105, 0.095, 0.1]


def studies(tmp_path):
    return group(find_runs([tmp_path]).runs)


def k_study(tmp_path, lrn_accs, control_accs, seeds=3):
    for seed in range(seeds):
        for k in (1, 2):
            make_run(
                tmp_path,
                "kc",
                f"k{k},seed={seed}",
                {"model.norm": "lrn", "model.lrn.k": k, "experiment.seed": seed},
                lrn_accs,
            )
        make_run(tmp_path, "kc", f"none,seed={seed}", {"model.norm": "none", "experiment.seed": seed}, control_accs)


def test_c5_reproduced_when_k_1_and_2_stay_at_chance_and_the_control_learns(tmp_path):
    k_study(tmp_path, CHANCE, LEARNS)
    assert claims.claim_c5(studies(tmp_path)).verdict == claims.REPRODUCED


def test_c5_not_reproduced_when_lrn_learns(tmp_path):
    k_study(tmp_path, LEARNS, LEARNS)
    verdict = claims.claim_c5(studies(tmp_path))
    assert verdict.verdict == claims.NOT_REPRODUCED and "do not produce it" in verdict.reason


def test_c5_inconclusive_when_the_control_is_stuck_too_or_seeds_are_missing(tmp_path):
    k_study(tmp_path / "a", CHANCE, CHANCE)
    stuck = claims.claim_c5(studies(tmp_path / "a"))
    assert stuck.verdict == claims.INCONCLUSIVE
    assert stuck.limits == ["that k causes the 10% in the 2 settings stuck at it: they stay there without LRN"]
    k_study(tmp_path / "b", CHANCE, LEARNS, seeds=2)
    verdict = claims.claim_c5(studies(tmp_path / "b"))
    assert verdict.verdict == claims.INCONCLUSIVE and verdict.reason.startswith("needs runs")


def test_c5_is_conditional_when_only_one_k_collapses(tmp_path):
    for seed in range(3):
        for name, settings, accs in (
            ("k1", {"model.norm": "lrn", "model.lrn.k": 1}, LEARNS),
            ("k2", {"model.norm": "lrn", "model.lrn.k": 2}, CHANCE),
            ("none", {"model.norm": "none"}, LEARNS),
        ):
            make_run(tmp_path, "kc", f"{name},seed={seed}", {**settings, "experiment.seed": seed}, accs)
    verdict = claims.claim_c5(studies(tmp_path))
    assert verdict.verdict == claims.CONDITIONAL and "conditions: kc: k2." in verdict.reason


def test_c5_without_a_control_names_no_cause_and_decides_nothing(tmp_path):
    for seed in range(3):
        make_run(
            tmp_path, "kc", f"k2,seed={seed}", {"model.norm": "lrn", "model.lrn.k": 2, "experiment.seed": seed}, CHANCE
        )
    verdict = claims.claim_c5(studies(tmp_path))
    assert verdict.verdict == claims.INCONCLUSIVE and "no control without normalization ran" in verdict.reason


def timing_study(tmp_path, bn_time, torch_times: dict, fast_times: dict | None = None):
    for rep in range(3):
        make_run(tmp_path, "timing", f"bn,rep={rep}", {"model.norm": "bn"}, [0.5], [bn_time])
        for impl, times in (("torch", torch_times), ("fast", fast_times or {})):
            for n, seconds in times.items():
                make_run(
                    tmp_path,
                    "timing",
                    f"{impl}{n},rep={rep}",
                    {"model.norm": "lrn", "model.lrn.size": n, "model.lrn.impl": impl},
                    [0.5],
                    [seconds + rep * 0.01],
                )


def test_c4_in_the_notes_units_names_depth_radius_and_measures_the_notes_own_pairs(tmp_path):
    # TensorFlow's convention, the note's n = depth_radius: windows 7, 11 and 21 at n 3, 5 and 10.
    for rep in range(3):
        make_run(tmp_path, "timing", f"bn,rep={rep}", {"model.norm": "bn"}, [0.5], [10.0 + 0.1 * rep])
        for radius, seconds in ((3, 14.0), (5, 15.0), (10, 18.0)):
            settings = {
                "model.norm": "lrn",
                "model.lrn.convention": "tensorflow",
                "model.lrn.depth_radius": radius,
                "model.lrn.impl": "torch",
            }
            make_run(tmp_path, "timing", f"n{radius},rep={rep}", settings, [0.5], [seconds + 0.1 * rep])
    verdict = claims.claim_c4(studies(tmp_path))
    assert any(
        c.what == "timing: impl torch, n 10 (window 21) minus n 3 (window 7), epoch s" for c in verdict.comparisons
    )
    # Repeats 0, 0.1 and 0.2 s apart on every side: Welch's half-width t(0.975, 4 dof) * sqrt(2 * 0.01 / 3) = 0.23 s.
    assert "timing: impl torch, n 10 minus n 5 +3.0 [+2.8, +3.2] s (+20%; the note: +30 s)" in verdict.reason
    assert "timing: impl torch, n 3 minus BN +4.0 [+3.8, +4.2] s (+40%; the note: +40 s)" in verdict.reason


def test_c4_says_when_timed_epochs_overlapped_other_work_and_the_report_gives_them_no_ratio(tmp_path):
    from lrnbn.report import study_table

    timing_study(tmp_path, 10.0, {1: 12.0, 10: 18.0})
    busy = next(r for r in find_runs([tmp_path]).runs if r.path.name == "torch10,rep=0")
    lines = [json.loads(line) for line in (busy.path / "metrics.jsonl").read_text().splitlines()]
    # Two threads of its own and a load of 3.2: 1.2 more runnable threads than its own, other work.
    (busy.path / "metrics.jsonl").write_text(json.dumps({**lines[0], "load_1m": 3.2, "threads": 2}) + "\n")
    verdict = claims.claim_c4(studies(tmp_path))
    assert "1 of 1 timed epochs overlapped other work on the machine" in verdict.reason
    assert "times alone on the machine: 1 timed epochs overlapped other work" in verdict.limits
    rows = {row["variant"]: row for row in verdict.evidence}
    assert (
        rows["torch10"]["epochs overlapping other work"] == "1/1"
        and rows["bn"]["epochs overlapping other work"] == "not recorded"
    )
    table = {row["variant"]: row for row in study_table(studies(tmp_path)["timing"], 0.5)}
    assert table["torch10"]["ratio to BN"] == "not comparable: 1/1 epochs overlapped other work"
    assert table["torch1"]["ratio to BN"] == "1.20"


def test_c4_reproduced_when_lrn_costs_more_and_grows_with_n(tmp_path):
    timing_study(tmp_path, 10.0, {1: 12.0, 5: 14.0, 10: 18.0})
    assert claims.claim_c4(studies(tmp_path)).verdict == claims.REPRODUCED


def test_c4_conditional_when_only_the_stock_implementation_grows(tmp_path):
    timing_study(tmp_path, 10.0, {1: 12.0, 5: 14.0, 10: 18.0}, {1: 12.0, 5: 12.1, 10: 12.0})
    verdict = claims.claim_c4(studies(tmp_path))
    assert verdict.verdict == claims.CONDITIONAL
    assert "torch: grows" in verdict.reason and "fast: flat" in verdict.reason


def test_c4_not_reproduced_when_lrn_is_as_cheap_as_bn(tmp_path):
    timing_study(tmp_path, 10.0, {1: 9.0, 5: 9.1, 10: 9.0})
    assert claims.claim_c4(studies(tmp_path)).verdict == claims.NOT_REPRODUCED


def jittered(accs: list[float], seed: int) -> list[float]:
    """Seeds that differ a little, as real ones do: identical seeds have no spread, and no interval."""
    return [a + 0.003 * seed for a in accs]


def convergence_study(tmp_path, bn_accs, lrn_accs, bn_train=None, lrn_train=None):
    for seed in (0, 1):
        for norm, accs, train in (("bn", bn_accs, bn_train), ("lrn", lrn_accs, lrn_train)):
            settings = {"model.norm": norm, "experiment.seed": seed}
            make_run(tmp_path, "conv", f"{norm},seed={seed}", settings, jittered(accs, seed), train_accs=train)


@pytest.mark.parametrize(
    "bn,lrn,expected",
    [
        ([0.4, 0.55, 0.6], [0.3, 0.4, 0.52], claims.REPRODUCED),
        ([0.3, 0.4, 0.52], [0.4, 0.55, 0.6], claims.NOT_REPRODUCED),
        ([0.3, 0.4, 0.45], [0.3, 0.52, 0.55], claims.NOT_REPRODUCED),  # BN never reaches the target, LRN does
        ([0.3, 0.4, 0.45], [0.3, 0.4, 0.45], claims.INCONCLUSIVE),  # nobody reaches it: the runs cannot tell
    ],
)
def test_c2_compares_epochs_to_target(tmp_path, bn, lrn, expected):
    convergence_study(tmp_path, bn, lrn)
    assert claims.claim_c2(studies(tmp_path), target=0.5).verdict == expected


def test_c1_sets_aside_a_group_whose_lrn_settings_all_stayed_at_chance(tmp_path):
    # Under an initialisation that holds every net without BN at chance, LRN's settings all score 10%: that spread of
    # 0 says nothing about LRN's hand-set values.
    for seed in (0, 1):
        settings = {"experiment.seed": seed}
        make_run(tmp_path, "s", f"bn,{seed}", {**settings, "model.norm": "bn"}, jittered([0.6], seed))
        for k in (1, 2):
            lrn = {**settings, "model.norm": "lrn", "model.lrn.k": k}
            make_run(tmp_path, "s", f"k{k},{seed}", lrn, jittered([0.1], seed * k))
    verdict = claims.claim_c1(studies(tmp_path))
    assert verdict.verdict == claims.INCONCLUSIVE and verdict.reason.startswith("needs runs")


def test_c1_gives_bns_and_nones_sensitivity_to_the_learning_rate_beside_lrns_to_k(tmp_path):
    for seed in (0, 1):
        for lr, bn_acc in ((0.01, 0.6), (0.05, 0.5)):
            settings = {"train.lr": lr, "experiment.seed": seed}
            make_run(tmp_path, "s", f"bn,lr={lr},{seed}", {**settings, "model.norm": "bn"}, jittered([bn_acc], seed))
            for k, acc in ((1, 0.6), (2, 0.4)):
                lrn = {**settings, "model.norm": "lrn", "model.lrn.k": k}
                make_run(tmp_path, "s", f"k{k},lr={lr},{seed}", lrn, jittered([acc], seed * k))
    verdict = claims.claim_c1(studies(tmp_path))
    # Seeds 0.6, 0.603 against 0.5, 0.503: +10 points, Welch half-width t(0.975, 2) * sqrt(2 * 0.0015^2) = 0.9.
    assert (
        "For scale, the learning rate moves the others: s: norm=bn,lr=0.01 minus norm=bn,lr=0.05 +10.0 [+9.1, +10.9] "
        "points"
    ) in verdict.reason


def test_c3_says_when_every_run_fits_fully_so_the_gap_is_the_test_accuracy_difference(tmp_path):
    convergence_study(tmp_path, [0.6], [0.55], bn_train=[1.0], lrn_train=[1.0])
    verdict = claims.claim_c3(studies(tmp_path))
    assert (
        "In conv every run ends at >= 99.5% training accuracy, so the gap difference is the test accuracy "
        "difference" in verdict.reason
    )
    assert "why BN generalizes better: every run fits its training data fully" in verdict.limits
    convergence_study(tmp_path / "b", [0.6], [0.55], bn_train=[0.97], lrn_train=[0.99])
    fitted = claims.claim_c3(studies(tmp_path / "b"))
    assert "gap difference is the test accuracy difference" not in fitted.reason
    assert not any(limit.startswith("why BN generalizes better") for limit in fitted.limits)


def test_c3_measures_weight_decays_part_in_bns_gap_where_bn_ran_without_it(tmp_path):
    convergence_study(tmp_path, [0.6], [0.55], bn_train=[1.0], lrn_train=[1.0])
    verdict = claims.claim_c3(studies(tmp_path))
    assert "conv has no BN run without weight decay" in verdict.reason
    assert "weight decay's part in BN's gap (no BN run without it)" in verdict.limits
    for seed in (0, 1):
        settings = {"model.norm": "bn", "train.weight_decay": 0, "experiment.seed": seed}
        make_run(tmp_path, "conv", f"bn-nowd,seed={seed}", settings, jittered([0.58], seed), train_accs=[1.0])
    verdict = claims.claim_c3(studies(tmp_path))
    # Gaps 0.42, 0.417 against 0.4, 0.397: +2 points, Welch half-width t(0.975, 2) * sqrt(2 * 0.0015^2) = 0.9.
    assert "conv: BN's train-test gap without weight decay minus with it +2.0 [+1.1, +2.9] points." in verdict.reason
    assert not any(limit.startswith("weight decay's part") for limit in verdict.limits)


def test_c3_compares_train_test_gaps(tmp_path):
    convergence_study(tmp_path / "a", [0.6], [0.55], bn_train=[0.97], lrn_train=[0.99])
    assert claims.claim_c3(studies(tmp_path / "a")).verdict == claims.REPRODUCED
    convergence_study(tmp_path / "b", [0.55], [0.6], bn_train=[0.99], lrn_train=[0.97])
    assert claims.claim_c3(studies(tmp_path / "b")).verdict == claims.NOT_REPRODUCED


def test_c1_sensitivity_of_lrn_settings_against_bn_seed_noise(tmp_path):
    for seed in (0, 1):
        make_run(
            tmp_path / "a", "sweep", f"bn,{seed}", {"model.norm": "bn", "experiment.seed": seed}, [0.6 + seed * 0.005]
        )
        make_run(
            tmp_path / "a",
            "sweep",
            f"k1,{seed}",
            {"model.norm": "lrn", "model.lrn.k": 1, "experiment.seed": seed},
            jittered([0.6], seed),
        )
        make_run(
            tmp_path / "a",
            "sweep",
            f"k2,{seed}",
            {"model.norm": "lrn", "model.lrn.k": 2, "experiment.seed": seed},
            jittered([0.4], seed),
        )
    assert claims.claim_c1(studies(tmp_path / "a")).verdict == claims.REPRODUCED
    for seed in (0, 1):
        make_run(tmp_path / "b", "sweep", f"bn,{seed}", {"model.norm": "bn", "experiment.seed": seed}, [0.6])
        for k in (1, 2):
            make_run(
                tmp_path / "b",
                "sweep",
                f"k{k},{seed}",
                {"model.norm": "lrn", "model.lrn.k": k, "experiment.seed": seed},
                jittered([0.6], seed * k),
            )
    assert claims.claim_c1(studies(tmp_path / "b")).verdict == claims.NOT_REPRODUCED


def test_every_claim_is_inconclusive_without_runs_and_names_what_is_missing(tmp_path):
    make_run(tmp_path, "lonely", "bn", {"model.norm": "bn"}, [0.5])
    for verdict in claims.all_claims(studies(tmp_path), target=0.5):
        assert verdict.verdict == claims.INCONCLUSIVE and verdict.reason.startswith("needs runs"), verdict


def test_timing_repeats_of_one_seed_do_not_count_as_seeds(tmp_path):
    for rep in range(3):
        make_run(tmp_path, "kc", f"k2,rep={rep}", {"model.norm": "lrn", "model.lrn.k": 2}, CHANCE)
        make_run(tmp_path, "kc", f"none,rep={rep}", {"model.norm": "none"}, LEARNS)
    verdict = claims.claim_c5(studies(tmp_path))
    assert verdict.verdict == claims.INCONCLUSIVE and verdict.reason.startswith("needs runs")


def test_runs_where_even_bn_stayed_at_chance_decide_neither_c1_nor_c3(tmp_path):
    for seed in (0, 1):
        make_run(
            tmp_path, "short", f"bn,{seed}", {"model.norm": "bn", "experiment.seed": seed}, [0.1], train_accs=[0.1]
        )
        for k in (1, 2):
            make_run(
                tmp_path,
                "short",
                f"k{k},{seed}",
                {"model.norm": "lrn", "model.lrn.k": k, "experiment.seed": seed},
                [0.1 + 0.01 * k],
                train_accs=[0.3],
            )
    assert claims.claim_c1(studies(tmp_path)).verdict == claims.INCONCLUSIVE
    assert claims.claim_c3(studies(tmp_path)).verdict == claims.INCONCLUSIVE


def test_c3_does_not_compare_gaps_with_lrn_runs_that_stayed_at_chance(tmp_path):
    convergence_study(tmp_path, [0.6], [0.1], bn_train=[0.62], lrn_train=[0.1])
    verdict = claims.claim_c3(studies(tmp_path))
    assert verdict.verdict == claims.INCONCLUSIVE and "stayed at chance" in verdict.reason


def test_c4_ignores_studies_that_time_lrn_at_a_single_n(tmp_path):
    for rep in range(3):
        make_run(tmp_path, "conv", f"bn,{rep}", {"model.norm": "bn"}, [0.5], [10.0])
        make_run(tmp_path, "conv", f"lrn,{rep}", {"model.norm": "lrn"}, [0.5], [30.0])
    assert claims.claim_c4(studies(tmp_path)).verdict == claims.INCONCLUSIVE


def test_c3_is_inconclusive_while_no_model_fits_its_training_data(tmp_path):
    # LRN's gap is 8 points larger than BN's, but at 80% train accuracy that says how far training has come
    convergence_study(tmp_path / "a", [0.7], [0.6], bn_train=[0.78], lrn_train=[0.76])
    verdict = claims.claim_c3(studies(tmp_path / "a"))
    assert verdict.verdict == claims.INCONCLUSIVE and "fits its training data" in verdict.reason
    convergence_study(tmp_path / "b", [0.7], [0.6], bn_train=[0.96], lrn_train=[0.9])  # BN fits, LRN not yet
    assert claims.claim_c3(studies(tmp_path / "b")).verdict == claims.INCONCLUSIVE


def test_an_identity_lrn_is_no_lrn_variant(tmp_path):
    for seed in (0, 1):
        make_run(tmp_path, "conv", f"bn,{seed}", {"model.norm": "bn", "experiment.seed": seed}, [0.4, 0.55])
        make_run(
            tmp_path,
            "conv",
            f"id,{seed}",
            {"model.norm": "lrn", "model.lrn.alpha": 0, "experiment.seed": seed},
            [0.5, 0.6],
        )
    verdict = claims.claim_c2(studies(tmp_path), target=0.5)
    assert verdict.verdict == claims.INCONCLUSIVE  # BN against none: no LRN variant to compare with


def test_welch_interval_matches_the_textbook_case():
    # Equal n and variances: Welch's degrees of freedom are 2(n-1) = 4, t(0.975, 4) = 2.7764 (tables),
    # standard error sqrt(1/3 + 1/3).
    from lrnbn.stats import welch

    diff = welch([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    half = 2.7764 * (2 / 3) ** 0.5
    assert diff.estimate == -3.0
    assert diff.low == pytest.approx(-3 - half, abs=1e-3) and diff.high == pytest.approx(-3 + half, abs=1e-3)
    assert welch([1.0], [0.5, 0.6]).p_welch != welch([1.0], [0.5, 0.6]).p_welch  # nan: no Welch with one value
    # No spread on either side: Welch has no interval (it would be the point, as if certain); the permutation
    # test decides, and of the C(4, 2) = 6 splits only the observed one is as large: p = 1/6.
    flat = welch([1.0, 1.0], [0.5, 0.5])
    assert not flat.has_interval and flat.p == pytest.approx(1 / 6) and "no spread" in flat.text()


def test_permutation_test_and_holm_match_hand_counts():
    from lrnbn.stats import holm, permutation

    assert permutation([3.0, 4.0, 5.0], [0.0, 1.0, 2.0]) == pytest.approx(1 / 20)  # the most extreme of 20 splits
    # [2, 3] against [1, 4]: of the 6 splits, {2,3},{1,4} (observed, 0), {2,4},{1,3} (+2), {3,4},{1,2} (+4) and
    # {1,4},{2,3} (0) are >= 0: 4 of 6.
    assert permutation([2.0, 3.0], [1.0, 4.0]) == pytest.approx(4 / 6)
    # Holm: sorted 0.01, 0.03, 0.04 -> 3 x 0.01, max(0.03, 2 x 0.03), max(0.06, 1 x 0.04), in the input's order.
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_holm_takes_back_a_c4_difference_that_one_test_alone_would_show(tmp_path):
    # Eleven LRN variants barely slower than BN, one p near 0.01 each; corrected over the family, none holds alone.
    for rep in range(3):
        make_run(tmp_path, "timing", f"bn,rep={rep}", {"model.norm": "bn"}, [0.5], [10.0 + 0.3 * rep])
        for n in range(1, 12):
            settings = {"model.norm": "lrn", "model.lrn.size": n, "model.lrn.impl": "torch"}
            make_run(tmp_path, "timing", f"n{n},rep={rep}", settings, [0.5], [10.9 + 0.01 * n + 0.3 * rep])
    verdict = claims.claim_c4(studies(tmp_path))
    versus_bn = [c for c in verdict.comparisons if c.baseline == "BN"]
    assert all(c.diff.p_welch < 0.025 for c in versus_bn)  # each alone: its interval is above 0
    assert not any(c.holds for c in versus_bn) and all("after Holm's correction" in c.missing for c in versus_bn)


def test_a_difference_whose_interval_reaches_zero_is_not_shown_and_the_verdict_says_so(tmp_path):
    # LRN is slower to the target on average, but the seeds disagree: the interval reaches below zero.
    for seed, lrn in enumerate(([0.3, 0.4, 0.52], [0.52, 0.55, 0.6], [0.3, 0.4, 0.45])):
        make_run(tmp_path, "conv", f"bn,seed={seed}", {"model.norm": "bn", "experiment.seed": seed}, [0.4, 0.55, 0.6])
        make_run(tmp_path, "conv", f"lrn,seed={seed}", {"model.norm": "lrn", "experiment.seed": seed}, lrn)
    verdict = claims.claim_c2(studies(tmp_path), target=0.5)
    # Neither shown nor ruled out: the runs cannot decide, which is not the same as "not reproduced".
    assert verdict.verdict == claims.INCONCLUSIVE and verdict.reason.startswith("no comparison is decided")
    assert "; run more seeds" in verdict.reason
    (comparison,) = verdict.comparisons
    # Crossing points, interpolated: LRN 2 + 0.1/0.12, (0.5 - 0.1)/(0.52 - 0.1) from chance, never (4); BN 1 + 0.1/0.15.
    lrn = [2 + 0.1 / 0.12, 0.4 / 0.42, 4.0]
    assert comparison.diff.estimate == pytest.approx(sum(lrn) / 3 - (1 + 0.1 / 0.15))
    assert comparison.diff.low < 0 < comparison.diff.high
    assert not comparison.holds and "not below 0.025" in comparison.missing
    assert comparison.row()["figure [95% CI]"].startswith("+0.9 [") and comparison.row()["shown"] == "undecided"


def test_c1_compares_lrn_settings_only_at_equal_learning_rates(tmp_path):
    # k does not matter; the learning rate does. Ranking across learning rates would call that LRN's sensitivity.
    for seed in (0, 1, 2):
        for lr, acc in ((0.01, 0.3), (0.05, 0.6)):
            make_run(
                tmp_path,
                "sweep",
                f"bn,lr={lr},{seed}",
                {"model.norm": "bn", "train.lr": lr, "experiment.seed": seed},
                [acc + 0.1],
            )
            for k in (1, 2):
                make_run(
                    tmp_path,
                    "sweep",
                    f"k{k},lr={lr},{seed}",
                    {"model.norm": "lrn", "model.lrn.k": k, "train.lr": lr, "experiment.seed": seed},
                    [acc + 0.001 * seed],
                )
    verdict = claims.claim_c1(studies(tmp_path))
    assert verdict.verdict == claims.NOT_REPRODUCED
    assert len(verdict.comparisons) == 2 and all("lr=" in c.what for c in verdict.comparisons)


def test_c5_sets_aside_only_the_settings_whose_own_control_stayed_at_chance(tmp_path):
    # At lr 0.01 nothing learns, with or without LRN: that lr cannot show what k does. At lr 0.05 the control
    # learns and k = 2 stays at chance: k's effect, shown there.
    for seed in range(3):
        for lr, control in ((0.01, CHANCE), (0.05, LEARNS)):
            settings = {"train.lr": lr, "experiment.seed": seed}
            make_run(tmp_path, "kc", f"k2,lr={lr},{seed}", {**settings, "model.norm": "lrn", "model.lrn.k": 2}, CHANCE)
            make_run(tmp_path, "kc", f"none,lr={lr},{seed}", {**settings, "model.norm": "none"}, control)
    verdict = claims.claim_c5(studies(tmp_path))
    assert verdict.verdict == claims.CONDITIONAL
    assert (
        "conditions: kc: norm=lrn,lr=0.05. Not shown: kc: norm=lrn,lr=0.01, runs at chance through epoch 4 (not k: "
        "its control is stuck too)" in verdict.reason
    )


def test_c5_with_every_control_stuck_is_inconclusive_without_asking_for_seeds(tmp_path):
    # Nothing learns at this lr, LRN or not: more seeds of the same runs cannot decide C5, another lr could.
    for seed in range(3):
        settings = {"train.lr": 0.01, "experiment.seed": seed}
        make_run(tmp_path, "kc", f"k2,{seed}", {**settings, "model.norm": "lrn", "model.lrn.k": 2}, CHANCE)
        make_run(tmp_path, "kc", f"none,{seed}", {**settings, "model.norm": "none"}, CHANCE)
    verdict = claims.claim_c5(studies(tmp_path))
    assert verdict.verdict == claims.INCONCLUSIVE
    assert verdict.reason.startswith("no comparison is decided") and "its control is stuck too" in verdict.reason
    assert "run more seeds" not in verdict.reason


STUCK_3 = [0.1, 0.1, 0.11, 0.3, 0.4]  # at chance through epoch 3, then learns
INIT = {"paper": {"model.init": "alexnet-paper"}, "pytorch": {"model.init": "pytorch"}}


def recipe_study(tmp_path, accs: dict[tuple[str, str], list[float]], seeds=3):
    """Settings (init, norm) -> test accuracies per epoch, for every seed; norm 'k2' is LRN with k 2."""
    for seed in range(seeds):
        for (init, norm), test_accs in accs.items():
            settings = {**INIT[init], "experiment.seed": seed}
            settings |= {"model.norm": "lrn", "model.lrn.k": 2} if norm == "k2" else {"model.norm": norm}
            make_run(tmp_path, "recipe", f"{init}-{norm},seed={seed}", settings, test_accs)


@pytest.mark.parametrize(
    "paper_none, pytorch_k2, cause, verdict",
    [
        (LEARNS, LEARNS, "k and the initialisation together (neither alone)", claims.CONDITIONAL),
        (LEARNS, CHANCE, "k, under either initialisation", claims.REPRODUCED),
        (CHANCE, LEARNS, "the initialisation (its control is stuck too", claims.NOT_REPRODUCED),
        (CHANCE, CHANCE, "each alone: k under either initialisation", claims.REPRODUCED),
    ],
)
def test_c5_names_the_cause_from_the_control_and_the_other_initialisation(
    tmp_path, paper_none, pytorch_k2, cause, verdict
):
    # LRN k 2 under the paper's initialisation stays at chance; whether that is k, the initialisation, or both is
    # read off no normalization under the same initialisation and the same LRN under PyTorch's.
    recipe_study(
        tmp_path,
        {
            ("paper", "k2"): CHANCE,
            ("paper", "none"): paper_none,
            ("pytorch", "k2"): pytorch_k2,
            ("pytorch", "none"): LEARNS,
        },
    )
    result = claims.claim_c5(studies(tmp_path))
    rows = {row["variant"]: row for row in result.evidence}
    assert rows["paper-k2"]["cause, there"].startswith(cause)
    assert result.verdict == verdict, result.reason
    if verdict == claims.NOT_REPRODUCED:
        assert (
            "where every run stayed at chance (recipe: paper-k2), the net stayed there without LRN too" in result.reason
        )


def test_c5_stuck_shares_have_exact_intervals_per_epoch_and_say_how_long_every_run_stayed(tmp_path):
    # Two of three seeds stay at chance for 3 epochs, the third leaves in epoch 2: every run through epoch 1 only.
    for seed, accs in enumerate([STUCK_3, STUCK_3, [0.1, 0.3, 0.35, 0.4, 0.45]]):
        settings = {"experiment.seed": seed, "data.input_norm": False}
        make_run(tmp_path, "kc", f"k2-raw,seed={seed}", {**settings, "model.norm": "lrn", "model.lrn.k": 2}, accs)
        make_run(tmp_path, "kc", f"none-raw,seed={seed}", {**settings, "model.norm": "none"}, LEARNS + [0.6])
    verdict = claims.claim_c5(studies(tmp_path))
    row = next(row for row in verdict.evidence if row["variant"] == "k2-raw")
    # Clopper-Pearson 95%: 3/3 -> [0.025^(1/3), 1] = [29%, 100%]; 2/3 -> [9%, 99%]; 0/3 -> [0, 1 - 0.025^(1/3)].
    assert row["at chance through epoch 1"] == "3/3 [29%, 100%]"
    assert row["at chance through epoch 2"] == "2/3 [9%, 99%]"
    assert row["at chance through epoch 5"] == "0/3 [0%, 71%]" and row["at chance through epoch 10"] == ""
    assert row["every run at chance through"] == "epoch 1" and row["cause, there"].startswith("k (the LRN")
    assert row["p, more often than control"] == "0.05"  # Fisher's exact test, 3 of 3 against 0 of 3: 1/20
    assert verdict.verdict == claims.INCONCLUSIVE  # outside the note's conditions: raw inputs
    assert "Outside them: kc: k2-raw, every run at chance through epoch 1 (3/3 [29%, 100%]), 0/3" in verdict.reason


def test_c5_takes_the_step_a_run_left_chance_only_from_a_probe_batch_that_holds_every_class(tmp_path):
    # Runs whose probe batch scored 100% at step 50 and that left chance in epoch 2: on a one-class batch that
    # score is the net guessing that class, and a run that did not record its batch cannot tell.
    batches = {"balanced": [26] * 9 + [22], "one-class": [256] + [0] * 9, "unrecorded": None}
    for lr, (name, counts) in enumerate(batches.items(), 1):
        run = make_run(tmp_path, "kc", name, {"model.norm": "lrn", "train.lr": lr / 100}, [0.1, 0.3])
        env = json.loads((run.path / "env.json").read_text())
        if counts:
            env["probe_batch"] = {"images": sum(counts), "class_counts": counts}
        (run.path / "env.json").write_text(json.dumps(env))
        # 13% on 256 images is a guess's noise (3 standard errors: about 6 points), 100% is not.
        for step, acc in ((25, 0.13), (50, 1.0), (100, 0.5)):
            run.append_probe({"step": step, "epoch": 1, "probe_acc": acc, "layers": [], "weights": []})
    left = {r.path.name: chance.left_chance(r, 0.1) for r in find_runs([tmp_path]).runs}
    assert left == {"balanced": "epoch 2 (step 50)", "one-class": "epoch 2", "unrecorded": "epoch 2"}


def test_c5_gives_the_probes_account_of_the_stall_beside_the_controls(tmp_path):
    # Over epoch 1 the stuck LRN's logits do not depend on the image, half its channels are dead and almost no
    # gradient reaches conv1; its control's do, none are, and it does.
    for seed in range(3):
        for name, settings, accs in (
            ("k2", {"model.norm": "lrn", "model.lrn.k": 2}, CHANCE),
            ("none", {"model.norm": "none"}, LEARNS),
        ):
            run = make_run(tmp_path, "kc", f"{name},seed={seed}", {**settings, "experiment.seed": seed}, accs)
            stuck = name == "k2"
            layer = {"input_std": 1.0, "output_std": 0.59 if stuck else 1.0, "dead_channel_share": 0.5 if stuck else 0}
            run.append_probe(
                {
                    "step": 1,
                    "epoch": 1,
                    "filter_similarity": 0.1,
                    "logit_spread": 1e-7 if stuck else 0.8,
                    "logit_class_spread": 0.2,
                    "layers": [layer],
                    "weights": [{"name": "0.0.weight", "grad_norm": 1e-6 if stuck else 0.3, "update_ratio": 1e-3}],
                }
            )
    verdict = claims.claim_c5(studies(tmp_path))
    assert verdict.verdict == claims.REPRODUCED
    assert (
        "over epoch 1 its logits' spread between images was 1e-07 (control 0.8), 50% of the channels behind its norm "
        "positions were dead (control 0%), the gradient reaching conv1 1e-06 (control 0.3), behind layers of gain 0.59"
    ) in verdict.reason
    rows = {row["variant"]: row for row in verdict.evidence}
    assert (rows["k2"]["logit spread, epoch 1"], rows["k2"]["dead channels"], rows["none"]["gain"]) == (
        "1e-07",
        "50%",
        "1.00",
    )


def test_c2_judges_the_mechanism_only_in_the_studies_whose_speed_it_compared(tmp_path):
    # "fast": BN reaches the target first and its outputs drift least. "far": nothing reaches the target, so its
    # drift (where LRN's is the lowest) explains no difference in speed and stays out of the mechanism.
    for seed in range(2):
        for study, bn_drift, lrn_drift, bn_accs, lrn_accs in (
            ("fast", 0.1, 0.2, [0.5, 0.7], [0.4, 0.5]),
            ("far", 0.5, 0.1, [0.2, 0.3], [0.2, 0.3]),
        ):
            for norm, drift, accs in (("bn", bn_drift, bn_accs), ("lrn", lrn_drift, lrn_accs)):
                settings = {"model.norm": norm, "experiment.seed": seed}
                run = make_run(tmp_path, study, f"{norm},seed={seed}", settings, jittered(accs, seed))
                drift += 0.01 * seed
                layer = {"input_std": 1.0, "output_std": 1.0, "input_drift": drift, "output_drift": drift}
                weights = [{"name": "w", "grad_norm": 1.0, "update_ratio": 1e-3}]
                run.append_probe(
                    {"step": 1, "epoch": 1, "filter_similarity": 0.1, "layers": [layer], "weights": weights}
                )
    verdict = claims.claim_c2(studies(tmp_path), target=0.6)
    assert verdict.verdict == claims.REPRODUCED
    # Per-run drifts 0.1, 0.11 (BN) and 0.2, 0.21 (LRN): +0.1, Welch half-width t(0.975, 2) * 0.00707 = 0.030.
    assert (
        "fast: output drift per probe interval bn 0.105, lrn 0.205 (lrn minus BN +0.100 [+0.070, +0.130]); BN's is "
        "measurably the lowest; ordered by drift bn < lrn, by epochs to the target bn < lrn: drift predicts"
    ) in verdict.reason
    assert "far:" not in verdict.reason
    assert not any(limit.startswith("the note's why") for limit in verdict.limits)


def test_c2_leaves_an_lrn_held_at_chance_to_c5(tmp_path):
    # An LRN that never leaves chance is not slower to converge: it does not learn (C5's question).
    for seed in range(2):
        for norm, accs in (("bn", [0.55, 0.7]), ("lrn", [0.1, 0.1])):
            settings = {"model.norm": norm, "experiment.seed": seed}
            make_run(tmp_path, "conv", f"{norm},seed={seed}", settings, jittered(accs, seed))
    verdict = claims.claim_c2(studies(tmp_path), target=0.5)
    assert verdict.verdict == claims.INCONCLUSIVE and not verdict.comparisons


def test_c2_compares_bn_and_lrn_with_no_normalization_too(tmp_path):
    # LRN is as slow as no normalization; BN is what is fast.
    for seed in range(3):
        for norm, accs in (("bn", [0.55, 0.7]), ("lrn", [0.3, 0.6]), ("none", [0.3, 0.6])):
            settings = {"model.norm": norm, "experiment.seed": seed}
            make_run(tmp_path, "conv", f"{norm},seed={seed}", settings, jittered(accs, seed * (norm == "lrn")))
    verdict = claims.claim_c2(studies(tmp_path), target=0.5)
    assert "Against no normalization: conv: bn minus none -0.78 " in verdict.reason  # 0.5 at 1 - 0.05/0.15 against 1.67
    assert "lrn minus none -0.01 [-0.03, +0.01] epochs" in verdict.reason
    not_slower = "that LRN slows training: in conv it is not measurably slower than no normalization; BN is fast"
    assert not_slower in verdict.limits
    # A study where LRN and none both stay at chance (an initialisation) says nothing of LRN's speed: C5's. Here the
    # LRN that learns (study "conv") reaches 50% a measurable epoch after none.
    curves = {("conv", "lrn"): [0.2, 0.45, 0.7], ("conv", "none"): [0.3, 0.6, 0.7]}
    curves |= {("stuck", "lrn"): [0.1] * 3, ("stuck", "none"): [0.1] * 3}
    curves |= {(study, "bn"): [0.55, 0.7, 0.75] for study in ("conv", "stuck")}
    for seed in range(3):
        for (study, norm), accs in curves.items():
            settings = {"model.norm": norm, "experiment.seed": seed}
            make_run(tmp_path / "s", study, f"{norm},seed={seed}", settings, jittered(accs, seed))
    limits = claims.claim_c2(studies(tmp_path / "s"), target=0.5).limits
    assert not any(limit.startswith("that LRN slows training") for limit in limits)
    assert "the note's why: drift is not measured (no probes)" in verdict.limits


@pytest.mark.parametrize(
    "label,words",
    [
        ("norm=lrn", "LRN"),
        ("norm=bn,lr=0.01", "BN, lr 0.01"),
        ("norm=none", "no normalization"),
        ("bn", "BN"),
        ("pytorch-lrn-k1", "pytorch-lrn-k1"),
        ("pt-k0.5-norm,lr=0.05", "pt-k0.5-norm, lr 0.05"),
    ],
)
def test_a_variants_label_in_words(label, words):
    assert claims.plain(label) == words


def test_a_comparison_reads_as_words_with_its_study_last(tmp_path):
    convergence_study(tmp_path, [0.6], [0.55], bn_train=[0.97], lrn_train=[0.99])
    reads = [c.reads for c in claims.claim_c3(studies(tmp_path)).comparisons]
    assert reads == ["LRN minus BN: train-test gap (conv)"]
