"""`lrnbn reproduce`: a recorded run rerun with its recorded machine keys, compared epoch by epoch."""

import json

import pytest

from lrnbn.config import validate
from lrnbn.errors import UserError
from lrnbn.lifecycle import run_training
from lrnbn.records import load_run
from lrnbn.reproduce import recorded_config, reproduce
from tests.conftest import TINY, merged


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A two-epoch run whose config.yaml leaves the threads to the machine, as a study's --jobs run does."""
    config = validate(merged(TINY, {"train": {"threads": None}}))
    return run_training(config, tmp_path_factory.mktemp("runs")).run_dir.path


def _copy(run, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in run.iterdir():
        if f.is_file():
            (copy / f.name).write_bytes(f.read_bytes())
    return copy


def test_a_run_reproduced_on_the_same_machine_is_identical(cli, recorded):
    result = cli("reproduce", recorded)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"identical: 2 epochs of {recorded}, every metric equal to the record"


def test_the_threads_come_from_env_json_where_config_yaml_leaves_them_null(recorded):
    run = load_run(recorded)
    assert run.config["train"]["threads"] is None
    assert run.env.cpu_threads and recorded_config(run, []).train.threads == run.env.cpu_threads


def test_a_differing_record_names_the_first_epoch_the_largest_difference_and_the_machine(tmp_path, recorded):
    copy = _copy(recorded, tmp_path)
    lines = [json.loads(line) for line in (copy / "metrics.jsonl").read_text().splitlines()]
    lines[1]["test_acc"] += 0.25
    (copy / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    outcome = reproduce(copy)
    assert (outcome.first_differing, outcome.largest[:2]) == (2, ("test_acc", 2))
    assert outcome.largest[2] == pytest.approx(0.25)
    assert outcome.text(copy).endswith("at epoch 2; on the same machine")
    env = json.loads((copy / "env.json").read_text())
    env["device"]["name"], env["torch"] = "Some Other CPU", "0.0.1"
    (copy / "env.json").write_text(json.dumps(env))
    text = reproduce(copy, epochs=2).text(copy)
    assert "the machines differ in CPU or GPU model (Some Other CPU then," in text and "torch (0.0.1 then" in text


def test_epochs_limits_the_rerun_without_changing_its_schedule(cli, recorded):
    result = cli("reproduce", recorded, "--epochs", 1)
    assert result.exit_code == 0 and result.stdout.startswith("identical: 1 epoch of")


def test_reproduce_changes_machine_keys_only(cli, recorded):
    result = cli("reproduce", recorded, "--set", "model.norm=lrn")
    assert result.exit_code == 2 and "--set model.norm: a reproduction keeps the run's experiment" in result.stderr
    with pytest.raises(UserError, match="absent is not a run directory"):
        reproduce(recorded.parent / "absent")
