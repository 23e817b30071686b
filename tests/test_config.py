from pathlib import Path

import pytest
import torch
import yaml

from lrnbn.config import Config, ConfigError, all_keys, dump_config, load_config
from tests.conftest import files_under

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    load_config(path)


def test_defaults_fill_every_key_and_round_trip_through_the_saved_form(write_config):
    config = load_config(write_config({"model": {"norm": "lrn"}}))
    saved = yaml.safe_load(dump_config(config))
    assert {".".join(k) for k in _leaf_paths(saved)} == set(all_keys())
    assert Config.model_validate(saved) == config


def _leaf_paths(tree, prefix=()):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaf_paths(value, prefix + (key,))
        else:
            yield prefix + (key,)


def test_overrides_parse_yaml_values_and_later_ones_win(write_config):
    config = load_config(
        write_config(),
        [
            "model.lrn.size=10",
            "train.lr=1e-3",
            "data.train_limit=null",
            "model.norm=lrn",
            "model.norm=none",
            "data.augment=false",
        ],
    )
    assert config.model.lrn.size == 10 and isinstance(config.model.lrn.size, int)
    assert config.train.lr == pytest.approx(1e-3)
    assert config.data.train_limit is None
    assert config.model.norm == "none"
    assert config.data.augment is False


# Each bad config: raw file text, or keys to change in the tiny config; and a fragment the one-line message must hold.
BAD_CONFIGS = [
    ("malformed_yaml", "train: {epochs: 3\n", "malformed YAML at line"),
    ("not_a_mapping", "- 1\n- 2\n", "expected a mapping of sections"),
    ("unknown_key", {"model": {"nrom": "bn"}}, "model.nrom: unknown key; did you mean model.norm?"),
    ("unknown_section", {"trian": {"epochs": 1}}, "trian: unknown key; did you mean train?"),
    ("key_in_wrong_section", {"train": {"norm": "bn"}}, "train.norm: unknown key; did you mean model.norm?"),
    ("wrong_type", {"train": {"epochs": "ten"}}, "train.epochs: Input should be a valid integer"),
    ("lr_zero", {"train": {"lr": 0}}, "train.lr: Input should be greater than 0"),
    ("epochs_zero", {"train": {"epochs": 0}}, "train.epochs: Input should be greater than or equal to 1"),
    ("batch_zero", {"train": {"batch_size": 0}}, "train.batch_size: Input should be greater than or equal to 1"),
    ("width_zero", {"model": {"width": 0}}, "model.width: Input should be greater than 0"),
    ("lrn_size_zero", {"model": {"lrn": {"size": 0}}}, "model.lrn.size: Input should be greater than or equal to 1"),
    (
        "alpha_negative",
        {"model": {"lrn": {"alpha": -1}}},
        "model.lrn.alpha: Input should be greater than or equal to 0",
    ),
    ("beta_negative", {"model": {"lrn": {"beta": -0.5}}}, "model.lrn.beta: Input should be greater than or equal to 0"),
    ("k_zero", {"model": {"lrn": {"k": 0}}}, "model.lrn.k: Input should be greater than 0"),
    ("unknown_arch", {"model": {"arch": "vgg"}}, "model.arch: Input should be 'alexnet' or 'cifar-full'"),
    ("unknown_norm", {"model": {"norm": "wn"}}, "model.norm: Input should be 'bn', 'lrn', 'gn', 'ln' or 'none'"),
    (
        "unknown_optimizer",
        {"train": {"optimizer": "rmsprop"}},
        "train.optimizer: Input should be 'sgd', 'adam' or 'adamw'",
    ),
    (
        "unknown_schedule",
        {"train": {"schedule": "poly"}},
        "train.schedule: Input should be 'constant', 'step', 'multistep', 'cosine'",
    ),
    ("unknown_device", {"train": {"device": "tpu"}}, "train.device: Input should be 'auto', 'cpu', 'cuda' or 'mps'"),
    ("section_not_mapping", {"train": 5}, "train: Input should be a valid dictionary"),
    ("multistep_without_milestones", {"train": {"schedule": "multistep"}}, "train.milestones: the multistep schedule"),
    ("milestones_not_ascending", {"train": {"milestones": [5, 3]}}, "train.milestones: expected strictly ascending"),
    (
        "learnable_lrn_alpha_0",
        {"model": {"norm": "lrn", "lrn": {"learnable": True, "alpha": 0}}},
        "model.lrn.learnable: needs alpha > 0",
    ),
    ("amp_on_mps", {"train": {"amp": True, "device": "mps"}}, "train.amp: bf16 autocast runs on CUDA and on CPUs"),
]

