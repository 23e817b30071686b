import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lrnbn.compare import load_study, run_state, shard, slot_devices
from lrnbn.config import ConfigError
from lrnbn.rundir import RunDir
from tests.test_config import _assert_rejected

REPO = Path(__file__).resolve().parent.parent
FAST = {
    "model": {"arch": "cifar-full", "width": 0.25},
    "train": {"epochs": 1},
    "data": {"synthetic_train_size": 128, "synthetic_test_size": 32},
}


@pytest.fixture
def study_file(tmp_path, write_config):
    """study_file({...}) -> path of a study whose base is a tiny fast config beside it."""

    def write(spec: dict, name: str = "study.yaml"):
        write_config(FAST, name="base.yaml")
        path = tmp_path / name
        path.write_text(yaml.safe_dump({"base": "base.yaml", **spec}, sort_keys=False))
        return path

    return write


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "notes").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_studies_are_valid(path):
    study = load_study(path)
    assert study.name == path.stem and len({r.run_id for r in study.runs}) == len(study.runs)


def test_plan_expands_variants_grid_seeds_and_repeats_with_readable_ids(study_file):
    study = load_study(
        study_file(
            {
                "name": "s",
                "set": {"train.lr": 0.03},
                "seeds": [1, 2],
                "repeats": 2,
                "interleave": True,
                "variants": [
                    {"name": "bn", "set": {"model.norm": "bn"}},
                    {"name": "lrn", "set": {"model.norm": "lrn"}},
                ],
                "grid": {"model.lrn.size": [3, 5]},
            }
        ),
        ["train.epochs=2"],
    )
    assert len(study.runs) == 2 * 2 * 2 * 2
    ids = [r.run_id for r in study.runs]
    # interleaved: the first round holds every variant and grid point once, before any second repeat
    assert ids[:4] == [
        "bn,size=3,seed=1,rep=0",
        "bn,size=5,seed=1,rep=0",
        "lrn,size=3,seed=1,rep=0",
        "lrn,size=5,seed=1,rep=0",
    ]
    run = study.runs[2].config
    assert (run.model.norm, run.model.lrn.size, run.experiment.seed, run.experiment.name) == ("lrn", 3, 1, "s")
    assert run.train.lr == 0.03 and run.train.epochs == 2  # the study's set, then the command's --set


def test_a_variant_with_its_own_seeds_runs_those_instead_of_the_studys(study_file):
    spec = {
        "seeds": [0, 1],
        "interleave": True,
        "variants": [
            {"name": "a", "set": {"train.lr": 0.01}},
            {"name": "b", "set": {"train.lr": 0.02}, "seeds": [0, 1, 2, 3]},
        ],
    }
    study = load_study(study_file(spec))
    ids = [r.run_id for r in study.runs]
    # Rounds by place in the seed lists: b's extra seeds come after the ones both share.
    assert ids == ["a,seed=0", "b,seed=0", "a,seed=1", "b,seed=1", "b,seed=2", "b,seed=3"]
    assert [r.config.experiment.seed for r in study.runs if r.variant == "b"] == [0, 1, 2, 3]
    for seeds, fragment in (([], "at least 1"), ([0, 1, 0], "each seed once")):
        with pytest.raises(ConfigError, match=fragment):
            load_study(study_file({"variants": [{"name": "a", "seeds": seeds}]}))
    with pytest.raises(ConfigError, match="each seed once"):
        load_study(study_file({"seeds": [2, 2], "variants": [{"name": "a"}]}))


def test_shuffle_runs_each_round_in_its_own_fixed_order(study_file):
    spec = {
        "name": "t",
        "seeds": [0],
        "repeats": 4,
        "interleave": True,
        "shuffle": True,
        "variants": [{"name": f"v{i}", "set": {"train.lr": 0.01 * (i + 1)}} for i in range(6)],
    }
    ids = [r.run_id for r in load_study(study_file(spec)).runs]
    rounds = [[run_id.split(",")[0] for run_id in ids[6 * rep : 6 * rep + 6]] for rep in range(4)]
    # One round after the other, every variant once in each, in orders that differ between rounds.
    assert all(run_id.endswith(f"rep={i // 6}") for i, run_id in enumerate(ids))
    assert all(sorted(r) == [f"v{i}" for i in range(6)] for r in rounds)
    assert len({tuple(r) for r in rounds}) > 1
    assert [r.run_id for r in load_study(study_file(spec)).runs] == ids  # the same plan every time


