import math

import pytest

from lrnbn.records import find_runs
from lrnbn.report import build_report, heatmap
from lrnbn.results import group
from tests.rundirs import make_run
from tests.test_claims import LEARNS, timing_study


def test_report_writes_markdown_tables_plots_and_claims_from_disk(tmp_path):
    timing_study(tmp_path / "runs", 10.0, {1: 12.0, 5: 14.0, 10: 18.0}, {1: 12.0, 5: 12.1, 10: 12.0})
    for seed in range(2):
        make_run(
            tmp_path / "runs",
            "sweep",
            f"k1,seed={seed}",
            {"model.norm": "lrn", "model.lrn.k": 1, "model.lrn.alpha": 0.01, "experiment.seed": seed},
            LEARNS,
        )
        make_run(
            tmp_path / "runs",
            "sweep",
            f"k2,seed={seed}",
            {"model.norm": "lrn", "model.lrn.k": 2, "model.lrn.alpha": 0.02, "experiment.seed": seed},
            LEARNS[:2],
        )
    path, verdicts, tables, _ = build_report([tmp_path / "runs"], tmp_path / "out", "md", target=0.5)
    text = path.read_text()
    assert path == tmp_path / "out" / "report.md"
    assert "## Study timing" in text and "## Claims" in text and "### C4: reproduced only under conditions" in text
    timing = {row["variant"]: row for row in tables["timing"]}  # labelled by the names the study gave its runs
    assert timing["bn"]["ratio to BN"] == "1.00"
    assert timing["torch10"]["ratio to BN"] == "1.80"
    sweep = {row["variant"]: row for row in tables["sweep"]}
    assert sweep["k1"]["epochs to 50%"] == "2.5 (2/2)"  # halfway from 45% (epoch 2) to 55% (epoch 3)
    assert sweep["k2"]["epochs to 50%"] == "never (0/2)"
    for png in ("timing-time-vs-n.png", "sweep-accuracy.png", "sweep-heatmap.png"):
        assert (tmp_path / "out" / png).stat().st_size > 1000, png
        assert f"]({png})" in text
    assert not (tmp_path / "out" / "timing-accuracy.png").exists()  # one epoch per run: no curve to draw
    # The summary comes first: each claim's verdict with its key difference and interval, then the figures.
    summary = text[: text.index("## Claims")]
    assert "| claim | verdict | key comparison | figure [95% CI] | seeds | shown | does not show | horizon |" in summary
    assert "| C4 | reproduced only under conditions | fast1 minus BN: epoch s (timing) | +2.0 [" in summary
    assert "](timing-time-vs-n.png)" in summary and "1 epoch of" in summary


def test_html_report_has_its_images_inline(tmp_path):
    make_run(tmp_path / "runs", "one", "a", {"model.norm": "bn"}, LEARNS)
    path, _, _, _ = build_report([tmp_path / "runs"], tmp_path / "out", "html")
    assert path.name == "report.html" and "data:image/png;base64," in path.read_text()


