import math
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from lrnbn.config import Config, TrainConfig, validate
from lrnbn.lifecycle import run_training
from lrnbn.rundir import RunDir
from lrnbn.trainer import lr_factor
from tests.conftest import TINY, merged

# cifar-full learns the synthetic shapes in seconds: 75-82% test accuracy after 4 epochs (seeds 0, 1).
LEARNS = {
    "model": {"arch": "cifar-full", "width": 0.5},
    "train": {"epochs": 4, "lr": 0.05},
    "data": {"synthetic_train_size": 1024, "synthetic_test_size": 256},
}
# Figures of the machine, not of the run: they differ between two runs of one config.
MACHINE_FIGURES = {"epoch_time_s", "eval_time_s", "images_per_s", "load_1m", "steal_s"}


def run(tmp_path, overrides: dict) -> RunDir:
    return run_training(validate(merged(TINY, overrides)), tmp_path / "runs").run_dir


def test_synthetic_run_learns_well_above_chance_and_leaves_a_complete_run_directory(tmp_path):
    run_dir = run(tmp_path, LEARNS)
    assert run_dir.path.parent == tmp_path / "runs" / "tiny"
    assert sorted(p.name for p in run_dir.path.iterdir()) == [
        ".lock",
        "checkpoint.pt",
        "config.yaml",
        "env.json",
        "metrics.jsonl",
        "summary.json",
    ]

    config = Config.model_validate(yaml.safe_load(run_dir.read_config_text()))
    assert config == validate(merged(TINY, LEARNS))

    env = run_dir.read_env()
    for key in ("python", "torch", "torchvision", "hostname", "cpu_threads", "git", "device"):
        assert key in env
    assert env["cpu_threads"] == 1 and env["device"]["type"] == "cpu"
    assert env["dataset"]["name"] == "synthetic" and env["dataset"]["train_size"] == 1024
    assert len(env["dataset"]["fingerprint"]) == 16

    records, truncated = run_dir.read_metrics()
    assert not truncated and [r["epoch"] for r in records] == [1, 2, 3, 4]
    for r in records:
        assert {
            "epoch",
            "train_loss",
            "train_acc",
            "test_loss",
            "test_acc",
            "epoch_time_s",
            "eval_time_s",
            "images_per_s",
            "lr",
        } <= set(r)
        assert 0 <= r["train_acc"] <= 1 and 0 <= r["test_acc"] <= 1 and r["epoch_time_s"] > 0
        assert r["images_per_s"] == pytest.approx(1024 // 32 * 32 / r["epoch_time_s"])
        # How busy the machine was, so that a report can tell a time measured beside other work.
        assert r["threads"] == 1 and r["load_1m"] >= 0 and (r["steal_s"] is None or r["steal_s"] >= 0)

    summary = run_dir.read_summary()
    assert summary["status"] == "completed" and summary["epochs_done"] == 4
    assert summary["final_test_acc"] == records[-1]["test_acc"] > 0.5  # chance is 0.1
    assert summary["best_test_acc"] == max(r["test_acc"] for r in records)
    assert summary["total_train_time_s"] == pytest.approx(sum(r["epoch_time_s"] for r in records))


def test_same_seed_gives_identical_metrics_on_cpu_and_another_seed_does_not(tmp_path):
    def metrics(seed):
        records, _ = run(tmp_path, {"experiment": {"seed": seed}}).read_metrics()
        return [{k: v for k, v in r.items() if k not in MACHINE_FIGURES} for r in records]

    first, second, other = metrics(0), metrics(0), metrics(1)
    assert first == second
    assert first != other


def test_non_finite_loss_stops_the_run_as_diverged_with_exit_code_3(tmp_path):
    result = run_training(
        validate(merged(TINY, {"model": {"arch": "cifar-full"}, "train": {"lr": 10, "momentum": 0.99, "epochs": 3}})),
        tmp_path,
    )
    assert result.exit_code == 3
    summary = result.run_dir.read_summary()
    assert summary["status"] == "diverged" and summary["stopped_at"]["epoch"] == 1
    assert 1 <= summary["stopped_at"]["step"] <= 256 // 32
    assert result.run_dir.read_metrics() == ([], False)


def test_sigterm_stops_between_steps_writes_status_interrupted_and_exits_130(tmp_path, write_config):
    config = write_config({**LEARNS, "train": {**LEARNS["train"], "epochs": 500}})
    process = subprocess.Popen(
        [sys.executable, "-m", "lrnbn", "train", "--config", str(config), "--runs-dir", str(tmp_path / "runs")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 120
    while not list((tmp_path / "runs").rglob("metrics.jsonl")) and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr.decode()
    run_dir = RunDir(next((tmp_path / "runs").rglob("metrics.jsonl")).parent)
    summary = run_dir.read_summary()
    assert summary["status"] == "interrupted" and summary["epochs_done"] >= 1
    records, truncated = run_dir.read_metrics()
    assert not truncated and len(records) == summary["epochs_done"]


@pytest.mark.parametrize(
    "schedule,expected",
    [
        ("constant", [0.25, 0.5, 0.75, 1, 1, 1, 1, 1, 1, 1, 1, 1]),
        ("step", [0.25, 0.5, 0.75, 1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]),
        ("cosine", [0.25, 0.5, 0.75, 1] + [0.5 * (1 + math.cos(math.pi * i / 8)) for i in range(8)]),
        ("multistep", [0.25, 0.5, 0.75, 1, 1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25]),
    ],
)
def test_lr_schedules_after_warmup(schedule, expected):
    # 4 epochs of 3 steps; warm-up 4/3 epochs = 4 steps; step decay every 2 epochs by 0.5; milestones at steps 7, 10.
    cfg = TrainConfig(
        epochs=4, schedule=schedule, warmup_epochs=4 / 3, step_every=2, step_gamma=0.5, milestones=[7, 10]
    )
    assert [lr_factor(cfg, 3, s) for s in range(12)] == pytest.approx(expected)


def test_onecycle_rises_from_lr_over_25_then_falls_to_zero():
    cfg = TrainConfig(epochs=10, schedule="onecycle")
    factors = [lr_factor(cfg, 10, s) for s in range(101)]
    assert factors[0] == pytest.approx(1 / 25) and max(factors) == pytest.approx(1.0, abs=0.01)
    assert factors.index(max(factors)) == 30 and factors[-1] == 0.0


def test_bf16_autocast_on_a_cpu_with_native_bf16_trains_and_env_records_how_it_computed(tmp_path):
    from lrnbn.machine import cpu_bf16_support

    support = cpu_bf16_support()
    if not (support["avx512_bf16"] or support["amx_bf16"]):
        pytest.skip("this CPU has no native bf16; the refusal is tested below")
    bn = run(tmp_path / "bn", {**LEARNS, "train": {**LEARNS["train"], "amp": True}})
    assert bn.read_summary()["final_test_acc"] > 0.6  # measured 80.5% in bf16, 77.3% in fp32 (chance 10%)
    env = bn.read_env()
    assert env["compute"] == {"precision": "bf16 autocast", "memory_format": "channels_last", "lrn_kernel": None}
    assert env["device"]["cpu_bf16"]["avx512_bf16"] == support["avx512_bf16"]
    lrn = {"model": {"norm": "lrn", "lrn": {"impl": "fused"}}, "train": {"amp": True, "epochs": 1}}
    assert run(tmp_path / "lrn", lrn).read_env()["compute"]["lrn_kernel"] == "fused (C++ kernel)"


def test_amp_on_a_cpu_without_native_bf16_exits_2_naming_what_is_missing(cli, tmp_path, write_config, monkeypatch):
    import lrnbn.machine

    monkeypatch.setattr(
        lrnbn.machine, "cpu_bf16_support", lambda: {"avx512_bf16": False, "amx_bf16": False, "capability": "AVX2"}
    )
    result = cli("train", "--config", write_config({"train": {"amp": True}}), "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: train.amp: this CPU lacks native bf16 (neither AVX512-BF16 nor AMX-BF16 "
        "in its flags), where emulated bf16 is slower than fp32; set train.amp: false"
    )
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("channels_last", [True, False])
def test_channels_last_puts_weights_and_batches_in_that_format_with_the_same_numbers(channels_last):
    from lrnbn.trainer import Trainer

    trainer = Trainer.build(validate(merged(TINY, {"train": {"channels_last": channels_last}})))
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    batch, _ = trainer.train_split.fixed_sample(8)
    conv1 = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert batch.is_contiguous(memory_format=fmt) and conv1.weight.is_contiguous(memory_format=fmt)
    assert trainer.compute["memory_format"] == ("channels_last" if channels_last else "contiguous")
    trainer.model.eval()
    with torch.no_grad():
        other = trainer.model.to(memory_format=torch.contiguous_format if channels_last else torch.channels_last)
        torch.testing.assert_close(trainer.model(batch), other(batch.contiguous()), rtol=1e-5, atol=1e-5)


CAFFE_STYLE = {
    "model": {"arch": "cifar-full", "init_std": [1e-4, 1e-2, 1e-2, 1e-2]},
    "train": {"weight_decay": 4e-3, "decay_mult": [1, 1, 1, 250], "bias_decay_mult": [1, 1, 1, 0], "bias_lr_mult": 2},
    "data": {"pixel_units": True},
}


def test_caffe_style_per_layer_init_decay_and_lr_multipliers_and_pixel_units():
    from lrnbn.trainer import Trainer, weight_layers

    trainer = Trainer.build(validate(merged(TINY, CAFFE_STYLE)))
    layers = weight_layers(trainer.model)
    assert [type(m).__name__ for m in layers] == ["Conv2d", "Conv2d", "Conv2d", "Linear"]
    for layer, std in zip(layers, [1e-4, 1e-2, 1e-2, 1e-2]):
        assert layer.weight.std().item() == pytest.approx(std, rel=0.1) and not layer.bias.any()
    groups = {id(p): g for g in trainer.optimizer.param_groups for p in g["params"]}
    classifier = layers[-1]
    assert groups[id(classifier.weight)]["weight_decay"] == pytest.approx(4e-3 * 250)
    assert groups[id(classifier.bias)]["weight_decay"] == 0 and groups[id(classifier.bias)]["lr"] == pytest.approx(0.04)
    assert (
        groups[id(layers[0].weight)]["weight_decay"] == pytest.approx(4e-3)
        and groups[id(layers[0].weight)]["lr"] == 0.02
    )
    assert sum(len(g["params"]) for g in trainer.optimizer.param_groups) == len(list(trainer.model.parameters()))
    # pixel units: the mean is subtracted, the std is not divided out (synthetic pixels spread over tens of units)
    batch, _ = trainer.train_split.fixed_sample(256)
    assert batch.mean(dim=(0, 2, 3)).abs().max() < 10 and batch.std() > 20


def test_per_layer_keys_of_the_wrong_length_exit_2_naming_the_layers(cli, tmp_path, write_config):
    config = write_config({"model": {"arch": "cifar-full", "init_std": [0.01, 0.01]}})
    result = cli("train", "--config", config, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: model.init_std: cifar-full has 4 conv/linear layers, got 2 values"
    assert not (tmp_path / "runs").exists()