def test_only_keeps_the_named_variants_in_the_plans_order_and_names_the_valid_ones(cli, study_file, tmp_path):
    spec = {
        "name": "o",
        "seeds": [0, 1],
        "interleave": True,
        "variants": [{"name": n, "set": {"model.norm": n}} for n in ("bn", "lrn", "none")],
    }
    result = cli("compare", study_file(spec), "--only", "none,bn", "--dry-run", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    planned = [line.strip() for line in result.stderr.splitlines()[1:]]
    assert planned == ["bn,seed=0", "none,seed=0", "bn,seed=1", "none,seed=1"]
    result = cli("compare", study_file(spec), "--only", "gn", "--dry-run", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and "--only: no variant 'gn' in o; its variants: bn, lrn, none" in result.stderr
    grid = study_file({"grid": {"model.norm": ["bn"]}}, name="grid.yaml")
    result = cli("compare", grid, "--only", "bn", "--dry-run", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and "no named variants" in result.stderr


def test_a_study_that_extends_another_keeps_its_variants_and_merges_its_set(study_file, tmp_path):
    parent = study_file(
        {"name": "parent", "set": {"train.lr": 0.03, "train.epochs": 2}, "variants": [{"name": "bn", "set": {}}]}
    )
    (tmp_path / "elsewhere").mkdir()
    child = tmp_path / "elsewhere" / "child.yaml"
    child.write_text(yaml.safe_dump({"extends": f"../{parent.name}", "set": {"train.epochs": 3}, "seeds": [4]}))
    study = load_study(child)
    (run,) = study.runs
    assert study.name == "child" and run.run_id == "bn,seed=4"  # its own name and seeds, the parent's variants
    assert (run.config.train.lr, run.config.train.epochs) == (0.03, 3)  # the base found from the parent's folder
    child.write_text(yaml.safe_dump({"extends": "child.yaml"}))
    with pytest.raises(ConfigError, match="child.yaml: extends itself"):
        load_study(child)


BAD_STUDIES = [
    ("empty_grid", {"grid": {}}, "empty grid and no variants"),
    ("grid_key_unknown", {"grid": {"model.nrom": ["bn"]}}, "grid: model.nrom: unknown key; did you mean model.norm?"),
    ("grid_values_empty", {"grid": {"model.norm": []}}, "grid: model.norm has no values"),
    (
        "shuffle_alone",
        {"grid": {"model.norm": ["bn"]}, "shuffle": True},
        "shuffle orders the variants inside each round",
    ),
    (
        "variant_key_unknown",
        {"variants": [{"name": "x", "set": {"train.lrr": 1}}]},
        "variant x: train.lrr: unknown key",
    ),
    (
        "bad_value_names_the_run",
        {"grid": {"model.norm": ["lrn"], "model.lrn.size": [0]}},
        "run norm=lrn,size=0,seed=0: model.lrn.size",
    ),
    ("unknown_study_key", {"grid": {"model.norm": ["bn"]}, "seed": [1]}, "seed: unknown key"),
]


@pytest.mark.parametrize("name,spec,fragment", BAD_STUDIES, ids=[b[0] for b in BAD_STUDIES])
def test_bad_study_files_exit_2_and_write_nothing(cli, tmp_path, study_file, name, spec, fragment):
    result = cli("compare", study_file(spec), "--runs-dir", tmp_path / "runs")
    _assert_rejected(result, fragment, tmp_path / "runs")


def test_compare_runs_each_run_once_records_divergence_and_skips_ended_runs_on_rerun(cli, tmp_path, study_file):
    # lr 10 with momentum 0.99 overflows within the first 8 steps (measured: step 5, both seeds).
    study = study_file(
        {
            "name": "sweep",
            "grid": {"train.lr": [0.05, 10.0]},
            "set": {"train.momentum": 0.99, "data.synthetic_train_size": 256},
            "seeds": [0, 1],
        }
    )
    result = cli("compare", study, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    root = tmp_path / "runs" / "sweep"
    states = {p.name: run_state(p) for p in root.iterdir()}
    assert states == {
        "lr=0.05,seed=0": "completed",
        "lr=0.05,seed=1": "completed",
        "lr=10.0,seed=0": "diverged",
        "lr=10.0,seed=1": "diverged",
    }
    assert "lr=0.05" in result.stdout  # the comparison table

    # A failed run is restarted, an interrupted one resumed, ended ones left alone.
    failed, interrupted = RunDir(root / "lr=0.05,seed=0"), RunDir(root / "lr=0.05,seed=1")
    failed.write_summary({**failed.read_summary(), "status": "failed"})
    interrupted.write_summary({**interrupted.read_summary(), "status": "interrupted"})
    untouched = (root / "lr=10.0,seed=0" / "summary.json").read_text()
    result = cli("compare", study, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert "resumed" not in failed.read_summary() and failed.read_summary()["status"] == "completed"
    assert len(interrupted.read_summary()["resumed"]) == 1 and interrupted.read_summary()["status"] == "completed"
    assert (root / "lr=10.0,seed=0" / "summary.json").read_text() == untouched

    dry = cli("compare", study, "--runs-dir", tmp_path / "runs", "--dry-run")
    assert "4 already ended, 0 to run" in dry.stderr


def test_parallel_jobs_split_threads_and_two_sweeps_at_once_never_train_a_run_twice(tmp_path, study_file):
    study = study_file({"name": "par", "grid": {"model.norm": ["bn", "lrn", "none"]}, "seeds": [0, 1]})
    command = [
        sys.executable,
        "-m",
        "lrnbn",
        "compare",
        str(study),
        "--runs-dir",
        str(tmp_path / "runs"),
        "--jobs",
        "2",
    ]
    first, second = subprocess.Popen(command, stderr=subprocess.PIPE), subprocess.Popen(command, stderr=subprocess.PIPE)
    outputs = [p.communicate(timeout=300)[1].decode() for p in (first, second)]
    runs = sorted((tmp_path / "runs" / "par").iterdir())
    assert len(runs) == 6
    for path in runs:
        run = RunDir(path)
        assert run.read_summary()["status"] == "completed", (path, outputs)
        assert "resumed" not in run.read_summary()
        assert len(run.read_metrics()[0]) == 1  # one epoch, written once
        assert run.read_env()["cpu_threads"] == max(1, __import__("os").cpu_count() // 2)
    # A run the other sweep held is left to it (reported as busy), not trained twice nor counted as a failure.
    assert first.returncode == 0 and second.returncode == 0, outputs


def test_runs_of_a_changed_study_are_stale_not_reused(cli, tmp_path, study_file):
    first = study_file({"name": "s", "grid": {"model.norm": ["bn"]}})
    assert cli("compare", first, "--runs-dir", tmp_path / "runs").exit_code == 0
    changed = study_file({"name": "s", "grid": {"model.norm": ["bn"]}, "set": {"train.lr": 0.5}})
    dry = cli("compare", changed, "--runs-dir", tmp_path / "runs", "--dry-run")
    assert "0 already ended, 1 to run" in dry.stderr and "stale: its config differs" in dry.stderr
    result = cli("compare", changed, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 1 and "was made with train.lr = 0.02, not 0.5" in result.stderr


def test_shards_cover_the_plan_exactly_once_for_any_count(study_file):
    study = load_study(
        study_file(
            {
                "variants": [{"name": "bn", "set": {}}, {"name": "lrn", "set": {"model.norm": "lrn"}}],
                "grid": {"train.lr": [0.01, 0.05, 0.1]},
                "seeds": [0, 1],
                "repeats": 2,
            }
        )
    )
    plan = [r.run_id for r in study.runs]
    assert len(plan) == 24
    for count in (1, 2, 5, 7, 24, 30):
        slices = [[r.run_id for r in shard(study, index, count).runs] for index in range(1, count + 1)]
        assert sorted(sum(slices, [])) == sorted(plan), count
        assert max(map(len, slices)) - min(map(len, slices)) <= 1  # even slices
        assert slices == [
            [r.run_id for r in shard(load_study(study.source), i, count).runs] for i in range(1, count + 1)
        ]


@pytest.mark.parametrize(
    "spec,message",
    [
        ("0/3", "expected I/N with 1 <= I <= N, got 0/3"),
        ("4/3", "expected I/N with 1 <= I <= N, got 4/3"),
        ("a/b", "expected I/N such as 2/8, got 'a/b'"),
        ("2", "expected I/N such as 2/8"),
    ],
)
def test_bad_shard_specs(cli, tmp_path, study_file, spec, message):
    result = cli(
        "compare", study_file({"grid": {"model.norm": ["bn"]}}), "--runs-dir", tmp_path / "runs", "--shard", spec
    )
    assert result.exit_code == 2 and f"error: --shard: {message}" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_shards_run_into_one_runs_dir_and_the_report_merges_them(cli, tmp_path, study_file):
    study = study_file({"name": "split", "grid": {"model.norm": ["bn", "none"]}, "seeds": [0, 1]})
    first = cli("compare", study, "--runs-dir", tmp_path / "runs", "--shard", "1/2")
    assert first.exit_code == 0, first.output
    assert "2 runs (shard 1/2 of 4)" in first.stderr
    assert sorted(p.name for p in (tmp_path / "runs" / "split").iterdir()) == ["norm=bn,seed=0", "norm=bn,seed=1"]
    assert cli("compare", study, "--runs-dir", tmp_path / "runs", "--shard", "2/2").exit_code == 0
    assert cli("compare", study, "--runs-dir", tmp_path / "runs", "--dry-run").stderr.count("(completed)") == 4
    result = cli("report", tmp_path / "runs" / "split", "--out", tmp_path / "report")
    assert result.exit_code == 0, result.output
    table = result.stdout[result.stdout.index("study split") : result.stdout.index("claims")]
    assert table.count("2 completed") == 2  # bn and none, each with the seed of either shard


def test_devices_take_the_slots_in_turn():
    assert slot_devices(4, [0, 1], visible_gpus=2) == [0, 1, 0, 1]
    assert slot_devices(1, [3], visible_gpus=4) == [3]
    assert slot_devices(4, [], visible_gpus=2) == [0, 1]  # one run per GPU
    assert slot_devices(3, [], visible_gpus=0) == [None, None, None]  # CPU processes


@pytest.mark.parametrize(
    "devices,message",
    [
        ("cuda:7", "--devices: cuda:7 does not exist; torch sees"),
        ("gpu0", "--devices: expected cuda:N entries such as cuda:0,cuda:1 (CPU runs need only --jobs), got 'gpu0'"),
        ("cuda:0,cpu", "got 'cpu'"),
    ],
)
def test_bad_devices(cli, tmp_path, study_file, devices, message):
    result = cli(
        "compare", study_file({"grid": {"model.norm": ["bn"]}}), "--runs-dir", tmp_path / "runs", "--devices", devices
    )
    assert result.exit_code == 2 and message in result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "spec,fragment",
    [
        (
            {"variants": [{"name": "a", "set": {"train.lr": 0.1}}, {"name": "a", "set": {"train.lr": 0.2}}]},
            "two runs would share the id 'a,seed=0'",
        ),
        ({"variants": [{"name": "v" * 250, "set": {"train.lr": 0.1}}]}, "is longer than 200 bytes"),
        ({"grid": {"train.lr": [0.1, 0.2]}, "repeats": 10**9}, "2000000000 runs (variants x grid x seeds x repeats)"),
    ],
)
def test_studies_whose_runs_cannot_have_distinct_folders_are_refused_before_any_run(
    cli, tmp_path, study_file, spec, fragment
):
    result = cli("compare", study_file(spec), "--runs-dir", tmp_path / "runs", "--dry-run")
    assert result.exit_code == 2 and fragment in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()