def test_report_says_when_a_metrics_file_was_cut_short(tmp_path):
    run = make_run(tmp_path / "runs", "one", "a", {"model.norm": "bn"}, LEARNS)
    with open(run.path / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 5, "tes')
    path, _, tables, _ = build_report([tmp_path / "runs"], tmp_path / "out")
    assert "truncated line" in path.read_text() and str(run.path) in path.read_text()
    assert tables["one"][0]["final test acc"] == "60.0 +- 0.0%"


def test_report_cli_prints_tables_and_rejects_an_empty_folder(cli, tmp_path):
    make_run(tmp_path / "runs", "one", "a", {"model.norm": "bn"}, LEARNS)
    result = cli("report", tmp_path / "runs", "--out", tmp_path / "out")
    assert result.exit_code == 0 and "claims" in result.stdout and "report:" in result.stdout
    (tmp_path / "empty").mkdir()
    result = cli("report", tmp_path / "empty", "--out", tmp_path / "out2")
    assert result.exit_code == 2 and result.stderr.strip() == f"error: no run directories under {tmp_path / 'empty'}"


def test_report_names_the_process_count_of_torchrun_runs(tmp_path):
    make_run(tmp_path / "runs", "mixed", "one", {"model.norm": "bn"}, LEARNS)
    ddp = make_run(tmp_path / "runs", "mixed", "two", {"model.norm": "bn", "experiment.seed": 1}, LEARNS)
    env = ddp.read_env()
    ddp.write_env({**env, "distributed": {"world_size": 2, "backend": "nccl"}})
    text = build_report([tmp_path / "runs"], tmp_path / "out")[0].read_text()
    assert "Machine: test cpu, 2 threads; test cpu, 2 threads x 2 processes." in text


def test_runs_of_lrnbn_train_are_labelled_by_the_keys_that_differ(tmp_path):
    from lrnbn.records import find_runs
    from lrnbn.results import group

    make_run(tmp_path, "mine", "20261125-101500-0a1b2c", {"model.norm": "bn"}, LEARNS)
    make_run(tmp_path, "mine", "20261125-101600-3d4e5f", {"model.norm": "lrn", "model.lrn.k": 2}, LEARNS)
    make_run(tmp_path, "mine", "20261125-101700-6a7b8c", {"model.norm": "lrn", "model.lrn.k": 1}, LEARNS)
    labels = sorted(v.label for v in group(find_runs([tmp_path]).runs)["mine"])
    assert labels == ["norm=bn", "norm=lrn,k=1.0", "norm=lrn,k=2.0"]  # LRN settings do not label a run without LRN


def test_the_report_says_how_much_of_bns_lead_remains_without_affine_and_how_much_learning_lrn_closes(tmp_path):
    finals = {"bn": 0.70, "bn-noaffine": 0.60, "lrn": 0.50, "lrn-learnable": 0.55, "none": 0.45}
    settings = {
        "bn": {"model.norm": "bn"},
        "bn-noaffine": {"model.norm": "bn", "model.norm_affine": False},
        "lrn": {"model.norm": "lrn"},
        "lrn-learnable": {"model.norm": "lrn", "model.lrn.learnable": True},
        "none": {"model.norm": "none"},
    }
    for seed in (0, 1):
        for name, final in finals.items():
            make_run(
                tmp_path / "runs",
                "abl",
                f"{name},seed={seed}",
                {**settings[name], "experiment.seed": seed},
                [0.3, final + 0.01 * seed],
            )
    path, _, _, _ = build_report([tmp_path / "runs"], tmp_path / "out", "md", target=0.5)
    text = path.read_text()
    summary = text[: text.index("## Claims")]
    # Seeds 0.01 apart on both sides: Welch's interval is 20 +- t(0.975, 2) * 0.707 = 20 +- 3.0 points.
    assert "*Ablations in abl:* BN leads hand-set LRN by +20.0 [+17.0, +23.0] points." in summary
    assert "Without its affine, BN leads by +10.0 [+7.0, +13.0] points: 50% of its lead remains." in summary
    assert "moves LRN by +5.0 [+2.0, +8.0] points: 25% of the gap to BN closes." in summary
    assert "| BN without affine (bn-noaffine) | 60.5 +- 0.7% | +10.0 [+7.0, +13.0] points | 2 |" in text


DAMAGE = {
    "summary.json": b'{"status": "compl',
    "env.json": b"\x00\xff garbage",
    "config.yaml": b"- just\n- a list\n",
    "metrics.jsonl": b'{"epoch": 1}\n{"epoch": 2, "test_acc": 0.5}\n',
}


def test_report_skips_damaged_runs_names_them_and_counts_a_run_given_twice_once(cli, tmp_path):
    for seed in (0, 1):
        make_run(tmp_path / "runs", "s", f"bn,seed={seed}", {"model.norm": "bn", "experiment.seed": seed}, LEARNS)
    for name, content in DAMAGE.items():
        damaged = make_run(tmp_path / "runs", "s", f"broken-{name},seed=0", {"model.norm": "lrn"}, LEARNS)
        (damaged.path / name).write_bytes(content)
    good = tmp_path / "runs" / "s" / "bn,seed=0"
    result = cli("report", tmp_path / "runs", good, good, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    skipped = [line for line in result.stderr.splitlines() if line.startswith("skipped damaged run")]
    assert len(skipped) == len(DAMAGE)
    assert any("metrics.jsonl record 1 lacks a number" in line for line in skipped)
    assert any("config.yaml does not hold a mapping" in line for line in skipped)
    text = (tmp_path / "out" / "report.md").read_text()
    assert "4 damaged run directories were left out" in text
    assert "2 runs in 1 studies" in text  # the run named three times counts once


def test_a_run_written_before_a_key_existed_groups_with_the_runs_written_after(tmp_path):
    import yaml

    from lrnbn.records import find_runs
    from lrnbn.results import group

    for seed in (0, 1):
        make_run(tmp_path, "s", f"bn,seed={seed}", {"model.norm": "bn", "experiment.seed": seed}, LEARNS)
    old = tmp_path / "s" / "bn,seed=0" / "config.yaml"
    config = yaml.safe_load(old.read_text())
    del config["model"]["norm_affine"], config["train"]["bias_lr_mult"]  # keys added later
    old.write_text(yaml.safe_dump(config))
    (variant,) = group(find_runs([tmp_path]).runs)["s"]
    assert variant.seeds() == 2 and variant.label == "bn"


def test_the_summary_shows_c3_by_the_train_and_test_curves_of_the_study_that_decides_it(tmp_path):
    # Two studies with BN and LRN: one still training (its gaps are not used), one where every model fits.
    for seed in (0, 1):
        for study, bn_train, lrn_train in (("short", [0.5, 0.7], [0.4, 0.6]), ("fit", [0.9, 1.0], [0.8, 0.99])):
            for norm, train, test in (("bn", bn_train, [0.5, 0.6]), ("lrn", lrn_train, [0.4, 0.5])):
                settings = {"model.norm": norm, "experiment.seed": seed}
                make_run(tmp_path / "runs", study, f"{norm},{seed}", settings, test, train_accs=train)
    path, verdicts, _, _ = build_report([tmp_path / "runs"], tmp_path / "out", "md", target=0.55)
    summary = path.read_text().split("## Claims")[0]
    c3 = next(v for v in verdicts if v.claim == "C3")
    assert [c.study for c in c3.comparisons] == ["fit"]
    assert "](fit-gap.png)" in summary and (tmp_path / "out" / "fit-gap.png").stat().st_size > 1000
    assert not (tmp_path / "out" / "short-gap.png").exists()


def test_the_k_map_gives_each_control_a_row_beside_lrns_settings(tmp_path):
    # k x input normalization, with no normalization on both inputs and BN on normalized inputs only.
    finals = {("lrn", 1, True): 0.6, ("lrn", 2, True): 0.5, ("lrn", 2, False): 0.1, ("none", None, True): 0.55}
    finals |= {("none", None, False): 0.45, ("bn", None, True): 0.7}
    for seed in range(2):
        for (norm, k, input_norm), final in finals.items():
            settings = {"model.norm": norm, "data.input_norm": input_norm, "experiment.seed": seed}
            if k is not None:
                settings["model.lrn.k"] = k
            name = f"{norm}{k or ''}-{'norm' if input_norm else 'raw'},{seed}"
            first = 0.1 if k == 2 else 0.2  # k = 2 starts at chance: one epoch there, or both where it stays
            make_run(tmp_path, "kc", name, settings, [first, final + 0.01 * seed])
    (variants,) = group(find_runs([tmp_path]).runs).values()
    table = heatmap(variants)
    assert (table.row_key, table.col_key) == ("model.lrn.k", "data.input_norm")
    assert table.rows == [1.0, 2.0, "bn", "none"] and table.cols == [False, True]
    cells = {(r, c): value for r, row in zip(table.rows, table.maps[0]) for c, value in zip(table.cols, row)}
    assert cells[(2.0, False)] == pytest.approx(10.5) and cells[(2.0, True)] == pytest.approx(50.5)
    assert cells[("none", False)] == pytest.approx(45.5) and cells[("bn", True)] == pytest.approx(70.5)
    assert math.isnan(cells[("bn", False)]) and math.isnan(cells[(1.0, False)])  # no such run: an empty cell
    stalls = {
        (r, c): value for r, row in zip(table.rows, table.epochs_at_chance[0]) for c, value in zip(table.cols, row)
    }
    assert stalls[(2.0, False)] == 2 and stalls[(2.0, True)] == 1 and stalls[(1.0, True)] == 0
    assert stalls[("none", False)] == 0 and math.isnan(stalls[("bn", False)])