BAD_ARGS = [
    ("set_without_equals", ["--set", "train.lr"], "--set train.lr: expected KEY=VALUE"),
    ("set_unknown_key", ["--set", "model.lrn.siz=3"], "--set model.lrn.siz: unknown key; did you mean model.lrn.size?"),
    ("set_bad_value", ["--set", "train.epochs=-1"], "train.epochs: Input should be greater than or equal to 1"),
    ("set_a_section", ["--set", "model.lrn=3"], "--set model.lrn: is a section"),
    ("bad_name", ["--name", "a/b"], "experiment.name: String should match pattern"),
    ("train_limit_too_big", ["--set", "data.train_limit=100000"], "data.train_limit: 100000 exceeds the 256 images"),
    ("batch_bigger_than_data", ["--set", "train.batch_size=1000"], "train.batch_size: 1000 exceeds the 256 training"),
    ("cifar10_absent", ["--set", "data.dataset=cifar10", "--set", "data.root=__ROOT__"], "set data.download: true"),
    (
        "imagefolder_absent",
        ["--set", "data.dataset=imagefolder", "--set", "data.root=__ROOT__"],
        "run `lrnbn data import",
    ),
]


def _assert_rejected(result, fragment, runs):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and fragment in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert files_under(runs) == []


@pytest.mark.parametrize("name,content,fragment", BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_file_exits_2_with_one_line_and_writes_nothing(cli, tmp_path, write_config, name, content, fragment):
    if isinstance(content, str):
        path = tmp_path / "bad.yaml"
        path.write_text(content)
    else:
        path = write_config(content)
    _assert_rejected(cli("train", "--config", path, "--runs-dir", tmp_path / "runs"), fragment, tmp_path / "runs")


@pytest.mark.parametrize("name,args,fragment", BAD_ARGS, ids=[c[0] for c in BAD_ARGS])
def test_bad_arguments_exit_2_with_one_line_and_write_nothing(cli, tmp_path, write_config, name, args, fragment):
    args = [a.replace("__ROOT__", str(tmp_path / "empty")) for a in args]
    result = cli("train", "--config", write_config(), "--runs-dir", tmp_path / "runs", *args)
    _assert_rejected(result, fragment, tmp_path / "runs")


def test_missing_and_unreadable_config_files(cli, tmp_path):
    _assert_rejected(
        cli("train", "--config", tmp_path / "nope.yaml", "--runs-dir", tmp_path / "runs"),
        "config file not found",
        tmp_path / "runs",
    )
    _assert_rejected(
        cli("train", "--config", tmp_path, "--runs-dir", tmp_path / "runs"),
        "cannot read config file",
        tmp_path / "runs",
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_cuda(cli, tmp_path, write_config):
    result = cli("train", "--config", write_config({"train": {"device": "cuda"}}), "--runs-dir", tmp_path / "runs")
    _assert_rejected(result, "train.device: cuda requested but torch sees no CUDA device", tmp_path / "runs")


def test_runs_dir_that_cannot_hold_a_run(cli, tmp_path, write_config):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = cli("train", "--config", write_config(), "--runs-dir", blocker)
    assert result.exit_code == 2 and "cannot create a run directory under" in result.stderr
    assert blocker.read_text() == "not a folder"


def test_config_errors_are_user_errors_with_exit_code_2():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["model.norm=batch"])
    assert info.value.exit_code == 2


def test_config_show_prints_the_resolved_config(cli, write_config):
    result = cli("config", "show", "--config", write_config(), "--set", "model.norm=lrn")
    assert result.exit_code == 0
    shown = yaml.safe_load(result.stdout)
    assert shown["model"]["norm"] == "lrn" and shown["model"]["lrn"]["size"] == 5


BILLION_LAUGHS = "\n".join(
    ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]" for i in range(9)]
    + ["experiment: {name: *j}"]
)


@pytest.mark.parametrize(
    "text,fragment",
    [
        (BILLION_LAUGHS, "malformed YAML: more than 10000 values once its aliases are expanded"),
        ("model:\n" + "  " * 0 + "".join("  " * i + f"k{i}:\n" for i in range(1, 40)), "nested deeper than 32"),
        ("train: {lr: 0.1}\ntrain: {lr: 0.2}\n", "key 'train' appears twice in one mapping"),
        ("train: {lr: 0.1, lr: 0.2}\n", "key 'lr' appears twice in one mapping"),
        ("train: {lr: [" + ", ".join(["1"] * 3000) + "]}\n", "train.lr: Input should be a valid number (got [1, 1, 1"),
        ("experiment: {seed: 4294967296}\n", "experiment.seed: Input should be less than or equal to 4294967295"),
        ("model: {norm: lrn, lrn: {size: 1000000000}}\n", "model.lrn.size: Input should be less than or equal to 255"),
    ],
)
def test_hostile_config_files_exit_2_quickly_with_one_short_line(cli, tmp_path, text, fragment):
    import time

    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    started = time.perf_counter()
    result = cli("config", "show", "--config", path)
    assert time.perf_counter() - started < 5
    assert result.exit_code == 2 and fragment in result.stderr, result.stderr[:300]
    assert len(result.stderr.strip().splitlines()) == 1 and len(result.stderr) < 400


def test_a_config_file_over_a_megabyte_is_refused_before_it_is_parsed(cli, tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("# " + "x" * (1 << 20) + "\n")
    result = cli("config", "show", "--config", path)
    assert (
        result.exit_code == 2
        and result.stderr.strip() == f"error: config file {path} is larger than 1024 KB: not a config"
    )
