"""Hostile and damaged inputs: each ends with one line and exit 2 (or is set aside), quickly, writing nothing."""

import pytest
import torch

from lrnbn.config import validate
from lrnbn.train import run_training
from tests.conftest import TINY, merged


def _one_line_exit_2(result, fragment: str) -> None:
    assert result.exit_code == 2, result.output
    assert fragment in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr[-500:]


@pytest.fixture
def stopped_run(tmp_path):
    """A run that ended interrupted after its first epoch, with a checkpoint to resume from."""
    run_dir = run_training(validate(merged(TINY, {"train": {"epochs": 2}})), tmp_path / "runs").run_dir
    run_dir.write_summary({**run_dir.read_summary(), "status": "interrupted"})
    return run_dir


@pytest.mark.parametrize(
    "name,content,fragment",
    [
        ("summary.json", b'{"status": "runn', "summary.json is damaged"),
        ("summary.json", b'{"status": "sleeping"}', "summary.json is damaged (no valid status)"),
        ("env.json", b"\xff\xfe", "env.json is damaged"),
        ("checkpoint.pt", b"", "checkpoint.pt is damaged"),
        ("checkpoint.pt", b"PK\x03\x04 not a checkpoint", "checkpoint.pt is damaged"),
    ],
)
def test_resuming_a_damaged_run_exits_2_with_one_line(cli, stopped_run, name, content, fragment):
    (stopped_run.path / name).write_bytes(content)
    _one_line_exit_2(cli("train", "--resume", stopped_run.path), fragment)


def test_compare_dry_run_names_a_damaged_run_instead_of_failing(cli, tmp_path, write_config):
    import yaml

    study = tmp_path / "study.yaml"
    write_config({"train": {"epochs": 1}}, name="base.yaml")
    study.write_text(yaml.safe_dump({"name": "s", "base": "base.yaml", "grid": {"model.norm": ["bn", "none"]}}))
    assert cli("compare", study, "--runs-dir", tmp_path / "runs").exit_code == 0
    (tmp_path / "runs" / "s" / "norm=bn,seed=0" / "summary.json").write_text("{")
    result = cli("compare", study, "--runs-dir", tmp_path / "runs", "--dry-run")
    assert result.exit_code == 0 and "norm=bn,seed=0  (damaged" in result.stderr, result.output


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["train", "--name", ""], "--name: empty"),
        (["compare", "STUDY", "--target", "-5"], "--target: a test accuracy in (0, 1], got -5.0"),
    ],
)
def test_bad_option_values_exit_2_naming_the_option(cli, tmp_path, write_config, args, fragment):
    args = [str(write_config()) if a == "STUDY" else a for a in args]
    if args[0] == "train":
        args += ["--config", str(write_config()), "--runs-dir", str(tmp_path / "runs")]
    _one_line_exit_2(cli(*args), fragment)
    assert not (tmp_path / "runs").exists()


def test_a_constant_input_channel_is_a_data_error_not_a_divergence(monkeypatch, cli, tmp_path, write_config):
    import lrnbn.data

    real = lrnbn.data.synthetic_dataset

    def flat_red(*args, **kwargs):
        dataset = real(*args, **kwargs)
        dataset.train.images[:, 0] = 7
        return dataset

    monkeypatch.setattr(lrnbn.data, "synthetic_dataset", flat_red)
    result = cli("train", "--config", write_config(), "--runs-dir", tmp_path / "runs")
    _one_line_exit_2(result, "data.input_norm: channel 0 of the training images is constant (std 0)")
    assert not (tmp_path / "runs").exists()
    assert torch.is_tensor(real(16, 16, 0).train.images)


@pytest.mark.parametrize(
    "edit,fragment",
    [
        ("lr: 0.02", "at train.lr (0.02 in the checkpoint, 0.5 now)"),
        ("width: 0.125", "at model.width (0.125 in the checkpoint, 0.25 now)"),
    ],
)
def test_a_hand_edited_config_yaml_is_checked_against_the_checkpoint_on_resume(cli, stopped_run, edit, fragment):
    config = stopped_run.path / "config.yaml"
    key, value = edit.split(": ")
    edited = {"lr": "lr: 0.5", "width": "width: 0.25"}[key]
    assert edit in config.read_text()
    config.write_text(config.read_text().replace(edit, edited))
    _one_line_exit_2(cli("train", "--resume", stopped_run.path), fragment)
